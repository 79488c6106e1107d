"""Shard-invariant search: 1, 3 and 7 exact shards give the candidates of one monolithic IndexFlatIP searched a
little deeper and re-sorted by (-round(score, 1e-6), doc_id), planted ties straddling k included."""

from __future__ import annotations

import hashlib
import os

import apache_beam as beam
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import search_reference
from apache_beam.internal.cloudpickle import cloudpickle
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from search_reference import SearchTopK

from pipelines.stage_index import EMBEDDING_COLUMNS
from schemas.build_config import ConfigError, IndexConfig
from schemas.inputs import embeddings_schema
from schemas.layout import RunLayout
from transforms.build_index import BuildShardedIndex
from transforms.index import DocBlock, doc_blocks_from_table, fill_shard, train_index, write_shard
from transforms.search import SearchShards, ToQueryBlocks, make_query_blocks, query_group
from transforms.shard_search import SCAN_BLOCK_BYTES, ShardSearcher, load_store, read_rows, scan_scores
from transforms.topk import merge_topk, round_scores

# tests/ is not on the path of multi-processing workers: ship the reference search by value
cloudpickle.register_pickle_by_value(search_reference)

K = 8
SHARD_COUNTS = (1, 3, 7)
DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted_corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Docs drawn from 60 base vectors (about 5 exact copies each, under unrelated ids) + noisy queries."""
    rng = np.random.default_rng(11)
    base = unit(rng.standard_normal((60, DIM)))
    docs = base[rng.integers(0, 60, 320)]  # [320, DIM], exact duplicates -> exact ties
    ids = np.array([hashlib.md5(str(i).encode()).hexdigest()[:10] for i in range(len(docs))])
    queries = unit(base[rng.integers(0, 60, 30)] + 0.4 * rng.standard_normal((30, DIM)) / np.sqrt(DIM))
    return ids, docs, queries


def oracle_topk(ids: np.ndarray, docs: np.ndarray, queries: np.ndarray, k: int, extra: int = 24) -> dict:
    """Monolithic IndexFlatIP searched k + extra deep, re-scored exactly and re-sorted by (-round(score), id)."""
    mono = faiss.IndexFlatIP(DIM)
    mono.add(docs)
    _, candidates = mono.search(queries, k + extra)  # [nq, k + extra]
    expected = {}
    for q, row in enumerate(candidates):
        scores = (docs[row].astype(np.float64) * queries[q].astype(np.float64)).sum(-1).astype(np.float32)
        order = np.lexsort((ids[row], -round_scores(scores)))
        rounded = round_scores(scores[order])
        assert rounded[-1] < rounded[k - 1] - 1e-4, "the oracle must search deep enough to see every tie at k"
        expected[f"q{q:02d}"] = (ids[row][order][:k].tolist(), scores[order][:k])
    return expected


def write_embeddings(run_dir: str, ids: np.ndarray, docs: np.ndarray) -> None:
    os.makedirs(os.path.join(run_dir, "embeddings"), exist_ok=True)
    table = pa.table(
        {
            "id": ids.tolist(),
            "kind": ["doc"] * len(ids),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(docs.ravel()), DIM),
            "text_hash": [f"h-{i}" for i in ids],
        },
        schema=embeddings_schema(DIM),
    )
    pq.write_table(table, os.path.join(run_dir, "embeddings", "part-00000.parquet"), row_group_size=64)


def index_config(num_shards: int) -> IndexConfig:
    return IndexConfig(num_shards=num_shards, block_size=40)


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> dict[int, RunLayout]:
    """The planted corpus indexed with 1, 3 and 7 exact shards by the index stage's transforms (one pipeline)."""
    ids, docs, _ = planted_corpus()
    source = str(tmp_path_factory.mktemp("embedded"))
    write_embeddings(source, ids, docs)
    runs = {n: RunLayout(str(tmp_path_factory.mktemp(f"run{n}"))) for n in SHARD_COUNTS}
    with BeamTestPipeline() as pipeline:
        doc_blocks = (
            pipeline
            | beam.io.ReadFromParquetBatched(
                os.path.join(source, "embeddings", "*.parquet"), columns=EMBEDDING_COLUMNS
            )
            | beam.FlatMap(doc_blocks_from_table, 40)
        )
        for num_shards, run in runs.items():
            _ = doc_blocks | f"Build{num_shards}" >> BuildShardedIndex(index_config(num_shards), DIM, 13, run)
    return runs


