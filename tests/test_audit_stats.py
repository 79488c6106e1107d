"""audit statistics on a hand-made run equal hand-computed values (linear quantiles, as numpy)."""

from __future__ import annotations

import polars as pl
import pytest

from audit.api import audit_run
from audit.synthetic import write_run
from schemas.negatives import TIERS, text_hash

TEXT = {
    "d1": "Aspirin lowers the risk of stroke.",
    "d2": "Statins reduce cholesterol.",
    "d3": "Vitamin D has no effect on bone density.",
    "d4": "Exercise improves sleep.",
    "n1": "Ibuprofen is an anti-inflammatory drug.",
    "n2": "Coffee intake and heart rate.",  # 29 characters
    "n3": "Sleep duration and memory.",
    "n4": "Soil bacteria fix nitrogen.",  # 27 characters
    "n5": "Coffee intake and heart rate.",  # n2's text under another id
    "n6": "Vitamin D and bone fractures.",
    "ctx:d1:1": "Aspirin raises the risk of stroke.",
    "ctx:d2:1": "Statins do not reduce cholesterol.",
}
SCORE_POSITIVE = {"d1": 0.80, "d2": 0.60, "d3": 0.50}
MANIFEST = {
    "schema_version": 1,
    "config": {
        "mining": {
            "hard": 2,
            "semi_hard": 1,
            "random": 1,
            "relative_margin": None,
            "absolute_margin": None,
            "max_score": None,
            "semi_hard_band": [0.10, 0.30],
        },
        "contextual": {"per_pair": 1, "kinds": ["antonym", "negation"], "similarity_band": [0.80, 0.995]},
    },
    "stages": {
        "mine": {
            "finished": True,
            "stats": {
                "candidates_seen": 100,
                "dropped_judged_positive": 4,
                "dropped_near_copy": 1,
                "deeper_search_histogram": {"0": 2, "1": 1},
                "rows_hard": 6,
            },
        }
    },
}
PAIRS = [("q1", "d1"), ("q1", "d2"), ("q2", "d3"), ("q3", "d4")]  # q3 has no negatives at all


def row(tier, query, positive, negative, score, rank=None, lexical=0.0, similarity=0.3, generator=None):
    return {
        "query_id": query,
        "positive_id": positive,
        "negative_id": negative,
        "anchor": f"anchor {query}",
        "positive": TEXT[positive],
        "negative": TEXT[negative],
        "tier": tier,
        "rank": rank,
        "score_positive": SCORE_POSITIVE[positive],
        "score_negative": score,
        "similarity_to_positive": similarity,
        "generator": generator or {"random": "uniform", "contextual": "negation"}.get(tier, "faiss:Flat"),
        "edit": "x -> y" if tier == "contextual" else None,
        "negative_text_hash": text_hash(TEXT[negative]),
        "lexical_overlap": lexical,
    }


def fixture_rows() -> list[dict]:
    return [
        row("hard", "q1", "d1", "n1", 0.55, 1, 0.1),
        row("hard", "q1", "d1", "n2", 0.50, 3, 0.2),
        row("hard", "q1", "d2", "n1", 0.55, 1, 0.3),
        row("hard", "q1", "d2", "n2", 0.50, 3, 0.4),
        row("hard", "q2", "d3", "n1", 0.45, 2, 0.5),
        row("hard", "q2", "d3", "n6", 0.52, 1, 0.6),  # above its positive
        row("semi_hard", "q1", "d1", "n3", 0.40),
        row("semi_hard", "q1", "d2", "n3", 0.40),
        row("random", "q1", "d1", "n4", 0.10),
        row("random", "q1", "d2", "n4", 0.10),
        row("random", "q2", "d3", "n5", 0.05),
        row("contextual", "q1", "d1", "ctx:d1:1", 0.70, similarity=0.90, generator="nlpaug:antonym"),
        row("contextual", "q1", "d2", "ctx:d2:1", 0.50, similarity=0.99),
    ]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("audit_run"))
    write_run(run_dir, fixture_rows(), MANIFEST, PAIRS, {k: v for k, v in TEXT.items() if k.startswith("d")})
    return audit_run(run_dir)


def tier_row(result, tier: str) -> dict:
    return result.summary.filter(pl.col("tier") == tier).to_dicts()[0]


