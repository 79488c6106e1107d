"""merge_topk: rounding to the 1e-6 grid, ties by doc id, padding ignored, shard split irrelevant."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.topk import merge_topk, order_by_score_then_id


def test_ties_on_the_grid_are_broken_by_doc_id():
    # 0.5000001 and 0.5000004 round to the same 1e-6 grid point: the smaller id wins, not the larger float
    shard_a = (np.array([0.5000001, 0.2], np.float32), np.array(["b", "z"]))
    shard_b = (np.array([0.5000004, 0.9], np.float32), np.array(["c", "a"]))
    scores, ids = merge_topk([shard_a, shard_b], 3)
    assert ids.tolist() == ["a", "b", "c"]
    assert scores.dtype == np.float32 and scores[0] == np.float32(0.9)


def test_scores_a_grid_step_apart_are_not_tied():
    scores, ids = merge_topk([(np.array([0.500000, 0.500002], np.float32), np.array(["a", "b"]))], 2)
    assert ids.tolist() == ["b", "a"]


def test_padding_and_empty_shards_are_ignored_and_k_caps():
    padded = (np.array([0.3, -np.inf, -np.inf], np.float32), np.array(["x", "", ""]))
    empty = (np.zeros(0, np.float32), np.zeros(0, dtype=str))
    scores, ids = merge_topk([padded, empty, (np.array([0.7], np.float32), np.array(["y"]))], 10)
    assert ids.tolist() == ["y", "x"] and len(scores) == 2
    assert merge_topk([], 5)[1].size == 0
    assert merge_topk([padded], 0)[1].size == 0


def test_result_does_not_depend_on_how_docs_are_split_into_shards():
    rng = np.random.default_rng(3)
    ids = np.array([f"d{i:03d}" for i in rng.permutation(300)])
    scores = np.round(rng.random(300), 3).astype(np.float32)  # coarse: many exact ties
    whole = merge_topk([(scores, ids)], 40)
    for num_shards in (2, 5, 11):
        parts = [(scores[s::num_shards], ids[s::num_shards]) for s in range(num_shards)]
        merged = merge_topk(parts, 40)
        assert merged[1].tolist() == whole[1].tolist()
        np.testing.assert_array_equal(merged[0], whole[0])
    expected = sorted(zip((-scores.astype(np.float64)).round(6), ids))[:40]
    assert whole[1].tolist() == [doc for _, doc in expected]


def test_mismatched_lengths_and_negative_k_are_refused():
    with pytest.raises(ValueError, match="2 scores but 1 doc ids"):
        merge_topk([(np.array([0.1, 0.2], np.float32), np.array(["a"]))], 1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        merge_topk([], -1)


def test_order_by_score_then_id_sorts_rows():
    order = order_by_score_then_id(np.array([0.1, 0.3, 0.3]), np.array([0, 9, 2]))
    assert order.tolist() == [2, 1, 0]
