"""Beam side of mining: the per-shard mining fn, the per-query merge/tier DoFn and the text join into rows.

Flow per query (see pipelines/stage_mine.py): a QueryPayload (query vector, judged positives) travels in a
QueryBlock to every shard; MineShardQueries scores the whole loaded shard (one float32 product per block), and
for each pair group (pairs sharing a margin reference: the whole query under 'lowest', each positive under
'pair') takes the window of the shard's order that starts at the group's margin threshold and runs until the group
has enough, made exact by float64 re-scoring and guarded once per candidate there (issue 15: no depth cap on where
a window starts, so a positive ranked deep keeps its negatives); it returns ShardCandidates. MergeShardsFn merges
each group's shard windows (rank = documents above the threshold on every shard + position) and picks the tiers.
BuildRowsFn joins the texts and writes one row per (query, positive, negative).
"""

from __future__ import annotations

import bisect
import logging
import zlib
from dataclasses import dataclass, replace

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from threadpoolctl import threadpool_limits

from schemas.build_config import MiningConfig
from schemas.layout import RunLayout
from schemas.negatives import lexical_overlap, text_hash
from transforms import mining_math as mm
from transforms.search_api import QueryBlock, ShardView
from transforms.string_column import as_object_strings
from transforms.topk import SCORE_GRID, order_by_score_then_id, round_scores

logger = logging.getLogger(__name__)

CONTEXTUAL_PAIRS = "contextual_pairs"
_SHARD_DRAW_STREAM = 0  # RNG stream id of the per-shard random-tier draws


@dataclass
class QueryPayload:
    """What a shard needs to mine one query."""

    query_id: str
    vector: np.ndarray  # [dim] float32, L2-normalised
    positives: mm.Positives
    depth: int  # raw results to search (global complete prefix)


def without_vectors(payload: QueryPayload) -> QueryPayload:
    """The payload minus its query and positive vectors (what rows need: ids, text hashes, scores)."""
    positives = payload.positives
    return replace(
        payload,
        vector=np.zeros(0, np.float32),
        positives=mm.Positives(positives.ids, positives.text_hashes, np.zeros((len(positives.ids), 0), np.float32),
                               positives.scores),
    )


@dataclass
class ShardCandidates:
    """One shard's answer for one query: per pair group, a window of the shard's order that starts at the group's
    margin threshold (the first document the margins keep) and runs until the group has enough there; the windows
    are stored once, as their union. Similarities to the positives travel only for the rows a group may pick.
    Text hashes stay on the shard (the rows hash the negative's text, which they carry anyway)."""

    shard: int
    ntotal: int
    ids: np.ndarray  # [u] str, the union of the windows, best first by (-rounded score, id)
    scores: np.ndarray  # [u] float64, exact cos(query, candidate)
    codes: np.ndarray  # [u] int8 mining_math.candidate_codes
    above: np.ndarray  # [g] int64 shard documents ranked above group g's margin threshold
    lo: np.ndarray  # [g] int64 group g's window is rows lo[g]:hi[g] of the union
    hi: np.ndarray  # [g] int64
    complete: np.ndarray  # [g] bool: the window holds every shard document at or below the threshold
    detail_rows: np.ndarray  # [r] int32 union rows a group may pick, group by group
    detail_groups: np.ndarray  # [r] int32 the group of each
    sims: np.ndarray  # [sum of the groups' sizes] float32 cos(positive, candidate), the group's pairs only
    draw_ids: np.ndarray  # [m] str, random-tier draws in draw order
    draw_codes: np.ndarray  # [m] int8 candidate codes of the draws
    draw_scores: np.ndarray  # [m] float64
    draw_sims: np.ndarray  # [m, p] float32
    rounds: int = 0  # window growths this shard ran for the query (all groups)
    payload: QueryPayload | None = None  # shard 0 hands the payload back to the merge


@dataclass
class MinedNegative:
    negative_id: str
    tier: str
    rank: int | None  # 1-based position in the raw retrieval list; None for random
    score_negative: float
    sims: dict  # {j: cos(positive_j, negative)} for the pairs whose groups chose it (what rows read)
    generator: str


