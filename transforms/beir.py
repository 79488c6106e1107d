"""Plain (non-Beam) BEIR loader for evaluation and benchmarks: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

The Beam ingest (transforms/ingest.py) is the robust path with dead-letter output; this loader is for
clean reference data and raises ValueError on the first bad row (invalid UTF-8 or JSON, no `_id`, text UTF-8
cannot encode such as a lone surrogate escape, a non-integer score), naming file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from schemas.inputs import passage_of
from transforms.read import iter_source_lines


class BeirLayoutError(FileNotFoundError):
    """A BEIR folder lacks a file it must have."""


@dataclass(frozen=True)
class BeirData:
    corpus: dict[str, str]  # doc_id -> passage (title + " " + text)
    queries: dict[str, str]  # query_id -> text, only queries with a positive in the split
    qrels: dict[str, dict[str, int]]  # query_id -> {doc_id: score > 0}


def beir_paths(beir_dir: str, split: str) -> dict[str, str]:
    return {
        "corpus": FileSystems.join(beir_dir, "corpus.jsonl"),
        "queries": FileSystems.join(beir_dir, "queries.jsonl"),
        "qrels": FileSystems.join(beir_dir, "qrels", f"{split}.tsv"),
    }


def check_beir_layout(beir_dir: str, split: str) -> dict[str, str]:
    """Return the three paths, or raise BeirLayoutError naming the missing one and the expected layout."""
    paths = beir_paths(beir_dir, split)
    for name, path in paths.items():
        if not FileSystems.exists(path):
            raise BeirLayoutError(
                f"{path} not found: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv "
                f"(split {split!r}); check --beir and --split"
            )
    return paths


def _lines(path: str):
    """(line number, text) of the non-blank lines, read in bounded chunks (transforms/read.py)."""
    for line in iter_source_lines(path):
        if line.too_long:
            raise ValueError(f"{path} line {line.line}: {line.too_long} bytes, over the line limit; {_HINT}")
        try:
            text = line.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} line {line.line}: invalid UTF-8 ({err.reason}); {_HINT}") from None
        yield line.line, text.lstrip("\ufeff") if line.line == 1 else text


_HINT = "`negforge build` dead-letters such rows; this loader needs clean data"


def _row(path: str, number: int, line: str) -> tuple[str, dict]:
    """(id, row) of one JSON Lines row, or ValueError naming the file and line."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError(f"{path} line {number}: not a JSON object; {_HINT}") from None
    if not isinstance(row, dict) or row.get("_id") is None:
        raise ValueError(f"{path} line {number}: expected a JSON object with an \"_id\"; {_HINT}")
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{path} line {number}: text UTF-8 cannot encode (a lone surrogate?); {_HINT}") from None
    return str(row["_id"]), row


def read_qrels(path: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        fields = line.split("\t")
        if number == 1 and fields[0] in ("query-id", "query_id", "qid"):
            continue
        if len(fields) != 3:
            raise ValueError(f"{path} line {number}: expected query-id<TAB>corpus-id<TAB>score, got {line!r}")
        if not fields[2].strip().lstrip("+-").isdigit():
            raise ValueError(f"{path} line {number}: score {fields[2]!r} is not an integer; {_HINT}")
        query_id, doc_id, score = fields[0].strip(), fields[1].strip(), int(fields[2])
        if score > 0:
            qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


def load_beir(beir_dir: str, split: str) -> BeirData:
    paths = check_beir_layout(beir_dir, split)
    qrels = read_qrels(paths["qrels"])
    corpus = {}
    for number, line in _lines(paths["corpus"]):
        doc_id, row = _row(paths["corpus"], number, line)
        corpus[doc_id] = passage_of(row.get("title") or "", row.get("text") or "")
    queries = {}
    for number, line in _lines(paths["queries"]):
        query_id, row = _row(paths["queries"], number, line)
        if query_id in qrels:
            queries[query_id] = row.get("text") or ""
    return BeirData(corpus=corpus, queries=queries, qrels={q: d for q, d in qrels.items() if q in queries})
