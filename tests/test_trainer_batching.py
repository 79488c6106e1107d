"""Duplicate-free batches, file negatives drawn by tier weights, and other-positive masking."""

from __future__ import annotations

from collections import Counter

from schemas.negatives import text_hash
from trainer.data import PAD_TIER, Example, Negative, TrainingData, collate_batch, no_duplicate_batches
from trainer.loss import build_candidate_mask


def _neg(doc_id: str) -> Negative:
    text = f"passage {doc_id}"
    return Negative(doc_id, text, text_hash(text))


def _data(queries: int = 12, shared: bool = True) -> TrainingData:
    """Query qi -> positive di; q0 also -> d1 (two positives); hard and random pools per example."""
    corpus = {f"d{i}": f"passage d{i}" for i in range(60)}
    pairs = [(f"q{i}", f"d{i}") for i in range(queries)] + ([("q0", "d1")] if shared else [])
    examples = []
    for query_id, positive_id in pairs:
        i = int(query_id[1:])
        hard = tuple(_neg(f"d{20 + (3 * i + k) % 20}") for k in range(4))  # neighbours share one hard negative
        random = tuple(_neg(f"d{40 + (3 * i + k) % 20}") for k in range(2))
        examples.append(Example(query_id, f"query {query_id}", positive_id, corpus[positive_id],
                                {"hard": hard, "random": random}))
    positives: dict[str, set[str]] = {}
    for query_id, positive_id in pairs:
        positives.setdefault(query_id, set()).add(positive_id)
    return TrainingData(examples, {q: frozenset(p) for q, p in positives.items()}, corpus,
                        {f"q{i}": f"query q{i}" for i in range(queries)}, {"kind": "memory"})


def test_batches_hold_no_repeated_text_and_cover_every_example_once():
    data = _data(queries=30)
    for epoch in (0, 1):
        batches = no_duplicate_batches(data.examples, batch_size=8, seed=3, epoch=epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(data.examples)))
        for batch in batches:
            keys = [k for i in batch for k in data.examples[i].keys]
            assert len(keys) == len(set(keys)) and len(batch) <= 8
        assert sum(len(b) == 8 for b in batches) >= len(data.examples) // 8 - 1
    assert no_duplicate_batches(data.examples, 8, 3, 0) == no_duplicate_batches(data.examples, 8, 3, 0)
    assert no_duplicate_batches(data.examples, 8, 3, 0) != no_duplicate_batches(data.examples, 8, 3, 1)


def test_same_query_or_same_positive_never_share_a_batch():
    data = _data(queries=3)  # (q0,d0), (q1,d1), (q2,d2), (q0,d1): the last clashes with q0 and with d1
    for seed in range(10):
        for batch in no_duplicate_batches(data.examples, batch_size=4, seed=seed, epoch=0):
            assert not {0, 3} <= set(batch) and not {1, 3} <= set(batch)


def test_every_row_gets_the_same_number_of_negatives_from_the_weighted_tiers():
    data = _data(queries=20, shared=False)
    batch = collate_batch(data.examples[:8], data, count=3, weights={"hard": 1.0}, seed=1, epoch=0)
    assert len(batch.negatives) == len(batch.negative_ids) == 8 * 3
    assert set(batch.negative_tiers) == {"hard"}
    mixed = Counter()
    for epoch in range(4):
        drawn = collate_batch(data.examples[:8], data, count=3, weights={"hard": 0.5, "random": 0.5}, seed=1,
                              epoch=epoch)
        mixed.update(drawn.negative_tiers)
    assert mixed["hard"] > 10 and mixed["random"] > 10


def test_drawn_negatives_avoid_texts_already_in_the_batch_and_are_seeded():
    data = _data(queries=20, shared=False)
    batch = collate_batch(data.examples[:4], data, count=3, weights={"hard": 1.0}, seed=1, epoch=0)
    texts = batch.anchors + batch.positives + batch.negatives
    assert len(texts) == len(set(texts))  # neighbours share hard negatives, yet none repeats
    assert batch.reused == 0 and batch.padded == 0
    crowded = collate_batch(data.examples[:4], data, count=4, weights={"hard": 1.0}, seed=1, epoch=0)
    assert crowded.reused > 0 and len(crowded.negatives) == 16  # unavoidable repeats are counted, not dropped
    again = collate_batch(data.examples[:4], data, count=3, weights={"hard": 1.0}, seed=1, epoch=0)
    assert again.negative_ids == batch.negative_ids
    other = collate_batch(data.examples[:4], data, count=3, weights={"hard": 1.0}, seed=1, epoch=1)
    assert other.negative_ids != batch.negative_ids


def test_short_examples_are_padded_from_the_corpus_never_with_a_positive():
    data = _data(queries=12)
    batch = collate_batch([data.examples[0]], data, count=9, weights={"random": 1.0}, seed=0, epoch=0)
    assert batch.negative_tiers.count("random") == 2 and batch.negative_tiers.count(PAD_TIER) == 7
    assert batch.padded == 7 and not {"d0", "d1"} & set(batch.negative_ids)
    assert len(set(batch.negative_ids)) == 9


def test_another_positive_of_the_query_is_masked_wherever_it_appears():
    data = _data(queries=12)
    q0_d0, q1_d1 = data.examples[0], data.examples[1]  # d1 is q1's positive and also a positive of q0
    batch = collate_batch([q0_d0, q1_d1], data, count=2, weights={"hard": 1.0}, seed=0, epoch=0)
    mask = build_candidate_mask(batch.query_positives, batch.positive_ids + batch.negative_ids)
    assert batch.query_positives[0] == {"d0", "d1"}
    assert mask[0, 1]  # row 0 (q0) must not treat row 1's positive d1 as a negative
    assert not mask[0, 0] and not mask[1, 1] and not mask[1, 0]
    assert mask.sum() == 1


def _quadratic_reference(examples, batch_size, seed, epoch):
    """The former algorithm: fill each batch by scanning every remaining example in shuffled order."""
    import numpy as np

    order = np.random.default_rng([seed, epoch]).permutation(len(examples)).tolist()
    remaining, batches = dict.fromkeys(order), []
    while remaining:
        batch, seen = [], set()
        for index in remaining:
            if examples[index].keys.isdisjoint(seen):
                batch.append(index)
                seen |= examples[index].keys
                if len(batch) == batch_size:
                    break
        for index in batch:
            del remaining[index]
        batches.append(batch)
    return batches


def _many(count: int, queries: int) -> list[Example]:
    """count pairs over `queries` query texts and count // 2 positive texts: many clashes."""
    return [Example(f"q{i % queries}", f"query {i % queries}", f"d{i // 2}", f"passage {i // 2}")
            for i in range(count)]


def test_linear_batching_gives_the_batches_of_the_quadratic_scan():
    for count, queries in ((50, 7), (300, 40), (200, 200)):
        examples = _many(count, queries)
        for seed in (0, 5):
            assert no_duplicate_batches(examples, 16, seed, 1) == _quadratic_reference(examples, 16, seed, 1)


def test_batching_is_linear_in_the_examples():
    import time

    timings = {}
    for count in (20_000, 80_000):
        examples = [Example(f"q{i}", f"query {i}", f"d{i}", f"passage {i}") for i in range(count)]
        examples += _many(200, 20)  # a few clashing rows
        started = time.perf_counter()
        batches = no_duplicate_batches(examples, 32, seed=1, epoch=0)
        timings[count] = time.perf_counter() - started
        assert sum(len(b) for b in batches) == len(examples)
    assert timings[80_000] < 8 * timings[20_000] + 0.5  # 4x the examples: ~4x the time, not ~16x
