"""Index stage: RUN_DIR/embeddings (doc rows) -> RUN_DIR/index (sharded faiss + exact stores + index.json).

    MatchEmbeddings -> RefBlocks (per Parquet row group: doc ids and text hashes, no vectors)
    -> SplitByShard (crc32(doc_id) % num_shards) -> GroupByShard -> FillShards (streams each shard's ref
    blocks twice: ids, then vectors read from their row groups, into one preallocated array; sorted by doc_id;
    atomic files) -> WriteIndexMeta (index.json; writes any shard no doc went to, empty)
    TrainSample (seeded, train_sample docs; reads its vectors; non-Flat factories) -> TrainIndex -> side input

No shuffle carries vectors: each shard's worker reads every row group's vector column once (the shards
together read the embeddings num_shards times), in exchange a worker never holds more than its own shard's
vectors and one row group, on any runner.

Counts come from index.json, which the pipeline itself writes, so they are exact on any runner.
"""

from __future__ import annotations

import logging

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from pipelines.options import is_dry_run, make_pipeline_options, run_pipeline
from schemas.build_config import BuildConfig
from schemas.layout import RunLayout
from transforms.build_index import BuildShardedIndex
from transforms.index import read_index_meta, ref_blocks_of_file, validate_index_config
from transforms.model import model_dimension

logger = logging.getLogger(__name__)
EMBEDDING_COLUMNS = ["id", "kind", "vector", "text_hash"]


def embedding_files(run: RunLayout) -> list[str]:
    pattern = FileSystems.join(run.embeddings_dir, "*.parquet")
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise FileNotFoundError(f"no embeddings match {pattern}; run the embed stage first")
    return files


def embedding_dim(run: RunLayout) -> int:
    """Vector dimension of RUN_DIR/embeddings, from the Parquet schema (metadata negforge.dim or list size)."""
    with FileSystems.open(embedding_files(run)[0]) as handle:
        schema = pq.read_schema(handle)
    declared = (schema.metadata or {}).get(b"negforge.dim")
    return int(declared) if declared else int(schema.field("vector").type.list_size)


def run_index(config: BuildConfig, run: RunLayout, out: RunLayout, beam_args: list[str], test_pipeline=None) -> dict:
    """Build RUN_DIR/index from run's embeddings into out; returns counts for the manifest."""
    options = make_pipeline_options(beam_args)
    # under --dry_run the embed stage has not written anything: take the width from the model's config
    dim = model_dimension(config.embed.model) if is_dry_run(options) else embedding_dim(run)
    validate_index_config(config.index, dim)
    if not FileSystems.exists(out.index_dir):
        FileSystems.mkdirs(out.index_dir)  # fail now on a bad output path
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    _ = (
        pipeline
        | "MatchEmbeddings" >> fileio.MatchFiles(FileSystems.join(run.embeddings_dir, "*.parquet"))
        | "EmbeddingPaths" >> beam.Map(lambda metadata: metadata.path)
        | "SpreadFiles" >> beam.Reshuffle()
        | "RefBlocks" >> beam.FlatMap(ref_blocks_of_file)
        | "BuildShardedIndex" >> BuildShardedIndex(config.index, dim, config.seed, out)
    )
    if not run_pipeline(pipeline, options):
        logger.info("index: graph built (--dry_run=true); nothing was run")
        return {}
    meta = read_index_meta(out)
    logger.info("index: %d docs in %d shards, %s nprobe %d (%s)", meta["ntotal"], meta["num_shards"],
                meta["factory"], meta["nprobe"], meta.get("factory_chosen", ""))
    return {
        "docs_indexed": meta["ntotal"],
        "num_shards": meta["num_shards"],
        "shard_ntotal": meta["shard_ntotal"],
        "dim": meta["dim"],
        "factory": meta["factory"],
        "factory_chosen": meta.get("factory_chosen", ""),
        "nprobe": meta["nprobe"],
        "trained_on": meta["trained_on"],
    }
