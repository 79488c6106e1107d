"""File operations on a RUN_DIR through Beam FileSystems (local and gs:// alike).

Each stage writes into its own staging root (RunLayout(run.staging_dir(stage))); promote_stage moves the
files into RUN_DIR only after the stage's pipeline finished, so readers never see half-written outputs.
Folders shared by stages (deadletter/, warnings/, stats/) get a per-stage sub-folder.
"""

from __future__ import annotations

import json
import logging

from apache_beam.io.filesystems import FileSystems

from schemas.layout import RunLayout

logger = logging.getLogger(__name__)

# Top-level folders each stage owns exclusively in RUN_DIR.
STAGE_OUTPUTS = {"ingest": ("inputs",), "embed": ("embeddings",), "index": ("index",), "mine": ("negatives",)}
SHARED_FOLDERS = ("deadletter", "warnings", "stats")


def list_files(root: str) -> list[str]:
    """Every file below root (recursive), sorted; [] when root does not exist."""
    if not FileSystems.exists(root):
        return []
    pattern = root.rstrip("/") + "/**"
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def delete_tree(root: str) -> None:
    if FileSystems.exists(root):
        FileSystems.delete([root])


def _relative(path: str, root: str) -> str:
    return path[len(root.rstrip("/")) + 1 :]


def _target_for(relative: str, stage: str) -> str:
    head, _, rest = relative.partition("/")
    if head in SHARED_FOLDERS:
        return f"{head}/{stage}/{rest}"
    return relative


def clear_stage(run: RunLayout, stage: str) -> None:
    """Remove whatever an earlier (possibly killed) attempt of this stage left behind."""
    for folder in STAGE_OUTPUTS[stage]:
        delete_tree(FileSystems.join(run.run_dir, folder))
    for folder in SHARED_FOLDERS:
        delete_tree(FileSystems.join(run.run_dir, folder, stage))
    delete_tree(run.staging_dir(stage))


def promote_stage(run: RunLayout, stage: str) -> int:
    """Move the stage's staged files into RUN_DIR; returns the number of files moved."""
    staging = run.staging_dir(stage)
    sources = list_files(staging)
    targets = [FileSystems.join(run.run_dir, _target_for(_relative(src, staging), stage)) for src in sources]
    for target in targets:
        parent = target.rsplit("/", 1)[0]
        if not FileSystems.exists(parent):
            FileSystems.mkdirs(parent)
    if sources:
        FileSystems.rename(sources, targets)
    delete_tree(staging)
    staging_root = FileSystems.join(run.run_dir, "_staging")
    if not list_files(staging_root):
        delete_tree(staging_root)
    return len(sources)


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically: a .tmp file renamed over the target."""
    tmp = path + ".tmp"
    with FileSystems.create(tmp) as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True, default=str).encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))
