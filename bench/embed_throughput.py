"""Embedding throughput of each backend against this machine's fp32 peak, with nDCG@10 per backend.

On a corpus slice (default: the whole corpus of --beir, SciFact's 5,183 docs for the issue's figures; passage =
title + " " + text; --quick: the positives of the first 40 test queries + other docs up to 300), for every
backend (torch, onnx, onnx-int8) on the CPU, and torch on cuda wherever torch sees a GPU:
  encode      the embed stage's encode path (transforms/embed_encode.py) over the slice after a warm-up (torch
              also A/B against sentence-transformers' `encode_document`): non-padding tokens/s, the FLOP/s
              they stand for (FLOPs per token from the model's config), and that as a fraction of
  peak        a 4096 x 4096 fp32 `torch.matmul` on the same threads, measured in the same run;
  stage       the Beam embed stage (`run_embed`, DirectRunner, cold: model load + graph + Parquet) on the
              slice; the ONNX export is made (and cached) before any timing and reported apart;
  nDCG@10     SciFact test queries against the slice, from the timed vectors (sentence-transformers'
              InformationRetrievalEvaluator; the full slice is the full corpus: torch gives 0.6451);
  cache       the stage run twice more with one fresh --embedding-cache (cold fill, then warm) with
              the fastest CPU backend: warm / cold-fill stage seconds, and model loads in each (warm: 0).
Writes bench/results/embed_throughput[_quick].json (git sha, machine, load average, command, inputs).

    .venv/bin/python bench/embed_throughput.py --beir SCIFACT_DIR    # the issue-14 figures
    .venv/bin/python bench/embed_throughput.py [--quick] [--docs N] [--backends torch,onnx,onnx-int8]
        [--threads N] [--batch-size 64] [--no-stage] [--no-cache-check] [--no-ab] [--ab-docs 300] [--model bundled]
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from common import Timer, write_results  # noqa: E402

logger = logging.getLogger("bench.embed_throughput")
DEFAULT_BEIR = os.path.join(ROOT, "data", "scifact-sample")  # the full corpus: --beir <SciFact folder>
CPU_BACKENDS = ("torch", "onnx", "onnx-int8")


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_qrels(path: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            query_id, doc_id, score = line.strip().split("\t")
            if int(score) > 0:
                qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


def bench_inputs(beir_dir: str, n_docs: int | None, quick_queries: int | None):
    """(corpus doc_id -> passage in slice order, queries, qrels) for the test split.

    n_docs None: the whole corpus and all test queries. Otherwise the positives of the first quick_queries
    test queries (by id) first, then other docs in file order up to n_docs; queries = those quick_queries.
    """
    corpus_rows = read_jsonl(os.path.join(beir_dir, "corpus.jsonl"))
    passages = {str(r["_id"]): ((r.get("title") or "") + " " + (r.get("text") or "")).strip() for r in corpus_rows}
    queries = {str(r["_id"]): r["text"] for r in read_jsonl(os.path.join(beir_dir, "queries.jsonl"))}
    qrels = read_qrels(os.path.join(beir_dir, "qrels", "test.tsv"))
    if n_docs is None:
        return passages, {q: queries[q] for q in qrels if q in queries}, qrels
    keep = sorted(qrels, key=lambda q: (len(q), q))[:quick_queries]
    chosen = list(dict.fromkeys(d for q in keep for d in sorted(qrels[q]) if d in passages))
    chosen += [d for d in passages if d not in set(chosen)][: max(0, n_docs - len(chosen))]
    return {d: passages[d] for d in chosen}, {q: queries[q] for q in keep}, {q: qrels[q] for q in keep}


def matmul_peak(threads: int, size: int = 4096, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a size x size torch.matmul on `threads` threads (best of `repeats` after a warm-up)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        with Timer() as t:
            torch.matmul(a, b)
        best = min(best, t.seconds)
    return 2 * size**3 / best / 1e9


def flops_per_token(config: dict, mean_tokens: float) -> float:
    """Forward FLOPs per token of a BERT-style encoder: 2 x (Q, K, V, O and FFN weights) per layer, plus the
    attention products (QK^T and AV: 4 x seq x hidden per token per layer) at the mean sequence length."""
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    weights = 4 * hidden * hidden + 2 * hidden * inter
    return layers * (2 * weights + 4 * mean_tokens * hidden)


def token_counts(model, texts: list[str]) -> np.ndarray:
    """Non-padding tokens per text after truncation to the model's max_seq_length (special tokens included)."""
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length, padding=False)
    return np.array([len(ids) for ids in encoded["input_ids"]])


