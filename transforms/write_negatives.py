"""Tier-partitioned Parquet writer of the negatives dataset: negatives/tier=<tier>/part-SSSSS-of-NNNNN.parquet.

Every tier in schemas.negatives.TIERS gets at least one part file with the full NEGATIVES_SCHEMA (an empty
tier gets an empty part), so the hive-partitioned folder always has the same columns in every partition.
Beam's file sink writes temporary files and renames them on finalize, so a failed job leaves no half-written
part behind.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquetBatched

from schemas.layout import RunLayout
from schemas.negatives import NEGATIVES_SCHEMA, TIERS, rows_to_table

logger = logging.getLogger(__name__)

ROWS_PER_ROW_GROUP = 8192  # upper bound of rows per written batch (one Parquet row group each)


class UnknownTierError(ValueError):
    """A row names a tier outside schemas.negatives.TIERS."""


def tier_index(row: dict, num_partitions: int, tiers: tuple[str, ...] = TIERS) -> int:
    """beam.Partition function: the position of the row's tier in `tiers`."""
    tier = row.get("tier")
    if tier not in tiers:
        raise UnknownTierError(f"row of query {row.get('query_id')!r} has tier {tier!r}; allowed: {', '.join(tiers)}")
    return tiers.index(tier)


def part_prefix(out: RunLayout, tier: str) -> str:
    return FileSystems.join(out.tier_dir(tier), "part")


class WriteNegatives(beam.PTransform):
    """PCollection of row dicts (NEGATIVES_SCHEMA) -> one Parquet folder per tier; returns the written paths."""

    def __init__(self, out: RunLayout, tiers: tuple[str, ...] = TIERS, rows_per_group: int = ROWS_PER_ROW_GROUP):
        super().__init__()
        self.out = out
        self.tiers = tuple(tiers)
        self.rows_per_group = rows_per_group

    def expand(self, rows):
        per_tier = rows | "SplitByTier" >> beam.Partition(tier_index, len(self.tiers), self.tiers)
        written = []
        for tier, tier_rows in zip(self.tiers, per_tier):
            paths = (
                tier_rows
                | f"Batch[{tier}]" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.rows_per_group)
                | f"ToArrow[{tier}]" >> beam.Map(rows_to_table)
                | f"WriteParquet[{tier}]"
                >> WriteToParquetBatched(
                    part_prefix(self.out, tier), schema=NEGATIVES_SCHEMA, file_name_suffix=".parquet"
                )
            )
            written.append(paths)
        return written | "WrittenPaths" >> beam.Flatten()
