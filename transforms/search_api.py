"""The interface between the sharded search (transforms/search.py) and what runs per shard (e.g. mining).

A QueryBlock carries many queries through Beam as one element (vectors as one array), so a large query
set does not drown in per-element overhead. SearchShards fans each block out to every shard; on the
worker that holds the shard, a ShardQueryFn turns (searcher, block) into per-query shard results, which
SearchShards then groups per query_id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class QueryBlock:
    block_id: str
    query_ids: list[str]
    vectors: np.ndarray  # [n, dim] float32, L2-normalised
    payloads: list[Any] = field(default_factory=list)  # one small picklable object per query (or empty)
    group: int = 0  # the query group it was cut from: SearchShards searches each (shard, group) as one task

    def __len__(self) -> int:
        return len(self.query_ids)


class ShardView(Protocol):
    """What a per-shard function may use of one loaded shard (see transforms/shard_search.ShardSearcher)."""

    shard: int
    num_shards: int
    ntotal: int
    doc_ids: Any  # [ntotal] str, global ids: doc_ids[rows] -> [len(rows)] object array of str (StringColumn)
    text_hashes: Any  # [ntotal] str, the same way
    vectors: np.ndarray  # [ntotal, dim] float32, exact (memory-mapped where possible)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query: (scores [nq, k] float32 exact, local_idx [nq, k] int64), rows ordered by
        (-round(score, 1e-6), doc_id); padded with (-inf, -1) when the shard holds fewer than k."""
        ...


class ShardQueryFn(Protocol):
    """Picklable, small-config callable run per (shard, block) on the worker holding the shard."""

    def __call__(self, searcher: ShardView, block: QueryBlock) -> Iterable[tuple[str, Any]]:
        """Yield (query_id, shard_result) for the queries of the block."""
        ...
