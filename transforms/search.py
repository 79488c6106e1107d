"""Shard-invariant search over RUN_DIR/index as Beam transforms.

    blocks: PCollection[QueryBlock]
      | SearchShards(run, index, per_shard)   -> PCollection[(query_id, [shard result, ordered by shard])]

Each block is fanned out to every shard and grouped by (shard, query group), so the worker that searches shard s
for a group loads it once (apache_beam.utils.shared: one copy per process, one shard per DoFn instance at a time)
and never holds the whole index; nothing heavy is pickled into the graph. Query groups hold about `group_size`
queries each (their number comes from the query count at run time), so a grouped value - materialised per key by
Flink, Spark and the local runner - stays bounded whatever the number of queries, and a shard is searched by as
many workers as it has groups. Results are grouped back per query_id; top-k
merges break ties by (-round(score, 1e-6), doc_id), so they do not depend on the shard count.
What runs per shard, and how deep, is the ShardQueryFn's business (mining: transforms/mine_shard.MineShardQueries;
the tests' reference top-k: tests/search_reference.py).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from schemas.build_config import ConfigError, IndexConfig
from schemas.layout import RunLayout
from transforms.index import read_index_meta
from transforms.search_api import QueryBlock, ShardQueryFn
from transforms.shard_search import ShardSearcher

logger = logging.getLogger(__name__)
_NAMESPACE = "negforge.search"


def make_query_blocks(
    query_ids: list[str],
    vectors: np.ndarray,
    payloads: list[Any] | None,
    block_size: int,
    prefix: str = "b",
    group: int = 0,
) -> list[QueryBlock]:
    """QueryBlocks of <= block_size queries, sorted by query id (so blocks are the same on every run).

    vectors: [n, dim] float32, L2-normalised; payloads: one per query, or None / [] for none; group: the query group
    the blocks belong to (QueryBlock.group).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != len(query_ids) or (payloads and len(payloads) != len(query_ids)):
        raise ValueError(f"got {len(query_ids)} query ids, {len(vectors)} vectors and {len(payloads or [])} payloads")
    order = sorted(range(len(query_ids)), key=query_ids.__getitem__)
    for a, b in zip(order, order[1:]):
        if query_ids[a] == query_ids[b]:
            raise ValueError(f"query id {str(query_ids[a])!r} appears twice; de-duplicate queries before searching")
    blocks = []
    for number, start in enumerate(range(0, len(order), block_size)):
        rows = order[start : start + block_size]
        blocks.append(
            QueryBlock(
                block_id=f"{prefix}{number:06d}",
                query_ids=[query_ids[i] for i in rows],
                vectors=np.ascontiguousarray(vectors[rows]),  # [m, dim]
                payloads=[payloads[i] for i in rows] if payloads else [],
                group=group,
            )
        )
    return blocks