@dataclass
class MinedQuery:
    """The negatives of one query: pairs sharing a margin reference share a list (one list under 'lowest')."""

    query_id: str
    payload: QueryPayload
    negatives: list[MinedNegative]  # distinct (negative, tier) of the query
    group_negatives: list[np.ndarray]  # per pair group: indices into negatives
    pair_group: np.ndarray  # [p] group of each positive
    stats: dict

    def negatives_of_pair(self, j: int) -> list[MinedNegative]:
        return [self.negatives[i] for i in self.group_negatives[int(self.pair_group[j])]]


SHARD_CHUNK = 256  # queries of a block mined together on a shard (bounds the per-block working set)
_SCAN_BYTES = 64 * 2**20  # float32 [queries, shard docs] approximate scores computed at once


def _guard_codes(shard: ShardView, local: np.ndarray, scores: np.ndarray, payload: QueryPayload,
                 mining: MiningConfig) -> np.ndarray:
    """[n] int8 candidate codes of local rows whose exact scores are known: each candidate is guarded once."""
    vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [n, dim]
    ids = np.asarray(shard.doc_ids[local], dtype=object)  # [n] str objects: never as wide as the longest id
    hashes = np.asarray(shard.text_hashes[local], dtype=object)  # [n] str objects
    if len(payload.positives.ids) and len(local):
        max_sims = mm.similarity_to_positives(vectors, payload.positives).max(axis=1)  # [n]
    else:
        max_sims = np.full(len(local), -np.inf)
    return mm.candidate_codes(ids, hashes, scores, max_sims, payload.positives, mining)


def _guard(shard: ShardView, local: np.ndarray, payload: QueryPayload, mining: MiningConfig):
    """(ids, exact scores, candidate codes) of local rows."""
    scores = mm.cosine_rows(np.asarray(shard.vectors[local], dtype=np.float32), payload.vector)  # [n]
    codes = _guard_codes(shard, local, scores, payload, mining)
    return np.asarray(shard.doc_ids[local], dtype=object), scores, codes


class _QueryScan:
    """One query on one loaded shard: approximate float32 scores of every document (one BLAS product), exact
    scores and guard codes computed once per document, on demand."""

    def __init__(self, shard: ShardView, payload: QueryPayload, approx: np.ndarray, mining: MiningConfig):
        self.shard, self.payload, self.mining = shard, payload, mining
        self.approx = approx  # [n] float32 scores (BLAS): exact within slack
        self.exact = np.full(len(approx), np.nan)  # [n] float64 mining_math.cosine_rows, once computed
        self.codes = np.full(len(approx), -1, np.int8)  # [n] candidate codes, once computed
        # float32 error bound of a dot product of unit vectors, plus the grid steps (rounding, margin arithmetic)
        self.slack = 2 * shard.vectors.shape[1] * float(np.finfo(np.float32).eps) + 4 * SCORE_GRID
        self.rounds = 0
        self.pickable: list[np.ndarray] = []  # per group: local rows it may pick (set by windows)

    def exact_of(self, local: np.ndarray) -> np.ndarray:
        missing = local[np.isnan(self.exact[local])]
        if missing.size:
            vectors = np.asarray(self.shard.vectors[missing], dtype=np.float32)
            self.exact[missing] = mm.cosine_rows(vectors, self.payload.vector)
        return self.exact[local]

    def codes_of(self, local: np.ndarray) -> np.ndarray:
        missing = local[self.codes[local] < 0]
        if missing.size:
            self.codes[missing] = _guard_codes(self.shard, missing, self.exact[missing], self.payload, self.mining)
        return self.codes[local]

    def windows(self, references: np.ndarray) -> list[tuple[np.ndarray, int, bool]]:
        """Per pair group: (window: local rows in shard order, shard docs above its threshold, complete).

        A group's window starts at the first document the margins keep against its reference and ends where the
        group has enough (mining_math.window_ends), at max_depth, or at the shard's end (complete). All groups
        share one exactly ordered head of the shard: candidates are taken best-approximate-first (x DEPTH_GROWTH
        per round, from everything that may sit above the lowest threshold); a candidate is final once its
        exact score clears every candidate not taken yet by the float32 error bound, so the windows are exact.
        """
        mining, approx, slack = self.mining, self.approx, self.slack
        refs = np.asarray(references, dtype=np.float64)
        thresholds = np.array([mm.margin_threshold(float(r), mining) for r in refs])  # ~ the highest score kept
        cand = np.flatnonzero(approx <= thresholds.max() + slack)  # [c] every document some group may keep
        sure_above = len(approx) - len(cand)
        near = int(np.count_nonzero(approx[cand] >= thresholds.min() - slack))  # above or near a threshold
        need = mm.hard_need(mining) + mm.semi_hard_need(mining) + mining.hard
        take = min(len(cand), near + 2 * need + 16)
        while True:
            if take < len(cand):
                top = cand[np.argpartition(-approx[cand], take - 1)[:take]]
                bound = float(approx[top].min())  # a document not taken scores at most bound + float32 error
            else:
                top, bound = cand, -np.inf
            exact = self.exact_of(top)
            order = order_by_score_then_id(exact, top)  # shard rows are sorted by doc id
            rows, scores = top[order], exact[order]
            final = int(np.count_nonzero(round_scores(scores) > bound + slack))
            rows, scores = rows[:final], scores[:final]
            kept = mm.margin_codes(scores[None, :], refs[:, None], mining) == mm.KEEP  # [g, final]
            starts = np.where(kept.any(axis=1), kept.argmax(axis=1) if final else 0, final)  # [g] kept: a suffix
            codes = np.zeros(final, np.int8)
            first = int(starts.min())
            codes[first:] = self.codes_of(rows[first:])
            ends, pickable = mm.window_ends(scores, codes, refs, starts, mining)
            everything = take >= len(cand)
            found, short = [], False
            for g, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
                if end >= 0 and end - start <= mining.max_depth:
                    found.append((start, end, everything and end == final))
                elif everything or (start < final and final - start >= mining.max_depth):
                    stop = min(final, start + mining.max_depth)
                    found.append((start, stop, everything and stop == final))
                else:
                    short = True
                    break
            if not short:
                break
            take = min(len(cand), take * mm.DEPTH_GROWTH)
            self.rounds += 1
        self.pickable = [rows[start:end][pickable[g, start:end]] for g, (start, end, _) in enumerate(found)]
        return [(rows[start:end], sure_above + start, complete) for start, end, complete in found]


