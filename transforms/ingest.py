"""Beam ingest: input files -> accepted docs, queries and pairs, plus dead-letter and warning rows and a ledger.

Recipe (IngestInputs.expand):
1. every file is read in byte ranges and parsed (transforms/read.py, transforms/parse.py); a bad row becomes
   a dead-letter row, never a crash. Only the range descriptors are shuffled, never the lines;
2. docs and queries are grouped by id: rows with one id and one text (up to case and whitespace) merge into
   the earliest row (the others are `identical_duplicate` warnings); rows with one id and different texts
   are all dead-lettered (`duplicate_id_conflicting_text`): nothing tells which text is right. For pair
   files, one anchor text given different query ids kills those ids (`anchor_conflicting_query_id`);
3. pairs are checked against docs (by doc id, in the same group as the doc decision), then against queries
   (by query id); a pair whose doc or query is missing is dead-lettered as unknown_*; one whose doc or query
   row was itself dead-lettered as doc_dead_lettered / query_dead_lettered (pair files: the root reason when
   only pair rows were involved);
4. pairs repeated for one (query, doc) merge like duplicates; different scores dead-letter them all;
5. a query is written only with >= 1 accepted pair, else its rows are out_of_split;
6. the docs table is written by a second read of the doc-bearing files (corpus, pair file), range by range,
   one Parquet part per range (WriteDocPartsFn), leaving out the rows the decisions dropped.

Docs' texts never cross a GroupByKey (on the local runner a worker holds its whole partition of a grouped
stage at once, so any shuffle of texts costs every worker O(corpus / workers)). The doc decisions see DocKeys
(id, identity hash, where the row is: no text), and the rows of the pair file's pairs travel without their
raw line (it holds the positive's text). What the decisions change about those rows is small and comes back
as one side input, the Exceptions: the (file, line) of every doc row not kept (merged duplicates, conflicting
ids, a pair file's repeated positives: numpy arrays, 8 bytes a row) and the dead-letter / warning notes of
rows whose raw line is re-read to write them (a few fields each). Every worker holds the whole side input; in
a sane corpus it is tiny, and it stays 8 bytes per dropped row when it is not (a pair file whose positives
all repeat: one int per pair row; 100M dropped rows would be 0.8 GB per worker).

Accounting: every data row lands in exactly one ledger outcome (accepted, dead_lettered, out_of_split); the
parser also records each row as read, so `read = accepted + dead_lettered + out_of_split` per file is a
check, not a definition. An identical duplicate takes the outcome of the row it merged into (so `accepted`
counts rows, and output tables hold fewer, unique rows); blank lines and the qrels header are not rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from schemas.build_config import IngestConfig
from schemas.inputs import DOCS_SCHEMA
from transforms import parse
from transforms.beir import beir_paths
from transforms.ingest_rules import (
    ACCEPTED,
    DEAD_LETTERED,
    OUT_OF_SPLIT,
    READ,
    Kept,
    Outcome,
    RecordPacking,
    anchor_conflicts,
    decide_doc_rows,
    doc_keys,
    doc_row,
    pairs_outcome,
    resolve_duplicates,
    settle_query,
)
from transforms.parse import DocRecord, PairRecord
from transforms.read import (
    ByteRange,
    SourceLine,
    SpreadRanges,
    first_line_numbers,
    iter_range_lines,
    line_breaks,
    plan_ranges,
    read_range,
)
from transforms.write_tables import part_name, write_part

logger = logging.getLogger(__name__)

_PARSE_TAGS = ("by_doc", "queries", "deadletter", "warnings", "ledger", "by_query")
# What a grouped value holds (its first item). by_doc: a DocKey tuple, a packed pair naming the doc, a packed
# DeadMark; by_query (the settle join): the packed Kept query, a packed DeadMark, a packed pair.
DOC, PAIR, MARK = 0, 1, 2
KEPT = 0
_ISSUE_TAGS = ("deadletter", "warnings")
DOC_KINDS = ("docs", "pairs")  # row kinds whose lines hold doc texts: read again to write the docs table



class _TallyLedgerFn(beam.DoFn):
    """A DoFn whose ledger entries are counted per bundle and emitted once per bundle as (source, outcome, n).

    One entry per row (two per doc: read, then accepted) would send every row twice more through a Flatten
    and a combine; on the local runner that materialised Flatten was the ingest workers' largest growth.
    Subclasses count into self._ledger directly (a yielded entry per row, filtered back out, cost a generator
    step and a TaggedOutput per row: 0.5 s on 100k qrels rows, issue 15) or through self._issues().
    """

    def start_bundle(self):
        self._ledger: Counter = Counter()

    def _issues(self, out: Outcome, tags: tuple[str, ...] = _ISSUE_TAGS):
        """Count out.ledger into the bundle's tally; yield the rows of out's `tags` lists, tagged."""
        self._ledger.update(out.ledger)
        for tag in tags:
            for value in getattr(out, tag):
                yield pvalue.TaggedOutput(tag, value)

    def finish_bundle(self):
        for (source, outcome), count in sorted(self._ledger.items()):
            yield pvalue.TaggedOutput("ledger", GlobalWindows.windowed_value((source, outcome, count)))
        self._ledger.clear()


class ParseRowsFn(_TallyLedgerFn):
    """ByteRange -> the packed records (RecordPacking) of its lines, their dead-letter and warning rows, ledger.

    Tag by_doc: everything the doc decision needs, keyed by doc id and ready for one GroupByKey (a
    CoGroupByKey would add a Flatten, one more pass of every doc through a worker on the local runner):
    (DOC, (identity, counted, source index, line, offset)) for a doc row, without its text; (PAIR, packed pair)
    for a pair (a pair file's without its raw line, which holds the positive's text); (MARK, packed DeadMark)
    for a dead-lettered doc row whose id could be read. Tag queries: packed QueryRecords. Tag by_query: (MARK,
    packed DeadMark) of a dead-lettered query row whose id could be read. See the module docstring.
    """

    def __init__(self, ranges: list[ByteRange], ingest: IngestConfig, sources: list[tuple[str, str]]) -> None:
        self.ranges = ranges
        self.max_text_chars = ingest.max_text_chars
        self.max_line_bytes = ingest.max_line_bytes
        self.packing = RecordPacking([path for _, path in sources])
        self.lines_read = Metrics.counter(self.__class__, "lines_read")

    def process(self, piece: ByteRange, newlines: dict):
        count = 0
        for line in read_range(self.ranges, piece, newlines, self.max_line_bytes):
            count += 1
            yield from self._parse(piece.kind, line)
        self.lines_read.inc(count)

    def _parse(self, kind: str, line: SourceLine):
        parsed = parse.parse_line(kind, line, self.max_text_chars)
        if parsed.header:
            return
        self._ledger[line.source, READ] += 1
        for warning in parsed.warnings:
            yield pvalue.TaggedOutput("warnings", warning)
        if parsed.deadletter is not None:
            yield pvalue.TaggedOutput("deadletter", parsed.deadletter)
            self._ledger[line.source, DEAD_LETTERED] += 1
            if parsed.dead_id is not None and kind in ("docs", "queries"):
                mark = (parsed.deadletter["reason"], parsed.deadletter["detail"], False, False)  # a packed DeadMark
                yield pvalue.TaggedOutput("by_doc" if kind == "docs" else "by_query", (parsed.dead_id, (MARK, mark)))
        if parsed.out_of_split:
            self._ledger[line.source, OUT_OF_SPLIT] += 1
        for record in parsed.records:
            if isinstance(record, DocRecord):
                where = self.packing.index[line.source]
                yield pvalue.TaggedOutput(
                    "by_doc", (record.doc_id, (DOC, (record.identity, record.counted, where, line.line, line.offset)))
                )
            elif isinstance(record, PairRecord):
                if kind in DOC_KINDS:
                    record = replace(record, ref=replace(record.ref, raw=None))
                yield pvalue.TaggedOutput("by_doc", (record.doc_id, (PAIR, self.packing.pair(record))))
            else:
                yield pvalue.TaggedOutput("queries", self.packing.query(record))


class ResolveQueriesFn(_TallyLedgerFn):
    """(query id, packed QueryRecords) -> (query id, (KEPT, packed Kept)) or (query id, (MARK, packed DeadMark))
    for the settle join; conflicts and duplicates to dead-letter / warnings (resolve_duplicates)."""

    def __init__(self, paths: list[str]) -> None:
        self.packing = RecordPacking(paths)

    def process(self, element):
        key, packed = element
        out = resolve_duplicates(key, [self.packing.unquery(p) for p in packed], settle_accepted=False)
        for query_id, kept in out.main:
            yield query_id, (KEPT, self.packing.kept(kept))
        for query_id, mark in out.dead:
            yield query_id, (MARK, RecordPacking.mark(mark))
        yield from self._issues(out)


class AnchorConflictsFn(beam.DoFn):
    """(anchor identity, packed QueryRecords) -> (query id, (MARK, packed DeadMark)) for ids sharing one anchor
    text (pair files; anchor_conflicts)."""

    def __init__(self, paths: list[str]) -> None:
        self.packing = RecordPacking(paths)

    def process(self, element):
        identity, packed = element
        for query_id, mark in anchor_conflicts(identity, [self.packing.unquery(p) for p in packed]).dead:
            yield query_id, (MARK, RecordPacking.mark(mark))


class DecideDocsFn(_TallyLedgerFn):
    """(doc id, [(DOC|PAIR|MARK, packed)]) -> (query id, (PAIR, packed pair)) for pairs whose doc was accepted.

    Tagged: dropped (source, line) of doc rows not kept; deadletter, warnings, ledger. The same decisions as
    decide_doc, which the tests check; the pairs of an accepted doc go on packed, never unpacked.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.packing = RecordPacking(paths)

    def process(self, element):
        doc_id, values = element
        docs, pairs, marks = [], [], []
        for kind, value in values:
            if kind == DOC:
                docs.append(value)
            elif kind == PAIR:
                pairs.append(value)
            else:
                marks.append(RecordPacking.unmark(value))
        decided, dropped, problem = decide_doc_rows(doc_id, doc_keys(docs, self.paths), marks)
        yield from self._issues(decided)
        if problem is None:  # the usual case: every pair goes on as packed, in row order (as decide_doc's)
            for pair in sorted(pairs, key=self.packing.pair_order):
                yield pair[0], (PAIR, pair)
        else:
            yield from self._issues(pairs_outcome([self.packing.unpair(p) for p in pairs], problem))
        for ref in dropped:
            yield pvalue.TaggedOutput("dropped", (ref.source, ref.line))


