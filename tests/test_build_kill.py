"""A build killed at any file operation, then resumed, ends with the files of a clean build (fake stages, fast).

The stages are replaced by fakes that write deterministic files into their staging layout, and every file
operation of the orchestrator (create, rename, delete) is counted; run k dies (a BaseException, like SIGKILL
nothing is cleaned up) at operation k. After each death the manifest on disk may only mark stages whose
outputs are complete, and `--resume` must finish with exactly the clean build's files.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines import build
from schemas.build_config import BuildConfig, IngestConfig
from schemas.layout import STAGES, RunLayout
from storage.files import list_files

OUTPUTS = {  # stage -> files it writes (relative to its staging root)
    "ingest": ("inputs/docs/part-0.parquet", "inputs/pairs/part-0.parquet", "deadletter/part-0.parquet"),
    "embed": ("embeddings/doc-0.parquet", "embeddings/doc-1.parquet", "stats/embed.json"),
    "index": ("index/shard-0.faiss", "index/index.json"),
    "mine": ("negatives/tier=hard/part-0.parquet", "negatives/tier=random/part-0.parquet"),
}
PROMOTED = {  # where promote_stage puts them
    stage: tuple(f"{p.split('/', 1)[0]}/{stage}/{p.split('/', 1)[1]}" if p.split("/")[0] in ("deadletter", "stats")
                 else p for p in files)
    for stage, files in OUTPUTS.items()
}


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` cleanup runs."""


def _fake_stage(stage):
    def run(config, run_layout, out, beam_args, test_pipeline=None):
        for relative in OUTPUTS[stage]:
            with FileSystems.create(FileSystems.join(out.run_dir, relative)) as handle:
                handle.write(f"{stage}:{relative}:{config.seed}".encode())
        return {"deadletter_by_reason": {"invalid_text": 1}} if stage == "ingest" else {"rows": 1}

    return run


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        (beir / name).write_text("x\n")
    monkeypatch.setattr(build, "preflight", lambda config: None)
    monkeypatch.setattr(build, "STAGE_FUNCTIONS", {stage: _fake_stage(stage) for stage in STAGES})
    counter = {"ops": 0, "kill_at": None}
    for name in ("create", "rename", "delete"):
        original = getattr(FileSystems, name)

        def counted(*args, _original=original, **kwargs):
            counter["ops"] += 1
            if counter["kill_at"] is not None and counter["ops"] >= counter["kill_at"]:
                raise Killed(f"killed at operation {counter['ops']}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(FileSystems, name, staticmethod(counted))

    def run(run_dir: str, kill_at: int | None = None, **flags) -> dict:
        counter.update(ops=0, kill_at=kill_at)
        config = BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir=str(beir), split="train"), **flags)
        return build.run_build(config)

    run.counter = counter
    return run


def _snapshot(run_dir: str) -> dict[str, bytes]:
    files = {}
    for path in list_files(run_dir):
        relative = os.path.relpath(path, run_dir)
        if relative != "manifest.json":
            files[relative] = open(path, "rb").read()
    return files


def test_killed_at_every_file_operation_then_resumed_gives_the_clean_build(fake_build, tmp_path):
    fake_build(str(tmp_path / "clean"))
    clean = _snapshot(str(tmp_path / "clean"))
    assert sorted(clean) == sorted(f for files in PROMOTED.values() for f in files)
    operations = fake_build.counter["ops"]
    assert operations > 20
    for kill_at in range(1, operations + 1):
        run_dir = str(tmp_path / f"killed-{kill_at}")
        with pytest.raises(Killed):
            fake_build(run_dir, kill_at=kill_at)
        manifest_path = RunLayout(run_dir).manifest
        if os.path.exists(manifest_path):  # stages the manifest calls finished have all their outputs
            finished = json.load(open(manifest_path))["stages"]
            on_disk = _snapshot(run_dir)
            for stage in finished:
                assert all(on_disk.get(f) == clean[f] for f in PROMOTED[stage]), (kill_at, stage)
        fake_build(run_dir, resume=True)
        assert _snapshot(run_dir) == clean, kill_at
        manifest = json.load(open(manifest_path))
        assert sorted(manifest["stages"]) == sorted(STAGES), kill_at


def test_a_run_killed_twice_still_resumes(fake_build, tmp_path):
    fake_build(str(tmp_path / "clean"))
    run_dir = str(tmp_path / "run")
    with pytest.raises(Killed):
        fake_build(run_dir, kill_at=15)
    with pytest.raises(Killed):
        fake_build(run_dir, kill_at=9, resume=True)
    fake_build(run_dir, resume=True)
    assert _snapshot(run_dir) == _snapshot(str(tmp_path / "clean"))


def test_a_resume_with_new_settings_killed_anywhere_never_leaves_deleted_stages_marked_finished(fake_build, tmp_path):
    clean_dir = str(tmp_path / "clean")
    fake_build(clean_dir)
    clean = _snapshot(clean_dir)
    fake_build(str(tmp_path / "probe"), seed=99)
    operations = fake_build.counter["ops"]
    for kill_at in range(1, operations + 1):
        run_dir = str(tmp_path / f"reseeded-{kill_at}")
        shutil.copytree(clean_dir, run_dir)
        try:
            fake_build(run_dir, kill_at=kill_at, resume=True, seed=99)  # the seed changes index and mine
        except Killed:
            pass
        fake_build(run_dir, resume=True)  # back to the first settings: whatever is reused must be intact
        assert _snapshot(run_dir) == clean, kill_at
