"""The per-tier contract of the negatives dataset (docs/CONTRACT.md, Mining semantics), as Polars expressions.

Used by `negforge audit` and by the tests of every stage that writes negatives. Each contract is a dict
name -> violation expression (True where a row breaks that rule), built from the resolved config dict
(`BuildConfig.to_dict()`, as recorded in RUN_DIR/manifest.json).

Some rules need facts about the query rather than the row (is the negative one of the query's judged
positives? is its text a copy of one?). `annotate_judged()` adds them as the helper columns IS_JUDGED and
COPIES_JUDGED with two joins; `contract_violations()` does this for you.

Not checkable row by row, hence not here: the hard window's upper end (rank is the raw pre-guard position,
so only rank > range_min follows from the window) and "uniform over the corpus" for random.

Scores are float32: comparisons use scores rounded to the 1e-6 grid (as the miner decides) and accept a
breach of up to TOLERANCE = 1e-6, so `x < T` and `x <= T` read the same to the audit.
"""

from __future__ import annotations

from dataclasses import asdict

import polars as pl

from schemas.build_config import ContextualConfig, MiningConfig
from schemas.negatives import ROW_LOOKUP_COLUMNS, TIERS, text_hash

SCORE_DECIMALS = 6
TOLERANCE = 1e-6
_FLOAT_NOISE = 1e-9  # float64 noise of differences on the 1e-6 grid; never decides a breach

IS_JUDGED = "_negative_is_judged_positive"
COPIES_JUDGED = "_negative_copies_judged_positive"

VIOLATION_COLUMNS = ("tier", "violation", *ROW_LOOKUP_COLUMNS, "similarity_to_positive")


def resolved_section(config: dict | None, section: str) -> dict:
    """config[section] over the dataclass defaults; unknown keys are ignored, lists become tuples."""
    defaults = {"mining": MiningConfig, "contextual": ContextualConfig}[section]
    merged = asdict(defaults())
    given = (config or {}).get(section) or {}
    for key, value in given.items():
        if key in merged:
            merged[key] = tuple(value) if isinstance(value, list) else value
    if section == "mining" and given and "margin_reference" not in given:
        merged["margin_reference"] = "lowest"  # recorded before --margin-reference existed (issue 15)
    return merged


def rounded(column: str) -> pl.Expr:
    """A float32 score column as float64 on the 1e-6 grid."""
    return pl.col(column).cast(pl.Float64).round(SCORE_DECIMALS)


def breaches(value: pl.Expr, bound: pl.Expr | float) -> pl.Expr:
    """True where value lies above bound by more than TOLERANCE."""
    return (value - bound) > TOLERANCE + _FLOAT_NOISE


def query_min_positive() -> pl.Expr:
    """The query's lowest judged-positive score (margins and band are taken against it under 'lowest')."""
    return rounded("score_positive").min().over("query_id")


def margin_reference(mining: dict) -> pl.Expr:
    """The score a row's margins and semi-hard band are taken against (MiningConfig.margin_reference):
    the query's lowest positive ('lowest', sentence-transformers' rule) or the row's own positive ('pair')."""
    if mining.get("margin_reference", "lowest") == "pair":
        return rounded("score_positive")
    return query_min_positive()


def _per_pair_count() -> pl.Expr:
    return pl.len().over(["tier", "query_id", "positive_id"])


def margin_breaches(mining: dict) -> dict[str, pl.Expr]:
    """relative_margin / absolute_margin / max_score -> rows above that guard (only the guards that are set)."""
    score, floor = rounded("score_negative"), margin_reference(mining)
    rules: dict[str, pl.Expr] = {}
    if mining["relative_margin"] is not None:
        rules["relative_margin"] = breaches(score, floor - floor.abs() * mining["relative_margin"])
    if mining["absolute_margin"] is not None:
        rules["absolute_margin"] = breaches(score + mining["absolute_margin"], floor)
    if mining["max_score"] is not None:
        rules["max_score"] = breaches(score, mining["max_score"])
    return rules


