"""Sharded index at scale: build time, search time (k=100), recall of IVF vs exact, memory per shard worker.

    python bench/index_scale.py            # 1M x 384 docs, 10k queries, 8 shards, Flat and IVF1024,PQ32
    python bench/index_scale.py --quick    # 100k docs, 1k queries

Synthetic clustered unit vectors (embeddings cluster; uniform vectors on the sphere would be a worst case no
IVF index is built for). The build and search call the code the index stage and SearchShardFn call
(transforms.index: shard_of, sample_priority, train_index, build_shard, write_shard;
transforms.shard_search.ShardSearcher; transforms.topk.merge_topk), without Beam. Each shard is built and
searched in its own subprocess, so its peak RSS is what one worker holding one shard needs.
Writes bench/results/index_scale.json (or index_scale_quick.json).
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

from schemas.build_config import IndexConfig  # noqa: E402
from schemas.layout import RunLayout  # noqa: E402
from transforms import index as ix  # noqa: E402
from transforms.shard_search import ShardSearcher  # noqa: E402
from transforms.topk import merge_topk  # noqa: E402

MIB = 2**20
BLOCK = 4096  # rows per DocBlock, like IndexConfig.block_size
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # OpenMP threads spinning on a shared, loaded machine cost 3x


def memory_mib() -> dict:
    """Current anonymous / file-backed RSS and the peak RSS (VmHWM) of this process, in MiB.

    VmHWM, not getrusage's ru_maxrss: a subprocess's ru_maxrss starts at its parent's RSS at fork time.
    """
    status = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("RssAnon", "RssFile", "VmHWM")):
                name, value, _ = line.split()
                status[name.rstrip(":")] = round(int(value) / 1024, 1)
    status["peak_rss"] = status.pop("VmHWM")
    return status


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so the peak excludes imports; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def doc_ids(rows: np.ndarray) -> np.ndarray:
    return np.array([f"d{i:08d}" for i in rows], dtype=object)  # str objects, like the pipeline's DocBlocks


def make_data(workdir: str, docs: int, queries: int, dim: int, seed: int) -> dict:
    """docs.npy / queries.npy: unit vectors around docs // 100 random centres, cos(doc, centre) ~ 0.7.

    Calibrated so a query's mean top-1 / top-100 cosine is ~0.57 / ~0.33 (measured at 100k docs): neighbours
    spread over several clusters, so IVF recall is not trivially 1."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, docs // 100), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for name, count in (("docs", docs), ("queries", queries)):
        out = np.lib.format.open_memmap(os.path.join(workdir, f"{name}.npy"), "w+", np.float32, (count, dim))
        for start in range(0, count, 65536):
            n = min(65536, count - start)
            x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim), np.float32) / np.sqrt(dim)
            out[start : start + n] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
    return {"centres": len(centres), "noise": "N(0, 1/dim) per component added to a unit centre, renormalised"}


# --- subprocess workers: one shard (or the training) per process ------------------------------------------------


def worker_train(job: dict) -> dict:
    docs = np.load(os.path.join(job["workdir"], "docs.npy"), mmap_mode="r")
    reset_peak()
    started = time.perf_counter()
    ids = doc_ids(np.arange(len(docs)))
    everything = ix.DocBlock(ids, docs, ids)  # memory-mapped: take() reads only the sampled rows
    _, sample = ix.keep_lowest_priority(ix.sample_priority(ids, job["seed"]), everything, job["train_sample"])
    sampled = time.perf_counter()
    trained = ix.train_index(job["factory"], docs.shape[1], sample)
    with open(os.path.join(job["run_dir"], "trained.bin"), "wb") as handle:
        handle.write(trained)
    done = time.perf_counter()
    return {"sample_s": sampled - started, "train_s": done - sampled, "trained_on": len(sample), **memory_mib()}


