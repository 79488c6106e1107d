"""schemas/contracts.py: each per-tier rule flags a hand-made bad row and only that row; a clean frame is clean."""

from __future__ import annotations

import polars as pl
import pytest

from schemas.contracts import contract_violations, judged_positives, tier_contract
from schemas.negatives import TIERS, rows_to_table, text_hash

TEXT = {
    "d1": "Aspirin lowers the risk of stroke in adults.",
    "d2": "Statins reduce cholesterol in older patients.",
    "d3": "Vitamin D has no effect on bone density.",
    "n1": "Ibuprofen is an anti-inflammatory drug.",
    "n2": "Coffee intake and heart rate in students.",
    "n3": "Sleep duration and memory consolidation.",
    "n4": "Soil bacteria fix nitrogen.",
    "c1": "Aspirin raises the risk of stroke in adults.",
}
SCORE_POSITIVE = {"d1": 0.80, "d2": 0.60, "d3": 0.50}  # q1: d1, d2 (lowest 0.60); q2: d3
CONFIG = {
    "mining": {
        "hard": 3,
        "semi_hard": 2,
        "random": 2,
        "range_min": 0,
        "range_max": 30,
        "relative_margin": 0.05,
        "absolute_margin": None,
        "max_score": None,
        "semi_hard_band": [0.10, 0.30],
        "near_copy_guard": True,
        "near_copy_threshold": 0.98,
        "text_copy_guard": True,
    },
    "contextual": {"per_pair": 1, "similarity_band": [0.80, 0.995]},
}


def row(tier, query, positive, negative, score, rank=None, similarity=0.5, text=None, negative_id=None):
    text = TEXT.get(negative, f"Unrelated passage {negative}.") if text is None else text
    return {
        "query_id": query,
        "positive_id": positive,
        "negative_id": negative_id or negative,
        "anchor": f"anchor {query}",
        "positive": TEXT[positive],
        "negative": text,
        "tier": tier,
        "rank": rank,
        "score_positive": SCORE_POSITIVE[positive],
        "score_negative": score,
        "similarity_to_positive": similarity,
        "generator": "nlpaug:antonym" if tier == "contextual" else ("uniform" if tier == "random" else "faiss:Flat"),
        "edit": "lowers -> raises" if tier == "contextual" else None,
        "negative_text_hash": text_hash(text),
        "lexical_overlap": 0.2,
    }


def clean_rows() -> list[dict]:
    rows = []
    for positive in ("d1", "d2"):  # q1: relative bound 0.60 - 0.03 = 0.57; semi-hard band [0.30, 0.50]
        rows += [row("hard", "q1", positive, "n1", 0.55, rank=1), row("hard", "q1", positive, "n2", 0.50, rank=3)]
        rows += [row("semi_hard", "q1", positive, "n3", 0.40), row("random", "q1", positive, "n4", 0.10)]
    rows.append(row("contextual", "q1", "d1", "c1", 0.70, similarity=0.90, negative_id="ctx:d1:1"))
    # a contextual near-copy (0.99 >= the mined near-copy threshold) inside the contextual band: allowed
    rows.append(
        row(
            "contextual",
            "q1",
            "d2",
            "c1",
            0.50,
            similarity=0.99,
            negative_id="ctx:d2:1",
            text="Statins do not reduce cholesterol in older patients.",
        )
    )
    rows += [row("hard", "q2", "d3", "n1", 0.45, rank=2), row("random", "q2", "d3", "n4", 0.05)]
    return rows


def violations_of(rows: list[dict], config: dict = CONFIG) -> pl.DataFrame:
    return contract_violations(pl.from_arrow(rows_to_table(rows)).lazy(), config)


def flagged(rows, config=CONFIG) -> set[tuple]:
    found = violations_of(rows, config)
    return set(found.select("tier", "violation", "query_id", "positive_id", "negative_id").iter_rows())


def test_clean_frame_has_no_violation():
    assert violations_of(clean_rows()).height == 0


def with_extra(*extra: dict) -> list[dict]:
    return clean_rows() + list(extra)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (row("hard", "q1", "d1", "d2", 0.30, rank=4, negative_id="d2"), ("hard", "judged_positive")),
        (
            row("hard", "q1", "d1", "n9", 0.30, rank=4, text=TEXT["d2"].upper() + "  "),
            ("hard", "text_copy_of_positive"),
        ),
        (row("hard", "q1", "d1", "n9", 0.30, rank=4, similarity=0.99), ("hard", "near_copy")),
        (row("hard", "q2", "d3", "n9", 0.49, rank=1), ("hard", "relative_margin")),
        (row("hard", "q2", "d3", "n9", 0.30, rank=None), ("hard", "rank_missing")),
        (row("semi_hard", "q1", "d1", "n9", 0.52), ("semi_hard", "above_semi_hard_band")),
        (row("semi_hard", "q1", "d1", "n9", 0.25), ("semi_hard", "below_semi_hard_band")),
        (row("random", "q1", "d1", "n9", 0.58), ("random", "relative_margin")),
        (row("random", "q2", "d3", "n9", 0.10, rank=7), ("random", "rank_present")),
        (
            row("contextual", "q2", "d3", "c9", 0.40, similarity=0.90, text=TEXT["d3"] + " "),
            ("contextual", "text_copy_of_positive"),
        ),
        (row("contextual", "q2", "d3", "c9", 0.40, similarity=0.50), ("contextual", "similarity_below_band")),
        (row("contextual", "q2", "d3", "c9", 0.40, similarity=0.999), ("contextual", "similarity_above_band")),
        (row("contextual", "q2", "d3", "c9", 0.40, similarity=None), ("contextual", "similarity_missing")),
        (row("contextual", "q2", "d3", "c9", 0.40, similarity=0.9, rank=1), ("contextual", "rank_present")),
    ],
)
def test_each_rule_flags_its_bad_row(bad, expected):
    found = violations_of(with_extra(bad))
    tier, rule = expected
    hit = found.filter((pl.col("violation") == rule) & (pl.col("negative_id") == bad["negative_id"]))
    assert hit.height == 1 and hit["tier"][0] == tier
    # nothing else of the clean rows is touched: every violation is on the bad row
    assert set(found["negative_id"]) == {bad["negative_id"]}


