"""Index sizing from the corpus size and a per-worker memory budget (`--worker-memory-gb`): shards and factory.

Shards. The index stage groups only doc ids and text hashes by shard (transforms.index.RefBlock, ~200 bytes
per doc); the worker that builds a shard reads the vectors itself, one Parquet row group at a time, straight
into one preallocated array in doc_id order, which for Flat is the index's own storage
(transforms.index.build_shard). So a shard build holds its vectors once (VECTOR_COPIES = 1) plus its ids and
hashes (Python str, grouped refs, their sort order and packed copies) and one row group: PER_DOC_OVERHEAD_BYTES.
Measured in the pipeline (bench/scale.py --trace-bundles, 2 SDK workers, 4 shards, 2026-11-26): the
FillShards bundle grew a worker by 132-140 MiB at 25k docs per shard and 262-292 MiB at 100k, i.e. <= 3.1 KB
per doc of the shard at 384-d (each worker built 2 shards in one bundle, so this is an upper bound); the
constants give 1 x 4 x 384 + 1,600 = 3,136 bytes. Before (vectors shuffled to the shard's worker), the same
bundle grew it by ~5.5 KB per shard doc plus ~3.4 KB per doc of the worker's whole partition: the local
runners send a worker all the groups of its partition of a grouped stage in ONE data-channel message
(fn_runner._send_input_to_worker), a cost that followed docs / --direct_num_workers whatever the shard count.
Mining (transforms/mine_shard.MineShardQueries) holds one shard at a time, memory-mapped, and scans every stored
vector: its clean file pages (the store: 4 x dim + ~40 bytes per doc, ~1.6 KB at 384-d) sit in the worker's RSS as
mapped file pages, bounded by the shard size chosen here for the build (half the build's per-doc bytes); the worker's
anonymous memory stays near constant (float32 scan scores of <= 64 MiB per chunk of queries, stored vectors
multiplied in 16 MiB blocks: transforms/shard_search.scan_scores; positives' rows read, not mapped). Measured
(bench/scale.py --rerun-from mine, 2,000 queries, 2026-11-26; bench/results/scale_mine_fit.json): at 25k, 100k
and 400k docs per shard a worker's peak anonymous memory was 432, 468 and 384 MiB, its mapped files 143, 260 and
712 MiB (one shard store plus ~100 MiB of libraries); extrapolated to the 833k docs per shard of 10M docs at 12
shards: ~0.5 GB anonymous + ~1.5 GB mapped, ~2 GB per worker.
The number of shards grows with docs x dim / budget and never drops below the historical default of 4 (small
corpora keep their old layout and rows). An explicit --num-shards wins.

Factory. With no explicit --index-factory: Flat (exact) up to FLAT_MAX_DOCS docs; past that an IVF-PQ index
whose candidates are re-scored exactly from the shard's stored vectors (transforms/shard_search.py), so every
score and mining guard stays exact and only recall depends on the approximation. Flat compares every query
with every doc (queries x docs x dim); at 1M x 384 bench/index_scale.py searched 10k queries 5.5x slower with
Flat than with IVF1024,PQ32, and a Flat shard's whole index is read per query batch, where IVF-PQ reads
m + 8 bytes per doc of the probed lists plus the re-ranked rows. The budget enters through the shard count:
the lists are sized to the docs per shard. An explicit --index-factory (or --nprobe) wins.
"""

from __future__ import annotations

import dataclasses
import math

from schemas.build_config import IndexConfig

DEFAULT_MIN_SHARDS = 4
VECTOR_COPIES = 1  # per doc while a shard is built: the index's array (vectors are read, not shuffled, there)
PER_DOC_OVERHEAD_BYTES = 1600  # ids, text hashes (str), refs, sort order, packed copies: <= 3.1 KB/doc measured
WORKER_FIXED_GB = 1.25  # interpreter, Beam harness, torch and a small model, before any shard
MAX_SHARDS = 4096