def test_summary_has_every_tier_in_order(result):
    assert result.summary["tier"].to_list() == list(TIERS)
    assert result.summary["rows"].to_list() == [6, 2, 3, 2]
    assert result.violations.height == 0


def test_hard_coverage_counts_judged_pairs(result):
    hard = tier_row(result, "hard")
    assert (hard["k"], hard["queries_total"], hard["pairs_total"]) == (2, 3, 4)
    counts = ("queries_covered", "pairs_covered", "queries_full_k", "pairs_full_k")
    assert tuple(hard[c] for c in counts) == (2, 3, 2, 3)
    assert hard["share_pairs_full_k"] == pytest.approx(0.75)
    assert hard["share_queries_full_k"] == pytest.approx(2 / 3)


def test_other_tiers_coverage(result):
    assert tier_row(result, "semi_hard")["pairs_full_k"] == 2 and tier_row(result, "semi_hard")["queries_full_k"] == 1
    assert tier_row(result, "random")["share_pairs_full_k"] == pytest.approx(0.75)
    assert tier_row(result, "contextual")["share_queries_covered"] == pytest.approx(1 / 3)


def test_hard_score_and_margin_quantiles(result):
    hard = tier_row(result, "hard")
    # scores sorted: .45 .50 .50 .52 .55 .55 ; margins sorted: -.02 .05 .05 .10 .25 .30
    expected = {
        "score_negative_min": 0.45,
        "score_negative_p05": 0.4625,
        "score_negative_p25": 0.50,
        "score_negative_p50": 0.51,
        "score_negative_p75": 0.5425,
        "score_negative_p95": 0.55,
        "score_negative_max": 0.55,
        "score_negative_mean": 3.07 / 6,
        "margin_min": -0.02,
        "margin_p25": 0.05,
        "margin_p50": 0.075,
        "margin_p75": 0.2125,
        "margin_max": 0.30,
        "margin_mean": 0.73 / 6,
    }
    assert {k: hard[k] for k in expected} == pytest.approx(expected, abs=1e-6)


def test_diversity_per_tier(result):
    hard, rand = tier_row(result, "hard"), tier_row(result, "random")
    assert (hard["distinct_negatives"], hard["negatives_reused"], hard["max_queries_per_negative"]) == (3, 1, 2)
    assert hard["lexical_overlap_mean"] == pytest.approx(0.35, abs=1e-6)
    assert (rand["distinct_negatives"], rand["distinct_texts"]) == (2, 2)
    assert rand["negative_chars_mean"] == pytest.approx(83 / 3)  # 27 + 27 + 29


def test_reuse_and_same_text_under_ids(result):
    top = result.tables["top_reused"]
    assert top["negative_id"].to_list()[:3] == ["n1", "n2", "n3"]  # n1 by 2 queries, then ties by id
    assert top.row(0, named=True) == {"negative_id": "n1", "queries": 2, "rows": 3, "tiers": "hard"}
    same = result.tables["same_text"]
    assert same.to_dicts() == [
        {"negative_text_hash": text_hash(TEXT["n2"]), "ids": 2, "example_ids": ["n2", "n5"], "rows": 3}
    ]


def test_suspects_list_a_negative_above_its_positive(result):
    assert result.suspects.select("reason", "query_id", "negative_id").rows() == [("at_or_above_positive", "q2", "n6")]
    assert result.suspects["margin"][0] == pytest.approx(-0.02, abs=1e-6)


def test_contextual_section(result):
    kinds = result.tables["contextual_kinds"]
    assert kinds.select("generator", "rows", "in_band").rows() == [("negation", 1, 1), ("nlpaug:antonym", 1, 1)]
    assert kinds["similarity_max"].to_list() == pytest.approx([0.99, 0.90], abs=1e-6)
    assert result.tables["contextual_examples"]["negative_id"].to_list() == ["ctx:d2:1", "ctx:d1:1"]


def test_selection_statistics_from_the_manifest(result):
    selection = result.report["selection"]
    assert selection["candidates_seen"] == 100
    assert selection["dropped"] == {
        "judged_positive": {"rows": 4, "share_of_candidates": 0.04},
        "near_copy": {"rows": 1, "share_of_candidates": 0.01},
    }
    assert selection["deeper_search_histogram"] == {"0": 2, "1": 1}
    assert selection["other"] == {"rows_hard": 6}
