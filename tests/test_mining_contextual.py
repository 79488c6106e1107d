"""The mine stage with contextual negatives on: rows land in tier=contextual, counts in the stats."""

from __future__ import annotations

import glob
import os

import numpy as np
import polars as pl
import pytest
from planted_run import read_rows, write_run

from pipelines.stage_mine import run_mine
from schemas.build_config import BuildConfig, ContextualConfig, EmbedConfig, IndexConfig, IngestConfig, MiningConfig
from schemas.layout import RunLayout

DOCS = {
    "d1": "Aspirin increases the risk of bleeding in 20 percent of older adults.",
    "d2": "Statins reduce cholesterol levels in 35 percent of patients.",
    "d3": "Vitamin D does not improve bone density in healthy adults.",
    "d4": "Exercise improves sleep quality in 12 weeks.",
    "d5": "Coffee raises heart rate within 30 minutes.",
    "d6": "Metformin lowers blood glucose in type 2 diabetes.",
}
QUERIES = {"q1": "does aspirin cause bleeding", "q2": "statins and cholesterol"}
PAIRS = [("q1", "d1"), ("q2", "d2"), ("q2", "d6")]


@pytest.mark.slow
def test_contextual_rows_are_written_with_the_mined_tiers(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    doc_vecs = dict(zip(DOCS, model.encode(list(DOCS.values()), normalize_embeddings=True).astype(np.float32)))
    query_vecs = dict(zip(QUERIES, model.encode(list(QUERIES.values()), normalize_embeddings=True)))
    run = write_run(str(tmp_path / "run"), DOCS, QUERIES, PAIRS, doc_vecs, query_vecs, num_shards=2)
    config = BuildConfig(
        output=run.run_dir,
        ingest=IngestConfig(beir_dir="unused", split="train"),
        embed=EmbedConfig(model=tiny_model_dir),
        index=IndexConfig(num_shards=2),
        mining=MiningConfig(hard=1, semi_hard=0, random=0, relative_margin=None, near_copy_guard=False),
        contextual=ContextualConfig(per_pair=1, kinds=("negation", "number"), similarity_band=(0.0, 1.0)),
    )
    out = RunLayout(str(tmp_path / "out"))
    stats = run_mine(config, run, out, [])

    rows = read_rows(out)
    context = rows.filter(pl.col("tier") == "contextual")
    assert context.height >= 1 and stats["rows_per_tier"]["contextual"] == context.height
    assert context["rank"].is_null().all() and context["negative_id"].str.starts_with("ctx:").all()
    assert (context["negative"] != context["positive"]).all()
    assert context.group_by("query_id", "positive_id").len()["len"].max() <= 1  # per_pair = 1
    assert set(context.select("query_id", "positive_id").iter_rows()) <= set(PAIRS)
    assert stats["contextual"]["pairs"] == len(PAIRS)
    assert rows.filter(pl.col("tier") == "hard").height == len(PAIRS)  # the mined tier is still there
    assert glob.glob(os.path.join(out.deadletter_dir, "contextual*.parquet"))
