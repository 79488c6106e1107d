"""Pure numpy maths of negative mining: false-negative guards, windows, tiers, sampling, coverage.

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

# Deeper searches multiply the per-query depth by this factor per round (capped by max_depth).
DEPTH_GROWTH = 4

_TIER_STREAMS = {"hard": 1, "semi_hard": 2, "random": 3}
_UNIFORM_CHUNK = 32  # doubles drawn at once by pick_random (the rng is not used after it)


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


def random_draw_count(mining: MiningConfig, num_positives: int, ntotal: int) -> int:
    """Draws per shard for the random tier: room for K plus everything that may be rejected."""
    if mining.random == 0:
        return 0
    reserve = mining.hard + mining.semi_hard + num_positives
    return min(ntotal, 2 * (mining.random + reserve) + 16)


class RandomVisits:
    """The (shard, draw index) order in which pick_random visits the shards' draws, grown on demand.

    pick_random's next visit depends only on the shard sizes, the draw counts and the rng, never on which draws
    passed the guards or were chosen: every pair group of a query (each with a fresh rng of the same stream)
    visits the same sequence and keeps the first K draws it accepts, so one sequence serves all of them.
    """

    def __init__(self, shard_sizes: np.ndarray, draw_counts: list[int], rng: np.random.Generator):
        self._rng, self._sizes = rng, [int(c) for c in draw_counts]
        self._pointers = [0] * len(self._sizes)
        self._weights = np.asarray(shard_sizes, dtype=np.float64).copy()
        self._cdf, self._uniforms, self._u = None, np.zeros(0), 0
        self.shards: list[int] = []
        self.draws: list[int] = []
        self.done = False  # every shard's draws are spent

    def extend(self, count: int) -> None:
        """Visit until `count` visits are known or the draws are spent (the same steps as pick_random's loop)."""
        sizes, pointers, weights = self._sizes, self._pointers, self._weights
        while len(self.shards) < count and not self.done:
            spent = [s for s in range(len(sizes)) if pointers[s] >= sizes[s] and weights[s] > 0]
            if spent or self._cdf is None:
                weights[spent] = 0.0
                total = weights.sum()
                if total <= 0:
                    self.done = True
                    break
                self._cdf = np.cumsum(weights / total)
                self._cdf /= self._cdf[-1]
            if self._u == len(self._uniforms):
                self._uniforms, self._u = self._rng.random(_UNIFORM_CHUNK), 0
            # the visits up to the next that spends a shard see this cdf: searched at once (issue 15)
            uniforms = self._uniforms[self._u : self._u + count - len(self.shards)]
            chosen = np.searchsorted(self._cdf, uniforms, side="right")  # [c] shard of each visit
            seen = np.cumsum(chosen[:, None] == np.arange(len(sizes)), axis=0)[np.arange(len(chosen)), chosen]
            draws = np.asarray(pointers)[chosen] + seen - 1  # [c] each visit's draw index in its shard
            spends = np.flatnonzero(draws + 1 >= np.asarray(sizes)[chosen])
            n = int(spends[0]) + 1 if len(spends) else len(chosen)
            self._u += n
            self.shards += chosen[:n].tolist()
            self.draws += draws[:n].tolist()
            for s, d in zip(chosen[:n].tolist(), draws[:n].tolist()):
                pointers[s] = d + 1


def pick_random(
    shard_sizes: np.ndarray,  # [S] ntotal of each shard
    draws_ok: list[np.ndarray],  # per shard: [m_s] bool, draw passed the guards
    draws_ids: list[np.ndarray],  # per shard: [m_s] str doc ids in draw order
    k: int,
    exclude: set[str],
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """K (shard, draw index) picks, uniform over the corpus: rejection sampling over the shards' draw orders.
    The reference semantics of the random tier: mining picks through RandomVisits, which the tests hold to it.

    Each shard holds a uniform random permutation prefix of its documents; a shard is picked with probability
    ∝ its size, its next draw is taken, and kept only if it passed the guards and is not already chosen. This
    is exactly uniform over surviving documents while no shard's prefix runs out (a shard whose prefix is
    spent drops out; its prefix covers the whole shard when the shard is small).
    """
    pointers = [0] * len(draws_ok)
    sizes = [len(ok) for ok in draws_ok]
    weights = np.asarray(shard_sizes, dtype=np.float64).copy()
    chosen: list[tuple[int, int]] = []
    taken: set[str] = set()
    cdf, uniforms, u = None, np.zeros(0), 0
    while len(chosen) < k:
        spent = [s for s in range(len(sizes)) if pointers[s] >= sizes[s] and weights[s] > 0]
        if spent or cdf is None:
            weights[spent] = 0.0
            total = weights.sum()
            if total <= 0:
                break
            cdf = np.cumsum(weights / total)  # what rng.choice(p=weights / total) searches, computed once
            cdf /= cdf[-1]
        if u == len(uniforms):  # a chunk of the doubles rng.choice would draw one by one: the same stream
            uniforms, u = rng.random(_UNIFORM_CHUNK), 0
        s = int(np.searchsorted(cdf, uniforms[u], side="right"))
        u += 1
        i = pointers[s]
        pointers[s] += 1
        if draws_ok[s][i]:
            doc_id = str(draws_ids[s][i])
            if doc_id not in exclude and doc_id not in taken:
                chosen.append((s, i))
                taken.add(doc_id)
    return chosen
