"""Property-based tests (hypothesis) of every ingest parser and of the per-file accounting.

1. parse_line never raises: any row of any kind (BEIR corpus, queries, qrels; pair files) is accepted,
   out of split, the qrels header, or dead-lettered with one of parse.DEADLETTER_REASONS, and whatever it
   accepts is text UTF-8 can encode (so hashing, sharding and Parquet cannot fail on it later).
2. Whole generated files (valid rows mixed with junk bytes, lone surrogates, long ids, over-long lines,
   CRLF, headers, blank lines) go through the real Beam ingest: `read = accepted + dead_lettered +
   out_of_split` holds for every file (summarise() raises otherwise) and `read` is every data line.
"""

from __future__ import annotations

import json
import os
import tempfile

from apache_beam.testing import test_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.stage_ingest import build_ingest, summarise
from schemas.build_config import IngestConfig
from schemas.layout import RunLayout
from transforms import parse
from transforms.ingest import input_sources
from transforms.parse import DocRecord, PairRecord, QueryRecord, parse_line
from transforms.read import SourceLine, iter_source_lines

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIPELINES = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_LINE_BYTES = 300  # small, so generated files exercise line_too_long cheaply
RANGES = st.sampled_from([None, 7, 50])  # bytes per read range: one range per file, or many

LONE = st.sampled_from(["\ud800", "\udfff", "\udbff", "\udc00x"])
TEXT = st.lists(st.one_of(st.text(max_size=12), LONE, st.sampled_from(["", " ", "\t", "\ufeff", "\u2028"])),
                max_size=4).map("".join)
