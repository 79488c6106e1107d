"""Diversity of the negatives: distinct negatives per tier, reuse across queries, one text under many ids,
lexical overlap and length.

Everything about ids comes from one per-negative table (per_negative(): one row per tier and negative_id),
collected once and small next to the rows. lexical_overlap is the column computed when the rows were
written (token-set Jaccard with the positive); lengths are characters of the negative text
(str.len_chars), never re-tokenised.
"""

from __future__ import annotations

import polars as pl

from audit.stats import per_tier
from schemas.negatives import MINED_TIERS


def per_negative(negatives: pl.LazyFrame) -> pl.LazyFrame:
    """tier, negative_id, negative_text_hash, queries (distinct queries using it in that tier), rows."""
    return negatives.group_by("tier", "negative_id").agg(
        pl.col("negative_text_hash").first(),
        pl.col("query_id").n_unique().alias("queries"),
        pl.len().alias("rows"),
    )


def diversity_by_tier(by_negative: pl.DataFrame) -> pl.DataFrame:
    """Per tier: distinct_negatives (ids), distinct_texts (hashes), negatives_reused (ids used by > 1 query),
    max_queries_per_negative; by_negative is per_negative() collected."""
    stats = (
        by_negative.lazy()
        .group_by("tier")
        .agg(
            pl.len().alias("distinct_negatives"),
            pl.col("negative_text_hash").n_unique().alias("distinct_texts"),
            (pl.col("queries") > 1).sum().alias("negatives_reused"),
            pl.col("queries").max().alias("max_queries_per_negative"),
        )
    )
    counts = ("distinct_negatives", "distinct_texts", "negatives_reused")
    return per_tier(stats.with_columns(pl.col(c).cast(pl.Int64) for c in counts), fill_zero=counts).collect()


def text_statistics_by_tier(negatives: pl.LazyFrame) -> pl.LazyFrame:
    """Per tier: lexical_overlap_{mean,p50,p95} and negative_chars_{mean,p50,p95}.

    The only statistic that reads the negative texts: lengths are taken in a projection first, so the
    streaming engine never holds the text column.
    """
    values = negatives.select(
        "tier",
        pl.col("lexical_overlap").cast(pl.Float64).alias("overlap"),
        pl.col("negative").str.len_chars().cast(pl.Float64).alias("chars"),
    )
    stats = values.group_by("tier").agg(
        *[
            expr
            for column, prefix in (("overlap", "lexical_overlap"), ("chars", "negative_chars"))
            for expr in (
                pl.col(column).mean().alias(f"{prefix}_mean"),
                pl.col(column).quantile(0.5, "linear").alias(f"{prefix}_p50"),
                pl.col(column).quantile(0.95, "linear").alias(f"{prefix}_p95"),
            )
        ]
    )
    return per_tier(stats)


def top_reused(by_negative: pl.DataFrame, limit: int = 10) -> pl.DataFrame:
    """Mined negatives used by the most queries: negative_id, queries, rows, tiers; ties by id.

    queries adds up the tiers; a negative in two tiers of one query is a contract violation of its own.
    """
    return (
        by_negative.filter(pl.col("tier").is_in(MINED_TIERS))
        .group_by("negative_id")
        .agg(pl.col("queries").sum(), pl.col("rows").sum(), pl.col("tier").sort().str.join(",").alias("tiers"))
        .sort(["queries", "negative_id"], descending=[True, False])
        .head(limit)
    )


def same_text_under_ids(by_negative: pl.DataFrame) -> pl.DataFrame:
    """Mined negative texts (by negative_text_hash) that appear under more than one negative_id:
    negative_text_hash, ids (count), example_ids (up to 5, sorted), rows; most ids first."""
    return (
        by_negative.filter(pl.col("tier").is_in(MINED_TIERS))
        .group_by("negative_text_hash")
        .agg(
            pl.col("negative_id").n_unique().alias("ids"),
            pl.col("negative_id").unique().sort().head(5).alias("example_ids"),
            pl.col("rows").sum(),
        )
        .filter(pl.col("ids") > 1)
        .sort(["ids", "negative_text_hash"], descending=[True, False])
    )
