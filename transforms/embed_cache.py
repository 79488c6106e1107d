"""Embedding cache: vectors reused across builds, keyed by what determines them.

    DIR/<namespace>/<content hash>.parquet    columns text_key (string), vector (fixed_size_list<float32>[dim])

namespace = blake2b of (model fingerprint, backend, kind, prompt, max_seq_length): one folder per
way of embedding. text_key = blake2b of the exact text handed to the model (not schemas.negatives.text_hash,
which hashes the *normalised* text: two texts that normalise alike are still embedded apart). Files are
written once, named after their content and never rewritten, so concurrent builds and workers only add
files; a file on a local disk appears whole (temp + rename), on an object store a write is atomic anyway.
DIR may be local or gs:// (Beam FileSystems throughout).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

logger = logging.getLogger(__name__)

HITS = "hits"  # ((id, text_hash), vector) served from the cache
MISSES = "misses"  # (text_key, text, ((id, text_hash), ...)): one per distinct text to embed
CACHE_ROWS_PER_FILE = 4096


def text_key(text: str) -> str:
    """32-hex-digit blake2b of the exact text (utf-8)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def cache_namespace(fingerprint: str, backend: str, kind: str, prompt: str, max_seq_length: int | None) -> str:
    """Folder name for one way of embedding; any change to the model files or these settings changes it."""
    settings = {"model": fingerprint, "backend": backend, "kind": kind, "prompt": prompt,
                "max_seq_length": max_seq_length}
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode("utf-8"), digest_size=12).hexdigest()


def cache_schema(dim: int) -> pa.Schema:
    return pa.schema([("text_key", pa.string()), ("vector", pa.list_(pa.float32(), dim))])


def list_cache_files(folder: str) -> list[str]:
    """The Parquet files of one namespace folder (none when it does not exist yet)."""
    try:
        matches = FileSystems.match([FileSystems.join(folder, "*.parquet")])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing folder is an empty cache on every filesystem
        return []
    return sorted(m.path for m in matches)


def read_cache_file(path: str) -> Iterable[tuple[str, np.ndarray]]:
    """(text_key, float32 [dim] vector) for every row of one cache file."""
    with FileSystems.open(path) as handle:
        table = pq.read_table(io.BytesIO(handle.read()))
    keys = table.column("text_key").to_pylist()
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)  # [n * dim]
    matrix = flat.reshape(len(keys), -1)  # [n, dim]
    return zip(keys, matrix)


def write_cache_file(folder: str, entries: list[tuple[str, np.ndarray]]) -> str | None:
    """Write (text_key, vector) entries as one file named after its keys; returns its path (None if empty)."""
    if not entries:
        return None
    entries = sorted(entries, key=lambda entry: entry[0])
    keys = [key for key, _ in entries]
    matrix = np.stack([vector for _, vector in entries]).astype(np.float32)  # [n, dim]
    dim = matrix.shape[1]
    table = pa.Table.from_arrays(
        [pa.array(keys, pa.string()), pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim)],
        schema=cache_schema(dim),
    )
    name = hashlib.blake2b("\n".join(keys).encode("utf-8"), digest_size=12).hexdigest()
    path = FileSystems.join(folder, f"{name}.parquet")
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    if FileSystems.get_scheme(folder) in (None, "file"):
        os.makedirs(folder, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        with os.fdopen(handle, "wb") as sink:
            sink.write(buffer.getvalue())
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    else:
        with FileSystems.create(path) as sink:
            sink.write(buffer.getvalue())
    return path


class ReadCacheFileFn(beam.DoFn):
    """path -> (text_key, vector) for each row of that cache file."""

    def process(self, path: str):
        yield from read_cache_file(path)


class SplitCachedFn(beam.DoFn):
    """(text_key, {"texts": [(id, text_hash, text)...], "cached": [vector...]}) -> hits or one miss per text.

    A text whose key is cached yields ((id, text_hash), vector) for each of its ids (main output, HITS);
    otherwise it yields one (text_key, text, ids) to MISSES, so identical texts are embedded once per run.
    """

    def __init__(self, kind: str):
        self._kind = kind
        self._hits = beam.metrics.Metrics.counter("negforge_embed", f"{kind}_rows_from_cache")
        self._misses = beam.metrics.Metrics.counter("negforge_embed", f"{kind}_texts_to_embed")

    def process(self, element):
        key, grouped = element
        texts, cached = list(grouped["texts"]), list(grouped["cached"])
        if not texts:
            return
        ids = tuple(sorted((item_id, th) for item_id, th, _ in texts))
        if cached:
            self._hits.inc(len(ids))
            vector = min(cached, key=lambda v: v.tobytes())  # two builds may have cached a text: pick one stably
            for id_and_hash in ids:
                yield (id_and_hash, vector)
            return
        self._misses.inc()
        yield beam.pvalue.TaggedOutput(MISSES, (key, texts[0][2], ids))


class WriteCacheFn(beam.DoFn):
    """A batch of (text_key, vector) -> one new cache file in `folder`; yields its path."""

    def __init__(self, folder: str):
        self._folder = folder

    def process(self, batch):
        path = write_cache_file(self._folder, list(batch))
        if path:
            yield path
