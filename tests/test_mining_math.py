"""Pure mining maths: guards, windows, tier priority, sampling, coverage, the random tier."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.build_config import ConfigError, MiningConfig
from transforms import mining_math as mm
from transforms import mining_windows as mw
from transforms import random_tier as rt


def _positives(scores, ids=("p1",), hashes=("hp1",), dim=4) -> mm.Positives:
    vectors = np.eye(dim, dtype=np.float32)[: len(ids)]
    return mm.Positives(np.array(ids), np.array(hashes), vectors, np.asarray(scores, dtype=np.float64))


def _code(name: str) -> int:
    return mm.GUARDS.index(name) + 1


def test_each_guard_drops_its_planted_candidate_and_counts_the_first_reason():
    pos = _positives([0.80, 0.60], ids=("p1", "p2"), hashes=("h1", "h2"))
    mining = MiningConfig(relative_margin=0.05, absolute_margin=0.02, max_score=0.55, near_copy_threshold=0.98)
    ids = np.array(["p2", "copy", "near", "rel", "abs", "cap", "ok"])
    hashes = np.array(["h2", "h1", "x", "x", "x", "x", "x"])
    # floor = 0.60: relative threshold 0.57, absolute: drop s + 0.02 > 0.60, max_score 0.55
    scores = np.array([0.60, 0.30, 0.30, 0.58, 0.585, 0.56, 0.50])
    sims = np.full((7, 2), 0.5)
    sims[2, 1] = 0.99  # near-copy of the second positive
    sims[0, 1] = 1.0  # the judged positive itself would also be a near-copy: counted once, as judged_positive
    reasons = mm.guard_reasons(ids, hashes, scores, sims, pos, mining)
    expected = ["judged_positive", "text_copy", "near_copy", "relative_margin", "relative_margin", "max_score"]
    assert reasons.tolist() == [_code(n) for n in expected] + [mm.KEEP]
    # 0.585 fails both margins; with the relative margin off it is the absolute margin that drops it
    no_rel = MiningConfig(relative_margin=None, absolute_margin=0.02)
    assert mm.guard_reasons(ids[4:5], hashes[4:5], scores[4:5], sims[4:5], pos, no_rel).tolist() == [
        _code("absolute_margin")
    ]


def test_guards_can_be_switched_off():
    pos = _positives([0.9], hashes=("h1",))
    mining = MiningConfig(relative_margin=None, text_copy_guard=False, near_copy_guard=False)
    reasons = mm.guard_reasons(np.array(["copy"]), np.array(["h1"]), np.array([0.1]), np.array([[1.0]]), pos, mining)
    assert reasons.tolist() == [mm.KEEP]


def test_relative_margin_subtracts_the_magnitude_for_negative_positive_scores():
    pos = _positives([-0.20])
    mining = MiningConfig(relative_margin=0.5)  # threshold = -0.2 - 0.1 = -0.3
    reasons = mm.guard_reasons(np.array(["a", "b"]), np.array(["x", "y"]), np.array([-0.25, -0.35]),
                               np.zeros((2, 1)), pos, mining)
    assert reasons.tolist() == [_code("relative_margin"), mm.KEEP]


def test_margin_uses_the_lowest_positive_score():
    pos = _positives([0.9, 0.5], ids=("p1", "p2"), hashes=("h1", "h2"))
    mining = MiningConfig(relative_margin=0.0, near_copy_guard=False)
    reasons = mm.guard_reasons(np.array(["a", "b"]), np.array(["x", "y"]), np.array([0.6, 0.4]),
                               np.zeros((2, 2)), pos, mining)
    assert reasons.tolist() == [_code("relative_margin"), mm.KEEP]


def test_sampling_top_uniform_and_simans():
    mining = MiningConfig(simans_a=200.0, simans_b=-0.1)
    scores = np.linspace(0.9, 0.1, 9)
    assert mm.sample_positions(3, "top", np.random.default_rng(0), scores, 0.8, mining).tolist() == [0, 1, 2]
    assert mm.sample_positions(20, "uniform", np.random.default_rng(0), scores, 0.8, mining).tolist() == list(range(9))
    uni = [mm.sample_positions(3, "uniform", np.random.default_rng(s), scores, 0.8, mining) for s in range(300)]
    assert all(len(set(u.tolist())) == 3 and list(u) == sorted(u) for u in uni)
    assert np.bincount(np.concatenate(uni), minlength=9).min() > 50  # every position is reachable
    again = mm.sample_positions(3, "uniform", np.random.default_rng(7), scores, 0.8, mining)
    assert again.tolist() == uni[7].tolist()
    # SimANS peaks at s_neg = target + b = 0.7 (position 2 of the linspace)
    sim = [mm.sample_positions(1, "simans", np.random.default_rng(s), scores, 0.8, mining)[0] for s in range(300)]
    counts = np.bincount(sim, minlength=9)
    assert counts.argmax() == 2 and counts[2] > counts[0] and counts[8] == 0


def _rngs(seed=0):
    return {t: np.random.default_rng([seed, i]) for i, t in enumerate(("hard", "semi_hard", "random"))}


def test_hard_window_counts_survivors_and_semi_hard_takes_what_hard_left():
    # floor 0.8; band [0.5, 0.7]; survivors at positions 1,2,4,5,6,7
    scores = np.array([0.85, 0.72, 0.69, 0.68, 0.66, 0.60, 0.55, 0.50, 0.30])
    reasons = np.array([1, 0, 0, 4, 0, 0, 0, 0, 0], dtype=np.int8)
    mining = MiningConfig(hard=2, semi_hard=2, range_min=1, range_max=10, semi_hard_band=(0.1, 0.3))
    pick = mm.pick_mined(scores, reasons, 0.8, False, mining, _rngs())
    assert pick.hard.tolist() == [2, 4]  # survivors 1 skipped by range_min; next two survivors
    assert pick.semi_hard.tolist() == [5, 6]  # 1 is above the band (0.72 > 0.7), 2 and 4 went to hard
    assert not pick.needs_deeper


def test_short_queries_ask_for_a_deeper_search_unless_exhausted():
    scores = np.array([0.9, 0.8, 0.75])
    reasons = np.array([0, 1, 0], dtype=np.int8)
    mining = MiningConfig(hard=3, semi_hard=0)
    short = mm.pick_mined(scores, reasons, 0.95, False, mining, _rngs())
    assert short.hard.tolist() == [0, 2] and short.hard_short and short.needs_deeper
    done = mm.pick_mined(scores, reasons, 0.95, True, mining, _rngs())
    assert not done.needs_deeper
    # the band: not reached while the list still ends above floor - HIGH, reached once it goes below
    band = MiningConfig(hard=0, semi_hard=1, semi_hard_band=(0.1, 0.3))
    assert mm.pick_mined(np.array([0.9, 0.85]), np.zeros(2, np.int8), 0.9, False, band, _rngs()).band_short
    passed = mm.pick_mined(np.array([0.9, 0.5]), np.zeros(2, np.int8), 0.9, False, band, _rngs())
    assert not passed.band_short and len(passed.semi_hard) == 0


def test_uniform_window_needs_the_whole_window():
    mining = MiningConfig(hard=2, range_max=5, sampling="uniform", semi_hard=0)
    assert mm.hard_need(mining) == 5
    assert mm.hard_need(MiningConfig(hard=2, range_min=3, range_max=5, semi_hard=0)) == 5
    assert mm.semi_hard_need(MiningConfig(sampling="simans")) == 100


def test_depth_rounds_reach_max_depth():
    mining = MiningConfig(range_max=30, max_depth=2000)
    assert mw.initial_depth(mining, 2) == 32
    depth, rounds = mw.initial_depth(mining, 1), 0
    while depth < mining.max_depth:
        depth, rounds = mw.next_depth(depth, mining), rounds + 1
    assert (depth, rounds) == (2000, 4)  # 31 -> 124 -> 496 -> 1984 -> 2000 (capped)
    assert mw.rounds_for(2000, mining, 1) == 4


def test_pick_random_is_uniform_excludes_and_is_deterministic():
    sizes = np.array([30, 10])
    ids = [np.array([f"a{i}" for i in range(30)]), np.array([f"b{i}" for i in range(10)])]
    ok = [np.ones(30, bool), np.ones(10, bool)]
    ok[0][0] = False
    first = rt.pick_random(sizes, ok, ids, 3, {"a1"}, np.random.default_rng(5))
    assert first == rt.pick_random(sizes, ok, ids, 3, {"a1"}, np.random.default_rng(5))
    chosen = [ids[s][i] for s, i in first]
    assert len(set(chosen)) == 3
    counts = {"a": 0, "b": 0}
    for seed in range(400):  # each shard's draws are a uniform random permutation of the shard
        rng = np.random.default_rng(seed)
        perms = [rng.permutation(30), rng.permutation(10)]
        p_ids, p_ok = [ids[s][perms[s]] for s in (0, 1)], [ok[s][perms[s]] for s in (0, 1)]
        for s, i in rt.pick_random(sizes, p_ok, p_ids, 1, {"a1"}, rng):
            assert p_ids[s][i] not in ("a0", "a1")
            counts[p_ids[s][i][0]] += 1
    assert 0.6 < counts["a"] / 400 < 0.85  # shard a holds 28 of 38 surviving docs (0.74)
    # shards run dry: never more than the surviving documents
    assert len(rt.pick_random(sizes, ok, ids, 100, set(), np.random.default_rng(0))) == 39


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hard": 5, "range_min": 0, "range_max": 3}, "fewer than --hard 5"),
        ({"hard": -1}, "--hard must be >= 0"),
        ({"random": -2}, "--random must be >= 0"),
        ({"semi_hard_band": (0.3, 0.1)}, "semi_hard_band"),
        ({"range_min": 5, "range_max": 5}, "range_min must be < range_max"),
        ({"sampling": "random"}, "sampling must be one of"),
        ({"max_depth": 10, "range_max": 30}, "max_depth must be >= range_max"),
    ],
)
def test_bad_mining_config_fails_before_any_job(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MiningConfig(**kwargs)


def test_similarity_to_positives_is_one_matrix_product_equal_to_the_broadcast():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    pos_vectors = rng.normal(size=(7, 16)).astype(np.float32)
    pos = mm.Positives(np.array([f"p{i}" for i in range(7)]), np.array(["h"] * 7), pos_vectors, np.zeros(7))
    broadcast = (vectors.astype(np.float64)[:, None, :] * pos_vectors.astype(np.float64)[None, :, :]).sum(-1)
    assert np.abs(mm.similarity_to_positives(vectors, pos) - broadcast).max() < 1e-12


def test_margin_reference_lowest_shares_one_floor_pair_takes_each_positive():
    pos = _positives([0.9, 0.5, 0.9], ids=("a", "b", "c"), hashes=("ha", "hb", "hc"))
    lowest = mm.pair_groups(pos, "lowest")
    assert lowest.references.tolist() == [0.5] and lowest.of_pair.tolist() == [0, 0, 0]
    pair = mm.pair_groups(pos, "pair")
    assert pair.references.tolist() == pytest.approx([0.5, 0.9]) and pair.of_pair.tolist() == [1, 0, 1]
    assert pair.sizes().tolist() == [1, 2]
    with pytest.raises(ValueError, match="margin reference must be one of"):
        mm.reference_scores(pos, "median")
    with pytest.raises(ConfigError, match="margin_reference must be one of lowest, pair"):
        MiningConfig(margin_reference="highest")


def test_margin_codes_broadcast_over_groups_and_first_reasons_keep_the_guard_order():
    mining = MiningConfig(relative_margin=0.05, absolute_margin=0.02, max_score=0.55)
    scores = np.array([0.6, 0.5, 0.3])
    codes = mm.margin_codes(scores[None, :], np.array([[0.5], [0.9]]), mining)  # [2 groups, 3]
    assert codes.tolist() == [[_code("relative_margin"), _code("relative_margin"), 0], [0, 0, 0]]
    cand = np.array([_code("max_score"), _code("near_copy"), mm.KEEP], np.int8)
    assert mm.first_reasons(cand, codes[0]).tolist() == [_code("relative_margin"), _code("near_copy"), mm.KEEP]
    assert mm.first_reasons(cand, codes[1]).tolist() == [_code("max_score"), _code("near_copy"), mm.KEEP]


def test_pick_reports_the_prefix_it_depends_on():
    scores = np.array([0.85, 0.72, 0.69, 0.68, 0.66, 0.60, 0.55, 0.50, 0.30])
    reasons = np.array([1, 0, 0, 4, 0, 0, 0, 0, 0], dtype=np.int8)
    mining = MiningConfig(hard=2, semi_hard=2, range_min=1, range_max=10, semi_hard_band=(0.1, 0.3))
    pick = mm.pick_mined(scores, reasons, 0.8, False, mining, _rngs())
    assert pick.used == 7  # hard needs survivors up to position 4, the band pool up to position 6
    again = mm.pick_mined(scores[: pick.used], reasons[: pick.used], 0.8, False, mining, _rngs())
    assert again.hard.tolist() == pick.hard.tolist() and again.semi_hard.tolist() == pick.semi_hard.tolist()
    assert not again.needs_deeper
    short = mm.pick_mined(scores[:3], reasons[:3], 0.8, False, mining, _rngs())
    assert short.needs_deeper and short.used == 3


class _FakeShard:
    """A loaded shard as transforms.mine_shard sees it (search_api.ShardView): exact vectors, sorted ids, hashes."""

    def __init__(self, shard, vectors, ids, hashes):
        self.shard, self.num_shards, self.vectors = shard, None, vectors
        self.doc_ids, self.text_hashes, self.ntotal = ids, hashes, len(ids)


def _tied_corpus(rng: np.random.Generator, n: int, dim: int):
    """(vectors [n, dim] unit float32, ids, text hashes) where the second half repeats the first: exact score ties
    between documents, broken by id."""
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors[n // 2 :] = vectors[: n // 2]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([f"d{i:04d}" for i in range(n)], dtype=object)
    hashes = np.array([f"h{i:04d}" for i in range(n)], dtype=object)
    return vectors, ids, hashes


@pytest.mark.parametrize("reference, sampling", [("lowest", "top"), ("pair", "top"), ("pair", "uniform")])
def test_shard_windows_merge_into_the_picks_and_ranks_of_the_whole_list(reference, sampling):
    """Each shard mines a window below every pair group's margin threshold (MineShardQueries); merging them gives,
    for every pair group, the picks and raw ranks of mining the whole corpus in one list, with any number of
    shards, including pairs whose positive ranks far below max_depth (issue 15)."""
    from transforms.mine_merge import MergeShardsFn
    from transforms.mine_shard import MineShardQueries
    from transforms.mine_types import QueryPayload
    from transforms.search_api import QueryBlock
    from transforms.topk import order_by_score_then_id

    rng, n = np.random.default_rng(4), 400
    vectors, ids, hashes = _tied_corpus(rng, n, 6)
    query = vectors[7] + 0.2 * vectors[11]
    query = (query / np.linalg.norm(query)).astype(np.float32)
    scores = mm.cosine_rows(vectors, query)
    order = order_by_score_then_id(scores, ids)
    chosen = order[[3, 40, 150, 260, 330]]  # positives from near the top to deep in the list
    pos = mm.Positives(ids[chosen], hashes[chosen], vectors[chosen], scores[chosen])
    mining = MiningConfig(hard=3, semi_hard=2, random=0, range_max=10, sampling=sampling, semi_hard_pool=8,
                          margin_reference=reference, max_depth=60)
    groups = mm.pair_groups(pos, reference)

    codes = mm.candidate_codes(ids, hashes, scores, mm.similarity_to_positives(vectors, pos).max(axis=1), pos, mining)
    expected = []
    for ref in groups.references:  # the whole corpus as one list, from rank 1: the contract's semantics
        reasons = mm.first_reasons(codes[order], mm.margin_codes(scores[order], ref, mining))
        pick = mm.pick_mined(scores[order], reasons, float(ref), True, mining,
                             {t: mm.tier_rng(0, "q", t) for t in ("hard", "semi_hard", "random")})
        expected.append((ids[order][pick.hard].tolist(), (pick.hard + 1).tolist(),
                         ids[order][pick.semi_hard].tolist()))
    assert all(len(hard) == 3 for hard, _, _ in expected) and max(expected[0][1]) > mining.max_depth

    payload = QueryPayload("q", query, pos, depth=mw.initial_depth(mining, len(chosen)))
    for num_shards in (1, 3, 7):
        results = []
        for s in range(num_shards):
            rows = np.flatnonzero(np.arange(n) % num_shards == s)
            shard = _FakeShard(s, vectors[rows], ids[rows], hashes[rows])
            block = QueryBlock("b", ["q"], query[None, :], [payload])
            results += [answer for _, answer in MineShardQueries(mining, 0)(shard, block)]
        mined = next(MergeShardsFn(mining, 0, "test").process(("q", results)))
        got = []
        for g in range(len(groups.references)):  # pairs of a group share its list
            negatives = mined.negatives_of_pair(int(np.flatnonzero(groups.of_pair == g)[0]))
            hard = [x for x in negatives if x.tier == "hard"]
            got.append(([x.negative_id for x in hard], [x.rank for x in hard],
                        [x.negative_id for x in negatives if x.tier == "semi_hard"]))
        assert got == expected, num_shards


@pytest.mark.parametrize("extra", [
    {},
    {"sampling": "simans", "margin_reference": "lowest"},
    {"range_min": 2, "hard": 2, "semi_hard": 3, "max_depth": 25},
    {"relative_margin": None, "absolute_margin": 0.05, "semi_hard": 0},
])
def test_merged_negatives_and_stats_do_not_depend_on_the_shard_count(extra):
    """The merge reads each group's list as runs of one global order (transforms/mine_merge.py): every pick, rank,
    similarity and selection count is the same for 1, 3 or 7 shards, including lists cut at max_depth (issue 15)."""
    from transforms.mine_merge import MergeShardsFn
    from transforms.mine_shard import MineShardQueries
    from transforms.mine_types import QueryPayload
    from transforms.search_api import QueryBlock
    from transforms.topk import order_by_score_then_id

    rng, n = np.random.default_rng(8), 300
    vectors, ids, hashes = _tied_corpus(rng, n, 5)
    query = vectors[3]
    scores = mm.cosine_rows(vectors, query)
    chosen = order_by_score_then_id(scores, ids)[[2, 9, 30, 31, 90, 200]]
    pos = mm.Positives(ids[chosen], hashes[chosen], vectors[chosen], scores[chosen])
    mining = MiningConfig(**{"hard": 3, "semi_hard": 2, "random": 0, "range_max": 10, "semi_hard_pool": 8,
                             "max_depth": 60, **extra})
    payload = QueryPayload("q", query, pos, depth=mw.initial_depth(mining, len(chosen)))
    merged = []
    for num_shards in (1, 3, 7):
        results = []
        for s in range(num_shards):
            rows = np.flatnonzero(np.arange(n) % num_shards == s)
            block = QueryBlock("b", ["q"], query[None, :], [payload])
            shard = _FakeShard(s, vectors[rows], ids[rows], hashes[rows])
            results += [answer for _, answer in MineShardQueries(mining, 0)(shard, block)]
        mined = next(MergeShardsFn(mining, 0, "test").process(("q", results)))
        stats = {k: v for k, v in mined.stats.items() if k != "candidates_seen"}
        merged.append(([getattr(mined, f).tolist() for f in ("negative_ids", "tiers", "ranks", "scores",
                                                             "pair_offsets", "pair_negatives", "pair_sims")], stats))
    assert len(merged[0][0][0]) > 0 and sum(merged[0][1]["dropped"].values()) > 0
    assert merged[1] == merged[0] and merged[2] == merged[0]


def test_rounds_for_follows_the_global_depth_schedule():
    mining = MiningConfig(range_max=10, max_depth=100)
    assert [mw.rounds_for(used, mining, 1) for used in (0, 11, 12, 44, 45, 100, 400)] == [0, 0, 1, 1, 2, 2, 2]


def _pick_random_one_choice_per_draw(shard_sizes, draws_ok, draws_ids, k, exclude, rng):
    """The rejection sampler as first written (rng.choice per draw): pick_random must draw the same picks."""
    pointers = [0] * len(draws_ok)
    weights = np.asarray(shard_sizes, dtype=np.float64).copy()
    chosen, taken = [], set()
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


def _random_draw_case(rng):
    """A random per-shard draw setup: (shard sizes, draws per shard, drawn ids, guard verdicts, excluded ids, k)."""
    shards = int(rng.integers(1, 5))
    sizes = rng.integers(1, 40, shards)
    m = [int(rng.integers(0, size + 1)) for size in sizes]
    ids = [np.array([f"s{s}d{i}" for i in rng.permutation(sizes[s])[: m[s]]]) for s in range(shards)]
    ok = [rng.random(m[s]) < 0.6 for s in range(shards)]
    exclude = {f"s0d{i}" for i in range(3)}
    return sizes, m, ids, ok, exclude, int(rng.integers(0, 12))


def test_pick_random_draws_exactly_what_one_rng_choice_per_draw_drew():
    rng = np.random.default_rng(9)
    for trial in range(200):
        sizes, m, ids, ok, exclude, k = _random_draw_case(rng)
        expected = _pick_random_one_choice_per_draw(sizes, ok, ids, k, exclude, np.random.default_rng(trial))
        assert rt.pick_random(sizes, ok, ids, k, exclude, np.random.default_rng(trial)) == expected, trial


def test_random_visits_are_the_draws_pick_random_visits():
    """The merge picks every pair group's random negatives from one visit order (mining_math.RandomVisits): the
    first k visited draws a group accepts must be pick_random's picks for that group."""
    rng = np.random.default_rng(11)
    for trial in range(200):
        sizes, m, ids, ok, exclude, k = _random_draw_case(rng)
        expected = rt.pick_random(sizes, ok, ids, k, exclude, np.random.default_rng(trial))
        visits = rt.RandomVisits(sizes, m, np.random.default_rng(trial))
        visits.extend(sum(m))
        accepted = [(s, i) for s, i in zip(visits.shards, visits.draws) if ok[s][i] and str(ids[s][i]) not in exclude]
        assert accepted[:k] == expected, trial


