"""One loaded index shard (search_api.ShardView): faiss finds candidates, exact stored vectors score them.

Scores returned are always recomputed exactly from the shard's stored vectors (float32 inputs, float64
products summed along the dimension, so a score depends only on the two vectors, never on batch or shard
composition), and rows are ordered by (-round(score, 1e-6), doc_id). Shards store docs sorted by doc_id,
so breaking ties by local position is breaking them by doc_id.

- Exact shards (Flat): faiss is searched k + margin deep; if faiss's last candidate could still tie with or
  beat the k-th exact score (within float32 error), that query is searched twice as deep, until the top k
  is provably the exact top k, planted ties straddling k included.
- Approximate shards (IVF, PQ, HNSW): faiss is searched `rerank` x k deep and the candidates re-scored
  exactly, so every margin decision downstream sees exact scores (recall still depends on nprobe).
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile

import faiss
import numpy as np

from schemas.layout import STORE_FORMAT, RunLayout
from transforms.string_column import StringColumn, as_object_strings
from transforms.topk import SCORE_GRID, round_scores

logger = logging.getLogger(__name__)

EXACT_MARGIN = 16  # extra depth searched on exact shards so ties around k are seen (at least k // 4)
DEFAULT_RERANK = 4  # approximate shards: candidates searched per result wanted, then re-scored exactly (was 2:
# on 100k x 384 clustered vectors IVF1024,PQ48 recall@100 went 0.985 -> 0.988 at nprobe 16, 0.987 -> 0.992 at 32)
_GATHER_BYTES = 32 * 2**20  # float64 candidate vectors gathered at once while re-scoring
SCAN_BLOCK_BYTES = 16 * 2**20  # stored vectors multiplied at once by scan_scores
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header (30 bytes)


def load_store(path: str) -> dict:
    """A shard store (transforms.index.write_shard): {"vectors": [n, dim] float32, "doc_ids": StringColumn,
    "text_hashes": StringColumn}, every array memory-mapped from the file (read-only)."""
    arrays = load_npz(path)
    found = int(arrays["format"][0]) if "format" in arrays else 1
    if found != STORE_FORMAT:
        raise ValueError(
            f"{path}: shard store format {found}, this negforge reads format {STORE_FORMAT}; the index was built by "
            "another version: rebuild the index stage (run the build again with --overwrite; --resume would reuse "
            "the old index)"
        )
    store = {"vectors": arrays["vectors"]}
    for name in ("doc_ids", "text_hashes"):
        store[name] = StringColumn(arrays[f"{name}.data"], arrays[f"{name}.offsets"])
    return store


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Arrays of an uncompressed .npz, memory-mapped (read-only); compressed members are read into memory."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            raw.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            raw.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])  # + name + extra
            version = np.lib.format.read_magic(raw)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(raw)
            if dtype.hasobject:
                raise ValueError(f"{path}: member {name} holds Python objects; shard stores hold plain arrays only")
            if int(np.prod(shape)) == 0:
                arrays[name] = np.zeros(shape, dtype)  # an empty region cannot be mapped
            else:
                order = "F" if fortran else "C"
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape, order=order)
    return arrays


def scan_scores(vectors: np.ndarray, queries: np.ndarray, block_bytes: int = SCAN_BLOCK_BYTES) -> np.ndarray:
    """float32 scores of every stored vector: queries [c, dim] @ vectors [n, dim].T -> [c, n], one block of
    stored rows at a time.

    A shard store's vectors are memory-mapped wherever np.savez put them in the file, which is rarely a multiple
    of 4 bytes; numpy hands BLAS aligned operands only, so one product with the whole unaligned array copies the
    whole shard into anonymous memory first (per product). Block by block that copy is bounded by block_bytes;
    each score is still one float32 dot product over dim (float32 BLAS, exact only within float32 error).
    """
    vectors = np.asarray(vectors)  # a memmap's plain ndarray view: no copy
    queries = np.ascontiguousarray(queries, dtype=np.float32)  # [c, dim]
    n, dim = vectors.shape
    out = np.empty((len(queries), n), np.float32)  # [c, n]
    rows = max(1, block_bytes // (4 * max(dim, 1)))
    for start in range(0, n, rows):
        block = vectors[start : start + rows]
        if block.dtype != np.float32 or not block.flags.aligned or not block.flags.c_contiguous:
            block = np.array(block, dtype=np.float32)  # [rows, dim] aligned copy, bounded
        np.matmul(queries, block.T, out=out[:, start : start + len(block)])
    return out


def read_rows(vectors: np.ndarray, rows) -> np.ndarray:
    """vectors[rows] as float32 [len(rows), dim]. A memory-mapped store (np.memmap, as load_store returns) is read
    through its file with pread, so none of its pages enter the process's mappings: a gather through the mapping
    maps the ~64 KB around each row (the kernel's fault-around), which for rows spread over many shards (judged
    positives) adds up to most of every store."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    dim = int(vectors.shape[1])
    if not isinstance(vectors, np.memmap) or vectors.dtype != np.float32 or not vectors.flags.c_contiguous:
        return np.asarray(vectors[rows], dtype=np.float32).reshape(len(rows), dim)
    if rows.size and not (0 <= rows.min() and rows.max() < len(vectors)):
        raise IndexError(f"rows {rows.min()}..{rows.max()} out of range for {len(vectors)} stored vectors")
    out = np.empty((len(rows), dim), np.float32)
    row_bytes, offset = 4 * dim, vectors.offset
    fd = os.open(vectors.filename, os.O_RDONLY)
    try:
        for target, row in zip(out, rows.tolist()):
            if os.preadv(fd, [target], offset + row * row_bytes) != row_bytes:  # straight into the output row
                raise OSError(f"{vectors.filename}: short read of stored row {row}")
    finally:
        os.close(fd)
    return out


