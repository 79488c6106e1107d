"""Merge side of mining: every shard's answer for one query -> the query's tiered negatives (MergeShardsFn).

Each group's shard windows are merged (rank = documents above the threshold on every shard + position in the
merged list), then hard and semi-hard are picked from the merged list and random from the shards' draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.build_config import MiningConfig
from transforms import mining_math as mm
from transforms.mine_types import (
    MinedQuery,
    QueryPayload,
    ShardCandidates,
    without_vectors,
)
from transforms.topk import SCORE_GRID


def _unpack(results: list[ShardCandidates], shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[n] object array of the doc ids at (shard, union row) pairs."""
    offsets = {}
    out = np.empty(len(rows), dtype=object)
    for i, (s, r) in enumerate(zip(shards.tolist(), rows.tolist())):
        if s not in offsets:
            offsets[s] = np.concatenate([[0], np.cumsum(results[s].id_lengths, dtype=np.int64)]).tolist()
        out[i] = bytes(results[s].id_bytes[offsets[s][r]:offsets[s][r + 1]]).decode("utf-8")
    return out




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
        sizes, first, pairs = mm.group_members(groups)
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