def _guard_contract(mining: dict) -> dict[str, pl.Expr]:
    """Rules every mined tier obeys: guards and margins (docs/CONTRACT.md table, columns 2-4)."""
    rules: dict[str, pl.Expr] = {"judged_positive": pl.col(IS_JUDGED)}
    if mining["text_copy_guard"]:
        rules["text_copy_of_positive"] = pl.col(COPIES_JUDGED)
    if mining["near_copy_guard"]:
        similarity = rounded("similarity_to_positive")
        rules["near_copy"] = similarity.is_not_null() & breaches(similarity, mining["near_copy_threshold"])
    rules.update(margin_breaches(mining))
    return rules


def _contextual_contract(contextual: dict) -> dict[str, pl.Expr]:
    low, high = contextual["similarity_band"]
    similarity = rounded("similarity_to_positive")
    return {
        "text_copy_of_positive": pl.col(COPIES_JUDGED),
        "similarity_missing": similarity.is_null(),
        "similarity_below_band": breaches(pl.lit(low, pl.Float64), similarity),
        "similarity_above_band": breaches(similarity, high),
        "rank_present": pl.col("rank").is_not_null(),
        "more_than_k": _per_pair_count() > contextual["per_pair"],
    }


def tier_contract(tier: str, config: dict | None) -> dict[str, pl.Expr]:
    """Contract of one tier: violation name -> boolean expression (True = the row breaks the rule).

    config is the resolved BuildConfig dict ({"mining": {...}, "contextual": {...}, ...}); missing keys take
    the dataclass defaults. The expressions need the IS_JUDGED / COPIES_JUDGED columns (annotate_judged) and
    must be evaluated on a frame holding every row of each query they judge (windows over query_id).
    """
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; allowed: {', '.join(TIERS)}")
    if tier == "contextual":
        return _contextual_contract(resolved_section(config, "contextual"))
    mining = resolved_section(config, "mining")
    rules = _guard_contract(mining)
    rules["more_than_k"] = _per_pair_count() > mining[tier]
    score, floor = rounded("score_negative"), margin_reference(mining)
    if tier == "hard":
        rules["rank_missing"] = pl.col("rank").is_null()
        # rank is the raw (pre-guard) position, 1-based; the window counts survivors, so rank > range_min.
        rules["rank_before_window"] = pl.col("rank") < mining["range_min"] + 1
    elif tier == "semi_hard":
        low, high = mining["semi_hard_band"]
        rules["below_semi_hard_band"] = breaches(floor - high, score)
        rules["above_semi_hard_band"] = breaches(score, floor - low)
    else:
        rules["rank_present"] = pl.col("rank").is_not_null()
    return rules


def judged_positives(
    negatives: pl.LazyFrame, pairs: pl.LazyFrame | None = None, docs: pl.LazyFrame | None = None
) -> pl.DataFrame:
    """Judged positives per query: query_id, positive_id, positive_text_hash (small, eager).

    The union of the input pairs (RUN_DIR/inputs/pairs) and the (query, positive) pairs of the negatives.
    Hashes come from inputs/docs text_hash when given; positives it lacks are hashed from the `positive`
    text of the negatives with schemas.negatives.text_hash (only those are read).
    """
    ids = negatives.select("query_id", "positive_id")
    if pairs is not None:
        ids = pl.concat([ids, pairs.select("query_id", "positive_id")])
    judged = ids.unique().collect()
    hashes = pl.DataFrame(schema={"positive_id": pl.String, "positive_text_hash": pl.String})
    if docs is not None:
        wanted = judged.select("positive_id").unique().lazy()
        hashes = (
            docs.select(pl.col("doc_id").alias("positive_id"), pl.col("text_hash").alias("positive_text_hash"))
            .join(wanted, on="positive_id", how="semi")
            .unique(subset="positive_id", keep="first")
            .collect()
        )
    missing = judged.select("positive_id").unique().join(hashes, on="positive_id", how="anti")
    if missing.height:
        texts = (
            negatives.join(missing.lazy(), on="positive_id", how="semi")
            .group_by("positive_id")
            .agg(pl.col("positive").first())
            .collect()
        )
        computed = texts.select(
            "positive_id",
            pl.col("positive").map_elements(text_hash, return_dtype=pl.String).alias("positive_text_hash"),
        )
        hashes = pl.concat([hashes, computed])
    return judged.join(hashes, on="positive_id", how="left").sort("query_id", "positive_id")


