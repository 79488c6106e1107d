"""Tier-partitioned Parquet writer of the negatives dataset: negatives/tier=<tier>/part-SSSSS-of-NNNNN.parquet.

Every tier in schemas.negatives.TIERS gets at least one part file with the full NEGATIVES_SCHEMA (an empty
tier gets an empty part), so the hive-partitioned folder always has the same columns in every partition.
Beam's file sink writes temporary files and renames them on finalize, so a failed job leaves no half-written
part behind.
"""

from __future__ import annotations

import itertools
import logging

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.transforms.window import GlobalWindows

from schemas.layout import RunLayout
from schemas.negatives import NEGATIVES_SCHEMA, TIERS, RowColumns, columns_to_table, rows_to_table

logger = logging.getLogger(__name__)

ROWS_PER_ROW_GROUP = 8192  # upper bound of rows per written batch (one Parquet row group each; a larger batch
# alone is written whole)


class UnknownTierError(ValueError):
    """A row names a tier outside schemas.negatives.TIERS."""


def as_batch(row: dict) -> tuple[str, list[dict]]:
    """One row dict as a row batch (what WriteNegatives takes)."""
    return row.get("tier"), [row]


def tier_index(batch: tuple[str, RowColumns | list[dict]], num_partitions: int, tiers: tuple[str, ...] = TIERS) -> int:
    """beam.Partition function: the position of the batch's tier in `tiers`."""
    tier, rows = batch
    if tier not in tiers:
        query = None
        if len(rows):
            query = rows.columns["query_id"][0] if isinstance(rows, RowColumns) else rows[0].get("query_id")
        raise UnknownTierError(f"row of query {query!r} has tier {tier!r}; allowed: {', '.join(tiers)}")
    return tiers.index(tier)


class RowGroupsFn(beam.DoFn):
    """Row batches (RowColumns, or lists of row dicts) -> Arrow tables of up to `rows` rows (one Parquet row group
    each), batches kept whole; a bundle's last table is emitted at its end. Deterministic sizes (beam.BatchElements
    adapts its sizes to timings, and with an element size it may emit an empty batch first). Arrow is built once
    per table from the batches it holds (contextual rows arrive one dict per element)."""

    def __init__(self, rows: int):
        self.rows = rows

    def start_bundle(self):
        self._batches: list[RowColumns | list[dict]] = []
        self._count = 0

    def process(self, batch):
        rows = batch[1]
        if self._count and self._count + len(rows) > self.rows:
            yield self._table()
        self._batches.append(rows)
        self._count += len(rows)

    def finish_bundle(self):
        if self._count:
            yield GlobalWindows.windowed_value(self._table())

    def _table(self) -> pa.Table:
        """The held batches as one table: each run of consecutive batches of one kind converted at once."""
        tables = []
        for columnar, run in itertools.groupby(self._batches, key=lambda b: isinstance(b, RowColumns)):
            run = list(run)
            tables.append(columns_to_table(run) if columnar else rows_to_table([r for rows in run for r in rows]))
        self._batches, self._count = [], 0
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def part_prefix(out: RunLayout, tier: str) -> str:
    return FileSystems.join(out.tier_dir(tier), "part")


class WriteNegatives(beam.PTransform):
    """PCollection of row batches ((tier, RowColumns), e.g. one query's rows of one tier, or (tier, [row dicts in
    NEGATIVES_SCHEMA]): as_batch makes one of a single row) -> one Parquet folder per tier; returns the written
    paths. Batches, not rows, are the elements: on dense qrels a query has hundreds of rows, and a Beam step per
    row cost more than building them (issue 15)."""

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
                | f"ToArrow[{tier}]" >> beam.ParDo(RowGroupsFn(self.rows_per_group))
                | f"WriteParquet[{tier}]"
                >> WriteToParquetBatched(
                    part_prefix(self.out, tier), schema=NEGATIVES_SCHEMA, file_name_suffix=".parquet"
                )
            )
            written.append(paths)
        return written | "WrittenPaths" >> beam.Flatten()
