"""Row dicts -> Parquet tables of fixed part counts (part-SSSSS-of-NNNNN.parquet), one part per group.

    written = write_tables(pipeline, {"queries": rows, ...}, {"queries": TableSpec(folder, schema, 1), ...})
    # -> PCollection[(("output", table), rows written)] per part

write_tables groups every row by part (a GroupByKey), so it is for small tables: on the local runner a
worker holds its whole partition of a grouped stage at once. A table as big as the corpus is written part by
part where its rows are produced instead (write_part, used by the ingest stage's docs parts).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

WRITE_BATCH_ROWS = 10_000  # rows per Parquet write while streaming a part


@dataclass(frozen=True)
class TableSpec:
    """Where one output table goes: a folder of part-SSSSS-of-NNNNN.parquet files."""

    folder: str
    schema: pa.Schema
    shards: int  # fixed, so part names do not depend on the runner; rows go to crc32(first column) % shards


def part_name(part: int, parts: int) -> str:
    return f"part-{part:05d}-of-{parts:05d}.parquet"


def write_part(path: str, schema: pa.Schema, rows) -> int:
    """Write the row dicts of an iterable (None items skipped) as one Parquet file, WRITE_BATCH_ROWS at a time.

    The file always exists afterwards, empty or not (readers of the folder always find the schema). Returns
    the number of rows written.
    """
    written, batch = 0, []
    with FileSystems.create(path) as handle:
        writer = pq.ParquetWriter(handle, schema, compression="snappy")
        for row in rows:
            if row is not None:
                batch.append(row)
            if len(batch) >= WRITE_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written, batch = written + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            written += len(batch)
        writer.close()
    return written


def shard_of(row: dict, spec: TableSpec) -> int:
    return zlib.crc32(str(row[spec.schema.names[0]]).encode("utf-8")) % spec.shards


class WriteTablePartFn(beam.DoFn):
    """((table, shard), rows) -> one Parquet part; yields (("output", table), rows written).

    Every part also receives a None marker, so it exists even when empty: readers of the folder always find
    the schema. A retried part is rewritten whole with the same rows, so writes are idempotent; the stage
    writes into the staging layout, which the orchestrator moves into place only after success.
    """

    def __init__(self, specs: dict[str, TableSpec]) -> None:
        self.specs = specs

    def process(self, element):
        (table, shard), rows = element
        spec = self.specs[table]
        path = FileSystems.join(spec.folder, part_name(shard, spec.shards))
        yield ("output", table), write_part(path, spec.schema, rows)


def write_tables(pbegin, tables: dict, specs: dict[str, TableSpec]):
    """Write each PCollection of row dicts in `tables` to its TableSpec; returns ((output, table), n) counts."""
    keyed = [
        tables[name] | f"Shard{name.title()}" >> beam.Map(lambda row, n=name, s=spec: ((n, shard_of(row, s)), row))
        for name, spec in specs.items()
    ]
    markers = [((name, shard), None) for name, spec in specs.items() for shard in range(spec.shards)]
    return (
        [*keyed, pbegin | "Start" >> beam.Impulse() | "PartMarkers" >> beam.FlatMap(lambda _, m: m, markers)]
        | "AllTableRows" >> beam.Flatten()
        | "GroupParts" >> beam.GroupByKey()
        | "WriteParts" >> beam.ParDo(WriteTablePartFn(specs))
    )
