"""`negforge build` end to end through the CLI on the shipped SciFact sample (tiny model, DirectRunner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from pipelines.cli import main
from schemas.contracts import contract_violations
from schemas.negatives import TIERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "scifact-sample")
DATAFLOW_IMAGE = "us-central1-docker.pkg.dev/my-project-123/negforge/worker:0.1.0"  # README, Dockerfile


def _build(run_dir: str, model: str, *extra: str) -> int:
    return main(["build", "--beir", SAMPLE, "--split", "train", "--model", model, "--output", run_dir,
                 "--num-shards", "3", *extra])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_model_dir):
    run_dir = str(tmp_path_factory.mktemp("e2e") / "demo")
    assert _build(run_dir, tiny_model_dir, "--overwrite") == 0
    return run_dir


def test_build_writes_every_tier_with_the_contract_schema_and_accounting(demo_run):
    manifest = json.load(open(os.path.join(demo_run, "manifest.json")))
    assert sorted(manifest["stages"]) == ["embed", "index", "ingest", "mine"]
    assert all(stage["finished"] for stage in manifest["stages"].values())
    for counts in manifest["counts"]["files"].values():
        assert counts["read"] == counts["accepted"] + counts["dead_lettered"] + counts["out_of_split"]
    assert manifest["counts"]["docs"] == 450 and manifest["counts"]["queries"] == 150
    assert manifest["counts"]["pairs"] == 166
    for tier in TIERS:
        assert os.listdir(os.path.join(demo_run, "negatives", f"tier={tier}")), tier
    frame = pl.read_parquet(os.path.join(demo_run, "negatives"), hive_partitioning=True)
    rows = frame.group_by("tier").len().sort("tier")
    per_tier = dict(zip(rows["tier"].cast(pl.String), rows["len"], strict=True))
    selection = manifest["selection"]
    assert selection["rows_per_tier"] == {tier: per_tier.get(tier, 0) for tier in TIERS}
    per_pair = frame.group_by("query_id", "positive_id", "tier").len()
    assert per_pair.filter(pl.col("tier") == "hard")["len"].max() <= 3  # default K=3
    full_hard = per_pair.filter((pl.col("tier") == "hard") & (pl.col("len") == 3)).height
    assert selection["pairs_full"]["hard"] == full_hard  # a random tiny model leaves many pairs short
    violations = contract_violations(frame.lazy(), manifest["config"])
    assert violations.height == 0, violations


def test_existing_run_is_refused_then_overwritten_then_resumed(demo_run, tiny_model_dir, capsys):
    assert _build(demo_run, tiny_model_dir) == 2
    assert "--overwrite" in capsys.readouterr().err
    before = pl.read_parquet(os.path.join(demo_run, "negatives"), hive_partitioning=True)
    assert _build(demo_run, tiny_model_dir, "--overwrite") == 0  # what a second `make run` does
    rebuilt = pl.read_parquet(os.path.join(demo_run, "negatives"), hive_partitioning=True)
    key = ["query_id", "positive_id", "negative_id", "tier", "rank", "generator"]
    assert before.select(key).sort(key).equals(rebuilt.select(key).sort(key))  # same seed, same rows
    assert _build(demo_run, tiny_model_dir, "--resume") == 0  # every stage reused
    after = pl.read_parquet(os.path.join(demo_run, "negatives"), hive_partitioning=True)
    assert before.select(key).sort(key).equals(after.select(key).sort(key))


def test_resume_with_changed_mining_reruns_only_mining(demo_run, tiny_model_dir):
    embeddings_before = sorted(os.listdir(os.path.join(demo_run, "embeddings")))
    mtime = os.path.getmtime(os.path.join(demo_run, "embeddings", embeddings_before[0]))
    assert _build(demo_run, tiny_model_dir, "--resume", "--hard", "2", "--semi-hard", "0", "--random", "0") == 0
    assert os.path.getmtime(os.path.join(demo_run, "embeddings", embeddings_before[0])) == mtime
    frame = pl.read_parquet(os.path.join(demo_run, "negatives"), hive_partitioning=True)
    per_pair = frame.filter(pl.col("tier") == "hard").group_by("query_id", "positive_id").len()
    assert per_pair.height > 0 and per_pair["len"].max() == 2  # --hard 2 now, K was 3
    assert frame.filter(pl.col("tier") != "hard").height == 0


def test_strict_exits_non_zero_on_dead_letters(tmp_path, tiny_model_dir, capsys):
    corrupt = os.path.join(REPO, "tests", "fixtures", "ingest", "beir_corrupt")
    code = main(["build", "--beir", corrupt, "--split", "train", "--model", tiny_model_dir,
                 "--output", str(tmp_path / "run"), "--strict", "--hard", "1", "--semi-hard", "0", "--random", "0",
                 "--range-max", "3"])
    assert code == 3
    assert "dead-lettered" in capsys.readouterr().err
    manifest = json.load(open(tmp_path / "run" / "manifest.json"))
    assert manifest["stages"]["ingest"]["finished"] and "embed" not in manifest["stages"]


def test_bad_inputs_fail_before_any_work(tmp_path, capsys):
    assert main(["build", "--beir", str(tmp_path / "nope"), "--split", "train", "--output", str(tmp_path / "r")]) == 2
    assert "corpus.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["build", "--beir", SAMPLE, "--split", "train", "--output", str(tmp_path / "r"), "--hadr", "3"]) == 2
    assert "--hadr" in capsys.readouterr().err


def test_dataflow_job_builds_offline_under_dry_run(gcs_emulator):
    """The README's Dataflow command, built (not submitted) on gs:// inputs (the GCS emulator), no network.

    Dataflow workers cannot read the launcher's local files, so the inputs and RUN_DIR are gs:// paths."""
    from gcs_emulator import upload_tree

    from storage.files import list_files

    upload_tree(SAMPLE, f"{gcs_emulator}/dry/scifact")
    run_dir = f"{gcs_emulator}/dry/run"
    command = [
        sys.executable, "-m", "pipelines.cli", "build", "--beir", f"{gcs_emulator}/dry/scifact", "--split", "train",
        "--output", run_dir, "--runner", "DataflowRunner", "--dry_run=True",
        "--project", "my-project-123", "--region", "us-central1", "--temp_location", f"{gcs_emulator}/tmp",
        "--setup_file", os.path.join(REPO, "setup.py"), "--sdk_container_image", DATAFLOW_IMAGE,
        "--worker-memory-gb", "4",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [p for p in list_files(run_dir) if "/negatives/" in p]  # nothing ran


def test_refresh_round_re_mines_with_the_fine_tuned_model(demo_run, tiny_model_dir, tmp_path):
    """ANCE-style round two: train on round one's negatives, then `build --model MODEL_DIR` mines again."""
    model_dir = str(tmp_path / "round1-model")
    assert main(["train", demo_run, "--output", model_dir, "--base-model", tiny_model_dir, "--preset", "hard",
                 "--batch-size", "8", "--max-steps", "2", "--max-seq-length", "32", "--dev-fraction", "0"]) == 0
    refreshed = str(tmp_path / "round2")
    assert _build(refreshed, model_dir, "--hard", "3", "--semi-hard", "0", "--random", "0") == 0
    manifest = json.load(open(os.path.join(refreshed, "manifest.json")))
    assert manifest["config"]["embed"]["model"] == model_dir
    key = ["query_id", "positive_id", "negative_id"]
    first = pl.read_parquet(os.path.join(demo_run, "negatives"), hive_partitioning=True)
    second = pl.read_parquet(os.path.join(refreshed, "negatives"), hive_partitioning=True)
    assert set(second["tier"].cast(pl.String).unique()) == {"hard"}
    assert contract_violations(second.lazy(), manifest["config"]).height == 0
    first_hard = first.filter(pl.col("tier") == "hard").select(key)
    # the trained model ranks the corpus differently: the re-mined hard negatives are not round one's
    assert not second.select(key).sort(key).equals(first_hard.sort(key))
    # and its scores are the trained model's: no judged positive of a query comes back as its negative
    positives = first.select("query_id", pl.col("positive_id").alias("negative_id")).unique()
    assert second.join(positives, on=["query_id", "negative_id"]).height == 0
