"""A GCS emulator (PyPI gcp-storage-emulator) in its own process, for tests of gs:// paths.

It speaks the JSON API that Beam's GCS filesystem and google-cloud-storage use, batch requests included.
Both connect anonymously once STORAGE_EMULATOR_HOST=http://host:port is set; pipeline workers in other
processes (a worker pool, multi_processing) reach it through the same variable.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

BUCKET = "negforge-test"

_SERVER = """
import sys, time
from gcp_storage_emulator.server import create_server
server = create_server(sys.argv[1], int(sys.argv[2]), in_memory=True, default_bucket=sys.argv[3])
server.start()
while True:
    time.sleep(3600)
"""


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on port {port}")
        with contextlib.closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s")


@contextlib.contextmanager
def emulator_process(bucket: str = BUCKET):
    """Run the emulator; yields its http://127.0.0.1:PORT address (also set as STORAGE_EMULATOR_HOST)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, "127.0.0.1", str(port), bucket],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        wait_for_port(port, process)
        host = f"http://127.0.0.1:{port}"
        os.environ["STORAGE_EMULATOR_HOST"] = host
        yield host
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def upload_tree(local_dir: str, remote_dir: str) -> None:
    """Copy every file below local_dir to remote_dir (gs://...) through Beam's FileSystems."""
    from storage.files import upload_tree as upload

    upload(local_dir, remote_dir)


SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_site")


def skip_credential_lookup() -> None:
    """In this process: connect anonymously at once (see gcs_site/sitecustomize.py)."""
    from apache_beam.internal.gcp import auth

    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None


def child_pythonpath(*first: str) -> str:
    """PYTHONPATH for processes the tests start: `first`, the test site folder, then the current value."""
    parts = [*first, SITE_DIR, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(parts))
