"""evaluate_retrieval (sentence-transformers' IR evaluator) and `negforge eval`'s one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from sentence_transformers.util import cos_sim

from pipelines.eval import main_eval
from trainer.evaluate import evaluate_retrieval, evaluate_retrieval_splits

CORPUS = {f"d{i}": f"document number {i}" for i in range(12)}
QUERIES = {"q1": "first question", "q2": "second question", "q3": "third question"}
QRELS = {"q1": {"d3": 1}, "q2": {"d7": 1, "d8": 2}, "q3": {"d11": 1}, "q_unknown": {"d1": 1}}


class _CardData:
    def set_evaluation_metrics(self, *args, **kwargs):
        pass


class PlantedModel:
    """A stand-in SentenceTransformer: one-hot vectors planted per text, cosine similarity."""

    similarity_fn_name = "cosine"
    model_card_data = _CardData()

    def __init__(self, vectors: dict[str, int], dim: int = 16):
        self._vectors = vectors
        self._dim = dim

    def similarity(self, a, b):
        return cos_sim(a, b)

    def encode(self, texts, convert_to_tensor=True, **kwargs):
        out = torch.zeros(len(texts), self._dim)
        for row, text in enumerate(texts):
            out[row, self._vectors[text]] = 1.0
        return out

    encode_query = encode
    encode_document = encode


def test_planted_perfect_retrieval_scores_one():
    slots = {text: i for i, text in enumerate(CORPUS.values())}  # every doc its own direction
    slots |= {"first question": 3, "second question": 7, "third question": 11}  # each query = its relevant doc
    # q2 has two relevant docs; give d8 the same direction as d7 so both rank 1-2.
    slots["document number 8"] = 7
    metrics = evaluate_retrieval(PlantedModel(slots), CORPUS, QUERIES, QRELS, batch_size=4)
    assert metrics == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0}


def test_planted_misses_are_ranked_by_score_then_doc_id():
    slots = {text: i for i, text in enumerate(CORPUS.values())}
    # q1 points at d0 (not relevant); the rest tie at 0 and sort by doc id: d0, d1, d10, d11, d2, d3.
    slots |= {"first question": 0, "second question": 7, "third question": 15}
    slots["document number 8"] = 7
    metrics = evaluate_retrieval(PlantedModel(slots), CORPUS, {"q1": "first question"}, QRELS)
    assert metrics["mrr@10"] == pytest.approx(1 / 6)
    assert metrics["recall@100"] == 1.0
    none_found = evaluate_retrieval(PlantedModel(slots), CORPUS, {"q3": "third question"}, QRELS)
    assert none_found["mrr@10"] == pytest.approx(1 / 4)  # all tie at 0: d0, d1, d10, d11


class CountingModel(PlantedModel):
    """Counts the documents it encodes, to prove a shared corpus is encoded once."""

    def __init__(self, vectors: dict[str, int], dim: int = 16):
        super().__init__(vectors, dim)
        self.documents_encoded = 0

    def encode_document(self, texts, **kwargs):
        self.documents_encoded += len(texts)
        return self.encode(texts, **kwargs)


def test_splits_share_one_corpus_encoding_and_score_as_separate_calls():
    slots = {text: i for i, text in enumerate(CORPUS.values())}
    slots |= {"first question": 0, "second question": 7, "third question": 11}  # q1 misses, q2, q3 hit
    splits = {
        "dev": ({"q1": "first question"}, QRELS),
        "test": ({"q2": "second question", "q3": "third question"}, QRELS),
    }
    model = CountingModel(slots)
    shared = evaluate_retrieval_splits(model, CORPUS, splits, batch_size=4)
    assert model.documents_encoded == len(CORPUS)  # once, not once per split
    for name, (queries, qrels) in splits.items():
        assert shared[name] == evaluate_retrieval(PlantedModel(slots), CORPUS, queries, qrels, batch_size=4)
    assert shared["dev"]["mrr@10"] == pytest.approx(1 / 6) and shared["test"]["mrr@10"] == 1.0


def test_nothing_to_score_is_an_error():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_retrieval(PlantedModel({}), CORPUS, {"qx": "unjudged"}, QRELS)


def write_beir(folder) -> None:
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": d, "title": "Title" if i % 2 else "", "text": t} for i, (d, t) in enumerate(CORPUS.items())]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    queries = [{"_id": q, "text": t} for q, t in QUERIES.items()] + [{"_id": "q9", "text": "no qrels"}]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q in QUERIES for d, s in QRELS[q].items()]
    (folder / "qrels" / "test.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode())


def test_main_eval_prints_one_json_line(tmp_path, tiny_model_dir, capsys):
    write_beir(tmp_path / "beir")
    argv = ["--beir", str(tmp_path / "beir"), "--split", "test", "--model", tiny_model_dir, "--batch-size", "4"]
    code = main_eval(argv)
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"ndcg@10", "mrr@10", "recall@100", "model", "split", "queries", "docs"} <= set(result)
    assert all(0.0 <= result[m] <= 1.0 for m in ("ndcg@10", "mrr@10", "recall@100"))
    assert result["recall@100"] == 1.0  # 12 docs: every relevant doc is in the top 100
    assert (result["model"], result["split"], result["queries"], result["docs"]) == (tiny_model_dir, "test", 3, 12)


def test_main_eval_reports_a_bad_folder(tmp_path, capsys):
    assert main_eval(["--beir", str(tmp_path / "nope"), "--split", "test"]) == 2
    assert "corpus.jsonl not found" in capsys.readouterr().err


def test_evaluate_imports_without_beam_faiss_or_nlpaug():
    code = "import sys, trainer.evaluate; print(sorted({'apache_beam', 'faiss', 'nlpaug'} & set(sys.modules)))"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("STORAGE_EMULATOR_HOST", None)  # the GCS-emulator fixture's sitecustomize imports Beam when it is set
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
