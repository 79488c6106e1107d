"""Ingest without Beam: byte-line reading, row parsing and the duplicate / join decisions."""

from __future__ import annotations

import gzip
import json
import os
import re

import pytest

from schemas.negatives import text_hash
from transforms import parse, read
from transforms.ingest_rules import DeadMark, Kept, check_pair_docs, resolve_duplicates, settle_query
from transforms.parse import parse_line
from transforms.read import SourceLine, iter_source_lines

RAW = b"a\r\n\r\nbc\n  \nd"  # CRLF, a blank line, a whitespace-only line, no final newline


def _line(data: bytes | str, number: int = 2, source: str = "f.jsonl") -> SourceLine:
    data = data.encode("utf-8") if isinstance(data, str) else data
    return SourceLine(source=source, line=number, offset=10 * number, data=data)


def _json(row) -> SourceLine:
    return _line(json.dumps(row))


@pytest.mark.parametrize("name", ["plain.txt", "packed.txt.gz"])
def test_lines_keep_number_and_byte_offset_and_skip_blank_lines(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(RAW) if name.endswith(".gz") else RAW)
    lines = list(iter_source_lines(str(path)))
    assert [(x.line, x.offset, x.data) for x in lines] == [(1, 0, b"a"), (3, 5, b"bc"), (5, 11, b"d")]
    assert all(RAW[x.offset :].startswith(x.data) for x in lines)
    assert [x.line for x in iter_source_lines(str(path), limit=2)] == [1, 3]


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        ("docs", b'{"_id": "d1", "text": "x"', parse.INVALID_JSON),
        ("docs", b'["d1", "x"]', parse.INVALID_JSON),
        ("docs", b"[" * 100_000 + b"]" * 100_000, parse.INVALID_JSON),
        ("docs", b'{"title": "t", "text": "x"}', parse.MISSING_ID),
        ("docs", b'{"_id": "  ", "text": "x"}', parse.MISSING_ID),
        ("docs", b'{"_id": "d1", "title": " ", "text": ""}', parse.EMPTY_TEXT),
        ("docs", b'{"_id": "d1", "text": 7}', parse.INVALID_FIELD),
        ("docs", b'{"_id": "d1", "text": "caf\xe9"}', parse.UNDECODABLE_BYTES),
        ("queries", b'{"_id": "q1"}', parse.EMPTY_TEXT),
        ("qrels", b"q1\td1", parse.MALFORMED_ROW),
        ("qrels", b"q1\td1\t1\textra", parse.MALFORMED_ROW),
        ("qrels", b"q1\td1\t1.5", parse.MALFORMED_ROW),
        ("qrels", b"\td1\t1", parse.MISSING_ID),
        ("qrels", b"q1\td\xff\t1", parse.UNDECODABLE_BYTES),
        ("pairs", b'{"query": "a?", "anchor": "b?", "positive": "p"}', parse.INVALID_FIELD),
        ("pairs", b'{"positive": "p"}', parse.EMPTY_TEXT),
        ("pairs", b'{"query": "a?", "positive": "  "}', parse.EMPTY_TEXT),
        ("pairs", b'{"query": "a?", "positive": "p", "query_id": ""}', parse.MISSING_ID),
        ("docs", rb'{"_id": "d1", "text": "lone \ud800 surrogate"}', parse.INVALID_TEXT),
        ("docs", rb'{"_id": "d\udfff", "text": "x"}', parse.INVALID_TEXT),
        ("docs", rb'{"_id": "d1", "text": "x", "meta": [{"\udc00": 1}]}', parse.INVALID_TEXT),
        ("docs", '{"_id": "d1", "text": "x", "m": {"\u00e9\U0001f600\\ud800": 1}}'.encode(), parse.INVALID_TEXT),
        ("queries", rb'{"_id": "q1", "text": "\uDBFF?"}', parse.INVALID_TEXT),
        ("pairs", rb'{"query": "a?", "positive": "p\ud800"}', parse.INVALID_TEXT),
        ("pairs", rb'{"query": "a?", "positive": "p", "positive_id": "\ud800"}', parse.INVALID_TEXT),
        ("docs", b'{"_id": "' + b"i" * 513 + b'", "text": "x"}', parse.ID_TOO_LONG),
        ("docs", ('{"_id": "' + "\u00e9" * 257 + '", "text": "x"}').encode(), parse.ID_TOO_LONG),  # 514 bytes
        ("pairs", b'{"query": "a?", "positive": "p", "query_id": "' + b"i" * 513 + b'"}', parse.ID_TOO_LONG),
        ("qrels", b"q1\t" + b"d" * 513 + b"\t1", parse.ID_TOO_LONG),
    ],
)
def test_bad_rows_are_dead_lettered_with_their_reason_location_and_raw(kind, data, reason):
    parsed = parse_line(kind, _line(data, number=7), max_chars=100)
    assert parsed.records == ()
    assert parsed.deadletter["reason"] == reason
    assert parsed.deadletter["location"] == "line 7 (byte 70)"
    assert parsed.deadletter["source"] == "f.jsonl"
    assert parsed.deadletter["raw"] == data.decode("utf-8", errors="replace")


