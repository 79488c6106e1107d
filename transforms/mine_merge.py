"""Merge side of mining: every shard's answer for one query -> the query's tiered negatives (MergeShardsFn).

Each group's shard windows are merged (rank = documents above the threshold on every shard + position in the
merged list), then hard and semi-hard are picked from the merged list and random from the shards' draws.

Nothing is built per (group, union row) (issue 15: [g, u] masks and their running counts, ~40 groups x ~4,900
union rows per dense query, were most of the merge's time). A group's window on a shard is a range of the shard's
union, and every union is in the global order's relative order, so a group's list is a few increasing runs of one
global order: positions, survivors, the band and the cut come from per-shard running counts and searchsorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.build_config import MiningConfig
from transforms import mining_math as mm
from transforms import mining_windows as mw
from transforms import random_tier as rt
from transforms.mine_types import (
    MinedQuery,
    QueryPayload,
    ShardCandidates,
    without_vectors,
)
from transforms.topk import SCORE_GRID, round_scores


class _Ids:
    """The doc ids of (shard, union row) pairs of one query, decoded only where asked (the tie-break, the picks)."""

    def __init__(self, results: list[ShardCandidates]):
        self.results, self.shards = results, {}

    def __call__(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """[n] object array of str."""
        out = np.empty(len(rows), dtype=object)
        for s in np.unique(shards).tolist():
            if s not in self.shards:  # where each id ends in the shard's id bytes, and the bytes
                r = self.results[s]
                self.shards[s] = (np.cumsum(r.id_lengths, dtype=np.int64), r.id_bytes.tobytes())
            ends, data = self.shards[s]
            mask = shards == s
            stops = ends[rows[mask]]
            starts = stops - self.results[s].id_lengths[rows[mask]]
            out[mask] = [data[a:b].decode("utf-8") for a, b in zip(starts.tolist(), stops.tolist())]
        return out


@dataclass
class _Merged:
    """Every pair group's merged list of one query, as runs of one global order of all shards' unions.

    A place is an entry's index in the global order (-rounded score, id). Group g's entries on shard s are union rows
    lo[s, g]:hi[s, g], at increasing places; its ranked list is all of them in place order, cut at length[g]
    entries (the complete prefix, max_depth): the ones placed before stop[g]. An entry's position in the list is
    the count of the group's entries of every shard placed before it (positions), so the raw rank is
    offset[g] + position + 1.
    """

    scores: np.ndarray  # [u] float64 rounded scores (topk.round_scores), by place
    codes: np.ndarray  # [u] int8 candidate codes, by place
    shard_of: np.ndarray  # [u] index into the shard results, by place
    row_of: np.ndarray  # [u] row in that shard's union, by place
    place: list  # per shard: [u_s] int64 place of each union row (increasing)
    before: np.ndarray  # [S, u + 1] int64 union rows of shard s among the first j places
    lo: np.ndarray  # [S, g] int64
    hi: np.ndarray  # [S, g] int64
    length: np.ndarray  # [g] int64 entries of each group's list
    stop: np.ndarray  # [g] int64 the list is the group's entries placed before stop
    offset: np.ndarray  # [g] int64 documents of the corpus ranked above each group's threshold
    exhausted: np.ndarray  # [g] bool: the list holds every document at or below the threshold
    ids: _Ids

    def positions(self, groups: np.ndarray, places: np.ndarray) -> np.ndarray:
        """Entries of group `groups` placed before `places` (broadcast): an entry's 0-based position in its list."""
        counts = self.before[:, places] - self.lo[:, groups]  # [S, ...]
        return np.clip(counts, 0, self.hi[:, groups] - self.lo[:, groups]).sum(axis=0)

    def firsts(self, rows: list, start: np.ndarray, stop: np.ndarray, m: int) -> np.ndarray:
        """[g, m] places of each group's first m listed entries among `rows` (per shard: ascending union rows that
        qualify) within union rows start[s, g]:stop[s, g], best first; u where there are fewer.

        The first m of a group are among the first m it has on each shard, so S x m candidates per group decide.
        """
        g, u = self.lo.shape[1], len(self.scores)
        found = [np.full((g, m), u, np.int64)]
        for s, qualify in enumerate(rows):
            if not len(qualify):
                continue
            at = np.searchsorted(qualify, start[s])[:, None] + np.arange(m)  # [g, m]
            inside = at < np.searchsorted(qualify, stop[s])[:, None]
            found.append(np.where(inside, self.place[s][qualify[np.minimum(at, len(qualify) - 1)]], u))
        places = np.sort(np.concatenate(found, axis=1), axis=1)[:, :m]
        return np.where(places < self.stop[:, None], places, u)

    def first_at_or_after(self, places: np.ndarray) -> np.ndarray:
        """[g] place of each group's first listed entry placed at or after places[g]; u where none."""
        u, every = len(self.scores), np.arange(self.lo.shape[1])
        first = np.full(len(every), u, np.int64)
        for s, place in enumerate(self.place):
            row = np.maximum(self.lo[s], self.before[s, places])  # [g]
            inside = row < self.hi[s]
            first = np.where(inside, np.minimum(first, place[np.minimum(row, len(place) - 1)] if len(place) else u),
                             first)
        return np.where(first < self.stop, first, u)

    def runs(self, k: int) -> np.ndarray:
        """Places of group k's entries on every shard, shard by shard (not cut, not in place order)."""
        return np.concatenate([place[self.lo[s, k]:self.hi[s, k]] for s, place in enumerate(self.place)])

    def listed(self, k: int) -> np.ndarray:
        """Places of group k's list, best first (what pick_mined reads)."""
        return np.sort(self.runs(k))[: self.length[k]]


