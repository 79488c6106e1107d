"""transforms/embed_encode.py: token-sorted, token-budget batches give encode()'s vectors; the handler loads lazily."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.embed import LazyModel, SentenceTransformerModelHandler
from transforms.embed_encode import encode_texts, token_budget_batches
from transforms.model import fuse_linear_gelu, load_sentence_transformer

TEXTS = [
    "a short one",
    "Protein folding in the endoplasmic reticulum is assisted by chaperones " * 6,
    "x",
    "the same words the same words",
    "Vitamin D deficiency and bone density in older adults: a cohort study of 2,000 people " * 3,
    "",
    "a short one",
]


def test_token_budget_batches_cover_every_text_once_longest_first():
    lengths = np.array([5, 40, 3, 40, 12, 7, 1])
    batches = token_budget_batches(lengths, budget=80)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[b].tolist() for b in batches] == [[40, 40], [12, 7, 5, 3, 1]]
    assert all(len(b) * lengths[b[0]] <= 80 for b in batches)
    assert [b.tolist() for b in token_budget_batches(np.array([100, 90]), budget=10)] == [[0], [1]]  # >= 1 row
    assert [len(b) for b in token_budget_batches(lengths, budget=1000, max_rows=3)] == [3, 3, 1]


@pytest.mark.parametrize("kind,prompt", [("doc", None), ("query", "query: ")])
def test_encode_texts_equals_encode(tiny_model_dir, kind, prompt):
    model = load_sentence_transformer(tiny_model_dir)
    encode = model.encode_query if kind == "query" else model.encode_document
    want = encode(TEXTS, prompt=prompt, batch_size=3, convert_to_numpy=True)  # [n, dim]
    seen = []
    got = encode_texts(model, TEXTS, kind, prompt, batch_size=3, token_budget=40, on_batch=seen.append)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert sum(seen) == len(TEXTS) and len(seen) > 1  # several forward passes, every text once
    assert encode_texts(model, [], kind, prompt, batch_size=3).shape[0] == 0


def test_handler_loads_the_model_only_when_a_batch_comes(tiny_model_dir):
    calls = []

    def loader(spec, **kwargs):
        calls.append(spec)
        return load_sentence_transformer(spec, **kwargs)

    handler = SentenceTransformerModelHandler(tiny_model_dir, "doc", batch_size=4, model_loader=loader)
    lazy = handler.load_model()
    assert isinstance(lazy, LazyModel) and not lazy.loaded and calls == []
    vectors = list(handler.run_inference(TEXTS, lazy))
    assert calls == [tiny_model_dir] and lazy.loaded
    assert len(vectors) == len(TEXTS) and all(abs(float(v @ v) - 1) < 1e-5 for v in vectors[:5])
    handler.run_inference(TEXTS[:2], lazy)
    assert calls == [tiny_model_dir]  # loaded once


def test_fused_linear_gelu_gives_the_same_vectors_and_steps_aside_for_training(tiny_model_dir):
    import torch

    plain = load_sentence_transformer(tiny_model_dir)
    fused = load_sentence_transformer(tiny_model_dir)
    if fuse_linear_gelu(fused) == 0:
        pytest.skip("this torch build has no oneDNN fused linear")
    want = encode_texts(plain, TEXTS, "doc", None, batch_size=4)
    np.testing.assert_allclose(encode_texts(fused, TEXTS, "doc", None, batch_size=4), want, atol=1e-6)
    block = fused[0].model.encoder.layer[0].intermediate
    sample = torch.randn(1, 3, block.dense.in_features, requires_grad=True)
    block(sample).sum().backward()  # autograd on: the original Linear + GELU, which has a backward
    assert sample.grad is not None
