"""Beam side of mining: the per-shard mining fn, the per-query merge/tier DoFn and the text join into rows.

Flow per query (see pipelines/stage_mine.py): a QueryPayload (query vector, judged positives, depth) travels
in a QueryBlock to every shard; MineShardQueries searches the loaded shard, guards each candidate once there (it
has the exact vectors, ids and text hashes) and searches deeper on that shard until every pair group has
enough (issue 15: deeper rounds reuse the loaded shard and the scores already computed), returning
ShardCandidates; MergeShardsFn merges the shards into the query's ranked list and picks the tiers per pair group
(pairs sharing a margin reference: the whole query under 'lowest', each positive under 'pair'). BuildRowsFn joins
the texts and writes one row per (query, positive, negative).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from threadpoolctl import threadpool_limits

from schemas.build_config import MiningConfig
from schemas.negatives import lexical_overlap, text_hash
from transforms import mining_math as mm
from transforms.search_api import QueryBlock, ShardView
from transforms.topk import order_by_score_then_id

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
    """One shard's answer for one query: its ranked candidates with their guard codes, similarities to the
    positives only for the rows a pair group may pick, and the random-tier draws. Text hashes stay on the shard
    (the rows hash the negative's text, which they carry anyway)."""

    shard: int
    ntotal: int
    ids: np.ndarray  # [d] str, best first by (-rounded score, id)
    scores: np.ndarray  # [d] float64, exact cos(query, candidate)
    codes: np.ndarray  # [d] int8 mining_math.candidate_codes (margins are applied per pair group at the merge)
    complete: bool  # the list holds every document of the shard
    detail_rows: np.ndarray  # [r] int positions into the list whose details travel
    sims: np.ndarray  # [r, p] float32 cos(positive, candidate)
    draw_ids: np.ndarray  # [m] str, random-tier draws in draw order
    draw_codes: np.ndarray  # [m] int8 candidate codes of the draws
    draw_scores: np.ndarray  # [m] float64
    draw_sims: np.ndarray  # [m, p] float32
    rounds: int = 0  # deeper searches this shard ran for the query
    payload: QueryPayload | None = None  # shard 0 hands the payload back to the merge


@dataclass
class MinedNegative:
    negative_id: str
    tier: str
    rank: int | None  # 1-based position in the raw retrieval list; None for random
    score_negative: float
    sims: np.ndarray  # [p] float32 cos(positive_j, negative)
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


def _guard(shard: ShardView, local: np.ndarray, payload: QueryPayload, mining: MiningConfig):
    """(ids, scores, candidate codes) of local rows: each candidate is scored and guarded once."""
    vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [n, dim]
    ids = np.asarray(shard.doc_ids[local], dtype=object)  # [n] str objects: never as wide as the longest id
    hashes = np.asarray(shard.text_hashes[local], dtype=object)  # [n] str objects
    scores = mm.cosine_rows(vectors, payload.vector)  # [n]
    if len(payload.positives.ids) and len(local):
        max_sims = mm.similarity_to_positives(vectors, payload.positives).max(axis=1)  # [n]
    else:
        max_sims = np.full(len(local), -np.inf)
    return ids, scores, mm.candidate_codes(ids, hashes, scores, max_sims, payload.positives, mining)


@dataclass
class _ShardList:
    """A query's guarded candidates on one shard, grown round by round (best first)."""

    local: np.ndarray  # [n] int64 shard rows
    ids: np.ndarray  # [n] str
    scores: np.ndarray  # [n] float64
    codes: np.ndarray  # [n] int8
    rounds: int = 0

    def extend(self, shard: ShardView, local: np.ndarray, payload: QueryPayload, mining: MiningConfig) -> None:
        """Add a deeper search's rows: only rows not seen yet are scored and guarded."""
        local = local[local >= 0]
        new = local[~np.isin(local, self.local)]
        ids, scores, codes = _guard(shard, new, payload, mining)
        ids, scores = np.concatenate([self.ids, ids]), np.concatenate([self.scores, scores])
        order = order_by_score_then_id(scores, ids)  # our own exact scores decide the order
        self.local = np.concatenate([self.local, new])[order]
        self.ids, self.scores = ids[order], scores[order]
        self.codes = np.concatenate([self.codes, codes])[order]


def _empty_list() -> _ShardList:
    return _ShardList(np.zeros(0, np.int64), np.empty(0, object), np.zeros(0), np.zeros(0, np.int8))


def _draws(shard: ShardView, payload: QueryPayload, mining: MiningConfig, seed: int):
    m = mm.random_draw_count(mining, len(payload.positives.ids), shard.ntotal)
    key = zlib.crc32(payload.query_id.encode("utf-8"))
    rng = np.random.default_rng([seed, key, _SHARD_DRAW_STREAM, shard.shard])
    drawn = rng.choice(shard.ntotal, size=m, replace=False) if m else np.zeros(0, np.int64)  # [m] draw order
    ids, scores, codes = _guard(shard, drawn, payload, mining)
    return drawn, ids, scores, codes


def _details(shard: ShardView, local: np.ndarray, payload: QueryPayload):
    vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [r, dim]
    sims = mm.similarity_to_positives(vectors, payload.positives).astype(np.float32)  # [r, p]
    return sims


def shard_answer(
    shard: ShardView, payload: QueryPayload, found: _ShardList, mining: MiningConfig, seed: int, keep_vectors=True
):
    """ShardCandidates of one query from its guarded list: cut where every pair group has enough, details kept
    only for the rows a group may pick (issue 15: nothing per query that the output does not need)."""
    groups = mm.pair_groups(payload.positives, mining.margin_reference)
    end, _ = mm.shard_prefix(found.scores, found.codes, groups.references, mining)
    keep = slice(None) if end is None else slice(0, end)
    local, ids, scores, codes = found.local[keep], found.ids[keep], found.scores[keep], found.codes[keep]
    _, pickable = mm.shard_prefix(scores, codes, groups.references, mining)
    rows = np.flatnonzero(pickable)
    sims = _details(shard, local[rows], payload)
    drawn, d_ids, d_scores, d_codes = _draws(shard, payload, mining, seed)
    d_sims = _details(shard, drawn, payload)
    return ShardCandidates(
        shard=shard.shard,
        ntotal=shard.ntotal,
        ids=ids,
        scores=scores,
        codes=codes,
        complete=len(ids) >= shard.ntotal,
        detail_rows=rows,
        sims=sims,
        draw_ids=d_ids,
        draw_codes=d_codes,
        draw_scores=d_scores,
        draw_sims=d_sims,
        rounds=found.rounds,
        payload=(payload if keep_vectors else without_vectors(payload)) if shard.shard == 0 else None,
    )


@dataclass(frozen=True)
class MineShardQueries:
    """ShardQueryFn: mine a block of queries on one loaded shard, deeper rounds included.

    A query short of survivors on this shard is searched again x4 deeper (up to max_depth) while the shard is
    loaded; rows already scored are not guarded again. A shard stops once it holds enough for every pair group
    (mining_math.shard_prefix): then the merged list's complete prefix holds enough too.
    """

    mining: MiningConfig
    seed: int
    keep_vectors: bool = True  # shard 0 hands the payload back with its vectors (False: only contextual needs them)

    def __call__(self, searcher: ShardView, block: QueryBlock):
        for start in range(0, len(block.payloads), SHARD_CHUNK):
            payloads = block.payloads[start : start + SHARD_CHUNK]
            vectors = block.vectors[start : start + SHARD_CHUNK]
            # Small matrix products per query: BLAS threads only contend (10x slower on a busy 2-core machine);
            # parallelism comes from Beam's workers.
            with threadpool_limits(limits=1, user_api="blas"):
                answers = [
                    shard_answer(searcher, payload, found, self.mining, self.seed, self.keep_vectors)
                    for payload, found in zip(payloads, self._search(searcher, payloads, vectors))
                ]
            for payload, answer in zip(payloads, answers):
                yield payload.query_id, answer

    def _search(self, searcher: ShardView, payloads: list, vectors: np.ndarray) -> list[_ShardList]:
        ntotal, mining = searcher.ntotal, self.mining
        cap = min(ntotal, mining.max_depth)
        found = [_empty_list() for _ in payloads]
        depths = np.array([min(p.depth, cap) for p in payloads], dtype=np.int64)
        pending = np.arange(len(payloads))
        while pending.size:
            deeper = []
            for depth in np.unique(depths[pending]):  # one search per distinct depth
                rows = pending[depths[pending] == depth]
                _, local = searcher.search(vectors[rows], int(depth))  # [r, depth] local indices, best first
                for row, row_local in zip(rows, local):
                    payload = payloads[row]
                    found[row].extend(searcher, row_local, payload, mining)
                    # the group of the lowest reference needs the deepest prefix (its survivors and band lie
                    # furthest down the list), so it alone decides whether to search deeper
                    refs = mm.pair_groups(payload.positives, mining.margin_reference).references[:1]
                    end, _ = mm.shard_prefix(found[row].scores, found[row].codes, refs, mining)
                    if end is None and depth < cap:
                        depths[row] = min(mm.next_depth(int(depth), mining), cap)
                        found[row].rounds += 1
                        deeper.append(row)
            pending = np.array(sorted(deeper), dtype=np.int64)
        return found


@dataclass
class Ranked:
    """One query's merged raw retrieval list, truncated to its complete prefix (best first)."""

    ids: np.ndarray  # [n] str
    scores: np.ndarray  # [n] float64
    codes: np.ndarray  # [n] int8 candidate codes
    shard_of: np.ndarray  # [n] index into the shard results
    row_of: np.ndarray  # [n] position in that shard's list
    exhausted: bool  # the list is the whole corpus


def merge_shards(results: list[ShardCandidates], max_depth: int) -> Ranked:
    """Merge per-shard lists by (-rounded score, id), cut at the complete prefix and at max_depth.

    Each shard list is a prefix of the shard's order, so the merge is exact up to the earliest last entry of a
    shard whose list is not complete; the prefix is the same for any number of shards wherever picks are taken.
    """
    ids = np.concatenate([r.ids for r in results])
    scores = np.concatenate([r.scores for r in results])
    shard_of = np.concatenate([np.full(len(r.ids), k, np.int64) for k, r in enumerate(results)])
    row_of = np.concatenate([np.arange(len(r.ids), dtype=np.int64) for r in results])
    order = order_by_score_then_id(scores, ids)
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    ends, offset = [], 0
    for r in results:
        if not r.complete:
            ends.append(int(position[offset + len(r.ids) - 1]) + 1 if len(r.ids) else 0)
        offset += len(r.ids)
    cut = min(min(ends, default=len(order)), max_depth)
    order = order[:cut]
    return Ranked(
        ids=ids[order],
        scores=scores[order],
        codes=np.concatenate([r.codes for r in results])[order],
        shard_of=shard_of[order],
        row_of=row_of[order],
        exhausted=cut >= sum(r.ntotal for r in results),
    )


def query_stats(ranked: Ranked, picks: list, chosen: list, groups, reasons: np.ndarray, payload: QueryPayload,
                mining) -> dict:
    """Per-query counts, summed over queries into the stage's selection statistics.

    dropped: candidates of the ranked prefix the picks rely on, by the first guard that drops them for every
    pair of the query (margins against its highest reference); dropped_pairs: (pair, candidate) decisions by
    first guard, each pair against its own reference (reasons: [g, n] first reasons per pair group).
    """
    p, slots = len(payload.positives.ids), len(mm.GUARDS) + 1
    used = max((pick.used for pick in picks), default=0)
    sizes = groups.sizes()
    top = groups.references.max() if len(groups.references) else 0.0
    every = mm.first_reasons(ranked.codes[:used], mm.margin_codes(ranked.scores[:used], top, mining))
    counts = np.bincount(every.astype(np.int64), minlength=slots)  # [1 + guards]
    seen = reasons[:, :used].astype(np.int64)  # [g, used] first reason per group
    per_pair = np.bincount(seen.ravel(), weights=np.repeat(sizes, seen.shape[1]), minlength=slots).astype(np.int64)
    wanted = {"hard": mining.hard, "semi_hard": mining.semi_hard, "random": mining.random}
    pairs_full = {t: int(sum(sizes[g] for g, c in enumerate(chosen) if len(c[t]) >= k)) for t, k in wanted.items()}
    return {
        "queries": 1,
        "pairs": p,
        "candidates_seen": used,
        "dropped": {guard: int(counts[i + 1]) for i, guard in enumerate(mm.GUARDS)},
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
        ranked = merge_shards(results, self.mining.max_depth)
        details = [dict(zip(r.detail_rows.tolist(), range(len(r.detail_rows)))) for r in results]
        groups = mm.pair_groups(payload.positives, self.mining.margin_reference)
        refs = groups.references[:, None]  # [g, 1]
        reasons_per_group = mm.first_reasons(ranked.codes, mm.margin_codes(ranked.scores[None, :], refs, self.mining))
        draws_ok = [(r.draw_codes == mm.KEEP) & (mm.margin_codes(r.draw_scores[None, :], refs, self.mining) == 0)
                    for r in results]  # per shard: [g, m]
        negatives, index, picks, chosen, members = [], {}, [], [], []
        for g, (ref, reasons) in enumerate(zip(groups.references, reasons_per_group)):
            rngs = {tier: mm.tier_rng(self.seed, query_id, tier) for tier in ("hard", "semi_hard", "random")}
            pick = mm.pick_mined(ranked.scores, reasons, float(ref), ranked.exhausted, self.mining, rngs)
            mined = {
                "hard": [self._mined(ranked, results, details, int(i), "hard") for i in pick.hard],
                "semi_hard": [self._mined(ranked, results, details, int(i), "semi_hard") for i in pick.semi_hard],
            }
            mined["random"] = self._random(results, payload, mined, [ok[g] for ok in draws_ok], rngs["random"])
            picks.append(pick)
            chosen.append(mined)
            members.append(np.array([self._index(negatives, index, n) for t in mined.values() for n in t], np.int64))
        stats = query_stats(ranked, picks, chosen, groups, reasons_per_group, payload, self.mining)
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
        return index[key]

    def _mined(self, ranked: Ranked, results, details, i: int, tier: str) -> MinedNegative:
        s, row = int(ranked.shard_of[i]), int(ranked.row_of[i])
        k = details[s][row]  # a KeyError here means shard_prefix and pick_mined disagree: a bug
        return MinedNegative(
            negative_id=str(ranked.ids[i]),
            tier=tier,
            rank=i + 1,
            score_negative=float(ranked.scores[i]),
            sims=np.array(results[s].sims[k]),  # a copy: a view would pin the shard's whole [r, p] block
            generator=self.generator,
        )

    def _random(self, results, payload: QueryPayload, chosen: dict, draws_ok: list, rng) -> list[MinedNegative]:
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
                sims=np.array(results[s].draw_sims[i]),
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
