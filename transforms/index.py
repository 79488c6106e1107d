"""Building the sharded faiss index: validation, shard assignment, training sample, training, filling, files.

Pure numpy/faiss functions; the Beam stage (pipelines/stage_index.py) and bench/index_scale.py call the same
code. Every index uses inner product on L2-normalised vectors (cosine). Each shard keeps its documents
sorted by doc_id, so faiss local ids (positions) order like doc ids and ties can be broken by position.
Files are written through FileSystems (local and gs:// alike), each as `<path>.tmp` renamed into place.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.build_config import ConfigError, IndexConfig
from schemas.layout import STORE_FORMAT, RunLayout
from transforms.string_column import as_object_strings, pack_strings

logger = logging.getLogger(__name__)

METRIC = faiss.METRIC_INNER_PRODUCT  # faiss.index_factory defaults to L2; cosine needs IP on unit vectors
_ADD_CHUNK = 16_384  # rows per faiss add() call: IVF-PQ makes a few float copies of each chunk (residuals)
_FACTORY_EXAMPLES = "'Flat' (exact), 'IVF1024,Flat', 'IVF1024,PQ32' or 'HNSW32'"


@dataclass
class DocBlock:
    """Many documents as one Beam element: ids travel with their vectors.

    Ids and hashes are object arrays of Python str, never fixed-width `U` arrays (one long id would make every
    row as wide as it: issue 13); str order is code point order, as `U` order was.
    """

    doc_ids: np.ndarray  # [n] object (str)
    vectors: np.ndarray  # [n, dim] float32, L2-normalised
    text_hashes: np.ndarray  # [n] object (str)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def take(self, positions: np.ndarray) -> DocBlock:
        return DocBlock(self.doc_ids[positions], self.vectors[positions], self.text_hashes[positions])


@dataclass
class RefBlock:
    """Doc ids and text hashes of some rows of one Parquet row group of RUN_DIR/embeddings, without vectors.

    What the index stage groups by shard: ~200 bytes per doc instead of ~1.7 KB at 384-d. The shard's worker
    reads the vectors itself (load), one row group at a time, so no worker is ever sent a shard's vectors.
    """

    doc_ids: np.ndarray  # [n] object (str)
    text_hashes: np.ndarray  # [n] object (str)
    path: str
    row_group: int
    positions: np.ndarray  # [n] int64: rows of the row group

    def __len__(self) -> int:
        return len(self.doc_ids)

    def take(self, positions: np.ndarray) -> RefBlock:
        return RefBlock(
            self.doc_ids[positions], self.text_hashes[positions], self.path, self.row_group, self.positions[positions]
        )

    def load(self) -> DocBlock:
        """The block with its vectors, read from its row group."""
        with FileSystems.open(self.path) as handle:
            column = pq.ParquetFile(handle).read_row_group(self.row_group, columns=["vector"]).column("vector")
        vectors = column.combine_chunks()
        flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return DocBlock(self.doc_ids, flat.reshape(-1, vectors.type.list_size)[self.positions], self.text_hashes)


def ref_blocks_of_file(path: str) -> Iterator[RefBlock]:
    """One RefBlock per row group of an embeddings file: its kind == 'doc' rows (ids and hashes only)."""
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        for row_group in range(parquet.num_row_groups):
            table = parquet.read_row_group(row_group, columns=["id", "kind", "text_hash"])
            is_doc = pc.fill_null(pc.equal(table.column("kind"), "doc"), False).to_numpy(zero_copy_only=False)
            keep = np.flatnonzero(is_doc)
            if keep.size:
                docs = table.take(pa.array(keep))
                yield RefBlock(
                    as_object_strings(docs.column("id")),
                    as_object_strings(docs.column("text_hash")),
                    path,
                    row_group,
                    keep.astype(np.int64),
                )


def loaded(block: DocBlock | RefBlock) -> DocBlock:
    return block.load() if isinstance(block, RefBlock) else block


def concat_blocks(blocks: list[DocBlock], dim: int) -> DocBlock:
    """One block from many (an empty list gives an empty [0, dim] block)."""
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return DocBlock(np.empty(0, dtype=object), np.zeros((0, dim), np.float32), np.empty(0, dtype=object))
    return DocBlock(
        np.concatenate([b.doc_ids for b in blocks]),
        np.concatenate([b.vectors for b in blocks]).astype(np.float32, copy=False),
        np.concatenate([b.text_hashes for b in blocks]),
    )


def doc_blocks_from_table(table: pa.Table, block_size: int) -> Iterator[DocBlock]:
    """The kind == 'doc' rows of an embeddings table (schemas.inputs.embeddings_schema) in blocks of <= block_size."""
    docs = table.filter(pc.equal(table.column("kind"), "doc"))
    for start in range(0, docs.num_rows, block_size):
        part = docs.slice(start, block_size)
        vectors = part.column("vector").combine_chunks()
        dim = vectors.type.list_size
        flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        yield DocBlock(
            as_object_strings(part.column("id")),
            flat.reshape(-1, dim),
            as_object_strings(part.column("text_hash")),
        )


def make_index(factory: str, dim: int) -> faiss.Index:
    """An empty faiss index for `factory`, inner-product metric."""
    return faiss.index_factory(dim, factory, METRIC)


def _divisors_hint(dim: int) -> str:
    divisors = [m for m in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) if dim % m == 0]
    return ", ".join(f"PQ{m}" for m in divisors) or f"PQ{dim}"


def _factory_error(factory: str, dim: int, err: Exception) -> ConfigError:
    first = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    if "could not parse" in str(err):
        return ConfigError(f"unknown --index-factory {factory!r}: faiss could not parse it; use {_FACTORY_EXAMPLES}")
    if "d % M == 0" in str(err) or "multiple of" in str(err):
        return ConfigError(
            f"--index-factory {factory!r} does not fit embedding dimension {dim}: the number of PQ sub-quantisers "
            f"must divide {dim}; use e.g. {_divisors_hint(dim)}"
        )
    return ConfigError(
        f"--index-factory {factory!r} is not usable with dimension {dim} ({first}); use {_FACTORY_EXAMPLES}"
    )


def nlist_of(index: faiss.Index) -> int:
    """Number of IVF lists of the index (0 when it is not an IVF index)."""
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except (RuntimeError, AttributeError):
        return 0


def validate_index_config(index: IndexConfig, dim: int) -> None:
    """Fail before any job starts on a factory faiss cannot build for `dim`, on shard counts < 1 and more.

    Raises ConfigError naming the bad value and a fix.
    """
    if not isinstance(dim, int | np.integer) or dim < 1:
        raise ConfigError(f"embedding dimension must be a positive integer, got {dim!r}; check the model")
    if index.num_shards < 1:
        raise ConfigError(f"--num-shards must be >= 1, got {index.num_shards}; use 1 for a single shard")
    try:
        probe = make_index(index.index_factory, int(dim))
    except RuntimeError as err:
        raise _factory_error(index.index_factory, int(dim), err) from None
    if probe.metric_type != METRIC:
        raise ConfigError(
            f"--index-factory {index.index_factory!r} does not support inner product; use {_FACTORY_EXAMPLES}"
        )
    nlist = nlist_of(probe)
    if nlist and index.train_sample < nlist:
        raise ConfigError(
            f"train_sample {index.train_sample} is smaller than the {nlist} IVF lists of {index.index_factory!r}; "
            f"raise train_sample to >= {39 * nlist} or use fewer lists"
        )
    if nlist and index.nprobe > nlist:
        logger.warning(
            "--nprobe %d exceeds the %d lists of %s; faiss probes them all", index.nprobe, nlist, index.index_factory
        )


def shard_of(doc_ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Stable shard of each doc id: zlib.crc32(utf-8 id) % num_shards (never Python's salted hash()). [n] int64."""
    return np.fromiter((zlib.crc32(d.encode("utf-8")) % num_shards for d in doc_ids), np.int64, len(doc_ids))


