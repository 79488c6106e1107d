"""Embedding throughput: the Beam embed stage (run_embed) vs plain SentenceTransformer.encode.

Same bundled model, batch size and torch threads; both measured cold (model load included) in one run,
on a fixed SciFact slice: the first N corpus docs in file order (title + " " + text). Prints the figures
and writes bench/results/embed_throughput.json. Goal: Beam docs/s >= 0.9 x plain.

    .venv/bin/python bench/embed_throughput.py [--docs 1000 | --quick] [--batch-size 64] [--threads N]
        [--texts-per-call N] [--beam-arg=--direct_running_mode=multi_processing ...] [--order plain-first]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from common import Timer, write_results  # noqa: E402

from schemas.build_config import BuildConfig, EmbedConfig, IngestConfig  # noqa: E402
from schemas.inputs import DOCS_SCHEMA, QUERIES_SCHEMA, passage_of  # noqa: E402
from schemas.layout import RunLayout  # noqa: E402
from schemas.negatives import text_hash  # noqa: E402
from transforms.model import load_sentence_transformer  # noqa: E402

logger = logging.getLogger("bench.embed_throughput")
DEFAULT_BEIR = os.path.join(ROOT, "data", "scifact-sample")


def load_slice(beir_dir: str, n: int) -> list[dict]:
    """The first n corpus rows in file order, as DOCS_SCHEMA rows."""
    rows = []
    with open(os.path.join(beir_dir, "corpus.jsonl"), encoding="utf-8") as corpus:
        for line in corpus:
            if len(rows) == n:
                break
            doc = json.loads(line)
            passage = passage_of(doc.get("title") or "", doc.get("text") or "")
            rows.append(
                {
                    "doc_id": str(doc["_id"]),
                    "title": doc.get("title") or "",
                    "text": doc.get("text") or "",
                    "passage": passage,
                    "text_hash": text_hash(passage),
                }
            )
    return rows


def token_counts(model, texts: list[str]) -> np.ndarray:
    """Non-padding tokens per text after truncation to the model's max_seq_length (special tokens included)."""
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length, padding=False)
    return np.array([len(ids) for ids in encoded["input_ids"]])


def padded_tokens(lengths: np.ndarray, batch_size: int) -> int:
    """Tokens actually computed when texts are length-sorted and cut into batches (what encode() does)."""
    ordered = np.sort(lengths)[::-1]
    return int(
        sum(
            ordered[i : i + batch_size].max() * len(ordered[i : i + batch_size])
            for i in range(0, len(ordered), batch_size)
        )
    )


