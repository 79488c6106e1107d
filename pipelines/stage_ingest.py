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

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.options import make_pipeline_options, run_pipeline
from schemas.build_config import BuildConfig, IngestConfig
from schemas.inputs import DEADLETTER_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA, WARNINGS_SCHEMA
from schemas.layout import RunLayout
from transforms.counts import SumCountsFn, WriteJson
from transforms.ingest import IngestInputs, input_sources
from transforms.ingest_checks import validate_inputs
from transforms.ingest_rules import OUTCOMES, READ
from transforms.write_tables import TableSpec, write_tables

logger = logging.getLogger(__name__)

STATS_FILE = "ingest.json"


def table_specs(out: RunLayout) -> dict[str, TableSpec]:
    """The small tables, one part each. inputs/docs is written by IngestInputs itself, one part per read range
    of the corpus (or pair file), so that no doc text is shuffled."""
    return {
        "queries": TableSpec(out.inputs_table("queries"), QUERIES_SCHEMA, 1),
        "pairs": TableSpec(out.inputs_table("pairs"), PAIRS_SCHEMA, 1),
        "deadletter": TableSpec(out.deadletter_dir, DEADLETTER_SCHEMA, 1),
        "warnings": TableSpec(out.warnings_dir, WARNINGS_SCHEMA, 1),
    }


def _counts_payload(totals: dict) -> dict:
    """{(group, ...): count} -> {"counts": [[[group, ...], count], ...]} (tuple keys are not JSON)."""
    return {"counts": [[list(key), count] for key, count in sorted(totals.items())]}


def build_ingest(pipeline: beam.Pipeline, ingest: IngestConfig, out: RunLayout, range_bytes: int | None = None) -> str:
    """Add the ingest steps to `pipeline`; return the path of the stats file it will write.

    range_bytes: bytes per read range (None: transforms.read.RANGE_BYTES); tests make it tiny.
    """
    inputs = pipeline | "Ingest" >> IngestInputs(ingest, out.inputs_table("docs"), range_bytes)
    written = [
        write_tables(pipeline, inputs, table_specs(out)),
        inputs["docs_written"],
    ] | "AllWritten" >> beam.Flatten()
    stats_path = FileSystems.join(out.stats_dir, STATS_FILE)
    (
        [
            inputs["ledger"] | "LedgerKeys" >> beam.Map(lambda entry: {("file", entry[0], entry[1]): entry[2]}),
            inputs["deadletter"] | "DeadLetterKeys" >> beam.Map(lambda row: {("deadletter", row["reason"]): 1}),
            inputs["warnings"] | "WarningKeys" >> beam.Map(lambda row: {("warnings", row["reason"]): 1}),
            written | "WrittenKeys" >> beam.Map(lambda kv: {kv[0]: kv[1]}),
        ]
        | "AllCounts" >> beam.Flatten()
        # never empty (every table part written is counted), so the combine needs no default-injection steps
        | "SumCounts" >> beam.CombineGlobally(SumCountsFn()).without_defaults()
        | "WriteStats" >> WriteJson(stats_path, _counts_payload)
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