def split_by_shard(block: DocBlock, num_shards: int) -> Iterator[tuple[int, DocBlock]]:
    """(shard, sub-block) for every shard that receives rows of this block."""
    shards = shard_of(block.doc_ids, num_shards)
    for shard in np.unique(shards):
        yield int(shard), block.take(np.flatnonzero(shards == shard))


def sample_priority(doc_ids: np.ndarray, seed: int) -> np.ndarray:
    """Seeded pseudo-random priority per doc: 64-bit blake2b of (seed, id). [n] uint64.

    The training sample is the train_sample docs of lowest (priority, doc_id): independent of order and runner.
    """
    key = str(seed).encode("utf-8")
    digests = (hashlib.blake2b(d.encode("utf-8"), digest_size=8, key=key).digest() for d in doc_ids)
    return np.fromiter((int.from_bytes(x, "big") for x in digests), np.uint64, len(doc_ids))


def keep_lowest_priority(priority: np.ndarray, block: DocBlock, n: int) -> tuple[np.ndarray, DocBlock]:
    """The n rows of lowest (priority, doc_id), in that order."""
    order = np.lexsort((block.doc_ids, priority))[:n]
    return priority[order], block.take(order)


def _suggest_nlist(n: int) -> int:
    return max(1, 2 ** int(np.log2(max(1.0, 4 * np.sqrt(n)))))