def _draws(shard: ShardView, payload: QueryPayload, mining: MiningConfig, seed: int):
    m = mm.random_draw_count(mining, len(payload.positives.ids), shard.ntotal)
    key = zlib.crc32(payload.query_id.encode("utf-8"))
    rng = np.random.default_rng([seed, key, _SHARD_DRAW_STREAM, shard.shard])
    drawn = rng.choice(shard.ntotal, size=m, replace=False) if m else np.zeros(0, np.int64)  # [m] draw order
    ids, scores, codes = _guard(shard, drawn, payload, mining)
    return drawn, ids, scores, codes


def _details(shard: ShardView, local: np.ndarray, payload: QueryPayload, pairs: np.ndarray | None = None):
    """[r, p] float32 cos(positive, candidate) of local rows (only the positives `pairs`, if given)."""
    vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [r, dim]
    positives = payload.positives.vectors if pairs is None else payload.positives.vectors[pairs]
    return (np.asarray(vectors, np.float64) @ np.asarray(positives, np.float64).T).astype(np.float32)


def shard_answer(shard: ShardView, payload: QueryPayload, approx: np.ndarray, mining: MiningConfig, seed: int,
                 keep_vectors=True) -> ShardCandidates:
    """ShardCandidates of one query: one window per pair group, their union stored once, details kept only for
    the rows a group may pick (issue 15: nothing per query that the output does not need)."""
    scan = _QueryScan(shard, payload, approx, mining)
    groups = mm.pair_groups(payload.positives, mining.margin_reference)
    windows = scan.windows(groups.references)
    union = np.unique(np.concatenate([w for w, _, _ in windows] + [np.zeros(0, np.int64)]))
    union = union[order_by_score_then_id(scan.exact[union], union)]
    row_of = np.full(shard.ntotal, -1, np.int64)
    row_of[union] = np.arange(len(union))
    lo = np.array([row_of[w[0]] if len(w) else 0 for w, _, _ in windows], np.int64)
    hi = lo + np.array([len(w) for w, _, _ in windows], np.int64)
    codes = scan.codes_of(union)
    # similarities travel per group, to its own pairs only (one positive each under 'pair'): what rows read
    sims = [_details(shard, rows, payload, np.flatnonzero(groups.of_pair == g)).ravel()
            for g, rows in enumerate(scan.pickable)]
    drawn, d_ids, d_scores, d_codes = _draws(shard, payload, mining, seed)
    return ShardCandidates(
        shard=shard.shard,
        ntotal=shard.ntotal,
        ids=np.asarray(shard.doc_ids[union], dtype=object),
        scores=scan.exact[union],
        codes=codes,
        above=np.array([a for _, a, _ in windows], np.int64),
        lo=lo,
        hi=hi,
        complete=np.array([c for _, _, c in windows], bool),
        detail_rows=np.concatenate([row_of[r] for r in scan.pickable] + [np.zeros(0, np.int64)]).astype(np.int32),
        detail_groups=np.repeat(np.arange(len(scan.pickable), dtype=np.int32), [len(r) for r in scan.pickable]),
        sims=np.concatenate(sims + [np.zeros(0, np.float32)]),
        draw_ids=d_ids,
        draw_codes=d_codes,
        draw_scores=d_scores,
        draw_sims=_details(shard, drawn, payload),
        rounds=scan.rounds,
        payload=(payload if keep_vectors else without_vectors(payload)) if shard.shard == 0 else None,
    )


