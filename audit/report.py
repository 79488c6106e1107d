"""Write an audit to a report folder: report.json, report.md, violations.csv, suspects.csv and PNG plots.

Every file goes through Beam's FileSystems (local or gs://). report.md is for people: the tier table,
contract violations, false-negative suspects, diversity, the contextual tier, selection statistics and,
with --compare, the side-by-side table.
"""

from __future__ import annotations

import io
import json
import logging

import polars as pl
from apache_beam.io.filesystems import FileSystems

from audit.api import AuditResult
from audit.markdown import render_markdown
from audit.plots import render_plots

logger = logging.getLogger(__name__)

PLOT_NAMES = ("scores.png", "margins.png", "coverage.png")


def _write(path: str, payload: bytes) -> None:
    with FileSystems.create(path) as handle:
        handle.write(payload)


def _csv(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    return buffer.getvalue()


def write_report(result: AuditResult, report_dir: str) -> dict[str, str]:
    """Write every report file into report_dir (created if needed); returns {file name: path}.

    Also records the plot and CSV names in result.report["plots"] / ["files"].
    """
    if not FileSystems.exists(report_dir):
        FileSystems.mkdirs(report_dir)
    plots = render_plots(result.negatives, result.summary)
    result.report["plots"] = [name for name in PLOT_NAMES if name in plots]
    result.report["files"] = {"violations": "violations.csv", "suspects": "suspects.csv"}
    files = {
        "report.json": json.dumps(result.report, indent=2, sort_keys=False, allow_nan=False).encode("utf-8"),
        "report.md": render_markdown(result.report).encode("utf-8"),
        "violations.csv": _csv(result.violations),
        "suspects.csv": _csv(result.suspects),
        **plots,
    }
    written = {}
    for name, payload in files.items():
        path = FileSystems.join(report_dir, name)
        _write(path, payload)
        written[name] = path
    logger.info("audit report written to %s (%d files)", report_dir, len(written))
    return written
