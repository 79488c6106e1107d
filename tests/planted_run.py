"""A RUN_DIR built by hand for the mining tests: what ingest, embed and index would leave, from planted vectors.

A plain module (not a test file): tests import it because pyproject puts tests/ on pytest's pythonpath.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.build_config import IndexConfig
from schemas.inputs import DOCS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA, embeddings_schema
from schemas.layout import RunLayout
from schemas.negatives import text_hash
from transforms.index import (
    DocBlock,
    fill_shard,
    index_meta,
    split_by_shard,
    train_index,
    write_index_meta,
    write_shard,
)


def _write_parquet(table: pa.Table, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"))


def write_run(run_dir: str, docs: dict, queries: dict, pairs: list, doc_vecs: dict, query_vecs: dict,
              num_shards: int) -> RunLayout:
    """A RUN_DIR as ingest, embed and index would leave it (inputs/, embeddings/, exact Flat index/)."""
    run = RunLayout(run_dir)
    doc_ids = sorted(docs)
    _write_parquet(pa.Table.from_pylist(
        [{"doc_id": d, "title": "", "text": docs[d], "passage": docs[d], "text_hash": text_hash(docs[d])}
         for d in doc_ids], DOCS_SCHEMA), run.inputs_table("docs"))
    _write_parquet(pa.Table.from_pylist([{"query_id": q, "text": t} for q, t in sorted(queries.items())],
                                        QUERIES_SCHEMA), run.inputs_table("queries"))
    _write_parquet(pa.Table.from_pylist([{"query_id": q, "positive_id": d, "score": 1} for q, d in pairs],
                                        PAIRS_SCHEMA), run.inputs_table("pairs"))
    emb = [{"id": d, "kind": "doc", "vector": doc_vecs[d].tolist(), "text_hash": text_hash(docs[d])} for d in doc_ids]
    emb += [{"id": q, "kind": "query", "vector": query_vecs[q].tolist(), "text_hash": text_hash(queries[q])}
            for q in sorted(queries)]
    dim = len(next(iter(doc_vecs.values())))
    _write_parquet(pa.Table.from_pylist(emb, embeddings_schema(dim)), run.embeddings_dir)
    index_config = IndexConfig(num_shards=num_shards)
    block = DocBlock(np.array(doc_ids), np.stack([doc_vecs[d] for d in doc_ids]).astype(np.float32),
                     np.array([text_hash(docs[d]) for d in doc_ids]))
    trained = train_index("Flat", dim, block)
    parts = dict(split_by_shard(block, num_shards))
    empty = block.take(np.zeros(0, np.int64))
    stats = [write_shard(run, s, num_shards, *fill_shard(trained, parts.get(s, empty))) for s in range(num_shards)]
    write_index_meta(run, index_meta(index_config, dim, stats, len(block), 0))
    return run


def read_rows(out: RunLayout) -> pl.DataFrame:
    return pl.read_parquet(os.path.join(out.negatives_dir, "**", "*.parquet"), hive_partitioning=True).with_columns(
        pl.col("tier").cast(pl.String)
    )
