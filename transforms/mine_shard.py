"""Shard side of mining: what one loaded shard answers for a block of queries (MineShardQueries, a ShardQueryFn).

Per query (see pipelines/stage_mine.py): the whole loaded shard is scored approximately (one float32 product per
chunk of queries); for each pair group (pairs sharing a margin reference: the whole query under 'lowest', each
positive under 'pair') the window of the shard's order that starts at the group's margin threshold and runs until
the group has enough is made exact by float64 re-scoring and guarded once per candidate there (issue 15: no depth
cap on where a window starts, so a positive ranked deep keeps its negatives). The answer is ShardCandidates.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from schemas.build_config import MiningConfig
from schemas.layout import RunLayout
from transforms import mining_math as mm
from transforms import mining_windows as mw
from transforms import random_tier as rt
from transforms.mine_types import (
    QueryPayload,
    ShardCandidates,
    without_vectors,
)
from transforms.search_api import QueryBlock, ShardView
from transforms.string_column import StringColumn, as_object_strings, pack_strings
from transforms.topk import SCORE_GRID, order_by_score_then_id, round_scores

_SHARD_DRAW_STREAM = 0  # RNG stream id of the per-shard random-tier draws


SHARD_CHUNK = 256  # queries of a block mined together on a shard (bounds the per-block working set)
_SCAN_BYTES = 64 * 2**20  # float32 [queries, shard docs] approximate scores computed at once


def _float32_slack(dim: int) -> float:
    """How far a float32 dot product of unit vectors may be from its float64 value, plus the grid steps (rounding,
    margin arithmetic): a screen at threshold - slack never misses a document the exact decision keeps."""
    return 2 * dim * float(np.finfo(np.float32).eps) + 4 * SCORE_GRID


def _fixed_width(column) -> np.ndarray | None:
    """A shard column's fixed-width bytes view (StringColumn.fixed_width), None for other sequences."""
    return column.fixed_width if isinstance(column, StringColumn) else None


def _rows_in_shard(doc_ids, wanted) -> dict[str, int]:
    """{doc id: local row} of the wanted ids the shard holds (its rows are sorted by doc id): one hashed pass over a
    StringColumn, else one bisection each."""
    if isinstance(doc_ids, StringColumn):
        return doc_ids.rows_of(wanted)
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


