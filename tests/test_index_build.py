"""Index stage: validation before the job, shard assignment, seeded training sample, files, atomic writes."""

from __future__ import annotations

import json
import logging
import os
import zlib

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from pipelines.stage_index import run_index
from schemas.build_config import BuildConfig, ConfigError, IndexConfig, IngestConfig
from schemas.inputs import embeddings_schema
from schemas.layout import RunLayout
from transforms.build_index import TrainSampleFn
from transforms.index import (
    DocBlock,
    build_shard,
    concat_blocks,
    doc_blocks_from_table,
    fill_shard,
    keep_lowest_priority,
    loaded,
    ref_blocks_of_file,
    sample_priority,
    shard_of,
    sorted_shard,
    train_index,
    validate_index_config,
    write_atomic,
)
from transforms.shard_search import ShardSearcher, load_store
from transforms.topk import merge_topk

logger = logging.getLogger(__name__)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(run_dir: str, ids: list[str], vectors: np.ndarray, parts: int = 2) -> None:
    """RUN_DIR/embeddings as the embed stage writes it, plus a few query rows the index must ignore."""
    os.makedirs(os.path.join(run_dir, "embeddings"), exist_ok=True)
    dim = vectors.shape[1]
    ids = list(ids) + ["q-1", "q-2"]
    kinds = ["doc"] * len(vectors) + ["query", "query"]
    vectors = np.vstack([vectors, unit(np.ones((2, dim)))])
    for part, rows in enumerate(np.array_split(np.arange(len(ids)), parts)):
        table = pa.table(
            {
                "id": [ids[i] for i in rows],
                "kind": [kinds[i] for i in rows],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].ravel()), dim),
                "text_hash": [f"h{ids[i]}" for i in rows],
            },
            schema=embeddings_schema(dim),
        )
        pq.write_table(table, os.path.join(run_dir, "embeddings", f"part-{part:05d}.parquet"), row_group_size=97)


def build_config(run_dir: str, **index) -> BuildConfig:
    return BuildConfig(
        output=run_dir, ingest=IngestConfig(beir_dir="unused", split="train"), index=IndexConfig(**index)
    )


def clustered(n: int, dim: int, centers: int, seed: int) -> np.ndarray:
    """Points around `centers` fixed cluster centres (the same for every seed), so queries land in doc clusters."""
    middle = unit(np.random.default_rng(0).standard_normal((centers, dim)))
    rng = np.random.default_rng(seed)
    return unit(middle[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim))


