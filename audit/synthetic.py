"""Write hand-made or synthetic runs in the RUN_DIR layout (for the audit's tests and bench/audit_scale.py).

Negatives go to negatives/tier=<tier>/part-XXXXX-of-YYYYY.parquet for EVERY tier (an empty tier gets one
part with the full schema, as the mine stage writes it); inputs to inputs/<name>/part-00000.parquet.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.inputs import DOCS_SCHEMA, PAIRS_SCHEMA, passage_of
from schemas.layout import RunLayout
from schemas.negatives import NEGATIVES_SCHEMA, TIERS, rows_to_table, text_hash


def _write_table(table: pa.Table, path: str) -> None:
    with FileSystems.create(path) as handle:
        pq.write_table(table, handle)


def write_negatives(run_dir: str, negatives: pa.Table | list[dict], parts: int = 1) -> dict[str, int]:
    """Split negatives (NEGATIVES_SCHEMA table or row dicts) by tier into `parts` files per tier; rows per tier."""
    table = rows_to_table(negatives) if isinstance(negatives, list) else negatives.cast(NEGATIVES_SCHEMA)
    layout, written = RunLayout(run_dir), {}
    tiers = pc.cast(table.column("tier"), pa.string())
    for tier in TIERS:
        rows = table.filter(pc.equal(tiers, tier))
        step = -(-rows.num_rows // parts) if rows.num_rows else 0
        for part in range(parts):
            chunk = rows.slice(part * step, step) if step else rows
            _write_table(chunk, FileSystems.join(layout.tier_dir(tier), f"part-{part:05d}-of-{parts:05d}.parquet"))
            if not rows.num_rows:
                break
        written[tier] = rows.num_rows
    return written


def pairs_table(pairs: list[tuple[str, str]]) -> pa.Table:
    """(query_id, positive_id) tuples as a PAIRS_SCHEMA table with score 1."""
    columns = {"query_id": [q for q, _ in pairs], "positive_id": [p for _, p in pairs], "score": [1] * len(pairs)}
    return pa.Table.from_pydict(columns, schema=PAIRS_SCHEMA)


def docs_table(passages: dict[str, str]) -> pa.Table:
    """doc_id -> passage as a DOCS_SCHEMA table (empty title; text_hash of the passage)."""
    ids = sorted(passages)
    texts = [passages[i] for i in ids]
    columns = {
        "doc_id": ids,
        "title": [""] * len(ids),
        "text": texts,
        "passage": [passage_of("", t) for t in texts],
        "text_hash": [text_hash(passage_of("", t)) for t in texts],
    }
    return pa.Table.from_pydict(columns, schema=DOCS_SCHEMA)


def write_input(run_dir: str, name: str, table: pa.Table) -> str:
    """inputs/<name>/part-00000.parquet; returns its path."""
    path = FileSystems.join(RunLayout(run_dir).inputs_table(name), "part-00000.parquet")
    _write_table(table, path)
    return path


def write_manifest(run_dir: str, manifest: dict) -> str:
    path = RunLayout(run_dir).manifest
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(manifest, indent=2).encode("utf-8"))
    return path


def write_run(
    run_dir: str,
    negatives: pa.Table | list[dict],
    manifest: dict | None = None,
    pairs: list[tuple[str, str]] | pa.Table | None = None,
    docs: dict[str, str] | pa.Table | None = None,
    parts: int = 1,
) -> dict[str, int]:
    """A run folder with negatives, and optionally manifest.json, inputs/pairs and inputs/docs."""
    written = write_negatives(run_dir, negatives, parts)
    if manifest is not None:
        write_manifest(run_dir, manifest)
    if pairs is not None:
        write_input(run_dir, "pairs", pairs if isinstance(pairs, pa.Table) else pairs_table(pairs))
    if docs is not None:
        write_input(run_dir, "docs", docs if isinstance(docs, pa.Table) else docs_table(docs))
    return written
