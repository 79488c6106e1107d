"""The contextual tier on its own: kinds (generator), similarity_to_positive against the band, examples."""

from __future__ import annotations

import polars as pl

from schemas.contracts import TOLERANCE, rounded

EXAMPLE_CHARS = 160  # characters of the negative shown per example


def contextual_rows(negatives: pl.LazyFrame) -> pl.LazyFrame:
    return negatives.filter(pl.col("tier") == "contextual")


def contextual_by_generator(negatives: pl.LazyFrame, band: tuple[float, float]) -> pl.LazyFrame:
    """Per generator: rows, pairs, similarity_{min,p50,max,mean}, in_band (rows inside band, 1e-6 tolerance),
    score_negative_mean, margin_mean (score_positive - score_negative), lexical_overlap_mean; by generator."""
    low, high = band
    similarity = rounded("similarity_to_positive")
    inside = (similarity >= low - TOLERANCE) & (similarity <= high + TOLERANCE)
    margin = pl.col("score_positive").cast(pl.Float64) - pl.col("score_negative").cast(pl.Float64)
    return (
        contextual_rows(negatives)
        .group_by("generator")
        .agg(
            pl.len().alias("rows"),
            pl.struct("query_id", "positive_id").n_unique().alias("pairs"),
            similarity.min().alias("similarity_min"),
            similarity.quantile(0.5, "linear").alias("similarity_p50"),
            similarity.max().alias("similarity_max"),
            similarity.mean().alias("similarity_mean"),
            inside.fill_null(False).sum().alias("in_band"),
            pl.col("score_negative").cast(pl.Float64).mean().alias("score_negative_mean"),
            margin.mean().alias("margin_mean"),
            pl.col("lexical_overlap").cast(pl.Float64).mean().alias("lexical_overlap_mean"),
        )
        .sort("generator")
    )


def contextual_examples(negatives: pl.LazyFrame, per_generator: int = 2, engine: str = "streaming") -> pl.DataFrame:
    """The first per_generator rows of each generator by (query_id, positive_id, negative_id): ids, generator,
    edit, similarity_to_positive and the first EXAMPLE_CHARS characters of the negative.

    Two passes: the keys are chosen from the id columns, then only their texts are read (reading every
    contextual text to keep a handful would dominate the audit on large runs).
    """
    keys = ["generator", "query_id", "positive_id", "negative_id"]
    chosen = (
        contextual_rows(negatives)
        .select(keys)
        .sort(keys)
        .group_by("generator", maintain_order=True)
        .head(per_generator)
        .collect(engine=engine)
    )
    return (
        contextual_rows(negatives)
        .filter(pl.col("negative_id").is_in(chosen["negative_id"].unique().to_list()))
        .join(chosen.lazy(), on=keys, how="semi")
        .select(
            *keys,
            "edit",
            pl.col("similarity_to_positive").cast(pl.Float64).round(4),
            pl.col("negative").str.slice(0, EXAMPLE_CHARS).alias("negative_start"),
        )
        .sort(keys)
        .collect(engine=engine)
    )