def time_plain(texts: list[str], batch_size: int, threads: int) -> tuple[dict, np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    with Timer() as load:
        model = load_sentence_transformer("bundled")
    with Timer() as encode:
        vectors = model.encode_document(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    return {"load_s": load.seconds, "encode_s": encode.seconds, "total_s": load.seconds + encode.seconds}, vectors


def time_beam(
    docs: list[dict], batch_size: int, threads: int, beam_args: list[str], texts_per_call: int | None
) -> tuple[dict, np.ndarray]:
    """run_embed on an inputs/ folder holding the slice (no queries): graph, model load, inference, Parquet."""
    from pipelines.stage_embed import run_embed

    work = tempfile.mkdtemp(prefix="negforge-bench-")
    try:
        run, out = RunLayout(os.path.join(work, "run")), RunLayout(os.path.join(work, "out"))
        for name, schema, rows in (("docs", DOCS_SCHEMA, docs), ("queries", QUERIES_SCHEMA, [])):
            os.makedirs(run.inputs_table(name))
            pq.write_table(pa.Table.from_pylist(rows, schema), os.path.join(run.inputs_table(name), "part-0.parquet"))
        config = BuildConfig(
            output=run.run_dir,
            ingest=IngestConfig(beir_dir=work, split="bench"),
            embed=EmbedConfig(model="bundled", batch_size=batch_size, torch_threads=threads),
        )
        with Timer() as total:
            stats = run_embed(config, run, out, beam_args, texts_per_call=texts_per_call)
        table = pq.read_table(out.embeddings_dir).to_pydict()
        by_id = dict(zip(table["id"], table["vector"]))
        vectors = np.array([by_id[d["doc_id"]] for d in docs], np.float32)  # [n, dim] in slice order
        return {"total_s": total.seconds, "docs_embedded": stats["docs_embedded"]}, vectors
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rates(seconds: float, docs: int, tokens: int) -> dict:
    return {
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", default=DEFAULT_BEIR, help="BEIR folder whose corpus.jsonl is sliced")
    parser.add_argument("--docs", type=int, default=1000, help="first N corpus docs by file order")
    parser.add_argument("--quick", action="store_true", help="--docs 200")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: all cores)")
    parser.add_argument("--texts-per-call", type=int, default=None, help="Beam texts per encode() call")
    parser.add_argument("--beam-arg", action="append", default=[], help="extra Beam flag, e.g. --beam-arg=--runner=X")
    parser.add_argument("--order", choices=("plain-first", "beam-first"), default="plain-first")
    parser.add_argument("--name", default="embed_throughput", help="results file name under bench/results/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    n_docs = 200 if args.quick else args.docs
    threads = args.threads or len(os.sched_getaffinity(0))
    docs = load_slice(args.beir, n_docs)
    texts = [d["passage"] for d in docs]
    counter = load_sentence_transformer("bundled")  # tokenizer only, for token counts (not timed)
    lengths = token_counts(counter, texts)
    tokens = int(lengths.sum())
    del counter

    results = {}
    for path in ("plain", "beam") if args.order == "plain-first" else ("beam", "plain"):
        logger.info("timing %s on %d docs", path, len(docs))
        if path == "plain":
            results["plain"], plain_vectors = time_plain(texts, args.batch_size, threads)
        else:
            per_call = args.texts_per_call
            results["beam"], beam_vectors = time_beam(docs, args.batch_size, threads, args.beam_arg, per_call)

    plain, beam = results["plain"], results["beam"]
    figures = {
        "plain_cold": rates(plain["total_s"], len(docs), tokens),
        "plain_encode_only": rates(plain["encode_s"], len(docs), tokens),
        "plain_model_load_s": round(plain["load_s"], 3),
        "beam_cold": rates(beam["total_s"], len(docs), tokens),
        "ratio_beam_vs_plain_cold": round(plain["total_s"] / beam["total_s"], 3),
        "ratio_beam_vs_plain_encode_only": round(plain["encode_s"] / beam["total_s"], 3),
        "max_abs_vector_diff": float(np.abs(beam_vectors - plain_vectors).max()),
        "docs_embedded_by_beam": beam["docs_embedded"],
    }
    payload = {
        "inputs": {
            "source": os.path.join(args.beir, "corpus.jsonl"),
            "docs": len(docs),
            "selection": "first N rows by file order; passage = title + ' ' + text",
            "non_padding_tokens": tokens,
            "padded_tokens_sorted_batches": padded_tokens(lengths, args.batch_size),
            "mean_tokens_per_doc": round(tokens / len(docs), 1),
        },
        "config": {
            "model": "bundled (all-MiniLM-L6-v2, max_seq_length 256)",
            "batch_size": args.batch_size,
            "torch_threads": threads,
            "texts_per_call": args.texts_per_call or args.batch_size * 16,
            "beam_args": args.beam_arg or ["(DirectRunner defaults)"],
            "order": args.order,
        },
        "figures": figures,
        "notes": "shared machine: other jobs ran at the same time (see machine.load_average_1_5_15); "
        "cold = model load + encode (+ Beam graph, Parquet read/write for beam); tokens_per_s counts non-padding "
        "tokens after truncation",
    }
    path = write_results(args.name, payload)
    print(json.dumps({"results": path, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
