"""Machine-wide local copies of remote (gs://) files, shared by every worker process of a machine.

Beam runs several SDK processes per machine (Dataflow: one per core); each used to copy every faiss shard it
searched into its own temporary folder, so a machine held (on disk and, through memory-mapping, in the page
cache) one copy per process. Here the first process copies a file under a lock and the others reuse it: the
copy's name is derived from the remote path, size and update time, so a rewritten object gets a new copy.
Copies stay until the temporary folder is cleaned (workers are short-lived machines).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile

from apache_beam.io.filesystems import FileSystems

CACHE_ENV = "NEGFORGE_LOCAL_CACHE"  # folder for the copies; default <tmp>/negforge-cache
_CHUNK = 16 * 2**20


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "negforge-cache")


def machine_local_copy(path: str) -> str:
    """A local path holding the file at `path`: the path itself when local, else the machine's shared copy."""
    if FileSystems.get_scheme(path) in (None, "file"):
        return path
    meta = FileSystems.match([path])[0].metadata_list[0]
    key = hashlib.sha256(f"{path}\t{meta.size_in_bytes}\t{meta.last_updated_in_seconds}".encode()).hexdigest()[:24]
    folder = os.path.join(cache_dir(), key)
    local = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])
    if os.path.exists(local):
        return local
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process copies; the others wait, then reuse
        try:
            if not os.path.exists(local):
                partial = f"{local}.{os.getpid()}.partial"
                with FileSystems.open(path) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target, _CHUNK)
                os.replace(partial, local)  # atomic: readers never see half a file
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return local