class PositiveVectors:
    """Judged positives' exact vectors, looked up by id in the index's shard stores (read only): ids bisected in
    the store's mapped id column, vector rows read from the file (shard_search.read_rows), and the stores released
    after each chunk of queries (MineShardQueries), so positives spread over every shard map none of them for long.

    Query payloads cross the fan-out to every shard without their vectors (mine_rounds.MineQueries): that
    shuffle held num_shards copies of every query's [p, dim] positives, the largest buffer of the mine stage
    on dense qrels (issue 15). The vectors are the ones the index stores, so every score is unchanged.
    """

    def __init__(self, run: RunLayout, num_shards: int):
        self.run, self.num_shards, self.stores = run, num_shards, {}

    def release(self) -> None:
        """Unmap the stores (they are reopened on the next lookup): a worker keeps no store mapped between chunks."""
        self.stores.clear()

    def _store(self, shard: int) -> dict:
        if shard not in self.stores:
            from transforms.local_cache import machine_local_copy
            from transforms.shard_search import load_store

            self.stores[shard] = load_store(machine_local_copy(self.run.shard_store(shard, self.num_shards)))
        return self.stores[shard]

    def lookup(self, doc_ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found [p] bool, vectors [f, dim] float32, text hashes [f] str) of doc ids, each looked up in the shard
        transforms.index.shard_of assigns it (an id the index does not hold, e.g. a dead-lettered passage, is
        not found)."""
        from transforms.index import shard_of
        from transforms.shard_search import read_rows

        found, rows, shards, hashes = np.zeros(len(doc_ids), bool), [], [], []
        for i, (doc_id, shard) in enumerate(zip(doc_ids.tolist(), shard_of(doc_ids, self.num_shards).tolist())):
            store = self._store(shard)
            row = bisect.bisect_left(store["doc_ids"], doc_id)  # shard stores are sorted by doc id
            if row < len(store["doc_ids"]) and store["doc_ids"][row] == doc_id:
                found[i] = True
                rows.append(row)
                shards.append(shard)
                hashes.append(store["text_hashes"][row])
        matrix = np.zeros((len(rows), dim), np.float32)  # [f, dim] in the order of the found ids
        rows, shards = np.asarray(rows, np.int64), np.asarray(shards, np.int64)
        for shard in np.unique(shards).tolist():  # one read per store: rows read, not mapped
            at = np.flatnonzero(shards == shard)
            matrix[at] = read_rows(self._store(shard)["vectors"], rows[at])
        return found, matrix, as_object_strings(hashes)


def with_vectors(payload: QueryPayload, vector: np.ndarray, positives: PositiveVectors | None) -> QueryPayload:
    """A payload that crossed the fan-out without vectors (without_vectors, or mine_join's payloads, which carry
    positive ids only), completed: the query vector from its block; the positives' vectors and text hashes from
    the shard stores (positives the index does not hold are dropped) and their scores cos(query, positive)."""
    if payload.vector.size and (positives is None or payload.positives.vectors.size):
        return payload
    vector = np.asarray(vector, np.float32)
    if positives is None:
        return replace(payload, vector=vector)
    found, vectors, hashes = positives.lookup(payload.positives.ids, len(vector))
    scores = mm.cosine_rows(vectors, vector)  # [f]
    ids = payload.positives.ids[found]
    return replace(payload, vector=vector, positives=mm.Positives(ids, hashes, vectors, scores))


@dataclass(frozen=True)
class MineShardQueries:
    """ShardQueryFn: mine a block of queries on one loaded shard.

    Every document of the shard is scored approximately for a chunk of queries at once (one float32 BLAS
    product, no faiss, no depth cap on where a window starts); each pair group's window below its margin
    threshold is then made exact (_QueryScan.window), so a positive ranked deep still gets its negatives.
    """

    mining: MiningConfig
    seed: int
    keep_vectors: bool = True  # shard 0 hands the payload back with its vectors (False: only contextual needs them)
    run: RunLayout | None = None  # payloads without positive vectors: looked up in run's shard stores
    num_shards: int = 0

    def _positives(self) -> PositiveVectors | None:
        if self.run is None:
            return None
        if "_lookup" not in self.__dict__:  # per instance, on the worker (never pickled: set after unpickling)
            object.__setattr__(self, "_lookup", PositiveVectors(self.run, self.num_shards))
        return self.__dict__["_lookup"]

    def __call__(self, searcher: ShardView, block: QueryBlock):
        from transforms.shard_search import scan_scores

        lookup = self._positives()
        chunk = max(1, min(SHARD_CHUNK, _SCAN_BYTES // (4 * max(searcher.ntotal, 1))))
        for start in range(0, len(block.payloads), chunk):
            queries = np.asarray(block.vectors[start : start + chunk], dtype=np.float32)  # [c, dim]
            payloads = [with_vectors(p, v, lookup) for p, v in zip(block.payloads[start : start + chunk], queries)]
            if lookup is not None:
                lookup.release()
            # Small matrix products per query: BLAS threads only contend (10x slower on a busy 2-core machine);
            # parallelism comes from Beam's workers.
            with threadpool_limits(limits=1, user_api="blas"):
                approx = scan_scores(searcher.vectors, queries)  # [c, n]: queries @ vectors.T in aligned blocks
                answers = [
                    shard_answer(searcher, payload, approx[i], self.mining, self.seed, self.keep_vectors)
                    for i, payload in enumerate(payloads)
                ]
            del approx
            for payload, answer in zip(payloads, answers):
                yield payload.query_id, answer


@dataclass
class Ranked:
    """One pair group's merged window: the documents of every shard at or below the group's margin threshold,
    best first, cut at the complete prefix; the group's position i is the raw rank offset + i + 1."""

    ids: np.ndarray  # [n] str
    scores: np.ndarray  # [n] float64
    codes: np.ndarray  # [n] int8 candidate codes
    shard_of: np.ndarray  # [n] index into the shard results
    row_of: np.ndarray  # [n] row in that shard's union
    offset: int  # documents of the corpus ranked above the threshold
    exhausted: bool  # the window holds every document at or below the threshold


