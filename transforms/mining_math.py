"""Pure numpy maths of negative mining: false-negative guards, margins, tiers, sampling (windows on a shard's list:
transforms/mining_windows.py; the random tier: transforms/random_tier.py).

Everything here works on one query at a time and knows nothing about Beam, faiss or shards, so it is tested
directly. Scores are cosine similarities; every decision uses scores rounded to the 1e-6 grid
(topk.round_scores) and breaks ties by doc id, so results never depend on shard or block layout.
Margins, the semi-hard band and SimANS are taken against a reference score per (query, positive) pair: the
query's lowest judged-positive score (--margin-reference lowest, sentence-transformers' rule) or the pair's own
positive score (pair); pairs sharing a reference share their negatives (docs/CONTRACT.md "Mining semantics").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from schemas.build_config import MARGIN_REFERENCES, MiningConfig
from transforms.topk import round_scores

# Guards in the order they are tested; a dropped candidate counts once, under the first guard that drops it.
GUARDS = ("judged_positive", "text_copy", "near_copy", "relative_margin", "absolute_margin", "max_score")
KEEP = 0  # reason code of a surviving candidate; GUARDS[i] has code i + 1

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


COSINE_BLOCK_ROWS = 256  # rows gathered and scored at once by cosine_rows_at (float64 block ~0.8 MB at 384-d)


def cosine_rows_at(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """[len(rows)] cosine_rows(vectors[rows], query), bit for bit, in blocks of COSINE_BLOCK_ROWS rows through two
    reused buffers: the same float64 products and pairwise sums per row, without gathering, casting and
    multiplying all rows at once (issue 15: fresh multi-MB temporaries per query cost ~7x the arithmetic)."""
    rows = np.asarray(rows, dtype=np.int64)
    source = np.asarray(vectors)  # a plain view of a memory-mapped store: no memmap indexing per block
    q = np.asarray(query, dtype=np.float64)
    out = np.empty(len(rows), np.float64)
    block = min(COSINE_BLOCK_ROWS, len(rows))
    products = np.empty((block, source.shape[1]), np.float64)
    every = len(rows) == len(source) and bool(np.all(rows[1:] > rows[:-1]))  # rows 0..n-1: read in place
    for start in range(0, len(rows), COSINE_BLOCK_ROWS):
        part = rows[start : start + COSINE_BLOCK_ROWS]
        m = len(part)
        if every:
            products[:m] = source[start : start + m]
        else:  # fancy indexing, not np.take: take copies a whole unaligned (np.savez member) store per call
            products[:m] = source[part]  # float32 -> float64, as np.asarray(vectors, dtype=np.float64)
        np.multiply(products[:m], q, out=products[:m])
        np.sum(products[:m], axis=-1, out=out[start : start + m])
    return out


def similarity_to_positives(vectors: np.ndarray, positives: Positives) -> np.ndarray:
    """[n, p] float64 cos(positive_j, candidate_i) for L2-normalised vectors: one BLAS matrix product.

    Float64 products of float32 inputs (issue 15: no [n, p, dim] broadcast); BLAS may sum in another order
    than cosine_rows, a difference of ~1e-16, far below the 1e-6 grid the near-copy decision is taken on.
    """
    candidates = np.asarray(vectors, dtype=np.float64).reshape(-1, positives.vectors.shape[-1])  # [n, dim]
    return candidates @ np.asarray(positives.vectors, dtype=np.float64).T  # [n, p]


def reference_scores(positives: Positives, reference: str) -> np.ndarray:
    """[p] float64, on the 1e-6 grid: the score each pair's margins, max_score ceiling and band are taken against.

    lowest: the query's lowest positive for every pair (sentence-transformers' rule; CONTRACT.md);
    pair: each pair's own positive score (issue 15: a query with many graded positives is not starved by its
    weakest one). Whatever the reference, every judged positive of the query stays excluded for every pair.
    """
    scores = round_scores(positives.scores)  # [p]
    if reference == "lowest":
        return np.full(len(scores), float(np.min(scores)) if len(scores) else 0.0)
    if reference == "pair":
        return scores
    raise ValueError(f"margin reference must be one of {', '.join(MARGIN_REFERENCES)}, got {reference!r}")


@dataclass(frozen=True)
class PairGroups:
    """The query's pairs grouped by reference score: pairs sharing a reference share their negatives."""

    references: np.ndarray  # [g] float64 distinct reference scores, ascending
    of_pair: np.ndarray  # [p] int64 group of each positive

    def sizes(self) -> np.ndarray:
        return np.bincount(self.of_pair, minlength=len(self.references))  # [g]


