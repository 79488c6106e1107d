"""KeepIds: corpus-sized inputs are cut to the ids a join needs before its shuffle."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.mine_join import KeepIds, keep_keyed


def test_keep_keyed_checks_the_key_only():
    assert keep_keyed(("d1", "text"), {"d1", "d2"})
    assert not keep_keyed(("d3", "d1"), {"d1", "d2"})
    assert not keep_keyed(("d1", "text"), set())


def test_keep_ids_keeps_exactly_the_needed_ids():
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