FLAT_MAX_DOCS = 1_000_000  # corpus size up to which the default factory is Flat (exact search)
IVF_LISTS_PER_SQRT_DOC = 4  # nlist ~ 4 x sqrt(docs per shard) (faiss's guideline: 4 to 16 x sqrt(n))
IVF_TRAIN_PER_LIST = 39  # faiss's k-means wants >= 39 training vectors per list: nlist <= train vectors / 39
PQ_MAX_SUB_DIMS = 8  # dims per PQ sub-quantiser (8 bits each): m = dim / 8 when 8 divides dim (384 -> PQ48)
NPROBE_LIST_FRACTION = 32  # nprobe = nlist / 32, at least MIN_NPROBE
MIN_NPROBE = 16


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


def ivf_lists_for(shard_docs: int, train_vectors: int) -> int:
    """IVF lists: the power of two nearest 4 x sqrt(docs per shard), halved until train_vectors / 39 allow it."""
    nlist = 2 ** max(0, round(math.log2(IVF_LISTS_PER_SQRT_DOC * math.sqrt(max(shard_docs, 1)))))
    while nlist > 1 and nlist * IVF_TRAIN_PER_LIST > train_vectors:
        nlist //= 2
    return nlist


def pq_subquantizers_for(dim: int) -> int:
    """PQ sub-quantisers m: the smallest divisor of dim leaving <= 8 dims each (faiss needs dim % m == 0)."""
    return next(m for m in range(1, dim + 1) if dim % m == 0 and dim // m <= PQ_MAX_SUB_DIMS)


def nprobe_for(nlist: int) -> int:
    return min(nlist, max(MIN_NPROBE, nlist // NPROBE_LIST_FRACTION))


@dataclasses.dataclass(frozen=True)
class IndexChoice:
    factory: str
    nprobe: int | None  # None: no lists to probe (Flat)
    reason: str


def choose_index(docs: int, dim: int, num_shards: int, train_sample: int) -> IndexChoice:
    """The default factory for `docs` docs of `dim` dims in `num_shards` shards (see the module docstring)."""
    if docs <= FLAT_MAX_DOCS:
        return IndexChoice("Flat", None, f"{docs:,} docs <= {FLAT_MAX_DOCS:,}: exact search stays cheap")
    shard_docs = math.ceil(docs / max(num_shards, 1))
    nlist = ivf_lists_for(shard_docs, min(train_sample, docs))
    m, nprobe = pq_subquantizers_for(dim), nprobe_for(nlist)
    reason = (
        f"{docs:,} docs > {FLAT_MAX_DOCS:,}: IVF-PQ with exact re-rank; {num_shards} shards of ~{shard_docs:,} docs "
        f"-> {nlist} lists (~{IVF_LISTS_PER_SQRT_DOC} x sqrt, <= train_sample {train_sample:,} / "
        f"{IVF_TRAIN_PER_LIST}), PQ{m} ({dim // m} dims per code byte), nprobe {nprobe} (lists / "
        f"{NPROBE_LIST_FRACTION}, >= {MIN_NPROBE})"
    )
    return IndexChoice(f"IVF{nlist},PQ{m}", nprobe, reason)


def size_index_config(index: IndexConfig, docs: int, dim: int) -> IndexConfig:
    """The index section sized for `docs` docs: shards (if auto_shards), then factory and nprobe (if auto)."""
    num_shards = shards_for(docs, dim, index.worker_memory_gb) if index.auto_shards else index.num_shards
    changes: dict = {"num_shards": num_shards}
    if index.auto_factory:
        choice = choose_index(docs, dim, num_shards, index.train_sample)
        changes.update(index_factory=choice.factory, factory_reason=choice.reason)
        if index.auto_nprobe and choice.nprobe is not None:
            changes["nprobe"] = choice.nprobe
    return dataclasses.replace(index, **changes)