def _skip_polysemous_training(index: faiss.Index) -> None:
    """IVF-PQ from the factory trains polysemous codes by default (slow annealing); their Hamming filter is never
    used here because candidates are re-scored exactly, so skip it."""
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexPreTransform) or "IDMap" in type(inner).__name__:
        inner = faiss.downcast_index(inner.index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False


def train_index(factory: str, dim: int, sample: DocBlock) -> bytes:
    """The trained, empty index serialised with faiss.serialize_index (untrainable indexes: just empty)."""
    index = make_index(factory, dim)
    if not index.is_trained:
        order = np.argsort(sample.doc_ids, kind="stable")  # training input order fixed by doc id
        vectors = np.ascontiguousarray(sample.vectors[order], dtype=np.float32)  # [n, dim]
        if len(vectors) == 0:
            raise ConfigError(f"--index-factory {factory!r} needs training but there are no doc embeddings")
        _skip_polysemous_training(index)
        try:
            index.train(vectors)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1]
            raise ConfigError(
                f"could not train {factory!r} on {len(vectors)} sampled vectors ({reason}); "
                f"IVF needs at least nlist training vectors (ideally 39 x nlist) and PQ at least 256: use fewer "
                f"lists (e.g. IVF{_suggest_nlist(len(vectors))}) or a larger corpus / train_sample"
            ) from None
    return faiss.serialize_index(index).tobytes()