def annotate_judged(negatives: pl.LazyFrame, judged: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Add IS_JUDGED (negative_id is a judged positive of the query) and COPIES_JUDGED (its text hash
    equals a judged positive's of the query)."""
    judged = judged.lazy()
    ids = (
        judged.select("query_id", pl.col("positive_id").alias("negative_id"))
        .unique()
        .with_columns(pl.lit(True).alias(IS_JUDGED))
    )
    hashes = (
        judged.filter(pl.col("positive_text_hash").is_not_null())
        .select("query_id", pl.col("positive_text_hash").alias("negative_text_hash"))
        .unique()
        .with_columns(pl.lit(True).alias(COPIES_JUDGED))
    )
    return (
        negatives.join(ids, on=["query_id", "negative_id"], how="left")
        .join(hashes, on=["query_id", "negative_text_hash"], how="left")
        .with_columns(pl.col(IS_JUDGED).fill_null(False), pl.col(COPIES_JUDGED).fill_null(False))
    )


def contract_violations(
    negatives: pl.LazyFrame, config: dict | None, judged: pl.DataFrame | pl.LazyFrame | None = None
) -> pl.DataFrame:
    """Every (row, broken rule), columns VIOLATION_COLUMNS, sorted; empty when the dataset obeys the contract.

    negatives: every tier of a run (tier as string or categorical). judged: see judged_positives(); when None
    it is derived from the negatives themselves (then positives absent from the negatives are not known).
    A negative listed twice for one (query, positive), in one tier or across tiers, is a repeated_negative.
    """
    if judged is None:
        judged = judged_positives(negatives)
    frame = annotate_judged(negatives.with_columns(pl.col("tier").cast(pl.String)), judged)
    flags = {}
    for tier in TIERS:
        for name, rule in tier_contract(tier, config).items():
            flags[f"{tier}/{name}"] = ((pl.col("tier") == tier) & rule).fill_null(False)
    repeated = pl.len().over(["query_id", "positive_id", "negative_id"]) > 1
    for tier in TIERS:
        flags[f"{tier}/repeated_negative"] = (pl.col("tier") == tier) & repeated
    keep = [c for c in VIOLATION_COLUMNS if c != "violation"]
    wide = frame.select(*keep, **flags).filter(pl.any_horizontal(*[pl.col(name) for name in flags])).collect()
    long = wide.unpivot(on=list(flags), index=keep, variable_name="violation", value_name="broken")
    return (
        long.filter(pl.col("broken"))
        .with_columns(pl.col("violation").str.split("/").list.get(1))
        .select(VIOLATION_COLUMNS)
        .sort("tier", "violation", "query_id", "positive_id", "negative_id")
    )


def violation_counts(violations: pl.DataFrame) -> pl.DataFrame:
    """tier, violation, rows — one line per broken rule."""
    return violations.group_by("tier", "violation").agg(pl.len().alias("rows")).sort("tier", "violation")


__all__ = [
    "COPIES_JUDGED",
    "IS_JUDGED",
    "TOLERANCE",
    "VIOLATION_COLUMNS",
    "annotate_judged",
    "breaches",
    "contract_violations",
    "judged_positives",
    "query_min_positive",
    "resolved_section",
    "rounded",
    "tier_contract",
    "violation_counts",
]
