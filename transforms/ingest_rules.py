"""The pure rules of ingest, no Beam: which rows of one id merge or die (duplicates, conflicting texts), which
pairs stand (their doc and query accepted), when a query is written, and the packed tuples the grouped values
travel as. transforms/ingest.py runs them in DoFns; tests call them directly.

Every data row ends in one ledger outcome: accepted, dead_lettered or out_of_split (READ counts rows read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.inputs import passage_of
from schemas.negatives import text_hash
from transforms import parse
from transforms.parse import DocRecord, PairRecord, QueryRecord, RowRef
from transforms.read import location as line_location

ACCEPTED, DEAD_LETTERED, OUT_OF_SPLIT, READ = "accepted", "dead_lettered", "out_of_split", "read"
OUTCOMES = (ACCEPTED, DEAD_LETTERED, OUT_OF_SPLIT)


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


class RecordPacking:
    """Records <-> tuples of plain values: the form in which they cross the ingest GroupByKeys (issue 15).

    Beam's default coder (FastPrimitivesCoder) encodes tuples of str, int, bool and None natively but pickles
    anything else, dataclasses included: a PairRecord costs about 7 us to encode and decode and 260 bytes, the
    same pair packed 1 us and 53 bytes. On 100k qrels pairs crossing two GroupByKeys, pickling was the stage's
    largest single cost. The DoFns pack what they emit and unpack what they receive, so the decision functions
    above keep working on records. A RowRef's source packs as its index in `paths` (the stage's input files).
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = list(paths)
        self.index = {path: i for i, path in enumerate(self.paths)}

    def ref(self, ref: RowRef) -> tuple:
        return self.index[ref.source], ref.line, ref.location, ref.raw

    def unref(self, packed: tuple) -> RowRef:
        source, line, where, raw = packed
        return RowRef(self.paths[source], line, where, raw)

    def pair(self, pair: PairRecord) -> tuple:
        """(query id, doc id, score, source index, line, location, raw)."""
        return pair.query_id, pair.doc_id, pair.score, *self.ref(pair.ref)

    def pair_order(self, packed: tuple) -> tuple[str, int]:
        """A packed pair's (source, line): the order in which the decisions take pairs (_order)."""
        return self.paths[packed[3]], packed[4]

    def unpair(self, packed: tuple) -> PairRecord:
        query_id, doc_id, score, *ref = packed
        return PairRecord(query_id, doc_id, score, self.unref(ref))

    def query(self, query: QueryRecord) -> tuple:
        return query.query_id, query.text, query.identity, query.counted, *self.ref(query.ref)

    def unquery(self, packed: tuple) -> QueryRecord:
        query_id, text, identity, counted, *ref = packed
        return QueryRecord(query_id, text, identity, self.unref(ref), counted)

    def kept(self, kept: Kept) -> tuple:
        return self.query(kept.record), tuple(self.ref(ref) for ref in kept.copies)

    def unkept(self, packed: tuple) -> Kept:
        record, copies = packed
        return Kept(self.unquery(record), tuple(self.unref(ref) for ref in copies))

    @staticmethod
    def mark(mark: DeadMark) -> tuple:
        return mark.reason, mark.detail, mark.derived_only, mark.final

    @staticmethod
    def unmark(packed: tuple) -> DeadMark:
        return DeadMark(*packed)


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
    return pairs_outcome(pairs, _unusable("doc", doc_id, has_doc, marks))


def pairs_outcome(pairs: list[PairRecord], problem: tuple[str, str] | None) -> Outcome:
    """main: (query id, pair) of every pair in row order when problem is None; else every pair dead-lettered."""
    out = Outcome()
    for pair in sorted(pairs, key=lambda p: _order(p.ref)):
        if problem is None:
            out.main.append((pair.query_id, pair))
        else:
            out.reject(pair.ref, *problem)
    return out


@dataclass(frozen=True)
class DocKey:
    """A doc row without its text: all that the id decisions need (resolve_duplicates reads these fields)."""

    identity: str
    counted: bool
    ref: RowRef  # raw is None: WriteDocPartsFn re-reads the line for its rows


def doc_keys(values, paths: list[str]) -> list[DocKey]:
    """DocKeys from the compact tuples ParseRowsFn emits: (identity, counted, source index, line, offset)."""
    return [
        DocKey(identity, counted, RowRef(paths[source], line, line_location(line, offset), None))
        for identity, counted, source, line, offset in values
    ]


def decide_doc_rows(
    doc_id: str, keys: list[DocKey], marks: list[DeadMark]
) -> tuple[Outcome, list[RowRef], tuple[str, str] | None]:
    """Merge the rows of one doc id: (their issues and ledger, refs of the rows not kept, why pairs cannot use
    the doc: (reason, detail), or None when they can). Issue rows come with raw None (see decide_doc)."""
    decided = resolve_duplicates(doc_id, keys, settle_accepted=True) if keys else Outcome()
    kept = decided.main[0][1].record.ref if decided.main else None
    dropped = [key.ref for key in keys if key.ref != kept]
    problem = _unusable("doc", doc_id, kept is not None, marks + [mark for _, mark in decided.dead])
    decided.main, decided.dead = [], []
    return decided, dropped, problem


def decide_doc(
    doc_id: str, keys: list[DocKey], pairs: list[PairRecord], marks: list[DeadMark]
) -> tuple[Outcome, list[RowRef]]:
    """Merge the rows of one doc id and check the pairs that name it; (outcome, refs of the rows not kept).

    outcome.main: (query id, pair) of the pairs whose doc was accepted. The doc rows' issue rows come with
    raw None (the caller routes them to the rows' second read).
    """
    decided, dropped, problem = decide_doc_rows(doc_id, keys, marks)
    checked = pairs_outcome(pairs, problem)
    checked.deadletter[:0] = decided.deadletter
    checked.warnings[:0] = decided.warnings
    checked.ledger[:0] = decided.ledger
    return checked, dropped


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

