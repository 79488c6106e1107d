"""Pure numpy top-k ordering and merging, shared by the shard searcher and the per-query merge.

Orders are total and independent of shard count and chunking: scores are snapped to the 1e-6 grid
(round_scores) and ties are broken by doc id, so the same candidates always come out in the
same order (docs/CONTRACT.md, Determinism).
"""

from __future__ import annotations

import numpy as np

from transforms.string_column import as_object_strings

SCORE_GRID = 1e-6  # decisions use scores rounded to this grid; ties broken by id (docs/CONTRACT.md)


def round_scores(scores: np.ndarray) -> np.ndarray:
    """Scores snapped to the 1e-6 grid (float64), so float noise never decides an order."""
    return np.round(np.asarray(scores, dtype=np.float64) / SCORE_GRID) * SCORE_GRID


def order_by_score_then_id(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions that sort rows by (-round(score, 1e-6), id).

    scores: [n] float (any precision; rounded as given); ids: [n] sortable (str or int). Returns [n] int64.
    """
    return np.lexsort((np.asarray(ids), -round_scores(scores)))


def merge_topk(per_shard: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Global top-k of one query from per-shard candidate lists.

    per_shard: one (scores [m_s] float32, doc_ids [m_s] str) per shard; entries with a non-finite score
    (padding) or an empty id are ignored; shards hold disjoint documents. Extra tuple items are ignored.
    Returns (scores [<=k] float32, doc_ids [<=k] object array of str) ordered by (-round(score, 1e-6), doc_id);
    ids stay Python str (never a fixed-width `U` array as wide as the longest id: issue 13).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores_parts = [np.asarray(part[0], dtype=np.float32).reshape(-1) for part in per_shard]
    id_parts = [as_object_strings(part[1]) for part in per_shard]
    for shard, (s, d) in enumerate(zip(scores_parts, id_parts)):
        if s.shape != d.shape:
            raise ValueError(f"shard result {shard} has {s.size} scores but {d.size} doc ids; they must pair up")
    if not scores_parts:
        return np.zeros(0, np.float32), np.empty(0, dtype=object)
    scores = np.concatenate(scores_parts)  # [m] float32
    doc_ids = np.concatenate(id_parts)  # [m] object (str)
    keep = np.isfinite(scores) & (doc_ids != "")
    scores, doc_ids = scores[keep], doc_ids[keep]
    order = order_by_score_then_id(scores, doc_ids)[:k]
    return scores[order], doc_ids[order]
