"""Defaults sized from the corpus and --worker-memory-gb (shard count, factory, nprobe); explicit flags win."""

from __future__ import annotations

import json

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from pipelines.build import size_index
from pipelines.build_args import resolve_build_config
from pipelines.stage_index import run_index
from schemas.build_config import BuildConfig, IndexConfig, IngestConfig
from schemas.layout import RunLayout
from tests.test_index_build import clustered, write_embeddings
from transforms import sizing
from transforms.shard_search import ShardSearcher
from transforms.sizing import (
    DEFAULT_MIN_SHARDS,
    FLAT_MAX_DOCS,
    choose_index,
    estimated_worker_gb,
    ivf_lists_for,
    nprobe_for,
    pq_subquantizers_for,
    shards_for,
    size_index_config,
)


def test_shards_grow_with_docs_and_shrink_with_budget():
    assert shards_for(5_000, 384, 4.0) == DEFAULT_MIN_SHARDS  # small corpora keep the old default
    ten_million = shards_for(10_000_000, 384, 4.0)
    assert ten_million > DEFAULT_MIN_SHARDS
    assert estimated_worker_gb(10_000_000, 384, ten_million) <= 4.0
    assert shards_for(10_000_000, 384, 8.0) < ten_million
    assert shards_for(20_000_000, 384, 4.0) >= 2 * ten_million - 1


@pytest.mark.parametrize("argv, auto", [([], True), (["--num-shards", "3"], False)])
def test_explicit_num_shards_wins(argv, auto, tiny_model_dir):
    base = ["--beir", "b", "--split", "train", "--output", "r", "--model", tiny_model_dir]
    config, _ = resolve_build_config([*base, *argv, "--worker-memory-gb", "2"])
    assert config.index.auto_shards is auto and config.index.worker_memory_gb == 2.0
    sized = size_index(config, 50_000_000)
    assert sized.index.num_shards == (shards_for(50_000_000, 32, 2.0) if auto else 3)


# --- the default factory: Flat up to FLAT_MAX_DOCS, then IVF-PQ sized to the shards -----------------------------


def test_small_corpora_keep_flat_and_large_ones_get_ivf_pq_sized_to_their_shards():
    assert choose_index(5_183, 384, 4, 100_000).factory == "Flat"  # SciFact, the bundled sample, the golden run
    assert choose_index(FLAT_MAX_DOCS, 384, 4, 100_000).factory == "Flat"
    assert choose_index(FLAT_MAX_DOCS + 1, 384, 4, 100_000).factory == "IVF2048,PQ48"
    big = choose_index(10_000_000, 384, shards_for(10_000_000, 384, 4.0), 100_000)
    assert big.factory == "IVF2048,PQ48" and big.nprobe == 64  # 2048 lists: 4 x sqrt(~770k) capped by 100k / 39
    assert "exact re-rank" in big.reason and "10,000,000 docs" in big.reason
    assert choose_index(2_000_000, 768, 8, 100_000).factory == "IVF2048,PQ96"  # 4 x sqrt(250k) = 2000 -> 2048


@pytest.mark.parametrize(
    "shard_docs, train, nlist", [(250_000, 100_000, 2048), (1_000_000, 100_000, 2048), (1_000_000, 200_000, 4096),
                                 (60_000, 100_000, 1024), (10, 100_000, 16), (1, 1, 1), (250_000, 1_000, 16)]
)
def test_ivf_lists_follow_sqrt_of_shard_docs_as_a_power_of_two_capped_by_training(shard_docs, train, nlist):
    assert ivf_lists_for(shard_docs, train) == nlist
    assert nlist * 39 <= max(train, 39)


@pytest.mark.parametrize("dim, m", [(384, 48), (768, 96), (1024, 128), (32, 4), (100, 20), (97, 97), (8, 1), (6, 1)])
def test_pq_subquantizers_divide_the_dimension_with_at_most_eight_dims_each(dim, m):
    assert pq_subquantizers_for(dim) == m and dim % m == 0 and dim // m <= 8


def test_nprobe_is_a_thirty_second_of_the_lists_at_least_sixteen_and_at_most_all():
    assert [nprobe_for(n) for n in (1, 8, 16, 512, 1024, 2048, 4096)] == [1, 8, 16, 16, 32, 64, 128]


@pytest.mark.parametrize(
    "argv, factory, nprobe",
    [([], "IVF2048,PQ4", 64), (["--index-factory", "IVF64,Flat"], "IVF64,Flat", 16),
     (["--nprobe", "5"], "IVF2048,PQ4", 5), (["--index-factory", "Flat", "--nprobe", "3"], "Flat", 3)],
)
def test_explicit_factory_and_nprobe_win_over_the_automatic_choice(argv, factory, nprobe, tiny_model_dir):
    base = ["--beir", "b", "--split", "train", "--output", "r", "--model", tiny_model_dir, "--num-shards", "4"]
    config, _ = resolve_build_config([*base, *argv])
    assert config.index.auto_factory is ("--index-factory" not in argv)
    assert config.index.auto_nprobe is ("--nprobe" not in argv)
    sized = size_index(config, 1_200_000)  # 300k docs per shard, 32 dims (the tiny model)
    assert (sized.index.index_factory, sized.index.nprobe, sized.index.num_shards) == (factory, nprobe, 4)
    assert bool(sized.index.factory_reason) is config.index.auto_factory
    small = size_index(config, 5_000).index
    assert small.index_factory == ("Flat" if config.index.auto_factory else factory) and small.nprobe == (
        16 if config.index.auto_nprobe else nprobe)  # Flat leaves nprobe alone


def test_an_automatic_ivf_pq_index_is_built_recorded_and_scores_exactly(tmp_path, monkeypatch):
    """Past FLAT_MAX_DOCS (lowered here to 1,000) the stage builds the chosen IVF-PQ factory, index.json says
    why, and search scores stay the exact cosine of the stored vectors."""
    monkeypatch.setattr(sizing, "FLAT_MAX_DOCS", 1_000)
    run_dir = str(tmp_path / "run")
    docs = clustered(3_000, 32, centers=24, seed=5)
    ids = [f"d{i:05d}" for i in range(len(docs))]
    write_embeddings(run_dir, ids, docs)
    index = IndexConfig(num_shards=3, train_sample=2_000, auto_factory=True, auto_nprobe=True)
    index = size_index_config(index, len(docs), 32)
    assert index.index_factory == "IVF32,PQ4" and index.nprobe == 16  # 4 x sqrt(1000) = 126 -> capped 2000/39
    run = RunLayout(run_dir)
    stats = run_index(BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir="u", split="train"), index=index),
                      run, run, [], test_pipeline=BeamTestPipeline())
    assert stats["factory"] == "IVF32,PQ4" and stats["nprobe"] == 16 and stats["trained_on"] == 2_000
    meta = json.loads(open(run.index_meta).read())
    assert meta["factory_chosen"].startswith("automatic: 3,000 docs > 1,000: IVF-PQ with exact re-rank")
    queries = clustered(20, 32, centers=24, seed=6)
    for shard in range(3):
        searcher = ShardSearcher.load(run, shard, 3, nprobe=index.nprobe)
        assert not searcher.is_exact
        scores, local = searcher.search(queries, 10)
        rows = searcher.vectors[local].astype(np.float64)  # [20, 10, 32]
        np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries.astype(np.float64), rows), atol=1e-6)
