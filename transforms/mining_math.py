"""Pure numpy maths of negative mining: false-negative guards, windows, tiers, sampling, coverage.

Everything here works on one query at a time and knows nothing about Beam, faiss or shards, so it is tested
directly. Scores are cosine similarities; every decision uses scores rounded to the 1e-6 grid
(topk.round_scores) and breaks ties by doc id, so results never depend on shard or block layout.
Margins, max_score, the semi-hard band and SimANS are taken against the query's lowest judged-positive score
(sentence-transformers' rule; CONTRACT.md "Mining semantics").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from schemas.build_config import MiningConfig
from transforms.topk import round_scores

# Guards in the order they are tested; a dropped candidate counts once, under the first guard that drops it.
GUARDS = ("judged_positive", "text_copy", "near_copy", "relative_margin", "absolute_margin", "max_score")
KEEP = 0  # reason code of a surviving candidate; GUARDS[i] has code i + 1

# Deeper searches multiply the per-query depth by this factor per round (capped by max_depth).
DEPTH_GROWTH = 4

_TIER_STREAMS = {"hard": 1, "semi_hard": 2, "random": 3}


@dataclass(frozen=True)
class Positives:
    """The judged positives of one query (every qrels > 0 pair of the split)."""

    ids: np.ndarray  # [p] str
    text_hashes: np.ndarray  # [p] str, schemas.negatives.text_hash of each positive's passage
    vectors: np.ndarray  # [p, dim] float32, L2-normalised
    scores: np.ndarray  # [p] float64, cos(query, positive)

    @property
    def floor(self) -> float:
        """s_pos_min on the 1e-6 grid: the score margins, max_score and the semi-hard band are taken against."""
        return float(round_scores(np.min(self.scores)))


def cosine_rows(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """[n] float64 dot products of each row with one query (L2-normalised: cosines).

    Float64 products summed along the dimension (numpy's pairwise sum, not BLAS), as the shard searcher
    scores: a score depends only on the two vectors, never on which block or shard it was computed in.
    """
    return (np.asarray(vectors, dtype=np.float64) * np.asarray(query, dtype=np.float64)).sum(axis=-1)


def similarity_to_positives(vectors: np.ndarray, positives: Positives) -> np.ndarray:
    """[n, p] float64 cos(positive_j, candidate_i) for L2-normalised vectors (computed like cosine_rows)."""
    candidates = np.asarray(vectors, dtype=np.float64)[:, None, :]  # [n, 1, dim]
    return (candidates * np.asarray(positives.vectors, dtype=np.float64)[None, :, :]).sum(axis=-1)  # [n, p]


def guard_reasons(
    ids: np.ndarray,  # [n] str
    text_hashes: np.ndarray,  # [n] str
    scores: np.ndarray,  # [n] cos(query, candidate)
    sims: np.ndarray,  # [n, p] cos(positive, candidate)
    positives: Positives,
    mining: MiningConfig,
) -> np.ndarray:
    """[n] int8 reason codes: KEEP, or 1 + the index in GUARDS of the first guard that drops the candidate."""
    n = len(ids)
    scores_r = round_scores(scores)
    floor = positives.floor
    drops = [np.isin(ids, positives.ids)]
    drops.append(np.isin(text_hashes, positives.text_hashes) if mining.text_copy_guard else np.zeros(n, bool))
    if mining.near_copy_guard and sims.size:
        drops.append(round_scores(sims).max(axis=1) >= mining.near_copy_threshold)
    else:
        drops.append(np.zeros(n, bool))
    m = mining.relative_margin
    drops.append(scores_r > floor - abs(floor) * m if m is not None else np.zeros(n, bool))
    m = mining.absolute_margin
    drops.append(scores_r + m > floor if m is not None else np.zeros(n, bool))
    cap = mining.max_score
    drops.append(scores_r > cap if cap is not None else np.zeros(n, bool))
    reasons = np.zeros(n, dtype=np.int8)
    for code, drop in enumerate(drops, start=1):
        reasons[(reasons == KEEP) & drop] = code
    return reasons


def tier_rng(seed: int, query_id: str, tier: str) -> np.random.Generator:
    """The per-query, per-tier RNG: the same draws on any runner, worker count, shard or block layout."""
    return np.random.default_rng([seed, zlib.crc32(query_id.encode("utf-8")), _TIER_STREAMS[tier]])


def sample_positions(
    k: int,
    sampling: str,
    rng: np.random.Generator,
    scores: np.ndarray,  # [n] candidate scores, best first
    target: float,
    mining: MiningConfig,
) -> np.ndarray:
    """Ascending positions of min(k, n) candidates chosen out of n ordered ones.

    top: the first k. uniform: k without replacement, equal weights. simans (Zhou et al. 2022):
    p ∝ exp(-a·(s_neg - target - b)²), target = the query's lowest positive score. Weighted sampling
    without replacement uses the Gumbel-top-k trick on log-weights, so tiny weights never underflow.
    """
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if sampling == "top" or k == n:
        return np.arange(k, dtype=np.int64)
    gumbel = -np.log(-np.log(rng.random(n)))  # [n]
    if sampling == "simans":
        log_w = -mining.simans_a * (round_scores(scores) - target - mining.simans_b) ** 2
    else:
        log_w = np.zeros(n)
    keys = log_w + gumbel
    chosen = np.argsort(-keys, kind="stable")[:k]
    return np.sort(chosen).astype(np.int64)


def in_band(scores: np.ndarray, floor: float, band: tuple[float, float]) -> np.ndarray:
    """[n] bool: floor - HIGH <= s <= floor - LOW (the semi-hard band, offsets below the positive)."""
    low, high = band
    s = round_scores(scores)
    return (s >= floor - high) & (s <= floor - low)


@dataclass(frozen=True)
class MinedPick:
    """Positions (into the query's ranked list) chosen per mined tier, and whether coverage is complete."""

    hard: np.ndarray  # [<= K_hard] int positions
    semi_hard: np.ndarray  # [<= K_semi] int positions
    hard_short: bool  # fewer survivors than the window needs
    band_short: bool  # the semi-hard band was not fully seen and the pool is not full

    @property
    def needs_deeper(self) -> bool:
        return self.hard_short or self.band_short


def hard_need(mining: MiningConfig) -> int:
    """Survivors the hard window needs: range_min + K for top (only the first K count), the whole window else."""
    if mining.hard == 0:
        return 0
    return mining.range_min + mining.hard if mining.sampling == "top" else mining.range_max


def semi_hard_need(mining: MiningConfig) -> int:
    """Band candidates the semi-hard tier needs: K for top, the whole pool for uniform / simans."""
    if mining.semi_hard == 0:
        return 0
    return mining.semi_hard if mining.sampling == "top" else mining.semi_hard_pool


def pick_mined(
    scores: np.ndarray,  # [n] exact cos(query, candidate) of the ranked list, best first
    reasons: np.ndarray,  # [n] guard reason codes
    floor: float,
    exhausted: bool,  # the ranked list holds the whole corpus
    mining: MiningConfig,
    rngs: dict[str, np.random.Generator],
) -> MinedPick:
    """Choose the hard and semi-hard negatives of one query from its ranked (complete-prefix) list.

    Guards already dropped candidates (reasons != KEEP); the hard window [range_min, range_max) counts
    survivors; semi-hard takes band survivors that hard left (the first semi_hard_pool of them).
    """
    survivors = np.flatnonzero(reasons == KEEP)  # [s] positions, best first
    window = survivors[mining.range_min : mining.range_max]
    hard = window[sample_positions(mining.hard, mining.sampling, rngs["hard"], scores[window], floor, mining)]
    hard_short = len(survivors) < hard_need(mining)

    semi = np.zeros(0, dtype=np.int64)
    band_short = False
    if mining.semi_hard > 0:
        rest = np.setdiff1d(survivors, hard, assume_unique=True)  # ascending = best first
        pool = rest[in_band(scores[rest], floor, mining.semi_hard_band)][: mining.semi_hard_pool]
        chosen = sample_positions(mining.semi_hard, mining.sampling, rngs["semi_hard"], scores[pool], floor, mining)
        semi = pool[chosen]
        passed_band = len(scores) > 0 and round_scores(scores[-1]) < floor - mining.semi_hard_band[1]
        band_short = len(pool) < semi_hard_need(mining) and not passed_band
    return MinedPick(
        hard=hard, semi_hard=semi, hard_short=hard_short and not exhausted, band_short=band_short and not exhausted
    )


def next_depth(depth: int, mining: MiningConfig) -> int:
    return min(depth * DEPTH_GROWTH, mining.max_depth)


def initial_depth(mining: MiningConfig, num_positives: int) -> int:
    """Raw results searched first: the window plus room for the query's own positives (sentence-transformers'
    range_max + positives), capped by max_depth."""
    return min(mining.range_max + num_positives, mining.max_depth)


def max_deeper_rounds(mining: MiningConfig) -> int:
    """How many deeper-search rounds the pipeline unrolls: enough to reach max_depth from the smallest start."""
    depth, rounds = initial_depth(mining, 1), 0
    while depth < mining.max_depth:
        depth, rounds = next_depth(depth, mining), rounds + 1
    return rounds


def random_draw_count(mining: MiningConfig, num_positives: int, ntotal: int) -> int:
    """Draws per shard for the random tier: room for K plus everything that may be rejected."""
    if mining.random == 0:
        return 0
    reserve = mining.hard + mining.semi_hard + num_positives
    return min(ntotal, 2 * (mining.random + reserve) + 16)


def pick_random(
    shard_sizes: np.ndarray,  # [S] ntotal of each shard
    draws_ok: list[np.ndarray],  # per shard: [m_s] bool, draw passed the guards
    draws_ids: list[np.ndarray],  # per shard: [m_s] str doc ids in draw order
    k: int,
    exclude: set[str],
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """K (shard, draw index) picks, uniform over the corpus: rejection sampling over the shards' draw orders.

    Each shard holds a uniform random permutation prefix of its documents; a shard is picked with probability
    ∝ its size, its next draw is taken, and kept only if it passed the guards and is not already chosen. This
    is exactly uniform over surviving documents while no shard's prefix runs out (a shard whose prefix is
    spent drops out; its prefix covers the whole shard when the shard is small).
    """
    pointers = [0] * len(draws_ok)
    weights = np.asarray(shard_sizes, dtype=np.float64).copy()
    chosen: list[tuple[int, int]] = []
    taken: set[str] = set()
    while len(chosen) < k:
        for s, ok in enumerate(draws_ok):
            if pointers[s] >= len(ok):
                weights[s] = 0.0
        total = weights.sum()
        if total <= 0:
            break
        s = int(rng.choice(len(weights), p=weights / total))
        i = pointers[s]
        pointers[s] += 1
        doc_id = str(draws_ids[s][i])
        if draws_ok[s][i] and doc_id not in exclude and doc_id not in taken:
            chosen.append((s, i))
            taken.add(doc_id)
    return chosen