def _global_order(ids: _Ids, units: np.ndarray, first: np.ndarray) -> np.ndarray:
    """[u] concatenated entry at each global place: topk.order_by_score_then_id. Ids are decoded only where two
    entries share a rounded score (the tie-break): ~90 of ~4,900 on a dense query."""
    order = np.argsort(-units, kind="stable")
    ranked = units[order]
    tied = np.zeros(len(units), bool)
    tied[1:] = ranked[1:] == ranked[:-1]
    if not tied.any():
        return order
    tied[:-1] |= tied[1:]
    at = np.flatnonzero(tied)  # places of the entries that share a rounded score (runs of one score)
    shared = order[at]
    owner = np.searchsorted(first, shared, side="right") - 1
    by_id = np.argsort(ids(owner, shared - first[owner]), kind="stable")
    order[at] = shared[by_id[np.argsort(-units[shared[by_id]], kind="stable")]]  # by score, then by id
    return order


def merge_windows(results: list[ShardCandidates], groups: int, max_depth: int) -> _Merged:
    """Merge every group's shard windows by (-rounded score, id), cut at the complete prefix and at max_depth.

    Each shard window is a prefix of the shard's documents below the group's threshold, so the merge is exact up
    to the earliest last entry of a window that is not complete; the rank offset is the sum of the shards'
    counts above the threshold. Both are the same for any number of shards.
    """
    sizes = np.array([r.union_size for r in results], np.int64)
    first = np.cumsum(sizes) - sizes  # [S] where each shard's union starts in the concatenation
    units = np.concatenate([r.units for r in results]).astype(np.int64)
    ids = _Ids(results)
    order = _global_order(ids, units, first)
    u, shards = len(units), np.arange(len(results))
    where = np.empty(u, np.int64)
    where[order] = np.arange(u)
    place = [where[a:a + n] for a, n in zip(first.tolist(), sizes.tolist())]
    rising = np.diff(where) > 0  # within a shard's union; the steps between shards do not count
    rising[first[1:][(first[1:] > 0) & (first[1:] < u)] - 1] = True
    if not rising.all():
        raise ValueError("a shard's union is not in (-rounded score, id) order: the merge's runs rely on it (a bug)")
    shard_of = np.repeat(shards, sizes)[order]
    before = np.zeros((len(results), u + 1), np.int64)
    np.cumsum(shard_of[None, :] == shards[:, None], axis=1, out=before[:, 1:])
    lo = np.array([r.lo for r in results], np.int64).reshape(len(results), groups)  # [S, g]
    hi = np.array([r.hi for r in results], np.int64).reshape(len(results), groups)
    complete = np.array([r.complete for r in results], bool).reshape(len(results), groups)
    last = np.where(hi > lo, np.array([p[np.maximum(h - 1, 0)] + 1 if len(p) else np.zeros_like(h)
                                       for p, h in zip(place, hi)]).reshape(lo.shape), 0)  # [S, g] past each run
    merged = _Merged(
        scores=units[order].astype(np.float64) * SCORE_GRID,  # == round_scores(exact score): the same decisions
        codes=np.concatenate([r.codes for r in results])[order],
        shard_of=shard_of,
        row_of=order - first[shard_of],
        place=place,
        before=before,
        lo=lo,
        hi=hi,
        length=np.zeros(groups, np.int64),
        stop=np.full(groups, u, np.int64),
        offset=np.sum([r.above for r in results], axis=0).astype(np.int64).reshape(groups),
        exhausted=np.zeros(groups, bool),
        ids=ids,
    )
    every = np.arange(groups)
    total = (hi - lo).sum(axis=0)  # [g]
    ends = np.where(complete, np.iinfo(np.int64).max, merged.positions(every[None, :], last))  # [S, g]
    cut = np.minimum(np.minimum(total, max_depth), ends.min(axis=0, initial=np.iinfo(np.int64).max))
    stop = np.where(cut == total, u, np.where(ends == cut, last, u + 1).min(axis=0, initial=u + 1))
    for k in np.flatnonzero(stop > u).tolist():  # cut at max_depth: the place past the cut-th entry
        stop[k] = np.partition(merged.runs(k), cut[k] - 1)[cut[k] - 1] + 1 if cut[k] else 0
    merged.length, merged.stop = cut, stop
    merged.exhausted = complete.all(axis=0) & (cut == total)
    return merged


