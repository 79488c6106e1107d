"""Build stage `ingest`: input files -> RUN_DIR/inputs/{docs,queries,pairs}, deadletter/, warnings/, stats.

Usage from the orchestrator (pipelines/build.py):
    validate_inputs(config.ingest)       # before any heavy work: missing files, wrong layout
    counts = run_ingest(config, run, out, beam_args)

Counts come from a small JSON file the pipeline itself writes (out.stats_dir/ingest.json), summed from the
data by a combine, so they are exact on any runner, retries included (Beam metrics are not needed).
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from pipelines.options import make_pipeline_options, run_pipeline
from schemas.build_config import BuildConfig, IngestConfig
from schemas.inputs import DEADLETTER_SCHEMA, DOCS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA, WARNINGS_SCHEMA
from schemas.layout import RunLayout
from transforms import parse
from transforms.beir import BeirLayoutError, check_beir_layout
from transforms.ingest import OUTCOMES, READ, IngestInputs, input_sources
from transforms.read import iter_source_lines

logger = logging.getLogger(__name__)

STATS_FILE = "ingest.json"
DOC_SHARDS = 4  # Parquet parts of inputs/docs (the other tables are small: one part each)
WRITE_BATCH_ROWS = 10_000  # rows per Parquet write while streaming a part
SNIFF_ROWS = 20  # a file none of whose first rows parses is a layout error, not a few bad rows
_EXPECTED = {
    "docs": 'JSON Lines rows {"_id", "title", "text"} (BEIR corpus.jsonl)',
    "queries": 'JSON Lines rows {"_id", "text"} (BEIR queries.jsonl)',
    "qrels": "a header row, then query-id<TAB>corpus-id<TAB>score rows (BEIR qrels/<split>.tsv)",
    "pairs": 'JSON Lines rows {"query" or "anchor", "positive", optional "query_id", "positive_id"}',
}


class InputLayoutError(ValueError):
    """An input file exists but is not what its flag expects (wrong file, wrong format, no rows)."""


def _check_beir(ingest: IngestConfig) -> None:
    qrels_dir = FileSystems.join(ingest.beir_dir, "qrels")
    if FileSystems.exists(FileSystems.join(ingest.beir_dir, "corpus.jsonl")):
        try:
            found = FileSystems.match([FileSystems.join(qrels_dir, "*.tsv")], limits=[50])[0].metadata_list
        except BeamIOError:  # some file systems raise on a pattern that matches nothing
            found = []
        splits = sorted(m.path.rsplit("/", 1)[-1][: -len(".tsv")] for m in found)
        if splits and ingest.split not in splits:
            raise BeirLayoutError(
                f"{FileSystems.join(qrels_dir, ingest.split + '.tsv')} not found: --split {ingest.split!r} is not "
                f"in {ingest.beir_dir}; splits found: {', '.join(splits)}"
            )
    check_beir_layout(ingest.beir_dir, ingest.split)


def _check_file(path: str, flag: str) -> None:
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{flag} {path} not found; check the path (local or gs://)")
    if FileSystems.exists(FileSystems.join(path, "corpus.jsonl")):
        raise InputLayoutError(f"{flag} {path} is a BEIR folder, not a file; use --beir {path} --split SPLIT instead")


def _sniff(kind: str, path: str, max_chars: int, max_line_bytes: int) -> None:
    """Raise InputLayoutError unless one of the first SNIFF_ROWS rows of `path` parses as `kind`."""
    rows = 0
    for line in iter_source_lines(path, limit=SNIFF_ROWS, max_line_bytes=max_line_bytes):
        rows += 1
        parsed = parse.parse_line(kind, line, max_chars)
        if parsed.records or parsed.out_of_split:
            return
    if rows == 0:
        raise InputLayoutError(f"{path} holds no rows; expected {_EXPECTED[kind]}")
    raise InputLayoutError(
        f"{path}: none of its first {rows} rows is valid; expected {_EXPECTED[kind]} - is it the right file?"
    )


def validate_inputs(ingest: IngestConfig) -> None:
    """Fail fast (before any pipeline runs) when an input file is missing or not in the expected layout."""
    if ingest.beir_dir is not None:
        _check_beir(ingest)
    else:
        _check_file(ingest.pairs_file, "--pairs")
        if ingest.corpus_file is not None:
            _check_file(ingest.corpus_file, "--corpus")
    for kind, path in input_sources(ingest):
        _sniff(kind, path, ingest.max_text_chars, ingest.max_line_bytes)


@dataclass(frozen=True)
class TableSpec:
    """Where one output table goes: a folder of part-SSSSS-of-NNNNN.parquet files."""

    folder: str
    schema: pa.Schema
    shards: int  # fixed, so part names do not depend on the runner; rows go to crc32(first column) % shards


def table_specs(out: RunLayout) -> dict[str, TableSpec]:
    return {
        "docs": TableSpec(out.inputs_table("docs"), DOCS_SCHEMA, DOC_SHARDS),
        "queries": TableSpec(out.inputs_table("queries"), QUERIES_SCHEMA, 1),
        "pairs": TableSpec(out.inputs_table("pairs"), PAIRS_SCHEMA, 1),
        "deadletter": TableSpec(out.deadletter_dir, DEADLETTER_SCHEMA, 1),
        "warnings": TableSpec(out.warnings_dir, WARNINGS_SCHEMA, 1),
    }


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


class SumByKeyFn(beam.CombineFn):
    """(key, n) elements -> {key: sum of n}; an empty input gives {}."""

    def create_accumulator(self):
        return {}

    def add_input(self, totals, element):
        key, count = element
        totals[key] = totals.get(key, 0) + count
        return totals

    def merge_accumulators(self, accumulators):
        merged = {}
        for totals in accumulators:
            for key, count in totals.items():
                merged[key] = merged.get(key, 0) + count
        return merged

    def extract_output(self, totals):
        return totals


class WriteStatsFn(beam.DoFn):
    """{key: count} -> one JSON file {"counts": [[key, count], ...]}; rewriting it is idempotent."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, totals: dict):
        payload = {"counts": [[list(key), count] for key, count in sorted(totals.items())]}
        with FileSystems.create(self.path) as handle:
            handle.write(json.dumps(payload, indent=1, sort_keys=True).encode("utf-8"))
        yield self.path


