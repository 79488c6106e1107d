"""Beam side of mining: the per-shard mining fn, the per-query merge/tier DoFn and the text join into rows.

Flow per query (see pipelines/stage_mine.py): a QueryPayload (query vector, judged positives, depth) travels
in a QueryBlock to every shard; MineShardQueries searches the shard, applies every guard there (it has the
exact vectors, ids and text hashes) and returns ShardCandidates; MergeShardsFn merges the shards into the
query's ranked list, picks the tiers, and either emits a MinedQuery or asks for a deeper search (tagged
output 'deeper'). BuildRowsFn joins the texts and writes one row per (query, positive, negative).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.build_config import MiningConfig
from schemas.negatives import lexical_overlap
from transforms import mining_math as mm
from transforms.search_api import QueryBlock, ShardView
from transforms.topk import order_by_score_then_id

logger = logging.getLogger(__name__)

DEEPER = "deeper"
CONTEXTUAL_PAIRS = "contextual_pairs"
_SHARD_DRAW_STREAM = 0  # RNG stream id of the per-shard random-tier draws


@dataclass
class QueryPayload:
    """What a shard needs to mine one query."""

    query_id: str
    vector: np.ndarray  # [dim] float32, L2-normalised
    positives: mm.Positives
    depth: int  # raw results to search (global complete prefix)
    round: int = 0  # deeper searches done so far


@dataclass
class ShardCandidates:
    """One shard's answer for one query: its raw top-depth list with guard verdicts, plus random draws."""

    shard: int
    ntotal: int
    ids: np.ndarray  # [d] str, best first by (-rounded score, id)
    scores: np.ndarray  # [d] float64, exact cos(query, candidate)
    reasons: np.ndarray  # [d] int8 guard codes (mining_math.GUARDS)
    sims: np.ndarray  # [d, p] float32 cos(positive, candidate)
    text_hashes: np.ndarray  # [d] str
    draw_ids: np.ndarray  # [m] str, random-tier draws in draw order
    draw_ok: np.ndarray  # [m] bool, the draw passed every guard
    draw_scores: np.ndarray  # [m] float64
    draw_sims: np.ndarray  # [m, p] float32
    draw_hashes: np.ndarray  # [m] str
    payload: QueryPayload | None = None  # shard 0 hands the payload back to the merge


@dataclass
class MinedNegative:
    negative_id: str
    tier: str
    rank: int | None  # 1-based position in the raw retrieval list; None for random
    score_negative: float
    sims: np.ndarray  # [p] float32 cos(positive_j, negative)
    text_hash: str
    generator: str


@dataclass
class MinedQuery:
    query_id: str
    payload: QueryPayload
    negatives: list[MinedNegative]
    stats: dict


def _score_and_guard(shard: ShardView, local: np.ndarray, payload: QueryPayload, mining: MiningConfig):
    vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [n, dim]
    ids = np.asarray(shard.doc_ids[local]).astype(str)
    hashes = np.asarray(shard.text_hashes[local]).astype(str)
    scores = mm.cosine_rows(vectors, payload.vector)  # [n]
    sims = mm.similarity_to_positives(vectors, payload.positives)  # [n, p]
    reasons = mm.guard_reasons(ids, hashes, scores, sims, payload.positives, mining)
    return ids, scores, reasons, sims.astype(np.float32), hashes