def pick_groups(merged: _Merged, results: list[ShardCandidates], refs: np.ndarray, mining: MiningConfig, seed: int,
                query_id: str) -> tuple[tuple, tuple, np.ndarray]:
    """((groups, places) hard, (groups, places) semi-hard, stops [g]): mining_math.pick_mined of every pair group,
    picks group by group, best first; stops[g]: the prefix of the list the group's choice relies on ends before
    that place (pick_mined's `used`).

    Every listed entry passes the margins (a window starts at its group's threshold), so the reasons are the
    candidate codes. 'top' works on all groups at once: the picks are each group's first survivors (and band
    survivors), found among each shard's first ones (_Merged.firsts); uniform / simans draw per group
    (pick_mined with fresh per-tier rngs, as for a group alone).
    """
    g, u = len(refs), len(merged.scores)
    if mining.sampling != "top":
        return _pick_sampled(merged, refs, mining, seed, query_id)
    keep = [np.flatnonzero(r.codes == mm.KEEP) for r in results]  # per shard: union rows that survive the guards
    need, top = mm.hard_need(mining), min(mining.range_min + mining.hard, mining.range_max)
    survivors = merged.firsts(keep, merged.lo, merged.hi, need)  # [g, need]
    hard = survivors[:, mining.range_min:top]  # [g, <= K_hard] places, u where none
    stops = np.zeros(g, np.int64)
    if need:
        stops = np.where(survivors[:, -1] < u, survivors[:, -1] + 1, merged.stop)
    semi = np.full((g, 0), u, np.int64)
    if mining.semi_hard > 0:
        s = round_scores(merged.scores)  # descending: the band and below it are runs of places
        low, high = mining.semi_hard_band
        start = np.searchsorted(-s, -(refs - low), side="left")  # [g] first place with s <= floor - LOW
        end = np.searchsorted(-s, -(refs - high), side="right")  # [g] first place with s < floor - HIGH
        need_b = mm.semi_hard_need(mining)
        band = merged.firsts(keep, np.maximum(merged.lo, merged.before[:, start]),
                             np.minimum(merged.hi, merged.before[:, end]), need_b + hard.shape[1])
        band = np.where((band[:, :, None] == hard[:, None, :]).any(axis=2), u, band)  # what hard left
        band = np.sort(band, axis=1)[:, :need_b]
        semi = band[:, :min(mining.semi_hard, mining.semi_hard_pool)]
        below = merged.first_at_or_after(end)
        stops_b = np.where(below < u, below + 1, merged.stop)
        if need_b and mining.semi_hard_pool >= need_b:
            stops_b = np.where(band[:, -1] < u, band[:, -1] + 1, stops_b)
        stops = np.maximum(stops, stops_b)
    return _picked(hard, u), _picked(semi, u), stops


def _picked(places: np.ndarray, u: int) -> tuple[np.ndarray, np.ndarray]:
    """(groups [r], places [r]) of a [g, k] table of picks (u where none), group by group, best first."""
    groups, column = np.nonzero(places < u)
    return groups, places[groups, column]


