"""Staging, promotion and resume bookkeeping of RUN_DIR."""

from __future__ import annotations

import os

import pytest

from pipelines.build import RunDirExistsError, prepare_run_dir
from pipelines.run_files import clear_stage, list_files, promote_stage, read_json, write_json
from schemas.build_config import BuildConfig, IngestConfig, MiningConfig
from schemas.layout import RunLayout
from schemas.manifest import new_manifest, reusable_stages, stage_fingerprint


def _touch(path: str, text: str = "x") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _config(run_dir: str, **kwargs) -> BuildConfig:
    return BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir="b", split="train"), **kwargs)


def test_promote_moves_staged_files_and_nests_shared_folders(tmp_path):
    run = RunLayout(str(tmp_path / "run"))
    staging = RunLayout(run.staging_dir("ingest"))
    _touch(staging.inputs_table("docs") + "/part-0.parquet")
    _touch(staging.deadletter_dir + "/part-0.parquet")
    moved = promote_stage(run, "ingest")
    assert moved == 2
    files = [p[len(run.run_dir) + 1 :] for p in list_files(run.run_dir)]
    assert files == ["deadletter/ingest/part-0.parquet", "inputs/docs/part-0.parquet"]


def test_clear_stage_removes_only_that_stage(tmp_path):
    run = RunLayout(str(tmp_path / "run"))
    _touch(run.inputs_table("docs") + "/a.parquet")
    _touch(run.deadletter_dir + "/ingest/a.parquet")
    _touch(run.deadletter_dir + "/mine/b.parquet")
    _touch(run.tier_dir("hard") + "/c.parquet")
    clear_stage(run, "mine")
    remaining = [p[len(run.run_dir) + 1 :] for p in list_files(run.run_dir)]
    assert remaining == ["deadletter/ingest/a.parquet", "inputs/docs/a.parquet"]


def test_existing_run_dir_needs_overwrite_or_resume(tmp_path):
    run_dir = str(tmp_path / "run")
    _touch(run_dir + "/manifest.json", "{}")
    with pytest.raises(RunDirExistsError, match="--overwrite.*--resume"):
        prepare_run_dir(_config(run_dir), RunLayout(run_dir))
    prepare_run_dir(_config(run_dir, overwrite=True), RunLayout(run_dir))
    assert list_files(run_dir) == []


def test_resume_reuses_only_leading_stages_with_matching_fingerprints(tmp_path):
    run_dir = str(tmp_path / "run")
    config = _config(run_dir)
    manifest = new_manifest(config)
    for stage in ("ingest", "embed", "index", "mine"):
        manifest["stages"][stage] = {"finished": True, "fingerprint": stage_fingerprint(config, stage)}
    write_json(RunLayout(run_dir).manifest, manifest)
    assert reusable_stages(read_json(RunLayout(run_dir).manifest), config) == ["ingest", "embed", "index", "mine"]
    changed = _config(run_dir, mining=MiningConfig(hard=2), resume=True)
    reopened = prepare_run_dir(changed, RunLayout(run_dir))
    assert sorted(reopened["stages"]) == ["embed", "index", "ingest"]
    reseeded = _config(run_dir, seed=99, resume=True)
    assert sorted(prepare_run_dir(reseeded, RunLayout(run_dir))["stages"]) == ["embed", "ingest"]