def sorted_shard(parts: list[DocBlock], dim: int) -> DocBlock:
    """The parts' docs in one block sorted by doc_id, built with one allocation (no concatenate-then-sort copy)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return concat_blocks([], dim)
    doc_ids = np.concatenate([p.doc_ids for p in parts])  # [n] object (str)
    order = np.argsort(doc_ids, kind="stable")
    destination = np.empty(len(order), np.int64)
    destination[order] = np.arange(len(order))  # sorted position of every concatenated row
    vectors = np.empty((len(order), dim), np.float32)  # [n, dim]
    text_hashes = np.empty(len(order), dtype=object)
    start = 0
    for part in parts:
        rows = destination[start : start + len(part)]
        vectors[rows], text_hashes[rows] = part.vectors, part.text_hashes
        start += len(part)
    return DocBlock(doc_ids[order], vectors, text_hashes)


def fill_shard(trained: bytes, block: DocBlock) -> tuple[faiss.Index, DocBlock]:
    """One block (any order) -> (index, block sorted by doc_id): build_shard over a single part."""
    return build_shard(trained, [block], int(block.vectors.shape[1]))


def _flat_storage(index: faiss.Index, n: int, dim: int) -> np.ndarray | None:
    """The [n, dim] float32 storage of an empty IndexFlat, sized once, as a numpy view that keeps the index
    alive; None for every other index. Filling it fills the index: the vectors are held once, not twice."""
    if not isinstance(index, faiss.IndexFlat) or index.ntotal != 0 or index.code_size != 4 * dim or n == 0:
        return None
    index.codes.resize(n * index.code_size)  # one allocation (chunked add() would regrow, copying, as it goes)
    index.ntotal = n
    address = faiss.rev_swig_ptr(index.get_xb(), n * dim).__array_interface__["data"][0]
    buffer = (ctypes.c_float * (n * dim)).from_address(address)
    buffer.owner = index  # the view's base chain holds the index: its memory lives as long as the view
    return np.frombuffer(buffer, dtype=np.float32).reshape(n, dim)


def _reiterable(parts: Iterable[DocBlock | None]) -> Iterable[DocBlock | None]:
    """Beam's grouped values can be iterated again (runners that page them re-read them); a one-shot iterator
    cannot, so it is held as a list."""
    return list(parts) if iter(parts) is parts else parts


def build_shard(
    trained: bytes, parts: Iterable[DocBlock | RefBlock | None], dim: int
) -> tuple[faiss.Index, DocBlock]:
    """A shard's parts (DocBlocks in any order; None is skipped) -> (filled index, its docs sorted by doc_id).

    Streams: a first pass over `parts` collects ids and hashes only and argsorts the ids; a second pass copies
    each part's vectors straight to their sorted rows of one preallocated [n, dim] array, which for Flat is
    the index's own storage. No concatenation of the shard, no sorted copy beside it, no index copy beside
    that: the shard's vectors are held once (plus the parts themselves if the runner hands them as a list).
    faiss ids are positions in the sorted block, so position order is doc_id order.
    """
    parts = _reiterable(parts)
    ids, hashes = [], []
    for part in parts:  # first pass: ids and hashes only
        if part is not None and len(part):
            ids.append(part.doc_ids)
            hashes.append(part.text_hashes)
    doc_ids = np.concatenate(ids) if ids else np.empty(0, dtype=object)  # [n] object (str)
    del ids
    order = np.argsort(doc_ids, kind="stable")
    doc_ids, n = doc_ids[order], len(order)
    text_hashes = np.concatenate(hashes)[order] if hashes else np.empty(0, dtype=object)
    del hashes
    duplicated = doc_ids[1:][doc_ids[1:] == doc_ids[:-1]]
    if duplicated.size:
        raise ValueError(
            f"doc id {str(duplicated[0])!r} has more than one embedding; the embed stage must de-duplicate ids"
        )
    destination = np.empty(n, np.int64)
    destination[order] = np.arange(n)  # sorted row of each row in first-pass order
    del order
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    storage = _flat_storage(index, n, dim)
    vectors = storage if storage is not None else np.empty((n, dim), np.float32)  # [n, dim]
    start = 0
    for part in parts:
        if part is None or not len(part):
            continue
        rows = destination[start : start + len(part)] if start + len(part) <= n else None
        if rows is None or not np.array_equal(doc_ids[rows], part.doc_ids):  # parts came back in another order
            rows = np.minimum(np.searchsorted(doc_ids, part.doc_ids), max(n - 1, 0))
            if not n or not np.array_equal(doc_ids[rows], part.doc_ids):
                raise RuntimeError("the shard's parts changed between the two passes over them")
        vectors[rows] = loaded(part).vectors  # a RefBlock reads its rows here, one row group at a time
        start += len(part)
    if start != n:
        raise RuntimeError(f"the shard's parts held {n} docs on the first pass and {start} on the second")
    if storage is None and n:
        with_ids = "IDMap" in type(index).__name__
        for first in range(0, n, _ADD_CHUNK):
            chunk = vectors[first : first + _ADD_CHUNK]  # [c, dim], contiguous: no copy
            if with_ids:
                index.add_with_ids(chunk, np.arange(first, first + len(chunk), dtype=np.int64))
            else:
                index.add(chunk)
    return index, DocBlock(doc_ids, vectors, text_hashes)


def write_atomic(path: str, write: Callable[[io.RawIOBase], None]) -> None:
    """write(handle) into `<path>.tmp`, then rename it over `path`: readers never see half a file."""
    tmp = path + ".tmp"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        write(handle)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_shard(out: RunLayout, shard: int, num_shards: int, index: faiss.Index, docs: DocBlock) -> dict:
    """Write the shard's faiss index and its exact store (.npz, uncompressed so it can be memory-mapped).

    Store members (plain arrays, no pickle; read by transforms.shard_search.load_store): format [1] int64
    (STORE_FORMAT), vectors [n, dim] float32, and per string column (doc_ids, text_hashes) `<name>.data`
    [bytes] uint8 + `<name>.offsets` [n + 1] int64 (transforms/string_column.py).
    """
    write_atomic(
        out.shard_index(shard, num_shards), lambda h: faiss.write_index(index, faiss.PyCallbackIOWriter(h.write))
    )
    ids_data, ids_offsets = pack_strings(docs.doc_ids)
    hashes_data, hashes_offsets = pack_strings(docs.text_hashes)
    members = {
        "format": np.array([STORE_FORMAT], np.int64),
        "vectors": np.ascontiguousarray(docs.vectors, np.float32),
        "doc_ids.data": ids_data,
        "doc_ids.offsets": ids_offsets,
        "text_hashes.data": hashes_data,
        "text_hashes.offsets": hashes_offsets,
    }
    write_atomic(out.shard_store(shard, num_shards), lambda h: np.savez(h, **members))
    return {"shard": shard, "ntotal": int(index.ntotal)}


def factory_choice(index: IndexConfig) -> str:
    """Why the index has its factory, for index.json, the manifest and the log."""
    if not index.auto_factory:
        return "given (--index-factory or --config)"
    return f"automatic: {index.factory_reason}" if index.factory_reason else "default (corpus size not known yet)"


def index_meta(index: IndexConfig, dim: int, shard_stats: list[dict], trained_on: int, seed: int) -> dict:
    """The content of index/index.json."""
    shards = sorted(shard_stats, key=lambda s: s["shard"])
    return {
        "dim": int(dim),
        "metric": "inner_product",
        "factory": index.index_factory,
        "factory_chosen": factory_choice(index),
        "is_exact": index.is_exact,
        "ntotal": int(sum(s["ntotal"] for s in shards)),
        "num_shards": index.num_shards,
        "shard_ntotal": [int(s["ntotal"]) for s in shards],
        "nprobe": index.nprobe,
        "trained_on": int(trained_on),
        "train_sample": index.train_sample,
        "seed": int(seed),
        "shard_assignment": "zlib.crc32(utf-8 doc_id) % num_shards",
        "faiss_version": faiss.__version__,
    }


def write_index_meta(out: RunLayout, meta: dict) -> None:
    write_atomic(out.index_meta, lambda h: h.write(json.dumps(meta, indent=2, sort_keys=True).encode("utf-8")))


def read_index_meta(run: RunLayout) -> dict:
    with FileSystems.open(run.index_meta) as handle:
        return json.loads(handle.read().decode("utf-8"))