def query_groups_for(queries: int, group_size: int) -> int:
    """Query groups of about group_size queries each: ceil(queries / group_size), at least 1."""
    return max(1, -(-queries // group_size))


def query_group(query_id: str, groups: int) -> int:
    """The query group of a query id: crc32, so the same on every run and runner."""
    return zlib.crc32(query_id.encode("utf-8")) % groups


class ToQueryBlocks(beam.PTransform):
    """PCollection[(query_id, vector, payload)] -> PCollection[QueryBlock], deterministically.

    Queries are spread over query groups by crc32(query_id); each group is sorted and cut into blocks of
    <= block_size that carry the group's number. group_size: ceil(queries / group_size) groups, the queries counted
    at run time, so a group (one GroupByKey value, listed here to sort it) holds about group_size queries whatever
    the query count. num_groups: that many groups instead (exactly one of the two).
    """

    def __init__(self, block_size: int, num_groups: int | None = None, group_size: int | None = None) -> None:
        super().__init__()
        if (num_groups is None) == (group_size is None):
            raise ValueError("give ToQueryBlocks one of num_groups (a fixed count) or group_size (queries per group)")
        if (num_groups or group_size) < 1:
            raise ValueError(f"num_groups / group_size must be >= 1, got {num_groups or group_size}")
        self._block_size, self._num_groups, self._group_size = block_size, num_groups, group_size

    def expand(self, rows):
        groups = self._num_groups
        if groups is None:  # counted at run time
            groups = beam.pvalue.AsSingleton(
                rows
                | "CountQueries" >> beam.combiners.Count.Globally()
                | "NumGroups" >> beam.Map(query_groups_for, self._group_size)
            )
        query_groups = (
            rows
            | "KeyByQueryGroup" >> beam.Map(lambda row, n: (query_group(row[0], n), row), n=groups)
            | "GroupQueries" >> beam.GroupByKey()
        )
        return query_groups | "CutIntoBlocks" >> beam.FlatMap(_blocks_of_group, self._block_size)


def _blocks_of_group(group_rows: tuple[int, Iterable[tuple]], block_size: int) -> list[QueryBlock]:
    group, rows = group_rows[0], list(group_rows[1])  # about group_size rows (ToQueryBlocks), sorted below
    ids = [row[0] for row in rows]
    vectors = np.stack([np.asarray(row[1], dtype=np.float32) for row in rows])  # [n, dim]
    return make_query_blocks(ids, vectors, [row[2] for row in rows], block_size, prefix=f"g{group:06d}-", group=group)


def _fan_out(
    block: QueryBlock, num_shards: int, groups_per_shard: int | None
) -> Iterator[tuple[tuple[int, int], QueryBlock]]:
    if groups_per_shard is None:
        group = block.group
    else:
        group = zlib.crc32(block.block_id.encode("utf-8")) % groups_per_shard
    for shard in range(num_shards):
        yield (shard, group), block


class _Released:
    """What SearchShardFn's release handle holds: nothing (see SearchShardFn._release)."""


class SearchShardFn(beam.DoFn):
    """((shard, group), blocks) -> (query_id, (shard, per_shard result)); the shard is loaded on the worker.

    A worker holds one shard at a time: the previous one is released before the next loads, and the last one when
    the bundle ends, so the stages fused after this one (merge, text joins) do not run with a shard mapped.
    """

    def __init__(self, run: RunLayout, index: IndexConfig, per_shard: ShardQueryFn) -> None:
        self._run, self._index, self._per_shard = run, index, per_shard
        self._handles = [Shared() for _ in range(index.num_shards)]  # one per-process slot per shard
        self._release_handle = Shared()
        self._queries = Metrics.counter(_NAMESPACE, "queries_searched_per_shard")
        self._loads = Metrics.counter(_NAMESPACE, "shard_loads")
        self._load_ms = Metrics.distribution(_NAMESPACE, "shard_load_ms")

    def setup(self) -> None:
        self._searcher: ShardSearcher | None = None

    def _acquire(self, shard: int) -> ShardSearcher:
        if self._searcher is not None and self._searcher.shard == shard:
            return self._searcher
        self._searcher = None  # release the previous shard before loading the next one

        def load() -> ShardSearcher:
            started = time.monotonic()
            searcher = ShardSearcher.load(self._run, shard, self._index.num_shards, self._index.nprobe)
            self._loads.inc()
            self._load_ms.update(int(1000 * (time.monotonic() - started)))
            return searcher

        tag = (self._run.run_dir, shard, self._index.num_shards, self._index.nprobe)
        self._searcher = self._handles[shard].acquire(load, tag=tag)
        return self._searcher

    def _release(self) -> None:
        if getattr(self, "_searcher", None) is None:
            return
        self._searcher = None
        # apache_beam.utils.shared keeps the object acquired last alive until another Shared object is acquired in
        # the process: acquiring a token lets the shard's mapping go now (a thread still searching it keeps it).
        self._release_handle.acquire(_Released)

    def finish_bundle(self) -> None:
        self._release()

    def teardown(self) -> None:
        self._release()

    def process(self, element):
        (shard, _group), blocks = element
        searcher = self._acquire(shard)
        for block in blocks:  # iterated, never listed: a runner may page a large group in
            for query_id, result in self._per_shard(searcher, block):
                yield query_id, (shard, result)
            self._queries.inc(len(block))


def _check_index_meta(run: RunLayout, index: IndexConfig) -> None:
    if not FileSystems.exists(run.index_meta):
        logger.warning("%s not found; searching %d shards as configured", run.index_meta, index.num_shards)
        return
    meta = read_index_meta(run)
    if meta["num_shards"] != index.num_shards:
        raise ConfigError(
            f"{run.index_meta} holds {meta['num_shards']} shards but the search asks for --num-shards "
            f"{index.num_shards}; use --num-shards {meta['num_shards']} or rebuild the index stage"
        )


class SearchShards(beam.PTransform):
    """PCollection[QueryBlock] -> PCollection[(query_id, [per_shard result for shard 0..n-1])].

    Each shard is searched once per query group, by as many workers as there are groups: groups_per_shard None
    (default) keys each block by its own QueryBlock.group (ToQueryBlocks sizes the groups from the query count);
    an int hashes block ids into that many groups instead. Results do not depend on the grouping.
    """

    def __init__(
        self, run: RunLayout, index: IndexConfig, per_shard: ShardQueryFn, groups_per_shard: int | None = None
    ):
        super().__init__()
        if groups_per_shard is not None and groups_per_shard < 1:
            raise ValueError(f"groups_per_shard must be >= 1, got {groups_per_shard}")
        self._run, self._index, self._per_shard, self._groups = run, index, per_shard, groups_per_shard

    def expand(self, blocks):
        _check_index_meta(self._run, self._index)
        shard_to_blocks = (
            blocks
            | "FanOutToShards" >> beam.FlatMap(_fan_out, self._index.num_shards, self._groups)
            | "GroupByShard" >> beam.GroupByKey()
        )
        query_to_shard_results = (
            shard_to_blocks
            | "SearchEachShard" >> beam.ParDo(SearchShardFn(self._run, self._index, self._per_shard))
            | "GroupByQuery" >> beam.GroupByKey()
        )
        return query_to_shard_results | "OrderByShard" >> beam.MapTuple(
            lambda query_id, results: (query_id, [r for _, r in sorted(results, key=lambda sr: sr[0])])
        )