def searchers_of(run: RunLayout, num_shards: int) -> list[ShardSearcher]:
    return [ShardSearcher.load(run, shard, num_shards, nprobe=1) for shard in range(num_shards)]


def check_against(expected: dict, depth_of: dict):
    """A Beam matcher: every query's merged top-k equals the oracle (ids exactly, scores within 1e-6)."""

    def check(actual):
        got = {query_id: (ids.tolist(), scores) for query_id, (scores, ids) in actual}
        if sorted(got) != sorted(expected):
            raise BeamAssertException(f"queries differ: {sorted(set(got) ^ set(expected))}")
        for query_id, (want_ids, want_scores) in expected.items():
            depth = depth_of.get(query_id, K)
            ids, scores = got[query_id]
            if ids != want_ids[:depth] or not np.allclose(scores, want_scores[:depth], atol=1e-6):
                raise BeamAssertException(f"{query_id}: got {ids} expected {want_ids[:depth]}")

    return check


def search_every_layout(pipeline, runs: dict[int, RunLayout], depth_of: dict) -> None:
    ids, docs, queries = planted_corpus()
    expected = oracle_topk(ids, docs, queries, max(depth_of.values(), default=K))
    rows = [(f"q{q:02d}", queries[q], {"k": depth_of[f"q{q:02d}"]} if f"q{q:02d}" in depth_of else None)
            for q in range(len(queries))]  # fmt: skip
    blocks = pipeline | "Queries" >> beam.Create(rows) | "Blocks" >> ToQueryBlocks(block_size=7, num_groups=3)
    for num_shards, run in runs.items():
        merged = blocks | f"SearchTopK{num_shards}" >> SearchTopK(run, index_config(num_shards), K)
        assert_that(merged, check_against(expected, depth_of), label=f"Check{num_shards}")


def test_planted_ties_straddle_k():
    ids, docs, queries = planted_corpus()
    expected = oracle_topk(ids, docs, queries, K + 1)
    straddling = [q for q, (_, s) in expected.items() if round_scores(s[K - 1]) == round_scores(s[K])]
    assert len(straddling) >= 5  # the cut at k falls inside a group of exact duplicates for these queries


def test_one_three_and_seven_shard_searchers_merge_to_the_monolithic_oracle(sharded_runs):
    ids, docs, queries = planted_corpus()
    expected = oracle_topk(ids, docs, queries, K)
    for num_shards, run in sharded_runs.items():
        searchers = searchers_of(run, num_shards)
        assert sum(s.ntotal for s in searchers) == len(ids)
        per_shard = [s.search(queries, K) for s in searchers]  # each ([nq, K], [nq, K])
        for q in range(len(queries)):
            parts = []
            for searcher, (scores, local) in zip(searchers, per_shard):
                valid = local[q] >= 0
                parts.append((scores[q][valid], searcher.doc_ids[local[q][valid]]))
            scores, found = merge_topk(parts, K)
            want_ids, want_scores = expected[f"q{q:02d}"]
            assert found.tolist() == want_ids, (num_shards, q)
            np.testing.assert_allclose(scores, want_scores, atol=1e-6)


def test_search_topk_in_process_with_per_query_depth(sharded_runs):
    depth_of = {"q03": 20, "q17": 2}  # payload-driven depth: one query deeper, one shallower
    with BeamTestPipeline() as pipeline:
        search_every_layout(pipeline, {3: sharded_runs[3]}, depth_of)


@pytest.mark.slow
def test_one_three_and_seven_shards_equal_the_oracle_under_multiprocessing(sharded_runs):
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    with beam.Pipeline(options=options) as pipeline:
        search_every_layout(pipeline, sharded_runs, {})


def test_search_shards_orders_results_by_shard_and_checks_the_shard_count(sharded_runs):
    run = sharded_runs[7]
    blocks = make_query_blocks(["qa", "qb"], planted_corpus()[2][:2], None, block_size=1)

    def shard_sizes(searcher, block):
        for query_id in block.query_ids:
            yield query_id, (searcher.shard, searcher.ntotal)

    sizes = [len(load_store(run.shard_store(s, 7))["doc_ids"]) for s in range(7)]
    with BeamTestPipeline() as pipeline:
        results = pipeline | beam.Create(blocks) | SearchShards(run, index_config(7), shard_sizes, groups_per_shard=2)
        assert_that(results, lambda got: _equal(sorted(got), [(q, list(enumerate(sizes))) for q in ("qa", "qb")]))
    with pytest.raises(ConfigError, match="holds 7 shards but the search asks for --num-shards 3"):
        with BeamTestPipeline() as pipeline:
            _ = pipeline | beam.Create(blocks) | SearchShards(run, index_config(3), shard_sizes)