def read_rows(path: str, rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Rows of a 2-D float32 .npy read with plain file reads (not mapped), like blocks arriving from a shuffle."""
    mapped = np.load(path, mmap_mode="r")
    offset, (count, dim) = mapped.offset, mapped.shape
    del mapped
    out = np.empty((len(rows), dim), np.float32)  # [len(rows), dim]
    with open(path, "rb") as handle:
        for start in range(0, count, chunk):
            wanted = np.flatnonzero((rows >= start) & (rows < start + chunk))
            if wanted.size:
                handle.seek(offset + start * dim * 4)
                block = np.fromfile(handle, np.float32, min(chunk, count - start) * dim).reshape(-1, dim)
                out[wanted] = block[rows[wanted] - start]
    return out


def worker_build(job: dict) -> dict:
    rows = np.flatnonzero(np.load(os.path.join(job["workdir"], "shards.npy")) == job["shard"])
    baseline = {**memory_mib(), "peak_reset": reset_peak()}
    with open(os.path.join(job["run_dir"], "trained.bin"), "rb") as handle:
        trained = handle.read()
    started = time.perf_counter()
    vectors = read_rows(os.path.join(job["workdir"], "docs.npy"), rows)  # [n, dim]
    # the shard's DocBlocks as FillShardFn receives them from the GroupByKey when the runner hands the group
    # over as a list (held while the shard is filled; a runner that pages the group holds one block at a time)
    parts = [
        ix.DocBlock(doc_ids(rows[a : a + BLOCK]), vectors[a : a + BLOCK], doc_ids(rows[a : a + BLOCK]))
        for a in range(0, len(rows), BLOCK)
    ]  # views: together they hold the shard's vectors once
    dim = vectors.shape[1]
    loaded = time.perf_counter()
    index, shard = ix.build_shard(trained, parts, dim)  # streams the parts into one array (Flat: the index's)
    del parts, vectors
    stats = ix.write_shard(RunLayout(job["run_dir"]), job["shard"], job["num_shards"], index, shard)
    done = time.perf_counter()
    return {**stats, "parts_s": loaded - started, "fill_write_s": done - loaded, "baseline": baseline, **memory_mib()}


def worker_search(job: dict) -> dict:
    queries = np.load(os.path.join(job["workdir"], "queries.npy"))
    baseline = {**memory_mib(), "peak_reset": reset_peak()}
    started = time.perf_counter()
    searcher = ShardSearcher.load(RunLayout(job["run_dir"]), job["shard"], job["num_shards"], job["nprobe"])
    loaded = time.perf_counter()
    scores, local = [], []
    for start in range(0, len(queries), job["query_block"]):
        s, i = searcher.search(queries[start : start + job["query_block"]], job["k"])
        scores.append(s)
        local.append(i)
    done = time.perf_counter()
    out = os.path.join(job["run_dir"], f"result-{job['shard']:05d}.npz")
    np.savez(out, scores=np.concatenate(scores), local=np.concatenate(local))
    return {"load_s": loaded - started, "search_s": done - loaded, "baseline": baseline, **memory_mib()}


def run_worker(mode: str, job: dict) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--job", json.dumps(job)]
    env = {**os.environ, **WORKER_ENV}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- driver -------------------------------------------------------------------------------------------------------


def build_and_search(args, workdir: str, factory: str) -> dict:
    run_dir = os.path.join(workdir, factory.replace(",", "_"))
    os.makedirs(os.path.join(run_dir, "index"), exist_ok=True)
    base = {"workdir": workdir, "run_dir": run_dir, "num_shards": args.shards, "factory": factory}
    config = IndexConfig(
        num_shards=args.shards, index_factory=factory, nprobe=args.nprobe, train_sample=args.train_sample
    )
    ix.validate_index_config(config, args.dim)
    if ix.make_index(factory, args.dim).is_trained:
        train = {"train_s": 0.0, "trained_on": 0}
        with open(os.path.join(run_dir, "trained.bin"), "wb") as handle:
            handle.write(ix.train_index(factory, args.dim, ix.concat_blocks([], args.dim)))
    else:
        train = run_worker("train", {**base, "seed": args.seed, "train_sample": args.train_sample})
    print(f"[{factory}] trained: {train}", flush=True)
    builds = [run_worker("build", {**base, "shard": s}) for s in range(args.shards)]
    print(f"[{factory}] built {args.shards} shards, max peak RSS {max(b['peak_rss'] for b in builds)} MiB", flush=True)
    ix.write_index_meta(RunLayout(run_dir), ix.index_meta(config, args.dim, builds, train["trained_on"], args.seed))
    job = {**base, "nprobe": args.nprobe, "k": args.k, "query_block": args.query_block}
    searches = [run_worker("search", {**job, "shard": s}) for s in range(args.shards)]
    print(f"[{factory}] searched, total {sum(s['search_s'] for s in searches):.1f} s", flush=True)
    merged = merge_results(RunLayout(run_dir), args.shards, args.k)
    files = {
        "index_bytes": sum(
            os.path.getsize(RunLayout(run_dir).shard_index(s, args.shards)) for s in range(args.shards)
        ),
        "store_bytes": sum(
            os.path.getsize(RunLayout(run_dir).shard_store(s, args.shards)) for s in range(args.shards)
        ),
    }
    return {"factory": factory, "train": train, "build": builds, "search": searches, "files": files, "merged": merged}


def merge_results(run: RunLayout, num_shards: int, k: int) -> list[np.ndarray]:
    per_shard = []
    for shard in range(num_shards):
        result = np.load(os.path.join(run.run_dir, f"result-{shard:05d}.npz"))
        ids = ShardSearcher.load(run, shard, num_shards, 1).doc_ids
        per_shard.append((result["scores"], result["local"], ids))
    merged = []
    for q in range(len(per_shard[0][0])):
        parts = [(s[q][i[q] >= 0], ids[i[q][i[q] >= 0]]) for s, i, ids in per_shard]
        merged.append(merge_topk(parts, k)[1])
    return merged


def recall_at_k(approx: list[np.ndarray], exact: list[np.ndarray]) -> float:
    return float(np.mean([len(set(a.tolist()) & set(e.tolist())) / max(1, len(e)) for a, e in zip(approx, exact)]))


def flat_matches_brute_force(workdir: str, merged: list[np.ndarray], k: int, sample: int = 20) -> bool:
    """The sharded Flat top-k of a few queries equals a float64 brute force over all docs, (-score, id) order."""
    docs = np.load(os.path.join(workdir, "docs.npy"), mmap_mode="r")
    queries = np.load(os.path.join(workdir, "queries.npy"))[:sample].astype(np.float64)
    scores = np.zeros((len(queries), len(docs)), np.float32)
    for start in range(0, len(docs), 65536):
        chunk = np.asarray(docs[start : start + 65536], dtype=np.float64)
        scores[:, start : start + len(chunk)] = (chunk @ queries.T).T  # [sample, chunk]
    ids = doc_ids(np.arange(len(docs)))
    for q in range(len(queries)):
        top = np.argpartition(-scores[q], k + 50)[: k + 50]
        scores_top, ids_top = merge_topk([(scores[q][top], ids[top])], k)
        if ids_top.tolist() != merged[q].tolist():
            return False
    return True


def per_shard_summary(result: dict, docs_per_shard: float, dim: int) -> dict:
    """Bytes per vector on disk and what one shard worker holds: a fixed part and a part that grows with n."""
    ntotal = sum(b["ntotal"] for b in result["build"])
    shard_vector_mib = docs_per_shard * 4 * dim / MIB
    build_growth = max(b["peak_rss"] - b["baseline"]["RssAnon"] - b["baseline"]["RssFile"] for b in result["build"])
    search_anon = max(s["RssAnon"] - s["baseline"]["RssAnon"] for s in result["search"])
    search_file = max(s["RssFile"] - s["baseline"]["RssFile"] for s in result["search"])
    return {
        "index_bytes_per_vector": round(result["files"]["index_bytes"] / ntotal, 1),
        "store_bytes_per_vector": round(result["files"]["store_bytes"] / ntotal, 1),
        "process_baseline_mib": max(b["baseline"]["RssAnon"] + b["baseline"]["RssFile"] for b in result["build"]),
        "build_peak_over_baseline_mib": round(build_growth, 1),
        "build_peak_in_shard_vector_sizes": round(build_growth / shard_vector_mib, 2),
        "search_private_over_baseline_mib": round(search_anon, 1),
        "search_page_cache_mib": round(search_file, 1),
        "search_page_cache_bytes_per_vector": round(search_file * MIB / docs_per_shard, 1),
    }


def extrapolate(model: dict, dim: int, docs: int, shard_counts=(8, 16, 32)) -> dict:
    """Per-worker memory at `docs` docs: build and page cache grow with n = docs / shards; the private memory of
    a search worker is its fixed working set (query block, candidates, re-scoring buffers), the index being mapped."""
    out = {}
    for shards in shard_counts:
        n = docs / shards
        build = model["process_baseline_mib"] + model["build_peak_in_shard_vector_sizes"] * n * 4 * dim / MIB
        private = model["process_baseline_mib"] + model["search_private_over_baseline_mib"]
        out[f"{shards}_shards"] = {
            "docs_per_shard": int(n),
            "build_worker_peak_gib": round(build / 1024, 2),
            "search_worker_private_gib": round(private / 1024, 2),
            "search_worker_page_cache_gib": round(model["search_page_cache_bytes_per_vector"] * n / 2**30, 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k docs, 1k queries")
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--ivf-factory", default="IVF1024,PQ32")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--train-sample", type=int, default=100_000)
    parser.add_argument("--query-block", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed after)")
    parser.add_argument("--worker", choices=("train", "build", "search"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps({"train": worker_train, "build": worker_build, "search": worker_search}[args.worker](
            json.loads(args.job))))  # fmt: skip
        return 0
    if args.quick:
        args.docs, args.queries = 100_000, 1_000
    scratch = tempfile.TemporaryDirectory(prefix="negforge-index-scale-") if args.workdir is None else None
    workdir = args.workdir or scratch.name
    os.makedirs(workdir, exist_ok=True)
    started = time.perf_counter()
    data = make_data(workdir, args.docs, args.queries, args.dim, args.seed)
    np.save(os.path.join(workdir, "shards.npy"), ix.shard_of(doc_ids(np.arange(args.docs)), args.shards))
    print(f"data ready in {time.perf_counter() - started:.1f} s", flush=True)
    exact = build_and_search(args, workdir, "Flat")
    approx = build_and_search(args, workdir, args.ivf_factory)
    report = summarise(args, data, exact, approx, flat_matches_brute_force(workdir, exact["merged"], args.k))
    default_sizes = (args.docs, args.queries, args.dim, args.shards) == (1_000_000, 10_000, 384, 8)
    name = "index_scale_quick" if args.quick else "index_scale" if default_sizes else "index_scale_custom"
    path = write_results(name, report)
    print(json.dumps(report["figures"], indent=2))
    print(report["memory_model"]["text"])
    print(f"wrote {path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


def summarise(args, data: dict, exact: dict, approx: dict, flat_ok: bool) -> dict:
    docs_per_shard = args.docs / args.shards
    figures = {}
    for result in (exact, approx):
        builds, searches = result["build"], result["search"]
        figures[result["factory"]] = {
            "train_s": round(result["train"]["train_s"], 2),
            "build_s_sequential_shards": round(result["train"]["train_s"] + sum(b["fill_write_s"] for b in builds), 2),
            "build_s_slowest_shard": round(max(b["fill_write_s"] for b in builds), 2),
            "search_s_sequential_shards": round(sum(s["search_s"] for s in searches), 2),
            "search_s_slowest_shard": round(max(s["search_s"] for s in searches), 2),
            "queries_per_s_per_shard_worker": round(args.queries / np.mean([s["search_s"] for s in searches]), 1),
            "shard_load_s_max": round(max(s["load_s"] for s in searches), 3),
            "build_peak_rss_mib_max": max(b["peak_rss"] for b in builds),
            "search_peak_rss_mib_max": max(s["peak_rss"] for s in searches),
            "memory": per_shard_summary(result, docs_per_shard, args.dim),
        }
    recall = recall_at_k(approx["merged"], exact["merged"])
    figures[args.ivf_factory]["recall_at_k_vs_exact"] = round(recall, 4)
    figures["Flat"]["matches_float64_brute_force_on_20_queries"] = flat_ok
    model = {f: extrapolate(figures[f]["memory"], args.dim, 10_000_000) for f in ("Flat", args.ivf_factory)}
    return {
        "inputs": {
            "docs": args.docs,
            "queries": args.queries,
            "dim": args.dim,
            "shards": args.shards,
            "k": args.k,
            "ivf_factory": args.ivf_factory,
            "nprobe": args.nprobe,
            "train_sample": args.train_sample,
            "query_block": args.query_block,
            "data": data,
        },  # fmt: skip
        "figures": figures,
        "memory_model": {"extrapolated_10m_docs": model, "text": memory_text(figures, model, args)},
    }


def memory_text(figures: dict, model: dict, args) -> str:
    flat, ivf = figures["Flat"]["memory"], figures[args.ivf_factory]["memory"]
    lines = [
        f"Memory model per shard (dim {args.dim}, n = docs per shard; measured: {args.docs:,} docs in {args.shards} "
        f"shards, {args.docs // args.shards:,} per shard; process baseline ~{flat['process_baseline_mib']:.0f} MiB):",
        f"- Files: Flat index {flat['index_bytes_per_vector']} B/vector (4*dim); {args.ivf_factory} index "
        f"{ivf['index_bytes_per_vector']} B/vector (codes + 8-byte ids + lists); exact store "
        f"{flat['store_bytes_per_vector']} B/vector (float32 vectors, doc id, text hash).",
        f"- Build worker (FillShardFn): baseline + {flat['build_peak_in_shard_vector_sizes']} x n*4*dim for Flat "
        f"(grouped parts held as a list + the index's own array, which build_shard fills in doc_id order), "
        f"{ivf['build_peak_in_shard_vector_sizes']} x n*4*dim for {args.ivf_factory} (parts + the sorted array; "
        "codes are small); about 1 x n*4*dim less where the runner pages grouped values instead of handing "
        "them over as a list.",
        f"- Search worker: the faiss index and the exact store are memory-mapped, so private memory is a fixed "
        f"working set (+{flat['search_private_over_baseline_mib']} MiB Flat, "
        f"+{ivf['search_private_over_baseline_mib']} MiB {args.ivf_factory} at query blocks of {args.query_block}, "
        f"k={args.k}); the page cache holds what the "
        f"search touches: {flat['search_page_cache_bytes_per_vector']} B/vector for Flat (every vector is scanned), "
        f"{ivf['search_page_cache_bytes_per_vector']} B/vector for {args.ivf_factory} (probed lists + re-scored "
        "rows). Page cache is shared between processes on one machine and reclaimable, but counts towards a "
        "container's memory.",
        "- Extrapolated to 10M docs, GiB per worker (build peak / search private / search page cache):",
    ]
    for factory, table in model.items():
        cells = "; ".join(
            f"{name.replace('_', ' ')}: {row['build_worker_peak_gib']} / {row['search_worker_private_gib']} / "
            f"{row['search_worker_page_cache_gib']}"
            for name, row in table.items()
        )
        lines.append(f"  {factory}: {cells}")
    lines.append(
        "- Goal <= 4 GB per worker at 10M docs: choose --num-shards from the table (each worker process holds one "
        "shard at a time: SearchShardFn keeps one per DoFn instance and shares it per process)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
