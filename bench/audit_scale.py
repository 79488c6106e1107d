"""Benchmark `negforge audit` on a synthetic run of ~1M negative rows with SciFact-like text lengths.

    .venv/bin/python -m bench.audit_scale [--rows 1000000] [--workdir /tmp/negforge-audit-bench] [--keep]

(from the repository root; as a module so `audit` imports from the working tree even before setup.py lists it)

The run: queries with 1 or 2 positives (1 in 4 has two); per pair 3 hard, 2 semi-hard, 1 random and 2
contextual rows, so rows ≈ 8 per pair. Passage lengths are sampled from SciFact's corpus
(data/scifact-sample/corpus.jsonl by default, title + " " + text); texts are slices of one random-word string,
so generating them is cheap. A few judged positives are planted as hard negatives: the audit must find
exactly those. The audit (imports, API end to end and the report with plots) runs in a subprocess; its
wall time, CPU time and peak RSS (the child's VmHWM) are written to bench/results/audit_scale.json.
Goal: under 30 s and 2 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audit.synthetic import write_input, write_manifest
from schemas.inputs import DOCS_SCHEMA, PAIRS_SCHEMA
from schemas.layout import RunLayout
from schemas.negatives import MINED_TIERS, NEGATIVES_SCHEMA, TIER_TYPE, TIERS

try:  # run as a file (python bench/audit_scale.py): bench/ is on sys.path
    from common import write_results
except ImportError:  # run as a module (python -m bench.audit_scale)
    from bench.common import write_results

SCIFACT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "scifact-sample", "corpus.jsonl"
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS_PER_PAIR = {"hard": 3, "semi_hard": 2, "random": 1, "contextual": 2}
PLANTED = 3  # queries whose first hard negative is one of their own positives
CHUNKS = 10  # part files per tier
SEED = 13


def scifact_lengths(path: str = SCIFACT) -> np.ndarray:
    """Character lengths of SciFact passages (title + " " + text)."""
    lengths = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            lengths.append(len(f"{doc.get('title', '')} {doc['text']}".strip()))
    return np.asarray(lengths, dtype=np.int64)  # [docs]


def corpus_texts(rng: np.random.Generator, lengths: np.ndarray, n_docs: int) -> pa.Array:
    """n_docs passages, lengths drawn from `lengths`, cut from one long string of random words."""
    vocabulary = np.array(
        ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 11))) for _ in range(5000)]
    )
    base = " ".join(rng.choice(vocabulary, 800_000))  # ~5 MB
    sizes = rng.choice(lengths, n_docs)  # [n_docs]
    starts = rng.integers(0, len(base) - sizes.max() - 1, n_docs)  # [n_docs]
    return pa.array([base[s : s + n] for s, n in zip(starts.tolist(), sizes.tolist())], pa.string())


def fake_hashes(keys: list[str]) -> pa.Array:
    """16-hex-digit hashes of keys (the audit never recomputes negative hashes; cheap stand-ins)."""
    return pa.array([hashlib.blake2b(k.encode(), digest_size=8).hexdigest() for k in keys], pa.string())


def build_pairs(rng: np.random.Generator, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(pair_query [pairs] sorted, pair_doc [pairs]): 1 in 4 queries has two positives; positives are the
    docs 0..pairs-1, each the positive of one pair, so docs >= pairs are never judged positives."""
    n_pos = 1 + (rng.random(n_queries) < 0.25)  # [queries]
    pair_query = np.repeat(np.arange(n_queries), n_pos)  # [pairs]
    return pair_query, rng.permutation(pair_query.size)