def time_encode(model_spec: str, backend: str, device: str, texts: list[str], batch: int, threads: int):
    """Load (export first if needed, timed apart), warm up, then time the embed stage's encode path
    (transforms/embed_encode.encode_texts: one tokenizer call, token-sorted batches of batch x max_seq_length
    tokens) over all texts in RunInference-sized calls."""
    import torch

    from transforms.embed import TEXTS_PER_CALL_FACTOR
    from transforms.embed_encode import encode_texts
    from transforms.model import fuse_linear_gelu, load_sentence_transformer

    torch.set_num_threads(threads)
    with Timer() as load:
        model = load_sentence_transformer(model_spec, device=device, backend=backend, threads=threads)
        if backend == "torch":
            fuse_linear_gelu(model)  # as the embed stage's handler does
    encode_texts(model, texts[:batch], "doc", None, batch)  # warm-up (ORT arena, CUDA context, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    call = batch * TEXTS_PER_CALL_FACTOR  # the handler's texts per RunInference batch
    with Timer() as encode:
        vectors = np.concatenate([encode_texts(model, texts[i : i + call], "doc", None, batch)
                                  for i in range(0, len(texts), call)])  # [n, dim]
    return {"load_s": round(load.seconds, 3), "encode_s": encode.seconds}, vectors, model


def encode_ab(model, model_spec: str, texts: list[str], batch: int, rounds: int = 2) -> dict:
    """negforge's encode path (`model`, as the stage runs it) against sentence-transformers' own encode_document
    on a plain load of the same model, on the same texts, alternated `rounds` times in this process (best of
    each), with the largest difference between their vectors."""
    from transforms.embed_encode import encode_texts
    from transforms.model import load_sentence_transformer

    plain_model = load_sentence_transformer(model_spec)
    best = {"negforge": float("inf"), "sentence_transformers": float("inf")}
    for _ in range(rounds):
        with Timer() as ours:
            mine = encode_texts(model, texts, "doc", None, batch)
        with Timer() as theirs:
            plain = plain_model.encode_document(texts, batch_size=batch, show_progress_bar=False)  # [n, dim]
        best["negforge"] = min(best["negforge"], ours.seconds)
        best["sentence_transformers"] = min(best["sentence_transformers"], theirs.seconds)
    return {"texts": len(texts), "negforge_encode_s": round(best["negforge"], 3),
            "st_encode_document_s": round(best["sentence_transformers"], 3),
            "speedup": round(best["sentence_transformers"] / best["negforge"], 3),
            "max_abs_difference": float(np.abs(mine - plain).max())}


class _ModelLoads(logging.Handler):
    """Counts the embed handler's 'embedding <kind> with <model>' lines: one per model load."""

    def __init__(self):
        super().__init__()
        self.loads = 0

    def emit(self, record):
        if str(record.msg).startswith("embedding %s with"):
            self.loads += 1


