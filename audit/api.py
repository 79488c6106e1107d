"""The audit of one run as data: every statistic as a Polars DataFrame, plus a JSON-able report dict.

    result = audit_run("runs/demo")            # AuditResult
    result.summary                             # one row per tier: coverage, scores, margins, diversity
    result.violations                          # contract violations (schemas.contracts), empty when clean
    result.report                              # what report.json holds

Lazy scans are collected query by query with the streaming engine (only the columns each one needs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import polars as pl

from audit.contextual import contextual_by_generator, contextual_examples
from audit.diversity import (
    diversity_by_tier,
    per_negative,
    same_text_under_ids,
    text_statistics_by_tier,
    top_reused,
)
from audit.load import AuditRun, load_run, tier_k
from audit.selection import selection_statistics
from audit.stats import coverage, score_statistics
from audit.suspects import false_negative_suspects, suspect_counts
from schemas.contracts import contract_violations, judged_positives, violation_counts

logger = logging.getLogger(__name__)

ENGINE = "streaming"  # Polars engine for every collect: bounded memory on millions of rows
REPORT_VERSION = 1
LISTED_ROWS = 200  # violations / suspects listed in report.json (all of them go to the CSV files)
COMPARED_METRICS = (
    "rows",
    "share_queries_covered",
    "share_queries_full_k",
    "share_pairs_full_k",
    "distinct_negatives",
    "negatives_reused",
    "score_negative_p50",
    "margin_p05",
    "margin_p50",
    "lexical_overlap_mean",
    "negative_chars_mean",
    "violations",
)


@dataclass
class AuditResult:
    run_dir: str
    summary: pl.DataFrame  # one row per tier (TIERS order)
    violations: pl.DataFrame  # schemas.contracts.VIOLATION_COLUMNS
    suspects: pl.DataFrame  # audit.suspects.SUSPECT_COLUMNS
    report: dict  # JSON-able
    negatives: pl.LazyFrame  # the run's lazy scan (for plots)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


def json_ready(rows: list[dict]) -> list[dict]:
    """to_dicts() output with NaN / inf turned into None (strict JSON)."""
    return [
        {key: (None if isinstance(value, float) and not math.isfinite(value) else value) for key, value in row.items()}
        for row in rows
    ]


def tier_summary(run: AuditRun, judged: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """(summary per tier, the other tables: top_reused, same_text, contextual_kinds, contextual_examples).

    Each query is collected on its own with the streaming engine: a shared collect would cache the union of
    their columns (texts included) in memory.
    """
    band = tuple(run.config["contextual"]["similarity_band"])
    queries = {
        "coverage": coverage(run.negatives, judged, tier_k(run.config)),
        "scores": score_statistics(run.negatives),
        "texts": text_statistics_by_tier(run.negatives),
        "by_negative": per_negative(run.negatives),
        "contextual_kinds": contextual_by_generator(run.negatives, band),
    }
    tables = {name: query.collect(engine=ENGINE) for name, query in queries.items()}
    by_negative = tables.pop("by_negative")
    tables["diversity"] = diversity_by_tier(by_negative)
    tables["top_reused"] = top_reused(by_negative)
    tables["same_text"] = same_text_under_ids(by_negative)
    tables["contextual_examples"] = contextual_examples(run.negatives, engine=ENGINE)
    summary = tables.pop("coverage")
    for name in ("scores", "diversity", "texts"):
        summary = summary.join(tables.pop(name), on="tier", maintain_order="left")
    return summary, tables


def _with_violation_counts(summary: pl.DataFrame, violations: pl.DataFrame) -> pl.DataFrame:
    per_tier = violations.group_by("tier").agg(pl.len().cast(pl.Int64).alias("violations"))
    return summary.join(per_tier, on="tier", how="left", maintain_order="left").with_columns(
        pl.col("violations").fill_null(0)
    )


def audit_summary(run: AuditRun) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, pl.DataFrame]]:
    """(summary with a violations column, violations, judged positives, other tables) of an opened run."""
    judged = judged_positives(run.negatives, run.pairs, run.docs)
    summary, tables = tier_summary(run, judged)
    violations = contract_violations(run.negatives, run.config, judged)
    return _with_violation_counts(summary, violations), violations, judged, tables


def compare_summaries(this: pl.DataFrame, other: pl.DataFrame) -> list[dict]:
    """Side by side per (tier, metric): this, other, delta = this - other (None where either is missing)."""
    rows = []
    other_by_tier = {row["tier"]: row for row in other.to_dicts()}
    for row in this.to_dicts():
        theirs = other_by_tier.get(row["tier"], {})
        for metric in COMPARED_METRICS:
            mine, their = row.get(metric), theirs.get(metric)
            delta = mine - their if isinstance(mine, (int, float)) and isinstance(their, (int, float)) else None
            rows.append({"tier": row["tier"], "metric": metric, "this": mine, "other": their, "delta": delta})
    return json_ready(rows)


def _report(run: AuditRun, summary, violations, suspects, tables) -> dict:
    same_text = tables["same_text"]
    return {
        "report_version": REPORT_VERSION,
        "run_dir": run.run_dir,
        "manifest": {"found": bool(run.manifest), "schema_version": run.manifest.get("schema_version")},
        "config": {"mining": dict(run.config["mining"]), "contextual": dict(run.config["contextual"])},
        "tiers": json_ready(summary.to_dicts()),
        "violations": {
            "total": violations.height,
            "counts": violation_counts(violations).to_dicts(),
            "rows": json_ready(violations.head(LISTED_ROWS).to_dicts()),
        },
        "suspects": {
            "total": suspects.height,
            "counts": suspect_counts(suspects).to_dicts(),
            "rows": json_ready(suspects.head(LISTED_ROWS).to_dicts()),
        },
        "diversity": {
            "top_reused": tables["top_reused"].to_dicts(),
            "same_text_under_ids": {"texts": same_text.height, "examples": same_text.head(10).to_dicts()},
        },
        "contextual": {
            "similarity_band": list(run.config["contextual"]["similarity_band"]),
            "kinds_configured": list(run.config["contextual"]["kinds"]),
            "by_generator": json_ready(tables["contextual_kinds"].to_dicts()),
            "examples": json_ready(tables["contextual_examples"].to_dicts()),
        },
        "selection": selection_statistics(run.manifest),
        "compare": None,
    }


def audit_run(run_dir: str, compare_dir: str | None = None) -> AuditResult:
    """Audit RUN_DIR (and, with compare_dir, put another run's tier statistics side by side)."""
    run = load_run(run_dir)
    summary, violations, judged, tables = audit_summary(run)
    suspects = false_negative_suspects(run.negatives, judged, run.config)
    report = _report(run, summary, violations, suspects, tables)
    if compare_dir is not None:
        other_summary = audit_summary(load_run(compare_dir))[0]
        report["compare"] = {"other_run_dir": compare_dir, "tiers": compare_summaries(summary, other_summary)}
    logger.info("audited %s: %d rows, %d violations", run_dir, summary["rows"].sum(), violations.height)
    return AuditResult(run_dir, summary, violations, suspects, report, run.negatives, tables | {"judged": judged})