def test_more_than_k_flags_every_row_of_the_pair():
    extra = [row("hard", "q1", "d1", n, 0.20, rank=9) for n in ("n8", "n9")]  # q1/d1: 4 hard rows, K = 3
    found = flagged(with_extra(*extra))
    assert {v for v in found if v[1] == "more_than_k"} == {
        ("hard", "more_than_k", "q1", "d1", n) for n in ("n1", "n2", "n8", "n9")
    }


def test_repeated_negative_across_tiers():
    extra = row("random", "q2", "d3", "n1", 0.45)  # n1 is already q2's hard negative
    found = flagged(with_extra(extra))
    assert ("hard", "repeated_negative", "q2", "d3", "n1") in found
    assert ("random", "repeated_negative", "q2", "d3", "n1") in found


def test_margins_are_taken_against_the_lowest_positive():
    # 0.58 is below d1's own bound (0.80 * 0.95 = 0.76) but above q1's lowest positive's (0.57)
    extra = row("hard", "q1", "d1", "n9", 0.58, rank=2)
    assert ("hard", "relative_margin", "q1", "d1", "n9") in flagged(with_extra(extra))


def test_configured_guards_and_window():
    config = {
        **CONFIG,
        "mining": {
            **CONFIG["mining"],
            "relative_margin": None,
            "absolute_margin": 0.1,
            "max_score": 0.52,
            "range_min": 2,
            "range_max": 30,
        },
    }
    found = flagged(clean_rows(), config)
    # absolute: s + 0.1 > lowest positive -> q1 n1 (0.65 > 0.60), q2 n1 (0.55 > 0.50); n2 0.60 is not above
    assert {v[2:] for v in found if v[1] == "absolute_margin"} == {
        ("q1", "d1", "n1"),
        ("q1", "d2", "n1"),
        ("q2", "d3", "n1"),
    }
    assert {v[2:] for v in found if v[1] == "max_score"} == {("q1", "d1", "n1"), ("q1", "d2", "n1")}
    # rank is 1-based and raw: with range_min 2 a rank must be >= 3 (n2 has rank 3)
    assert {v[2:] for v in found if v[1] == "rank_before_window"} == {
        ("q1", "d1", "n1"),
        ("q1", "d2", "n1"),
        ("q2", "d3", "n1"),
    }


def test_disabled_guards_do_not_flag():
    config = {**CONFIG, "mining": {**CONFIG["mining"], "near_copy_guard": False, "text_copy_guard": False}}
    rows = with_extra(row("hard", "q1", "d1", "n9", 0.30, rank=4, similarity=0.99, text=TEXT["d2"]))
    assert "near_copy" not in tier_contract("hard", config)
    assert not {v for v in flagged(rows, config) if v[1] in ("near_copy", "text_copy_of_positive")}


def test_scores_compare_on_the_grid_with_tolerance():
    # q2's bound is 0.50 - 0.025 = 0.475: one grid step above is tolerated, three are not
    within = row("hard", "q2", "d3", "n8", 0.475001, rank=1)
    beyond = row("hard", "q2", "d3", "n9", 0.475003, rank=1)
    found = flagged(with_extra(within, beyond))
    assert {v[4] for v in found if v[1] == "relative_margin"} == {"n9"}


def test_judged_positive_absent_from_the_rows_comes_from_the_pairs():
    rows = with_extra(row("hard", "q2", "d3", "d2", 0.30, rank=3, negative_id="d2"))
    negatives = pl.from_arrow(rows_to_table(rows)).lazy()
    assert violations_of(rows).filter(pl.col("violation") == "judged_positive").height == 0  # q2 never judged d2
    pairs = pl.LazyFrame({"query_id": ["q2"], "positive_id": ["d2"]})
    judged = judged_positives(negatives, pairs=pairs)
    found = contract_violations(negatives, CONFIG, judged)
    assert found.filter(pl.col("violation") == "judged_positive")["negative_id"].to_list() == ["d2"]


def test_every_tier_has_a_contract_and_unknown_tier_is_refused():
    assert all(tier_contract(tier, CONFIG) for tier in TIERS)
    with pytest.raises(ValueError, match="unknown tier 'hardest'.*hard, semi_hard"):
        tier_contract("hardest", CONFIG)
