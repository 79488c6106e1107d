"""Index sizing from the corpus size and a per-worker memory budget (`--worker-memory-gb`).

A worker that builds or searches one shard holds that shard's vectors a few times over: while building, the
grouped DocBlocks, the sorted shard and the faiss index (about three copies); while searching, the index and
the exact-rescoring store (two). So the number of shards grows with docs x dim / budget, and never drops below
the historical default of 4 (small corpora keep their old layout and rows). Explicit --num-shards wins.
"""

from __future__ import annotations

import math

DEFAULT_MIN_SHARDS = 4
VECTOR_COPIES = 3  # per doc, while a shard is built (the search side holds two)
PER_DOC_OVERHEAD_BYTES = 128  # ids, text hashes, Python/arrow bookkeeping
WORKER_FIXED_GB = 1.25  # interpreter, Beam harness, torch and a small model, before any shard
MAX_SHARDS = 4096


def shard_bytes_per_doc(dim: int) -> int:
    return VECTOR_COPIES * 4 * dim + PER_DOC_OVERHEAD_BYTES


def shards_for(docs: int, dim: int, worker_memory_gb: float, minimum: int = DEFAULT_MIN_SHARDS) -> int:
    """Shards so that one shard's build fits in what the budget leaves after a worker's fixed cost."""
    budget = max(worker_memory_gb - WORKER_FIXED_GB, 0.25) * 1e9
    needed = math.ceil(docs * shard_bytes_per_doc(dim) / budget) if docs > 0 else 1
    return int(min(max(minimum, needed), MAX_SHARDS))


def estimated_worker_gb(docs: int, dim: int, num_shards: int) -> float:
    """What one shard worker is expected to hold at peak (the model above, for the README and logs)."""
    return WORKER_FIXED_GB + math.ceil(docs / max(num_shards, 1)) * shard_bytes_per_doc(dim) / 1e9
