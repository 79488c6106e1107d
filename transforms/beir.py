"""Plain (non-Beam) BEIR loader for evaluation and benchmarks: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

The Beam ingest (transforms/ingest.py) is the robust path with dead-letter output; this loader is for
clean reference data and raises on the first bad row, naming file and line.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from schemas.inputs import passage_of


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
    with FileSystems.open(path) as raw:
        for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", newline=""), start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def read_qrels(path: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        fields = line.split("\t")
        if number == 1 and fields[0] in ("query-id", "query_id", "qid"):
            continue
        if len(fields) != 3:
            raise ValueError(f"{path} line {number}: expected query-id<TAB>corpus-id<TAB>score, got {line!r}")
        query_id, doc_id, score = fields[0].strip(), fields[1].strip(), int(fields[2])
        if score > 0:
            qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


def load_beir(beir_dir: str, split: str) -> BeirData:
    paths = check_beir_layout(beir_dir, split)
    qrels = read_qrels(paths["qrels"])
    corpus = {}
    for _, line in _lines(paths["corpus"]):
        row = json.loads(line)
        corpus[str(row["_id"])] = passage_of(row.get("title") or "", row.get("text") or "")
    queries = {}
    for _, line in _lines(paths["queries"]):
        row = json.loads(line)
        if str(row["_id"]) in qrels:
            queries[str(row["_id"])] = row["text"]
    return BeirData(corpus=corpus, queries=queries, qrels={q: d for q, d in qrels.items() if q in queries})
