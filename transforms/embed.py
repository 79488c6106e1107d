"""Embedding texts in Beam: a sentence-transformers ModelHandler and the `EmbedTexts` composite transform.

    (id, text, text_hash) --EmbedTexts(embed_config, kind)--> {id, kind, vector [dim] float32 L2-normalised, text_hash}

The handler keeps only small config; `load_model()` gives RunInference a LazyModel that resolves the model SPEC
on the worker at the first batch (a stage served wholly by the embedding cache loads nothing), shared per
process. Batches are `texts_per_call` texts (default 16 x batch_size), tokenized once, sorted by token count and
run in forward passes of about batch_size x max_seq_length tokens (transforms/embed_encode.py); progress (lines
on the worker log, Beam counters) moves every 4 forward passes. Vectors that come out non-finite (or all zero) leave
through a dead-letter output with a reason instead of failing the pipeline.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from schemas.build_config import EmbedConfig
from schemas.inputs import EMBEDDING_KINDS, embeddings_schema
from transforms.embed_cache import (
    CACHE_ROWS_PER_FILE,
    HITS,
    MISSES,
    ReadCacheFileFn,
    SplitCachedFn,
    WriteCacheFn,
    list_cache_files,
    text_key,
)
from transforms.embed_encode import encode_texts
from transforms.embed_progress import PROGRESS_INTERVAL_S, EmbedProgress
from transforms.model import fuse_linear_gelu, load_sentence_transformer

logger = logging.getLogger(__name__)

DEADLETTER = "deadletter"
TEXTS_PER_CALL_FACTOR = 16  # texts per RunInference batch = this x batch_size (length sorting happens per batch)
PROGRESS_BATCHES = 4  # forward batches per encode() call inside a RunInference batch (progress granularity)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 [n, d]; all-zero rows stay zero, non-finite rows stay non-finite."""
    vectors = np.asarray(vectors)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)  # [n, 1], float64: no overflow
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scaled = vectors / np.where(norms > 0, norms, 1.0)  # [n, d]
    return scaled.astype(np.float32)


