"""Read input files as raw byte lines, each with its location, through Beam FileSystems (local, gs://, ...).

Lines are read as BYTES, never through Beam's UTF-8 text coder: that coder fails the whole pipeline on the
first undecodable byte, while here a bad line becomes one dead-letter row (decoding happens in
transforms/parse.py). Compressed files (.gz, .bz2, ...) are decompressed by FileSystems.open; byte offsets
then count bytes of the decompressed stream.

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


@dataclass(frozen=True)
class SourceLine:
    """One non-blank line of an input file."""

    source: str  # the file path as given on the command line
    line: int  # 1-based line number (blank lines are counted, so it matches an editor's)
    offset: int  # byte offset of the line's first byte
    data: bytes  # the line without its line break ("\n" or "\r\n")

    @property
    def location(self) -> str:
        return f"line {self.line} (byte {self.offset})"


def iter_source_lines(path: str, limit: int | None = None) -> Iterator[SourceLine]:
    """Yield the non-blank lines of `path` (at most `limit` of them) with their line number and byte offset."""
    yielded = 0
    offset = 0
    with FileSystems.open(path) as handle:
        number = 0
        while limit is None or yielded < limit:
            raw = handle.readline()
            if not raw:
                return
            number += 1
            data = raw[:-1] if raw.endswith(b"\n") else raw
            if data.endswith(b"\r"):
                data = data[:-1]
            if data.strip():
                yield SourceLine(source=path, line=number, offset=offset, data=data)
                yielded += 1
            offset += len(raw)


class ReadLinesFn(beam.DoFn):
    """(tag, path) -> (tag, SourceLine) for every non-blank line of the file; tag is passed through."""

    def __init__(self) -> None:
        self.lines_read = Metrics.counter(self.__class__, "lines_read")
        self.bytes_read = Metrics.counter(self.__class__, "bytes_read")

    def process(self, element: tuple[str, str]):
        tag, path = element
        count = 0
        for line in iter_source_lines(path):
            count += 1
            self.bytes_read.inc(len(line.data))
            yield tag, line
        self.lines_read.inc(count)
        logger.info("read %d non-blank lines from %s", count, path)


class ReadSourceLines(beam.PTransform):
    """PBegin -> PCollection[(tag, SourceLine)] of (tag, path) files, reshuffled so parsing runs in parallel."""

    def __init__(self, sources: list[tuple[str, str]]) -> None:
        super().__init__()
        self.sources = list(sources)

    def expand(self, pbegin):
        return (
            pbegin
            | "Start" >> beam.Impulse()
            | "FilePaths" >> beam.FlatMap(lambda _, sources: sources, self.sources)  # lighter than Create
            | "ReadLines" >> beam.ParDo(ReadLinesFn())
            | "SpreadLines" >> beam.Reshuffle()
        )
