"""ONNX backends: local export into a cache folder, vectors matching torch, int8 close, devices resolved."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import transforms.onnx_backend as onnx_backend
from schemas.fingerprints import model_content_digest
from transforms.model import load_sentence_transformer

TEXTS = ["a short text", "a somewhat longer text about proteins and cells " * 3, "x", "numbers 1 2 3 and more words"]


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEGFORGE_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    return tmp_path / "onnx-cache"


def test_fingerprint_follows_content_not_path(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert model_content_digest(str(copy)) == model_content_digest(tiny_model_dir)
    with open(copy / "modules.json", "a", encoding="utf-8") as handle:
        handle.write("\n")
    assert model_content_digest(str(copy)) != model_content_digest(tiny_model_dir)


def test_the_bundled_export_is_keyed_by_the_package_version_without_reading_its_files(monkeypatch):
    from schemas.fingerprints import digest, model_fingerprint

    def no_hashing(local_dir):
        raise AssertionError("the bundled model's files must not be hashed on every load")

    monkeypatch.setattr(onnx_backend, "model_content_digest", no_hashing)
    assert onnx_backend.export_cache_key("/any/path", "bundled") == digest(model_fingerprint("bundled"))
    with pytest.raises(AssertionError):
        onnx_backend.export_cache_key("/any/path", "/any/path")


def test_onnx_matches_torch_and_is_exported_once(tiny_model_dir, onnx_cache, monkeypatch):
    reference = load_sentence_transformer(tiny_model_dir).encode_document(TEXTS, batch_size=2)  # [4, 32]
    onnx_model = load_sentence_transformer(tiny_model_dir, backend="onnx", threads=1)
    vectors = onnx_model.encode_document(TEXTS, batch_size=2)  # padded batches of different lengths
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    fingerprint = model_content_digest(tiny_model_dir)
    assert os.listdir(onnx_cache) == [fingerprint]
    assert sorted(os.listdir(onnx_cache / fingerprint)) == ["model-opset17-eager-ort.onnx", "model-opset17-eager.onnx"]

    def no_export(*args, **kwargs):
        raise AssertionError("the cached export must be reused")

    monkeypatch.setattr(onnx_backend, "export_onnx", no_export)
    monkeypatch.setattr(onnx_backend, "optimize_onnx", no_export)
    again = load_sentence_transformer(tiny_model_dir, backend="onnx").encode_document(TEXTS, batch_size=4)
    np.testing.assert_allclose(again, reference, atol=1e-5)


def test_int8_is_quantized_for_this_cpu_and_stays_close(tiny_model_dir, onnx_cache):
    reference = load_sentence_transformer(tiny_model_dir).encode_query(TEXTS)
    int8 = load_sentence_transformer(tiny_model_dir, backend="onnx-int8", threads=1)
    vectors = int8.encode_query(TEXTS)
    assert vectors.shape == reference.shape
    assert np.abs(vectors - reference).max() > 0  # really another model
    assert (vectors * reference).sum(axis=1).min() > 0.9  # cosine to the fp32 vector
    files = os.listdir(onnx_cache / model_content_digest(tiny_model_dir))
    assert f"model-opset17-eager-ort_qint8_{onnx_backend.quantization_isa()}.onnx" in files
    assert int8[0].model.onnx_path.endswith(f"qint8_{onnx_backend.quantization_isa()}.onnx")
    assert not [name for name in files if name.endswith(".partial")]


def test_devices_and_backends_are_checked(tiny_model_dir, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert onnx_backend.resolve_device("auto") == "cpu"
    assert onnx_backend.resolve_device("cuda") == "cuda"
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto, got 'tpu'"):
        onnx_backend.resolve_device("tpu")
    with pytest.raises(ValueError, match="embed backend must be one of torch, onnx, onnx-int8, got 'tensorrt'"):
        load_sentence_transformer(tiny_model_dir, backend="tensorrt")
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="needs onnxruntime-gpu"):
        onnx_backend.ort_providers("cuda")


def test_eval_runs_each_backend_and_reports_it(tmp_path, tiny_model_dir, onnx_cache, capsys):
    import json

    from pipelines.eval import main_eval

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {f"d{i}": f"document {i} about topic {i % 3}" for i in range(6)}
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for d, t in docs.items()))
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "topic 1"}\n{"_id": "q2", "text": "document 2"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    scores = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        argv = ["--beir", str(beir), "--split", "test", "--model", tiny_model_dir, "--embed-backend", backend]
        assert main_eval(argv) == 0
        result = json.loads(capsys.readouterr().out.strip())
        assert (result["embed_backend"], result["device"]) == (backend, "cpu")
        scores[backend] = result["ndcg@10"]
    assert scores["onnx"] == pytest.approx(scores["torch"], abs=1e-6)


def test_a_graph_the_optimizer_would_change_is_checked_against_the_export(tiny_model_dir, tmp_path, monkeypatch):
    model = load_sentence_transformer(tiny_model_dir)
    plain = onnx_backend.export_onnx(model[0].model, str(tmp_path / "plain.onnx"))
    assert model[0].model.config._attn_implementation != "eager"  # the export switched attention back
    fused = onnx_backend.optimize_onnx(plain, str(tmp_path / "ort.onnx"), model[0].model.config)
    feeds = onnx_backend._sample_feeds(plain, model[0].model.config.vocab_size)
    np.testing.assert_allclose(onnx_backend._run(fused, feeds), onnx_backend._run(plain, feeds), atol=1e-4)

    def broken(*args, **kwargs):
        raise RuntimeError("no fusion for this architecture")

    monkeypatch.setattr("onnxruntime.transformers.optimizer.optimize_model", broken)
    kept = onnx_backend.optimize_onnx(plain, str(tmp_path / "kept.onnx"), model[0].model.config)
    assert open(kept, "rb").read() == open(plain, "rb").read()  # the plain export, copied