@pytest.mark.parametrize("margins", [(0.05, None), (None, 0.02), (0.05, 0.02), (None, None)])
@pytest.mark.parametrize("semi_hard", [0, 2])
def test_ordered_windows_equal_the_matrix_windows(margins, semi_hard):
    """margin_starts + window_ends_ordered (binary searches) give window_ends' ends and pickable rows exactly, on
    ordered lists with tied rounded scores, guard drops and references on both sides of zero."""
    relative, absolute = margins
    rng = np.random.default_rng(7)
    for case in range(200):
        mining = MiningConfig(relative_margin=relative, absolute_margin=absolute, semi_hard=semi_hard,
                              semi_hard_band=(0.01, 0.08 + 0.1 * rng.random()), hard=int(rng.integers(1, 4)),
                              range_min=int(rng.integers(0, 3)), range_max=30)
        n = int(rng.integers(0, 60))
        scores = np.sort(np.round(rng.uniform(-0.3, 0.9, n), int(rng.integers(2, 7))))[::-1]  # ties included
        codes = np.where(rng.random(n) < 0.3, rng.integers(1, len(mm.GUARDS) + 1, n), mm.KEEP).astype(np.int8)
        refs = np.unique(np.round(rng.uniform(-0.2, 1.0, int(rng.integers(1, 8))), 4))
        kept = mm.margin_codes(scores[None, :], refs[:, None], mining) == mm.KEEP
        expected_starts = np.where(kept.any(axis=1), kept.argmax(axis=1) if n else 0, n)
        starts = mw.margin_starts(scores, refs, mining)
        assert np.array_equal(starts, expected_starts), case
        ends, pickable = mw.window_ends(scores, codes, refs, starts, mining)
        got_ends, groups, rows = mw.window_ends_ordered(scores, codes, refs, starts, mining)
        assert np.array_equal(got_ends, ends), case
        expected_groups, expected_rows = np.nonzero(pickable)
        assert np.array_equal(groups, expected_groups) and np.array_equal(rows, expected_rows), case