def _pick_sampled(merged: _Merged, refs: np.ndarray, mining: MiningConfig, seed: int, query_id: str):
    """pick_groups for uniform / simans sampling: pick_mined on each group's list."""
    picks, stops = ([], [], [], []), np.zeros(len(refs), np.int64)
    for k in range(len(refs)):
        cols = merged.listed(k)
        rngs = {tier: mm.tier_rng(seed, query_id, tier) for tier in ("hard", "semi_hard", "random")}
        pick = mm.pick_mined(merged.scores[cols], merged.codes[cols], float(refs[k]), bool(merged.exhausted[k]),
                             mining, rngs)
        for i, chosen in enumerate((pick.hard, pick.semi_hard)):
            picks[2 * i].append(np.full(len(chosen), k, np.int64))
            picks[2 * i + 1].append(cols[chosen])
        stops[k] = cols[pick.used - 1] + 1 if pick.used else 0
    hg, hp, sg, sp = (np.concatenate(x).astype(np.int64) if x else np.zeros(0, np.int64) for x in picks)
    return (hg, hp), (sg, sp), stops


def pick_random_groups(results: list[ShardCandidates], refs: np.ndarray, excluded: tuple[np.ndarray, np.ndarray],
                       positive_ids: list, k: int, mining: MiningConfig, rng: np.random.Generator):
    """(groups [r], shards [r], draws [r]): every group's random picks, group by group in draw order.

    random_tier.pick_random for each group, with one visit order for all (random_tier.RandomVisits: each group
    draws from a fresh rng of the same per-query stream, and which draw comes next never depends on the guards):
    a group keeps the first k visited draws that passed its guards and are not among its hard and semi-hard picks
    (excluded: (groups [e], ids [e])) or the judged positives. Draws are distinct documents (shards are
    disjoint), so no draw is taken twice, and each exclusion is one column of the draws, found by id once.
    """
    base = np.cumsum([0] + [r.draw_count for r in results])[:-1].astype(np.int64)
    # [g, every shard's draws]; draws that did not travel are never reached (_draws_needed): never accepted
    ok = np.zeros((len(refs), sum(r.draw_count for r in results)), bool)
    travelled = np.concatenate([np.arange(len(r.draw_ids)) + start for start, r in zip(base.tolist(), results)])
    scores = np.concatenate([r.draw_scores for r in results]).astype(np.float64)
    ok[:, travelled] = (np.concatenate([r.draw_codes for r in results]) == mm.KEEP)[None, :] \
        & (mm.margin_codes(scores[None, :], refs[:, None], mining) == mm.KEEP)
    column = {}  # travelled draw id -> its column of ok
    for start, r in zip(base.tolist(), results):
        column.update(zip(r.draw_ids.tolist(), range(start, start + len(r.draw_ids))))
    ok[:, [column[x] for x in positive_ids if x in column]] = False
    hits = [(g, column[x]) for g, x in zip(excluded[0].tolist(), excluded[1].tolist()) if x in column]
    if hits:
        ok[tuple(np.array(hits).T)] = False
    visits = rt.RandomVisits(np.array([r.ntotal for r in results]), [r.draw_count for r in results], rng)
    want = k + 8
    while True:
        visits.extend(want)
        shards, draws = np.array(visits.shards, np.int64), np.array(visits.draws, np.int64)
        passes = ok[:, base[shards] + draws]  # [g, v]
        rank = np.cumsum(passes, axis=1)
        if visits.done or not len(shards) or bool((rank[:, -1] >= k).all()):
            break
        want *= 4  # the visits do not depend on how far ahead they are known: fewer rounds
    groups, picked = np.nonzero(passes & (rank <= k))
    return groups, shards[picked], draws[picked]


