"""Default shard count sized from the corpus and --worker-memory-gb; an explicit --num-shards wins."""

from __future__ import annotations

import pytest

from pipelines.build import size_index
from pipelines.build_args import resolve_build_config
from transforms.sizing import DEFAULT_MIN_SHARDS, estimated_worker_gb, shards_for


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
