"""PNG plots of an audit: score and margin histograms per tier, coverage bars.

Histogram counts are computed by Polars on the lazy scan (no column is pulled into Python); matplotlib draws
them through its object API (Figure + Agg canvas), so no pyplot global state and no display is needed.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from schemas.negatives import TIERS

BINS = 40
_COLOURS = {"hard": "#c0392b", "semi_hard": "#e67e22", "random": "#2980b9", "contextual": "#27ae60"}


def histogram_counts(
    negatives: pl.LazyFrame, value: pl.Expr, low: float, high: float, bins: int = BINS
) -> pl.LazyFrame:
    """tier, bin (0..bins-1 over [low, high]), count — values outside the range go to the edge bins."""
    width = (high - low) / bins if high > low else 1.0
    index = ((value.cast(pl.Float64) - low) / width).floor().clip(0, bins - 1).cast(pl.Int32)
    return (
        negatives.select("tier", index.alias("bin"))
        .drop_nulls("bin")
        .group_by("tier", "bin")
        .agg(pl.len().alias("count"))
    )


def _range(summary: pl.DataFrame, prefix: str) -> tuple[float, float]:
    low, high = summary[f"{prefix}_min"].min(), summary[f"{prefix}_max"].max()
    if low is None or high is None:
        return 0.0, 1.0
    return (float(low), float(high) + 1e-9) if high > low else (float(low) - 0.5, float(low) + 0.5)


def _dense(counts: pl.DataFrame, tier: str, bins: int) -> np.ndarray:
    dense = np.zeros(bins, dtype=np.int64)  # [bins]
    rows = counts.filter(pl.col("tier") == tier)
    dense[rows["bin"].to_numpy()] = rows["count"].to_numpy()
    return dense


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def histogram_png(counts: pl.DataFrame, low: float, high: float, title: str, xlabel: str, bins: int = BINS) -> bytes:
    """A 2x2 grid of per-tier histograms (one panel per tier in TIERS order), as PNG bytes."""
    edges = np.linspace(low, high, bins + 1)  # [bins + 1]
    fig = Figure(figsize=(10, 7))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.9, hspace=0.4, wspace=0.25)
    fig.suptitle(title)
    for axis, tier in zip(fig.subplots(2, 2).ravel(), TIERS):
        dense = _dense(counts, tier, bins)
        axis.stairs(dense, edges, fill=True, color=_COLOURS[tier])
        axis.set_title(f"{tier} ({int(dense.sum()):,} rows)")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("rows")
        axis.set_xlim(low, high)
        if low < 0 < high and "margin" in xlabel:
            axis.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    return _png(fig)


def coverage_png(summary: pl.DataFrame) -> bytes:
    """Grouped bars per tier: share of queries covered, of queries with full K, of pairs with full K."""
    series = (
        ("share_queries_covered", "queries with >= 1 negative"),
        ("share_queries_full_k", "queries with full K"),
        ("share_pairs_full_k", "pairs with full K"),
    )
    positions = np.arange(len(TIERS))  # [tiers]
    width = 0.26
    fig = Figure(figsize=(9, 4.5))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.9)
    axis = fig.subplots()
    for offset, (column, label) in enumerate(series):
        values = np.array([v if v is not None else 0.0 for v in summary[column].to_list()], dtype=float)
        bars = axis.bar(positions + (offset - 1) * width, values, width, label=label)
        axis.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7)
    ks = summary["k"].to_list()
    axis.set_xticks(positions, [f"{t}\nK={k if k is not None else '?'}" for t, k in zip(TIERS, ks)])
    axis.set_ylim(0, 1.12)
    axis.set_ylabel("share")
    axis.set_title("Coverage of the judged pairs per tier")
    axis.legend(loc="upper right", fontsize=8)
    return _png(fig)


def render_plots(negatives: pl.LazyFrame, summary: pl.DataFrame) -> dict[str, bytes]:
    """{"scores.png", "margins.png", "coverage.png"} -> PNG bytes; summary is audit.report's tier summary."""
    margin = pl.col("score_positive").cast(pl.Float64) - pl.col("score_negative").cast(pl.Float64)
    score_range, margin_range = _range(summary, "score_negative"), _range(summary, "margin")
    score_counts, margin_counts = pl.collect_all(
        [
            histogram_counts(negatives, pl.col("score_negative"), *score_range),
            histogram_counts(negatives, margin, *margin_range),
        ],
        engine="streaming",  # only tier and the two scores are read
    )
    return {
        "scores.png": histogram_png(score_counts, *score_range, "score_negative per tier", "cos(query, negative)"),
        "margins.png": histogram_png(
            margin_counts, *margin_range, "margin per tier", "margin = score_positive - score_negative"
        ),
        "coverage.png": coverage_png(summary),
    }
