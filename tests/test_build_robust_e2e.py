"""Issue 13 tried as a new user would: someone's folder, a hostile corpus, --strict with --resume, SIGKILL, edits.

One hostile BEIR folder is made at test time (the shipped SciFact sample plus four bad corpus rows: a lone
surrogate in a text, one in an id, a 1 MB id and a 40 MB line) and built once with the tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from pipelines.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "scifact-sample")
KEY = ["query_id", "positive_id", "negative_id", "tier", "rank", "generator"]
HOSTILE_ROWS = {  # corpus line -> expected dead-letter reason
    b'{"_id": "bad-text", "title": "", "text": "lone \\ud800 surrogate"}': "invalid_text",
    b'{"_id": "bad-\\udfff-id", "title": "", "text": "fine text"}': "invalid_text",
    b'{"_id": "' + b"i" * 1_000_000 + b'", "title": "", "text": "a 1 MB id"}': "id_too_long",
    b'{"_id": "huge-line", "title": "", "text": "' + b"w " * 20_000_000 + b'"}': "line_too_long",
}


def _args(beir: str, run_dir: str, model: str, *extra: str) -> list[str]:
    return ["build", "--beir", beir, "--split", "train", "--model", model, "--output", run_dir,
            "--num-shards", "2", *extra]


def _rows(run_dir: str) -> pl.DataFrame:
    return pl.read_parquet(os.path.join(run_dir, "negatives"), hive_partitioning=True).select(KEY).sort(KEY)


@pytest.fixture(scope="module")
def hostile_beir(tmp_path_factory) -> str:
    beir = tmp_path_factory.mktemp("hostile") / "beir"
    shutil.copytree(SAMPLE, beir)
    with open(beir / "corpus.jsonl", "ab") as handle:
        for line in HOSTILE_ROWS:
            handle.write(line + b"\n")
    return str(beir)


@pytest.fixture(scope="module")
def clean_run(hostile_beir, tiny_model_dir, tmp_path_factory) -> str:
    run_dir = str(tmp_path_factory.mktemp("clean") / "run")
    assert main(_args(hostile_beir, run_dir, tiny_model_dir)) == 0
    return run_dir


def test_overwrite_refuses_someone_elses_folder_and_the_file_survives(tmp_path, tiny_model_dir, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(_args(SAMPLE, ".", tiny_model_dir, "--overwrite", "--dry_run=True")) == 2
    err = capsys.readouterr().err
    assert "refusing --overwrite" in err and "notes.txt" in err and "nothing was deleted" in err
    assert main(_args(SAMPLE, str(tmp_path), tiny_model_dir, "--overwrite")) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_hostile_corpus_builds_and_dead_letters_the_four_rows_with_their_reasons(clean_run):
    manifest = json.load(open(os.path.join(clean_run, "manifest.json")))
    assert sorted(manifest["stages"]) == ["embed", "index", "ingest", "mine"]
    dead = pl.read_parquet(os.path.join(clean_run, "deadletter", "ingest"))
    assert sorted(dead["reason"].to_list()) == sorted(HOSTILE_ROWS.values())
    assert dead["raw"].str.len_bytes().max() < 1_100_000  # the 40 MB line is not kept whole
    assert manifest["counts"]["deadletter_by_reason"] == {"invalid_text": 2, "id_too_long": 1, "line_too_long": 1}
    for counts in manifest["counts"]["files"].values():
        assert counts["read"] == counts["accepted"] + counts["dead_lettered"] + counts["out_of_split"]
    assert manifest["counts"]["docs"] == 450
    assert manifest["content"]["inputs"] and manifest["content"]["model"]["files"]


def test_strict_exits_3_fresh_and_with_resume_and_a_changed_corpus_reruns_ingest(hostile_beir, tiny_model_dir,
                                                                                  tmp_path, capsys):
    beir = str(tmp_path / "beir")
    shutil.copytree(hostile_beir, beir)
    run_dir = str(tmp_path / "run")
    assert main(_args(beir, run_dir, tiny_model_dir, "--strict")) == 3
    assert main(_args(beir, run_dir, tiny_model_dir, "--resume", "--strict")) == 3
    assert "4 input row(s) were dead-lettered" in capsys.readouterr().err
    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    assert sorted(manifest["stages"]) == ["ingest"] and manifest["resume"]["reused"] == ["ingest"]
    with open(os.path.join(beir, "corpus.jsonl"), "ab") as handle:
        handle.write(b'{"_id": "new-doc", "title": "", "text": "added after the first run"}\n')
    assert main(_args(beir, run_dir, tiny_model_dir, "--resume", "--strict")) == 3
    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    assert manifest["resume"]["reused"] == [] and manifest["resume"]["reason"].startswith("stage ingest: input ")
    assert "corpus.jsonl changed" in manifest["resume"]["reason"]
    assert manifest["counts"]["files"][os.path.join(beir, "corpus.jsonl")]["accepted"] == 451  # ingest ran again


def test_sigkill_during_embedding_then_resume_gives_the_clean_rows(clean_run, hostile_beir, tiny_model_dir,
                                                                   tmp_path):
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "pipelines.cli", *_args(hostile_beir, run_dir, tiny_model_dir)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = os.path.join(run_dir, "_staging", "embed")
    deadline = time.monotonic() + 120
    while not os.path.exists(marker) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # inside the embed pipeline (model loading / encoding)
    assert process.poll() is None, "the build ended before it could be killed in the embed stage"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    assert sorted(manifest["stages"]) == ["ingest"]
    assert not os.path.exists(os.path.join(run_dir, "embeddings"))  # nothing half-written is visible
    assert main(_args(hostile_beir, run_dir, tiny_model_dir, "--resume")) == 0
    resumed = json.load(open(os.path.join(run_dir, "manifest.json")))
    assert resumed["resume"]["reused"] == ["ingest"] and "did not finish" in resumed["resume"]["reason"]
    assert not os.path.exists(os.path.join(run_dir, "_staging"))
    assert _rows(run_dir).equals(_rows(clean_run))