def _equal(got, want):
    if got != want:
        raise BeamAssertException(f"got {got}, want {want}")


def test_make_query_blocks_is_sorted_and_deterministic():
    vectors = unit(np.random.default_rng(0).standard_normal((5, 4)))
    blocks = make_query_blocks(["c", "a", "e", "b", "d"], vectors, [3, 1, 5, 2, 4], block_size=2)
    assert [b.query_ids for b in blocks] == [["a", "b"], ["c", "d"], ["e"]]
    assert [b.payloads for b in blocks] == [[1, 2], [3, 4], [5]]
    np.testing.assert_array_equal(blocks[0].vectors, vectors[[1, 3]])
    with pytest.raises(ValueError, match="query id 'a' appears twice"):
        make_query_blocks(["a", "a"], vectors[:2], None, 2)


def test_query_groups_follow_the_query_count():
    """30 queries, group_size 7: ceil(30 / 7) = 5 groups counted at run time, each cut into blocks of <= 4 that
    carry the group; every query lands in exactly one block, the block of its crc32 group."""
    vectors = unit(np.random.default_rng(1).standard_normal((30, 4)))
    rows = [(f"q{i:02d}", vectors[i], i) for i in range(30)]

    def check(blocks):
        queries = [q for b in blocks for q in b.query_ids]
        _equal(sorted(queries), sorted(r[0] for r in rows))
        _equal(sorted({b.group for b in blocks}), [0, 1, 2, 3, 4])
        _equal([b for b in blocks if len(b) > 4 or any(query_group(q, 5) != b.group for q in b.query_ids)], [])

    with BeamTestPipeline() as pipeline:
        blocks = pipeline | beam.Create(rows) | ToQueryBlocks(block_size=4, group_size=7)
        assert_that(blocks, check)
    with pytest.raises(ValueError, match="one of num_groups"):
        ToQueryBlocks(block_size=4, num_groups=2, group_size=7)


def test_searching_per_query_group_gives_the_results_of_one_group(sharded_runs):
    """Blocks keyed by their own query group (the default) or all in one group: the same merged top-k."""
    ids, docs, queries = planted_corpus()
    expected = oracle_topk(ids, docs, queries, K)
    rows = [(f"q{q:02d}", queries[q], None) for q in range(len(queries))]
    with BeamTestPipeline() as pipeline:
        for name, group_size in (("One", 1000), ("Many", 4)):
            blocks = pipeline | f"Queries{name}" >> beam.Create(rows) | f"Blocks{name}" >> ToQueryBlocks(
                block_size=3, group_size=group_size
            )
            merged = blocks | f"Search{name}" >> SearchTopK(sharded_runs[3], index_config(3), K, None)
            assert_that(merged, check_against(expected, {}), label=f"Check{name}")


# --- ShardSearcher without Beam ---------------------------------------------------------------------------------