def test_valid_surrogate_pairs_and_512_byte_ids_are_accepted():
    (doc,) = parse_line("docs", _line(rb'{"_id": "d1", "text": "smile \ud83d\ude00"}'), 100).records
    assert doc.text == "smile \U0001f600"
    (doc,) = parse_line("docs", _json({"_id": "i" * 512, "text": "x"}), 100).records
    assert doc.doc_id == "i" * 512


def test_a_line_over_the_limit_is_dead_lettered_from_its_prefix():
    parsed = parse_line("docs", SourceLine("f.jsonl", 3, 30, b'{"_id": "d1", "te', too_long=40_000_001), 100)
    assert parsed.deadletter["reason"] == parse.LINE_TOO_LONG and "40000001 bytes" in parsed.deadletter["detail"]
    assert parsed.deadletter["raw"] == '{"_id": "d1", "te' and parsed.dead_id is None


@pytest.mark.parametrize("name", ["plain.txt", "packed.txt.gz"])
def test_reading_never_holds_a_line_over_the_limit(tmp_path, name, monkeypatch):
    monkeypatch.setattr(read, "READ_CHUNK_BYTES", 7)  # lines straddle many chunks
    raw = b"ok\r\n" + b"x" * 5000 + b"\nabcdefghij\r\n" + b"y" * 3000
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    lines = list(iter_source_lines(str(path), max_line_bytes=10))
    assert [(x.line, x.offset, x.too_long) for x in lines] == [(1, 0, 0), (2, 4, 5001), (3, 5005, 0), (4, 5017, 3000)]
    assert [len(x.data) for x in lines] == [2, read.KEPT_PREFIX_BYTES, 10, read.KEPT_PREFIX_BYTES]
    assert lines[2].data == b"abcdefghij"


@pytest.mark.parametrize(("doc", "heading"), [("README.md", "Dead-letter reasons:"),
                                              ("docs/CONTRACT.md", "Dead-letter reasons (")])
def test_every_dead_letter_reason_is_listed_in_the_readme_and_the_contract(doc, heading):
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), doc)).read()
    listed = set(re.findall(r"[a-z_]+", text.split(heading, 1)[1].split("\n\n", 1)[0].split("Warning reasons")[0]))
    missing = [r for r in (*parse.DEADLETTER_REASONS, "non_finite_embedding", "zero_embedding") if r not in listed]
    assert not missing


def test_dead_lettered_rows_keep_their_id_when_it_can_be_read():
    assert parse_line("docs", _line(b'{"_id": "d5", "text": "bad \xff"}'), 100).dead_id == "d5"
    assert parse_line("docs", _json({"_id": "d4", "text": " "}), 100).dead_id == "d4"
    assert parse_line("queries", _json({"_id": 12, "text": ""}), 100).dead_id == "12"
    assert parse_line("docs", _line(b'{"_id": "d2"'), 100).dead_id is None
    assert parse_line("docs", _line(rb'{"_id": "d6", "text": "\ud800"}'), 100).dead_id == "d6"
    assert parse_line("docs", _line(rb'{"_id": "d\ud800", "text": "x"}'), 100).dead_id is None


def test_doc_rows_truncate_long_text_but_keep_the_identity_of_the_full_text():
    parsed = parse_line("docs", _json({"_id": 3, "title": "T", "text": "x" * 12}), max_chars=10)
    (doc,) = parsed.records
    assert (doc.doc_id, doc.title, doc.text) == ("3", "T", "x" * 10)
    assert doc.identity == text_hash("T " + "x" * 12)
    assert [(w["reason"], w["detail"]) for w in parsed.warnings] == [("truncated", "text: 12 -> 10 chars")]
    blank = parse_line("queries", _json({"_id": "q1", "text": " " * 10 + "late words"}), max_chars=10)
    assert blank.deadletter["reason"] == "empty_text" and blank.dead_id == "q1"


def test_qrels_header_only_on_line_one_and_nonpositive_scores_are_out_of_split():
    assert parse_line("qrels", _line(b"query-id\tcorpus-id\tscore", number=1), 100).header
    assert parse_line("qrels", _line(b"query-id\tcorpus-id\tscore", number=2), 100).deadletter["reason"] == (
        parse.MALFORMED_ROW
    )
    zero = parse_line("qrels", _line(b"q1\td1\t0"), 100)
    assert zero.out_of_split and zero.records == () and zero.deadletter is None
    (pair,) = parse_line("qrels", _line(b" q1 \td1\t2"), 100).records
    assert (pair.query_id, pair.doc_id, pair.score) == ("q1", "d1", 2)


