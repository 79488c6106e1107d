"""A RUN_DIR's stages on disk, local and gs:// alike (file operations: storage/files.py, no folder semantics).

Each stage writes into its own staging root (RunLayout(run.staging_dir(stage))); promote_stage moves the
files into RUN_DIR only after the stage's pipeline finished, so readers never see half-written outputs.
Folders shared by stages (deadletter/, warnings/, stats/) get a per-stage sub-folder.
"""

from __future__ import annotations

import logging

from apache_beam.io.filesystems import FileSystems

from schemas.layout import RunLayout
from storage.files import DELETE_CHUNK, delete_tree, ensure_dir, list_files

logger = logging.getLogger(__name__)

# Top-level folders each stage owns exclusively in RUN_DIR.
STAGE_OUTPUTS = {"ingest": ("inputs",), "embed": ("embeddings",), "index": ("index",), "mine": ("negatives",)}
SHARED_FOLDERS = ("deadletter", "warnings", "stats")


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
    for parent in sorted({target.rsplit("/", 1)[0] for target in targets}):
        ensure_dir(parent)
    for start in range(0, len(sources), DELETE_CHUNK):  # GCS: copy + delete per object, batched
        FileSystems.rename(sources[start : start + DELETE_CHUNK], targets[start : start + DELETE_CHUNK])
    delete_tree(staging)
    staging_root = FileSystems.join(run.run_dir, "_staging")
    if not list_files(staging_root):
        delete_tree(staging_root)
    return len(sources)
