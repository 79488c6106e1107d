"""`negforge export RUN_DIR --format triplet|n-tuple --output FILE.parquet [--tiers hard,semi_hard,...]`.

Reads RUN_DIR/negatives (hive-partitioned by tier) with Polars and writes what sentence-transformers'
trainer takes as is (it treats every column except label/score as an input, in order):
  triplet  anchor, positive, negative                      one row per (query, positive, negative)
  n-tuple  anchor, positive, negative_1 .. negative_n      one row per (query, positive); n = the largest number
           of negatives any pair has in the chosen tiers; pairs with fewer are dropped and counted on stderr.
Row order is deterministic: query_id, positive_id, then negatives by tier (in --tiers order), rank, score
(highest first) and negative_id.
"""

from __future__ import annotations

import argparse
import logging
import sys

import polars as pl
from apache_beam.io.filesystems import FileSystems

from schemas.layout import RunLayout
from schemas.negatives import TIERS
from storage.files import list_files, local_copies

logger = logging.getLogger(__name__)

FORMATS = ("triplet", "n-tuple")


class ExportError(ValueError):
    """RUN_DIR or the export flags cannot give a dataset."""


def parse_tiers(text: str) -> tuple[str, ...]:
    tiers = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in tiers if t not in TIERS]
    if not tiers or unknown:
        raise ExportError(f"--tiers {text!r}: unknown tier(s) {unknown}; allowed: {','.join(TIERS)}")
    return tiers


def read_negatives(run_dir: str, tiers: tuple[str, ...]) -> pl.DataFrame:
    """The chosen tiers' rows of RUN_DIR, sorted for export (tier in the given order)."""
    run = RunLayout(run_dir)
    parts = [p for p in list_files(run.negatives_dir) if p.endswith(".parquet")]
    if not parts:  # object stores have no folders: "found" means "some part is there"
        raise ExportError(f"{run.negatives_dir} not found: is {run_dir} a finished `negforge build` RUN_DIR?")
    # Polars cannot open gs:// through Beam's filesystems (nor its credentials): remote parts are copied locally
    frame = pl.scan_parquet(local_copies(parts, run.negatives_dir), hive_partitioning=True)
    order = {tier: i for i, tier in enumerate(tiers)}
    return (
        frame.with_columns(pl.col("tier").cast(pl.String))
        .filter(pl.col("tier").is_in(list(tiers)))
        .with_columns(pl.col("tier").replace_strict(order, return_dtype=pl.Int32).alias("_tier_order"))
        .sort(
            ["query_id", "positive_id", "_tier_order", "rank", "score_negative", "negative_id"],
            descending=[False, False, False, False, True, False],
            nulls_last=True,
        )
        .collect()
    )


def to_triplets(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select("anchor", "positive", "negative")


def to_n_tuples(rows: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """(anchor, positive, negative_1..negative_n) per pair, n, and the number of pairs dropped as short."""
    pairs = rows.group_by(["query_id", "positive_id"], maintain_order=True).agg(
        pl.col("anchor").first(), pl.col("positive").first(), pl.col("negative")
    )
    n = int(pairs["negative"].list.len().max() or 0)
    full = pairs.filter(pl.col("negative").list.len() == n)
    negatives = [pl.col("negative").list.get(i).alias(f"negative_{i + 1}") for i in range(n)]
    return full.select("anchor", "positive", *negatives), n, pairs.height - full.height


def write_parquet(frame: pl.DataFrame, path: str) -> None:
    """Write through FileSystems (local or gs://), as <path>.tmp renamed into place."""
    tmp = path + ".tmp"
    with FileSystems.create(tmp) as handle:
        frame.write_parquet(handle)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="negforge export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    parser.add_argument("--output", required=True, metavar="FILE.parquet")
    parser.add_argument("--tiers", default=",".join(TIERS), help=f"comma-separated, from {','.join(TIERS)}")
    return parser


def export(run_dir: str, fmt: str, output: str, tiers: tuple[str, ...]) -> dict:
    """Write the export; returns counts {rows, pairs_dropped, negatives_per_row}."""
    rows = read_negatives(run_dir, tiers)
    if fmt == "triplet":
        frame, n, dropped = to_triplets(rows), 1, 0
    else:
        frame, n, dropped = to_n_tuples(rows)
    write_parquet(frame, output)
    return {"rows": frame.height, "pairs_dropped": dropped, "negatives_per_row": n}


def main_export(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        counts = export(args.run_dir, args.fmt, args.output, parse_tiers(args.tiers))
    except ExportError as err:
        print(f"negforge export: error: {err}", file=sys.stderr)
        return 2
    if counts["pairs_dropped"]:
        print(
            f"negforge export: dropped {counts['pairs_dropped']} (query, positive) pair(s) with fewer than "
            f"{counts['negatives_per_row']} negatives in tiers {args.tiers}",
            file=sys.stderr,
        )
    print(f"negforge export: {counts['rows']} {args.fmt} rows -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main_export(sys.argv[1:]))
