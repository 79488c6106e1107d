"""The plausibility guard, its counts, kind spreading and the entity vocabulary combiner (no model, no Beam)."""

from __future__ import annotations

import numpy as np

from schemas.negatives import text_hash
from transforms.contextual.beam import TopEntitiesPerTypeFn
from transforms.contextual.entity import vocabulary_from_counts
from transforms.contextual.generator import pair_rng, spread_across_kinds
from transforms.contextual.guard import REJECTION_REASONS, GuardCounts, band_rejection, text_rejection

POSITIVE = "Expression of BRCA1 is associated with lower risk of breast cancer in 120 women."
JUDGED = frozenset({text_hash("Another judged positive passage about BRCA1 and risk.")})


def reject(candidate: str, seen: set | None = None, ratio: float = 1.5) -> str | None:
    return text_rejection(POSITIVE, candidate, JUDGED, set() if seen is None else seen, ratio)


def test_text_guard_drops_near_copies_and_keeps_real_edits():
    assert reject(POSITIVE) == "no_content_change"
    assert reject(POSITIVE.upper().replace(" ", "  ")) == "no_content_change"  # case and spacing only
    assert reject(POSITIVE.replace(" of ", " in ")) == "no_content_change"  # a function word only
    assert reject(POSITIVE.replace(".", "!")) == "no_content_change"
    assert reject(POSITIVE.replace("is associated", "is not associated")) is None  # negation cues are content
    assert reject(POSITIVE.replace("120", "240")) is None
    assert reject(POSITIVE.replace("lower", "higher")) is None


def test_text_guard_rejects_empty_long_short_duplicate_and_judged_texts():
    assert reject("   ") == "empty"
    assert reject(POSITIVE + " filler" * 30) == "length_ratio"
    assert reject("BRCA1 risk.") == "length_ratio"
    assert reject("Another judged positive passage about BRCA1 and risk.", ratio=3.0) == "judged_positive"
    seen: set[str] = set()
    edited = POSITIVE.replace("lower", "higher")
    assert reject(edited, seen) is None and reject(edited.upper(), seen) == "duplicate"


def test_band_guard_keeps_the_band_and_decides_on_a_1e6_grid():
    band = (0.80, 0.995)
    assert band_rejection(0.90, band) is None and band_rejection(0.80, band) is None
    assert band_rejection(0.7999, band) == "too_dissimilar"
    assert band_rejection(0.995, band) == "too_similar" and band_rejection(1.0, band) == "too_similar"
    assert band_rejection(0.9949996, band) == "too_similar"  # rounds to 0.995: a copy as far as the grid says
    assert band_rejection(0.7999996, band) is None


def test_counts_add_up_and_survive_the_metrics_round_trip():
    counts = GuardCounts(pairs=3, pairs_with_negative=2, deadletter=1)
    outcome = {"negation": ["ok", "ok", "too_similar"], "number": ["duplicate", "ok"], "entity": ["too_dissimilar"]}
    for kind, results in outcome.items():
        for result in results:
            counts.candidate(kind)
            if result == "ok":
                counts.accept(kind)
            else:
                counts.reject(kind, result)
    counts.select("negation")
    stats = counts.as_dict()
    for kind in outcome:
        rejected = sum(stats["rejected_by_kind"].get(kind, {}).values())
        assert stats["candidates"][kind] == stats["accepted"].get(kind, 0) + rejected
    assert sum(stats["candidates"].values()) == sum(stats["accepted"].values()) + sum(stats["rejected"].values())
    assert set(stats["rejected"]) == set(REJECTION_REASONS) and stats["rejected"]["too_similar"] == 1
    kinds = ("antonym", "negation", "number", "entity")
    assert GuardCounts.from_metric_counters(counts.metric_increments(), kinds).as_dict() == stats
    assert GuardCounts().merge(counts).merge(counts).as_dict()["candidates"] == {
        "entity": 2,
        "negation": 6,
        "number": 4,
    }


def test_selection_spreads_across_kinds_in_the_given_order():
    by_kind = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"]}
    assert spread_across_kinds(by_kind, ["b", "a", "c"], 4) == ["b1", "a1", "c1", "a2"]
    assert spread_across_kinds(by_kind, ["c", "a", "b"], 10) == ["c1", "a1", "b1", "c2", "a2", "a3"]
    assert spread_across_kinds(by_kind, ["a"], 0) == []


def test_pair_rng_streams_are_stable_and_independent():
    draw = pair_rng(13, "q1", "d1", "negation").integers(1 << 30, size=4)
    assert np.array_equal(draw, pair_rng(13, "q1", "d1", "negation").integers(1 << 30, size=4))
    others = [
        pair_rng(13, "q1", "d1", "number"),
        pair_rng(14, "q1", "d1", "negation"),
        pair_rng(13, "q1", "d2", "negation"),
    ]
    assert all(not np.array_equal(draw, other.integers(1 << 30, size=4)) for other in others)


def test_entity_vocabulary_combiner_is_exact_whatever_the_bundling():
    counts = {f"GENE{i}": 2 + i % 7 for i in range(60)} | {f"IL-{i}": 2 + i % 3 for i in range(10)} | {"Danish": 5}
    expected = vocabulary_from_counts(counts, per_shape=5, min_df=2)
    combine = TopEntitiesPerTypeFn(per_shape=5)
    items = sorted(counts.items())
    for parts in (1, 3, 7):
        accumulators = []
        for part in range(parts):
            accumulator = combine.create_accumulator()
            for item in items[part::parts]:
                accumulator = combine.add_input(accumulator, item)
            accumulators.append(accumulator)
        assert combine.extract_output(combine.merge_accumulators(accumulators)) == expected
    assert expected["symbol:A9"] == ("GENE13", "GENE20", "GENE27", "GENE34", "GENE41")  # df 8, ties by name
    assert expected["name:1"] == ("Danish",) and len(expected["symbol:A-9"]) == 5