class RouteIssuesFn(beam.DoFn):
    """Issue rows of the decisions: those without raw (rows re-read to write docs) become notes for that read.

    A note is ((source, location), (table, reason, detail)); WriteDocPartsFn turns it back into the row, raw
    included, when it reads the line again.
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def process(self, row: dict):
        if row["raw"] is None:
            note = (self.table, row["reason"], row["detail"])
            yield pvalue.TaggedOutput("notes", ((row["source"], row["location"]), note))
        else:
            yield row


class ExceptionsFn(beam.CombineFn):
    """("drop", source, line) and ("note", (source, location), note) -> {"dropped": {source: sorted lines},
    "notes": {source: {location: [note, ...]}}}: what the second read of the doc-bearing files must change."""

    def create_accumulator(self):
        return {"dropped": {}, "notes": {}}

    def add_input(self, acc, item):
        if item[0] == "drop":
            acc["dropped"].setdefault(item[1], []).append(item[2])
        else:
            acc["notes"].setdefault(item[1], []).append(item[2])
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            for source, lines in acc["dropped"].items():
                merged["dropped"].setdefault(source, []).extend(lines)
            for key, values in acc["notes"].items():
                merged["notes"].setdefault(key, []).extend(values)
        return merged

    def extract_output(self, acc):
        dropped = {source: np.unique(np.asarray(lines, dtype=np.int64)) for source, lines in acc["dropped"].items()}
        notes: dict[str, dict] = {}
        for (source, where), values in acc["notes"].items():
            notes.setdefault(source, {})[where] = sorted(values)
        return {"dropped": dropped, "notes": notes}


def _doc_record(parsed: parse.Parsed) -> DocRecord | None:
    return next((r for r in parsed.records if isinstance(r, DocRecord)), None)


class WriteDocPartsFn(beam.DoFn):
    """ByteRange of a doc-bearing file -> its docs part (part-SSSSS-of-NNNNN.parquet, one per such range).

    Reads the range again (side inputs: line breaks per range, Exceptions), parses each line, writes the doc
    rows the decisions kept and, for noted lines, their dead-letter / warning rows (raw included, tagged
    deadletter / warnings). Yields (("output", "docs"), rows written). A retried range rewrites its part whole.
    """

    def __init__(self, ranges: list[ByteRange], folder: str, max_text_chars: int, max_line_bytes: int) -> None:
        self.ranges = ranges
        self.folder = folder
        self.max_text_chars = max_text_chars
        self.max_line_bytes = max_line_bytes
        doc_ranges = [r.index for r in ranges if r.kind in DOC_KINDS]
        self.parts = {index: part for part, index in enumerate(doc_ranges)}

    def process(self, piece: ByteRange, newlines: dict, exceptions: dict):
        first = first_line_numbers(self.ranges, newlines)[piece.index]
        issues: list = []
        rows = self._rows(piece, first, exceptions, issues)
        path = FileSystems.join(self.folder, part_name(self.parts[piece.index], len(self.parts)))
        written = write_part(path, DOCS_SCHEMA, rows)
        for table, row in issues:
            yield pvalue.TaggedOutput(table, row)
        yield ("output", "docs"), written

    def _rows(self, piece: ByteRange, first: int, exceptions: dict, issues: list):
        dropped = exceptions["dropped"].get(piece.path, np.empty(0, dtype=np.int64))
        notes = exceptions["notes"].get(piece.path)
        at = int(np.searchsorted(dropped, first))
        for line in iter_range_lines(piece.path, piece.start, piece.end, first, self.max_line_bytes):
            while at < len(dropped) and dropped[at] < line.line:
                at += 1
            for table, reason, detail in notes.get(line.location, ()) if notes else ():
                issues.append((table, parse.row_ref(line).issue(reason, detail)))
            if at < len(dropped) and dropped[at] == line.line:
                continue
            record = _doc_record(parse.parse_line(piece.kind, line, self.max_text_chars))
            if record is not None:
                yield doc_row(record)


class SettleQueryFn(_TallyLedgerFn):
    """(query id, [(KEPT|MARK|PAIR, packed)]) -> query row; tagged: accepted pair rows, dead-letter, ledger.

    One GroupByKey of values tagged by their producers, not a CoGroupByKey: Beam's Python CoGroupByKey adds a
    tagging Map per input and copies every group into per-input lists, a Python step per pair (issue 15).
    """

    def __init__(self, paths: list[str]) -> None:
        self.packing = RecordPacking(paths)

    def process(self, element):
        query_id, values = element
        kept, marks, pairs = [], [], []
        for kind, value in values:
            if kind == KEPT:
                kept.append(self.packing.unkept(value))
            elif kind == MARK:
                marks.append(RecordPacking.unmark(value))
            else:
                pairs.append(value)
        if kept and not marks and len({pair[1] for pair in pairs}) == len(pairs):
            yield from self._settle_plain(query_id, kept[0], pairs)
            return
        out = settle_query(query_id, kept, marks, [self.packing.unpair(pair) for pair in pairs])
        yield from out.main
        yield from self._issues(out, ("pairs", *_ISSUE_TAGS))

    def _settle_plain(self, query_id: str, kept: Kept, pairs: list[tuple]):
        """settle_query's outcome, without unpacking the pairs, for the usual query: accepted, marked dead by
        nothing, no doc named twice. Every pair is accepted, in doc id order; the query row is written when it
        has a pair (its rows accepted), else its rows are out_of_split. test_ingest_parse checks it against
        settle_query; unpacking 100k pairs was ~5% of issue 15's ingest."""
        paths = self.packing.paths
        for _, doc_id, score, source, *_ in sorted(pairs, key=lambda p: p[1]):  # RecordPacking.pair, by doc id
            self._ledger[paths[source], ACCEPTED] += 1
            yield pvalue.TaggedOutput("pairs", {"query_id": query_id, "positive_id": doc_id, "score": score})
        self._ledger.update((ref.source, ACCEPTED if pairs else OUT_OF_SPLIT) for ref in kept.copies)
        if pairs:
            yield {"query_id": query_id, "text": kept.record.text}


