"""Input validation of the ingest stage, before any pipeline runs: missing files, wrong layouts, wrong files.

    validate_inputs(config.ingest)   # raises BeirLayoutError, InputLayoutError or FileNotFoundError
"""

from __future__ import annotations

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from schemas.build_config import IngestConfig
from transforms import parse
from transforms.beir import BeirLayoutError, check_beir_layout
from transforms.ingest import input_sources
from transforms.read import iter_source_lines

SNIFF_ROWS = 20  # a file none of whose first rows parses is a layout error, not a few bad rows
_EXPECTED = {
    "docs": 'JSON Lines rows {"_id", "title", "text"} (BEIR corpus.jsonl)',
    "queries": 'JSON Lines rows {"_id", "text"} (BEIR queries.jsonl)',
    "qrels": "a header row, then query-id<TAB>corpus-id<TAB>score rows (BEIR qrels/<split>.tsv)",
    "pairs": 'JSON Lines rows {"query" or "anchor", "positive", optional "query_id", "positive_id"}',
}


class InputLayoutError(ValueError):
    """An input file exists but is not what its flag expects (wrong file, wrong format, no rows)."""


def _check_beir(ingest: IngestConfig) -> None:
    qrels_dir = FileSystems.join(ingest.beir_dir, "qrels")
    if FileSystems.exists(FileSystems.join(ingest.beir_dir, "corpus.jsonl")):
        try:
            found = FileSystems.match([FileSystems.join(qrels_dir, "*.tsv")], limits=[50])[0].metadata_list
        except BeamIOError:  # some file systems raise on a pattern that matches nothing
            found = []
        splits = sorted(m.path.rsplit("/", 1)[-1][: -len(".tsv")] for m in found)
        if splits and ingest.split not in splits:
            raise BeirLayoutError(
                f"{FileSystems.join(qrels_dir, ingest.split + '.tsv')} not found: --split {ingest.split!r} is not "
                f"in {ingest.beir_dir}; splits found: {', '.join(splits)}"
            )
    check_beir_layout(ingest.beir_dir, ingest.split)


def _check_file(path: str, flag: str) -> None:
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{flag} {path} not found; check the path (local or gs://)")
    if FileSystems.exists(FileSystems.join(path, "corpus.jsonl")):
        raise InputLayoutError(f"{flag} {path} is a BEIR folder, not a file; use --beir {path} --split SPLIT instead")


def _sniff(kind: str, path: str, max_chars: int, max_line_bytes: int) -> None:
    """Raise InputLayoutError unless one of the first SNIFF_ROWS rows of `path` parses as `kind`."""
    rows = 0
    for line in iter_source_lines(path, limit=SNIFF_ROWS, max_line_bytes=max_line_bytes):
        rows += 1
        parsed = parse.parse_line(kind, line, max_chars)
        if parsed.records or parsed.out_of_split:
            return
    if rows == 0:
        raise InputLayoutError(f"{path} holds no rows; expected {_EXPECTED[kind]}")
    raise InputLayoutError(
        f"{path}: none of its first {rows} rows is valid; expected {_EXPECTED[kind]} - is it the right file?"
    )


def validate_inputs(ingest: IngestConfig) -> None:
    """Fail fast (before any pipeline runs) when an input file is missing or not in the expected layout."""
    if ingest.beir_dir is not None:
        _check_beir(ingest)
    else:
        _check_file(ingest.pairs_file, "--pairs")
        if ingest.corpus_file is not None:
            _check_file(ingest.corpus_file, "--corpus")
    for kind, path in input_sources(ingest):
        _sniff(kind, path, ingest.max_text_chars, ingest.max_line_bytes)
