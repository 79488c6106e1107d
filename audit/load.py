"""Open a RUN_DIR for auditing: lazy scans of the negatives and inputs, the manifest, the resolved config.

Nothing is read eagerly except manifest.json; every table is a Polars LazyFrame so statistics stay
streaming on millions of rows. Paths come from schemas.layout.RunLayout; listing and reading go through
Beam's FileSystems (local and gs:// alike); remote parts are copied to a local temporary folder first, since
Polars cannot open gs:// through Beam's filesystems (storage.files.local_copies).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import polars as pl
from apache_beam.io.filesystems import FileSystems

from schemas.contracts import resolved_section
from schemas.layout import RunLayout
from storage.files import list_files, local_copies

logger = logging.getLogger(__name__)


class AuditError(ValueError):
    """The run cannot be audited (no negatives, unreadable manifest layout...)."""


@dataclass(frozen=True)
class AuditRun:
    """One run, opened for auditing. negatives has `tier` as a plain string column."""

    run_dir: str
    negatives: pl.LazyFrame
    manifest: dict
    config: dict  # {"mining": {...}, "contextual": {...}}: manifest values over the dataclass defaults
    pairs: pl.LazyFrame | None
    docs: pl.LazyFrame | None


def read_manifest(path: str) -> dict:
    """manifest.json as a dict; {} (with a warning) when it is missing or not a JSON object."""
    if not FileSystems.exists(path):
        logger.warning("no manifest at %s; auditing against the default config", path)
        return {}
    with FileSystems.open(path) as handle:
        try:
            manifest = json.loads(handle.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("manifest %s is not valid JSON (%s); auditing against the default config", path, error)
            return {}
    return manifest if isinstance(manifest, dict) else {}


def _parquet_parts(folder: str) -> list[str]:
    """Local paths of folder's Parquet parts (recursive; remote ones downloaded once); [] when none."""
    parts = [path for path in list_files(folder) if path.endswith(".parquet")]
    return local_copies(parts, folder)


def scan_negatives(run_dir: str) -> pl.LazyFrame:
    """All tiers of RUN_DIR/negatives (hive-partitioned), with tier cast to String."""
    folder = RunLayout(run_dir).negatives_dir
    parts = _parquet_parts(folder)
    if not parts:
        raise AuditError(
            f"no Parquet parts under {folder}; expected negatives/tier=<tier>/part-*.parquet "
            "(run `negforge build` first, or check the RUN_DIR path)"
        )
    lf = pl.scan_parquet(parts, hive_partitioning=True)
    return lf.with_columns(pl.col("tier").cast(pl.String))


def scan_input(run_dir: str, name: str) -> pl.LazyFrame | None:
    """RUN_DIR/inputs/<name>/*.parquet as a LazyFrame, or None when the folder holds no parts."""
    parts = _parquet_parts(RunLayout(run_dir).inputs_table(name))
    if not parts:
        logger.info("no inputs/%s in %s; coverage falls back to the negatives themselves", name, run_dir)
        return None
    return pl.scan_parquet(parts)


def load_run(run_dir: str) -> AuditRun:
    """Open RUN_DIR; raises AuditError when it holds no negatives."""
    manifest = read_manifest(RunLayout(run_dir).manifest)
    config_dict = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    config = {section: resolved_section(config_dict, section) for section in ("mining", "contextual")}
    return AuditRun(
        run_dir=run_dir,
        negatives=scan_negatives(run_dir),
        manifest=manifest,
        config=config,
        pairs=scan_input(run_dir, "pairs"),
        docs=scan_input(run_dir, "docs"),
    )


def tier_k(config: dict) -> dict[str, int]:
    """Negatives asked for per (query, positive) and tier: K from the mining config, per_pair for contextual."""
    mining, contextual = config["mining"], config["contextual"]
    return {
        "hard": int(mining["hard"]),
        "semi_hard": int(mining["semi_hard"]),
        "random": int(mining["random"]),
        "contextual": int(contextual["per_pair"]),
    }
