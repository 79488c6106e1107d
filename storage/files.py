"""Files through Beam's FileSystems, local and object stores (gs://, s3://) alike.

Object stores have no folders: `FileSystems.exists("gs://b/run")` is false even when objects live under that
prefix. Nothing here relies on directory semantics: a "folder" is the set of files whose path starts with
`<folder>/`, listed with a `**` match, deleted object by object. Used by the pipelines (RUN_DIR, stage
promotion: pipelines/run_files.py), the trainer and the audit (reading a RUN_DIR on gs://).
"""

from __future__ import annotations

import json

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

DELETE_CHUNK = 500  # files per FileSystems.delete / rename call (GCS: one batch request)


def is_remote(path: str) -> bool:
    """True for paths of a non-local filesystem (gs://, s3://, ...)."""
    return FileSystems.get_scheme(path) not in (None, "file")


def list_files(root: str) -> list[str]:
    """Every file below root (recursive; on object stores every object under the `root/` prefix), sorted.

    [] when nothing is there. Works the same whether or not the store knows "folders".
    """
    pattern = root.rstrip("/") + "/**"
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except BeamIOError:  # local: the folder does not exist
        return []


def path_exists(path: str) -> bool:
    """True when path is a file/object, or a folder/prefix holding at least one file."""
    return FileSystems.exists(path) or bool(list_files(path))


def delete_tree(root: str) -> int:
    """Delete every file below root (object by object on object stores); returns the number of files deleted."""
    files = list_files(root)
    for start in range(0, len(files), DELETE_CHUNK):
        FileSystems.delete(files[start : start + DELETE_CHUNK])
    if not is_remote(root) and FileSystems.exists(root):
        FileSystems.delete([root])  # the (now empty) local folders themselves
    return len(files)


def ensure_dir(path: str) -> None:
    """Create a local folder (parents too); a no-op on object stores, where folders do not exist."""
    if not is_remote(path) and not FileSystems.exists(path):
        FileSystems.mkdirs(path)


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


def local_copies(paths: list[str], root: str) -> list[str]:
    """Local paths for `paths` (files below root): local ones as they are, remote ones downloaded once.

    Remote files are copied into one temporary folder, keeping their path relative to root (so hive
    partitions such as tier=hard/ survive) for readers that cannot open gs:// themselves (Polars,
    pyarrow datasets); the folder is removed when the process exits.
    """
    remote = [p for p in paths if is_remote(p)]
    if not remote:
        return list(paths)
    import atexit
    import os
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="negforge-remote-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    prefix = root.rstrip("/") + "/"
    local = []
    for path in paths:
        if not is_remote(path):
            local.append(path)
            continue
        relative = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        target = os.path.join(folder, *relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        with raw as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        local.append(target)
    return local


def upload_tree(local_dir: str, remote_dir: str) -> int:
    """Copy every file below a local folder to remote_dir (gs://...), object by object; returns the count."""
    import os
    import shutil

    count = 0
    for folder, _, names in os.walk(local_dir):
        for name in sorted(names):
            source = os.path.join(folder, name)
            relative = os.path.relpath(source, local_dir).replace(os.sep, "/")
            target = FileSystems.join(remote_dir, relative)
            with open(source, "rb") as handle, FileSystems.create(
                target, compression_type=CompressionTypes.UNCOMPRESSED
            ) as sink:
                shutil.copyfileobj(handle, sink, 1 << 20)
            count += 1
    return count
