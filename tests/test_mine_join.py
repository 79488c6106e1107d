"""KeepIds: corpus-sized inputs are cut to the ids a join needs before its shuffle."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.mine_join import BuildIdFilterFn, KeepIds, bloom_bit_count, bloom_positions, keep_keyed


def test_keep_keyed_checks_the_key_only():
    assert keep_keyed(("d1", "text"), {"d1", "d2"})
    assert not keep_keyed(("d3", "d1"), {"d1", "d2"})
    assert not keep_keyed(("d1", "text"), set())
    assert not keep_keyed(("d1", "text"), None)


def _id_filter(ids: list[str], parts: int = 3):
    """An IdFilter built the way KeepIds builds it: several partial accumulators merged."""
    fn, n = BuildIdFilterFn(), bloom_bit_count(len(ids))
    accumulators = []
    for part in range(parts):
        accumulator = fn.create_accumulator()
        for key in ids[part::parts]:
            accumulator = fn.add_input(accumulator, (n, bloom_positions(key, n)))
        accumulators.append(accumulator)
    return fn.extract_output(fn.merge_accumulators(accumulators))


def test_id_filter_holds_every_added_id_and_few_others():
    needed = [f"doc-{i}" for i in range(0, 40_000, 4)]  # 10,000 ids
    wanted = _id_filter(needed)
    assert len(wanted.bits) == 2 * len(needed)  # 2 bytes per id, not ~100 as a set of str
    assert all(key in wanted for key in needed)
    others = [f"doc-{i}" for i in range(40_000) if i % 4] + [f"q{i}" for i in range(10_000)]
    false_positives = sum(key in wanted for key in others)
    assert false_positives <= 0.002 * len(others)  # 0.05% expected
    assert BuildIdFilterFn().extract_output(BuildIdFilterFn().merge_accumulators([None, None])) is None


def test_keep_ids_keeps_the_needed_ids():
    corpus = [(f"d{i}", f"passage {i}") for i in range(10)]
    with BeamTestPipeline() as p:
        keyed = p | "Corpus" >> beam.Create(corpus)
        needed = p | "Needed" >> beam.Create(["d2", "d7", "d2", "d42"])  # duplicates; d42 is not in the corpus
        kept = keyed | KeepIds(needed)
        assert_that(kept, equal_to([("d2", "passage 2"), ("d7", "passage 7")]))


def test_keep_ids_with_no_needed_ids_keeps_nothing():
    with BeamTestPipeline() as p:
        keyed = p | "Corpus" >> beam.Create([("d1", "x")])
        needed = p | "Needed" >> beam.Create([])
        assert_that(keyed | KeepIds(needed), equal_to([]))
