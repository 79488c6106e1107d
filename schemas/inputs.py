"""Arrow schemas of the accepted inputs (RUN_DIR/inputs/) and of the embeddings (RUN_DIR/embeddings/).

docs:     doc_id, title, text, passage (title + " " + text: what is embedded and written as a negative),
          text_hash (schemas.negatives.text_hash of passage)
queries:  query_id, text
pairs:    query_id, positive_id, score (qrels score > 0; every row is a judged positive)
"""

from __future__ import annotations

import pyarrow as pa

DOCS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("passage", pa.string(), nullable=False),
        pa.field("text_hash", pa.string(), nullable=False),
    ]
)

QUERIES_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("positive_id", pa.string(), nullable=False),
        pa.field("score", pa.int32(), nullable=False),
    ]
)

DEADLETTER_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # file path
        pa.field("location", pa.string(), nullable=False),  # "line 12" or "byte 4096"
        pa.field("reason", pa.string(), nullable=False),  # invalid_json, missing_id, ...
        pa.field("detail", pa.string(), nullable=True),
        pa.field("raw", pa.string(), nullable=True),  # the raw row, decoded with errors="replace"
    ]
)

WARNINGS_SCHEMA = DEADLETTER_SCHEMA  # same columns; reasons: truncated, identical_duplicate

EMBEDDING_KINDS = ("doc", "query")


def embeddings_schema(dim: int) -> pa.Schema:
    """id, kind (doc|query), vector (L2-normalised float32 of length dim), text_hash."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("text_hash", pa.string(), nullable=False),
        ],
        metadata={"negforge.dim": str(dim)},
    )


def passage_of(title: str, text: str) -> str:
    """The text embedded for a document: BEIR's and MTEB's title + " " + text."""
    return f"{title} {text}".strip() if title else text.strip()
