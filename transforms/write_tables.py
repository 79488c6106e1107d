"""Row dicts -> Parquet tables of fixed part counts (part-SSSSS-of-NNNNN.parquet), one part per group.

    written = write_tables(pipeline, {"docs": rows, ...}, {"docs": TableSpec(folder, schema, shards), ...})
    # -> PCollection[(("output", table), rows written)] per part
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
        path = FileSystems.join(spec.folder, f"part-{shard:05d}-of-{spec.shards:05d}.parquet")
        written, batch = 0, []
        with FileSystems.create(path) as handle:
            writer = pq.ParquetWriter(handle, spec.schema, compression="snappy")
            for row in rows:
                if row is not None:
                    batch.append(row)
                if len(batch) >= WRITE_BATCH_ROWS:
                    writer.write_table(pa.Table.from_pylist(batch, schema=spec.schema))
                    written, batch = written + len(batch), []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=spec.schema))
                written += len(batch)
            writer.close()
        yield ("output", table), written


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
