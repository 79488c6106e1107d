"""Golden rows: `negforge build` on the shipped SciFact sample gives exactly the committed rows.

Guards refactors that must not change behaviour: every row's identity (query_id, positive_id, negative_id,
tier, rank, generator) and its scores (within 1e-6) are compared with tests/fixtures/golden/<preset>.jsonl,
built with the tiny in-process model (tests/conftest.py). `full` includes contextual negatives.

To regenerate after a deliberate behaviour change: NEGFORGE_WRITE_GOLDEN=1 pytest tests/test_golden_rows.py
(and say why in the commit).
"""

from __future__ import annotations

import json
import math
import os

import polars as pl
import pytest

from pipelines.cli import main
from schemas.build_config import CONTEXTUAL_KINDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "scifact-sample")
GOLDEN = os.path.join(REPO, "tests", "fixtures", "golden")
KEY = ["query_id", "positive_id", "negative_id", "tier", "rank", "generator"]
SCORES = ["score_positive", "score_negative", "similarity_to_positive"]
TOLERANCE = 1e-6
# The tiny random model scores every document within a few hundredths of the positive: these flags make
# the semi-hard band and the margin fit its scale so that every tier gets rows.
TINY_MODEL_FLAGS = ["--num-shards", "3", "--relative-margin", "0.01", "--semi-hard-band", "0.02,0.06"]


def _rows(run_dir: str) -> list[dict]:
    frame = pl.read_parquet(os.path.join(run_dir, "negatives"), hive_partitioning=True)
    frame = frame.with_columns(pl.col("tier").cast(pl.String)).select(KEY + SCORES).sort(KEY, nulls_last=True)
    return frame.to_dicts()


def _key(row: dict) -> tuple:
    return tuple("" if row[name] is None else str(row[name]) for name in KEY)


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), abs_tol=TOLERANCE, rel_tol=0.0)


def _diff(golden: list[dict], actual: list[dict]) -> list[str]:
    want = {_key(row): row for row in golden}
    got = {_key(row): row for row in actual}
    lines = [f"- missing  {key}" for key in sorted(set(want) - set(got))]
    lines += [f"+ extra    {key}" for key in sorted(set(got) - set(want))]
    for key in sorted(set(want) & set(got)):
        bad = {s: (want[key][s], got[key][s]) for s in SCORES if not _close(want[key][s], got[key][s])}
        if bad:
            lines.append(f"~ scores   {key}: " + ", ".join(f"{s} golden={g} now={n}" for s, (g, n) in bad.items()))
    return lines


@pytest.mark.parametrize("preset", ["baseline", "full"])
def test_build_rows_match_the_golden_file(preset, tmp_path, tiny_model_dir):
    run_dir = str(tmp_path / preset)
    config = tmp_path / "wide_band.toml"  # contextual similarity band wide enough for the tiny model
    config.write_text("[contextual]\nsimilarity_band = [0.5, 0.9999]\n")
    kinds = ["--contextual-kinds", ",".join(CONTEXTUAL_KINDS), "--config", str(config)] if preset == "full" else []
    assert main(["build", "--beir", SAMPLE, "--split", "train", "--model", tiny_model_dir, "--output", run_dir,
                 "--preset", preset, *TINY_MODEL_FLAGS, *kinds]) == 0
    actual = _rows(run_dir)
    path = os.path.join(GOLDEN, f"{preset}.jsonl")
    if os.environ.get("NEGFORGE_WRITE_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for row in actual:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
    with open(path, encoding="utf-8") as handle:
        golden = [json.loads(line) for line in handle]
    tiers = {row["tier"] for row in golden}
    expected_tiers = {"hard", "semi_hard", "random"} | ({"contextual"} if preset == "full" else set())
    assert expected_tiers <= tiers, f"golden file {path} lacks tiers {expected_tiers - tiers}"
    diff = _diff(golden, actual)
    assert not diff, f"{len(diff)} row difference(s) against {path}:\n" + "\n".join(diff[:50])
