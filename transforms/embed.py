"""Embedding texts in Beam: a sentence-transformers ModelHandler and the `EmbedTexts` composite transform.

    (id, text, text_hash) --EmbedTexts(embed_config, kind)--> {id, kind, vector [dim] float32 L2-normalised, text_hash}

The handler keeps only small config; `load_model()` resolves the model SPEC on the worker and RunInference
shares the loaded model per process. Batches are `texts_per_call` texts (default 16 x batch_size) handed to
one `encode` call, which sorts them by length and runs forward passes of `batch_size`: padding waste is then
about that of one `encode` over the whole corpus. Vectors that come out non-finite (or all zero) leave
through a dead-letter output with a reason instead of failing the pipeline.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from schemas.build_config import EmbedConfig
from schemas.inputs import EMBEDDING_KINDS, embeddings_schema
from transforms.model import load_sentence_transformer, model_lock

logger = logging.getLogger(__name__)

DEADLETTER = "deadletter"
TEXTS_PER_CALL_FACTOR = 16  # texts per encode() call = this x batch_size (length sorting happens per call)


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

    def load_model(self) -> Any:
        import torch

        threads = torch_threads_for(self._torch_threads, self._workers_per_machine)
        torch.set_num_threads(threads)
        loader = self._model_loader or load_sentence_transformer
        model = loader(self._spec, device="cpu", max_seq_length=self._max_seq_length)
        plural = {"doc": "docs", "query": "queries"}.get(self._kind, self._kind)
        logger.info("embedding %s with %s on %d torch threads", plural, self._spec, threads)
        return model

    def run_inference(
        self, batch: Sequence[str], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[np.ndarray]:
        encode = model.encode_query if self._kind == "query" else model.encode_document
        with model_lock(model):  # threads of a worker share the model; its tokenizer is not thread-safe
            vectors = encode(
                list(batch),
                prompt=self._prompt or None,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )  # [n, dim]
        return list(l2_normalise(vectors))

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


class EmbedTexts(beam.PTransform):
    """(id, text, text_hash) -> row dicts {id, kind, vector (float32 [dim], L2-normalised), text_hash}.

    `.with_deadletter()` makes it return (rows, deadletter_rows) instead of dropping (and counting)
    vectors that are non-finite or zero.
    """

    def __init__(
        self,
        embed_config: EmbedConfig,
        kind: str,
        dim: int | None = None,
        workers_per_machine: int | None = 1,
        texts_per_call: int | None = None,
        model_loader: Callable[..., Any] | None = None,
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
        )
        self._kind = kind
        self._dim = dim
        self._return_deadletter = False

    def with_deadletter(self) -> EmbedTexts:
        other = copy.copy(self)
        other._return_deadletter = True
        return other

    def expand(self, id_text_hash):
        key_to_text = id_text_hash | "KeyByIdAndHash" >> beam.Map(_key_text)
        key_to_vector = key_to_text | "RunModel" >> RunInference(KeyedModelHandler(self._handler))
        checked = key_to_vector | "CheckVectors" >> beam.ParDo(CheckEmbeddingFn(self._kind, self._dim)).with_outputs(
            DEADLETTER, main="rows"
        )
        if self._return_deadletter:
            return checked.rows, checked[DEADLETTER]
        return checked.rows
