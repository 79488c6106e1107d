"""Texts -> sentence embeddings through a loaded SentenceTransformer, in token-sorted, token-budget batches.

`encode_texts` is what the embed stage's ModelHandler runs on every RunInference batch (and what
bench/embed_throughput.py times). It differs from `SentenceTransformer.encode` only in how the work is cut:
  - the texts of one call are tokenized once, by the model's own `preprocess` (prompt, truncation to
    max_seq_length, special tokens), instead of once per forward batch;
  - they are sorted by token count (encode sorts by characters, a worse proxy, so its batches carry more
    padding) and cut into forward batches of `batch_size` texts, or fewer where `token_budget` padded tokens
    (rows x longest row) says so. Letting short texts (queries) go many more at a time was measured slower
    (160 queries: 0.93x encode_query's time ratio, load 8): one batch pads every query to the longest;
  - each batch is the call's padded tensors cut to its rows and its own longest row: the same input ids,
    mask and token types that tokenizing that batch alone gives (right padding).
The forward pass, pooling, normalisation modules and truncate_dim are the model's own (`model(features)` under
`torch.inference_mode`), so vectors equal encode()'s within float rounding. Models this cannot slice (left
padding, inputs that are not [texts, tokens] tensors, objects that are not SentenceTransformers, such as the
tests' fakes) go through `encode_query` / `encode_document` in the same batches of texts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PROMPT_NAMES = {"query": ("query",), "doc": ("document", "passage", "corpus")}  # as encode_query/_document pick
TASKS = {"query": "query", "doc": "document"}
FALLBACK_BATCHES = 4  # forward batches per encode() call on the fallback path


def resolve_prompt(model: Any, kind: str, prompt: str | None) -> str | None:
    """The prompt encode_query / encode_document would use: the given one, else the model's saved prompt of
    that kind, else its default prompt (None: no prompt)."""
    if prompt:
        return prompt
    prompts = getattr(model, "prompts", None) or {}
    for name in PROMPT_NAMES[kind]:
        if name in prompts:
            return prompts[name]
    default = getattr(model, "default_prompt_name", None)
    return prompts.get(default) if default else None


def token_budget_batches(lengths: np.ndarray, budget: int, max_rows: int | None = None) -> list[np.ndarray]:
    """Indices of `lengths` (tokens per text), longest first, cut into batches of at most `max_rows` rows with
    rows x longest <= budget (at least one row each). [n] -> list of index arrays holding every index once."""
    order = np.argsort(-np.asarray(lengths), kind="stable")  # [n], ties keep the input order
    batches, start = [], 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        rows = max(1, min(budget // longest, max_rows or len(order)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def can_slice(model: Any) -> bool:
    """True for a SentenceTransformer whose tokenizer pads on the right (its features can be cut per batch)."""
    tokenizer = getattr(model, "tokenizer", None)
    return (callable(getattr(model, "preprocess", None)) and callable(getattr(model, "forward", None))
            and getattr(tokenizer, "padding_side", "right") == "right")


def _sliceable(features: dict, n: int) -> bool:
    mask = features.get("attention_mask")
    if mask is None or getattr(mask, "ndim", 0) != 2 or mask.shape[0] != n:
        return False
    return all(not hasattr(v, "shape") or tuple(v.shape) == tuple(mask.shape) for v in features.values())


def encode_texts(
    model: Any,
    texts: Sequence[str],
    kind: str,
    prompt: str | None,
    batch_size: int,
    token_budget: int | None = None,
    lock: Any = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Sentence embeddings [len(texts), dim] (float32, as the model's modules leave them: not normalised here).

    token_budget: most padded tokens per forward pass (default batch_size x the model's max_seq_length, which
    batch_size rows never exceed).
    lock: held while tokenizing and during each forward pass (fast tokenizers are not thread-safe).
    on_batch(n): called after each forward pass with its number of texts (progress).
    """
    lock = lock or contextlib.nullcontext()
    texts = list(texts)
    if not texts:
        return np.zeros((0, 0), np.float32)
    max_len = int(getattr(model, "max_seq_length", None) or 512)
    budget = token_budget or batch_size * max_len
    prompt = resolve_prompt(model, kind, prompt)
    features = None
    if can_slice(model):
        with lock:
            features = model.preprocess(texts, prompt=prompt, task=TASKS[kind])
        if not _sliceable(features, len(texts)):
            features = None
    if features is None:
        return _encode_by_method(model, texts, kind, prompt, batch_size, lock, on_batch)
    lengths = features["attention_mask"].sum(dim=1).numpy()  # [n] tokens per text, special tokens included
    batches = token_budget_batches(lengths, budget, max_rows=batch_size)
    return _forward_batches(model, features, batches, lengths, kind, lock, on_batch)


def _forward_batches(model, features, batches, lengths, kind, lock, on_batch) -> np.ndarray:
    import torch
    from sentence_transformers.util import batch_to_device

    device = getattr(model, "device", "cpu")
    parts = []
    with torch.inference_mode():
        for rows in batches:
            width = int(lengths[rows[0]])  # the longest row of the batch (rows are longest first)
            index = torch.from_numpy(rows)
            batch = {
                name: value[:, :width].index_select(0, index) if hasattr(value, "shape") else value
                for name, value in features.items()
            }
            with lock:
                out = model(batch_to_device(batch, device), task=TASKS[kind])["sentence_embedding"]
            parts.append(out.float().cpu().numpy())  # [len(rows), dim]
            if on_batch is not None:
                on_batch(len(rows))
    vectors = np.empty((len(lengths), parts[0].shape[1]), np.float32)  # [n, dim]
    vectors[np.concatenate(batches)] = np.concatenate(parts)
    truncate_dim = getattr(model, "truncate_dim", None)
    return vectors[:, :truncate_dim] if truncate_dim else vectors


def _encode_by_method(model, texts, kind, prompt, batch_size, lock, on_batch) -> np.ndarray:
    """Fallback: encode_query / encode_document on chunks of FALLBACK_BATCHES x batch_size texts in character-length
    order (what encode sorts by), so its forward batches are those of one encode() over all the texts."""
    encode = model.encode_query if kind == "query" else model.encode_document
    chars = np.array([len(text) for text in texts])  # [n]
    order = np.argsort(-chars, kind="stable")
    parts, step = [], batch_size * FALLBACK_BATCHES
    for start in range(0, len(texts), step):
        chunk = [texts[i] for i in order[start : start + step]]
        with lock:
            part = encode(chunk, prompt=prompt, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        parts.append(np.asarray(part, np.float32))  # [len(chunk), dim]
        if on_batch is not None:
            on_batch(len(chunk))
    vectors = np.empty((len(texts), parts[0].shape[1]), np.float32)
    vectors[order] = np.concatenate(parts)
    return vectors