def _near_copy_rows(shard: ShardView, payloads: list[QueryPayload], mining: MiningConfig) -> dict[str, np.ndarray]:
    """{positive id: local rows of the shard that are near copies of it} for the positives of a chunk of queries.

    The near-copy guard is a relation between a positive and a document, whatever the query: each distinct positive
    of the chunk is screened once against the whole shard (float32 products in blocks of <= _SCAN_BYTES), and the
    pairs the float32 error could put at the threshold are decided on float64 cosines (round >= threshold). On
    dense qrels the queries of a topic share their positives, so this is a fraction of screening every query's
    positives against its candidates (issue 15: ~40 positives per query).
    """
    from transforms.shard_search import scan_scores

    first: dict[str, np.ndarray] = {}
    for payload in payloads:
        for doc_id, vector in zip(payload.positives.ids.tolist(), payload.positives.vectors):
            first.setdefault(doc_id, vector)
    if not first or not shard.ntotal:
        return {}
    ids = list(first)
    vectors = np.asarray(np.stack([first[x] for x in ids]), np.float32)  # [f, dim]
    slack = _float32_slack(vectors.shape[1])
    step = max(1, _SCAN_BYTES // (4 * shard.ntotal))
    near: dict[str, np.ndarray] = {}
    for start in range(0, len(ids), step):
        approx = scan_scores(shard.vectors, vectors[start : start + step])  # [f', n] float32
        which, rows = np.nonzero(approx >= mining.near_copy_threshold - slack)
        for f in np.unique(which).tolist():
            close = rows[which == f]
            exact = mm.cosine_rows_at(shard.vectors, close, vectors[start + f])  # [c] float64
            copies = close[round_scores(exact) >= mining.near_copy_threshold]
            if len(copies):
                near[ids[start + f]] = copies
    return near


def _positives_shared(payloads: list[QueryPayload]) -> bool:
    """Whether the chunk's queries share their positives (at most half as many distinct positives as pairs): then
    screening each distinct positive against the whole shard once (_near_copy_rows) costs less than screening
    every query's candidates against its own positives; with one positive per query it would double the scan."""
    pairs = sum(len(p.positives.ids) for p in payloads)
    return 2 * len({x for p in payloads for x in p.positives.ids.tolist()}) <= pairs


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
    if mining.near_copy_guard and scan.near_mask is not None:
        near_copy = scan.near_mask[local]
    elif mining.near_copy_guard and len(local):
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
                 positive_rows: dict[str, int] | None = None, copy_rows: dict[str, list[int]] | None = None,
                 near_rows: dict[str, np.ndarray] | None = None):
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
        self.near_mask = None  # [n] near copies of a positive, when the chunk screened its positives
        if near_rows is not None:
            self.near_mask = np.zeros(len(approx), bool)
            for doc_id in ids:
                if doc_id in near_rows:
                    self.near_mask[near_rows[doc_id]] = True
        self.approx = approx  # [n] float32 scores (BLAS): exact within slack
        self.exact = np.full(len(approx), np.nan)  # [n] float64 mining_math.cosine_rows, once computed
        self.codes = np.full(len(approx), -1, np.int8)  # [n] candidate codes, once computed
        self.slack = _float32_slack(shard.vectors.shape[1])
        self.rounds = 0

    def exact_of(self, local: np.ndarray) -> np.ndarray:
        missing = np.sort(local[np.isnan(self.exact[local])])  # ascending rows: the gathers read the store in order
        if 2 * missing.size >= len(self.exact):  # most of the shard: score all of it, reading the store in place
            missing = np.flatnonzero(np.isnan(self.exact))
        if missing.size:
            self.exact[missing] = mm.cosine_rows_at(self.shard.vectors, missing, self.payload.vector)
        return self.exact[local]

    def codes_of(self, local: np.ndarray) -> np.ndarray:
        missing = local[self.codes[local] < 0]
        if missing.size:
            self.codes[missing] = _guard_codes(self, missing, self.exact[missing])
        return self.codes[local]

    def windows(self, references: np.ndarray):
        """(rows, starts, stops, complete, picks, above): the pair groups' windows as ranges of one list.

        rows [n]: local rows of the shard's exactly ordered head (by (-rounded score, id)); group g's window is
        rows[starts[g]:stops[g]] ([g] int64 each), `complete[g]` when it holds every shard document at or below
        the threshold; picks: (groups [r], positions [r]) the rows of its window each group may pick, group by
        group, positions ascending; above: shard documents above row 0.

        A group's window starts at the first document the margins keep against its reference and ends where the
        group has enough (mining_windows.window_ends), at max_depth, or at the shard's end (complete). All groups
        share one exactly ordered head of the shard: candidates are taken best-approximate-first (x DEPTH_GROWTH
        per round, from everything that may sit above the lowest threshold); a candidate is final once its
        exact score clears every candidate not taken yet by the float32 error bound, so the windows are exact.
        Starts, ends and picks are binary searches in the ordered list (mining_windows.margin_starts,
        window_ends_ordered), never [groups, rows] matrices (issue 15: ~40 groups per query under 'pair').
        """
        mining, approx, slack = self.mining, self.approx, self.slack
        refs = np.asarray(references, dtype=np.float64)
        thresholds = mm.margin_thresholds(refs, mining)  # [g] ~ the highest score kept
        cand = np.flatnonzero(approx <= thresholds.max() + slack)  # [c] every document some group may keep
        sure_above = len(approx) - len(cand)
        edge = thresholds.min()  # every window runs from its threshold at least to the top of its band
        if mining.semi_hard > 0 and len(refs):
            edge = min(edge, refs.min() - mining.semi_hard_band[0])
        near = int(np.count_nonzero(approx[cand] >= edge - slack))  # what some window must hold
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
            starts = mw.margin_starts(scores, refs, mining)  # [g] the margins keep a suffix of the list
            codes = np.zeros(final, np.int8)
            first = int(starts.min()) if len(starts) else final
            codes[first:] = self.codes_of(rows[first:])
            ends, pick_groups, pick_pos = mw.window_ends_ordered(scores, codes, refs, starts, mining)
            everything = take >= len(cand)
            enough = (ends >= 0) & (ends - starts <= mining.max_depth)  # the group has enough inside max_depth
            capped = everything | ((starts < final) & (final - starts >= mining.max_depth))
            if np.all(enough | capped):
                stops = np.where(enough, ends, np.minimum(final, starts + mining.max_depth))
                inside = pick_pos < stops[pick_groups]  # picks start at or after the group's start
                picks = (pick_groups[inside], pick_pos[inside])
                return rows, starts, stops, everything & (stops == final), picks, sure_above
            take = min(len(cand), take * mw.DEPTH_GROWTH)
            self.rounds += 1


def _draws(scan: _QueryScan, seed: int):
    """(local rows [m] in draw order, exact scores, candidate codes) of the shard's random-tier draws."""
    shard, payload, mining = scan.shard, scan.payload, scan.mining
    m = rt.random_draw_count(mining, len(payload.positives.ids), shard.ntotal)
    key = zlib.crc32(payload.query_id.encode("utf-8"))
    rng = np.random.default_rng([seed, key, _SHARD_DRAW_STREAM, shard.shard])
    drawn = rng.choice(shard.ntotal, size=m, replace=False) if m else np.zeros(0, np.int64)  # [m] draw order
    scores = scan.exact_of(drawn)
    return drawn, scores, scan.codes_of(drawn)


