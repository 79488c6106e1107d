"""Audit of a negatives run with Polars: per-tier statistics, contract checks, suspects, report and plots.

from audit import audit_run, write_report
result = audit_run("runs/demo", compare_dir=None)
write_report(result, "runs/demo/audit")
"""

from audit.api import AuditResult, audit_run, compare_summaries, tier_summary
from audit.load import AuditError, AuditRun, load_run
from audit.report import write_report

__all__ = [
    "AuditError",
    "AuditResult",
    "AuditRun",
    "audit_run",
    "compare_summaries",
    "load_run",
    "tier_summary",
    "write_report",
]