def test_cosine_rows_at_is_cosine_rows_bit_for_bit():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(700, 24)).astype(np.float32)
    query = rng.normal(size=24).astype(np.float32)
    for rows in (rng.permutation(700), rng.integers(0, 700, 5), np.zeros(0, np.int64), np.arange(256)):
        assert np.array_equal(mm.cosine_rows_at(vectors, rows, query), mm.cosine_rows(vectors[rows], query))


def test_near_copies_screened_once_per_chunk_equal_those_screened_per_query():
    """Queries sharing positives have their near copies screened once per chunk (mine_shard._near_copy_rows); a
    query mined alone screens its own candidates. Both give the same shard answers, near-copy drops included."""
    from transforms.mine_shard import MineShardQueries, _positives_shared
    from transforms.mine_types import QueryPayload
    from transforms.search_api import QueryBlock

    rng, n, dim = np.random.default_rng(11), 240, 16
    base = rng.normal(size=(n // 2, dim))
    vectors = np.concatenate([base, base + 0.08 * rng.normal(size=base.shape)]).astype(np.float32)  # near twins
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([f"d{i:04d}" for i in range(n)], dtype=object)
    hashes = np.array([f"h{i:04d}" for i in range(n)], dtype=object)
    shard = _FakeShard(0, vectors, ids, hashes)
    chosen = np.array([4, 9, 17, 30])
    queries, payloads = [], []
    for q in range(3):
        query = vectors[chosen[q]] + vectors[chosen[q + 1]] + 0.5 * vectors[50 + q]
        query = (query / np.linalg.norm(query)).astype(np.float32)
        pos = mm.Positives(ids[chosen], hashes[chosen], vectors[chosen], mm.cosine_rows(vectors[chosen], query))
        queries.append(query)
        payloads.append(QueryPayload(f"q{q}", query, pos, depth=100))
    mining = MiningConfig(hard=3, relative_margin=0.05)
    assert _positives_shared(payloads) and not _positives_shared(payloads[:1])
    together = [a for _, a in MineShardQueries(mining, 0)(shard, QueryBlock("b", ["q0", "q1", "q2"],
                                                                            np.stack(queries), payloads))]
    alone = [a for q, p in zip(queries, payloads)
             for _, a in MineShardQueries(mining, 0)(shard, QueryBlock("b", [p.query_id], q[None, :], [p]))]
    near_copy = mm.GUARDS.index("near_copy") + 1
    assert any((a.codes == near_copy).any() for a in together)  # the guard fired
    for a, b in zip(together, alone):
        for name in ("union", "pick_rows", "above", "lo", "hi", "detail_rows", "sims", "draw_codes"):
            assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name