def time_stage(model_spec: str, backend: str, corpus: dict[str, str], batch: int, threads: int, cache: str | None):
    """run_embed (DirectRunner, cold) on an inputs/ folder holding the slice; returns (seconds, stats)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.stage_embed import run_embed
    from schemas.build_config import BuildConfig, EmbedConfig, IngestConfig
    from schemas.inputs import DOCS_SCHEMA, QUERIES_SCHEMA
    from schemas.layout import RunLayout
    from schemas.negatives import text_hash

    work = tempfile.mkdtemp(prefix="negforge-bench-")
    try:
        run, out = RunLayout(os.path.join(work, "run")), RunLayout(os.path.join(work, "out"))
        rows = [{"doc_id": d, "title": "", "text": p, "passage": p, "text_hash": text_hash(p)}
                for d, p in corpus.items()]
        for name, schema, table_rows in (("docs", DOCS_SCHEMA, rows), ("queries", QUERIES_SCHEMA, [])):
            os.makedirs(run.inputs_table(name))
            pq.write_table(pa.Table.from_pylist(table_rows, schema), os.path.join(run.inputs_table(name), "p.parquet"))
        config = BuildConfig(
            output=run.run_dir,
            ingest=IngestConfig(beir_dir=work, split="bench"),
            embed=EmbedConfig(model=model_spec, batch_size=batch, torch_threads=threads, backend=backend,
                              embedding_cache=cache),
        )
        with Timer() as total:
            stats = run_embed(config, run, out, [])
        return total.seconds, stats
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ndcg_at_10(corpus: dict[str, str], queries: dict[str, str], qrels, model, vectors: np.ndarray) -> float:
    """nDCG@10 of the timed corpus vectors (slice order = corpus order) with the evaluator's own query encoding."""
    import torch

    from trainer.evaluate import _evaluator, relevant_sets

    evaluator = _evaluator(corpus, queries, relevant_sets(qrels), 64, "bench", None, None)
    scores = evaluator(model, corpus_embeddings=torch.from_numpy(vectors).to(model.device))
    return float(scores[evaluator.primary_metric])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", default=DEFAULT_BEIR, help="BEIR folder (qrels/test.tsv scored)")
    parser.add_argument("--docs", type=int, default=None, help="slice size (default: the whole corpus)")
    parser.add_argument("--quick", action="store_true", help="--docs 300 around the first 40 test queries")
    parser.add_argument("--backends", default=",".join(CPU_BACKENDS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="threads for every backend (default: all cores)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--no-stage", action="store_true", help="skip the Beam embed stage timings")
    parser.add_argument("--no-cache-check", action="store_true", help="skip the embedding-cache rebuild timing")
    parser.add_argument("--ab-docs", type=int, default=300,
                        help="texts for the torch A/B of negforge's encode path vs encode_document (first N)")
    parser.add_argument("--no-ab", action="store_true", help="skip that A/B")
    parser.add_argument("--name", default=None, help="results file name under bench/results/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(sys.argv[1:] if argv is None else argv)
    n_docs = 300 if args.quick and args.docs is None else args.docs
    threads = args.threads or len(os.sched_getaffinity(0))
    load_before = [round(x, 2) for x in os.getloadavg()]
    corpus, queries, qrels = bench_inputs(args.beir, n_docs, 40 if n_docs is not None else None)
    texts = list(corpus.values())
    backends = [b for b in args.backends.split(",") if b]
    runs = [(b, "cpu") for b in backends] + ([("torch", "cuda")] if torch.cuda.is_available() else [])

    from transforms.model import load_sentence_transformer, resolve_model_dir

    with Timer() as export:  # ONNX exports are made once per model content and cached: not part of any timing
        for backend in sorted({b for b in backends if b != "torch"}):
            load_sentence_transformer(args.model, backend=backend, threads=threads)
    counter = load_sentence_transformer(args.model)
    lengths = token_counts(counter, texts)
    tokens = int(lengths.sum())
    with open(os.path.join(resolve_model_dir(args.model), "config.json"), encoding="utf-8") as handle:
        model_config = json.load(handle)
    per_token = flops_per_token(model_config, float(lengths.mean()))
    peak = matmul_peak(threads)
    logger.info("fp32 matmul peak %.1f GFLOP/s on %d threads; %d docs, %d tokens", peak, threads, len(texts), tokens)

    results, reference = {}, None
    for backend, device in runs:
        label = backend if device == "cpu" else f"{backend}@{device}"
        logger.info("timing %s on %d docs", label, len(texts))
        timing, vectors, model = time_encode(args.model, backend, device, texts, args.batch_size, threads)
        tokens_per_s = tokens / timing["encode_s"]
        row = {
            **timing,
            "encode_s": round(timing["encode_s"], 3),
            "docs_per_s": round(len(texts) / timing["encode_s"], 2),
            "tokens_per_s": round(tokens_per_s, 1),
            "gflop_per_s_fp32_equivalent": round(tokens_per_s * per_token / 1e9, 2),
            "fraction_of_fp32_peak": round(tokens_per_s * per_token / 1e9 / peak, 3) if device == "cpu" else None,
            "ndcg@10": round(ndcg_at_10(corpus, queries, qrels, model, vectors), 4),
        }
        if reference is None and backend == "torch":
            reference = vectors
        if backend == "torch" and device == "cpu" and not args.no_ab:
            row["encode_ab_vs_st"] = encode_ab(model, args.model, texts[: args.ab_docs], args.batch_size)
        if reference is not None:
            row["min_cosine_to_torch"] = round(float((vectors * reference).sum(axis=1).min()), 5)
        if not args.no_stage and device == "cpu":
            seconds, stats = time_stage(args.model, backend, corpus, args.batch_size, threads, None)
            row["stage_s"] = round(seconds, 3)
            row["stage_docs_embedded"] = stats["docs_embedded"]
            row["stage_docs_per_s"] = round(stats["docs_embedded"] / seconds, 2)
            row["plain_load_and_encode_over_stage"] = round((timing["load_s"] + timing["encode_s"]) / seconds, 3)
        results[label] = row
        del model

    figures = {"fp32_matmul_peak_gflop_per_s": round(peak, 1), "backends": results}
    if "torch" in results and "onnx-int8" in results:
        torch_row, int8_row = results["torch"], results["onnx-int8"]
        figures["int8_encode_speedup_vs_torch"] = round(torch_row["encode_s"] / int8_row["encode_s"], 3)
        if "stage_s" in torch_row and "stage_s" in int8_row:
            figures["int8_stage_speedup_vs_torch"] = round(torch_row["stage_s"] / int8_row["stage_s"], 3)
        figures["int8_ndcg_loss_vs_torch"] = round(torch_row["ndcg@10"] - int8_row["ndcg@10"], 4)
    if not args.no_stage and not args.no_cache_check:
        fastest = min((b for b in backends if "stage_s" in results.get(b, {})), key=lambda b: results[b]["stage_s"])
        cache = tempfile.mkdtemp(prefix="negforge-bench-cache-")
        loads = _ModelLoads()
        logging.getLogger("transforms.embed").addHandler(loads)
        try:
            fill_s, fill = time_stage(args.model, fastest, corpus, args.batch_size, threads, cache)
            fill_loads, loads.loads = loads.loads, 0
            warm_s, warm = time_stage(args.model, fastest, corpus, args.batch_size, threads, cache)
        finally:
            logging.getLogger("transforms.embed").removeHandler(loads)
            shutil.rmtree(cache, ignore_errors=True)
        figures["cache"] = {
            "backend": fastest, "no_cache_stage_s": results[fastest]["stage_s"], "cold_fill_stage_s": round(fill_s, 3),
            "warm_stage_s": round(warm_s, 3), "warm_texts_embedded": warm["docs_texts_embedded"],
            "warm_over_no_cache": round(warm_s / results[fastest]["stage_s"], 3),
            "warm_over_cold_fill": round(warm_s / fill_s, 3),  # the goal: rebuild / first build with the cache
            "cold_fill_texts_embedded": fill["docs_texts_embedded"],
            "cold_fill_model_loads": fill_loads, "warm_model_loads": loads.loads,
        }
    payload = {
        "inputs": {
            "source": args.beir,
            "docs": len(texts),
            "test_queries": len(queries),
            "selection": "whole corpus" if n_docs is None else
            f"positives of the first 40 test queries, then other docs in file order up to {n_docs}",
            "non_padding_tokens": tokens,
            "mean_tokens_per_doc": round(float(lengths.mean()), 1),
            "flops_per_token": round(per_token),
        },
        "config": {"model": args.model, "batch_size": args.batch_size, "threads": threads,
                   "onnx_export_and_quantize_s": round(export.seconds, 2), "cuda": torch.cuda.is_available()},
        "load_average_1_5_15_before": load_before,
        "figures": figures,
        "notes": "encode = the embed stage's encode path (transforms/embed_encode.py) after a warm-up; "
        "encode_ab_vs_st = that path against sentence-transformers' encode_document on the same texts, "
        "alternated; stage = the Beam embed stage, cold (model load, graph, Parquet), ONNX export excluded "
        "(cached); fraction_of_fp32_peak counts the FLOPs the non-padding tokens need (int8 backends: "
        "fp32-equivalent FLOPs); nDCG of a --quick slice is not comparable to the full corpus' 0.6451",
    }
    name = args.name or ("embed_throughput_quick" if args.quick else "embed_throughput")
    path = write_results(name, payload)
    print(json.dumps({"results": path, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