def mined_negatives(rng: np.random.Generator, n_queries: int, first: int, n_docs: int) -> np.ndarray:
    """[queries, mined K] distinct docs per query from first..n_docs-1 (hard, then semi_hard, then random)."""
    k, pool = sum(ROWS_PER_PAIR[t] for t in MINED_TIERS), n_docs - first
    start = rng.integers(0, pool, n_queries)  # [queries]
    return first + (start[:, None] + np.arange(k)[None, :] * (pool // k)) % pool  # [queries, k]


def mined_rows(tier, rng, pair_query, pair_doc, floor, chosen, planted):
    """One mined tier of a chunk: (row_pair [rows], negative_doc [rows], score [rows], rank [rows] | None).

    pair_query is chunk-local (0..queries-1); chosen [queries, mined K] holds every mined negative of each
    query; the tier takes its columns and joins them with each positive of the query.
    """
    k, offset = ROWS_PER_PAIR[tier], sum(ROWS_PER_PAIR[t] for t in MINED_TIERS[: MINED_TIERS.index(tier)])
    negatives = chosen[:, offset : offset + k].copy()  # [queries, k]
    if tier == "hard" and planted:  # plant: the first hard negative of a few queries is their own positive
        first_pair = np.searchsorted(pair_query, np.arange(planted))  # [planted]
        negatives[:planted, 0] = pair_doc[first_pair]
    row_pair = np.repeat(np.arange(pair_query.size), k)  # [rows]
    slot = np.tile(np.arange(k), pair_query.size)  # [rows]
    negative = negatives[pair_query[row_pair], slot]  # [rows]
    low = floor[row_pair]
    if tier == "hard":  # under the 0.05 relative margin; raw ranks with a few guarded-out gaps
        return row_pair, negative, low * 0.95 - rng.uniform(0.0, 0.2, negative.size), slot * 2 + 1
    if tier == "semi_hard":  # inside the band [floor - 0.30, floor - 0.10]
        return row_pair, negative, low - rng.uniform(0.11, 0.29, negative.size), None
    return row_pair, negative, rng.uniform(-0.1, 0.3, negative.size), None


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return pa.array([f"{prefix}{v}" for v in values.tolist()], pa.string())


def chunk_table(tier, rng, chunk, corpus, doc_hashes, queries_text, planted) -> pa.Table:
    """NEGATIVES_SCHEMA rows of one tier for one chunk of queries."""
    pair_query, pair_doc, pos_score, floor, query_offset, chosen = chunk
    if tier == "contextual":
        row_pair = np.repeat(np.arange(pair_query.size), ROWS_PER_PAIR[tier])  # [rows]
        slot = np.tile(np.arange(ROWS_PER_PAIR[tier]), pair_query.size)
        score, rank, negative_doc = pos_score[row_pair] - rng.uniform(0.02, 0.15, row_pair.size), None, None
    else:
        row_pair, negative_doc, score, rank = mined_rows(tier, rng, pair_query, pair_doc, floor, chosen, planted)
    n, positive_doc = row_pair.size, pair_doc[row_pair]
    positive = corpus.take(pa.array(positive_doc))
    if negative_doc is None:
        keys = [f"ctx:d{d}:{s}" for d, s in zip(positive_doc.tolist(), slot.tolist())]
        negative_id, negative, text_hashes = (
            pa.array(keys),
            pc.binary_join_element_wise("No", positive, " "),
            fake_hashes(keys),
        )
        generator = pa.array(np.where(slot == 0, "negation", "nlpaug:antonym"))
        edit, similarity = pa.array(["+ No"] * n), rng.uniform(0.82, 0.99, n)
    else:
        negative_id, negative = _ids("d", negative_doc), corpus.take(pa.array(negative_doc))
        text_hashes = doc_hashes.take(pa.array(negative_doc))
        generator = pa.array(["uniform" if tier == "random" else "faiss:Flat"] * n)
        edit, similarity = pa.nulls(n, pa.string()), rng.uniform(0.2, 0.9, n)
    columns = {
        "query_id": _ids("q", pair_query[row_pair] + query_offset),
        "positive_id": _ids("d", positive_doc),
        "negative_id": negative_id,
        "anchor": queries_text.take(pa.array(pair_query[row_pair] + query_offset)),
        "positive": positive,
        "negative": negative,
        "tier": pa.array([tier] * n, pa.string()).dictionary_encode().cast(TIER_TYPE),
        "rank": pa.nulls(n, pa.int32()) if rank is None else pa.array(rank, pa.int32()),
        "score_positive": pa.array(pos_score[row_pair], pa.float32()),
        "score_negative": pa.array(score, pa.float32()),
        "similarity_to_positive": pa.array(similarity, pa.float32()),
        "generator": generator,
        "edit": edit,
        "negative_text_hash": text_hashes,
        "lexical_overlap": pa.array(rng.uniform(0.0, 0.4, n), pa.float32()),
    }
    return pa.Table.from_pydict(columns, schema=NEGATIVES_SCHEMA)


def write_synthetic_run(run_dir: str, target_rows: int) -> dict:
    """Write the run; returns its input sizes."""
    rng = np.random.default_rng(SEED)
    pairs_wanted = target_rows // sum(ROWS_PER_PAIR.values())
    n_queries, n_docs = int(pairs_wanted / 1.25), max(2 * pairs_wanted, 10_000)
    lengths = scifact_lengths()
    corpus, queries_text = (
        corpus_texts(rng, lengths, n_docs),
        corpus_texts(rng, np.array([60, 90, 120, 160]), n_queries),
    )
    doc_hashes = fake_hashes([f"d{i}" for i in range(n_docs)])
    pair_query, pair_doc = build_pairs(rng, n_queries)
    pos_score = rng.uniform(0.45, 0.9, pair_query.size)  # [pairs]
    floor = np.full(n_queries, np.inf)
    np.minimum.at(floor, pair_query, pos_score)  # lowest positive per query
    layout, rows = RunLayout(run_dir), dict.fromkeys(TIERS, 0)
    bounds = np.linspace(0, n_queries, CHUNKS + 1).astype(int)
    for part, (q0, q1) in enumerate(zip(bounds[:-1], bounds[1:])):
        p0, p1 = np.searchsorted(pair_query, [q0, q1])
        chosen = mined_negatives(rng, q1 - q0, pair_query.size, n_docs)
        chunk = (pair_query[p0:p1] - q0, pair_doc[p0:p1], pos_score[p0:p1], floor[pair_query[p0:p1]], q0, chosen)
        for tier in TIERS:
            table = chunk_table(tier, rng, chunk, corpus, doc_hashes, queries_text, PLANTED if part == 0 else 0)
            path = os.path.join(layout.tier_dir(tier), f"part-{part:05d}-of-{CHUNKS:05d}.parquet")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pq.write_table(table, path)
            rows[tier] += table.num_rows
    ids = _ids("d", np.arange(n_docs))
    docs = pa.Table.from_pydict(
        {"doc_id": ids, "title": pa.array([""] * n_docs), "text": corpus, "passage": corpus, "text_hash": doc_hashes},
        schema=DOCS_SCHEMA,
    )
    write_input(run_dir, "docs", docs)
    pairs = {"query_id": _ids("q", pair_query), "positive_id": _ids("d", pair_doc), "score": np.ones(pair_query.size)}
    write_input(run_dir, "pairs", pa.Table.from_pydict(pairs, schema=PAIRS_SCHEMA))
    write_manifest(run_dir, manifest(rows))
    return {
        "rows": rows,
        "planted_rows": int(np.sum(pair_query < PLANTED)),  # a planted negative is joined with each positive
        "queries": n_queries,
        "pairs": int(pair_query.size),
        "corpus_docs": n_docs,
        "passage_chars_mean": float(np.mean(pc.utf8_length(corpus).to_numpy())),
        "negatives_bytes": folder_bytes(layout.negatives_dir),
    }


def manifest(rows: dict) -> dict:
    config = {
        "mining": {"hard": 3, "semi_hard": 2, "random": 1, "relative_margin": 0.05},
        "contextual": {"per_pair": 2, "similarity_band": [0.80, 0.995]},
    }
    stats = {
        "candidates_seen": 100 * sum(rows.values()),
        "dropped_relative_margin": 1234,
        "dropped_judged_positive": 99,
        "deeper_search_histogram": {"0": 90_000, "1": 9_000, "2": 1_000},
    }
    return {"schema_version": 1, "config": config, "stages": {"mine": {"finished": True, "stats": stats}}}


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


AUDIT_CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from pipelines.audit import main_audit
imported = time.perf_counter()
status = main_audit(sys.argv[1:])
done = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
with open("/proc/self/status") as handle:  # VmHWM: peak RSS of this process since exec (KiB)
    peak_kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
print(json.dumps({"status": status, "import_s": imported - start, "audit_s": done - imported,
                  "peak_kib": peak_kib, "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def time_audit(run_dir: str, report_dir: str) -> dict:
    """Run `negforge audit` in a child process: wall time, and the child's own times, CPU and peak RSS.

    Peak RSS is the child's VmHWM, read by itself: ru_maxrss of children would also count the pages the
    child shared with this (large) parent between fork and exec.
    """
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", AUDIT_CHILD, run_dir, "--report", report_dir],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "wall_s": round(wall, 2),
        "import_s": round(child["import_s"], 2),
        "audit_s": round(child["audit_s"], 2),
        "peak_rss_mb": round(child["peak_kib"] / 1024, 1),
        "cpu_s": round(child["cpu_s"], 2),  # user + system of the child, both cores
        "load_average_1min_after": round(os.getloadavg()[0], 2),  # other work on the machine while it ran
        "exit_status": child["status"],
        "stdout": done.stdout.strip().splitlines()[:-1],
        "stderr_tail": done.stderr.strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="negative rows to generate (about)")
    parser.add_argument("--workdir", default="/tmp/negforge-audit-bench", help="where the synthetic run goes")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic run afterwards")
    args = parser.parse_args(argv)
    run_dir, report_dir = os.path.join(args.workdir, "run"), os.path.join(args.workdir, "report")
    shutil.rmtree(args.workdir, ignore_errors=True)
    start = time.perf_counter()
    sizes = write_synthetic_run(run_dir, args.rows)
    generate_s = time.perf_counter() - start
    figures = time_audit(run_dir, report_dir)
    with open(os.path.join(report_dir, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    figures["violations_found"] = report["violations"]["total"]
    figures["violations_planted"] = 2 * sizes["planted_rows"]  # judged_positive + text_copy_of_positive each
    payload = {
        "inputs": sizes | {"generate_s": round(generate_s, 1)},
        "figures": figures | {"polars_threads": pl.thread_pool_size()},
        "goal": {"wall_s": 30, "peak_rss_mb": 2048},
    }
    command = ["python", "-m", "bench.audit_scale", *(argv if argv is not None else sys.argv[1:])]
    path = write_results("audit_scale", payload, command=command)
    print(json.dumps(payload, indent=2))
    print(f"results: {path}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
