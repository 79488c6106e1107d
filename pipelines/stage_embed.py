"""Build stage `embed`: RUN_DIR/inputs/{docs,queries} -> RUN_DIR/embeddings/*.parquet.

Docs embed their `passage` (title + " " + text) with the document prompt, queries their `text` with the
query prompt. Output: embeddings/doc-*.parquet and embeddings/query-*.parquet in embeddings_schema(dim)
(vector = fixed_size_list<float32>[dim], L2-normalised); vectors that come out non-finite go to
deadletter/part-*.parquet with their reason (deadletter/embed/ once the orchestrator promotes the stage).
Counts are computed in the pipeline and written to stats/embed.json, so they are exact on any runner.
`--dry_run=true` builds the graph and runs nothing.
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.options import make_pipeline_options, run_pipeline
from schemas.build_config import BuildConfig
from schemas.inputs import DEADLETTER_SCHEMA
from schemas.layout import RunLayout
from schemas.negatives import text_hash
from transforms.counts import SumCountsFn, WriteJson
from transforms.embed import EmbedTexts
from transforms.embed_plan import embedding_cache_dirs, input_rows, processes_per_machine
from transforms.model import model_dimension
from transforms.write_embeddings import WriteEmbeddings

logger = logging.getLogger(__name__)

STATS_FILE = "embed.json"


def _passage_row(row: dict) -> tuple[str, str, str]:
    return row["doc_id"], row["passage"], row["text_hash"]


def _query_row(row: dict) -> tuple[str, str, str]:
    return row["query_id"], row["text"], text_hash(row["text"])


def _read_stats(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def _one(_element, name: str) -> dict[str, int]:
    return {name: 1}


def _count(pcoll, label: str, name: str):
    """{name: 1} per element, summed by SumCounts: one step per count instead of a Count.Globally's nine (the
    graph's size is a fixed cost of every run of the stage)."""
    return pcoll | f"Count{label}" >> beam.Map(_one, name)


def build_embed_pipeline(
    pipeline: beam.Pipeline,
    config: BuildConfig,
    run: RunLayout,
    out: RunLayout,
    dim: int,
    workers: int | None,
    texts_per_call: int | None = None,
    cache_dirs: dict[str, str] | None = None,
    totals: dict[str, int | None] | None = None,
) -> None:
    """Compose the stage on `pipeline` (does not run it).

    cache_dirs: kind -> embedding-cache namespace folder (none: no cache); totals: kind -> rows, for the
    progress lines' percentage and ETA.
    """
    cache_dirs = cache_dirs or {}
    embed = config.embed
    docs = (
        pipeline
        | "ReadDocs"
        >> beam.io.ReadFromParquet(
            FileSystems.join(run.inputs_table("docs"), "*.parquet"),
            columns=["doc_id", "passage", "text_hash"],
            validate=False,  # written by the ingest stage, which may not have run yet under --dry_run
        )
        | "DocPassages" >> beam.Map(_passage_row)
    )
    queries = (
        pipeline
        | "ReadQueries"
        >> beam.io.ReadFromParquet(
            FileSystems.join(run.inputs_table("queries"), "*.parquet"), columns=["query_id", "text"], validate=False
        )
        | "QueryTexts" >> beam.Map(_query_row)
    )
    totals = totals or {}
    embed_docs = EmbedTexts(
        embed, "doc", dim, workers, texts_per_call, cache_namespace_dir=cache_dirs.get("doc"),
        progress_total=totals.get("doc"),
    ).with_counts()
    embed_queries = EmbedTexts(
        embed, "query", dim, workers, texts_per_call, cache_namespace_dir=cache_dirs.get("query"),
        progress_total=totals.get("query"),
    ).with_counts()
    doc_rows, doc_dead, doc_counts = docs | "EmbedDocs" >> embed_docs
    query_rows, query_dead, query_counts = queries | "EmbedQueries" >> embed_queries
    model_counts = (
        doc_counts | "PrefixDocCounts" >> beam.MapTuple(lambda name, n: {f"docs_{name}": n}),
        query_counts | "PrefixQueryCounts" >> beam.MapTuple(lambda name, n: {f"queries_{name}": n}),
    )
    _ = doc_rows | "WriteDocVectors" >> WriteEmbeddings(FileSystems.join(out.embeddings_dir, "doc"), dim)
    _ = query_rows | "WriteQueryVectors" >> WriteEmbeddings(FileSystems.join(out.embeddings_dir, "query"), dim)
    dead = (doc_dead, query_dead) | "AllDeadLetters" >> beam.Flatten()
    _ = dead | "WriteDeadLetters" >> beam.io.WriteToParquet(
        FileSystems.join(out.deadletter_dir, "part"), DEADLETTER_SCHEMA, file_name_suffix=".parquet"
    )
    reason_counts = (
        dead
        | "ReasonKeys" >> beam.Map(lambda row: {f"deadletter:{row['reason']}": 1})
    )
    counts = (
        _count(doc_rows, "Docs", "docs_embedded"),
        _count(query_rows, "Queries", "queries_embedded"),
        _count(doc_dead, "DocDeadLetters", "docs_dead_lettered"),
        _count(query_dead, "QueryDeadLetters", "queries_dead_lettered"),
        reason_counts,
        *model_counts,
    )
    _ = (
        counts
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumCountsFn())
        | "WriteStats" >> WriteJson(FileSystems.join(out.stats_dir, STATS_FILE))
    )