def input_sources(ingest: IngestConfig) -> list[tuple[str, str]]:
    """(row kind, path) of every input file, in a fixed order."""
    if ingest.beir_dir is not None:
        paths = beir_paths(ingest.beir_dir, ingest.split)
        return [("docs", paths["corpus"]), ("queries", paths["queries"]), ("qrels", paths["qrels"])]
    sources = [("pairs", ingest.pairs_file)]
    if ingest.corpus_file is not None:
        sources.append(("docs", ingest.corpus_file))
    return sources


def _group(pcoll, name: str, key, fn: beam.DoFn, *tags: str):
    """Group packed records by key(record) and decide each group with fn; main output: `decided`."""
    return (
        pcoll
        | f"Key{name}" >> beam.Map(lambda record: (key(record), record))
        | f"Group{name}" >> beam.GroupByKey()
        | f"Resolve{name}" >> beam.ParDo(fn).with_outputs(*tags, main="decided")
    )


class IngestInputs(beam.PTransform):
    """PBegin -> {docs_written: (("output", "docs"), rows) per docs part written to docs_folder; queries, pairs:
    output rows; deadletter, warnings: issue rows; ledger: (source, outcome, rows)}."""

    def __init__(self, ingest: IngestConfig, docs_folder: str, range_bytes: int | None = None) -> None:
        super().__init__()
        self.ingest = ingest
        self.docs_folder = docs_folder
        self.range_bytes = range_bytes  # None: read.RANGE_BYTES

    def expand(self, pbegin):
        sources = input_sources(self.ingest)
        ranges = plan_ranges(sources, self.range_bytes)
        newlines = line_breaks(pbegin, ranges)
        rows = (
            pbegin
            | "ParseRanges" >> SpreadRanges(ranges)
            | "ParseRows" >> beam.ParDo(ParseRowsFn(ranges, self.ingest, sources), newlines).with_outputs(*_PARSE_TAGS)
        )
        paths = [path for _, path in sources]
        queries = _group(rows["queries"], "Queries", lambda r: r[0], ResolveQueriesFn(paths), *_ISSUE_TAGS, "ledger")
        docs = (
            rows["by_doc"]
            | "GroupByDoc" >> beam.GroupByKey()
            | "DecideDocs"
            >> beam.ParDo(DecideDocsFn(paths)).with_outputs(*_ISSUE_TAGS, "ledger", "dropped", main="kept")
        )
        by_query = [rows["by_query"], queries.decided, docs.kept]  # marks, kept queries, pairs of accepted docs
        if self.ingest.pairs_file is not None:
            by_query.append(_group(rows["queries"], "Anchors", lambda r: r[2], AnchorConflictsFn(paths)).decided)
        settled = (
            by_query
            | "ByQuery" >> beam.Flatten()
            | "GroupByQuery" >> beam.GroupByKey()
            | "SettleQueries"
            >> beam.ParDo(SettleQueryFn(paths)).with_outputs("pairs", *_ISSUE_TAGS, "ledger", main="queries")
        )
        routed = {
            tag: [d[tag] for d in (docs, settled)]
            | f"Decided{tag.title()}" >> beam.Flatten()
            | f"Route{tag.title()}" >> beam.ParDo(RouteIssuesFn(tag)).with_outputs("notes", main="rows")
            for tag in ("deadletter", "warnings")
        }
        exceptions = (
            [
                docs.dropped | "DropMarks" >> beam.Map(lambda ref: ("drop", *ref)),
                *(
                    routed[tag].notes | f"{tag.title()}Notes" >> beam.Map(lambda note: ("note", *note))
                    for tag in ("deadletter", "warnings")
                ),
            ]
            | "AllExceptions" >> beam.Flatten()
            # without_defaults: an empty input (the usual clean corpus) gives the side input's default instead of
            # the combine's default-injection steps (fewer steps to build and run: a fixed cost, issue 15)
            | "Exceptions" >> beam.CombineGlobally(ExceptionsFn()).without_defaults()
        )
        doc_ranges = [r for r in ranges if r.kind in DOC_KINDS]
        written = pbegin | "DocRanges" >> SpreadRanges(doc_ranges) | "WriteDocParts" >> beam.ParDo(
            WriteDocPartsFn(ranges, self.docs_folder, self.ingest.max_text_chars, self.ingest.max_line_bytes),
            newlines,
            pvalue.AsSingleton(exceptions, default_value={"dropped": {}, "notes": {}}),  # ExceptionsFn of nothing
        ).with_outputs("deadletter", "warnings", main="written")
        issues = {
            "deadletter": [rows.deadletter, queries.deadletter, routed["deadletter"].rows, written.deadletter],
            "warnings": [rows.warnings, queries.warnings, routed["warnings"].rows, written.warnings],
            "ledger": [rows.ledger, queries.ledger, docs.ledger, settled.ledger],
        }
        return {
            "docs_written": written.written,
            "queries": settled.queries,
            "pairs": settled.pairs,
            **{tag: parts | f"Collect{tag.title()}" >> beam.Flatten() for tag, parts in issues.items()},
        }
