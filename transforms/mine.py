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
from schemas.negatives import text_hash, token_set
from transforms import mining_math as mm
from transforms.search_api import QueryBlock, ShardView
from transforms.string_column import StringColumn, as_object_strings, pack_strings
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
    are stored once, as their union. Windows run from the threshold into the semi-hard band, so on dense qrels
    the union is most of the shard: its rows travel as plain arrays (ids packed as UTF-8 bytes, scores as their
    1e-6 grid units, all the merge's decisions need); exact scores and similarities to the positives only for
    the rows a group may pick (issue 15: object arrays of ids and float64 scores of every union row made the
    GroupByQuery buffer the largest of the stage). Text hashes stay on the shard."""

    shard: int
    ntotal: int
    # the union, best first by (-rounded score, id), zlib-compressed (its ids and grid units compress ~3x; it is
    # most of the GroupByQuery buffer): units [u] int32 round(cos(query, candidate) / SCORE_GRID) (topk.round_scores
    # in grid steps), codes [u] int8 mining_math.candidate_codes, id lengths [u] (id_width bytes each), then the
    # ids' UTF-8 bytes back to back; read through the properties below
    union: bytes
    union_size: int  # u
    id_width: int
    pick_rows: np.ndarray  # [r] int32 ascending union rows some group may pick
    pick_scores: np.ndarray  # [r] float64 their exact cos(query, candidate)
    above: np.ndarray  # [g] int64 shard documents ranked above group g's margin threshold
    lo: np.ndarray  # [g] int64 group g's window is rows lo[g]:hi[g] of the union
    hi: np.ndarray  # [g] int64
    complete: np.ndarray  # [g] bool: the window holds every shard document at or below the threshold
    detail_rows: np.ndarray  # [r] int32 union rows a group may pick, group by group
    detail_groups: np.ndarray  # [r] int32 the group of each
    sims: np.ndarray  # [sum of the groups' sizes] float32 cos(positive, candidate), the group's pairs only
    draw_count: int  # m: random-tier draws of the shard (a prefix of which travels below)
    draw_ids: np.ndarray  # [t <= m] str, the draws any group may reach (_draws_needed), in draw order
    draw_codes: np.ndarray  # [t] int8 candidate codes of the draws
    draw_scores: np.ndarray  # [t] float64
    draw_sims: np.ndarray  # [t, p] float32
    rounds: int = 0  # window growths this shard ran for the query (all groups)
    payload: QueryPayload | None = None  # shard 0 hands the payload back to the merge

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if "_unpacked" not in self.__dict__:  # once, where the answer is merged
            raw, u = zlib.decompress(self.union), self.union_size
            self.__dict__["_unpacked"] = (
                np.frombuffer(raw, "<i4", u, 0),
                np.frombuffer(raw, np.int8, u, 4 * u),
                np.frombuffer(raw, f"<u{self.id_width}", u, 5 * u),
                np.frombuffer(raw, np.uint8, offset=(5 + self.id_width) * u),
            )
        return self.__dict__["_unpacked"]

    @property
    def units(self) -> np.ndarray:
        return self._arrays()[0]

    @property
    def codes(self) -> np.ndarray:
        return self._arrays()[1]

    @property
    def id_lengths(self) -> np.ndarray:
        return self._arrays()[2]

    @property
    def id_bytes(self) -> np.ndarray:
        return self._arrays()[3]


MINED_TIERS = ("hard", "semi_hard", "random")  # MinedQuery.tiers codes


@dataclass
class MinedNegative:
    negative_id: str
    tier: str
    rank: int | None  # 1-based position in the raw retrieval list; None for random
    score_negative: float
    similarity: float  # cos(positive, negative) of the pair it was listed for
    generator: str


@dataclass
class MinedQuery:
    """The negatives of one query, as arrays: the distinct (negative, tier) of the query, and per pair the list
    of them its rows hold (pairs sharing a margin reference share a list) with cos(positive, negative)."""

    query_id: str
    payload: QueryPayload
    negative_ids: np.ndarray  # [n] str
    tiers: np.ndarray  # [n] int8 index into MINED_TIERS
    ranks: np.ndarray  # [n] int64 1-based raw rank, -1 for random
    scores: np.ndarray  # [n] float64 cos(query, negative)
    pair_offsets: np.ndarray  # [p + 1] pair j's list is entries pair_offsets[j]:pair_offsets[j + 1]
    pair_negatives: np.ndarray  # [e] int32 index into the negatives, best first within each tier
    pair_sims: np.ndarray  # [e] float32 cos(positive_j, negative)
    generator: str  # of the mined tiers (random: 'uniform')
    stats: dict

    def negatives_of_pair(self, j: int) -> list[MinedNegative]:
        """Pair j's list as objects (what the tests read; rows are built from the arrays)."""
        a, b = int(self.pair_offsets[j]), int(self.pair_offsets[j + 1])
        return [self._negative(int(n), float(sim))
                for n, sim in zip(self.pair_negatives[a:b].tolist(), self.pair_sims[a:b].tolist())]

    def _negative(self, n: int, similarity: float) -> MinedNegative:
        tier = MINED_TIERS[int(self.tiers[n])]
        return MinedNegative(
            negative_id=str(self.negative_ids[n]),
            tier=tier,
            rank=None if tier == "random" else int(self.ranks[n]),
            score_negative=float(self.scores[n]),
            similarity=similarity,
            generator="uniform" if tier == "random" else self.generator,
        )


SHARD_CHUNK = 256  # queries of a block mined together on a shard (bounds the per-block working set)
_SCAN_BYTES = 64 * 2**20  # float32 [queries, shard docs] approximate scores computed at once


def _fixed_width(column) -> np.ndarray | None:
    """A shard column's fixed-width bytes view (StringColumn.fixed_width), None for other sequences."""
    return column.fixed_width if isinstance(column, StringColumn) else None


def _rows_in_shard(doc_ids, wanted) -> dict[str, int]:
    """{doc id: local row} of the wanted ids the shard holds (its rows are sorted by doc id): one bisection each."""
    rows, n, lo = {}, len(doc_ids), 0
    for doc_id in sorted(set(wanted)):
        lo = bisect.bisect_left(doc_ids, doc_id, lo)
        if lo < n and doc_ids[lo] == doc_id:
            rows[doc_id] = lo
    return rows


def _text_copy_rows(shard: ShardView, payloads: list[QueryPayload]) -> dict[str, list[int]] | None:
    """{text hash: local rows of the shard with that hash} for the positives of a chunk of queries (one pass over
    the shard's fixed-width hashes per chunk), or None when the hashes are not fixed-width."""
    hashes = _fixed_width(shard.text_hashes)
    if hashes is None:
        return None
    wanted = {h.encode("utf-8") for p in payloads for h in p.positives.text_hashes.tolist()}
    wanted = np.array(sorted(h for h in wanted if len(h) == hashes.itemsize), dtype=hashes.dtype)
    rows = np.flatnonzero(np.isin(hashes, wanted)) if len(wanted) else np.zeros(0, np.int64)
    copies: dict[str, list[int]] = {}
    for row, value in zip(rows.tolist(), hashes[rows].tolist()):
        copies.setdefault(value.decode("utf-8"), []).append(row)
    return copies


def _guard_codes(scan: _QueryScan, local: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[n] int8 candidate codes of local rows whose exact scores are known: each candidate is guarded once.

    Nothing is decoded per candidate (issue 15: decoding ids and hashes was most of a dense query's cost): judged
    positives by local row, text copies by comparing fixed-width hash bytes; near copies are screened with one
    float32 product and decided on float64 similarities for the rows the float32 error could put at the threshold.
    """
    shard, positives, mining = scan.shard, scan.payload.positives, scan.mining
    judged = scan.positive_mask[local]
    text_copy = None
    if mining.text_copy_guard and scan.copy_mask is not None:
        text_copy = scan.copy_mask[local]
    elif mining.text_copy_guard:
        hashes = _fixed_width(shard.text_hashes)
        if hashes is None:
            text_copy = mm._member(np.asarray(shard.text_hashes[local], dtype=object), positives.text_hashes)
        else:
            wanted = [h.encode("utf-8") for h in positives.text_hashes.tolist()]
            wanted = np.array([h for h in wanted if len(h) == hashes.itemsize], dtype=hashes.dtype)
            text_copy = np.isin(hashes[local], wanted)
    near_copy = None
    if mining.near_copy_guard and len(local):
        near_copy = np.zeros(len(local), bool)
        if len(positives.ids):
            vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [n, dim]
            approx = (vectors @ np.asarray(positives.vectors, np.float32).T).max(axis=1)  # [n] float32
            close = np.flatnonzero(approx >= mining.near_copy_threshold - scan.slack)
            if len(close):
                exact = mm.similarity_to_positives(vectors[close], positives).max(axis=1)  # [c] float64
                near_copy[close] = round_scores(exact) >= mining.near_copy_threshold
    return mm.codes_of_drops(judged, text_copy, near_copy, scores, mining)


class _QueryScan:
    """One query on one loaded shard: approximate float32 scores of every document (one BLAS product), exact
    scores and guard codes computed once per document, on demand."""

    def __init__(self, shard: ShardView, payload: QueryPayload, approx: np.ndarray, mining: MiningConfig,
                 positive_rows: dict[str, int] | None = None, copy_rows: dict[str, list[int]] | None = None):
        self.shard, self.payload, self.mining = shard, payload, mining
        if positive_rows is None:
            positive_rows = _rows_in_shard(shard.doc_ids, payload.positives.ids.tolist())
        ids = payload.positives.ids.tolist()
        self.positive_mask = np.zeros(len(approx), bool)  # [n] the query's judged positives (by local row)
        self.positive_mask[[positive_rows[x] for x in ids if x in positive_rows]] = True
        self.copy_mask = None  # [n] documents with a positive's text hash, when the chunk looked them up
        if copy_rows is not None:
            self.copy_mask = np.zeros(len(approx), bool)
            self.copy_mask[[r for h in payload.positives.text_hashes.tolist() for r in copy_rows.get(h, ())]] = True
        self.approx = approx  # [n] float32 scores (BLAS): exact within slack
        self.exact = np.full(len(approx), np.nan)  # [n] float64 mining_math.cosine_rows, once computed
        self.codes = np.full(len(approx), -1, np.int8)  # [n] candidate codes, once computed
        # float32 error bound of a dot product of unit vectors, plus the grid steps (rounding, margin arithmetic)
        self.slack = 2 * shard.vectors.shape[1] * float(np.finfo(np.float32).eps) + 4 * SCORE_GRID
        self.rounds = 0

    def exact_of(self, local: np.ndarray) -> np.ndarray:
        missing = local[np.isnan(self.exact[local])]
        if missing.size:
            vectors = np.asarray(self.shard.vectors[missing], dtype=np.float32)
            self.exact[missing] = mm.cosine_rows(vectors, self.payload.vector)
        return self.exact[local]

    def codes_of(self, local: np.ndarray) -> np.ndarray:
        missing = local[self.codes[local] < 0]
        if missing.size:
            self.codes[missing] = _guard_codes(self, missing, self.exact[missing])
        return self.codes[local]

    def windows(self, references: np.ndarray):
        """(rows, starts, stops, complete, pickable, above): the pair groups' windows as ranges of one list.

        rows [n]: local rows of the shard's exactly ordered head (by (-rounded score, id)); group g's window is
        rows[starts[g]:stops[g]] ([g] int64 each), `complete[g]` when it holds every shard document at or below
        the threshold; pickable [g, n] bool: the rows each group may pick; above: shard documents above row 0.

        A group's window starts at the first document the margins keep against its reference and ends where the
        group has enough (mining_math.window_ends), at max_depth, or at the shard's end (complete). All groups
        share one exactly ordered head of the shard: candidates are taken best-approximate-first (x DEPTH_GROWTH
        per round, from everything that may sit above the lowest threshold); a candidate is final once its
        exact score clears every candidate not taken yet by the float32 error bound, so the windows are exact.
        Every step is an array operation over all groups at once (issue 15: ~40 groups per query under 'pair').
        """
        mining, approx, slack = self.mining, self.approx, self.slack
        refs = np.asarray(references, dtype=np.float64)
        thresholds = mm.margin_thresholds(refs, mining)  # [g] ~ the highest score kept
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
            first = int(starts.min()) if len(starts) else final
            codes[first:] = self.codes_of(rows[first:])
            ends, pickable = mm.window_ends(scores, codes, refs, starts, mining)
            everything = take >= len(cand)
            enough = (ends >= 0) & (ends - starts <= mining.max_depth)  # the group has enough inside max_depth
            capped = everything | ((starts < final) & (final - starts >= mining.max_depth))
            if np.all(enough | capped):
                stops = np.where(enough, ends, np.minimum(final, starts + mining.max_depth))
                return rows, starts, stops, everything & (stops == final), pickable, sure_above
            take = min(len(cand), take * mm.DEPTH_GROWTH)
            self.rounds += 1


def _draws(scan: _QueryScan, seed: int):
    """(local rows [m] in draw order, exact scores, candidate codes) of the shard's random-tier draws."""
    shard, payload, mining = scan.shard, scan.payload, scan.mining
    m = mm.random_draw_count(mining, len(payload.positives.ids), shard.ntotal)
    key = zlib.crc32(payload.query_id.encode("utf-8"))
    rng = np.random.default_rng([seed, key, _SHARD_DRAW_STREAM, shard.shard])
    drawn = rng.choice(shard.ntotal, size=m, replace=False) if m else np.zeros(0, np.int64)  # [m] draw order
    scores = scan.exact_of(drawn)
    return drawn, scores, scan.codes_of(drawn)


def _draws_needed(drawn: np.ndarray, scores: np.ndarray, codes: np.ndarray, pickable: np.ndarray,
                  refs: np.ndarray, mining: MiningConfig) -> int:
    """How many of the shard's draws (in draw order) any pair group's random picks may reach.

    A group takes draws in order from every shard and stops at K accepted ones (mining_math.pick_random); a draw
    that passed its guards and that the group may not pick as hard or semi-hard here (pickable [g, m]: its
    hard and semi-hard picks on this shard are among those rows) is always accepted, so no group reads this
    shard past its K-th such draw: only that prefix travels (the draw count still does: it steers the shard
    choice). Issue 15: [m, p] similarities of every draw were a third of a dense query's shard answer.
    """
    k, m = mining.random, len(drawn)
    if k == 0 or m == 0 or not len(refs):
        return 0
    sure = (codes == mm.KEEP)[None, :] & ~pickable \
        & (mm.margin_codes(scores[None, :], refs[:, None], mining) == mm.KEEP)  # [g, m] accepted whatever came
    count = np.cumsum(sure, axis=1)
    reach = np.where(count[:, -1] >= k, np.argmax(count >= k, axis=1) + 1, m)  # [g] draws a group may read
    return int(reach.max())


def _details(shard: ShardView, local: np.ndarray, payload: QueryPayload) -> np.ndarray:
    """[r, p] float32 cos(positive, candidate) of local rows: one float64 matrix product."""
    vectors = np.asarray(shard.vectors[local], dtype=np.float32)  # [r, dim]
    return (np.asarray(vectors, np.float64) @ np.asarray(payload.positives.vectors, np.float64).T).astype(np.float32)


def _pack(column, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes [total] uint8, offsets [n + 1] int64) of the strings at `rows`, gathered without decoding."""
    if not isinstance(column, StringColumn):
        return pack_strings(as_object_strings(np.asarray(column[rows], dtype=object)))
    starts = column.offsets[rows]
    lengths = column.offsets[rows + 1] - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return column.data[index], offsets


def _unpack(results: list[ShardCandidates], shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[n] object array of the doc ids at (shard, union row) pairs."""
    offsets = {}
    out = np.empty(len(rows), dtype=object)
    for i, (s, r) in enumerate(zip(shards.tolist(), rows.tolist())):
        if s not in offsets:
            offsets[s] = np.concatenate([[0], np.cumsum(results[s].id_lengths, dtype=np.int64)]).tolist()
        out[i] = bytes(results[s].id_bytes[offsets[s][r]:offsets[s][r + 1]]).decode("utf-8")
    return out


def _group_pairs(groups: mm.PairGroups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sizes [g], first [g], pairs [p]): group g's pairs, ascending, are pairs[first[g]:first[g] + sizes[g]]."""
    sizes = groups.sizes()
    return sizes, np.cumsum(sizes) - sizes, np.argsort(groups.of_pair, kind="stable")


def shard_answer(shard: ShardView, payload: QueryPayload, approx: np.ndarray, mining: MiningConfig, seed: int,
                 keep_vectors=True, positive_rows: dict[str, int] | None = None,
                 copy_rows: dict[str, list[int]] | None = None) -> ShardCandidates:
    """ShardCandidates of one query: one window per pair group, their union stored once, details kept only for
    the rows a group may pick (issue 15: nothing per query that the output does not need). The windows are
    ranges of one ordered list, so the union, its rows and the details are array operations over all groups."""
    scan = _QueryScan(shard, payload, approx, mining, positive_rows, copy_rows)
    groups = mm.pair_groups(payload.positives, mining.margin_reference)
    rows, starts, stops, complete, pickable, sure_above = scan.windows(groups.references)
    final = len(rows)
    delta = np.zeros(final + 1, np.int64)  # +1 where a window starts, -1 where it stops: covered where > 0
    np.add.at(delta, starts, 1)
    np.add.at(delta, stops, -1)
    covered = np.cumsum(delta[:final]) > 0  # [final] in some group's window
    before = np.concatenate([[0], np.cumsum(covered)])  # [final + 1] union rows before each position
    union = rows[covered]  # in the list's order: (-rounded score, id)
    lo = np.where(stops > starts, before[starts], 0).astype(np.int64)
    positions = np.arange(final)
    picks = pickable & (positions >= starts[:, None]) & (positions < stops[:, None])  # [g, final]
    detail_groups, detail_pos = np.nonzero(picks)  # group by group, best first
    codes = scan.codes_of(union)
    # similarities travel per group, to its own pairs only (one positive each under 'pair'): what rows read
    sizes, first, pairs = _group_pairs(groups)
    distinct, inverse = np.unique(detail_pos, return_inverse=True)
    details = _details(shard, rows[distinct], payload)  # [r, p]: every row some group may pick, once
    repeat = sizes[detail_groups]
    entry = np.repeat(np.arange(len(detail_groups)), repeat)
    k = np.arange(len(entry)) - np.repeat(np.cumsum(repeat) - repeat, repeat)  # pair index within the group
    sims = details[inverse.reshape(-1)[entry], pairs[first[detail_groups[entry]] + k]] if len(entry) else \
        np.zeros(0, np.float32)
    id_bytes, id_offsets = _pack(shard.doc_ids, union)
    id_lengths = np.diff(id_offsets)
    id_width = 2 if int(id_lengths.max(initial=0)) < 2**16 else 4
    packed = zlib.compress(b"".join([
        np.round(scan.exact[union] / SCORE_GRID).astype("<i4").tobytes(), codes.astype(np.int8).tobytes(),
        id_lengths.astype(f"<u{id_width}").tobytes(), np.asarray(id_bytes, np.uint8).tobytes()]), 1)
    drawn, d_scores, d_codes = _draws(scan, seed)
    sorter = np.argsort(rows)  # where each draw sits in the ordered list, if it does
    at = np.minimum(np.searchsorted(rows, drawn, sorter=sorter), max(final - 1, 0))
    listed = sorter[at] if final else np.zeros(len(drawn), np.int64)
    drawn_pickable = (picks[:, listed] & (rows[listed] == drawn)[None, :]) if final else \
        np.zeros((len(groups.references), len(drawn)), bool)
    sent = _draws_needed(drawn, d_scores, d_codes, drawn_pickable, groups.references, mining)
    return ShardCandidates(
        shard=shard.shard,
        ntotal=shard.ntotal,
        union=packed,
        union_size=len(union),
        id_width=id_width,
        pick_rows=before[distinct].astype(np.int32),
        pick_scores=scan.exact[rows[distinct]],
        above=sure_above + starts.astype(np.int64),
        lo=lo,
        hi=lo + (stops - starts).astype(np.int64),
        complete=np.asarray(complete, bool),
        detail_rows=before[detail_pos].astype(np.int32),
        detail_groups=detail_groups.astype(np.int32),
        sims=np.asarray(sims, np.float32),
        draw_count=len(drawn),
        draw_ids=np.asarray(shard.doc_ids[drawn[:sent]], dtype=object),
        draw_codes=d_codes[:sent],
        draw_scores=d_scores[:sent],
        draw_sims=_details(shard, drawn[:sent], payload),
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


class _KnownPositives:
    """PositiveVectors' answers for a chunk of queries, each distinct id looked up once (the queries of a topic
    share most of their positives; a lookup bisects a memory-mapped store)."""

    def __init__(self, source: PositiveVectors, payloads: list[QueryPayload], dim: int):
        ids = sorted({x for p in payloads for x in p.positives.ids.tolist()})
        found, self.vectors, self.hashes = source.lookup(as_object_strings(ids), dim)
        self.row = {x: r for r, x in enumerate(x for x, f in zip(ids, found.tolist()) if f)}

    def lookup(self, doc_ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.array([self.row.get(x, -1) for x in doc_ids.tolist()], np.int64)
        found = rows >= 0
        return found, self.vectors[rows[found]].reshape(-1, dim), self.hashes[rows[found]]


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
            payloads = block.payloads[start : start + chunk]
            known = _KnownPositives(lookup, payloads, queries.shape[1]) if lookup is not None else None
            if lookup is not None:
                lookup.release()  # positives read for the chunk: no store stays mapped between chunks
            payloads = [with_vectors(p, v, known) for p, v in zip(payloads, queries)]
            here = _rows_in_shard(searcher.doc_ids, [x for p in payloads for x in p.positives.ids.tolist()])
            copies = _text_copy_rows(searcher, payloads) if self.mining.text_copy_guard else None
            # Small matrix products per query: BLAS threads only contend (10x slower on a busy 2-core machine);
            # parallelism comes from Beam's workers.
            with threadpool_limits(limits=1, user_api="blas"):
                approx = scan_scores(searcher.vectors, queries)  # [c, n]: queries @ vectors.T in aligned blocks
                answers = [
                    shard_answer(searcher, payload, approx[i], self.mining, self.seed, self.keep_vectors, here,
                                 copies)
                    for i, payload in enumerate(payloads)
                ]
            del approx
            for payload, answer in zip(payloads, answers):
                yield payload.query_id, answer


@dataclass
class _Merged:
    """Every pair group's merged window of one query: [g, u] masks over all shards' unions in one global order.

    Group g's ranked list is the columns where valid[g] (best first): the documents of every shard at or below its
    margin threshold, cut at the complete prefix and at max_depth; position[g, u] is the column's place in it
    (0-based), so the raw rank is offset[g] + position + 1.
    """

    scores: np.ndarray  # [u] float64 rounded scores (topk.round_scores), by (-rounded score, id)
    codes: np.ndarray  # [u] int8 candidate codes
    shard_of: np.ndarray  # [u] index into the shard results
    row_of: np.ndarray  # [u] row in that shard's union
    valid: np.ndarray  # [g, u] bool
    position: np.ndarray  # [g, u] int64 (meaningful where valid)
    length: np.ndarray  # [g] int64 entries of each group's list
    offset: np.ndarray  # [g] int64 documents of the corpus ranked above each group's threshold
    exhausted: np.ndarray  # [g] bool: the list holds every document at or below the threshold


def merge_windows(results: list[ShardCandidates], groups: int, max_depth: int) -> _Merged:
    """Merge every group's shard windows by (-rounded score, id), cut at the complete prefix and at max_depth.

    Each shard window is a prefix of the shard's documents below the group's threshold, so the merge is exact up
    to the earliest last entry of a window that is not complete; the rank offset is the sum of the shards'
    counts above the threshold. Both are the same for any number of shards. One global order per query; each
    group's list is a subset of it (a [g, u] mask), so nothing runs per group. Ids are decoded only where two
    entries share a rounded score (the tie-break), and for the picks.
    """
    units = np.concatenate([r.units for r in results]).astype(np.int64)
    first = np.cumsum([0] + [len(r.units) for r in results])[:-1].astype(np.int64)
    u, every = len(units), np.arange(groups)
    tie = np.zeros(u, np.int64)  # among entries of one rounded score: the order of their ids
    _, inverse, counts = np.unique(units, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts[inverse.reshape(-1)] > 1)
    if len(shared):
        owner = np.searchsorted(first, shared, side="right") - 1
        ids = _unpack(results, owner, shared - first[owner])
        tie[shared[np.argsort(ids, kind="stable")]] = np.arange(len(shared))
    order = np.lexsort((tie, -units))  # [u] concatenated entry at each global place: topk.order_by_score_then_id
    place = np.empty(u, np.int64)
    place[order] = np.arange(u)
    delta = np.zeros((groups, u + 1), np.int32)  # +1 where a window starts, -1 where it stops (concatenated)
    for start, r in zip(first.tolist(), results):
        np.add.at(delta, (every, start + r.lo), 1)
        np.add.at(delta, (every, start + r.hi), -1)
    member = (np.cumsum(delta[:, :u], axis=1) > 0)[:, order]  # [g, u] in global order
    count = np.cumsum(member, axis=1, dtype=np.int64)  # [g, u] group entries up to each column
    total = count[:, -1] if u else np.zeros(groups, np.int64)
    cut, incomplete = np.minimum(total, max_depth), np.zeros(groups, bool)
    for start, r in zip(first.tolist(), results):
        if u:  # group entries up to the window's last one (0 for an empty window)
            end = np.where(r.hi > r.lo, count[every, place[np.clip(start + r.hi - 1, 0, u - 1)]], 0)
        else:
            end = np.zeros(groups, np.int64)
        cut = np.where(r.complete, cut, np.minimum(cut, end))
        incomplete |= ~r.complete
    shard_of = np.searchsorted(first, order, side="right") - 1
    return _Merged(
        scores=units[order].astype(np.float64) * SCORE_GRID,  # == round_scores(exact score): the same decisions
        codes=np.concatenate([r.codes for r in results])[order],
        shard_of=shard_of,
        row_of=order - first[shard_of],
        valid=member & (count <= cut[:, None]),
        position=count - 1,
        length=cut,
        offset=np.sum([r.above for r in results], axis=0).astype(np.int64),
        exhausted=~incomplete & (cut == total),
    )


def _nth(counts: np.ndarray, n: int, position: np.ndarray) -> np.ndarray:
    """[g] position where each row of running counts [g, u] first reaches n (callers check that it does)."""
    if counts.shape[1] == 0:
        return np.zeros(len(counts), np.int64)
    return position[np.arange(len(counts)), np.argmax(counts >= n, axis=1)]


def pick_groups(merged: _Merged, reasons: np.ndarray, refs: np.ndarray, mining: MiningConfig, seed: int,
                query_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hard [g, u] bool, semi_hard [g, u] bool, used [g]): mining_math.pick_mined of every pair group.

    'top' sampling is array operations over all groups at once; uniform / simans draw per group (pick_mined with
    fresh per-tier rngs, as for a group alone).
    """
    g, u = merged.valid.shape
    hard, semi = np.zeros((g, u), bool), np.zeros((g, u), bool)
    if mining.sampling != "top":
        used = np.zeros(g, np.int64)
        for k in range(g):
            cols = np.flatnonzero(merged.valid[k])
            rngs = {tier: mm.tier_rng(seed, query_id, tier) for tier in ("hard", "semi_hard", "random")}
            pick = mm.pick_mined(merged.scores[cols], reasons[k, cols], float(refs[k]), bool(merged.exhausted[k]),
                                 mining, rngs)
            hard[k, cols[pick.hard]] = True
            semi[k, cols[pick.semi_hard]] = True
            used[k] = pick.used
        return hard, semi, used
    position, length, none = merged.position, merged.length, np.zeros(g, np.int64)
    survive = merged.valid & (reasons == mm.KEEP)  # [g, u]
    rank = np.cumsum(survive, axis=1, dtype=np.int64)  # survivors up to each column
    hard = survive & (rank > mining.range_min) & (rank <= min(mining.range_min + mining.hard, mining.range_max))
    need = mm.hard_need(mining)
    survivors = rank[:, -1] if u else none
    used = np.where(survivors < need, length, _nth(rank, need, position) + 1) if need else none
    if mining.semi_hard > 0:
        band = survive & ~hard & mm.in_band(merged.scores[None, :], refs[:, None], mining.semi_hard_band)
        band_rank = np.cumsum(band, axis=1, dtype=np.int64)
        pool = np.minimum(band_rank[:, -1] if u else none, mining.semi_hard_pool)
        semi = band & (band_rank <= min(mining.semi_hard, mining.semi_hard_pool))
        below = merged.valid & mm.below_band(merged.scores[None, :], refs[:, None], mining.semi_hard_band)
        first_below = np.where(below.any(axis=1), _nth(np.cumsum(below, axis=1), 1, position) + 1, length)
        need_b = mm.semi_hard_need(mining)
        used = np.maximum(used, np.where(pool >= need_b, _nth(band_rank, need_b, position) + 1, first_below))
    return hard, semi, used


def pick_random_groups(results: list[ShardCandidates], refs: np.ndarray, excluded: list[set], positive_ids: list,
                       k: int, mining: MiningConfig, rng: np.random.Generator):
    """(groups [r], shards [r], draws [r]): every group's random picks, group by group in draw order.

    mining_math.pick_random for each group, with one visit order for all (mining_math.RandomVisits: each group
    draws from a fresh rng of the same per-query stream, and which draw comes next never depends on the guards):
    a group keeps the first k visited draws that passed its guards and are not among `excluded[g]` (its hard and
    semi-hard picks) or the judged positives. Draws are distinct documents (shards are disjoint), so no draw is
    taken twice.
    """
    # [g, every shard's draws]; draws that did not travel are never reached (_draws_needed): never accepted
    ok = np.concatenate([np.pad((r.draw_codes == mm.KEEP)[None, :]
                                & (mm.margin_codes(r.draw_scores[None, :], refs[:, None], mining) == mm.KEEP),
                                ((0, 0), (0, r.draw_count - len(r.draw_ids))))
                         for r in results], axis=1)
    base = np.cumsum([0] + [r.draw_count for r in results])[:-1].astype(np.int64)
    visits = mm.RandomVisits(np.array([r.ntotal for r in results]), [r.draw_count for r in results], rng)
    want = k + 8
    while True:
        visits.extend(want)
        shards, draws = np.array(visits.shards, np.int64), np.array(visits.draws, np.int64)
        passes = ok[:, base[shards] + draws]  # [g, v]
        at = {str(results[s].draw_ids[i]): v for v, (s, i) in enumerate(zip(visits.shards, visits.draws))
              if i < len(results[s].draw_ids)}
        passes[:, [at[x] for x in positive_ids if x in at]] = False
        for g, chosen in enumerate(excluded):
            passes[g, [at[x] for x in chosen if x in at]] = False
        rank = np.cumsum(passes, axis=1)
        if visits.done or not len(shards) or bool((rank[:, -1] >= k).all()):
            break
        want *= 2
    groups, picked = np.nonzero(passes & (rank <= k))
    return groups, shards[picked], draws[picked]


def query_stats(merged: _Merged, reasons: np.ndarray, used: np.ndarray, picked: dict, groups: mm.PairGroups,
                payload: QueryPayload, mining: MiningConfig, results: list[ShardCandidates]) -> dict:
    """Per-query counts, summed over queries into the stage's selection statistics.

    Per pair group, the documents ranked above its margin threshold (judged positives by their own scores, the
    rest under the margin guard) plus the window prefix its picks rely on, by first guard; dropped: the group
    of the highest reference, per query; dropped_pairs: every group, once per pair.
    picked: {tier: (groups [r], negative ids [r])}.
    """
    p, slots = len(payload.positives.ids), len(mm.GUARDS) + 1
    sizes, refs = groups.sizes(), groups.references
    g = len(refs)
    margin = "relative_margin" if mining.relative_margin is not None else "absolute_margin"
    rows, cols = np.nonzero(merged.valid & (merged.position < used[:, None]))  # the prefix each group relies on
    counts = np.bincount(rows * slots + reasons[rows, cols].astype(np.int64), minlength=g * slots).reshape(g, slots)
    judged = np.count_nonzero(mm.margin_codes(payload.positives.scores[None, :], refs[:, None], mining), axis=1)
    judged_above = np.minimum(judged, merged.offset)
    counts[:, mm.GUARDS.index("judged_positive") + 1] += judged_above
    counts[:, mm.GUARDS.index(margin) + 1] += merged.offset - judged_above
    per_pair = (counts * sizes[:, None]).sum(axis=0)
    every = counts[-1] if g else np.zeros(slots, np.int64)
    wanted = {"hard": mining.hard, "semi_hard": mining.semi_hard, "random": mining.random}
    pairs_full = {t: int(sizes[np.bincount(picked[t][0], minlength=g) >= k].sum()) for t, k in wanted.items()}
    return {
        "queries": 1,
        "pairs": p,
        "candidates_seen": int(sum(len(r.units) for r in results)),
        "dropped": {guard: int(every[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "dropped_pairs": {guard: int(per_pair[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "deeper_search_histogram": {str(mm.rounds_for(int(used.max(initial=0)), mining, p)): 1},
        "queries_full": {t: int(pairs_full[t] == p) for t, k in wanted.items() if k > 0},
        "pairs_full": {t: pairs_full[t] for t, k in wanted.items() if k > 0},
        "negatives": {t: len(set(picked[t][1].tolist())) for t in wanted},
    }


class MergeShardsFn(beam.DoFn):
    """(query_id, [ShardCandidates per shard]) -> MinedQuery: merge, then pick the tiers of every pair group.

    The shards searched deep enough for every group (MineShardQueries), so the merged list's complete prefix
    decides. keep_vectors=False drops the query and positive vectors from the MinedQuery (only contextual
    negatives need them): nothing held per query that the output does not need. Every step works on all the
    query's pair groups at once (issue 15: ~40 groups per query under 'pair').
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
        mining = self.mining
        groups = mm.pair_groups(payload.positives, mining.margin_reference)
        refs = groups.references
        merged = merge_windows(results, len(refs), mining.max_depth)
        reasons = mm.first_reasons(merged.codes[None, :], mm.margin_codes(merged.scores[None, :], refs[:, None],
                                                                           mining))  # [g, u]
        hard, semi, used = pick_groups(merged, reasons, refs, mining, self.seed, query_id)
        mined = [np.nonzero(hard), np.nonzero(semi)]  # per tier: (groups, columns), group by group, best first
        cols = np.concatenate([mined[0][1], mined[1][1]])
        pick_ids = _unpack(results, merged.shard_of[cols], merged.row_of[cols])  # hard then semi-hard
        excluded = [set() for _ in refs]
        for g, doc_id in zip(np.concatenate([mined[0][0], mined[1][0]]).tolist(), pick_ids.tolist()):
            excluded[g].add(doc_id)
        if mining.random > 0:
            random = pick_random_groups(results, refs, excluded, payload.positives.ids.tolist(), mining.random,
                                        mining, mm.tier_rng(self.seed, query_id, "random"))
        else:
            random = (np.zeros(0, np.int64),) * 3
        negatives = self._negatives(merged, results, groups, mined, random, pick_ids)
        hard_count = len(mined[0][0])
        stats = query_stats(merged, reasons, used, {
            "hard": (mined[0][0], pick_ids[:hard_count]),
            "semi_hard": (mined[1][0], pick_ids[hard_count:]),
            "random": (random[0], np.array([results[s].draw_ids[i] for s, i in zip(*random[1:])], dtype=object)),
        }, groups, payload, mining, results)
        self._count(stats, results)
        if not self.keep_vectors:
            payload = without_vectors(payload)
        yield MinedQuery(query_id, payload, generator=self.generator, stats=stats, **negatives)

    def _negatives(self, merged: _Merged, results: list[ShardCandidates], groups: mm.PairGroups, mined: list,
                   random: tuple, pick_ids: np.ndarray) -> dict:
        """MinedQuery's arrays: the distinct (negative, tier) of the query and each pair's list of them, with the
        similarity to the pair's positive (from the shards' details, or the random draws' [m, p] similarities)."""
        p = len(groups.of_pair)
        sizes, first, pairs = _group_pairs(groups)
        (hg, hc), (sg, sc) = mined
        rg, rs, rd = random
        member_group = np.concatenate([hg, sg, rg]).astype(np.int64)
        member_tier = np.concatenate([np.zeros(len(hg), np.int8), np.ones(len(sg), np.int8),
                                      np.full(len(rg), 2, np.int8)])
        cols = np.concatenate([hc, sc])
        ids = np.concatenate([pick_ids, np.array([results[s].draw_ids[i] for s, i in zip(rs.tolist(),
                              rd.tolist())], dtype=object)])
        ranks = np.concatenate([merged.offset[member_group[: len(cols)]]
                                + merged.position[member_group[: len(cols)], cols] + 1, np.full(len(rg), -1)])
        scores = np.concatenate([np.zeros(len(cols)), np.array([results[s].draw_scores[i] for s, i in
                                                                zip(rs.tolist(), rd.tolist())], np.float64)])
        # where each member's similarities start in one flat array of every shard's details, then every draw's
        sims_all = np.concatenate([r.sims for r in results] + [r.draw_sims.ravel() for r in results])
        sims_base = np.cumsum([0] + [len(r.sims) for r in results])[:-1]
        draw_base = len(sims_all) - sum(r.draw_sims.size for r in results) + np.cumsum(
            [0] + [r.draw_sims.size for r in results])[:-1]
        start = np.zeros(len(ids), np.int64)
        shard_of, row_of = merged.shard_of[cols], merged.row_of[cols]
        for s, r in enumerate(results):
            here = np.flatnonzero(shard_of == s)
            if not len(here):
                continue
            width = len(r.units) + 1
            keys = r.detail_groups.astype(np.int64) * width + r.detail_rows
            offsets = np.cumsum(sizes[r.detail_groups]) - sizes[r.detail_groups]
            wanted = member_group[here] * width + row_of[here]
            at = np.searchsorted(keys, wanted)
            if np.any(at >= len(keys)) or np.any(keys[np.minimum(at, len(keys) - 1)] != wanted):
                raise KeyError("a pick has no shard details: window_ends and pick_mined disagree (a bug)")
            start[here] = sims_base[s] + offsets[at]
            scores[here] = r.pick_scores[np.searchsorted(r.pick_rows, row_of[here])]  # exact: picks are pickable
        start[len(cols):] = draw_base[rs] + rd * p
        # group by group, then by tier (hard, semi-hard, random), each best first / in draw order
        order = np.lexsort((member_tier, member_group))
        member_group, member_tier, ids, ranks, scores, start = (
            a[order] for a in (member_group, member_tier, ids, ranks, scores, start))
        index, negative_of = {}, np.empty(len(ids), np.int64)
        for e, key in enumerate(zip(ids.tolist(), member_tier.tolist())):
            negative_of[e] = index.setdefault(key, len(index))
        firsts = np.unique(negative_of, return_index=True)[1]
        # every (member, pair of its group): the pair, its place in the member list, and its similarity
        repeat = sizes[member_group]
        entry = np.repeat(np.arange(len(ids)), repeat)
        k = np.arange(len(entry)) - np.repeat(np.cumsum(repeat) - repeat, repeat)  # pair index within the group
        pair = pairs[first[member_group[entry]] + k]
        sims = sims_all[start[entry] + np.where(member_tier[entry] == 2, pair, k)]
        by_pair = np.lexsort((entry, pair))
        return {
            "negative_ids": ids[firsts],
            "tiers": member_tier[firsts],
            "ranks": ranks[firsts].astype(np.int64),
            "scores": scores[firsts],
            "pair_offsets": np.concatenate([[0], np.cumsum(np.bincount(pair, minlength=p))]).astype(np.int64),
            "pair_negatives": negative_of[entry[by_pair]].astype(np.int32),
            "pair_sims": sims[by_pair],
        }

    def _count(self, stats: dict, results) -> None:
        self.queries_mined.inc()
        self.candidates_seen.inc(stats["candidates_seen"])
        self.deeper_searches.inc(sum(r.rounds for r in results))
        for guard, n in stats["dropped"].items():
            if n:
                self.dropped[guard].inc(n)


def text_requests(mined: MinedQuery):
    """(doc_id, query_id) for every document whose text the query's rows need (positives and negatives)."""
    wanted = dict.fromkeys(mined.payload.positives.ids.tolist() + mined.negative_ids.tolist())
    for doc_id in wanted:
        yield doc_id, mined.query_id


class BuildRowsFn(beam.DoFn):
    """(query_id, {'mined', 'texts', 'query'}) -> the query's negatives rows, one (tier, [row dicts in
    NEGATIVES_SCHEMA]) batch per tier (transforms/write_negatives.py: ~240 rows per query on dense qrels, so no
    Beam step runs per row); with contextual on, also one element per (query, positive) on 'contextual_pairs'."""

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
        negative_ids = mined.negative_ids.tolist()
        tiers = [MINED_TIERS[t] for t in mined.tiers.tolist()]
        ranks = [None if tier == "random" else rank for tier, rank in zip(tiers, mined.ranks.tolist())]
        scores = mined.scores.tolist()
        generators = ["uniform" if tier == "random" else mined.generator for tier in tiers]
        offsets, members, sims = mined.pair_offsets.tolist(), mined.pair_negatives.tolist(), mined.pair_sims.tolist()
        batches: dict[str, list[dict]] = {}
        hashes: dict[int, str] = {}  # per negative of the query, once
        tokens: dict[str, frozenset] = {}  # token sets of the texts, once per document (lexical_overlap)
        for j, positive_id in enumerate(positives.ids.tolist()):
            positive = texts.get(positive_id)
            if positive is None:
                self.missing_text.inc()
                continue
            for e in range(offsets[j], offsets[j + 1]):
                n = members[e]
                negative = texts.get(negative_ids[n])
                if negative is None:
                    self.missing_text.inc()
                    continue
                if n not in hashes:
                    hashes[n] = text_hash(negative)
                batches.setdefault(tiers[n], []).append({
                    "query_id": query_id,
                    "positive_id": positive_id,
                    "negative_id": negative_ids[n],
                    "anchor": anchors[0],
                    "positive": positive,
                    "negative": negative,
                    "tier": tiers[n],
                    "rank": ranks[n],
                    "score_positive": float(positives.scores[j]),
                    "score_negative": scores[n],
                    "similarity_to_positive": sims[e],
                    "generator": generators[n],
                    "edit": None,
                    "negative_text_hash": hashes[n],  # text_hash of the negative's text, as ingest hashed the passage
                    "lexical_overlap": _overlap(tokens, positive_id, positive, negative_ids[n], negative),
                })
            if self.contextual:
                yield beam.pvalue.TaggedOutput(CONTEXTUAL_PAIRS, _contextual_pair(mined, j, anchors[0], positive))
        yield from batches.items()


def _overlap(tokens: dict, a_id: str, a: str, b_id: str, b: str) -> float:
    """schemas.negatives.lexical_overlap(a, b), with each text's token set computed once per query."""
    if a_id not in tokens:
        tokens[a_id] = token_set(a)
    if b_id not in tokens:
        tokens[b_id] = token_set(b)
    ta, tb = tokens[a_id], tokens[b_id]
    union = len(ta | tb)
    return 1.0 if union == 0 else len(ta & tb) / union


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