def query_stats(merged: _Merged, results: list[ShardCandidates], stops: np.ndarray, picked: dict,
                groups: mm.PairGroups, payload: QueryPayload, mining: MiningConfig) -> dict:
    """Per-query counts, summed over queries into the stage's selection statistics.

    Per pair group, the documents ranked above its margin threshold (judged positives by their own scores, the
    rest under the margin guard) plus the window prefix its picks rely on (its entries placed before stops[g]), by
    first guard; dropped: the group of the highest reference, per query; dropped_pairs: every group, once per pair.
    picked: {tier: (groups [r], negative ids [r])}.
    """
    p, slots = len(payload.positives.ids), len(mm.GUARDS) + 1
    sizes, refs = groups.sizes(), groups.references
    g = len(refs)
    margin = "relative_margin" if mining.relative_margin is not None else "absolute_margin"
    # the prefix each group relies on: rows lo:end of each shard's run; the few rows a guard dropped, one by one
    end = np.clip(merged.before[:, stops], merged.lo, merged.hi)  # [S, g]
    dropped = np.flatnonzero(merged.codes != mm.KEEP)  # places
    shard, row = merged.shard_of[dropped], merged.row_of[dropped]
    inside = (merged.lo[shard] <= row[:, None]) & (row[:, None] < end[shard])  # [d, g]
    counts = inside.T.astype(np.int64) @ (merged.codes[dropped, None] == np.arange(slots))  # [g, slots]
    counts[:, mm.KEEP] = (end - merged.lo).sum(axis=0) - counts.sum(axis=1)
    used = merged.positions(np.arange(g), stops)
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
        "candidates_seen": int(sum(r.union_size for r in results)),
        "dropped": {guard: int(every[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "dropped_pairs": {guard: int(per_pair[i + 1]) for i, guard in enumerate(mm.GUARDS)},
        "deeper_search_histogram": {str(mw.rounds_for(int(used.max(initial=0)), mining, p)): 1},
        "queries_full": {t: int(pairs_full[t] == p) for t, k in wanted.items() if k > 0},
        "pairs_full": {t: pairs_full[t] for t, k in wanted.items() if k > 0},
        "negatives": {t: len(set(picked[t][1].tolist())) for t in wanted},
    }


def _pick_scores(merged: _Merged, results: list[ShardCandidates], places: np.ndarray) -> np.ndarray:
    """[n] float64 exact cos(query, candidate) of picked entries: every pick is among its shard's pick_rows."""
    width = max([r.union_size for r in results] + [0]) + 1
    keys = np.concatenate([s * width + r.pick_rows.astype(np.int64) for s, r in enumerate(results)])  # ascending
    exact = np.concatenate([r.pick_scores for r in results]).astype(np.float64)
    return exact[np.searchsorted(keys, merged.shard_of[places] * width + merged.row_of[places])]


def _detail_starts(merged: _Merged, results: list[ShardCandidates], sizes: np.ndarray, groups: np.ndarray,
                   places: np.ndarray) -> np.ndarray:
    """[n] where each pick's similarities to its group's positives start in the shards' sims, concatenated: the
    shards list (group, union row) details group by group, each group's pairs in a row."""
    width = max([r.union_size for r in results] + [0]) + 1
    span = (len(sizes) + 1) * width  # keys (shard, group, row), ascending shard by shard
    keys = np.concatenate([s * span + r.detail_groups.astype(np.int64) * width + r.detail_rows
                           for s, r in enumerate(results)])
    detail_groups = np.concatenate([r.detail_groups for r in results]).astype(np.int64)
    starts = np.cumsum(sizes[detail_groups]) - sizes[detail_groups]  # [r] in the concatenated sims
    wanted = merged.shard_of[places] * span + groups * width + merged.row_of[places]
    at = np.searchsorted(keys, wanted)
    if np.any(at >= len(keys)) or np.any(keys[np.minimum(at, len(keys) - 1)] != wanted):
        raise KeyError("a pick has no shard details: window_ends and pick_mined disagree (a bug)")
    return starts[at]


def _check_margins(merged: _Merged, refs: np.ndarray, mining: MiningConfig) -> None:
    """Every listed entry passes its group's margins (margin codes are monotone in the rounded score and a window
    starts at the threshold), so the merge reads candidate codes as reasons: checked on each run's best entry."""
    best = merged.first_at_or_after(np.zeros(len(refs), np.int64))  # [g] each list's best entry, u if empty
    listed = best < len(merged.scores)
    if np.any(mm.margin_codes(merged.scores[best[listed]], refs[listed], mining) != mm.KEEP):
        raise ValueError("a shard window starts above its group's margin threshold: window_ends and the merge "
                             "disagree (a bug)")


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
        _check_margins(merged, refs, mining)
        hard, semi, stops = pick_groups(merged, results, refs, mining, self.seed, query_id)
        mined = [hard, semi]  # per tier: (groups, places), group by group, best first
        cols = np.concatenate([mined[0][1], mined[1][1]])
        pick_ids = merged.ids(merged.shard_of[cols], merged.row_of[cols])  # hard then semi-hard
        excluded = (np.concatenate([mined[0][0], mined[1][0]]), pick_ids)  # each group's own picks
        if mining.random > 0:
            random = pick_random_groups(results, refs, excluded, payload.positives.ids.tolist(), mining.random,
                                        mining, mm.tier_rng(self.seed, query_id, "random"))
        else:
            random = (np.zeros(0, np.int64),) * 3
        draw_base = np.cumsum([0] + [len(r.draw_ids) for r in results])[:-1]  # travelled draws, shard by shard
        random_ids = np.concatenate([r.draw_ids for r in results] + [np.zeros(0, object)])[
            draw_base[random[1]] + random[2]]
        negatives = self._negatives(merged, results, groups, mined, random, pick_ids, random_ids)
        hard_count = len(mined[0][0])
        stats = query_stats(merged, results, stops, {
            "hard": (mined[0][0], pick_ids[:hard_count]),
            "semi_hard": (mined[1][0], pick_ids[hard_count:]),
            "random": (random[0], random_ids),
        }, groups, payload, mining)
        self._count(stats, results)
        if not self.keep_vectors:
            payload = without_vectors(payload)
        yield MinedQuery(query_id, payload, generator=self.generator, stats=stats, **negatives)

    def _negatives(self, merged: _Merged, results: list[ShardCandidates], groups: mm.PairGroups, mined: list,
                   random: tuple, pick_ids: np.ndarray, random_ids: np.ndarray) -> dict:
        """MinedQuery's arrays: the distinct (negative, tier) of the query and each pair's list of them, with the
        similarity to the pair's positive (from the shards' details, or the random draws' [m, p] similarities)."""
        p = len(groups.of_pair)
        sizes, first, pairs = mm.group_members(groups)
        (hg, hc), (sg, sc) = mined
        rg, rs, rd = random
        member_group = np.concatenate([hg, sg, rg]).astype(np.int64)
        member_tier = np.concatenate([np.zeros(len(hg), np.int8), np.ones(len(sg), np.int8),
                                      np.full(len(rg), 2, np.int8)])
        cols = np.concatenate([hc, sc])
        ids = np.concatenate([pick_ids, random_ids])
        mined_group = member_group[: len(cols)]
        ranks = np.concatenate([merged.offset[mined_group] + merged.positions(mined_group, cols) + 1,
                                np.full(len(rg), -1)])
        draw_base = np.cumsum([0] + [len(r.draw_ids) for r in results])[:-1]  # travelled draws, shard by shard
        scores = np.concatenate([_pick_scores(merged, results, cols),
                                 np.concatenate([r.draw_scores for r in results] + [np.zeros(0)])[draw_base[rs] + rd]])
        # where each member's similarities start in one flat array of every shard's details, then every draw's
        sims_all = np.concatenate([r.sims for r in results] + [r.draw_sims.ravel() for r in results])
        draw_sims = len(sims_all) - sum(r.draw_sims.size for r in results) + np.cumsum(
            [0] + [r.draw_sims.size for r in results])[:-1]
        start = np.concatenate([_detail_starts(merged, results, sizes, mined_group, cols),
                                draw_sims[rs] + rd * p]).astype(np.int64)
        # one document per place, and per draw (shards are disjoint): (tier, place or draw) names (negative, tier)
        span = len(merged.scores) + len(draw_base) * int(max([len(r.draw_ids) for r in results] + [0])) + 1
        key = member_tier.astype(np.int64) * span + np.concatenate([cols, len(merged.scores) + draw_base[rs] + rd])
        # group by group, then by tier (hard, semi-hard, random: concatenated in that order), each best first / in
        # draw order
        order = np.argsort(member_group, kind="stable")
        member_group, member_tier, ids, ranks, scores, start, key = (
            a[order] for a in (member_group, member_tier, ids, ranks, scores, start, key))
        _, firsts, negative_of = np.unique(key, return_index=True, return_inverse=True)
        numbered = np.empty(len(firsts), np.int64)  # negatives are numbered by their first entry
        numbered[np.argsort(firsts)] = np.arange(len(firsts))
        negative_of, firsts = numbered[negative_of.reshape(-1)], np.sort(firsts)
        # every (member, pair of its group): the pair, its place in the member list, and its similarity
        repeat = sizes[member_group]
        entry = np.repeat(np.arange(len(ids)), repeat)
        k = np.arange(len(entry)) - np.repeat(np.cumsum(repeat) - repeat, repeat)  # pair index within the group
        pair = pairs[first[member_group[entry]] + k]
        sims = sims_all[start[entry] + np.where(member_tier[entry] == 2, pair, k)]
        by_pair = np.argsort(pair, kind="stable")  # entries are ascending: (pair, entry) order
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

