"""gs:// end to end against a GCS emulator in its own process (tests/gcs_emulator.py).

Object stores have no folders: these tests catch every code path that relied on directory semantics
(promotion, --overwrite, the "RUN_DIR exists" refusal, export, audit, the trainer's Parquet reading).
"""

from __future__ import annotations

import json
import os

import polars as pl
import pytest
from apache_beam.io.filesystems import FileSystems
from gcs_emulator import upload_tree
from scaleout_data import assert_same_rows, build, negative_rows

from pipelines.cli import main
from pipelines.run_files import promote_stage
from schemas.layout import RunLayout
from storage.files import delete_tree, list_files, local_copies, path_exists


def _read_parquet(path: str) -> pl.DataFrame:
    return pl.read_parquet(local_copies([path], path.rsplit("/", 1)[0])[0])


@pytest.fixture(scope="module")
def remote_beir(scaleout_beir, gcs_emulator):
    remote = f"{gcs_emulator}/inputs/beir"
    upload_tree(scaleout_beir, remote)
    return remote


def test_run_files_use_prefixes_not_folders(gcs_emulator):
    run = RunLayout(f"{gcs_emulator}/unit/run")
    staging = RunLayout(run.staging_dir("ingest"))
    for path in (staging.inputs_table("docs") + "/part-0.parquet", staging.deadletter_dir + "/part-0.parquet"):
        with FileSystems.create(path) as handle:
            handle.write(b"x")
    assert not FileSystems.exists(run.run_dir) and path_exists(run.run_dir)  # no folder, but objects
    assert promote_stage(run, "ingest") == 2
    assert [p[len(run.run_dir) + 1 :] for p in list_files(run.run_dir)] == [
        "deadletter/ingest/part-0.parquet", "inputs/docs/part-0.parquet"]
    assert not path_exists(FileSystems.join(run.run_dir, "_staging"))
    assert not path_exists(f"{gcs_emulator}/unit/ru")  # a prefix of a name is not a folder
    assert delete_tree(run.run_dir) == 2 and list_files(run.run_dir) == []


def test_gs_run_dir_build_refuse_overwrite_resume_export_audit_train(
    remote_beir, scaleout_direct_run, gcs_emulator, tiny_model_dir, tmp_path, capsys
):
    local_run, remote_run = scaleout_direct_run, f"{gcs_emulator}/runs/e2e"
    expected = negative_rows(local_run)

    assert build(remote_beir, remote_run, tiny_model_dir) == 0
    files = [p[len(remote_run) + 1 :] for p in list_files(remote_run)]
    assert not [f for f in files if f.startswith("_staging/")], files  # every stage promoted
    for folder in ("inputs/docs/", "embeddings/", "index/", "negatives/tier=hard/", "stats/mine/"):
        assert any(f.startswith(folder) for f in files), folder
    manifest = json.loads(FileSystems.open(f"{remote_run}/manifest.json").read())
    assert sorted(manifest["stages"]) == ["embed", "index", "ingest", "mine"]
    assert_same_rows(negative_rows(remote_run), expected)

    capsys.readouterr()
    assert build(remote_beir, remote_run, tiny_model_dir) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" in err

    assert build(remote_beir, remote_run, tiny_model_dir, "--overwrite") == 0
    assert not any(f.startswith("_staging/") for f in [p[len(remote_run) + 1 :] for p in list_files(remote_run)])
    assert_same_rows(negative_rows(remote_run), expected)
    assert build(remote_beir, remote_run, tiny_model_dir, "--resume") == 0
    assert_same_rows(negative_rows(remote_run), expected)

    for fmt in ("triplet", "n-tuple"):
        local_out, remote_out = str(tmp_path / f"{fmt}.parquet"), f"{gcs_emulator}/exports/{fmt}.parquet"
        assert main(["export", local_run, "--format", fmt, "--output", local_out]) == 0
        assert main(["export", remote_run, "--format", fmt, "--output", remote_out]) == 0
        assert _read_parquet(remote_out).equals(pl.read_parquet(local_out))
    assert main(["export", f"{gcs_emulator}/runs/none", "--format", "triplet", "--output", str(tmp_path / "x")]) == 2

    audit_code = main(["audit", remote_run])
    report = json.loads(FileSystems.open(f"{remote_run}/audit/report.json").read())
    local_report_dir = str(tmp_path / "audit")
    assert main(["audit", local_run, "--report", local_report_dir]) == audit_code
    local_report = json.load(open(f"{local_report_dir}/report.json"))
    for key in ("tiers", "violations", "suspects", "diversity"):
        assert report[key] == local_report[key], key

    train = ["--base-model", tiny_model_dir, "--max-steps", "1", "--batch-size", "4", "--dev-fraction", "0"]
    summaries = {}
    sources = {"local": local_run, "gs": remote_run, "export": f"{gcs_emulator}/exports/triplet.parquet"}
    for name, source in sources.items():
        capsys.readouterr()
        assert main(["train", source, "--output", str(tmp_path / f"model-{name}"), *train]) == 0
        summaries[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summaries["gs"]["first_loss"] == pytest.approx(summaries["local"]["first_loss"], abs=1e-5)

    remote_model, trained = f"{gcs_emulator}/models/tiny", f"{gcs_emulator}/models/trained"
    upload_tree(tiny_model_dir, remote_model)
    remote_train = ["--base-model", remote_model, *train[2:]]
    assert main(["train", remote_run, "--output", trained, *remote_train]) == 0
    assert path_exists(f"{trained}/modules.json") and path_exists(f"{trained}/train_summary.json")
    capsys.readouterr()
    assert main(["eval", "--beir", remote_beir, "--split", "train", "--model", trained]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["queries"] > 0


def test_remote_shard_files_are_copied_once_per_machine(gcs_emulator, tmp_path, monkeypatch):
    """Worker processes of one machine share one local copy of a gs:// shard file (transforms/local_cache.py)."""
    import subprocess
    import sys

    from transforms.local_cache import CACHE_ENV, machine_local_copy

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    remote = f"{gcs_emulator}/cache/shard-00000-of-00001.faiss"
    with FileSystems.create(remote) as handle:
        handle.write(b"v1" * 1000)
    script = "import sys; from transforms.local_cache import machine_local_copy as m; print(m(sys.argv[1]))"
    processes = [subprocess.Popen([sys.executable, "-c", script, remote], stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
    paths = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert paths == {machine_local_copy(remote)}  # three processes and this one: one copy
    assert open(paths.pop(), "rb").read() == b"v1" * 1000
    with FileSystems.create(remote) as handle:  # a rewritten object gets a new copy
        handle.write(b"v2" * 999)
    assert open(machine_local_copy(remote), "rb").read() == b"v2" * 999
    assert len(os.listdir(tmp_path / "cache")) == 2
