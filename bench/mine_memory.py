"""The mine stage alone against corpus size: per-SDK-worker peak RSS on a RUN_DIR written from random vectors.

    python bench/mine_memory.py --docs 40000 160000          # minutes, not hours: no ingest, no embedding
    python bench/mine_memory.py --docs 40000 --trace-bundles  # also each worker bundle's peak (bench/trace_site)

bench/scale.py measures whole builds, where the embed stage takes most of the time; this writes what ingest, embed
and index would leave (random 40-word passages, random unit 384-d doc vectors in 4,096-row Parquet row groups,
2,000 queries each near its one judged doc, a 4-shard Flat index), then runs only the mine stage with
`--direct_running_mode multi_processing --direct_num_workers 2` and samples the RSS of the runner process and
of each SDK worker (bench/scale.RssSampler). Prints one JSON line per size; writes bench/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402
from scale import MIB, QUERIES, REPO, RssSampler, linear_fit, summarise_trace  # noqa: E402

DIM = 384
NUM_SHARDS = 4


def write_run_dir(run_dir: str, docs: int, seed: int = 0) -> None:
    """inputs/, embeddings/ and a Flat index/ as the earlier stages would leave them (tests/planted_run.py)."""
    sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
    from planted_run import write_run

    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(20_000)])
    doc_ids = sorted(f"d{i}" for i in range(docs))
    passages = [" ".join(words[rng.integers(0, len(words), 40)]) for _ in range(docs)]
    vectors = rng.standard_normal((docs, DIM), dtype=np.float32)  # [docs, dim]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    positive = [(i * docs) // QUERIES for i in range(QUERIES)]
    queries = vectors[positive] + 0.05 * rng.standard_normal((QUERIES, DIM), dtype=np.float32)  # [q, dim]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    query_ids = [f"q{i}" for i in range(QUERIES)]
    write_run(run_dir, dict(zip(doc_ids, passages)), {q: passages[p][:60] for q, p in zip(query_ids, positive)},
              [(q, doc_ids[p]) for q, p in zip(query_ids, positive)], dict(zip(doc_ids, vectors)),
              dict(zip(query_ids, queries)), NUM_SHARDS)


_MINE = """
import sys
from pipelines.stage_mine import run_mine
from schemas.build_config import BuildConfig, IndexConfig, IngestConfig
from schemas.layout import RunLayout
run_dir, out_dir = sys.argv[1], sys.argv[2]
config = BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir="unused", split="train"),
                     index=IndexConfig(num_shards=NUM_SHARDS))
print("stage mine: running", flush=True)
stats = run_mine(config, RunLayout(run_dir), RunLayout(out_dir), sys.argv[3:])
print("rows", stats["rows_per_tier"], flush=True)
""".replace("NUM_SHARDS", str(NUM_SHARDS))


def mine(run_dir: str, out_dir: str, trace_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, NEGFORGE_LOG="INFO")
    if trace_dir:
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "bench", "trace_site"), REPO])
        env["NEGFORGE_BUNDLE_TRACE"] = trace_dir
    command = [sys.executable, "-c", _MINE, run_dir, out_dir, "--direct_running_mode=multi_processing",
               "--direct_num_workers=2"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = RssSampler(process.pid)
    sampler.stage, mine_started = "mine", time.time()
    sampler.start()
    tail = []
    for line in process.stdout:
        tail = (tail + [line.rstrip()])[-30:]
    process.wait()
    sampler.stop()
    if process.returncode != 0:
        raise RuntimeError("mine failed:\n" + "\n".join(tail))
    workers = sampler.workers.get("mine", {})
    result = {"wall_s": round(time.perf_counter() - started, 1),
              "worker_peak_mib": round(max(workers.values(), default=0) / MIB, 1), "workers_seen": len(workers),
              "runner_peak_mib": round(sampler.runner.get("mine", 0) / MIB, 1),
              "rows": next((line for line in tail if line.startswith("rows")), None)}
    if trace_dir:
        result["bundle_trace"] = summarise_trace(trace_dir, {"mine": mine_started}, top=5)["mine"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[40_000, 160_000])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "negforge-mine-memory"))
    parser.add_argument("--trace-bundles", action="store_true")
    parser.add_argument("--name", default="mine_memory")
    args = parser.parse_args()
    runs = []
    for docs in args.docs:
        run_dir = os.path.join(args.workdir, f"run-{docs}")
        if not os.path.exists(os.path.join(run_dir, "index", "index.json")):
            write_run_dir(run_dir, docs)
        out_dir = tempfile.mkdtemp(prefix=f"out-{docs}-", dir=args.workdir)
        trace = os.path.join(args.workdir, f"trace-{docs}-{int(time.time())}") if args.trace_bundles else None
        result = {"docs": docs, "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                  **mine(run_dir, out_dir, trace)}
        print(json.dumps({k: v for k, v in result.items() if k != "bundle_trace"}), flush=True)
        runs.append(result)
    intercept, slope = linear_fit([r["docs"] for r in runs], [r["worker_peak_mib"] for r in runs])
    figures = {"worker_peak_mib_per_million_docs": round(slope * 1e6, 1), "intercept_mib": round(intercept, 1),
               "extrapolated_worker_peak_gb_at_10m": round((intercept + slope * 1e7) * MIB / 1e9, 2)}
    print(json.dumps(figures))
    write_results(args.name, {"inputs": {"docs": args.docs, "queries": QUERIES, "dim": DIM, "shards": NUM_SHARDS},
                              "runs": runs, "figures": figures})


if __name__ == "__main__":
    main()