def build_ingest(pipeline: beam.Pipeline, ingest: IngestConfig, out: RunLayout) -> str:
    """Add the ingest steps to `pipeline`; return the path of the stats file it will write."""
    inputs = pipeline | "Ingest" >> IngestInputs(ingest)
    written = write_tables(pipeline, inputs, table_specs(out))
    stats_path = FileSystems.join(out.stats_dir, STATS_FILE)
    (
        [
            inputs["ledger"] | "LedgerKeys" >> beam.Map(lambda entry: (("file", *entry), 1)),
            inputs["deadletter"] | "DeadLetterKeys" >> beam.Map(lambda row: (("deadletter", row["reason"]), 1)),
            inputs["warnings"] | "WarningKeys" >> beam.Map(lambda row: (("warnings", row["reason"]), 1)),
            written,
        ]
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumByKeyFn())
        | "WriteStats" >> beam.ParDo(WriteStatsFn(stats_path))
    )
    return stats_path


def summarise(payload: dict, ingest: IngestConfig) -> dict:
    """The stage's manifest entry from the stats file; raises if a file's accounting does not balance."""
    files = {path: dict.fromkeys((READ, *OUTCOMES), 0) for _, path in input_sources(ingest)}
    summary = {
        "files": files,
        "deadletter_by_reason": {},
        "warnings_by_reason": {},
        "docs": 0,
        "queries": 0,
        "pairs": 0,
    }
    written: dict[str, int] = {}
    for (group, *rest), count in payload["counts"]:
        if group == "file":
            source, outcome = rest
            files.setdefault(source, dict.fromkeys((READ, *OUTCOMES), 0))[outcome] = count
        elif group in ("deadletter", "warnings"):
            summary[f"{group}_by_reason"][rest[0]] = count
        else:  # ("output", table): rows written
            written[rest[0]] = count
    summary.update({table: written.get(table, 0) for table in ("docs", "queries", "pairs")})
    problems = [f"{path}: {c}" for path, c in files.items() if c[READ] != sum(c[o] for o in OUTCOMES)]
    problems += [
        f"{group} rows written {written.get(group, 0)} != {sum(summary[group + '_by_reason'].values())} counted"
        for group in ("deadletter", "warnings")
        if written.get(group, 0) != sum(summary[group + "_by_reason"].values())
    ]
    if problems:
        raise RuntimeError(f"ingest counts do not balance ({'; '.join(problems)}); this is a negforge bug")
    return summary


def run_ingest(config: BuildConfig, run: RunLayout, out: RunLayout, beam_args: list[str], test_pipeline=None) -> dict:
    """Run the ingest stage into the staging layout `out`; return counts for the manifest.

    Returns {"files": {path: {read, accepted, dead_lettered, out_of_split}}, "deadletter_by_reason",
    "warnings_by_reason", "docs", "queries", "pairs"}. `run` is unused: ingest reads no earlier stage.
    """
    validate_inputs(config.ingest)
    options = make_pipeline_options(beam_args)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    stats_path = build_ingest(pipeline, config.ingest, out)
    if not run_pipeline(pipeline, options):
        logger.info("ingest: graph built (--dry_run=true); nothing was run")
        return {}
    with FileSystems.open(stats_path) as handle:
        payload = json.loads(handle.read().decode("utf-8"))
    summary = summarise(payload, config.ingest)
    logger.info(
        "ingest: %d docs, %d queries, %d pairs; dead-letter %s; warnings %s",
        summary["docs"],
        summary["queries"],
        summary["pairs"],
        summary["deadletter_by_reason"],
        summary["warnings_by_reason"],
    )
    return summary
