"""Model SPEC resolution: bundled, local and copied directories; dimension from config files; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

import transforms.model as model_module
from transforms.model import (
    ModelSpecError,
    load_sentence_transformer,
    model_dimension,
    resolve_model_dir,
    validate_model_spec,
)


def test_bundled_resolves_to_the_package_model(bundled_model_dir):
    assert resolve_model_dir("bundled") == bundled_model_dir
    assert model_dimension("bundled") == 384  # legacy pooling_mode_*_tokens config


def test_dimension_of_the_tiny_model(tiny_model_dir):
    assert model_dimension(tiny_model_dir) == 32  # sentence-transformers 6 pooling config


def test_dimension_follows_pooling_modes_and_dense_layers(tmp_path, tiny_model_dir):
    from sentence_transformers import models

    base = SentenceTransformer(tiny_model_dir, device="cpu")
    pooling = models.Pooling(32, pooling_mode=("mean", "max"))  # concatenated: 64
    dense = models.Dense(in_features=64, out_features=24)
    stacked = SentenceTransformer(modules=[base[0], pooling, dense, models.Normalize()], device="cpu")
    stacked.save(str(tmp_path / "stacked"))
    assert model_dimension(str(tmp_path / "stacked")) == 24
    loaded = SentenceTransformer(str(tmp_path / "stacked"), device="cpu")
    assert loaded.encode(["a text"]).shape == (1, 24)


def test_invalid_specs_name_the_path_and_the_layout(tmp_path):
    with pytest.raises(ModelSpecError, match=r"does not exist; a sentence-transformers directory holds modules.json"):
        validate_model_spec(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match=r"empty has no modules.json"):
        model_dimension(str(tmp_path / "empty"))
    with pytest.raises(ModelSpecError, match="must be 'bundled'"):
        validate_model_spec("")


def test_unknown_module_type_is_refused(tmp_path):
    (tmp_path / "odd").mkdir()
    modules = [{"idx": 0, "name": "0", "path": "", "type": "my_pkg.Mystery"}]
    (tmp_path / "odd" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelSpecError, match="my_pkg.Mystery"):
        model_dimension(str(tmp_path / "odd"))


def test_remote_dir_is_copied_to_a_local_cache_and_loads(tmp_path, tiny_model_dir, monkeypatch):
    # Treat the local tiny model as if it were remote: the copy goes through FileSystems.match/open.
    monkeypatch.setattr(model_module, "is_remote", lambda spec: spec == tiny_model_dir)
    monkeypatch.setattr(model_module.tempfile, "gettempdir", lambda: str(tmp_path))
    local = resolve_model_dir(tiny_model_dir)
    assert local.startswith(str(tmp_path / "negforge-models")) and os.path.exists(os.path.join(local, "modules.json"))
    assert resolve_model_dir(tiny_model_dir) == local  # second load reuses the copy
    copied = load_sentence_transformer(tiny_model_dir, max_seq_length=16)
    assert copied.max_seq_length == 16
    original = SentenceTransformer(tiny_model_dir, device="cpu")
    np.testing.assert_allclose(copied.encode(["same text"]), original.encode(["same text"]), atol=1e-6)


def test_importing_the_module_turns_hub_access_off():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = "import os, transforms.model; print(os.environ['HF_HUB_OFFLINE'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