def _read_index(path: str) -> faiss.Index:
    try:  # codes / inverted lists stay memory-mapped from the file where faiss supports it
        return faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        return faiss.read_index(path)


def _strings(column) -> StringColumn | np.ndarray:
    """A store's string column as given (StringColumn), or any other sequence as an object array of str."""
    return column if isinstance(column, StringColumn) else as_object_strings(column)


def is_exact_index(index: faiss.Index) -> bool:
    """True for brute-force indexes (Flat, IDMap over Flat)."""
    index = faiss.downcast_index(index)
    if "IDMap" in type(index).__name__:
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexFlat)


def _set_nprobe(index: faiss.Index, nprobe: int) -> None:
    try:
        faiss.extract_index_ivf(index).nprobe = nprobe
    except RuntimeError:
        pass  # not an IVF index: nothing to probe


class ShardSearcher:
    """One shard of RUN_DIR/index, implementing search_api.ShardView."""

    def __init__(
        self,
        shard: int,
        num_shards: int,
        index: faiss.Index,
        store: dict[str, np.ndarray],
        rerank: int = DEFAULT_RERANK,
        exact: bool | None = None,
    ) -> None:
        """exact: whether faiss's candidates are exhaustive (None: Flat indexes are; see is_exact_index)."""
        self.shard = shard
        self.num_shards = num_shards
        self.index = index
        self.doc_ids = _strings(store["doc_ids"])  # [ntotal] str, sorted; doc_ids[rows] -> object array
        self.text_hashes = _strings(store["text_hashes"])  # [ntotal] str
        self.vectors = store["vectors"]  # [ntotal, dim] float32, exact (memory-mapped)
        self.ntotal = len(self.doc_ids)
        self.dim = int(self.vectors.shape[1])
        self.is_exact = is_exact_index(index) if exact is None else exact
        self.rerank = max(1, int(rerank))
        if index.ntotal != self.ntotal or index.d != self.dim:
            raise ValueError(
                f"shard {shard}: index holds {index.ntotal} x {index.d} but the store {self.ntotal} x {self.dim}; "
                "the two files come from different builds: rebuild the index stage"
            )
        # float32 error bound of a dot product of unit vectors, plus one grid step (see search())
        self._slack = self.dim * float(np.finfo(np.float32).eps) + SCORE_GRID

    @classmethod
    def load(
        cls, run: RunLayout, shard: int, num_shards: int, nprobe: int, rerank: int = DEFAULT_RERANK
    ) -> ShardSearcher:
        """Load shard `shard` of `num_shards` from run.index_dir (gs:// files are copied once per machine, shared
        by its worker processes: transforms/local_cache.py; the store is memory-mapped from that copy)."""
        from transforms.local_cache import machine_local_copy

        index_path = machine_local_copy(run.shard_index(shard, num_shards))
        store_path = machine_local_copy(run.shard_store(shard, num_shards))
        searcher = cls(shard, num_shards, _read_index(index_path), load_store(store_path), rerank)
        _set_nprobe(searcher.index, nprobe)
        logger.info("loaded shard %d/%d: %d docs, exact=%s", shard, num_shards, searcher.ntotal, searcher.is_exact)
        return searcher

    def _first_depth(self, k: int) -> int:
        if self.is_exact:
            return k + max(EXACT_MARGIN, k // 4)
        return max(k * self.rerank, k + EXACT_MARGIN)

    def rescore(self, queries: np.ndarray, local_idx: np.ndarray) -> np.ndarray:
        """Exact cos(query, doc) of candidates: queries [nq, dim], local_idx [nq, m] (-1: none) -> [nq, m] float32."""
        out = np.full(local_idx.shape, -np.inf, np.float32)
        if local_idx.size == 0:
            return out
        safe = np.where(local_idx >= 0, local_idx, 0)
        rows = max(1, _GATHER_BYTES // (8 * self.dim * local_idx.shape[1]))
        for start in range(0, len(queries), rows):
            stop = start + rows
            candidates = np.asarray(self.vectors[safe[start:stop]], dtype=np.float64)  # [r, m, dim]
            query = np.asarray(queries[start:stop], dtype=np.float64)[:, None, :]  # [r, 1, dim]
            np.multiply(candidates, query, out=candidates)  # products of float32s are exact in float64
            out[start:stop] = candidates.sum(axis=-1)  # pairwise sum over dim, the same for every row: deterministic
        out[local_idx < 0] = -np.inf
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query: (scores [nq, k] float32 exact, local_idx [nq, k] int64), ordered by
        (-round(score, 1e-6), doc_id); padded with (-inf, -1) where the shard (or the probed lists) hold fewer."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)  # [nq, dim]
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, np.float32)
        local = np.full((nq, k), -1, np.int64)
        if k <= 0 or nq == 0 or self.ntotal == 0:
            return scores, local
        pending = np.arange(nq)
        depth = min(self.ntotal, self._first_depth(k))
        while pending.size:
            faiss_scores, labels = self.index.search(queries[pending], depth)  # [p, depth] each
            exact = self.rescore(queries[pending], labels)  # [p, depth]
            order = np.lexsort((np.where(labels >= 0, labels, self.ntotal), -round_scores(exact)), axis=-1)
            exact = np.take_along_axis(exact, order, axis=-1)
            labels = np.take_along_axis(labels, order, axis=-1)
            take = min(k, depth)
            scores[pending, :take], local[pending, :take] = exact[:, :take], labels[:, :take]
            if not self.is_exact or depth >= self.ntotal:
                break
            # A doc faiss left out scored <= its last candidate in float32, so its exact score is at most that
            # plus the float32 error; the top k is final when the k-th exact score clears that bound.
            kth = round_scores(exact[:, take - 1])
            unsure = kth - faiss_scores[:, -1] <= self._slack
            pending = pending[unsure]
            depth = min(self.ntotal, depth * 2)
        return scores, local
