"""Arrow schema of the negatives dataset (one row per query, positive, negative).

Column names and meanings are fixed by docs/CONTRACT.md; bump SCHEMA_VERSION on any breaking change.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1

TIERS = ("hard", "semi_hard", "random", "contextual")
MINED_TIERS = ("hard", "semi_hard", "random")

TIER_TYPE = pa.dictionary(pa.int32(), pa.string())

NEGATIVES_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("positive_id", pa.string(), nullable=False),
        pa.field("negative_id", pa.string(), nullable=False),
        pa.field("anchor", pa.string(), nullable=False),
        pa.field("positive", pa.string(), nullable=False),
        pa.field("negative", pa.string(), nullable=False),
        pa.field("tier", TIER_TYPE, nullable=False),
        pa.field("rank", pa.int32(), nullable=True),
        pa.field("score_positive", pa.float32(), nullable=False),
        pa.field("score_negative", pa.float32(), nullable=False),
        pa.field("similarity_to_positive", pa.float32(), nullable=True),
        pa.field("generator", pa.string(), nullable=False),
        pa.field("edit", pa.string(), nullable=True),
        pa.field("negative_text_hash", pa.string(), nullable=False),
        pa.field("lexical_overlap", pa.float32(), nullable=False),
    ],
    metadata={"negforge.schema_version": str(SCHEMA_VERSION)},
)

# Columns whose values define a row's identity for the determinism contract.
IDENTITY_COLUMNS = ("query_id", "positive_id", "negative_id", "tier", "rank", "generator")
# what a reader needs to find and judge one row: the columns every audit listing (violations, suspects) shows
ROW_LOOKUP_COLUMNS = ("query_id", "positive_id", "negative_id", "rank", "score_positive", "score_negative")

_TOKEN_RE = re.compile(r"\w+", re.UNICODE)
_SPACE_RE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: what "the same text" means for copy guards."""
    return _SPACE_RE.sub(" ", text.strip().lower())


def text_hash(text: str) -> str:
    """Stable 16-hex-digit hash of the normalised text (blake2b; never Python's salted hash())."""
    return hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=8).hexdigest()


def token_set(text: str) -> frozenset[str]:
    return frozenset(_TOKEN_RE.findall(text.lower()))


def lexical_overlap(a: str, b: str) -> float:
    """Token-set Jaccard similarity in [0, 1]; two empty texts count as identical."""
    ta, tb = token_set(a), token_set(b)
    union = len(ta | tb)
    return 1.0 if union == 0 else len(ta & tb) / union


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Build a table in NEGATIVES_SCHEMA from row dicts (missing nullable columns become null)."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in NEGATIVES_SCHEMA}
    arrays = []
    for f in NEGATIVES_SCHEMA:
        if f.name == "tier":
            arrays.append(pa.array(columns["tier"], pa.string()).dictionary_encode().cast(TIER_TYPE))
        else:
            arrays.append(pa.array(columns[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=NEGATIVES_SCHEMA)


@dataclass
class RowColumns:
    """Rows in NEGATIVES_SCHEMA as columns: every column name -> a list of str (None: null) or a 1-D numpy array
    of the column's type (float32, int32; `rank` -1: null, ranks are 1-based). What the mine stage's row builder
    emits per query and tier: a dict per row, or Arrow arrays per query, cost more than the mining (issue 15);
    columns_to_table builds Arrow once per written row group."""

    columns: dict[str, list | np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["query_id"])


def columns_to_table(parts: Sequence[RowColumns]) -> pa.Table:
    """One table in NEGATIVES_SCHEMA of the rows of `parts`, in order (the table rows_to_table builds from the
    same rows as dicts)."""
    arrays = []
    for f in NEGATIVES_SCHEMA:
        values = [part.columns[f.name] for part in parts]
        if isinstance(values[0], np.ndarray):
            merged = np.concatenate(values)
            arrays.append(pa.array(merged, f.type, mask=merged < 0 if f.name == "rank" else None))
        elif f.name == "tier":
            tiers = pa.array(list(itertools.chain.from_iterable(values)), pa.string())
            arrays.append(tiers.dictionary_encode().cast(TIER_TYPE))
        else:
            arrays.append(pa.array(list(itertools.chain.from_iterable(values)), f.type))
    return pa.Table.from_arrays(arrays, schema=NEGATIVES_SCHEMA)
