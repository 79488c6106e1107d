"""Beam ingest: input files -> accepted docs, queries and pairs, plus dead-letter and warning rows and a ledger.

Recipe (IngestInputs.expand):
1. every file is read as byte lines and parsed (transforms/read.py, transforms/parse.py); a bad row becomes
   a dead-letter row, never a crash;
2. docs and queries are grouped by id: rows with one id and one text (up to case and whitespace) merge into
   the earliest row (the others are `identical_duplicate` warnings); rows with one id and different texts
   are all dead-lettered (`duplicate_id_conflicting_text`): nothing tells which text is right. For pair
   files, one anchor text given different query ids kills those ids (`anchor_conflicting_query_id`);
3. pairs are checked against docs (by doc id), then against queries (by query id); a pair whose doc or
   query is missing is dead-lettered as unknown_*; one whose doc or query row was itself dead-lettered as
   doc_dead_lettered / query_dead_lettered (pair files: the root reason when only pair rows were involved);
4. pairs repeated for one (query, doc) merge like duplicates; different scores dead-letter them all;
5. a query is written only with >= 1 accepted pair, else its rows are out_of_split.

Accounting: every data row lands in exactly one ledger outcome (accepted, dead_lettered, out_of_split); the
parser also records each row as read, so `read = accepted + dead_lettered + out_of_split` per file is a
check, not a definition. An identical duplicate takes the outcome of the row it merged into (so `accepted`
counts rows, and output tables hold fewer, unique rows); blank lines and the qrels header are not rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam import pvalue

from schemas.build_config import IngestConfig
from schemas.inputs import passage_of
from schemas.negatives import text_hash
from transforms import parse
from transforms.beir import beir_paths
from transforms.parse import DocRecord, PairRecord, QueryRecord, RowRef
from transforms.read import ReadSourceLines, SourceLine

logger = logging.getLogger(__name__)

ACCEPTED, DEAD_LETTERED, OUT_OF_SPLIT, READ = "accepted", "dead_lettered", "out_of_split", "read"
OUTCOMES = (ACCEPTED, DEAD_LETTERED, OUT_OF_SPLIT)
_RECORD_TAGS = {DocRecord: "docs", QueryRecord: "queries", PairRecord: "pairs"}
_PARSE_TAGS = ("docs", "queries", "pairs", "deadletter", "warnings", "ledger", "dead_docs", "dead_queries")
_GROUP_TAGS = ("pairs", "deadletter", "warnings", "ledger", "dead")  # Outcome.emit
_ISSUE_TAGS = ("deadletter", "warnings", "ledger")


@dataclass(frozen=True)
class DeadMark:
    """Why an id cannot be used by pairs."""

    reason: str
    detail: str
    derived_only: bool  # only pair-file rows were involved: their pairs get this reason itself
    final: bool  # True: the id is unusable even if a record for it was accepted (conflicts)


@dataclass(frozen=True)
class Kept:
    """A merged record and the counted rows it stands for (the kept row first)."""

    record: DocRecord | QueryRecord
    copies: tuple[RowRef, ...]


@dataclass
class Outcome:
    """What one group decision produced, emitted by the DoFns as tagged outputs."""

    main: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    deadletter: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    ledger: list = field(default_factory=list)  # (source, outcome)
    dead: list = field(default_factory=list)  # (id, DeadMark)

    def reject(self, ref: RowRef, reason: str, detail: str) -> None:
        self.deadletter.append(ref.issue(reason, detail))
        self.ledger.append((ref.source, DEAD_LETTERED))

    def emit(self):
        yield from self.main
        for tag in ("pairs", "deadletter", "warnings", "ledger", "dead"):
            for value in getattr(self, tag):
                yield pvalue.TaggedOutput(tag, value)


def _order(ref: RowRef) -> tuple[str, int]:
    return ref.source, ref.line


def resolve_duplicates(key: str, records: list, settle_accepted: bool) -> Outcome:
    """Merge the records of one doc or query id; see the module docstring for the rules."""
    out = Outcome()
    records = sorted(records, key=lambda r: (not r.counted, _order(r.ref)))
    counted = [r.ref for r in records if r.counted]
    if len({r.identity for r in records}) > 1:
        places = ", ".join(f"{r.ref.source} {r.ref.location}" for r in records[:5])
        detail = f"id {key!r} has {len({r.identity for r in records})} different texts ({places})"
        for ref in counted:
            out.reject(ref, parse.DUPLICATE_ID_CONFLICTING_TEXT, detail)
        out.dead.append((key, DeadMark(parse.DUPLICATE_ID_CONFLICTING_TEXT, detail, not counted, final=True)))
        return out
    kept = records[0]
    for ref in counted[1:]:
        detail = f"same id {key!r} and text as {kept.ref.source} {kept.ref.location}, which is kept"
        out.warnings.append(ref.issue(parse.IDENTICAL_DUPLICATE, detail))
    if settle_accepted:
        out.ledger.extend((ref.source, ACCEPTED) for ref in counted)
    out.main.append((key, Kept(kept, tuple(counted))))
    return out


def anchor_conflicts(identity: str, records: list[QueryRecord]) -> Outcome:
    """Pair files: one anchor text must map to one query id; several ids for one text are all unusable."""
    out = Outcome()
    ids = sorted({r.query_id for r in records})
    if len(ids) > 1:
        detail = f"one anchor text {records[0].text[:80]!r} is given {len(ids)} query ids {ids[:5]}"
        derived_only = not any(r.counted for r in records)
        out.dead.extend((i, DeadMark(parse.ANCHOR_CONFLICTING_QUERY_ID, detail, derived_only, True)) for i in ids)
    return out


def _unusable(kind: str, key: str, accepted: bool, marks: list[DeadMark]) -> tuple[str, str] | None:
    """(reason, detail) why pairs cannot use the doc or query `key`, or None when they can."""
    final = sorted((m for m in marks if m.final), key=lambda m: (m.reason, m.detail))
    if accepted and not final:
        return None
    if not final and not marks:
        return (parse.UNKNOWN_DOC_ID if kind == "doc" else parse.UNKNOWN_QUERY_ID), f"no {kind} with id {key!r}"
    mark = (final or sorted(marks, key=lambda m: (m.reason, m.detail)))[0]
    if mark.derived_only:
        return mark.reason, mark.detail
    reason = parse.DOC_DEAD_LETTERED if kind == "doc" else parse.QUERY_DEAD_LETTERED
    return reason, f"{kind} {key!r} was dead-lettered ({mark.reason}): {mark.detail}"


def check_pair_docs(doc_id: str, pairs: list[PairRecord], has_doc: bool, marks: list[DeadMark]) -> Outcome:
    """Keep the pairs whose doc was accepted (keyed by query id); dead-letter the others."""
    out = Outcome()
    problem = _unusable("doc", doc_id, has_doc, marks)
    for pair in sorted(pairs, key=lambda p: _order(p.ref)):
        if problem is None:
            out.main.append((pair.query_id, pair))
        else:
            out.reject(pair.ref, *problem)
    return out


def settle_query(query_id: str, kept: list[Kept], marks: list[DeadMark], pairs: list[PairRecord]) -> Outcome:
    """Decide a query and its pairs: main gets the query row, pairs the accepted pair rows."""
    out = Outcome()
    problem = _unusable("query", query_id, bool(kept), marks)
    copies = kept[0].copies if kept else ()
    if problem is not None:
        for ref in list(copies) + [p.ref for p in pairs]:
            out.reject(ref, *problem)
        return out
    by_doc: dict[str, list[PairRecord]] = {}
    for pair in sorted(pairs, key=lambda p: _order(p.ref)):
        by_doc.setdefault(pair.doc_id, []).append(pair)
    for doc_id, group in sorted(by_doc.items()):
        if len({p.score for p in group}) > 1:
            detail = f"pair ({query_id!r}, {doc_id!r}) has scores {sorted({p.score for p in group})}"
            for pair in group:
                out.reject(pair.ref, parse.DUPLICATE_PAIR_CONFLICTING_SCORE, detail)
            continue
        first = group[0]
        out.pairs.append({"query_id": query_id, "positive_id": doc_id, "score": first.score})
        out.ledger.extend((p.ref.source, ACCEPTED) for p in group)
        detail = f"same pair ({query_id!r}, {doc_id!r}) as {first.ref.source} {first.ref.location}, which is kept"
        out.warnings.extend(p.ref.issue(parse.IDENTICAL_DUPLICATE, detail) for p in group[1:])
    outcome = ACCEPTED if out.pairs else OUT_OF_SPLIT
    out.ledger.extend((ref.source, outcome) for ref in copies)
    if out.pairs:
        out.main.append({"query_id": query_id, "text": kept[0].record.text})
    return out


def doc_row(record: DocRecord) -> dict:
    """A DOCS_SCHEMA row: passage is what is embedded, text_hash is hashed from it."""
    passage = passage_of(record.title, record.text)
    return {
        "doc_id": record.doc_id,
        "title": record.title,
        "text": record.text,
        "passage": passage,
        "text_hash": text_hash(passage),
    }


class ParseRowsFn(beam.DoFn):
    """(row kind, SourceLine) -> records (tags docs / queries / pairs), dead-letter and warning rows, ledger."""

    def __init__(self, max_text_chars: int) -> None:
        self.max_text_chars = max_text_chars

    def process(self, element: tuple[str, SourceLine]):
        kind, line = element
        parsed = parse.parse_line(kind, line, self.max_text_chars)
        if parsed.header:
            return
        yield pvalue.TaggedOutput("ledger", (line.source, READ))
        for warning in parsed.warnings:
            yield pvalue.TaggedOutput("warnings", warning)
        if parsed.deadletter is not None:
            yield pvalue.TaggedOutput("deadletter", parsed.deadletter)
            yield pvalue.TaggedOutput("ledger", (line.source, DEAD_LETTERED))
            if parsed.dead_id is not None and kind in ("docs", "queries"):
                mark = DeadMark(parsed.deadletter["reason"], parsed.deadletter["detail"], False, final=False)
                yield pvalue.TaggedOutput(f"dead_{kind}", (parsed.dead_id, mark))
        if parsed.out_of_split:
            yield pvalue.TaggedOutput("ledger", (line.source, OUT_OF_SPLIT))
        for record in parsed.records:
            yield pvalue.TaggedOutput(_RECORD_TAGS[type(record)], record)


class ResolveDuplicatesFn(beam.DoFn):
    """(id, records) -> (id, Kept); conflicts and duplicates to dead-letter / warnings (resolve_duplicates)."""

    def __init__(self, settle_accepted: bool) -> None:
        self.settle_accepted = settle_accepted

    def process(self, element):
        key, records = element
        yield from resolve_duplicates(key, list(records), self.settle_accepted).emit()


class AnchorConflictsFn(beam.DoFn):
    """(anchor identity, query records) -> dead marks for ids sharing one anchor text (pair files)."""

    def process(self, element):
        identity, records = element
        yield from anchor_conflicts(identity, list(records)).emit()


class CheckPairDocsFn(beam.DoFn):
    """(doc id, {pairs, docs, dead}) -> (query id, pair) for pairs whose doc was accepted."""

    def process(self, element):
        doc_id, grouped = element
        has_doc = bool(list(grouped["docs"]))
        yield from check_pair_docs(doc_id, list(grouped["pairs"]), has_doc, list(grouped["dead"])).emit()


class SettleQueryFn(beam.DoFn):
    """(query id, {queries, dead, pairs}) -> query row; tagged: accepted pair rows, dead-letter, ledger."""

    def process(self, element):
        query_id, grouped = element
        yield from settle_query(
            query_id, list(grouped["queries"]), list(grouped["dead"]), list(grouped["pairs"])
        ).emit()


def input_sources(ingest: IngestConfig) -> list[tuple[str, str]]:
    """(row kind, path) of every input file, in a fixed order."""
    if ingest.beir_dir is not None:
        paths = beir_paths(ingest.beir_dir, ingest.split)
        return [("docs", paths["corpus"]), ("queries", paths["queries"]), ("qrels", paths["qrels"])]
    sources = [("pairs", ingest.pairs_file)]
    if ingest.corpus_file is not None:
        sources.append(("docs", ingest.corpus_file))
    return sources


def _group(pcoll, name: str, key, fn: beam.DoFn):
    """Group records by key(record) and decide each group with fn (an Outcome-emitting DoFn)."""
    return (
        pcoll
        | f"Key{name}" >> beam.Map(lambda record: (key(record), record))
        | f"Group{name}" >> beam.GroupByKey()
        | f"Resolve{name}" >> beam.ParDo(fn).with_outputs(*_GROUP_TAGS, main="kept")
    )


class IngestInputs(beam.PTransform):
    """PBegin -> {docs, queries, pairs: output rows; deadletter, warnings: issue rows; ledger: (source, outcome)}."""

    def __init__(self, ingest: IngestConfig) -> None:
        super().__init__()
        self.ingest = ingest

    def expand(self, pbegin):
        rows = self._read_and_parse(pbegin)
        docs = _group(rows["docs"], "Docs", lambda r: r.doc_id, ResolveDuplicatesFn(settle_accepted=True))
        queries = _group(rows["queries"], "Queries", lambda r: r.query_id, ResolveDuplicatesFn(settle_accepted=False))
        query_marks = [rows["dead_queries"], queries.dead]
        if self.ingest.pairs_file is not None:
            query_marks.append(_group(rows["queries"], "Anchors", lambda r: r.identity, AnchorConflictsFn()).dead)
        pairs_with_doc = (
            {
                "pairs": rows["pairs"] | "KeyPairsByDoc" >> beam.Map(lambda pair: (pair.doc_id, pair)),
                "docs": docs.kept | "AcceptedDocIds" >> beam.Map(lambda kv: (kv[0], True)),
                "dead": [rows["dead_docs"], docs.dead] | "DeadDocMarks" >> beam.Flatten(),
            }
            | "JoinPairsWithDocs" >> beam.CoGroupByKey()
            | "CheckPairDocs" >> beam.ParDo(CheckPairDocsFn()).with_outputs(*_GROUP_TAGS, main="kept")
        )
        settled = (
            {
                "queries": queries.kept,
                "dead": query_marks | "DeadQueryMarks" >> beam.Flatten(),
                "pairs": pairs_with_doc.kept,
            }
            | "JoinPairsWithQueries" >> beam.CoGroupByKey()
            | "SettleQueries" >> beam.ParDo(SettleQueryFn()).with_outputs(*_GROUP_TAGS, main="kept")
        )
        decided = [rows, docs, queries, pairs_with_doc, settled]
        return {
            "docs": docs.kept | "DocRows" >> beam.Map(lambda kv: doc_row(kv[1].record)),
            "queries": settled.kept,
            "pairs": settled.pairs,
            **{tag: [d[tag] for d in decided] | f"Collect{tag.title()}" >> beam.Flatten() for tag in _ISSUE_TAGS},
        }

    def _read_and_parse(self, pbegin):
        """Every input file read and parsed; a DoOutputsTuple with one PCollection per parse tag."""
        return (
            pbegin
            | "ReadInputs" >> ReadSourceLines(input_sources(self.ingest), self.ingest.max_line_bytes)
            | "ParseRows" >> beam.ParDo(ParseRowsFn(self.ingest.max_text_chars)).with_outputs(*_PARSE_TAGS)
        )
