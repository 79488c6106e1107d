"""Ingest without shuffling texts: byte-range reads, the second read that writes docs, and the graph itself.

1. Reading a file in byte ranges of any size gives exactly the lines (numbers, offsets, bytes) of one reader.
2. The whole stage gives the same tables, dead-letter and warning rows and counts with tiny ranges (many
   ranges, many docs parts, duplicates and conflicts across ranges) as with one range per file.
3. No doc text crosses a GroupByKey: every GroupByKey of the ingest graph (CoGroupByKey, Reshuffle and
   combines included) is probed, and no element reaching one holds the text of any accepted doc.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.pipeline import PipelineVisitor
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.stage_ingest import build_ingest, summarise
from schemas.build_config import IngestConfig
from schemas.inputs import DEADLETTER_SCHEMA, DOCS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA
from schemas.layout import RunLayout
from tests.test_ingest_stage import _read_table
from transforms import parse, read
from transforms.ingest import ExceptionsFn
from transforms.ingest_rules import DocKey, decide_doc
from transforms.parse import PairRecord, RowRef

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
LINES = st.lists(
    st.one_of(
        st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from([b"", b" ", b"\r", b"\xef\xbb\xbfbom", b"x" * 30]),
    ),
    max_size=12,
)


def _all_ranges(path: str, range_bytes: int, max_line_bytes: int) -> list[read.SourceLine]:
    ranges = read.plan_ranges([("docs", path)], range_bytes)
    newlines = {r.index: read.count_newlines(r.path, *r.newline_span()) for r in ranges if r.end is not None}
    firsts = read.first_line_numbers(ranges, newlines)
    return [
        line
        for r in ranges
        for line in read.iter_range_lines(r.path, r.start, r.end, firsts[r.index], max_line_bytes)
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=LINES, crlf=st.booleans(), trailing=st.booleans(), range_bytes=st.integers(1, 40))
def test_any_range_size_reads_the_lines_of_one_reader(tmp_path, lines, crlf, trailing, range_bytes):
    path = tmp_path / "f.jsonl"
    path.write_bytes((b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if trailing and lines else b""))
    whole = list(read.iter_source_lines(str(path), max_line_bytes=20))
    assert _all_ranges(str(path), range_bytes, max_line_bytes=20) == whole


def test_compressed_files_are_one_range(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b"")
    assert [(r.start, r.end) for r in read.plan_ranges([("docs", str(path))], 1)] == [(0, None)]


def _ingest(tmp_path, name: str, ingest: IngestConfig, range_bytes: int | None) -> tuple[dict, RunLayout]:
    out = RunLayout(str(tmp_path / name))
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    stats_path = build_ingest(pipeline, ingest, out, range_bytes)
    pipeline.run().wait_until_finish()
    with open(stats_path) as handle:
        return summarise(json.load(handle), ingest), out


def _tables(out: RunLayout) -> dict:
    return {
        "docs": _read_table(out.inputs_table("docs"), DOCS_SCHEMA),
        "queries": _read_table(out.inputs_table("queries"), QUERIES_SCHEMA),
        "pairs": _read_table(out.inputs_table("pairs"), PAIRS_SCHEMA),
        "deadletter": _read_table(out.deadletter_dir, DEADLETTER_SCHEMA),
        "warnings": _read_table(out.warnings_dir, DEADLETTER_SCHEMA),
    }


@pytest.mark.parametrize(
    "ingest",
    [
        IngestConfig(beir_dir=str(FIXTURES / "beir_corrupt"), split="train", max_text_chars=40),
        IngestConfig(pairs_file=str(FIXTURES / "pairs_bad.jsonl"), corpus_file=str(FIXTURES / "pairs_corpus.jsonl")),
        IngestConfig(pairs_file=str(FIXTURES / "pairs.jsonl"), corpus_file=str(FIXTURES / "pairs_corpus.jsonl")),
    ],
    ids=["beir_corrupt", "pairs_bad", "pairs"],
)
def test_tiny_ranges_give_the_same_rows_and_counts_as_one_range_per_file(tmp_path, ingest):
    one_summary, one = _ingest(tmp_path, "one", ingest, None)
    many_summary, many = _ingest(tmp_path, "many", ingest, 23)
    assert many_summary == one_summary
    assert _tables(many) == _tables(one)
    parts = sorted(p.name for p in Path(many.inputs_table("docs")).glob("*.parquet"))
    doc_files = [path for kind, path in _sources(ingest) if kind in ("docs", "pairs")]
    expected = sum(len(read.plan_ranges([("docs", p)], 23)) for p in doc_files)
    assert len(parts) == expected > 2 and parts[0] == f"part-00000-of-{expected:05d}.parquet"


def _sources(ingest: IngestConfig):
    from transforms.ingest import input_sources

    return input_sources(ingest)


class _GroupInputs(PipelineVisitor):
    """The input PCollection of every GroupByKey in the graph (inside composites too)."""

    def __init__(self) -> None:
        self.found: list = []

    def visit_transform(self, node) -> None:
        if isinstance(node.transform, beam.GroupByKey):
            self.found.append((node.full_label, node.inputs[0]))

    def enter_composite_transform(self, node) -> None:
        self.visit_transform(node)


MARK = "zqmarker"


def _has_text(element, texts: frozenset[str]) -> bool:
    shown = repr(element)
    return MARK in shown and any(text in shown for text in texts)


def _positive(counts: list[int]) -> None:
    if counts != [] and counts[0] > 0:
        return
    raise BeamAssertException(f"the probe saw no doc text in the lines read: {counts}")


def _probe_ingest(tmp_path, ingest: IngestConfig, texts: frozenset[str]) -> tuple[dict, RunLayout, list]:
    out = RunLayout(str(tmp_path / "run"))
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    stats_path = build_ingest(pipeline, ingest, out, range_bytes=200)
    visitor = _GroupInputs()
    pipeline.visit(visitor)
    labels = [label for label, _ in visitor.found]
    leaks = [
        pcoll | f"Probe{i}" >> beam.Filter(_has_text, texts) | f"Where{i}" >> beam.Map(lambda _, at: at, label)
        for i, (label, pcoll) in enumerate(visitor.found)
    ] | "AllLeaks" >> beam.Flatten()
    assert_that(leaks, equal_to([]), label="NoDocTextInAnyGroupByKey")
    # Control: the same probe on the input lines (SourceLines, as ParseRowsFn reads them) does see the texts, so
    # the empty result above means something.
    lines = [line for _, path in _sources(ingest) for line in read.iter_source_lines(path)]
    seen = (
        pipeline
        | "InputLines" >> beam.Create(lines)
        | "ProbeLines" >> beam.Filter(_has_text, texts)
        | "Seen" >> beam.combiners.Count.Globally()
    )
    assert_that(seen, _positive, label="ProbeSeesTheLines")
    pipeline.run().wait_until_finish()
    with open(stats_path) as handle:
        return summarise(json.load(handle), ingest), out, labels


def _write(path: Path, rows: list) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def test_no_doc_text_crosses_a_group_by_key_in_a_beir_ingest(tmp_path):
    beir = tmp_path / "beir"
    docs = [{"_id": f"d{i}", "title": "", "text": f"{MARK} passage {i} " + "words " * 10} for i in range(40)]
    docs += [
        {"_id": "dup", "title": "", "text": "a plain duplicated doc"},
        {"_id": "dup", "title": "", "text": "A  plain duplicated doc"},
        {"_id": "conf", "title": "", "text": "first text"},
        {"_id": "conf", "title": "", "text": "second text"},
        "not json",
    ]
    _write(beir / "corpus.jsonl", docs)
    _write(beir / "queries.jsonl", [{"_id": f"q{i}", "text": f"query {i}"} for i in range(5)])
    qrels = ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q1\td39\t1", "q2\tconf\t1", "q3\tdup\t1", "q4\tnope\t1"]
    _write(beir / "qrels" / "train.tsv", qrels)
    texts = frozenset(row["text"] for row in docs[:40])
    summary, out, labels = _probe_ingest(tmp_path, IngestConfig(beir_dir=str(beir), split="train"), texts)
    assert any("GroupByDoc" in label for label in labels)
    assert any("ParseRanges/Spread" in label for label in labels)
    written = _read_table(out.inputs_table("docs"), DOCS_SCHEMA)
    assert {row["text"] for row in written} >= texts and len(written) == 41  # every doc, dup once, conf dropped
    assert summary["deadletter_by_reason"] == {
        "invalid_json": 1, "duplicate_id_conflicting_text": 2, "doc_dead_lettered": 1, "unknown_doc_id": 1,
    }
    assert summary["warnings_by_reason"] == {"identical_duplicate": 1}
    dead = {r["reason"]: r for r in _read_table(out.deadletter_dir, DEADLETTER_SCHEMA)}
    assert dead["duplicate_id_conflicting_text"]["raw"] in (json.dumps(docs[42]), json.dumps(docs[43]))
    (warning,) = _read_table(out.warnings_dir, DEADLETTER_SCHEMA)
    assert warning["raw"] == json.dumps(docs[41]) and warning["location"].startswith("line 42 (byte ")


def test_no_positive_text_crosses_a_group_by_key_in_a_pair_file_ingest(tmp_path):
    rows = [{"query": f"question {i % 7}?", "positive": f"{MARK} answer {i % 11} " + "words " * 8} for i in range(40)]
    rows += [
        {"query": "odd one?", "positive": f"{MARK} a conflicting answer", "positive_id": "c1"},  # conflicts c1
        {"query": "odd one?", "positive": "short", "query_id": "Q9"},  # anchor with two ids: both dead
        {"query": "odd one?", "positive": "shorter", "query_id": "Q8"},
    ]
    pairs = _write(tmp_path / "pairs.jsonl", rows)
    corpus = _write(tmp_path / "corpus.jsonl", [{"_id": "c1", "title": "T", "text": "a corpus doc"}])
    texts = frozenset(row["positive"] for row in rows[:40])
    summary, out, _ = _probe_ingest(tmp_path, IngestConfig(pairs_file=pairs, corpus_file=corpus), texts)
    written = _read_table(out.inputs_table("docs"), DOCS_SCHEMA)
    assert {row["text"] for row in written} == texts | {"short", "shorter"}
    assert summary["files"][pairs] == {"read": 43, "accepted": 40, "dead_lettered": 3, "out_of_split": 0}
    dead = _read_table(out.deadletter_dir, DEADLETTER_SCHEMA)
    assert sorted(r["reason"] for r in dead) == [
        "anchor_conflicting_query_id", "anchor_conflicting_query_id", "doc_dead_lettered",
        "duplicate_id_conflicting_text",
    ]
    assert all(r["raw"] == json.dumps(rows[int(r["location"].split()[1]) - 1]) for r in dead if "pairs" in r["source"])


def test_decide_doc_returns_the_rows_it_drops_and_text_free_issues():
    def key(line: int, identity: str, counted: bool = True) -> DocKey:
        return DocKey(identity, counted, RowRef("c.jsonl", line, read.location(line, 10 * line), None))

    pair = PairRecord("q1", "d1", 1, RowRef("qrels.tsv", 2, "line 2 (byte 5)", "q1\td1\t1"))
    out, dropped = decide_doc("d1", [key(5, "h"), key(2, "h"), key(9, "h", counted=False)], [pair], [])
    assert [ref.line for ref in dropped] == [5, 9] and out.main == [("q1", pair)]
    assert [(w["location"], w["raw"]) for w in out.warnings] == [("line 5 (byte 50)", None)]
    out, dropped = decide_doc("d1", [key(5, "h"), key(2, "other")], [pair], [])
    assert [ref.line for ref in dropped] == [5, 2] and out.main == []
    assert [r["reason"] for r in out.deadletter] == [parse.DUPLICATE_ID_CONFLICTING_TEXT] * 2 + [
        parse.DOC_DEAD_LETTERED
    ]
    assert out.deadletter[-1]["raw"] == "q1\td1\t1"  # the qrels row keeps its raw: it is not read again


def test_exceptions_merge_across_bundles_into_sorted_lines_and_notes():
    fn = ExceptionsFn()
    first = fn.add_input(fn.create_accumulator(), ("drop", "a", 9))
    first = fn.add_input(first, ("note", ("a", "line 9 (byte 1)"), ("warnings", "r", "d")))
    second = fn.add_input(fn.add_input(fn.create_accumulator(), ("drop", "a", 3)), ("drop", "b", 1))
    merged = fn.extract_output(fn.merge_accumulators([first, second]))
    assert {k: v.tolist() for k, v in merged["dropped"].items()} == {"a": [3, 9], "b": [1]}
    assert merged["notes"] == {"a": {"line 9 (byte 1)": [("warnings", "r", "d")]}}
    assert fn.extract_output(fn.create_accumulator()) == {"dropped": {}, "notes": {}}


def test_plan_ranges_cover_a_file_in_fixed_steps(tmp_path):
    path = _write(tmp_path / "c.jsonl", [{"_id": "d1", "text": "x"}] * 3)
    assert os.path.getsize(path) > 10
    ranges = read.plan_ranges([("docs", path)], 10)
    assert [r.start for r in ranges] == list(range(0, os.path.getsize(path), 10)) and ranges[-1].end is None
