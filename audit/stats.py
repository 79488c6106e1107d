"""Per-tier statistics of a negatives dataset: rows, coverage against K, score and margin quantiles.

Inputs are lazy scans (audit.load); outputs are LazyFrames with one row per tier in schemas.negatives.TIERS
order (empty tiers included, with rows = 0).
margin = score_positive - score_negative of the row (cosine units); scores are read as float64.
"""

from __future__ import annotations

import polars as pl

from schemas.negatives import TIERS

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
INTERPOLATION = "linear"  # numpy's default, so hand-computed values match


def quantile_label(q: float) -> str:
    return f"p{round(q * 100):02d}"


def describe(expr: pl.Expr, prefix: str) -> list[pl.Expr]:
    """min, p05..p95, max, mean of expr as `<prefix>_<stat>` aggregations (float64)."""
    value = expr.cast(pl.Float64)
    stats = [value.min().alias(f"{prefix}_min")]
    stats += [value.quantile(q, INTERPOLATION).alias(f"{prefix}_{quantile_label(q)}") for q in QUANTILES]
    stats += [value.max().alias(f"{prefix}_max"), value.mean().alias(f"{prefix}_mean")]
    return stats


def tier_frame() -> pl.LazyFrame:
    """One row per tier, in TIERS order (column tier_order keeps it through joins)."""
    return pl.LazyFrame({"tier": list(TIERS), "tier_order": list(range(len(TIERS)))})


def per_tier(stats: pl.LazyFrame, fill_zero: tuple[str, ...] = ()) -> pl.LazyFrame:
    """stats aligned on every tier (missing tiers: null, or 0 for fill_zero columns), in TIERS order."""
    aligned = tier_frame().join(stats, on="tier", how="left")
    if fill_zero:
        aligned = aligned.with_columns(pl.col(c).fill_null(0) for c in fill_zero)
    return aligned.sort("tier_order").drop("tier_order")


def score_statistics(negatives: pl.LazyFrame) -> pl.LazyFrame:
    """Per tier: rows, queries and pairs present, score_negative_* and margin_* (min, quantiles, max, mean)."""
    margin = pl.col("score_positive").cast(pl.Float64) - pl.col("score_negative").cast(pl.Float64)
    stats = negatives.group_by("tier").agg(
        pl.len().alias("rows"),
        *describe(pl.col("score_negative"), "score_negative"),
        *describe(margin, "margin"),
    )
    return per_tier(stats.with_columns(pl.col("rows").cast(pl.Int64)), fill_zero=("rows",))


def coverage(negatives: pl.LazyFrame, judged: pl.DataFrame, k_per_tier: dict[str, int]) -> pl.LazyFrame:
    """Per tier coverage of the judged pairs (audit: judged_positives()).

    Columns: k, queries_total, pairs_total, queries_covered (>= 1 row), pairs_covered, queries_full_k (every
    judged pair of the query has >= K rows), pairs_full_k, and the share_* of each over its total. With
    K = 0 (tier off) the full-K counts and shares are null.
    """
    pairs = judged.lazy().select("query_id", "positive_id").unique()
    counts = negatives.group_by("tier", "query_id", "positive_id").agg(pl.len().alias("n"))
    k = pl.LazyFrame({"tier": list(TIERS), "k": [int(k_per_tier[t]) for t in TIERS]})
    grid = (
        k.join(pairs, how="cross")
        .join(counts, on=["tier", "query_id", "positive_id"], how="left")
        .with_columns(pl.col("n").fill_null(0))
        .with_columns(
            (pl.col("n") > 0).alias("covered"),
            ((pl.col("k") > 0) & (pl.col("n") >= pl.col("k"))).alias("full"),
        )
    )
    per_query = grid.group_by("tier", "query_id").agg(pl.col("covered").any(), pl.col("full").all())
    pair_stats = grid.group_by("tier").agg(
        pl.first("k"),
        pl.len().alias("pairs_total"),
        pl.col("covered").sum().alias("pairs_covered"),
        pl.col("full").sum().alias("pairs_full_k"),
    )
    query_stats = per_query.group_by("tier").agg(
        pl.len().alias("queries_total"),
        pl.col("covered").sum().alias("queries_covered"),
        pl.col("full").sum().alias("queries_full_k"),
    )
    stats = pair_stats.join(query_stats, on="tier").select(
        "tier",
        "k",
        "queries_total",
        "pairs_total",
        "queries_covered",
        "pairs_covered",
        pl.when(pl.col("k") > 0).then(pl.col("queries_full_k")).alias("queries_full_k"),
        pl.when(pl.col("k") > 0).then(pl.col("pairs_full_k")).alias("pairs_full_k"),
    )
    stats = stats.with_columns(
        (pl.col(f"{unit}_{what}") / pl.col(f"{unit}_total")).alias(f"share_{unit}_{what}")
        for unit in ("queries", "pairs")
        for what in ("covered", "full_k")
    )
    return per_tier(stats)