IDS = st.one_of(st.sampled_from(["d1", "d2", "q1", "q2", " d1 ", "1", ""]), TEXT, st.integers(-5, 10**6),
                st.just("i" * 513), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
FIELD = st.one_of(TEXT, st.none(), st.integers(), st.floats(allow_nan=True), st.lists(TEXT, max_size=2),
                  st.dictionaries(TEXT, TEXT, max_size=2))


def _row(keys: dict, usual: dict) -> st.SearchStrategy[dict]:
    """A JSON object: the usual fields (texts that may hold lone surrogates), or any of `keys` plus extras."""
    return st.one_of(
        st.fixed_dictionaries(usual, optional={"extra": FIELD}),
        st.fixed_dictionaries({}, optional={**keys, "extra": FIELD}),
    )


SMALL_IDS = st.sampled_from(["d1", "d2", "q1", "q2", 7])
DOC = _row({"_id": IDS, "title": st.one_of(TEXT, FIELD), "text": st.one_of(TEXT, FIELD)},
           {"_id": SMALL_IDS, "title": TEXT, "text": TEXT})
QUERY = _row({"_id": IDS, "text": st.one_of(TEXT, FIELD)}, {"_id": SMALL_IDS, "text": TEXT})
PAIR = _row({"query": st.one_of(TEXT, FIELD), "anchor": st.one_of(TEXT, FIELD), "positive": st.one_of(TEXT, FIELD),
             "query_id": IDS, "positive_id": IDS}, {"query": TEXT, "positive": TEXT})
QREL_FIELD = st.one_of(st.sampled_from(["q1", "q2", "d1", "d2", "1", "0", "2", "-1", "x", " ", "1.5", "query-id"]),
                       st.text(max_size=6), st.just("i" * 600))


@st.composite
def _json_line(draw, rows: st.SearchStrategy[dict]) -> bytes:
    """A row serialised as JSON: ASCII escapes (lone surrogates as \\ud800) or raw UTF-8 (surrogatepass:
    invalid UTF-8), sometimes cut short or wrapped in junk."""
    row = draw(rows)
    data = json.dumps(row, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    mutate = draw(st.sampled_from(["none", "none", "cut", "junk", "list"]))
    if mutate == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif mutate == "junk":
        data = draw(st.binary(max_size=4)) + data + draw(st.binary(max_size=4))
    elif mutate == "list":
        data = b"[" + data + b"]"
    return data


@st.composite
def _qrels_line(draw) -> bytes:
    fields = draw(st.lists(QREL_FIELD, min_size=1, max_size=4))
    return "\t".join(fields).encode("utf-8", "surrogatepass")


LINES = {
    "docs": st.one_of(_json_line(DOC), st.binary(max_size=40)),
    "queries": st.one_of(_json_line(QUERY), st.binary(max_size=40)),
    "qrels": st.one_of(_qrels_line(), st.binary(max_size=40)),
    "pairs": st.one_of(_json_line(PAIR), st.binary(max_size=40)),
}


def _check_parsed(kind: str, line: SourceLine) -> None:
    parsed = parse_line(kind, line, max_chars=8)
    outcomes = [bool(parsed.records), parsed.deadletter is not None, parsed.out_of_split, parsed.header]
    assert sum(outcomes) == 1, (parsed, line)
    if parsed.deadletter is not None:
        assert parsed.deadletter["reason"] in parse.DEADLETTER_REASONS
        assert parsed.deadletter["detail"]
        json.dumps(parsed.deadletter, ensure_ascii=False).encode("utf-8")  # every field is encodable text
        if parsed.dead_id is not None:
            assert len(parsed.dead_id.encode("utf-8")) <= parse.MAX_ID_BYTES
    for record in parsed.records:
        ids = [record.query_id, record.doc_id] if isinstance(record, PairRecord) else []
        ids += [record.doc_id] if isinstance(record, DocRecord) else []
        ids += [record.query_id] if isinstance(record, QueryRecord) else []
        for value in ids:
            assert value and len(value.encode("utf-8")) <= parse.MAX_ID_BYTES
        for text in (getattr(record, "title", ""), getattr(record, "text", "")):
            text.encode("utf-8")
    for warning in parsed.warnings:
        json.dumps(warning, ensure_ascii=False).encode("utf-8")


@FAST
@given(kind=st.sampled_from(sorted(LINES)), data=st.data(), number=st.integers(1, 3), too_long=st.booleans())
def test_every_row_of_every_kind_is_accepted_or_dead_lettered_never_raises(kind, data, number, too_long):
    raw = data.draw(LINES[kind])
    line = SourceLine("f", number, 0, raw, too_long=len(raw) + 10**7 if too_long else 0)
    _check_parsed(kind, line)


@FAST
@given(raw=st.binary(max_size=200), kind=st.sampled_from(sorted(LINES)))
def test_arbitrary_bytes_never_raise(raw, kind):
    _check_parsed(kind, SourceLine("f", 1, 0, raw))


@st.composite
def _file(draw, kind: str, header: bool = False) -> bytes:
    lines = draw(st.lists(st.one_of(LINES[kind], st.just(b""), st.just(b"x" * (MAX_LINE_BYTES + 5))), max_size=12))
    if header and draw(st.booleans()):
        lines.insert(0, b"query-id\tcorpus-id\tscore")
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = newline.join(lines)
    return body + (newline if draw(st.booleans()) else b"")


def _ingest(folder: str, ingest: IngestConfig, range_bytes: int | None = None) -> dict:
    """The real ingest pipeline (no preflight: a file of junk is allowed here); summarise checks the balance.

    range_bytes: bytes per read range (None: the default; small: files are read in many ranges)."""
    out = RunLayout(os.path.join(folder, "run"))
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    stats_path = build_ingest(pipeline, ingest, out, range_bytes)
    pipeline.run().wait_until_finish()
    with open(stats_path) as handle:
        summary = summarise(json.load(handle), ingest)
    for kind, path in input_sources(ingest):
        lines = iter_source_lines(path, max_line_bytes=ingest.max_line_bytes)
        rows = sum(1 for line in lines if not parse_line(kind, line, ingest.max_text_chars).header)
        counts = summary["files"][path]
        assert counts["read"] == rows, (path, counts)
        assert counts["read"] == counts["accepted"] + counts["dead_lettered"] + counts["out_of_split"]
    assert set(summary["deadletter_by_reason"]) <= set(parse.DEADLETTER_REASONS)
    return summary


@PIPELINES
@given(corpus=_file("docs"), queries=_file("queries"), qrels=_file("qrels", header=True), range_bytes=RANGES)
def test_generated_beir_folders_balance_read_accepted_dead_lettered_out_of_split(corpus, queries, qrels, range_bytes):
    with tempfile.TemporaryDirectory() as folder:
        beir = os.path.join(folder, "beir")
        os.makedirs(os.path.join(beir, "qrels"))
        for name, data in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/train.tsv", qrels)):
            with open(os.path.join(beir, name), "wb") as handle:
                handle.write(data)
        ingest = IngestConfig(beir_dir=beir, split="train", max_text_chars=8, max_line_bytes=MAX_LINE_BYTES)
        _ingest(folder, ingest, range_bytes)


@PIPELINES
@given(pairs=_file("pairs"), corpus=st.one_of(st.none(), _file("docs")), range_bytes=RANGES)
def test_generated_pair_files_balance_read_accepted_dead_lettered_out_of_split(pairs, corpus, range_bytes):
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, data in (("pairs.jsonl", pairs), ("corpus.jsonl", corpus)):
            if data is not None:
                paths[name] = os.path.join(folder, name)
                with open(paths[name], "wb") as handle:
                    handle.write(data)
        ingest = IngestConfig(pairs_file=paths["pairs.jsonl"], corpus_file=paths.get("corpus.jsonl"),
                              max_text_chars=8, max_line_bytes=MAX_LINE_BYTES)
        _ingest(folder, ingest, range_bytes)