def group_members(groups: PairGroups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sizes [g], first [g], pairs [p]): group g's pairs, ascending, are pairs[first[g]:first[g] + sizes[g]]."""
    sizes = groups.sizes()
    return sizes, np.cumsum(sizes) - sizes, np.argsort(groups.of_pair, kind="stable")




def pair_groups(positives: Positives, reference: str) -> PairGroups:
    references, of_pair = np.unique(reference_scores(positives, reference), return_inverse=True)
    return PairGroups(references=references, of_pair=of_pair.astype(np.int64).reshape(-1))


def candidate_codes(
    ids: np.ndarray,  # [n] str
    text_hashes: np.ndarray,  # [n] str
    scores: np.ndarray,  # [n] cos(query, candidate)
    max_sims: np.ndarray,  # [n] max_j cos(positive_j, candidate)
    positives: Positives,
    mining: MiningConfig,
) -> np.ndarray:
    """[n] int8: the first guard that does not depend on the margin reference (judged positive, text copy,
    near copy, max_score) dropping each candidate, or KEEP. Computed once per candidate, on the shard."""
    n = len(ids)
    return codes_of_drops(
        _member(ids, positives.ids),
        _member(text_hashes, positives.text_hashes) if mining.text_copy_guard else None,
        round_scores(max_sims) >= mining.near_copy_threshold if mining.near_copy_guard and n else None,
        scores,
        mining,
    )


def codes_of_drops(judged: np.ndarray, text_copy: np.ndarray | None, near_copy: np.ndarray | None,
                   scores: np.ndarray, mining: MiningConfig) -> np.ndarray:
    """candidate_codes from the guards' [n] bool drops (None: the guard is off): judged positive, text copy, near
    copy (round(max_j cos(positive_j, candidate)) >= near_copy_threshold), then max_score on the scores."""
    drops = {
        "judged_positive": judged,
        "text_copy": text_copy,
        "near_copy": near_copy,
        "max_score": round_scores(scores) > mining.max_score if mining.max_score is not None else None,
    }
    codes = np.zeros(len(judged), dtype=np.int8)
    for name, drop in drops.items():
        if drop is not None:
            codes[(codes == KEEP) & drop] = GUARDS.index(name) + 1
    return codes


def margin_codes(scores: np.ndarray, reference: np.ndarray | float, mining: MiningConfig) -> np.ndarray:
    """int8 code of the margin guard that drops each score against `reference` (broadcast), or KEEP.

    scores [n] with a scalar reference gives [n]; scores [1, n] with references [g, 1] gives [g, n].
    """
    s = round_scores(scores)
    ref = np.asarray(reference, dtype=np.float64)
    shape = np.broadcast_shapes(s.shape, ref.shape)
    codes = np.zeros(shape, dtype=np.int8)
    m = mining.absolute_margin
    if m is not None:
        codes[np.broadcast_to(s + m > ref, shape)] = GUARDS.index("absolute_margin") + 1
    m = mining.relative_margin
    if m is not None:  # written last: the relative margin is the first reason when both drop
        codes[np.broadcast_to(s > ref - np.abs(ref) * m, shape)] = GUARDS.index("relative_margin") + 1
    return codes


