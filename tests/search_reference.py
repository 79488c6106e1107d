"""A reference search for the tests: the global top-k per query through SearchShards (mining does its own).

    blocks | SearchTopK(run, index, k) -> PCollection[(query_id, (scores [<=k] float32, doc_ids [<=k] str))]

The search depth of a query is its payload's `k` (an int payload, a mapping with "k", or an object with
attribute k), else the transform's k.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import numpy as np

from schemas.build_config import IndexConfig
from schemas.layout import RunLayout
from transforms.search import SearchShards
from transforms.search_api import QueryBlock, ShardView
from transforms.topk import merge_topk


def query_depth(payload: Any, default: int) -> int:
    """Search depth of one query: an int payload, payload["k"], payload.k, else default."""
    if isinstance(payload, int | np.integer) and not isinstance(payload, bool):
        return int(payload)
    if isinstance(payload, Mapping) and "k" in payload:
        return int(payload["k"])
    depth = getattr(payload, "k", None)
    return int(depth) if isinstance(depth, int | np.integer) else default


class TopKPerShard:
    """Default ShardQueryFn: per query, this shard's top-depth (scores float32, doc_ids str), padding dropped."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, searcher: ShardView, block: QueryBlock) -> Iterator[tuple[str, tuple[np.ndarray, np.ndarray]]]:
        depths = np.array(
            [query_depth(p, self.k) for p in block.payloads] if block.payloads else [self.k] * len(block)
        )
        for depth in np.unique(depths):  # one search per distinct depth, so one deep query costs only itself
            rows = np.flatnonzero(depths == depth)
            scores, local = searcher.search(block.vectors[rows], int(depth))  # [r, depth] each
            for row, row_scores, row_local in zip(rows, scores, local):
                valid = row_local >= 0
                yield block.query_ids[row], (row_scores[valid], searcher.doc_ids[row_local[valid]])


class MergeTopKFn(beam.DoFn):
    """(query_id, {"depth": [k], "shards": [[(scores, doc_ids) per shard]]}) -> (query_id, merged top-k)."""

    def process(self, element):
        query_id, joined = element
        (depth,), (per_shard,) = joined["depth"], joined["shards"]
        yield query_id, merge_topk(per_shard, depth)


class SearchTopK(beam.PTransform):
    """PCollection[QueryBlock] -> PCollection[(query_id, (scores float32, doc_ids str))], the global top-k.

    k is the default depth; a query's payload may carry its own (see query_depth).
    """

    def __init__(self, run: RunLayout, index: IndexConfig, k: int, groups_per_shard: int | None = 1) -> None:
        super().__init__()
        self._run, self._index, self._k, self._groups = run, index, k, groups_per_shard

    def expand(self, blocks):
        k = self._k
        query_to_depth = blocks | "QueryDepths" >> beam.FlatMap(
            lambda b: zip(b.query_ids, [query_depth(p, k) for p in b.payloads] if b.payloads else [k] * len(b))
        )
        query_to_shard_topk = blocks | "SearchShards" >> SearchShards(
            self._run, self._index, TopKPerShard(k), self._groups
        )
        return (
            {"depth": query_to_depth, "shards": query_to_shard_topk}
            | "JoinDepth" >> beam.CoGroupByKey()
            | "MergeTopK" >> beam.ParDo(MergeTopKFn())
        )
