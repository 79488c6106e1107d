"""Pure numpy windows of mining on one shard's ordered list: where each pair group's window starts (the margins),
where it has enough (hard and semi-hard needs), which rows it may pick, and the global depth schedule.

A window runs from the group's margin threshold down to where it has enough survivors and band candidates
(docs/CONTRACT.md "Mining semantics"); transforms/mine_shard.py runs window_ends_ordered, window_ends is the
[g, n] reference the tests hold it to.
"""

from __future__ import annotations

import numpy as np

from schemas.build_config import MiningConfig
from transforms.mining_math import KEEP, hard_need, margin_codes, semi_hard_need
from transforms.topk import round_scores

# Deeper searches multiply the per-query depth by this factor per round (capped by max_depth).
DEPTH_GROWTH = 4


def window_ends(
    scores: np.ndarray,  # [n] one shard's candidates, best first by (-rounded score, id)
    cand_codes: np.ndarray,  # [n] candidate_codes (any value before a group's start: margins drop those rows)
    references: np.ndarray,  # [g] reference score of each pair group
    starts: np.ndarray,  # [g] first row the margins keep for each group
    mining: MiningConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """([g] end of each group's window in rows, -1 where the list does not hold enough; [g, n] rows it may pick).

    On the window that starts at the group's margin threshold, enough is hard_need survivors, and
    semi_hard_need + K_hard band survivors or a candidate below the band inside the window. Rows a group may
    pick are its first hard_need survivors and its first semi_hard_need + K_hard band survivors (the global
    picks of a group, restricted to one shard, are among the shard's). The reference semantics, as [g, n] masks:
    mining runs window_ends_ordered, which the tests hold to this.
    """
    n = len(scores)
    refs = np.asarray(references, dtype=np.float64)[:, None]  # [g, 1]
    starts = np.asarray(starts, dtype=np.int64)
    inside = np.arange(n)[None, :] >= starts[:, None]  # [g, n]
    survive = (cand_codes == KEEP)[None, :] & (margin_codes(scores[None, :], refs, mining) == KEEP)  # [g, n]
    need_h = hard_need(mining)
    rank = np.cumsum(survive, axis=1)  # [g, n]
    pickable = survive & (rank <= need_h)
    ends = _end_of(rank, need_h)
    ends = np.where(ends < 0, -1, np.maximum(ends, starts))
    if mining.semi_hard > 0:
        low, high = mining.semi_hard_band
        s = round_scores(scores)[None, :]
        band = survive & (s >= refs - high) & (s <= refs - low)  # [g, n]
        need_b = semi_hard_need(mining) + mining.hard
        band_rank = np.cumsum(band, axis=1)
        pickable |= band & (band_rank <= need_b)
        end_b = _end_of(band_rank, need_b)
        below = (s < refs - high) & inside  # [g, n]
        first_below = np.where(below.any(axis=1), below.argmax(axis=1) + 1 if n else 0, -1)  # [g]
        end_b = np.where(end_b >= 0, np.maximum(end_b, starts), first_below)
        ends = np.where((ends < 0) | (end_b < 0), -1, np.maximum(ends, end_b))
    return ends, pickable


def margin_starts(scores: np.ndarray, references: np.ndarray, mining: MiningConfig) -> np.ndarray:
    """[g] rows of an ordered list (scores best first by (-rounded score, id)) that the margins drop against each
    reference: the first row margin_codes keeps, or len(scores) when it keeps none.

    A margin drops every score above a point (s + m > ref and s > ref - |ref| m are monotone in the rounded score,
    float rounding included), so what it drops is a prefix: one binary search per reference, with margin_codes'
    own float operations, instead of a [g, n] matrix (issue 15: ~40 references per query under 'pair').
    """
    s = round_scores(scores)  # [n] non-increasing
    refs = np.asarray(references, dtype=np.float64)
    starts = np.zeros(len(refs), np.int64)
    m = mining.absolute_margin
    if m is not None:  # dropped where s + m > ref
        starts = np.maximum(starts, np.searchsorted(-(s + m), -refs, side="left"))
    m = mining.relative_margin
    if m is not None:  # dropped where s > ref - |ref| m
        starts = np.maximum(starts, np.searchsorted(-s, -(refs - np.abs(refs) * m), side="left"))
    return starts


def window_ends_ordered(
    scores: np.ndarray,  # [n] one shard's candidates, best first by (-rounded score, id)
    cand_codes: np.ndarray,  # [n] candidate_codes (any value before a group's start)
    references: np.ndarray,  # [g] reference score of each pair group
    starts: np.ndarray,  # [g] first row the margins keep for each group (margin_starts)
    mining: MiningConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """window_ends without [g, n] matrices: ([g] ends, pick groups [r], pick rows [r]), the rows each group may
    pick as (group, row) pairs, group by group, rows ascending (np.nonzero of window_ends' pickable).

    Every set window_ends builds is a range of the list: a group's survivors are the rows from its start whose
    candidate code is KEEP (the margins keep the suffix from `starts`), its band rows those whose rounded score lies
    in the band (a range, scores being ordered). So ends and picks are binary searches in the positions of the
    KEEP rows: O(n + g log n) per query instead of O(g n).
    """
    n = len(scores)
    refs = np.asarray(references, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    kept = np.flatnonzero(np.asarray(cand_codes) == KEEP)  # [k] ascending rows
    first = np.searchsorted(kept, starts)  # [g] index in `kept` of each group's first survivor
    available = len(kept) - first
    need_h = hard_need(mining)
    if need_h == 0:
        ends = np.zeros(len(refs), np.int64)
    else:
        enough = available >= need_h
        ends = np.where(enough, kept[np.minimum(first + need_h - 1, len(kept) - 1)] + 1 if len(kept) else 0, -1)
    ends = np.where(ends < 0, -1, np.maximum(ends, starts))
    ranges = [(first, np.minimum(available, need_h))]  # (first index in `kept`, count) of each pick range
    if mining.semi_hard > 0:
        low, high = mining.semi_hard_band
        s = round_scores(scores)
        above_band = np.searchsorted(-s, -(refs - low), side="left")  # rows with s > ref - low come first
        in_band_end = np.searchsorted(-s, -(refs - high), side="right")  # rows with s >= ref - high
        band_first = np.searchsorted(kept, np.maximum(starts, above_band))
        band_count = np.maximum(np.searchsorted(kept, in_band_end) - band_first, 0)
        need_b = semi_hard_need(mining) + mining.hard
        end_b = np.where(band_count >= need_b, kept[np.minimum(band_first + need_b - 1, len(kept) - 1)] + 1
                         if len(kept) else 0, -1)
        below = np.maximum(in_band_end, starts)  # the first row below the band inside the window
        end_b = np.where(end_b >= 0, np.maximum(end_b, starts), np.where(below < n, below + 1, -1))
        ends = np.where((ends < 0) | (end_b < 0), -1, np.maximum(ends, end_b))
        ranges.append((band_first, np.minimum(band_count, need_b)))
    groups = np.concatenate([np.repeat(np.arange(len(refs)), count) for _, count in ranges])
    at = np.concatenate([np.repeat(start - np.cumsum(count) + count, count) + np.arange(count.sum())
                         for start, count in ranges]).astype(np.int64)
    key = np.unique(groups * (n + 1) + kept[at]) if len(at) else np.zeros(0, np.int64)
    return ends, key // (n + 1), key % (n + 1)


def _end_of(rank: np.ndarray, need: int) -> np.ndarray:
    """[g] prefix length at which each row of `rank` reaches `need` (0 for need 0), or -1 if it never does."""
    if need == 0:
        return np.zeros(len(rank), dtype=np.int64)
    if rank.shape[1] == 0:
        return np.full(len(rank), -1, dtype=np.int64)
    reached = rank >= need  # [g, n]
    return np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, -1)


def rounds_for(used: int, mining: MiningConfig, num_positives: int) -> int:
    """Depth growths (x DEPTH_GROWTH, from initial_depth) a global search schedule needs to reach `used`
    results: the query's deeper-search histogram key, whatever the shard layout."""
    depth, rounds = initial_depth(mining, num_positives), 0
    while depth < used and depth < mining.max_depth:
        depth, rounds = next_depth(depth, mining), rounds + 1
    return rounds


def next_depth(depth: int, mining: MiningConfig) -> int:
    return min(depth * DEPTH_GROWTH, mining.max_depth)


def initial_depth(mining: MiningConfig, num_positives: int) -> int:
    """Raw results searched first: the window plus room for the query's own positives (sentence-transformers'
    range_max + positives), capped by max_depth."""
    return min(mining.range_max + num_positives, mining.max_depth)