def mine_on_shard(shard: ShardView, payload: QueryPayload, local: np.ndarray, mining: MiningConfig, seed: int):
    """ShardCandidates of one query from its row of the shard's search result (local indices, best first)."""
    depth = min(payload.depth, shard.ntotal)
    local = local[:depth]
    local = local[local >= 0]
    ids, scores, reasons, sims, hashes = _score_and_guard(shard, local, payload, mining)
    order = order_by_score_then_id(scores, ids)  # re-sort on our own exact scores
    m = mm.random_draw_count(mining, len(payload.positives.ids), shard.ntotal)
    key = zlib.crc32(payload.query_id.encode("utf-8"))
    rng = np.random.default_rng([seed, key, _SHARD_DRAW_STREAM, shard.shard])
    drawn = rng.choice(shard.ntotal, size=m, replace=False) if m else np.zeros(0, np.int64)  # [m] draw order
    d_ids, d_scores, d_reasons, d_sims, d_hashes = _score_and_guard(shard, drawn, payload, mining)
    return ShardCandidates(
        shard=shard.shard,
        ntotal=shard.ntotal,
        ids=ids[order],
        scores=scores[order],
        reasons=reasons[order],
        sims=sims[order],
        text_hashes=hashes[order],
        draw_ids=d_ids,
        draw_ok=d_reasons == mm.KEEP,
        draw_scores=d_scores,
        draw_sims=d_sims,
        draw_hashes=d_hashes,
        payload=payload if shard.shard == 0 else None,
    )


@dataclass(frozen=True)
class MineShardQueries:
    """ShardQueryFn: search one shard for a block of queries and guard the candidates there."""

    mining: MiningConfig
    seed: int

    def __call__(self, searcher: ShardView, block: QueryBlock):
        depths = np.array([min(p.depth, searcher.ntotal) for p in block.payloads], dtype=np.int64)
        for depth in np.unique(depths):  # one search per distinct depth: a deep query costs only itself
            rows = np.flatnonzero(depths == depth)
            _, local = searcher.search(block.vectors[rows], int(depth))  # [r, depth] local indices, best first
            for row, row_local in zip(rows, local):
                payload = block.payloads[row]
                yield payload.query_id, mine_on_shard(searcher, payload, row_local, self.mining, self.seed)


@dataclass
class Ranked:
    """One query's merged raw retrieval list, truncated to its complete prefix (best first)."""

    ids: np.ndarray  # [n] str
    scores: np.ndarray  # [n] float64
    reasons: np.ndarray  # [n] int8
    sims: np.ndarray  # [n, p] float32
    text_hashes: np.ndarray  # [n] str
    exhausted: bool  # the list is the whole corpus


def merge_shards(results: list[ShardCandidates], depth: int) -> Ranked:
    """Merge per-shard lists by (-rounded score, id) and keep the first `depth`: every entry there is in its
    shard's top-depth, so this prefix is exact and the same for any number of shards."""
    ids = np.concatenate([r.ids for r in results])
    scores = np.concatenate([r.scores for r in results])
    order = order_by_score_then_id(scores, ids)[:depth]
    pick = lambda field: np.concatenate([getattr(r, field) for r in results])[order]  # noqa: E731
    return Ranked(
        ids=ids[order],
        scores=scores[order],
        reasons=pick("reasons"),
        sims=pick("sims"),
        text_hashes=pick("text_hashes"),
        exhausted=depth >= sum(r.ntotal for r in results),
    )