def test_pair_rows_derive_ids_from_normalised_text_and_keep_given_ids():
    first = parse_line("pairs", _json({"query": "How do genes work?", "positive": "Genes encode."}), 100)
    second = parse_line("pairs", _json({"anchor": "how do  GENES work?", "positive": "Other."}), 100)
    query, doc, pair = first.records
    assert query.query_id == "q:" + text_hash("How do genes work?") == second.records[0].query_id
    assert doc.doc_id == "d:" + text_hash("Genes encode.") and doc.title == "" and doc.text == "Genes encode."
    assert (pair.query_id, pair.doc_id, pair.score) == (query.query_id, doc.doc_id, 1)
    assert not query.counted and not doc.counted and pair.ref.raw is not None
    given = parse_line("pairs", _json({"query": "a?", "query_id": 7, "positive": "p", "positive_id": "P"}), 100)
    assert [(r.query_id, r.doc_id) for r in given.records[2:]] == [("7", "P")]


def _doc(doc_id: str, text: str, line: int, counted: bool = True) -> parse.DocRecord:
    (record,) = parse_line("docs", _json({"_id": doc_id, "text": text}), 100).records
    ref = parse.RowRef("corpus.jsonl", line, f"line {line}", f"raw {line}")
    return parse.DocRecord(record.doc_id, "", record.text, record.identity, ref, counted)


def test_identical_duplicates_merge_into_the_earliest_row_and_count_every_copy():
    out = resolve_duplicates("d1", [_doc("d1", "Some  Text", 9), _doc("d1", "some text", 4)], settle_accepted=True)
    ((key, kept),) = out.main
    assert key == "d1" and kept.record.ref.line == 4 and [r.line for r in kept.copies] == [4, 9]
    assert [(w["reason"], w["location"]) for w in out.warnings] == [("identical_duplicate", "line 9")]
    assert out.ledger == [("corpus.jsonl", "accepted")] * 2 and out.deadletter == []


def test_conflicting_duplicates_dead_letter_every_counted_row_and_mark_the_id():
    rows = [_doc("d1", "one text", 2), _doc("d1", "another text", 5), _doc("d1", "one text", 3, counted=False)]
    out = resolve_duplicates("d1", rows, settle_accepted=True)
    assert out.main == [] and out.warnings == []
    assert [(r["reason"], r["raw"]) for r in out.deadletter] == [("duplicate_id_conflicting_text", "raw 2")] + [
        ("duplicate_id_conflicting_text", "raw 5")
    ]
    assert out.ledger == [("corpus.jsonl", "dead_lettered")] * 2
    ((key, mark),) = out.dead
    assert key == "d1" and mark.final and not mark.derived_only


def _pair(query_id: str, doc_id: str, score: int, line: int) -> parse.PairRecord:
    return parse.PairRecord(query_id, doc_id, score, parse.RowRef("qrels.tsv", line, f"line {line}", "raw"))


def test_pairs_of_dead_or_unknown_docs_are_dead_lettered_with_the_right_reason():
    pairs = [_pair("q1", "d1", 1, 2), _pair("q2", "d1", 1, 3)]
    assert [kv[0] for kv in check_pair_docs("d1", pairs, True, []).main] == ["q1", "q2"]
    unknown = check_pair_docs("d1", pairs, False, [])
    assert [r["reason"] for r in unknown.deadletter] == ["unknown_doc_id"] * 2
    assert unknown.ledger == [("qrels.tsv", "dead_lettered")] * 2
    empty = DeadMark("empty_text", "title and text are both empty", derived_only=False, final=False)
    assert [r["reason"] for r in check_pair_docs("d1", pairs, False, [empty]).deadletter] == ["doc_dead_lettered"] * 2
    assert check_pair_docs("d1", pairs, True, [empty]).deadletter == []  # a good copy of the id wins
    derived = DeadMark("duplicate_id_conflicting_text", "two texts", derived_only=True, final=True)
    assert [r["reason"] for r in check_pair_docs("d1", pairs, True, [derived]).deadletter] == [derived.reason] * 2


