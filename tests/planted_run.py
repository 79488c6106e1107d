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

ROW_GROUP = 4096  # the embed stage's rows per written table (transforms/write_embeddings.py)


def _write_parquet(table: pa.Table, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"), row_group_size=ROW_GROUP)


def write_run(run_dir: str, docs: dict, queries: dict, pairs: list, doc_vecs: dict, query_vecs: dict,
              num_shards: int) -> RunLayout:
    """A RUN_DIR as ingest, embed and index would leave it (inputs/, embeddings/, exact Flat index/).

    Written column by column (no per-row dicts or Python float lists), so bench/mine_memory.py uses it for
    hundreds of thousands of docs as well."""
    run = RunLayout(run_dir)
    doc_ids, query_ids = sorted(docs), sorted(queries)
    passages = [docs[d] for d in doc_ids]
    doc_hashes = [text_hash(p) for p in passages]
    _write_parquet(pa.table({"doc_id": doc_ids, "title": [""] * len(doc_ids), "text": passages,
                             "passage": passages, "text_hash": doc_hashes}, schema=DOCS_SCHEMA),
                   run.inputs_table("docs"))
    _write_parquet(pa.table({"query_id": query_ids, "text": [queries[q] for q in query_ids]}, schema=QUERIES_SCHEMA),
                   run.inputs_table("queries"))
    _write_parquet(pa.table({"query_id": [q for q, _ in pairs], "positive_id": [d for _, d in pairs],
                             "score": [1] * len(pairs)}, schema=PAIRS_SCHEMA), run.inputs_table("pairs"))
    doc_matrix = np.stack([doc_vecs[d] for d in doc_ids]).astype(np.float32)  # [docs, dim]
    query_matrix = np.stack([query_vecs[q] for q in query_ids]).astype(np.float32)  # [queries, dim]
    dim = doc_matrix.shape[1]
    vectors = np.concatenate([doc_matrix, query_matrix])
    _write_parquet(pa.table({
        "id": doc_ids + query_ids,
        "kind": ["doc"] * len(doc_ids) + ["query"] * len(query_ids),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "text_hash": doc_hashes + [text_hash(queries[q]) for q in query_ids],
    }, schema=embeddings_schema(dim)), run.embeddings_dir)
    block = DocBlock(np.array(doc_ids, dtype=object), doc_matrix, np.array(doc_hashes, dtype=object))
    trained = train_index("Flat", dim, block)
    parts = dict(split_by_shard(block, num_shards))
    empty = block.take(np.zeros(0, np.int64))
    stats = [write_shard(run, s, num_shards, *fill_shard(trained, parts.get(s, empty))) for s in range(num_shards)]
    write_index_meta(run, index_meta(IndexConfig(num_shards=num_shards), dim, stats, len(block), 0))
    return run


def read_rows(out: RunLayout) -> pl.DataFrame:
    return pl.read_parquet(os.path.join(out.negatives_dir, "**", "*.parquet"), hive_partitioning=True).with_columns(
        pl.col("tier").cast(pl.String)
    )