def _member(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """[n] bool: values[i] in wanted, by hashing (np.isin sorts object arrays of str: far slower)."""
    wanted = set(np.asarray(wanted).tolist())
    return np.fromiter((v in wanted for v in np.asarray(values).tolist()), dtype=bool, count=len(values))


def margin_threshold(reference: float, mining: MiningConfig) -> float:
    """About the highest score the margins keep against `reference` (+inf without margins), for prefiltering
    only: margin_codes decides, on rounded scores; callers allow the float error around it."""
    threshold = np.inf
    if mining.relative_margin is not None:
        threshold = min(threshold, reference - abs(reference) * mining.relative_margin)
    if mining.absolute_margin is not None:
        threshold = min(threshold, reference - mining.absolute_margin)
    return float(threshold)


def margin_thresholds(references: np.ndarray, mining: MiningConfig) -> np.ndarray:
    """[g] margin_threshold of each reference, as one array operation (the same float arithmetic)."""
    refs = np.asarray(references, dtype=np.float64)
    thresholds = np.full(refs.shape, np.inf)
    if mining.relative_margin is not None:
        thresholds = np.minimum(thresholds, refs - np.abs(refs) * mining.relative_margin)
    if mining.absolute_margin is not None:
        thresholds = np.minimum(thresholds, refs - mining.absolute_margin)
    return thresholds


def first_reasons(cand_codes: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Combine candidate and margin codes into the first reason in GUARDS order (max_score comes last)."""
    max_score = GUARDS.index("max_score") + 1
    early = (cand_codes != KEEP) & (cand_codes < max_score)
    return np.where(early, cand_codes, np.where(margin != KEEP, margin, cand_codes)).astype(np.int8)


def guard_reasons(
    ids: np.ndarray,  # [n] str
    text_hashes: np.ndarray,  # [n] str
    scores: np.ndarray,  # [n] cos(query, candidate)
    sims: np.ndarray,  # [n, p] cos(positive, candidate)
    positives: Positives,
    mining: MiningConfig,
    reference: float | None = None,
) -> np.ndarray:
    """[n] int8 reason codes: KEEP, or 1 + the index in GUARDS of the first guard that drops the candidate.

    reference: the score margins are taken against (default: the query's lowest positive, positives.floor).
    """
    max_sims = np.asarray(sims).max(axis=1) if np.size(sims) else np.full(len(ids), -np.inf)
    codes = candidate_codes(ids, text_hashes, scores, max_sims, positives, mining)
    return first_reasons(codes, margin_codes(scores, positives.floor if reference is None else reference, mining))


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
    used: int = 0  # length of the ranked prefix the choice depends on (the whole list when short)

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


def below_band(scores: np.ndarray, floor: float, band: tuple[float, float]) -> np.ndarray:
    """[n] bool: the (rounded) score is below the semi-hard band, floor - HIGH."""
    return round_scores(scores) < floor - band[1]


def pick_mined(
    scores: np.ndarray,  # [n] exact cos(query, candidate) of the ranked list, best first
    reasons: np.ndarray,  # [n] guard reason codes
    floor: float,
    exhausted: bool,  # the ranked list holds the whole corpus
    mining: MiningConfig,
    rngs: dict[str, np.random.Generator],
) -> MinedPick:
    """Choose the hard and semi-hard negatives of one pair group from its ranked (complete-prefix) list.

    Guards already dropped candidates (reasons != KEEP); the hard window [range_min, range_max) counts
    survivors; semi-hard takes band survivors that hard left (the first semi_hard_pool of them). `floor` is the
    reference score of the group (reference_scores). `used`: the choice is the same on any longer list.
    """
    n = len(scores)
    survivors = np.flatnonzero(reasons == KEEP)  # [s] positions, best first
    window = survivors[mining.range_min : mining.range_max]
    hard = window[sample_positions(mining.hard, mining.sampling, rngs["hard"], scores[window], floor, mining)]
    need = hard_need(mining)
    hard_short = len(survivors) < need
    used = n if hard_short else (int(survivors[need - 1]) + 1 if need else 0)

    semi = np.zeros(0, dtype=np.int64)
    band_short = False
    if mining.semi_hard > 0:
        rest = np.setdiff1d(survivors, hard, assume_unique=True)  # ascending = best first
        pool = rest[in_band(scores[rest], floor, mining.semi_hard_band)][: mining.semi_hard_pool]
        chosen = sample_positions(mining.semi_hard, mining.sampling, rngs["semi_hard"], scores[pool], floor, mining)
        semi = pool[chosen]
        below = np.flatnonzero(below_band(scores, floor, mining.semi_hard_band))
        need = semi_hard_need(mining)
        band_short = len(pool) < need and not below.size
        if len(pool) >= need:
            used = max(used, int(pool[need - 1]) + 1)
        else:
            used = max(used, int(below[0]) + 1 if below.size else n)
    return MinedPick(
        hard=hard,
        semi_hard=semi,
        hard_short=hard_short and not exhausted,
        band_short=band_short and not exhausted,
        used=used,
    )
