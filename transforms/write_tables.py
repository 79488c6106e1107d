"""Row dicts -> Parquet tables of fixed part counts (part-SSSSS-of-NNNNN.parquet), one part per group.

    written = write_tables(pipeline, {"queries": rows, ...}, {"queries": TableSpec(folder, schema, 1), ...})
    # -> PCollection[(("output", table), rows written)] per part

write_tables groups every row by part (a GroupByKey), so it is for small tables: on the local runner a
worker holds its whole partition of a grouped stage at once. A table as big as the corpus is written part by
part where its rows are produced instead (write_part, used by the ingest stage's docs parts).

Rows travel to the GroupByKey in per-bundle batches (BatchRowsFn), not one by one: the local runner
materialises every multi-input Flatten (each element written and read once more) and moves each grouped
element through the runner's data plane one at a time, which cost ~1 s of the ingest stage's 7.4 s for the
100k pairs rows of issue 15's dense qrels; a batch crosses both as one element.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

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
    if spec.shards == 1:  # every ingest table: no hash per row
        return 0
    return zlib.crc32(str(row[spec.schema.names[0]]).encode("utf-8")) % spec.shards


class BatchRowsFn(beam.DoFn):
    """Row dicts of one table -> ((table, shard), [row, ...]): batches of up to WRITE_BATCH_ROWS rows of one part.

    A batch leaves when it is full or when the bundle ends, so a worker holds at most WRITE_BATCH_ROWS rows per
    part here, and rows keep their order within a bundle.
    """

    def __init__(self, table: str, spec: TableSpec) -> None:
        self.table = table
        self.spec = spec

    def start_bundle(self):
        self._batches: dict[int, list] = {}

    def process(self, row: dict):
        shard = shard_of(row, self.spec)
        batch = self._batches.setdefault(shard, [])
        batch.append(row)
        if len(batch) >= WRITE_BATCH_ROWS:
            del self._batches[shard]
            yield (self.table, shard), batch

    def finish_bundle(self):
        for shard, batch in sorted(self._batches.items()):
            yield GlobalWindows.windowed_value(((self.table, shard), batch))
        self._batches = {}


class WriteTablePartFn(beam.DoFn):
    """((table, shard), batches of rows) -> one Parquet part; yields (("output", table), rows written).

    Every part also receives an empty batch, so it exists even when empty: readers of the folder always find
    the schema. A retried part is rewritten whole with the same rows, so writes are idempotent; the stage
    writes into the staging layout, which the orchestrator moves into place only after success.
    """

    def __init__(self, specs: dict[str, TableSpec]) -> None:
        self.specs = specs

    def process(self, element):
        (table, shard), batches = element
        spec = self.specs[table]
        path = FileSystems.join(spec.folder, part_name(shard, spec.shards))
        yield ("output", table), write_part(path, spec.schema, itertools.chain.from_iterable(batches))


def write_tables(pbegin, tables: dict, specs: dict[str, TableSpec]):
    """Write each PCollection of row dicts in `tables` to its TableSpec; returns ((output, table), n) counts."""
    batched = [
        tables[name] | f"Batch{name.title()}" >> beam.ParDo(BatchRowsFn(name, spec)) for name, spec in specs.items()
    ]
    markers = [((name, shard), []) for name, spec in specs.items() for shard in range(spec.shards)]
    return (
        [*batched, pbegin | "Start" >> beam.Impulse() | "PartMarkers" >> beam.FlatMap(lambda _, m: m, markers)]
        | "AllTableRows" >> beam.Flatten()
        | "GroupParts" >> beam.GroupByKey()
        | "WriteParts" >> beam.ParDo(WriteTablePartFn(specs))
    )
