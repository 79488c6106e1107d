"""run_embed end to end with the tiny 32-d model on a small inputs/ fixture (plumbing: schema, dim, counts)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sentence_transformers import SentenceTransformer

from pipelines.options import UnknownFlagError, make_pipeline_options
from pipelines.stage_embed import run_embed
from schemas.build_config import BuildConfig, EmbedConfig, IngestConfig
from schemas.inputs import DOCS_SCHEMA, QUERIES_SCHEMA, embeddings_schema, passage_of
from schemas.layout import RunLayout
from schemas.negatives import text_hash
from transforms.embed_plan import processes_per_machine
from transforms.model import ModelSpecError

DOCS = [
    ("d1", "Genes", "BRCA1 mutations raise breast cancer risk."),
    ("d2", "", "Aspirin lowers the risk of heart attack in some adults."),
    ("d3", "Sleep", "Short sleep is linked to obesity in children."),
    ("d4", "Vitamin D", "Vitamin D supplements do not prevent fractures."),
    ("d5", "Statins", "Statins reduce LDL cholesterol."),
]
QUERIES = [("q1", "Does BRCA1 affect cancer risk?"), ("q2", "Is short sleep bad for kids?")]


def write_inputs(run: RunLayout) -> None:
    docs_dir, queries_dir = run.inputs_table("docs"), run.inputs_table("queries")
    os.makedirs(docs_dir)
    os.makedirs(queries_dir)
    rows = [
        {"doc_id": d, "title": t, "text": x, "passage": passage_of(t, x), "text_hash": text_hash(passage_of(t, x))}
        for d, t, x in DOCS
    ]
    pq.write_table(pa.Table.from_pylist(rows[:3], DOCS_SCHEMA), os.path.join(docs_dir, "part-00000.parquet"))
    pq.write_table(pa.Table.from_pylist(rows[3:], DOCS_SCHEMA), os.path.join(docs_dir, "part-00001.parquet"))
    queries = pa.Table.from_pylist([{"query_id": q, "text": t} for q, t in QUERIES], QUERIES_SCHEMA)
    pq.write_table(queries, os.path.join(queries_dir, "part-00000.parquet"))


def make_config(tmp_path, model: str) -> BuildConfig:
    return BuildConfig(
        output=str(tmp_path / "run"),
        ingest=IngestConfig(beir_dir=str(tmp_path / "beir"), split="test"),
        embed=EmbedConfig(model=model, batch_size=2),
    )


def test_run_embed_writes_fixed_size_vectors_and_exact_counts(tmp_path, tiny_model_dir):
    run, out = RunLayout(str(tmp_path / "run")), RunLayout(str(tmp_path / "staging"))
    write_inputs(run)
    stats = run_embed(make_config(tmp_path, tiny_model_dir), run, out, ["--runner", "DirectRunner"])

    assert stats == {
        "docs_embedded": 5,
        "queries_embedded": 2,
        "docs_dead_lettered": 0,
        "queries_dead_lettered": 0,
        "deadletter_by_reason": {},
        "docs_texts_embedded": 5,
        "queries_texts_embedded": 2,
        "docs_from_cache": 0,
        "queries_from_cache": 0,
        "dim": 32,
        "model": tiny_model_dir,
        "backend": "torch",
        "device": "cpu",
        "embedding_cache": None,
    }
    files = sorted(os.listdir(out.embeddings_dir))
    assert files and all(f.endswith(".parquet") and f.split("-")[0] in ("doc", "query") for f in files)
    table = pq.read_table(out.embeddings_dir)
    assert table.schema.field("vector").type == embeddings_schema(32).field("vector").type
    rows = {(r["kind"], r["id"]): r for r in table.to_pylist()}
    assert sorted(rows) == [("doc", d) for d, _, _ in DOCS] + [("query", q) for q, _ in QUERIES]

    # Ids travel with their vectors: each equals the model's own embedding of that passage / query.
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    passages = [passage_of(t, x) for _, t, x in DOCS]
    reference = model.encode(passages + [t for _, t in QUERIES], convert_to_numpy=True)  # [7, 32]
    keys = [("doc", d) for d, _, _ in DOCS] + [("query", q) for q, _ in QUERIES]
    for key, expected in zip(keys, reference):
        vector = np.array(rows[key]["vector"], np.float32)
        assert abs(float(vector @ vector) - 1.0) < 1e-5
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
    assert rows[("doc", "d2")]["text_hash"] == text_hash(passages[1])
    assert rows[("query", "q1")]["text_hash"] == text_hash(QUERIES[0][1])
    assert pq.read_table(out.deadletter_dir).num_rows == 0


class PoisonedModel:
    """The tiny model, except that documents mentioning 'Statins' come out NaN."""

    def __init__(self, model):
        self._model = model

    def encode_query(self, texts, **kwargs):
        return self._model.encode_query(texts, **kwargs)

    def encode_document(self, texts, **kwargs):
        vectors = self._model.encode_document(texts, **kwargs)
        vectors[["Statins" in text for text in texts]] = np.nan
        return vectors


def test_non_finite_vectors_go_to_the_deadletter_with_their_reason(tmp_path, tiny_model_dir, monkeypatch):
    import transforms.embed
    from transforms.model import load_sentence_transformer

    def poisoned_loader(*args, **kwargs):
        return PoisonedModel(load_sentence_transformer(*args, **kwargs))

    monkeypatch.setattr(transforms.embed, "load_sentence_transformer", poisoned_loader)
    run, out = RunLayout(str(tmp_path / "run")), RunLayout(str(tmp_path / "staging"))
    write_inputs(run)
    stats = run_embed(make_config(tmp_path, tiny_model_dir), run, out, [])
    assert (stats["docs_embedded"], stats["docs_dead_lettered"], stats["queries_embedded"]) == (4, 1, 2)
    assert stats["deadletter_by_reason"] == {"non_finite_embedding": 1}
    dead = pq.read_table(out.deadletter_dir).to_pylist()
    assert [(d["raw"], d["reason"], d["source"]) for d in dead] == [("d5", "non_finite_embedding", "embed:doc")]
    assert "d5" not in pq.read_table(out.embeddings_dir).column("id").to_pylist()


def test_dry_run_builds_the_graph_and_writes_nothing(tmp_path, tiny_model_dir):
    run, out = RunLayout(str(tmp_path / "run")), RunLayout(str(tmp_path / "staging"))
    write_inputs(run)
    assert run_embed(make_config(tmp_path, tiny_model_dir), run, out, ["--dry_run=true"]) == {}
    assert not os.listdir(out.embeddings_dir)


def test_run_embed_fails_fast_on_bad_model_or_flag(tmp_path):
    run, out = RunLayout(str(tmp_path / "run")), RunLayout(str(tmp_path / "staging"))
    with pytest.raises(ModelSpecError, match="no_such_model"):
        run_embed(make_config(tmp_path, str(tmp_path / "no_such_model")), run, out, [])
    with pytest.raises(UnknownFlagError, match="--num_workes"):
        run_embed(make_config(tmp_path, "bundled"), run, out, ["--num_workes", "8"])
    assert not os.path.exists(out.embeddings_dir)


def test_processes_per_machine_from_runner_flags():
    assert processes_per_machine(make_pipeline_options([])) == 1
    multi = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    assert processes_per_machine(make_pipeline_options(multi)) == 2
    assert processes_per_machine(make_pipeline_options(["--runner", "DataflowRunner"])) is None
