"""Read input files as raw byte lines, each with its location, through Beam FileSystems (local, gs://, ...).

Lines are read as BYTES, never through Beam's UTF-8 text coder: that coder fails the whole pipeline on the
first undecodable byte, while here a bad line becomes one dead-letter row (decoding happens in
transforms/parse.py). Compressed files (.gz, .bz2, ...) are decompressed by FileSystems.open; byte offsets
then count bytes of the decompressed stream.

Reading is bounded: a line longer than max_line_bytes (--max-line-bytes) is never held whole. Its first
KEPT_PREFIX_BYTES are kept (for the dead-letter row's raw column) and the rest is skipped while its length is
counted; parse.py dead-letters it as `line_too_long`.

Files are read in byte ranges (plan_ranges: RANGE_BYTES each; a compressed file is one range, it cannot be
sought), so many workers parse one big corpus without any shuffle of its lines: only the small ByteRange
descriptors are reshuffled. A range owns the lines that START inside it (a line may run past its end); line
numbers stay exact because a cheap first pass counts the line breaks of every range (CountRangeLinesFn) and
each range starts numbering after the breaks of the ranges before it (first_line_numbers). When every file is
one range (a small input) there is nothing to count and the pass is not built (line_breaks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024  # --max-line-bytes
KEPT_PREFIX_BYTES = 1024  # bytes of an over-long line kept for its dead-letter row
READ_CHUNK_BYTES = 1 << 20
RANGE_BYTES = 16 << 20  # bytes of an uncompressed file per read range (one Parquet part of docs per range)


def location(line: int, offset: int) -> str:
    """How a row is located in dead-letter and warning rows: 'line N (byte B)'."""
    return f"line {line} (byte {offset})"


@dataclass(frozen=True)
class SourceLine:
    """One non-blank line of an input file."""

    source: str  # the file path as given on the command line
    line: int  # 1-based line number (blank lines are counted, so it matches an editor's)
    offset: int  # byte offset of the line's first byte
    data: bytes  # the line without its line break ("\n" or "\r\n"); an over-long line's first bytes only
    too_long: int = 0  # > 0: the line's full length in bytes, over max_line_bytes (data is only its prefix)

    @property
    def location(self) -> str:
        return location(self.line, self.offset)


def _raw_lines(handle, max_line_bytes: int) -> Iterator[tuple[bytes, int, bool]]:
    """(bytes, total length with the line break, over) per line; over: bytes is only the first KEPT_PREFIX_BYTES.

    Reads fixed-size chunks, so memory stays within max_line_bytes + READ_CHUNK_BYTES whatever the file holds
    (a plain readline() would hold a line of any size; compressed files have no readline(limit)).
    """
    held = max_line_bytes + 2  # room for "\r\n": the limit applies to the line without its break
    pending = bytearray()  # the current line so far (at most `held` bytes)
    over = 0  # > 0: the current line is over the limit; its bytes counted so far
    prefix = b""
    while True:
        data = handle.read(READ_CHUNK_BYTES)
        if not data:
            break
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline + 1
            if not pending and not over and newline >= 0 and end - start <= held:
                yield data[start:end], end - start, False  # the common case: a whole line inside the chunk
                start = end
                continue
            if over:
                over += end - start
                if len(prefix) < KEPT_PREFIX_BYTES:
                    prefix += data[start : min(end, start + KEPT_PREFIX_BYTES - len(prefix))]
            elif len(pending) + end - start > held:
                over = len(pending) + end - start
                prefix = (bytes(pending) + data[start : min(end, start + KEPT_PREFIX_BYTES)])[:KEPT_PREFIX_BYTES]
                pending.clear()
            else:
                pending += data[start:end]
            start = end
            if newline >= 0:
                yield (prefix, over, True) if over else (bytes(pending), len(pending), False)
                pending.clear()
                over, prefix = 0, b""
    if over:
        yield prefix, over, True
    elif pending:
        yield bytes(pending), len(pending), False


def _strip_break(raw: bytes) -> bytes:
    data = raw[:-1] if raw.endswith(b"\n") else raw
    return data[:-1] if data.endswith(b"\r") else data


def iter_source_lines(
    path: str, limit: int | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[SourceLine]:
    """Yield the non-blank lines of `path` (at most `limit` of them) with their line number and byte offset.

    A line longer than max_line_bytes (without its line break) is yielded with too_long set to its length
    (line break included) and only its first KEPT_PREFIX_BYTES as data; it is never blank, whatever its bytes.
    """
    yielded = 0
    for line in iter_range_lines(path, 0, None, 1, max_line_bytes):
        if limit is not None and yielded >= limit:
            return
        yield line
        yielded += 1


class _Prefixed:
    """A read() stream: `head` first, then the rest of `handle` (the bytes after a range's skipped partial line)."""

    def __init__(self, head: bytes, handle) -> None:
        self.head, self.handle = head, handle

    def read(self, size: int) -> bytes:
        if self.head:
            head, self.head = self.head, b""
            return head
        return self.handle.read(size)


def _skip_partial_line(handle, start: int) -> tuple[int, bytes] | None:
    """Seek to start - 1 and skip to just after the next line break; (offset reached, bytes read past it).

    None when no line starts at or after `start`. Reads in chunks: the skipped line is never held whole.
    """
    handle.seek(start - 1)
    offset = start - 1
    while True:
        data = handle.read(READ_CHUNK_BYTES)
        if not data:
            return None
        newline = data.find(b"\n")
        if newline >= 0:
            return offset + newline + 1, data[newline + 1 :]
        offset += len(data)


def iter_range_lines(
    path: str, start: int, end: int | None, first_line: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[SourceLine]:
    """The non-blank lines of `path` that start in bytes [start, end) (end None: to the end of the file).

    first_line is the number of the first line starting at or after `start` (1 when start is 0; else
    2 + the line breaks in bytes [0, start - 1), see first_line_numbers). Same rows as iter_source_lines.
    """
    with FileSystems.open(path) as handle:
        offset, stream = 0, handle
        if start > 0:
            skipped = _skip_partial_line(handle, start)
            if skipped is None:
                return
            offset, head = skipped
            stream = _Prefixed(head, handle)
        for number, (raw, total, over) in enumerate(_raw_lines(stream, max_line_bytes), start=first_line):
            if end is not None and offset >= end:
                return
            data = _strip_break(raw)
            if over or len(data) > max_line_bytes:
                yield SourceLine(path, number, offset, data[:KEPT_PREFIX_BYTES], too_long=total)
            elif data.strip():
                yield SourceLine(path, number, offset, data)
            offset += total


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of one input file (end None: to its end); rows are the lines starting inside."""

    index: int  # position among all planned ranges
    source: int  # position of the file in the sources list
    kind: str  # row kind of the file (docs, queries, qrels, pairs)
    path: str
    start: int
    end: int | None

    def newline_span(self) -> tuple[int, int]:
        """Bytes whose line breaks this range contributes to the numbering of the ranges after it."""
        return max(self.start - 1, 0), self.end - 1


def plan_ranges(sources: list[tuple[str, str]], range_bytes: int | None = None) -> list[ByteRange]:
    """Split each (kind, path) into ranges of about range_bytes (RANGE_BYTES); compressed files are one range.

    Runs when the pipeline is built (file sizes from FileSystems.match), so the plan, and the names of the
    parts written per range, do not depend on the runner.
    """
    range_bytes = range_bytes or RANGE_BYTES
    ranges: list[ByteRange] = []
    for source, (kind, path) in enumerate(sources):
        compressed = CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED
        size = 0 if compressed else FileSystems.get_filesystem(path).size(path)
        starts = list(range(0, size, range_bytes)) or [0]
        for i, begin in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else None
            ranges.append(ByteRange(len(ranges), source, kind, path, begin, end))
    return ranges


def count_newlines(path: str, begin: int, end: int) -> int:
    """Line breaks in bytes [begin, end) of an uncompressed file."""
    count = 0
    with FileSystems.open(path) as handle:
        handle.seek(begin)
        left = end - begin
        while left > 0:
            data = handle.read(min(READ_CHUNK_BYTES, left))
            if not data:
                break
            count += data.count(b"\n")
            left -= len(data)
    return count


def first_line_numbers(ranges: list[ByteRange], newlines: dict[int, int]) -> dict[int, int]:
    """{range index: number of its first line} from {range index: count_newlines over its newline_span}."""
    firsts, before = {}, {}
    for piece in sorted(ranges, key=lambda r: (r.source, r.start)):
        seen = before.get(piece.source, 0)
        firsts[piece.index] = 1 if piece.start == 0 else 2 + seen
        if piece.end is not None:
            before[piece.source] = seen + newlines[piece.index]
    return firsts


class CountRangeLinesFn(beam.DoFn):
    """ByteRange -> (index, line breaks in its newline_span); the last range of a file needs no count."""

    def process(self, piece: ByteRange):
        if piece.end is not None:
            yield piece.index, count_newlines(piece.path, *piece.newline_span())


def read_range(ranges: list[ByteRange], piece: ByteRange, newlines: dict, max_line_bytes: int) -> Iterator[SourceLine]:
    """The non-blank lines starting in `piece`, one of `ranges`, numbered from `newlines` (line_breaks).

    A function, not a DoFn of its own: the parser reads its range itself, so no line passes from one step to
    the next through the runner (issue 15: that hop was a fixed cost per line).
    """
    first = first_line_numbers(ranges, newlines)[piece.index]
    count = 0
    for line in iter_range_lines(piece.path, piece.start, piece.end, first, max_line_bytes):
        count += 1
        yield line
    logger.info("read %d non-blank lines from %s bytes %d-%s", count, piece.path, piece.start, piece.end or "end")


class SpreadRanges(beam.PTransform):
    """PBegin -> PCollection[ByteRange], grouped by index so the ranges spread over workers (only they are shuffled).

    Each pass over the files (line-break counts, parsing, writing) starts its own: a pass whose side input is
    computed from another pass's ranges must not consume the same PCollection, or the local runner fuses them
    into one stage that waits on itself ("watermark-pending bundles did not execute").
    """

    def __init__(self, ranges: list[ByteRange]) -> None:
        super().__init__()
        self.ranges = list(ranges)

    def expand(self, pbegin):
        # A GroupByKey on the range index spreads and unfuses the ranges as beam.Reshuffle does, in 4 steps
        # instead of its 7 (the ranges live in the global window: no timestamps to keep); steps are a fixed
        # cost of building and running the pipeline (issue 15)
        return (
            pbegin
            | "Start" >> beam.Impulse()
            | "Ranges" >> beam.FlatMap(lambda _, ranges: [(r.index, r) for r in ranges], self.ranges)
            | "Spread" >> beam.GroupByKey()
            | "Unkey" >> beam.FlatMap(lambda indexed: indexed[1])
        )


class CountLineBreaks(beam.PTransform):
    """PBegin -> singleton {range index: line breaks in its newline_span}: the side input of every pass that
    reads the ranges (read_range)."""

    def __init__(self, ranges: list[ByteRange]) -> None:
        super().__init__()
        self.ranges = [r for r in ranges if r.end is not None]  # the last range of a file needs no count

    def expand(self, pbegin):
        return (
            pbegin
            | "CountRanges" >> SpreadRanges(self.ranges)
            | "Count" >> beam.ParDo(CountRangeLinesFn())
            | "ByRange" >> beam.combiners.ToDict()
        )


def line_breaks(pbegin, ranges: list[ByteRange]):
    """What numbers the lines of `ranges`, as an extra argument of the ParDos that read them ({range index: line
    breaks in its newline_span}): a side input computed by CountLineBreaks or, when every file is one range, {}.

    One range per file (a small input) needs no count: each range's lines number from 1. Skipping the pass then
    saves its Impulse, Reshuffle and combine stages, a fixed cost of the local runner (issue 15).
    """
    if all(piece.end is None for piece in ranges):
        return {}
    return pvalue.AsSingleton(pbegin | "CountLineBreaks" >> CountLineBreaks(ranges))