def _draws_needed(drawn: np.ndarray, scores: np.ndarray, codes: np.ndarray, pickable: np.ndarray,
                  refs: np.ndarray, mining: MiningConfig) -> int:
    """How many of the shard's draws (in draw order) any pair group's random picks may reach.

    A group takes draws in order from every shard and stops at K accepted ones (random_tier.pick_random); a draw
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
    vectors = np.asarray(shard.vectors[local], dtype=np.float64)  # [r, dim]
    return (vectors @ np.asarray(payload.positives.vectors, np.float64).T).astype(np.float32)


def _pack(column, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes [total] uint8, offsets [n + 1] int64) of the strings at `rows`, gathered without decoding."""
    if not isinstance(column, StringColumn):
        return pack_strings(as_object_strings(np.asarray(column[rows], dtype=object)))
    starts = column.offsets[rows]
    lengths = column.offsets[rows + 1] - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return column.data[index], offsets


def shard_answer(shard: ShardView, payload: QueryPayload, approx: np.ndarray, mining: MiningConfig, seed: int,
                 keep_vectors=True, positive_rows: dict[str, int] | None = None,
                 copy_rows: dict[str, list[int]] | None = None,
                 near_rows: dict[str, np.ndarray] | None = None) -> ShardCandidates:
    """ShardCandidates of one query: one window per pair group, their union stored once, details kept only for
    the rows a group may pick (issue 15: nothing per query that the output does not need). The windows are
    ranges of one ordered list, so the union, its rows and the details are array operations over all groups."""
    scan = _QueryScan(shard, payload, approx, mining, positive_rows, copy_rows, near_rows)
    groups = mm.pair_groups(payload.positives, mining.margin_reference)
    rows, starts, stops, complete, (detail_groups, detail_pos), sure_above = scan.windows(groups.references)
    final = len(rows)
    # +1 where a window starts, -1 where it stops: covered where > 0
    delta = np.bincount(starts, minlength=final + 1) - np.bincount(stops, minlength=final + 1)
    covered = np.cumsum(delta[:final]) > 0  # [final] in some group's window
    before = np.concatenate([[0], np.cumsum(covered)])  # [final + 1] union rows before each position
    union = rows[covered]  # in the list's order: (-rounded score, id)
    lo = np.where(stops > starts, before[starts], 0).astype(np.int64)
    codes = scan.codes_of(union)
    # similarities travel per group, to its own pairs only (one positive each under 'pair'): what rows read
    sizes, first, pairs = mm.group_members(groups)
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
    g = len(groups.references)
    drawn_pickable = np.zeros((g, len(drawn)), bool)  # [g, m] the draw is a row the group may pick here
    if final and len(detail_pos):
        pick_keys = detail_groups.astype(np.int64) * (final + 1) + detail_pos  # ascending: group by group
        wanted = np.arange(g)[:, None] * (final + 1) + listed[None, :]  # [g, m]
        found = np.minimum(np.searchsorted(pick_keys, wanted), len(pick_keys) - 1)
        drawn_pickable = (pick_keys[found] == wanted) & (rows[listed] == drawn)[None, :]
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
    """Judged positives' exact vectors, looked up by id in the index's shard stores (read only): ids found in
    the store's mapped id column (StringColumn.rows_of), vector rows read from the file (shard_search.read_rows),
    and the stores released after each chunk of queries (MineShardQueries), so positives spread over every shard
    map none of them for long.

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
        ids, of_shard = doc_ids.tolist(), shard_of(doc_ids, self.num_shards).tolist()
        at_shard = {s: _rows_in_shard(self._store(s)["doc_ids"], [x for x, t in zip(ids, of_shard) if t == s])
                    for s in set(of_shard)}  # shard stores are sorted by doc id
        for i, (doc_id, shard) in enumerate(zip(ids, of_shard)):
            row = at_shard[shard].get(doc_id)
            if row is not None:
                found[i] = True
                rows.append(row)
                shards.append(shard)
                hashes.append(self._store(shard)["text_hashes"][row])
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
    share most of their positives; a lookup reads a memory-mapped store)."""

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
                near = _near_copy_rows(searcher, payloads, self.mining) if self.mining.near_copy_guard \
                    and _positives_shared(payloads) else None  # else each query screens its own candidates
                approx = scan_scores(searcher.vectors, queries)  # [c, n]: queries @ vectors.T in aligned blocks
                answers = [
                    shard_answer(searcher, payload, approx[i], self.mining, self.seed, self.keep_vectors, here,
                                 copies, near)
                    for i, payload in enumerate(payloads)
                ]
            del approx
            for payload, answer in zip(payloads, answers):
                yield payload.query_id, answer

