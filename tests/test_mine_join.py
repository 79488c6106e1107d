"""KeepIds: corpus-sized inputs are cut to the ids a join needs before its shuffle; the text join's buckets."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import mine_join
from transforms.id_filter import (
    BuildIdFilterFn,
    FreshIdsFn,
    KeepIds,
    bloom_bit_count,
    bloom_positions,
    bloom_positions_of,
    keep_keyed,
)
from transforms.mine_join import bucket_count
from transforms.mine_rows import QueryTexts


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
        accumulator = fn.add_input(accumulator, (n, bloom_positions_of(ids[part::parts], n)))  # again: no change
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


@pytest.mark.parametrize("bit_count", [64, 160_000, 2**40 + 8, 2**63 - 8])
def test_positions_of_many_ids_are_those_of_each_id(bit_count):
    """The numpy path (a query's ids at once) and the per-id path agree, also where 64-bit sums wrap."""
    keys = [f"doc-{i}" for i in range(50)] + ["é-ünïcode", ""]
    many = bloom_positions_of(keys, bit_count).reshape(len(keys), -1)  # [ids, hashes]
    assert [row.tolist() for row in many] == [bloom_positions(key, bit_count) for key in keys]


def test_filter_estimates_its_distinct_ids_for_the_bucket_count():
    distinct = [f"doc-{i}" for i in range(30_000)]
    wanted = _id_filter(distinct * 3)  # sized for 90,000 requests, as the join sizes it
    assert wanted.estimated_ids() == pytest.approx(30_000, rel=0.03)
    assert bucket_count(wanted, 90_000) == 2 and bucket_count(None, 0) == 1
    assert bucket_count(_id_filter(distinct[:100]), 100) == 1
    assert bucket_count(_id_filter(distinct[:100]), 5_000_000) == 3  # a huge query set: bounded requests per bucket


def test_requests_split_by_bucket_and_meet_their_texts():
    ids = [f"d{i}" for i in range(40)]
    per_bucket = list(mine_join._requests_per_bucket(("q1", ids), 3))
    assert len({b for b, _ in per_bucket}) == len(per_bucket) == 3  # one request per bucket
    assert sorted(d for _, (_, part) in per_bucket for d in part) == sorted(ids)
    assert all(mine_join.bucket_of(d, 3) == b and q == "q1" for b, (q, part) in per_bucket for d in part)
    assert list(mine_join._requests_per_bucket(("q1", ids), 1)) == [(0, ("q1", ids))]
    docs = [("d1", "one", "h1"), ("d2", "two", "h2"), ("d1", "dup", "hx")]  # d1 twice: the first is kept
    served = list(mine_join._serve_texts((0, {"doc": docs, "request": [("q1", ["d2", "d9", "d1"]), ("q2", ["d9"])]})))
    assert served == [("q1", QueryTexts(["d2", "d1"], ["two", "one"], ["h2", "h1"])), ("q2", QueryTexts([], [], []))]


def test_fresh_ids_skip_ids_already_seen_in_the_bundle():
    fn = FreshIdsFn()
    fn.start_bundle()
    assert list(fn.process(["d1", "d2", "d1"])) == [["d1", "d2"]]
    assert list(fn.process(["d2", "d1"])) == []  # nothing new: no element
    assert list(fn.process(["d2", "d3"])) == [["d3"]]


def test_keep_ids_of_batches_keeps_the_needed_ids():
    corpus = [(f"d{i}", f"passage {i}") for i in range(10)]
    with BeamTestPipeline() as p:
        keyed = p | "Corpus" >> beam.Create(corpus)
        needed = p | "Needed" >> beam.Create([["d2", "d7"], ["d2"], [], ["d42", "d7"]])
        assert_that(keyed | KeepIds(needed, batched=True), equal_to([("d2", "passage 2"), ("d7", "passage 7")]))
