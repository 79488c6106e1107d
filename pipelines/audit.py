"""`negforge audit RUN_DIR [--report DIR] [--compare OTHER_RUN_DIR]`.

Writes report.md, report.json, violations.csv, suspects.csv and PNG plots into --report (default
RUN_DIR/audit/) and exits 1 when any row breaks the per-tier contract (schemas/contracts.py), 2 when the
run cannot be audited or the flags are wrong, 0 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

from apache_beam.io.filesystems import FileSystems

from audit.api import audit_run
from audit.load import AuditError
from audit.report import write_report

logger = logging.getLogger(__name__)

EXIT_CLEAN, EXIT_VIOLATIONS, EXIT_UNUSABLE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="negforge audit",
        description="Audit the negative tiers of a run: statistics, per-tier contract, suspects, plots.",
        allow_abbrev=False,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run written by `negforge build`")
    parser.add_argument("--report", metavar="DIR", help="report folder (default: RUN_DIR/audit/)")
    parser.add_argument("--compare", metavar="OTHER_RUN_DIR", help="another run to put side by side")
    return parser


def main_audit(argv: list[str]) -> int:
    """Run the audit; returns the exit status (0 clean, 1 contract violations, 2 unusable run or flags)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage (--help) or the error
        return EXIT_CLEAN if stop.code in (0, None) else EXIT_UNUSABLE
    report_dir = args.report or FileSystems.join(args.run_dir, "audit")
    try:
        result = audit_run(args.run_dir, compare_dir=args.compare)
    except AuditError as error:
        print(f"negforge audit: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    write_report(result, report_dir)
    rows, violations = int(result.summary["rows"].sum()), result.violations.height
    print(
        f"negforge audit: {rows} rows in {result.summary.filter(result.summary['rows'] > 0).height} tier(s), "
        f"{violations} contract violation(s), {result.suspects.height} suspect row(s); report in {report_dir}"
    )
    if violations:
        listing = FileSystems.join(report_dir, "violations.csv")
        print(f"negforge audit: contract violated, see {listing}", file=sys.stderr)
        return EXIT_VIOLATIONS
    return EXIT_CLEAN


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main_audit(sys.argv[1:]))