class TiesLastIndex:
    """A Flat-like index that returns tied candidates largest label first (faiss promises no tie order)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors, (self.ntotal, self.d) = vectors, vectors.shape
        self.depths: list[int] = []

    def search(self, queries, depth):
        self.depths.append(depth)
        scores = queries @ self.vectors.T  # [nq, ntotal]
        labels = np.broadcast_to(np.arange(self.ntotal), scores.shape)
        order = np.lexsort((-labels, -scores), axis=-1)[:, :depth]
        return np.take_along_axis(scores, order, -1), order.astype(np.int64)


def test_exact_search_deepens_until_ties_at_k_are_resolved_by_doc_id():
    rng = np.random.default_rng(5)
    vectors = np.vstack(
        [np.tile(unit(np.eye(1, DIM)), (40, 1)), unit(rng.standard_normal((60, DIM)) - 3 * np.eye(1, DIM))]
    )
    ids = np.array([f"a{i:02d}" for i in range(40)] + [f"b{i:02d}" for i in range(60)])  # sorted, like a store
    stub = TiesLastIndex(vectors)
    store = {"doc_ids": ids, "text_hashes": ids, "vectors": vectors}
    searcher = ShardSearcher(0, 1, stub, store, exact=True)
    scores, local = searcher.search(unit(np.eye(1, DIM)), 5)
    assert ids[local[0]].tolist() == ["a00", "a01", "a02", "a03", "a04"]
    assert stub.depths == [21, 42]  # k + margin was inside the 40-way tie, so the query was searched deeper
    np.testing.assert_allclose(scores[0], 1.0, atol=1e-6)


def test_approximate_shard_scores_are_exact_and_padded(tmp_path):
    rng = np.random.default_rng(9)
    vectors = unit(rng.standard_normal((600, DIM)))
    ids = np.array([f"d{i:04d}" for i in range(600)])
    block = DocBlock(ids, vectors, ids)
    run = RunLayout(str(tmp_path))
    index, docs = fill_shard(train_index("IVF4,PQ4", DIM, block), block)
    write_shard(run, 0, 1, index, docs)
    searcher = ShardSearcher.load(run, 0, 1, nprobe=2)
    assert not searcher.is_exact and searcher.ntotal == 600
    queries = unit(rng.standard_normal((6, DIM)))
    scores, local = searcher.search(queries, 20)
    for q in range(6):
        valid = local[q] >= 0
        exact = vectors[local[q][valid]].astype(np.float64) @ queries[q].astype(np.float64)
        np.testing.assert_allclose(scores[q][valid], exact, atol=1e-6)  # PQ scores replaced by exact ones
        assert np.all(np.diff(round_scores(scores[q][valid])) <= 0)
    small = ShardSearcher(0, 1, faiss.IndexFlatIP(DIM), {"doc_ids": ids[:0], "text_hashes": ids[:0],
                                                          "vectors": vectors[:0]})  # fmt: skip
    scores, local = small.search(queries[:2], 3)
    assert (local == -1).all() and np.isneginf(scores).all()


def test_scan_scores_and_read_rows_on_an_unaligned_store(tmp_path):
    """scan_scores multiplies a mapped store block by block (np.savez leaves the vectors at an unaligned offset,
    which numpy would copy whole per product); read_rows reads rows through the file, not the mapping."""
    rng = np.random.default_rng(3)
    vectors = unit(rng.standard_normal((301, DIM))).astype(np.float32)
    ids = np.array([f"d{i:04d}" for i in range(301)])
    run = RunLayout(str(tmp_path))
    index, docs = fill_shard(train_index("Flat", DIM, DocBlock(ids, vectors, ids)), DocBlock(ids, vectors, ids))
    write_shard(run, 0, 1, index, docs)
    stored = load_store(run.shard_store(0, 1))["vectors"]
    assert isinstance(stored, np.memmap) and stored.offset % 4 != 0 and not stored.flags.aligned
    queries = unit(rng.standard_normal((5, DIM))).astype(np.float32)
    want = queries.astype(np.float64) @ np.asarray(stored, np.float64).T
    for block_bytes in (4 * DIM * 7, SCAN_BLOCK_BYTES):  # 43 blocks (the last one short), then one block
        got = scan_scores(stored, queries, block_bytes)
        assert got.dtype == np.float32 and got.shape == (5, 301)
        np.testing.assert_allclose(got, want, atol=DIM * np.finfo(np.float32).eps)
    rows = [300, 0, 17, 17]
    np.testing.assert_array_equal(read_rows(stored, rows), np.asarray(stored[rows]))
    np.testing.assert_array_equal(read_rows(vectors, rows), vectors[rows])  # an in-memory array: indexed
    assert read_rows(stored, []).shape == (0, DIM)
    with pytest.raises(IndexError):
        read_rows(stored, [301])


def test_search_shard_fn_releases_its_shard_when_the_bundle_ends(sharded_runs):
    """A worker holds one shard at a time and none after a bundle (Beam's Shared keeps the last object it handed
    out alive until another is acquired), so stages fused after the search do not run with a shard mapped."""
    import gc
    import weakref

    from transforms.search import SearchShardFn

    num_shards = 3
    fn = SearchShardFn(sharded_runs[num_shards], index_config(num_shards), lambda searcher, block: [])
    fn.setup()
    first = weakref.ref(fn._acquire(0))
    second = weakref.ref(fn._acquire(1))
    gc.collect()
    assert first() is None and second() is not None  # the previous shard went before the next one was used
    fn.finish_bundle()
    gc.collect()
    assert second() is None
    fn.teardown()  # nothing held: a no-op
