"""Cut the embedded default sample (data/scifact-sample) from a full SciFact BEIR folder.

Deterministic: the same source gives byte-identical files. Keeps every file in BEIR layout, qrels with
their header and CRLF endings, so the sample exercises the same reader as the full dataset.

    python scripts/make_sample.py SCIFACT_DIR data/scifact-sample    # SCIFACT_DIR: the full BEIR SciFact folder
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

TRAIN_QUERIES = 150
TEST_QUERIES = 60
TOTAL_DOCS = 450


def _key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _read_qrels(path: Path) -> list[tuple[str, str, str]]:
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    return [tuple(line.split("\t")) for line in lines[1:] if line.strip()]


def main(source: str, target: str) -> None:
    src, dst = Path(source), Path(target)
    qrels = {split: _read_qrels(src / "qrels" / f"{split}.tsv") for split in ("train", "test")}
    chosen_queries: dict[str, list[str]] = {}
    for split, count in (("train", TRAIN_QUERIES), ("test", TEST_QUERIES)):
        ids = sorted({q for q, _, _ in qrels[split]}, key=_key)[:count]
        chosen_queries[split] = ids
    wanted = {q for ids in chosen_queries.values() for q in ids}
    positive_docs = {d for split in qrels for q, d, _ in qrels[split] if q in wanted}
    corpus_lines = (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    others = sorted((json.loads(line)["_id"] for line in corpus_lines), key=_key)
    fill = [d for d in others if d not in positive_docs][: max(0, TOTAL_DOCS - len(positive_docs))]
    keep_docs = positive_docs | set(fill)
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    with open(dst / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as out:
        for line in corpus_lines:
            row = json.loads(line)
            if row["_id"] in keep_docs:
                out.write(line + "\n")
    with open(dst / "queries.jsonl", "w", encoding="utf-8", newline="\n") as out:
        for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            if json.loads(line)["_id"] in wanted:
                out.write(line + "\n")
    for split, ids in chosen_queries.items():
        rows = [r for r in qrels[split] if r[0] in set(ids)]
        body = "query-id\tcorpus-id\tscore\r\n" + "".join("\t".join(r) + "\r\n" for r in rows)
        (dst / "qrels" / f"{split}.tsv").write_bytes(body.encode("utf-8"))
    print(f"docs={len(keep_docs)} queries={len(wanted)} "
          + " ".join(f"{s}_qrels={sum(r[0] in set(i) for r in qrels[s])}" for s, i in chosen_queries.items()))


if __name__ == "__main__":
    main(*sys.argv[1:3])