def run_embed(
    config: BuildConfig,
    run: RunLayout,
    out: RunLayout,
    beam_args: list[str],
    test_pipeline=None,
    texts_per_call: int | None = None,
) -> dict:
    """Embed the ingested docs and queries; returns {"docs_embedded", "queries_embedded", "dim", "model", ...}.

    texts_per_call: texts per encode() call (default 16 x batch_size); a tuning knob for bench/.
    """
    dim = model_dimension(config.embed.model)  # config files only: fails fast on a bad --model
    options = make_pipeline_options(beam_args)
    workers = processes_per_machine(options)
    for folder in (out.embeddings_dir, out.deadletter_dir, out.stats_dir):
        if not FileSystems.exists(folder):
            FileSystems.mkdirs(folder)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    cache_dirs = embedding_cache_dirs(config.embed)
    totals = {"doc": input_rows(run.inputs_table("docs")), "query": input_rows(run.inputs_table("queries"))}
    if cache_dirs or workers != 1:  # only uncached texts reach the model / each process sees a share: no ETA
        totals = {kind: None for kind in totals}
        logger.info("embed: cache folders %s", cache_dirs)
    build_embed_pipeline(pipeline, config, run, out, dim, workers, texts_per_call, cache_dirs, totals)
    if not run_pipeline(pipeline, options):
        logger.info("embed: graph built (--dry_run=true); nothing was run")
        return {}
    counts = _read_stats(FileSystems.join(out.stats_dir, STATS_FILE))
    stats = {
        "docs_embedded": counts.get("docs_embedded", 0),
        "queries_embedded": counts.get("queries_embedded", 0),
        "docs_dead_lettered": counts.get("docs_dead_lettered", 0),
        "queries_dead_lettered": counts.get("queries_dead_lettered", 0),
        "deadletter_by_reason": {
            key.split(":", 1)[1]: n for key, n in sorted(counts.items()) if key.startswith("deadletter:")
        },
        "docs_texts_embedded": counts.get("docs_texts_embedded", 0),
        "queries_texts_embedded": counts.get("queries_texts_embedded", 0),
        "docs_from_cache": counts.get("docs_rows_from_cache", 0),
        "queries_from_cache": counts.get("queries_rows_from_cache", 0),
        "dim": dim,
        "model": config.embed.model,
        "backend": config.embed.backend,
        "device": config.embed.device,
        "embedding_cache": config.embed.embedding_cache,
    }
    logger.info("embed stage: %s", stats)
    return stats