# --- validation before the job ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "dim", "fragment"),
    [
        ("Flatt", 32, "unknown --index-factory 'Flatt'.*IVF1024,PQ32"),
        ("IVF16,PQ7", 32, "'IVF16,PQ7' does not fit embedding dimension 32.*PQ8"),
        ("IVF16,PQ5", 384, "does not fit embedding dimension 384.*PQ32"),
    ],
)
def test_bad_factory_fails_before_the_job_naming_value_and_fix(factory, dim, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate_index_config(IndexConfig(index_factory=factory), dim)


def test_shard_count_below_one_and_small_train_sample_are_refused():
    with pytest.raises(ConfigError, match="num_shards must be >= 1, got 0; use 1"):
        IndexConfig(num_shards=0)
    bypassed = IndexConfig()
    object.__setattr__(bypassed, "num_shards", -2)  # a config that skipped its own checks
    with pytest.raises(ConfigError, match="--num-shards must be >= 1, got -2"):
        validate_index_config(bypassed, 16)
    with pytest.raises(ConfigError, match="train_sample 50 is smaller than the 64 IVF lists"):
        validate_index_config(IndexConfig(index_factory="IVF64,Flat", train_sample=50), 16)
    with pytest.raises(ConfigError, match="dimension must be a positive integer, got 0"):
        validate_index_config(IndexConfig(), 0)


def test_run_index_refuses_a_factory_not_fitting_the_embeddings_before_running(tmp_path):
    run_dir = str(tmp_path / "run")
    write_embeddings(run_dir, ["a", "b"], unit(np.eye(2, 12)))
    with pytest.raises(ConfigError, match="dimension 12.*PQ4"):
        run_index(build_config(run_dir, index_factory="IVF4,PQ5"), RunLayout(run_dir), RunLayout(run_dir), [])
    assert not os.path.exists(os.path.join(run_dir, "index"))


# --- training sample --------------------------------------------------------------------------------------------


def test_training_sample_is_seeded_and_independent_of_blocking():
    rng = np.random.default_rng(0)
    ids = np.array([f"doc-{i}" for i in rng.permutation(500)])
    block = DocBlock(ids, unit(rng.standard_normal((500, 8))), np.array(["h"] * 500))
    combine = TrainSampleFn(n=60, seed=7, dim=8)

    def sample(cuts: list[int]) -> list[str]:
        accumulators = []
        for part in np.split(np.arange(500), cuts):
            acc = combine.create_accumulator()
            for rows in np.array_split(part, 3):
                acc = combine.add_input(acc, block.take(rows))
            accumulators.append(acc)
        return combine.extract_output(combine.merge_accumulators(accumulators)).doc_ids.tolist()

    first = sample([100, 250])
    assert len(first) == 60 and first == sample([7]) == sample([])
    expected = keep_lowest_priority(sample_priority(ids, 7), block, 60)[1].doc_ids.tolist()
    assert first == expected
    assert set(first) != set(keep_lowest_priority(sample_priority(ids, 8), block, 60)[1].doc_ids)


# --- the stage end to end (in-process runner) -------------------------------------------------------------------


def test_flat_index_files_hold_every_doc_once_in_its_crc32_shard(tmp_path):
    run_dir = str(tmp_path / "run")
    rng = np.random.default_rng(1)
    ids = [f"doc{i}" for i in rng.permutation(230)]
    vectors = unit(rng.standard_normal((230, 16)))
    write_embeddings(run_dir, ids, vectors)
    run, config = RunLayout(run_dir), build_config(run_dir, num_shards=3, block_size=50)
    stats = run_index(config, run, run, [], test_pipeline=BeamTestPipeline())

    assert stats["docs_indexed"] == 230 and stats["num_shards"] == 3 and stats["dim"] == 16
    by_id = dict(zip(ids, vectors))
    for shard in range(3):
        store = load_store(run.shard_store(shard, 3))
        assert isinstance(store["vectors"], np.memmap)  # exact vectors memory-mapped, not read
        doc_ids = store["doc_ids"].tolist()
        assert doc_ids == sorted(doc_ids) and len(doc_ids) == stats["shard_ntotal"][shard]
        assert all(zlib.crc32(d.encode()) % 3 == shard for d in doc_ids)
        np.testing.assert_array_equal(store["vectors"], np.stack([by_id[d] for d in doc_ids]))
        assert store["text_hashes"].tolist() == [f"h{d}" for d in doc_ids]
        assert faiss.read_index(run.shard_index(shard, 3)).ntotal == len(doc_ids)
    assert sum(stats["shard_ntotal"]) == 230
    meta = json.loads(open(run.index_meta).read())
    assert meta["metric"] == "inner_product" and meta["factory"] == "Flat" and meta["ntotal"] == 230
    assert not [f for f in os.listdir(run.index_dir) if f.endswith(".tmp")]
    np.testing.assert_array_equal(
        shard_of(np.array(["doc1", "doc2"]), 3), [zlib.crc32(b"doc1") % 3, zlib.crc32(b"doc2") % 3]
    )


def test_empty_shards_are_written_and_searchable(tmp_path):
    run_dir = str(tmp_path / "run")
    ids = ["a", "b", "c"]
    write_embeddings(run_dir, ids, unit(np.eye(3, 8)), parts=1)
    run = RunLayout(run_dir)
    stats = run_index(build_config(run_dir, num_shards=7), run, run, [], test_pipeline=BeamTestPipeline())
    assert stats["shard_ntotal"].count(0) >= 4 and sum(stats["shard_ntotal"]) == 3
    results = []
    for shard in range(7):
        searcher = ShardSearcher.load(run, shard, 7, nprobe=1)
        scores, local = searcher.search(unit(np.eye(1, 8)), 5)
        assert scores.shape == (1, 5) and (local[0] >= 0).sum() == min(5, searcher.ntotal)
        valid = local[0] >= 0
        results.append((scores[0][valid], searcher.doc_ids[local[0][valid]]))
    assert merge_topk(results, 5)[1].tolist() == ["a", "b", "c"]


def test_ivf_recall_against_exact_is_reported_and_above_floor(tmp_path):
    run_dir = str(tmp_path / "run")
    docs, dim = clustered(2000, 32, centers=24, seed=2), 32
    ids = [f"d{i:05d}" for i in range(len(docs))]
    write_embeddings(run_dir, ids, docs)
    run = RunLayout(run_dir)
    config = build_config(run_dir, num_shards=3, index_factory="IVF24,Flat", nprobe=2, train_sample=1000)
    stats = run_index(config, run, run, [], test_pipeline=BeamTestPipeline())
    assert stats["trained_on"] == 1000 and stats["factory"] == "IVF24,Flat" and stats["nprobe"] == 2
    assert stats["factory_chosen"] == "given (--index-factory or --config)"

    queries = clustered(100, dim, centers=24, seed=3)
    searchers = [ShardSearcher.load(run, s, 3, nprobe=2) for s in range(3)]
    exact = np.argsort(-(queries.astype(np.float64) @ docs.T.astype(np.float64)), axis=1)[:, :10]
    hits = 0
    for q, query in enumerate(queries):
        per_shard = []
        for searcher in searchers:
            scores, local = searcher.search(query[None], 10)
            valid = local[0] >= 0
            per_shard.append((scores[0][valid], searcher.doc_ids[local[0][valid]]))
        scores, found = merge_topk(per_shard, 10)
        hits += len(set(found.tolist()) & {ids[i] for i in exact[q]})
        rows = [ids.index(d) for d in found]  # scores are exact, re-scored from the stored vectors
        np.testing.assert_allclose(scores, docs[rows].astype(np.float64) @ query.astype(np.float64), atol=1e-6)
    recall = hits / (10 * len(queries))
    logger.info("IVF24,Flat nprobe=2 recall@10 vs exact on planted clusters: %.3f", recall)
    assert recall >= 0.95


def test_atomic_write_leaves_no_tmp_and_no_half_file(tmp_path):
    target = str(tmp_path / "index" / "x.bin")
    write_atomic(target, lambda h: h.write(b"abc"))
    assert open(target, "rb").read() == b"abc" and os.listdir(tmp_path / "index") == ["x.bin"]

    def broken(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(str(tmp_path / "index" / "y.bin"), broken)
    assert not os.path.exists(tmp_path / "index" / "y.bin")
    assert open(target, "rb").read() == b"abc"


def test_sorted_shard_equals_concatenate_then_sort_and_duplicates_are_refused():
    rng = np.random.default_rng(4)
    ids = np.array([f"x{i}" for i in rng.permutation(90)])
    block = DocBlock(ids, unit(rng.standard_normal((90, 6))), np.array([f"h{i}" for i in ids]))
    parts = [block.take(np.arange(a, b)) for a, b in ((0, 10), (10, 10), (10, 55), (55, 90))]
    merged = sorted_shard(parts, 6)
    order = np.argsort(ids)
    assert merged.doc_ids.tolist() == sorted(ids.tolist())
    np.testing.assert_array_equal(merged.vectors, block.vectors[order])
    assert merged.text_hashes.tolist() == [f"h{i}" for i in merged.doc_ids]
    trained = train_index("Flat", 6, concat_blocks([], 6))
    index, filled = fill_shard(trained, block)  # unsorted input is sorted by fill_shard itself
    assert filled.doc_ids.tolist() == merged.doc_ids.tolist() and index.ntotal == 90
    with pytest.raises(ValueError, match="doc id 'x3' has more than one embedding"):
        fill_shard(trained, concat_blocks([block, block.take(np.flatnonzero(ids == "x3"))], 6))


class Passes:
    """A re-iterable like Beam's grouped values on a runner that pages them: each pass makes the parts again."""

    def __init__(self, parts):
        self.parts, self.passes = parts, 0

    def __iter__(self):
        self.passes += 1
        for part in self.parts:
            yield None if part is None else part.take(np.arange(len(part)))  # a fresh copy per pass


@pytest.mark.parametrize("factory", ["Flat", "IDMap,Flat", "IVF4,Flat"])
def test_build_shard_streams_two_passes_into_one_sorted_array(factory):
    rng = np.random.default_rng(7)
    ids = np.array([f"x{i}" for i in rng.permutation(300)], dtype=object)
    block = DocBlock(ids, unit(rng.standard_normal((300, 8))), np.array([f"h{i}" for i in ids], dtype=object))
    cuts = [np.arange(0, 120), np.arange(120, 120), np.arange(120, 300)]
    parts = Passes([block.take(cuts[0]), None, block.take(cuts[1]), block.take(cuts[2])])
    trained = train_index(factory, 8, block)
    index, shard = build_shard(trained, parts, 8)
    order = np.argsort(ids)
    assert parts.passes == 2 and shard.doc_ids.tolist() == sorted(ids.tolist()) and index.ntotal == 300
    np.testing.assert_array_equal(shard.vectors, block.vectors[order])
    assert shard.text_hashes.tolist() == [f"h{i}" for i in shard.doc_ids]
    if factory == "Flat":  # the sorted vectors are the index's own storage, kept alive by the array
        assert shard.vectors.base is not None and not shard.vectors.flags["OWNDATA"]
        del index
    else:
        _, labels = index.search(shard.vectors[:5], 1)
        assert labels[:, 0].tolist() == [0, 1, 2, 3, 4]  # faiss ids are positions in doc_id order
    np.testing.assert_array_equal(shard.vectors, block.vectors[order])


def test_build_shard_takes_a_one_shot_iterator_an_empty_shard_and_refuses_parts_that_change():
    block = DocBlock(np.array(["b", "a"], dtype=object), unit(np.eye(2, 4)), np.array(["hb", "ha"], dtype=object))
    trained = train_index("Flat", 4, concat_blocks([], 4))
    index, shard = build_shard(trained, iter([block]), 4)
    assert shard.doc_ids.tolist() == ["a", "b"] and index.ntotal == 2
    index, shard = build_shard(trained, [None], 4)
    assert index.ntotal == 0 and shard.vectors.shape == (0, 4)

    class Changing:
        passes = 0

        def __iter__(self):
            self.passes += 1
            yield block if self.passes == 1 else block.take(np.array([0]))

    with pytest.raises(RuntimeError, match="held 2 docs on the first pass and 1 on the second"):
        build_shard(trained, Changing(), 4)


def test_fill_shards_reads_groups_paged_through_the_state_api(tmp_path, monkeypatch):
    """With grouped values paged over the state API (as runners page large groups), FillShards gets a lazy
    re-iterable, not a list, reads it twice and writes the same shards."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from transforms import build_index

    seen, real = [], build_index.build_shard

    def spy(trained, parts, dim):
        seen.append(type(parts).__name__)
        return real(trained, parts, dim)

    monkeypatch.setattr(build_index, "build_shard", spy)
    run_dir = str(tmp_path / "run")
    rng = np.random.default_rng(8)
    ids = [f"doc{i}" for i in rng.permutation(230)]
    vectors = unit(rng.standard_normal((230, 16)))
    write_embeddings(run_dir, ids, vectors)
    run = RunLayout(run_dir)
    pipeline = beam.Pipeline(runner=FnApiRunner(use_state_iterables=True))
    stats = run_index(build_config(run_dir, num_shards=2, block_size=20), run, run, [], test_pipeline=pipeline)
    # the first blocks inline, the rest read from state on each pass (bundle_processor._StateBackedIterable)
    assert len(seen) == 2 and set(seen) <= {"_ConcatSequence", "_StateBackedIterable"}
    assert stats["docs_indexed"] == 230
    by_id = dict(zip(ids, vectors))
    for shard in range(2):
        store = load_store(run.shard_store(shard, 2))
        doc_ids = store["doc_ids"].tolist()
        assert doc_ids == sorted(doc_ids) and all(zlib.crc32(d.encode()) % 2 == shard for d in doc_ids)
        np.testing.assert_array_equal(store["vectors"], np.stack([by_id[d] for d in doc_ids]))


def test_ref_blocks_carry_no_vectors_and_load_the_same_doc_rows(tmp_path):
    """The index stage groups RefBlocks (ids, hashes, row-group positions) by shard and reads vectors after:
    per row group, the doc rows (query rows skipped) and, loaded, the same vectors as reading the table."""
    rng = np.random.default_rng(3)
    ids = [f"d{i:03d}" for i in range(230)]
    write_embeddings(str(tmp_path), ids, unit(rng.normal(size=(230, 8))).astype(np.float32))
    paths = sorted(str(p) for p in (tmp_path / "embeddings").iterdir())
    refs = [ref for path in paths for ref in ref_blocks_of_file(path)]
    assert len(refs) == 4 and all(not hasattr(ref, "vectors") for ref in refs)  # 116 + 116 rows, 97 per row group
    expected = concat_blocks([b for path in paths for b in doc_blocks_from_table(pq.read_table(path), 1000)], 8)
    got = concat_blocks([loaded(ref) for ref in refs], 8)
    assert got.doc_ids.tolist() == expected.doc_ids.tolist() == ids
    assert got.text_hashes.tolist() == expected.text_hashes.tolist()
    np.testing.assert_array_equal(got.vectors, expected.vectors)
    part = refs[1].take(np.array([0, 2]))
    np.testing.assert_array_equal(loaded(part).vectors, loaded(refs[1]).vectors[[0, 2]])
