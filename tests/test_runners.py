"""Runs beyond the in-process runner: PortableRunner with SDK workers in a separate worker pool process (as
Flink, Spark and Dataflow v2 run Python), and the DirectRunner with 8 threads sharing one model.

Both must give the rows of the plain DirectRunner (conftest's scaleout_direct_run). Inputs are tiny
(tests/scaleout_data.py), the model is the 32-d tiny model, and contextual generation is on, so the shared
model and its tokenizer see concurrent calls.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from gcs_emulator import child_pythonpath, free_port, upload_tree, wait_for_port
from scaleout_data import assert_same_rows, build, negative_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def direct_rows(scaleout_direct_run):
    rows = negative_rows(scaleout_direct_run)
    assert rows.filter(rows["tier"] == "contextual").height > 0  # the contextual path really ran
    return rows


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory, gcs_emulator):
    """`python -m apache_beam.runners.worker.worker_pool_main` in its own process and working directory.

    It starts each SDK worker as a bare `python`, so this environment's bin/ goes first on its PATH; the
    package comes from PYTHONPATH (what --setup_file or a container gives remote workers). Yields (port, log).
    """
    port, workdir = free_port(), tmp_path_factory.mktemp("worker-pool")
    env = dict(os.environ, PYTHONPATH=child_pythonpath(REPO))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log_path = workdir / "pool.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process)
            yield port, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def test_portable_runner_with_external_worker_pool_on_gs_paths(
    worker_pool, gcs_emulator, scaleout_beir, tiny_model_dir, direct_rows
):
    port, log_path = worker_pool
    remote_beir, remote_model = f"{gcs_emulator}/runners/beir", f"{gcs_emulator}/runners/model"
    upload_tree(scaleout_beir, remote_beir)
    upload_tree(tiny_model_dir, remote_model)  # a local --model would be refused for remote workers
    run_dir = f"{gcs_emulator}/runners/portable"
    portable = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL",
                "--environment_config", f"localhost:{port}"]
    assert build(remote_beir, run_dir, remote_model, *portable) == 0
    assert "Starting worker" in log_path.read_text()  # the SDK workers were the pool's processes
    assert_same_rows(negative_rows(run_dir), direct_rows)


def test_eight_threads_share_one_model_and_give_the_same_rows(scaleout_beir, tiny_model_dir, direct_rows, tmp_path):
    run_dir = str(tmp_path / "threads")
    threads = ["--direct_running_mode", "multi_threading", "--direct_num_workers", "8"]
    assert build(scaleout_beir, run_dir, tiny_model_dir, *threads) == 0
    assert_same_rows(negative_rows(run_dir), direct_rows)


@pytest.mark.parametrize("runner", [
    ["--runner", "DataflowRunner", "--project", "p", "--region", "us-central1", "--temp_location", "gs://b/tmp"],
    ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099", "--environment_type", "DOCKER"],
    ["--runner", "FlinkRunner", "--environment_type", "EXTERNAL", "--environment_config", "10.0.0.7:50000"],
])
def test_local_paths_with_remote_workers_are_refused_before_any_work(
    runner, scaleout_beir, tiny_model_dir, tmp_path, capsys
):
    run_dir = str(tmp_path / "never")
    assert build(scaleout_beir, run_dir, tiny_model_dir, *runner) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "--beir" in err and "--output" in err and "gs://" in err
    assert not os.path.exists(run_dir)