def test_settle_query_writes_queries_with_a_pair_and_splits_out_the_rest():
    query = parse.QueryRecord("q1", "text", "h", parse.RowRef("queries.jsonl", 1, "line 1", "raw"))
    kept = Kept(query, (query.ref, parse.RowRef("queries.jsonl", 5, "line 5", "raw")))
    pairs = [_pair("q1", "d1", 1, 2), _pair("q1", "d2", 1, 3), _pair("q1", "d1", 1, 4), _pair("q1", "d3", 1, 5)]
    pairs.append(_pair("q1", "d3", 2, 6))
    out = settle_query("q1", [kept], [], pairs)
    assert out.main == [{"query_id": "q1", "text": "text"}]
    assert [(p["positive_id"], p["score"]) for p in out.pairs] == [("d1", 1), ("d2", 1)]
    assert [w["location"] for w in out.warnings] == ["line 4"]
    assert [r["reason"] for r in out.deadletter] == ["duplicate_pair_conflicting_score"] * 2
    assert sorted(out.ledger).count(("queries.jsonl", "accepted")) == 2
    lonely = settle_query("q1", [kept], [], [])
    assert lonely.main == [] and lonely.ledger == [("queries.jsonl", "out_of_split")] * 2
    assert [r["reason"] for r in settle_query("q9", [], [], pairs[:1]).deadletter] == ["unknown_query_id"]


def _settle_fn_outputs(query_id: str, kept: list, marks: list, pairs: list) -> dict:
    """What SettleQueryFn emits for one query (records packed as they arrive): {tag: [values]}, ledger counts."""
    from collections import Counter

    from apache_beam import pvalue

    from transforms.ingest import KEPT, MARK, PAIR, SettleQueryFn
    from transforms.ingest_rules import RecordPacking

    packing = RecordPacking(["qrels.tsv", "queries.jsonl"])
    values = [(KEPT, packing.kept(k)) for k in kept] + [(MARK, packing.mark(m)) for m in marks]
    values += [(PAIR, packing.pair(p)) for p in pairs]
    fn = SettleQueryFn(packing.paths)
    fn.start_bundle()
    outputs: dict = {"main": [], "pairs": [], "deadletter": [], "warnings": []}
    for item in fn.process((query_id, values)):
        if isinstance(item, pvalue.TaggedOutput):
            outputs[item.tag].append(item.value)
        else:
            outputs["main"].append(item)
    outputs["ledger"] = Counter(fn._ledger)
    return outputs


def test_settle_query_fn_on_packed_pairs_matches_settle_query():
    """SettleQueryFn settles the usual query without unpacking its pairs; every case matches settle_query."""
    from collections import Counter

    query = parse.QueryRecord("q1", "text", "h", parse.RowRef("queries.jsonl", 1, "line 1", "raw"))
    kept = Kept(query, (query.ref, parse.RowRef("queries.jsonl", 5, "line 5", "raw")))
    plain = [_pair("q1", "d3", 1, 2), _pair("q1", "d1", 2, 3), _pair("q1", "d2", 1, 9)]
    repeated = plain + [_pair("q1", "d1", 2, 4), _pair("q1", "d2", 3, 5)]
    dead = DeadMark("anchor_conflicting_query_id", "two ids", derived_only=True, final=True)
    cases = [([kept], [], plain), ([kept], [], []), ([kept], [], repeated), ([kept], [dead], plain), ([], [], plain)]
    for kept_rows, marks, pairs in cases:
        expected = settle_query("q1", kept_rows, marks, pairs)
        got = _settle_fn_outputs("q1", kept_rows, marks, pairs)
        assert got["main"] == expected.main and got["pairs"] == expected.pairs
        assert got["deadletter"] == expected.deadletter and got["warnings"] == expected.warnings
        assert got["ledger"] == Counter(expected.ledger)


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("corpus.jsonl", b'{"_id": "d9", "text": "lone \\ud800"}', "corpus.jsonl line 2: text UTF-8 cannot encode"),
        ("corpus.jsonl", b'{"text": "no id"}', 'corpus.jsonl line 2: expected a JSON object with an "_id"'),
        ("queries.jsonl", b"{not json", "queries.jsonl line 2: not a JSON object"),
        ("queries.jsonl", b'{"_id": "q9", "text": "caf\xe9"}', "queries.jsonl line 2: invalid UTF-8"),
        ("qrels/train.tsv", b"q1\td1\tx", "train.tsv line 2: score 'x' is not an integer"),
    ],
)
def test_load_beir_names_the_file_and_line_of_a_bad_row(tmp_path, name, bad, message):
    from transforms.beir import load_beir

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_bytes(b'{"_id": "d1", "title": "T", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "q?"}\n')
    (tmp_path / "qrels" / "train.tsv").write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")
    data = load_beir(str(tmp_path), "train")
    assert (data.corpus, data.queries, data.qrels) == ({"d1": "T x"}, {"q1": "q?"}, {"q1": {"d1": 1}})
    path = tmp_path / name
    path.write_bytes(path.read_bytes().split(b"\n")[0] + b"\n" + bad + b"\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_beir(str(tmp_path), "train")
