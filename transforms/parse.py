"""Pure row parsing for ingest: one SourceLine (raw bytes) -> records, or the reason it is rejected.

No Beam here; transforms/ingest.py wraps these functions (and transforms/ingest_rules.py's) in DoFns.
Kinds of input rows:
- docs:    BEIR corpus.jsonl rows {"_id", "title", "text"} (also a pair file's --corpus)
- queries: BEIR queries.jsonl rows {"_id", "text"}
- qrels:   BEIR qrels/<split>.tsv rows "query-id<TAB>corpus-id<TAB>score" (header row, possibly CRLF)
- pairs:   pair-file rows {"query"|"anchor", "positive", optional "query_id", "positive_id"}; each yields a
           query, a doc (the positive, title "") and a pair with score 1. Absent ids are derived from the
           text: "q:" + text_hash(query), "d:" + text_hash(positive), so the same anchor text (up to case
           and whitespace) always maps to one query id.

Bad text never raises: invalid UTF-8 is `undecodable_bytes`; text that cannot be encoded back to UTF-8 (a JSON
escape of an unpaired surrogate such as "\ud800", in any field or key) is `invalid_text`; a line over
--max-line-bytes (read.py keeps only its first bytes) is `line_too_long`; an id over MAX_ID_BYTES bytes of UTF-8
is `id_too_long`.

Texts longer than max_text_chars are cut to their first max_text_chars characters (a `truncated` warning).
Each record keeps `identity`, the text_hash of its full text before truncation: two rows with one id are
identical duplicates when their identities match (same text up to case and whitespace), else conflicting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from schemas.inputs import passage_of
from schemas.negatives import text_hash
from transforms.read import SourceLine

# Dead-letter reasons (DEADLETTER_SCHEMA.reason).
INVALID_JSON = "invalid_json"
INVALID_FIELD = "invalid_field"  # a field of the wrong type, or "query" and "anchor" that disagree
MISSING_ID = "missing_id"
EMPTY_TEXT = "empty_text"
UNDECODABLE_BYTES = "undecodable_bytes"
INVALID_TEXT = "invalid_text"  # text that cannot be encoded as UTF-8 (unpaired surrogates)
LINE_TOO_LONG = "line_too_long"  # a line over --max-line-bytes
ID_TOO_LONG = "id_too_long"  # an id over MAX_ID_BYTES bytes of UTF-8
MALFORMED_ROW = "malformed_row"
DUPLICATE_ID_CONFLICTING_TEXT = "duplicate_id_conflicting_text"
DUPLICATE_PAIR_CONFLICTING_SCORE = "duplicate_pair_conflicting_score"
ANCHOR_CONFLICTING_QUERY_ID = "anchor_conflicting_query_id"
UNKNOWN_QUERY_ID = "unknown_query_id"
UNKNOWN_DOC_ID = "unknown_doc_id"
QUERY_DEAD_LETTERED = "query_dead_lettered"
DOC_DEAD_LETTERED = "doc_dead_lettered"
# Warning reasons (WARNINGS_SCHEMA.reason).
TRUNCATED = "truncated"
IDENTICAL_DUPLICATE = "identical_duplicate"

DEADLETTER_REASONS = (
    INVALID_JSON, INVALID_FIELD, MISSING_ID, EMPTY_TEXT, UNDECODABLE_BYTES, INVALID_TEXT, LINE_TOO_LONG, ID_TOO_LONG,
    MALFORMED_ROW, DUPLICATE_ID_CONFLICTING_TEXT, DUPLICATE_PAIR_CONFLICTING_SCORE, ANCHOR_CONFLICTING_QUERY_ID,
    UNKNOWN_QUERY_ID, UNKNOWN_DOC_ID, QUERY_DEAD_LETTERED, DOC_DEAD_LETTERED,
)  # every reason ingest writes; the README and docs/CONTRACT.md list them

MAX_ID_BYTES = 512
ROW_KINDS = ("docs", "queries", "qrels", "pairs")
_QRELS_FIELDS = "query-id<TAB>corpus-id<TAB>score"


@dataclass(frozen=True)
class RowRef:
    """Where a record came from; raw is kept only for rows that may still be dead-lettered later."""

    source: str
    line: int
    location: str
    raw: str | None

    def issue(self, reason: str, detail: str | None) -> dict:
        """A dead-letter or warning row (DEADLETTER_SCHEMA)."""
        return {"source": self.source, "location": self.location, "reason": reason, "detail": detail, "raw": self.raw}


@dataclass(frozen=True)
class DocRecord:
    doc_id: str
    title: str
    text: str  # after truncation
    identity: str  # text_hash(passage of the full title and text)
    ref: RowRef
    counted: bool = True  # False: derived from a pair row's positive (that row is accounted for, not this)


@dataclass(frozen=True)
class QueryRecord:
    query_id: str
    text: str
    identity: str
    ref: RowRef
    counted: bool = True


@dataclass(frozen=True)
class PairRecord:
    query_id: str
    doc_id: str
    score: int
    ref: RowRef


@dataclass(frozen=True)
class Parsed:
    """What one row became: records, or a dead-letter row; warnings; out_of_split or header flags."""

    records: tuple = ()
    deadletter: dict | None = None
    dead_id: str | None = None  # the id of a dead-lettered doc/query row, when it could be read
    warnings: tuple[dict, ...] = ()
    out_of_split: bool = False
    header: bool = False  # the qrels header row: not a data row, not counted


class _Reject(Exception):
    def __init__(self, reason: str, detail: str, dead_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.dead_id = reason, detail, dead_id


def _lossy(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _decode(line: SourceLine) -> str:
    try:
        text = line.data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Reject(UNDECODABLE_BYTES, f"invalid UTF-8 at byte {err.start} of the row: {err.reason}") from None
    return text.lstrip("\ufeff") if line.line == 1 else text  # a byte-order mark opens some files


def _json_object(line: SourceLine) -> dict:
    try:
        text = _decode(line)
    except _Reject as reject:  # recover the id (if readable) so references to it say doc_dead_lettered
        row = _try_json(_lossy(line.data))
        reject.dead_id = _usable_id(_optional_id(row, "_id")) if isinstance(row, dict) else None
        raise
    row = _try_json(text)
    if row is None:
        raise _Reject(INVALID_JSON, "not valid JSON; every line must be one JSON object")
    if not isinstance(row, dict):
        raise _Reject(INVALID_JSON, f"expected a JSON object, got {type(row).__name__}")
    bad = _unencodable_field(row) if _SURROGATE_ESCAPE.search(line.data) else None
    if bad is not None:
        raise _Reject(
            INVALID_TEXT,
            f"{bad} holds text that cannot be encoded as UTF-8 (an unpaired surrogate escape such as \\ud800)",
            _usable_id(_optional_id(row, "_id")),
        )
    return row


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # only a JSON escape can put a surrogate into a str


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unencodable_field(row: dict) -> str | None:
    """The JSON path (e.g. 'text' or 'meta.tags[2]') of the first key or string that UTF-8 cannot encode."""
    stack: list[tuple[str, object]] = [("", row)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return f"field {path!r}"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _encodable(key):
                    return f"a key ({ascii(key)}) of {repr(path) if path else 'the row'}"
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _usable_id(value: str | None) -> str | None:
    """value when it can key a dead mark (encodable, at most MAX_ID_BYTES), else None."""
    if value is None or not _encodable(value) or len(value.encode("utf-8")) > MAX_ID_BYTES:
        return None
    return value


def _check_id(value: str, name: str) -> str:
    if value.isascii() and len(value) <= MAX_ID_BYTES:  # the usual id, checked in O(1): ASCII is 1 byte a char
        return value
    if not _encodable(value):
        raise _Reject(INVALID_TEXT, f"{name} holds text that cannot be encoded as UTF-8 (an unpaired surrogate)")
    size = len(value.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise _Reject(ID_TOO_LONG, f"{name} is {size} bytes of UTF-8; ids may have at most {MAX_ID_BYTES}")
    return value


def _try_json(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def _optional_id(row: dict, key: str) -> str | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    value = str(value).strip()
    return value or None


def _required_id(row: dict, key: str) -> str:
    value = _optional_id(row, key)
    if value is None:
        shown = "absent" if key not in row else _shown(row[key])
        raise _Reject(MISSING_ID, f"{key!r} must be a non-empty string or integer, got {shown}")
    return _check_id(value, repr(key))


def _shown(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _text_field(row: dict, key: str, dead_id: str | None = None) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Reject(INVALID_FIELD, f"{key!r} must be a string, got {type(value).__name__}", dead_id)
    return value


def _truncate(
    ref: RowRef, max_chars: int, dead_id: str | None, **texts: str
) -> tuple[dict[str, str], tuple[dict, ...]]:
    """Cut each text to its first max_chars characters; one `truncated` warning names the fields cut."""
    kept, notes = {}, []
    for name, text in texts.items():
        kept[name] = text[:max_chars]
        if len(text) > max_chars:
            notes.append(f"{name}: {len(text)} -> {max_chars} chars")
        if text.strip() and not kept[name].strip():
            raise _Reject(
                EMPTY_TEXT, f"{name} is only whitespace in its first {max_chars} chars (--max-text-chars)", dead_id
            )
    warnings = (ref.issue(TRUNCATED, "; ".join(notes)),) if notes else ()
    return kept, warnings


def _ref(line: SourceLine, keep_raw: bool = True) -> RowRef:
    return RowRef(line.source, line.line, line.location, _lossy(line.data) if keep_raw else None)


def row_ref(line: SourceLine) -> RowRef:
    """The RowRef of a line, raw included (what its dead-letter or warning rows show)."""
    return _ref(line)


def parse_doc(line: SourceLine, max_chars: int) -> Parsed:
    row = _json_object(line)
    doc_id = _required_id(row, "_id")
    title, text = _text_field(row, "title", doc_id), _text_field(row, "text", doc_id)
    passage = passage_of(title, text)
    if not passage:
        raise _Reject(EMPTY_TEXT, "title and text are both empty", doc_id)
    ref = _ref(line)
    kept, warnings = _truncate(ref, max_chars, doc_id, title=title, text=text)
    record = DocRecord(doc_id, kept["title"], kept["text"], text_hash(passage), ref)
    return Parsed(records=(record,), warnings=warnings)


def parse_query(line: SourceLine, max_chars: int) -> Parsed:
    row = _json_object(line)
    query_id = _required_id(row, "_id")
    text = _text_field(row, "text", query_id)
    if not text.strip():
        raise _Reject(EMPTY_TEXT, "text is empty", query_id)
    ref = _ref(line)
    kept, warnings = _truncate(ref, max_chars, query_id, text=text)
    return Parsed(records=(QueryRecord(query_id, kept["text"], text_hash(text), ref),), warnings=warnings)


def parse_qrel(line: SourceLine, max_chars: int) -> Parsed:
    text = _decode(line)
    fields = [f.strip() for f in text.split("\t")]
    if line.line == 1 and len(fields) == 3 and not _is_int(fields[2]):
        return Parsed(header=True)
    if len(fields) != 3:
        raise _Reject(MALFORMED_ROW, f"expected 3 tab-separated fields {_QRELS_FIELDS}, got {len(fields)}")
    query_id, doc_id, score = fields
    if not _is_int(score):
        raise _Reject(MALFORMED_ROW, f"score {_shown(score)} is not an integer ({_QRELS_FIELDS})")
    if not query_id or not doc_id:
        raise _Reject(MISSING_ID, f"empty {'query-id' if not query_id else 'corpus-id'} ({_QRELS_FIELDS})")
    _check_id(query_id, "query-id")
    _check_id(doc_id, "corpus-id")
    relevance = int(score)
    if relevance <= 0:  # a judged non-relevant pair: not a positive of this split
        return Parsed(out_of_split=True)
    # raw: the strict decoding is what _lossy would give, but for line 1, which lost a byte-order mark
    ref = RowRef(line.source, line.line, line.location, text if line.line != 1 else _lossy(line.data))
    return Parsed(records=(PairRecord(query_id, doc_id, relevance, ref),))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_pair(line: SourceLine, max_chars: int) -> Parsed:
    row = _json_object(line)
    query, anchor = _text_field(row, "query"), _text_field(row, "anchor")
    if "query" in row and "anchor" in row and query != anchor:
        raise _Reject(INVALID_FIELD, "'query' and 'anchor' are both given and differ; give one of them")
    query = query if "query" in row else anchor
    positive = _text_field(row, "positive")
    for name, text in (("query (or anchor)", query), ("positive", positive)):
        if not text.strip():
            raise _Reject(EMPTY_TEXT, f"{name} is empty or absent")
    query_id = _given_id(row, "query_id") or _derived_id("query_id", row, "q:", query)
    doc_id = _given_id(row, "positive_id") or _derived_id("positive_id", row, "d:", positive)
    ref = _ref(line)
    kept, warnings = _truncate(ref, max_chars, None, query=query, positive=positive)
    derived_ref = RowRef(ref.source, ref.line, ref.location, None)
    return Parsed(
        records=(
            QueryRecord(query_id, kept["query"], text_hash(query), derived_ref, counted=False),
            DocRecord(doc_id, "", kept["positive"], text_hash(positive), derived_ref, counted=False),
            PairRecord(query_id, doc_id, 1, ref),
        ),
        warnings=warnings,
    )


def _given_id(row: dict, key: str) -> str | None:
    value = _optional_id(row, key)
    return None if value is None else _check_id(value, repr(key))


def _derived_id(key: str, row: dict, prefix: str, text: str) -> str:
    if key in row and row[key] is not None:
        raise _Reject(MISSING_ID, f"{key!r} must be a non-empty string or integer when given, got {_shown(row[key])}")
    return prefix + text_hash(text)


_PARSERS = {"docs": parse_doc, "queries": parse_query, "qrels": parse_qrel, "pairs": parse_pair}


def parse_line(kind: str, line: SourceLine, max_chars: int) -> Parsed:
    """Parse one row of an input file of `kind` (docs, queries, qrels or pairs); never raises for bad data."""
    if kind not in _PARSERS:
        raise ValueError(f"unknown row kind {kind!r}; allowed: {', '.join(ROW_KINDS)}")
    try:
        if line.too_long:
            raise _Reject(
                LINE_TOO_LONG, f"the line is {line.too_long} bytes, over --max-line-bytes; only its start is kept"
            )
        return _PARSERS[kind](line, max_chars)
    except _Reject as reject:
        ref = _ref(line)
        return Parsed(deadletter=ref.issue(reject.reason, reject.detail), dead_id=reject.dead_id)
