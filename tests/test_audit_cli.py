"""`negforge audit`: report files exist and parse, exit status follows the contract, --compare side by side."""

from __future__ import annotations

import csv
import json
import os

import pytest

from audit.synthetic import write_run
from pipelines.audit import main_audit
from schemas.negatives import text_hash

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXT = {
    "d1": "Aspirin lowers the risk of stroke.",
    "d2": "Statins reduce cholesterol.",
    "n1": "Ibuprofen is an anti-inflammatory drug.",
    "n2": "Soil bacteria fix nitrogen.",
    "c1": "Aspirin raises the risk of stroke.",
}
MANIFEST = {
    "schema_version": 1,
    "config": {"mining": {"hard": 1, "semi_hard": 0, "random": 1}, "contextual": {"per_pair": 1}},
}


def row(tier, negative, score, rank=None, negative_id=None, similarity=0.4):
    return {
        "query_id": "q1",
        "positive_id": "d1",
        "negative_id": negative_id or negative,
        "anchor": "does aspirin help?",
        "positive": TEXT["d1"],
        "negative": TEXT[negative],
        "tier": tier,
        "rank": rank,
        "score_positive": 0.8,
        "score_negative": score,
        "similarity_to_positive": similarity,
        "edit": None,
        "generator": {"hard": "faiss:Flat", "random": "uniform"}.get(tier, "nlpaug:antonym"),
        "negative_text_hash": text_hash(TEXT[negative]),
        "lexical_overlap": 0.25,
    }


def clean_rows() -> list[dict]:
    return [
        row("hard", "n1", 0.6, rank=2),
        row("random", "n2", 0.1),
        row("contextual", "c1", 0.7, negative_id="ctx:d1:1", similarity=0.93),
    ]


def make_run(path, rows) -> str:
    write_run(str(path), rows, MANIFEST, pairs=[("q1", "d1"), ("q1", "d2")], docs={k: TEXT[k] for k in ("d1", "d2")})
    return str(path)


def test_clean_run_exits_zero_and_writes_every_report_file(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run", clean_rows())
    assert main_audit([run_dir]) == 0
    report_dir = os.path.join(run_dir, "audit")
    report = json.loads(open(os.path.join(report_dir, "report.json")).read())
    assert [t["rows"] for t in report["tiers"]] == [1, 0, 1, 1]
    assert report["violations"]["total"] == 0 and report["compare"] is None
    for name in ("scores.png", "margins.png", "coverage.png"):
        with open(os.path.join(report_dir, name), "rb") as handle:
            assert handle.read(8) == PNG_MAGIC
    markdown = open(os.path.join(report_dir, "report.md")).read()
    assert "## Contract (schemas/contracts.py): **clean**" in markdown
    assert "| hard | 1 | 1 |" in markdown  # tier, K, rows
    assert "0 contract violation(s)" in capsys.readouterr().out


def test_violation_exits_non_zero_and_is_listed(tmp_path, capsys):
    bad = row("hard", "d2", 0.5, rank=1, negative_id="d2")  # a judged positive of q1 mined as negative
    run_dir = make_run(tmp_path / "run", clean_rows()[1:] + [bad])
    report_dir = str(tmp_path / "report")
    assert main_audit([run_dir, "--report", report_dir]) == 1
    with open(os.path.join(report_dir, "violations.csv")) as handle:
        listed = {(r["tier"], r["violation"], r["negative_id"]) for r in csv.DictReader(handle)}
    assert listed == {("hard", "judged_positive", "d2"), ("hard", "text_copy_of_positive", "d2")}
    assert "contract violated" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(run_dir, "audit"))  # --report was honoured


def test_compare_puts_two_runs_side_by_side(tmp_path):
    run_dir = make_run(tmp_path / "run", clean_rows())
    other_dir = make_run(tmp_path / "other", clean_rows()[:2])  # no contextual tier
    assert main_audit([run_dir, "--compare", other_dir]) == 0
    report_dir = os.path.join(run_dir, "audit")
    report = json.loads(open(os.path.join(report_dir, "report.json")).read())
    compared = {(c["tier"], c["metric"]): c for c in report["compare"]["tiers"]}
    assert compared[("contextual", "rows")] == {
        "tier": "contextual",
        "metric": "rows",
        "this": 1,
        "other": 0,
        "delta": 1,
    }
    assert compared[("hard", "rows")]["delta"] == 0
    assert f"## Compared with {other_dir}" in open(os.path.join(report_dir, "report.md")).read()


@pytest.mark.parametrize("argv", [["/no/such/run"], [], ["run", "--bogus"]])
def test_unusable_run_or_flags_exit_two(argv, capsys):
    assert main_audit(argv) == 2
    assert capsys.readouterr().err


def test_run_without_manifest_or_inputs_is_audited_with_defaults(tmp_path):
    run_dir = str(tmp_path / "bare")
    write_run(run_dir, clean_rows())
    assert main_audit([run_dir]) == 1  # default K: contextual per_pair 0, so the contextual row is too many
    report = json.loads(open(os.path.join(run_dir, "audit", "report.json")).read())
    assert report["manifest"]["found"] is False
    assert {(c["tier"], c["violation"]) for c in report["violations"]["counts"]} == {("contextual", "more_than_k")}