def _detail_index(result: ShardCandidates, sizes: np.ndarray) -> dict:
    """{(group, union row): offset of its similarities in result.sims} (each entry holds the group's pairs)."""
    offsets = np.cumsum(np.concatenate([[0], sizes[result.detail_groups]])).astype(np.int64)
    return dict(zip(zip(result.detail_groups.tolist(), result.detail_rows.tolist()), offsets[:-1].tolist()))


@dataclass
class _Union:
    """Every shard's union of windows for one query, concatenated, with each entry's place in one global order."""

    ids: np.ndarray  # [u] str
    scores: np.ndarray  # [u] float64
    codes: np.ndarray  # [u] int8
    position: np.ndarray  # [u] int64 place of each entry in the order by (-rounded score, id)
    first: np.ndarray  # [S] int64 first entry of each shard


def merge_unions(results: list[ShardCandidates]) -> _Union:
    ids = np.concatenate([r.ids for r in results])
    scores = np.concatenate([r.scores for r in results])
    order = order_by_score_then_id(scores, ids)  # once per query; each group's window is a subset of it
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    first = np.cumsum([0] + [len(r.ids) for r in results])[:-1].astype(np.int64)
    return _Union(ids, scores, np.concatenate([r.codes for r in results]), position, first)


def merge_group(union: _Union, results: list[ShardCandidates], g: int, max_depth: int) -> Ranked:
    """Merge group g's shard windows by (-rounded score, id), cut at the complete prefix and at max_depth.

    Each shard window is a prefix of the shard's documents below the group's threshold, so the merge is exact up
    to the earliest last entry of a window that is not complete; the rank offset is the sum of the shards'
    counts above the threshold. Both are the same for any number of shards.
    """
    entries = np.concatenate([first + np.arange(r.lo[g], r.hi[g], dtype=np.int64)
                              for first, r in zip(union.first.tolist(), results)])
    entries = entries[np.argsort(union.position[entries], kind="stable")]
    position = union.position[entries]  # ascending
    ends = [int(np.searchsorted(position, union.position[first + r.hi[g] - 1], side="right")) if r.hi[g] > r.lo[g]
            else 0 for first, r in zip(union.first.tolist(), results) if not r.complete[g]]
    cut = min(min(ends, default=len(entries)), max_depth)
    shard_of = np.searchsorted(union.first, entries[:cut], side="right") - 1
    return Ranked(
        ids=union.ids[entries[:cut]],
        scores=union.scores[entries[:cut]],
        codes=union.codes[entries[:cut]],
        shard_of=shard_of,
        row_of=entries[:cut] - union.first[shard_of],
        offset=int(sum(int(r.above[g]) for r in results)),
        exhausted=not ends and cut == len(entries),
    )


