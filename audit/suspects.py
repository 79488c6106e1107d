"""False-negative suspects among the mined tiers (hard, semi_hard, random).

A suspect is a mined negative that may in fact be relevant (RocketQA found ~70% of top-retrieved
"negatives" relevant on MS MARCO): it is a judged positive of its query, a text copy of one (same
schemas.negatives.text_hash), it scores at or above its own positive, or it lies above a configured guard
(relative / absolute margin, max_score, taken against the query's lowest positive score). Unlike the
contract, a suspect list is a reading aid: scoring above the positive is allowed when no margin is set.
"""

from __future__ import annotations

import polars as pl

from schemas.contracts import (
    COPIES_JUDGED,
    IS_JUDGED,
    annotate_judged,
    breaches,
    margin_breaches,
    resolved_section,
    rounded,
)
from schemas.negatives import MINED_TIERS, ROW_LOOKUP_COLUMNS

SUSPECT_COLUMNS = ("reason", "tier", *ROW_LOOKUP_COLUMNS, "margin")


def suspect_rules(config: dict) -> dict[str, pl.Expr]:
    """reason -> boolean expression over a frame annotated with annotate_judged()."""
    mining = resolved_section(config, "mining")
    rules = {
        "judged_positive": pl.col(IS_JUDGED),
        "text_copy_of_positive": pl.col(COPIES_JUDGED),
        "at_or_above_positive": ~breaches(rounded("score_positive"), rounded("score_negative")),
    }
    rules.update({f"above_{guard}": rule for guard, rule in margin_breaches(mining).items()})
    return rules


def false_negative_suspects(negatives: pl.LazyFrame, judged: pl.DataFrame, config: dict) -> pl.DataFrame:
    """Every (mined row, reason) that makes it a suspect; columns SUSPECT_COLUMNS, sorted by reason then
    ascending margin (the most suspicious first)."""
    rules = suspect_rules(config)
    mined = annotate_judged(negatives.filter(pl.col("tier").is_in(MINED_TIERS)), judged)
    keep = [c for c in SUSPECT_COLUMNS if c != "reason"]
    margin = (rounded("score_positive") - rounded("score_negative")).alias("margin")
    wide = (
        mined.select(*[c for c in keep if c != "margin"], margin, **{f"_{name}": rule for name, rule in rules.items()})
        .filter(pl.any_horizontal(*[pl.col(f"_{name}").fill_null(False) for name in rules]))
        .collect()
    )
    long = wide.unpivot(on=[f"_{name}" for name in rules], index=keep, variable_name="reason", value_name="hit")
    return (
        long.filter(pl.col("hit").fill_null(False))
        .with_columns(pl.col("reason").str.strip_prefix("_"))
        .select(SUSPECT_COLUMNS)
        .sort(["reason", "margin", "query_id", "positive_id", "negative_id"])
    )


def suspect_counts(suspects: pl.DataFrame) -> pl.DataFrame:
    """reason, tier, rows, queries — one line per (reason, tier)."""
    return (
        suspects.group_by("reason", "tier")
        .agg(pl.len().alias("rows"), pl.col("query_id").n_unique().alias("queries"))
        .sort("reason", "tier")
    )
