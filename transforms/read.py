"""Read input files as raw byte lines, each with its location, through Beam FileSystems (local, gs://, ...).

Lines are read as BYTES, never through Beam's UTF-8 text coder: that coder fails the whole pipeline on the
first undecodable byte, while here a bad line becomes one dead-letter row (decoding happens in
transforms/parse.py). Compressed files (.gz, .bz2, ...) are decompressed by FileSystems.open; byte offsets
then count bytes of the decompressed stream.

Reading is bounded: a line longer than max_line_bytes (--max-line-bytes) is never held whole. Its first
KEPT_PREFIX_BYTES are kept (for the dead-letter row's raw column) and the rest is skipped while its length is
counted; parse.py dead-letters it as `line_too_long`.

One reader per file keeps line numbers exact; a Reshuffle afterwards spreads the parsing over workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024  # --max-line-bytes
KEPT_PREFIX_BYTES = 1024  # bytes of an over-long line kept for its dead-letter row
READ_CHUNK_BYTES = 1 << 20


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
        return f"line {self.line} (byte {self.offset})"


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
    offset = 0
    with FileSystems.open(path) as handle:
        for number, (raw, total, over) in enumerate(_raw_lines(handle, max_line_bytes), start=1):
            if limit is not None and yielded >= limit:
                return
            data = _strip_break(raw)
            if over or len(data) > max_line_bytes:
                yield SourceLine(path, number, offset, data[:KEPT_PREFIX_BYTES], too_long=total)
                yielded += 1
            elif data.strip():
                yield SourceLine(path, number, offset, data)
                yielded += 1
            offset += total


class ReadLinesFn(beam.DoFn):
    """(tag, path) -> (tag, SourceLine) for every non-blank line of the file; tag is passed through."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.lines_read = Metrics.counter(self.__class__, "lines_read")
        self.bytes_read = Metrics.counter(self.__class__, "bytes_read")

    def process(self, element: tuple[str, str]):
        tag, path = element
        count = 0
        for line in iter_source_lines(path, max_line_bytes=self.max_line_bytes):
            count += 1
            self.bytes_read.inc(len(line.data))
            yield tag, line
        self.lines_read.inc(count)
        logger.info("read %d non-blank lines from %s", count, path)


class ReadSourceLines(beam.PTransform):
    """PBegin -> PCollection[(tag, SourceLine)] of (tag, path) files, reshuffled so parsing runs in parallel."""

    def __init__(self, sources: list[tuple[str, str]], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        super().__init__()
        self.sources = list(sources)
        self.max_line_bytes = max_line_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "Start" >> beam.Impulse()
            | "FilePaths" >> beam.FlatMap(lambda _, sources: sources, self.sources)  # lighter than Create
            | "ReadLines" >> beam.ParDo(ReadLinesFn(self.max_line_bytes))
            | "SpreadLines" >> beam.Reshuffle()
        )