def query_stats(merged: list[Ranked], picks: list, chosen: list, groups, payload: QueryPayload, mining,
                results: list[ShardCandidates]) -> dict:
    """Per-query counts, summed over queries into the stage's selection statistics.

    Per pair group, the documents ranked above its margin threshold (judged positives by their own scores, the
    rest under the margin guard) plus the window prefix its picks rely on, by first guard; dropped: the group
    of the highest reference, per query; dropped_pairs: every group, once per pair.
    """
    p, slots = len(payload.positives.ids), len(mm.GUARDS) + 1
    sizes = groups.sizes()
    margin = "relative_margin" if mining.relative_margin is not None else "absolute_margin"
    per_pair, every, used = np.zeros(slots, np.int64), np.zeros(slots, np.int64), 0
    for g, (ranked, pick, ref) in enumerate(zip(merged, picks, groups.references)):
        reasons = mm.first_reasons(ranked.codes[: pick.used], mm.margin_codes(ranked.scores[: pick.used], ref, mining))
        counts = np.bincount(reasons.astype(np.int64), minlength=slots)
        judged_above = min(int(np.count_nonzero(mm.margin_codes(payload.positives.scores, ref, mining))),
                           ranked.offset)
        counts[mm.GUARDS.index("judged_positive") + 1] += judged_above
        counts[mm.GUARDS.index(margin) + 1] += ranked.offset - judged_above
        per_pair += counts * int(sizes[g])
        every, used = counts, max(used, pick.used)
    wanted = {"hard": mining.hard, "semi_hard": mining.semi_hard, "random": mining.random}
    pairs_full = {t: int(sum(sizes[g] for g, c in enumerate(chosen) if len(c[t]) >= k)) for t, k in wanted.items()}
    return {
        "queries": 1,
        "pairs": p,
        "candidates_seen": int(sum(len(r.ids) for r in results)),
        "dropped": {guard: int(every[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "dropped_pairs": {guard: int(per_pair[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "deeper_search_histogram": {str(mm.rounds_for(used, mining, p)): 1},
        "queries_full": {t: int(pairs_full[t] == p) for t, k in wanted.items() if k > 0},
        "pairs_full": {t: pairs_full[t] for t, k in wanted.items() if k > 0},
        "negatives": {t: len({n.negative_id for c in chosen for n in c[t]}) for t in wanted},
    }


class MergeShardsFn(beam.DoFn):
    """(query_id, [ShardCandidates per shard]) -> MinedQuery: merge, then pick the tiers per pair group.

    The shards searched deep enough for every group (MineShardQueries), so the merged list's complete prefix
    decides. keep_vectors=False drops the query and positive vectors from the MinedQuery (only contextual
    negatives need them): nothing held per query that the output does not need.
    """

    def __init__(self, mining: MiningConfig, seed: int, generator: str, keep_vectors: bool = True):
        self.mining = mining
        self.seed = seed
        self.generator = generator  # e.g. 'faiss:Flat'
        self.keep_vectors = keep_vectors
        self.deeper_searches = Metrics.counter("mine", "deeper_searches")
        self.queries_mined = Metrics.counter("mine", "queries_mined")
        self.candidates_seen = Metrics.counter("mine", "candidates_seen")
        self.dropped = {guard: Metrics.counter("mine", f"dropped_{guard}") for guard in mm.GUARDS}

    def process(self, element):
        query_id, results = element
        results = sorted(results, key=lambda r: r.shard)
        payload = next(r.payload for r in results if r.payload is not None)
        groups = mm.pair_groups(payload.positives, self.mining.margin_reference)
        pairs_of = [np.flatnonzero(groups.of_pair == g) for g in range(len(groups.references))]
        details = [_detail_index(r, groups.sizes()) for r in results]
        refs = groups.references[:, None]  # [g, 1]
        draws_ok = [(r.draw_codes == mm.KEEP) & (mm.margin_codes(r.draw_scores[None, :], refs, self.mining) == 0)
                    for r in results]  # per shard: [g, m]
        negatives, index, merged, picks, chosen, members = [], {}, [], [], [], []
        union = merge_unions(results)
        for g, ref in enumerate(groups.references):
            ranked = merge_group(union, results, g, self.mining.max_depth)
            reasons = mm.first_reasons(ranked.codes, mm.margin_codes(ranked.scores, ref, self.mining))
            rngs = {tier: mm.tier_rng(self.seed, query_id, tier) for tier in ("hard", "semi_hard", "random")}
            pick = mm.pick_mined(ranked.scores, reasons, float(ref), ranked.exhausted, self.mining, rngs)
            mined = {
                tier: [self._mined(ranked, results, details, int(i), tier, g, pairs_of[g]) for i in chosen_]
                for tier, chosen_ in (("hard", pick.hard), ("semi_hard", pick.semi_hard))
            }
            mined["random"] = self._random(results, payload, mined, [ok[g] for ok in draws_ok], rngs["random"],
                                           pairs_of[g])
            merged.append(ranked)
            picks.append(pick)
            chosen.append(mined)
            members.append(np.array([self._index(negatives, index, n) for t in mined.values() for n in t], np.int64))
        stats = query_stats(merged, picks, chosen, groups, payload, self.mining, results)
        self._count(stats, results)
        if not self.keep_vectors:
            payload = without_vectors(payload)
        yield MinedQuery(query_id, payload, negatives, members, groups.of_pair, stats)

    @staticmethod
    def _index(negatives: list, index: dict, negative: MinedNegative) -> int:
        key = (negative.negative_id, negative.tier)
        if key not in index:
            index[key] = len(negatives)
            negatives.append(negative)
        else:  # another group chose it too: the same document, rank and score; add its pairs' similarities
            negatives[index[key]].sims.update(negative.sims)
        return index[key]

    def _mined(self, ranked: Ranked, results, details, i: int, tier: str, g: int, pairs: np.ndarray) -> MinedNegative:
        s, row = int(ranked.shard_of[i]), int(ranked.row_of[i])
        k = details[s][g, row]  # a KeyError here means window_ends and pick_mined disagree: a bug
        return MinedNegative(
            negative_id=str(ranked.ids[i]),
            tier=tier,
            rank=ranked.offset + i + 1,
            score_negative=float(ranked.scores[i]),
            sims=dict(zip(pairs.tolist(), results[s].sims[k : k + len(pairs)].tolist())),
            generator=self.generator,
        )

    def _random(self, results, payload: QueryPayload, chosen: dict, draws_ok: list, rng, pairs: np.ndarray
                ) -> list[MinedNegative]:
        if self.mining.random == 0:
            return []
        exclude = {n.negative_id for tier in chosen.values() for n in tier} | set(payload.positives.ids.tolist())
        picks = mm.pick_random(
            np.array([r.ntotal for r in results]),
            draws_ok,
            [r.draw_ids for r in results],
            self.mining.random,
            exclude,
            rng,
        )
        return [
            MinedNegative(
                negative_id=str(results[s].draw_ids[i]),
                tier="random",
                rank=None,
                score_negative=float(results[s].draw_scores[i]),
                sims=dict(zip(pairs.tolist(), results[s].draw_sims[i, pairs].tolist())),
                generator="uniform",
            )
            for s, i in picks
        ]

    def _count(self, stats: dict, results) -> None:
        self.queries_mined.inc()
        self.candidates_seen.inc(stats["candidates_seen"])
        self.deeper_searches.inc(sum(r.rounds for r in results))
        for guard, n in stats["dropped"].items():
            if n:
                self.dropped[guard].inc(n)


def text_requests(mined: MinedQuery):
    """(doc_id, query_id) for every document whose text the query's rows need (positives and negatives)."""
    wanted = dict.fromkeys(mined.payload.positives.ids.tolist() + [n.negative_id for n in mined.negatives])
    for doc_id in wanted:
        yield doc_id, mined.query_id


class BuildRowsFn(beam.DoFn):
    """(query_id, {'mined', 'texts', 'query'}) -> negatives rows (dicts in NEGATIVES_SCHEMA); with
    contextual on, also one element per (query, positive) on output 'contextual_pairs'."""

    def __init__(self, contextual: bool):
        self.contextual = contextual
        self.missing_text = Metrics.counter("mine", "rows_missing_text")

    def process(self, element):
        query_id, groups = element
        mined_list, texts, anchors = list(groups["mined"]), dict(groups["texts"]), list(groups["query"])
        if not mined_list:
            return
        mined = mined_list[0]
        if not anchors:
            self.missing_text.inc()
            logger.warning("query %s has no text in inputs/queries; its rows are skipped", query_id)
            return
        positives = mined.payload.positives
        hashes: dict[str, str] = {}
        for j, positive_id in enumerate(positives.ids.tolist()):
            positive = texts.get(positive_id)
            if positive is None:
                self.missing_text.inc()
                continue
            for neg in mined.negatives_of_pair(j):
                negative = texts.get(neg.negative_id)
                if negative is None:
                    self.missing_text.inc()
                    continue
                if neg.negative_id not in hashes:
                    hashes[neg.negative_id] = text_hash(negative)  # once per negative of the query
                yield _row(query_id, positive_id, anchors[0], positive, negative, hashes[neg.negative_id], neg,
                           float(positives.scores[j]), j)
            if self.contextual:
                yield beam.pvalue.TaggedOutput(CONTEXTUAL_PAIRS, _contextual_pair(mined, j, anchors[0], positive))


def _row(query_id, positive_id, anchor, positive, negative, negative_hash, neg: MinedNegative, score_positive, j):
    return {
        "query_id": query_id,
        "positive_id": positive_id,
        "negative_id": neg.negative_id,
        "anchor": anchor,
        "positive": positive,
        "negative": negative,
        "tier": neg.tier,
        "rank": neg.rank,
        "score_positive": score_positive,
        "score_negative": neg.score_negative,
        "similarity_to_positive": float(neg.sims[j]),
        "generator": neg.generator,
        "edit": None,
        "negative_text_hash": negative_hash,  # text_hash of the negative's text, as ingest hashed the passage
        "lexical_overlap": lexical_overlap(positive, negative),
    }


def _contextual_pair(mined: MinedQuery, j: int, anchor: str, positive: str) -> dict:
    positives = mined.payload.positives
    return {
        "query_id": mined.query_id,
        "positive_id": str(positives.ids[j]),
        "anchor": anchor,
        "positive": positive,
        "query_vector": mined.payload.vector,
        "positive_vector": positives.vectors[j],
        "score_positive": float(positives.scores[j]),
        "judged_positive_ids": positives.ids.tolist(),
        "judged_positive_hashes": positives.text_hashes.tolist(),
    }