def embedding_problem(vector: np.ndarray) -> str | None:
    """Dead-letter reason for one L2-normalised vector, or None when it is usable."""
    if not np.isfinite(vector).all():
        return "non_finite_embedding"
    if abs(float(np.dot(vector, vector)) - 1.0) > 1e-3:
        return "zero_embedding"
    return None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_threads_for(torch_threads: int | None, workers_per_machine: int | None) -> int:
    """Explicit torch_threads, else this machine's cores / workers (None workers: one process per core)."""
    if torch_threads:
        return torch_threads
    if workers_per_machine is None:
        return 1
    return max(1, available_cores() // max(1, workers_per_machine))


class LazyModel:
    """What the handler's load_model() gives RunInference (which loads it in its DoFn's setup): `get()` loads the
    model on the first call, once per process even when RunInference's threads share it."""

    def __init__(self, load: Callable[[], Any]):
        self._load = load
        self._model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
        return self._model


class SentenceTransformerModelHandler(ModelHandler[str, np.ndarray, Any]):
    """RunInference handler: batch of texts -> list of L2-normalised float32 vectors (one per text).

    `kind` picks encode_query (query prompt) or encode_document (document prompt); an empty prompt uses
    the model's own saved prompt for that kind, if any. `model_loader(spec, device, max_seq_length)` is
    a seam for tests (a fake model); it defaults to transforms.model.load_sentence_transformer.
    """

    def __init__(
        self,
        spec: str,
        kind: str,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        prompt: str = "",
        torch_threads: int | None = None,
        workers_per_machine: int | None = 1,
        texts_per_call: int | None = None,
        model_loader: Callable[..., Any] | None = None,
        backend: str = "torch",
        device: str = "cpu",
        progress_total: int | None = None,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ):
        if kind not in EMBEDDING_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")
        self._texts_per_call = texts_per_call or batch_size * TEXTS_PER_CALL_FACTOR
        super().__init__(min_batch_size=self._texts_per_call, max_batch_size=self._texts_per_call)
        self._spec = spec
        self._kind = kind
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._prompt = prompt
        self._torch_threads = torch_threads
        self._workers_per_machine = workers_per_machine
        self._model_loader = model_loader
        self._backend = backend
        self._device = device
        self._progress_total = progress_total
        self._progress_interval_s = progress_interval_s

    def load_model(self) -> LazyModel:
        """A LazyModel: the weights (and an ONNX Runtime session) load on the first batch, so a stage whose texts
        all come from the embedding cache never loads them."""
        return LazyModel(self._load)

    def _load(self) -> Any:
        import torch

        threads = torch_threads_for(self._torch_threads, self._workers_per_machine)
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # refused once inter-op work has started in this process
            torch.set_num_interop_threads(1)  # an encoder's forward pass runs one op at a time
        loader = self._model_loader or load_sentence_transformer
        model = loader(
            self._spec, device=self._device, max_seq_length=self._max_seq_length, backend=self._backend,
            threads=threads,
        )
        if self._backend == "torch" and self._model_loader is None:
            fuse_linear_gelu(model)  # inference only: the stage never trains the model
        plural = {"doc": "docs", "query": "queries"}.get(self._kind, self._kind)
        logger.info(
            "embedding %s with %s (backend %s, device %s) on %d threads", plural, self._spec, self._backend,
            self._device, threads,
        )
        # One progress reporter per loaded model: RunInference shares the model between the threads of a process.
        model.negforge_progress = EmbedProgress(plural, self._progress_total, self._progress_interval_s)
        model.negforge_lock = threading.Lock()
        return model

    def run_inference(
        self, batch: Sequence[str], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[np.ndarray]:
        """L2-normalised vectors of the batch's texts, in its order (transforms/embed_encode.py: one tokenizer
        call, forward passes of about batch_size x max_seq_length tokens in token-length order). The model's lock
        is held while tokenizing and during each forward pass: Hugging Face fast tokenizers are not
        thread-safe and RunInference shares one model per process. Progress moves every PROGRESS_BATCHES passes."""
        model = model.get() if isinstance(model, LazyModel) else model
        progress = getattr(model, "negforge_progress", None)
        pending = [0, 0]  # texts since the last report, forward passes since the last report

        def on_batch(n: int) -> None:
            pending[0] += n
            pending[1] += 1
            if pending[1] >= PROGRESS_BATCHES:
                self._report(progress, pending, more=True)

        if progress is not None:
            progress.begin()
        vectors = encode_texts(model, list(batch), self._kind, self._prompt or None, self._batch_size,
                               lock=getattr(model, "negforge_lock", None), on_batch=on_batch)  # [n, dim]
        self._report(progress, pending, more=False)
        return list(l2_normalise(vectors))

    def _report(self, progress, pending: list[int], more: bool) -> None:
        """Count the texts of the last forward passes (progress line, Beam counter); `more`: passes follow."""
        if progress is not None:
            progress.add(pending[0])
            if more:
                progress.begin()
        if pending[0]:
            self._texts_done.inc(pending[0])
        pending[0] = pending[1] = 0

    @property
    def _texts_done(self):
        return beam.metrics.Metrics.counter("negforge_embed", f"{self._kind}_texts_done")

    def get_num_bytes(self, batch: Sequence[str]) -> int:
        return sum(len(text.encode("utf-8")) for text in batch)

    def get_metrics_namespace(self) -> str:
        return f"negforge_embed_{self._kind}"


class CheckEmbeddingFn(beam.DoFn):
    """((id, text_hash), vector) -> row dict, or a dead-letter row (DEADLETTER_SCHEMA) with its reason."""

    def __init__(self, kind: str, dim: int | None = None):
        self._kind = kind
        self._dim = dim
        self._embedded = beam.metrics.Metrics.counter("negforge_embed", f"{kind}_rows_embedded")
        self._rejected = beam.metrics.Metrics.counter("negforge_embed", f"{kind}_rows_deadlettered")

    def process(self, element):
        (item_id, text_hash), vector = element
        if self._dim is not None and vector.shape != (self._dim,):
            raise ValueError(
                f"the model gave {self._kind} {item_id!r} a vector of shape {vector.shape}, but its config says "
                f"dim {self._dim}; check the model directory's modules.json and pooling/dense configs"
            )
        reason = embedding_problem(vector)
        if reason is not None:
            self._rejected.inc()
            bad = int((~np.isfinite(vector)).sum())
            if reason == "zero_embedding":
                detail = f"the model gave a vector of L2 norm {float(np.linalg.norm(vector)):.3g}: all zero"
            else:
                detail = f"{bad} of {vector.shape[0]} components non-finite"
            yield beam.pvalue.TaggedOutput(
                DEADLETTER,
                {
                    "source": f"embed:{self._kind}",
                    "location": f"id {item_id}",
                    "reason": reason,
                    "detail": detail,
                    "raw": item_id,
                },
            )
            return
        self._embedded.inc()
        yield {"id": item_id, "kind": self._kind, "vector": vector, "text_hash": text_hash}


def rows_to_embeddings_table(rows: Sequence[dict], dim: int) -> pa.Table:
    """Row dicts {id, kind, vector, text_hash} -> a table in embeddings_schema(dim)."""
    flat = np.concatenate([row["vector"] for row in rows]) if rows else np.zeros(0, np.float32)  # [n * dim]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.float32, copy=False)), dim)
    schema = embeddings_schema(dim)
    return pa.Table.from_arrays(
        [
            pa.array([row["id"] for row in rows], pa.string()),
            pa.array([row["kind"] for row in rows], pa.string()),
            vectors,
            pa.array([row["text_hash"] for row in rows], pa.string()),
        ],
        schema=schema,
    )


def _key_text(element: tuple[str, str, str]) -> tuple[tuple[str, str], str]:
    item_id, text, text_hash = element
    return (item_id, text_hash), text


def _by_text_key(element: tuple[str, str, str]) -> tuple[str, tuple[str, str, str]]:
    item_id, text, text_hash = element
    return text_key(text), (item_id, text_hash, text)


def _fan_out(element):
    """((text_key, ids), vector) -> ((id, text_hash), vector) for every id of that text."""
    (_, ids), vector = element
    for id_and_hash in ids:
        yield id_and_hash, vector


def _cache_entry(element):
    """((text_key, ids), vector) -> (text_key, vector) when the vector is usable (bad ones are never cached)."""
    (key, _), vector = element
    if embedding_problem(vector) is None:
        yield key, vector


class EmbedTexts(beam.PTransform):
    """(id, text, text_hash) -> row dicts {id, kind, vector (float32 [dim], L2-normalised), text_hash}.

    `.with_deadletter()` makes it return (rows, deadletter_rows) instead of dropping (and counting)
    vectors that are non-finite or zero; `.with_counts()` makes it return (rows, deadletter_rows, counts)
    with counts = (name, 1) per counted element, summed by the caller: texts_embedded (distinct texts run through
    the model), rows_from_cache (a Map, not a Count.Globally: 1 step instead of 10 in a graph whose size is a
    fixed cost of every stage run).
    With `cache_namespace_dir` (EmbedConfig.embedding_cache/<namespace>, see transforms/embed_cache.py)
    texts are grouped by exact text: cached ones skip the model, each other distinct text is embedded
    once and its vector added to the cache.
    """

    def __init__(
        self,
        embed_config: EmbedConfig,
        kind: str,
        dim: int | None = None,
        workers_per_machine: int | None = 1,
        texts_per_call: int | None = None,
        model_loader: Callable[..., Any] | None = None,
        cache_namespace_dir: str | None = None,
        progress_total: int | None = None,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ):
        super().__init__()
        if kind not in EMBEDDING_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")
        self._handler = SentenceTransformerModelHandler(
            spec=embed_config.model,
            kind=kind,
            batch_size=embed_config.batch_size,
            max_seq_length=embed_config.max_seq_length,
            prompt=embed_config.query_prompt if kind == "query" else embed_config.doc_prompt,
            torch_threads=embed_config.torch_threads,
            workers_per_machine=workers_per_machine,
            texts_per_call=texts_per_call,
            model_loader=model_loader,
            backend=embed_config.backend,
            device=embed_config.device,
            progress_total=progress_total,
            progress_interval_s=progress_interval_s,
        )
        self._kind = kind
        self._dim = dim
        self._cache_dir = cache_namespace_dir
        self._outputs = "rows"

    def with_deadletter(self) -> EmbedTexts:
        other = copy.copy(self)
        other._outputs = "deadletter"
        return other

    def with_counts(self) -> EmbedTexts:
        other = copy.copy(self)
        other._outputs = "counts"
        return other

    def expand(self, id_text_hash):
        if self._cache_dir is None:
            key_to_text = id_text_hash | "KeyByIdAndHash" >> beam.Map(_key_text)
            key_to_vector = key_to_text | "RunModel" >> RunInference(KeyedModelHandler(self._handler))
            embedded, hits = key_to_vector, None
        else:
            key_to_vector, embedded, hits = self._expand_cached(id_text_hash)
        checked = key_to_vector | "CheckVectors" >> beam.ParDo(CheckEmbeddingFn(self._kind, self._dim)).with_outputs(
            DEADLETTER, main="rows"
        )
        if self._outputs == "rows":
            return checked.rows
        if self._outputs == "deadletter":
            return checked.rows, checked[DEADLETTER]
        counts = [embedded | "CountEmbedded" >> beam.Map(_count_as, "texts_embedded")]
        if hits is not None:
            counts.append(hits | "CountCached" >> beam.Map(_count_as, "rows_from_cache"))
        counts = counts | "AllEmbedCounts" >> beam.Flatten()
        return checked.rows, checked[DEADLETTER], counts

    def _expand_cached(self, id_text_hash):
        """Cached rows + one model call per distinct uncached text; new vectors appended to the cache."""
        pipeline = id_text_hash.pipeline
        files = list_cache_files(self._cache_dir)  # listed when the graph is built: a build adds, never reads, its own
        cached = (
            pipeline
            | "CacheFiles" >> beam.Create(files)
            | "SpreadCacheFiles" >> beam.Reshuffle()
            | "ReadCache" >> beam.ParDo(ReadCacheFileFn())
        )
        by_text = id_text_hash | "KeyByText" >> beam.Map(_by_text_key)
        split = (
            {"texts": by_text, "cached": cached}
            | "JoinCache" >> beam.CoGroupByKey()
            | "SplitCached" >> beam.ParDo(SplitCachedFn(self._kind)).with_outputs(MISSES, main=HITS)
        )
        to_embed = split[MISSES] | "KeyByTextAndIds" >> beam.MapTuple(lambda key, text, ids: ((key, ids), text))
        embedded = to_embed | "RunModel" >> RunInference(KeyedModelHandler(self._handler))
        _ = (
            embedded
            | "CacheEntries" >> beam.FlatMap(_cache_entry)
            | "BatchCacheEntries" >> beam.BatchElements(min_batch_size=CACHE_ROWS_PER_FILE,
                                                         max_batch_size=CACHE_ROWS_PER_FILE)
            | "WriteCache" >> beam.ParDo(WriteCacheFn(self._cache_dir))
        )
        fanned = embedded | "FanOut" >> beam.FlatMap(_fan_out)
        return (split[HITS], fanned) | "CachedAndEmbedded" >> beam.Flatten(), embedded, split[HITS]


def _count_as(_element, name: str) -> tuple[str, int]:
    return name, 1
