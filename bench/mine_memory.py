"""The mine stage alone against corpus size: per-SDK-worker peak RSS on a RUN_DIR written from random vectors.

    python bench/mine_memory.py --docs 40000 160000          # minutes, not hours: no ingest, no embedding
    python bench/mine_memory.py --docs 40000 --trace-bundles  # also each worker bundle's peak (bench/trace_site)
    python bench/mine_memory.py --run-dir RUN_DIR_100K RUN_DIR_400K --workdir DIR   # finished builds (bench/scale.py's
                                             # run-<docs>), read only: the mine stage again, rows compared with theirs

bench/scale.py measures whole builds, where the embed stage takes most of the time; this writes what ingest, embed
and index would leave (random 40-word passages, random unit 384-d doc vectors in 4,096-row Parquet row groups,
2,000 queries each near its one judged doc, a 4-shard Flat index), then runs only the mine stage with
`--direct_running_mode multi_processing --direct_num_workers 2` and samples the resident memory of the runner
process and of each SDK worker (bench/scale.RssSampler: RSS, and apart its anonymous and mapped-file parts).
--run-dir mines finished RUN_DIRs instead (their config: defaults, their index's shard count and factory; outputs
go under --workdir; the rows must equal the RUN_DIR's own negatives/ when the defaults built them).
Prints one JSON line per size; writes bench/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402
from scale import (  # noqa: E402
    MIB,
    QUERIES,
    REPO,
    TARGET_DOCS,
    RssSampler,
    _fit,
    _shards_at,
    store_bytes,
    summarise_trace,
)

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
run_dir, out_dir, num_shards, factory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir="unused", split="train"),
                     index=IndexConfig(num_shards=num_shards, index_factory=factory))
print("stage mine: running", flush=True)
stats = run_mine(config, RunLayout(run_dir), RunLayout(out_dir), sys.argv[5:])
print("rows", stats["rows_per_tier"], flush=True)
"""


def mine(run_dir: str, out_dir: str, trace_dir: str | None) -> dict:
    with open(os.path.join(run_dir, "index", "index.json"), encoding="utf-8") as handle:
        meta = json.load(handle)
    env = dict(os.environ, PYTHONPATH=REPO, NEGFORGE_LOG="INFO")
    if trace_dir:
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "bench", "trace_site"), REPO])
        env["NEGFORGE_BUNDLE_TRACE"] = trace_dir
    command = [sys.executable, "-c", _MINE, run_dir, out_dir, str(meta["num_shards"]), meta["factory"],
               "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
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
    result = {"wall_s": round(time.perf_counter() - started, 1),
              "docs_per_shard": round(meta["ntotal"] / meta["num_shards"]),
              **sampler.peaks("mine"), "rows": next((line for line in tail if line.startswith("rows")), None)}
    if trace_dir:
        result["bundle_trace"] = summarise_trace(trace_dir, {"mine": mine_started}, top=5)["mine"]
    return result


def same_rows(run_dir: str, out_dir: str) -> bool | None:
    """Whether out_dir's negatives equal run_dir's (every column, rows sorted); None when run_dir holds none."""
    import pyarrow.parquet as pq

    def table(folder: str):
        files = sorted(glob.glob(os.path.join(folder, "negatives", "tier=*", "*.parquet")))
        if not files:
            return None
        rows = pq.ParquetDataset(files).read().to_pylist()
        return sorted(rows, key=lambda r: (r["query_id"], r["positive_id"], r["tier"], r["negative_id"]))

    before = table(run_dir)
    return None if before is None else before == table(out_dir)


def extrapolate(runs: list[dict]) -> dict:
    """Worker peaks against docs per shard, to the docs per shard the defaults give at 10M docs (bench/scale.py's
    model: fit(anon) + fit(file), the file part never below the smallest measured plus one whole shard store)."""
    x = [r["docs_per_shard"] for r in runs]
    x_target = TARGET_DOCS / _shards_at(TARGET_DOCS)
    fits = {kind: _fit(x, [r[key] for r in runs], x_target)
            for kind, key in (("rss", "worker_peak_mib"), ("anon", "worker_peak_anon_mib"),
                              ("file", "worker_peak_file_mib"))}
    store_mib_per_doc = max(r["store_bytes"] / r["docs"] for r in runs) / MIB
    one_shard_gb = (min(r["worker_peak_file_mib"] for r in runs) + store_mib_per_doc * x_target) * MIB / 1e9
    file_gb = max(fits["file"]["extrapolated_gb_at_10m"], one_shard_gb)
    return {"fits_by_docs_per_shard": fits, "docs_per_shard_at_10m": round(x_target),
            "anon_gb_at_10m": fits["anon"]["extrapolated_gb_at_10m"], "file_gb_at_10m": round(file_gb, 2),
            "file_floor_one_shard_gb_at_10m": round(one_shard_gb, 2),
            "extrapolated_worker_peak_gb_at_10m": round(max(fits["anon"]["extrapolated_gb_at_10m"] + file_gb,
                                                            fits["rss"]["extrapolated_gb_at_10m"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[40_000, 160_000])
    parser.add_argument("--run-dir", nargs="+", default=None,
                        help="finished RUN_DIRs (read only) to mine again instead of writing random ones")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "negforge-mine-memory"))
    parser.add_argument("--trace-bundles", action="store_true")
    parser.add_argument("--name", default="mine_memory")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    runs = []
    for docs_or_dir in args.run_dir or args.docs:
        if args.run_dir:
            run_dir = docs_or_dir
            with open(os.path.join(run_dir, "index", "index.json"), encoding="utf-8") as handle:
                docs = json.load(handle)["ntotal"]
        else:
            docs, run_dir = docs_or_dir, os.path.join(args.workdir, f"run-{docs_or_dir}")
            if not os.path.exists(os.path.join(run_dir, "index", "index.json")):
                write_run_dir(run_dir, docs)
        out_dir = tempfile.mkdtemp(prefix=f"out-{docs}-", dir=args.workdir)
        trace = os.path.join(args.workdir, f"trace-{docs}-{int(time.time())}") if args.trace_bundles else None
        result = {"docs": docs, "run_dir": run_dir, "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                  "store_bytes": store_bytes(run_dir), **mine(run_dir, out_dir, trace)}
        if args.run_dir:
            result["rows_equal_run_dir"] = same_rows(run_dir, out_dir)
        print(json.dumps({k: v for k, v in result.items() if k != "bundle_trace"}), flush=True)
        runs.append(result)
    print(json.dumps(figures := extrapolate(runs), indent=1))
    write_results(args.name, {"inputs": {"docs": [r["docs"] for r in runs], "queries": QUERIES, "dim": DIM,
                                         "run_dirs": args.run_dir}, "runs": runs, "figures": figures})


if __name__ == "__main__":
    main()