def query_stats(ranked: Ranked, chosen: dict[str, list], payload: QueryPayload, mining: MiningConfig) -> dict:
    """Per-query counts, summed over queries into the stage's selection statistics."""
    p = len(payload.positives.ids)
    counts = np.bincount(ranked.reasons.astype(np.int64), minlength=len(mm.GUARDS) + 1)  # [1 + guards]
    wanted = {"hard": mining.hard, "semi_hard": mining.semi_hard, "random": mining.random}
    full = {tier: int(len(chosen[tier]) >= k) for tier, k in wanted.items() if k > 0}
    return {
        "queries": 1,
        "pairs": p,
        "candidates_seen": len(ranked.ids),
        "dropped": {guard: int(counts[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "deeper_search_histogram": {str(payload.round): 1},
        "queries_full": full,
        "pairs_full": {tier: f * p for tier, f in full.items()},
        "negatives": {tier: len(chosen[tier]) for tier in wanted},
    }


class MergeShardsFn(beam.DoFn):
    """(query_id, [ShardCandidates per shard]) -> MinedQuery, or a deeper QueryPayload on output 'deeper'."""

    def __init__(self, mining: MiningConfig, seed: int, generator: str, last_round: int):
        self.mining = mining
        self.seed = seed
        self.generator = generator  # e.g. 'faiss:Flat'
        self.last_round = last_round
        self.deeper_searches = Metrics.counter("mine", "deeper_searches")
        self.queries_mined = Metrics.counter("mine", "queries_mined")
        self.candidates_seen = Metrics.counter("mine", "candidates_seen")
        self.dropped = {guard: Metrics.counter("mine", f"dropped_{guard}") for guard in mm.GUARDS}

    def process(self, element):
        query_id, results = element
        results = sorted(results, key=lambda r: r.shard)
        payload = next(r.payload for r in results if r.payload is not None)
        ranked = merge_shards(results, payload.depth)
        rngs = {tier: mm.tier_rng(self.seed, query_id, tier) for tier in ("hard", "semi_hard", "random")}
        floor = payload.positives.floor
        pick = mm.pick_mined(ranked.scores, ranked.reasons, floor, ranked.exhausted, self.mining, rngs)
        if pick.needs_deeper and payload.depth < self.mining.max_depth and payload.round < self.last_round:
            self.deeper_searches.inc()
            deeper = replace(payload, depth=mm.next_depth(payload.depth, self.mining), round=payload.round + 1)
            yield beam.pvalue.TaggedOutput(DEEPER, deeper)
            return
        chosen = {
            "hard": [self._mined(ranked, int(i), "hard") for i in pick.hard],
            "semi_hard": [self._mined(ranked, int(i), "semi_hard") for i in pick.semi_hard],
        }
        chosen["random"] = self._random(results, payload, chosen, rngs["random"])
        stats = query_stats(ranked, chosen, payload, self.mining)
        self._count(stats)
        negatives = chosen["hard"] + chosen["semi_hard"] + chosen["random"]
        yield MinedQuery(query_id=query_id, payload=payload, negatives=negatives, stats=stats)

    def _mined(self, ranked: Ranked, i: int, tier: str) -> MinedNegative:
        return MinedNegative(
            negative_id=str(ranked.ids[i]),
            tier=tier,
            rank=i + 1,
            score_negative=float(ranked.scores[i]),
            sims=ranked.sims[i],
            text_hash=str(ranked.text_hashes[i]),
            generator=self.generator,
        )

    def _random(self, results, payload: QueryPayload, chosen: dict, rng) -> list[MinedNegative]:
        if self.mining.random == 0:
            return []
        exclude = {n.negative_id for tier in chosen.values() for n in tier} | set(payload.positives.ids.tolist())
        picks = mm.pick_random(
            np.array([r.ntotal for r in results]),
            [r.draw_ok for r in results],
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
                sims=results[s].draw_sims[i],
                text_hash=str(results[s].draw_hashes[i]),
                generator="uniform",
            )
            for s, i in picks
        ]

    def _count(self, stats: dict) -> None:
        self.queries_mined.inc()
        self.candidates_seen.inc(stats["candidates_seen"])
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
        for j, positive_id in enumerate(positives.ids.tolist()):
            positive = texts.get(positive_id)
            if positive is None:
                self.missing_text.inc()
                continue
            for neg in mined.negatives:
                negative = texts.get(neg.negative_id)
                if negative is None:
                    self.missing_text.inc()
                    continue
                yield _row(query_id, positive_id, anchors[0], positive, negative, neg, float(positives.scores[j]), j)
            if self.contextual:
                yield beam.pvalue.TaggedOutput(CONTEXTUAL_PAIRS, _contextual_pair(mined, j, anchors[0], positive))


def _row(query_id, positive_id, anchor, positive, negative, neg: MinedNegative, score_positive, j) -> dict:
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
        "negative_text_hash": neg.text_hash,
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
