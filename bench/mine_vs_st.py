"""negforge end to end vs sentence-transformers' mine_hard_negatives on a BEIR split (SciFact train).

    python bench/mine_vs_st.py            # all train queries (809) and the full corpus (5,183 docs)
    python bench/mine_vs_st.py --quick    # the first 50 train queries, their positives + 250 other docs
    python bench/mine_vs_st.py --backends torch,onnx-int8    # negforge's embed backends to time (default)

Every side runs cold, each in its own fresh process (no embedding cache), with the same model (bundled
all-MiniLM-L6-v2), the same threads, K = 3 hard negatives, relative_margin 0.05, exact search, and does only
this work inside its timed process:
  negforge  pipelines.build.run_build: ingest -> embed -> index (Flat) -> mine (hard tier only), DirectRunner,
            once per --embed-backend (ONNX exports are made and cached before any timing, reported apart)
  st        mine_hard_negatives(use_faiss=True, num_negatives=3, relative_margin=0.05), triplet output
Reported: wall seconds of each (imports, model load and embedding included) and each backend's ratio to st
(goals: torch <= 1.0, onnx-int8 <= 0.5), the agreement of the hard negatives on pairs where both found K (goal
>= 0.99), and each side's coverage (goal for negforge >= 0.99). After the timed runs, untimed, the mine stage
alone with the default tiers on the torch RUN_DIR (coverage per tier). Writes bench/results/mine_vs_st[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import st_mine_judged_pairs, write_results  # noqa: E402

K = 3
MARGIN = 0.05


def slice_beir(beir_dir: str, split: str, out_dir: str, queries: int, extra_docs: int) -> str:
    """A smaller BEIR folder: the first `queries` queries of the split, their positives and extra_docs others."""
    from transforms.beir import load_beir

    data = load_beir(beir_dir, split)
    keep_q = sorted(data.qrels)[:queries]
    positives = {d for q in keep_q for d in data.qrels[q]}
    with open(os.path.join(beir_dir, "corpus.jsonl"), encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle if line.strip()]
    others = [row for row in corpus if row["_id"] not in positives][:extra_docs]
    os.makedirs(os.path.join(out_dir, "qrels"), exist_ok=True)
    with open(os.path.join(out_dir, "corpus.jsonl"), "w", encoding="utf-8") as handle:
        for row in [r for r in corpus if r["_id"] in positives] + others:
            handle.write(json.dumps(row) + "\n")
    with open(os.path.join(out_dir, "queries.jsonl"), "w", encoding="utf-8") as handle:
        for q in keep_q:
            handle.write(json.dumps({"_id": q, "text": data.queries[q]}) + "\n")
    with open(os.path.join(out_dir, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for q in keep_q:
            for d, score in sorted(data.qrels[q].items()):
                handle.write(f"{q}\t{d}\t{score}\n")
    return out_dir


def run_negforge(beir_dir: str, split: str, workdir: str, threads: int, backend: str = "torch") -> dict:
    """negforge build (hard tier only); {(anchor, positive): [negatives]} keyed by texts, plus timings."""
    import polars as pl

    from pipelines.build import run_build
    from schemas.build_config import BuildConfig, EmbedConfig, IndexConfig, IngestConfig, MiningConfig

    config = BuildConfig(
        output=os.path.join(workdir, f"run-{backend}"),
        ingest=IngestConfig(beir_dir=beir_dir, split=split),
        embed=EmbedConfig(model="bundled", torch_threads=threads, backend=backend),
        index=IndexConfig(num_shards=4, index_factory="Flat"),
        mining=MiningConfig(hard=K, semi_hard=0, random=0, relative_margin=MARGIN),
        overwrite=True,
    )
    started = time.perf_counter()
    manifest = run_build(config, [])
    wall = time.perf_counter() - started
    rows = pl.read_parquet(os.path.join(config.output, "negatives", "tier=hard", "*.parquet"))
    negatives = {}
    for anchor, positive, negative in rows.select("anchor", "positive", "negative").iter_rows():
        negatives.setdefault(f"{anchor}\t{positive}", []).append(negative)
    return {"wall_s": wall, "stage_s": manifest.get("timings_s", {}), "selection": manifest.get("selection", {}),
            "negatives": negatives}


def mine_default_tiers(run_dir: str) -> dict:
    """Untimed, in its own process after the timed ones: the mine stage alone with the default tiers (3 hard,
    2 semi-hard, 1 random) on a finished RUN_DIR, for its coverage per tier and deeper-search histogram."""
    from dataclasses import replace

    from pipelines.stage_mine import run_mine
    from schemas.build_config import BuildConfig, EmbedConfig, IndexConfig, IngestConfig, MiningConfig
    from schemas.layout import RunLayout

    with open(os.path.join(run_dir, "manifest.json"), encoding="utf-8") as handle:
        saved = json.load(handle)["config"]
    config = BuildConfig(
        output=run_dir, ingest=IngestConfig(**saved["ingest"]), embed=EmbedConfig(**saved["embed"]),
        index=IndexConfig(**saved["index"]),
    )
    run = RunLayout(config.output)
    started = time.perf_counter()
    stats = run_mine(replace(config, mining=MiningConfig()), run, RunLayout(run.staging_dir("mine-default")), [])
    return {"mine_stage_s": round(time.perf_counter() - started, 2), "selection": stats}


def run_st(beir_dir: str, split: str, threads: int) -> dict:
    """mine_hard_negatives on the same pairs and corpus; negatives keyed like run_negforge's."""
    import torch

    from transforms.beir import load_beir

    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = load_beir(beir_dir, split)
    pairs, mined = st_mine_judged_pairs(data, K, MARGIN, "triplet")
    wall = time.perf_counter() - started
    negatives = {}
    for row in mined:
        negatives.setdefault(f"{row['anchor']}\t{row['positive']}", []).append(row["negative"])
    keys = len({(data.queries[q], data.corpus[d]) for q, d in pairs})
    return {"wall_s": wall, "pairs": len(pairs), "pair_keys": keys, "negatives": negatives}


def compare(ours: dict, theirs: dict, keys: int) -> dict:
    """Coverage of each side, and agreement on the pairs where both found K negatives.

    sentence-transformers returns texts only, so pairs are compared by (anchor text, positive text); `keys` is
    the number of distinct such keys (SciFact train: 916 for 919 pairs, as two query ids share a text).
    """
    ours, theirs = {k: set(v) for k, v in ours.items()}, {k: set(v) for k, v in theirs.items()}
    full_ours = {k for k, v in ours.items() if len(v) >= K}
    full_theirs = {k for k, v in theirs.items() if len(v) >= K}
    both = full_ours & full_theirs
    overlap = [len(ours[k] & theirs[k]) / len(theirs[k]) for k in both]
    return {
        "pair_keys": keys,
        "coverage_negforge": round(len(full_ours) / keys, 4),
        "coverage_st": round(len(full_theirs) / keys, 4),
        "pairs_both_full": len(both),
        "agreement_mean_overlap": round(sum(overlap) / max(len(overlap), 1), 4),
        "agreement_identical_sets": round(sum(ours[k] == theirs[k] for k in both) / max(len(both), 1), 4),
    }


def _side(args) -> None:
    """Child process: run one side, write its JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.side == "negforge":
        result = run_negforge(args.beir, args.split, args.workdir, args.threads, args.backend)
    elif args.side == "tiers":
        result = mine_default_tiers(os.path.join(args.workdir, "run-torch"))
    else:
        result = run_st(args.beir, args.split, args.threads)
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def _spawn(side: str, beir: str, split: str, workdir: str, threads: int, backend: str = "torch") -> dict:
    result = os.path.join(workdir, f"{side}-{backend}.json")
    command = [sys.executable, os.path.abspath(__file__), "--side", side, "--beir", beir, "--split", split,
               "--workdir", workdir, "--threads", str(threads), "--result", result, "--backend", backend]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    with open(result, encoding="utf-8") as handle:
        payload = json.load(handle)
    payload["process_wall_s"] = time.perf_counter() - started  # includes imports: what a user waits
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds (user + sys) of the side's process tree: comparable even when the machine is shared
    payload["process_cpu_s"] = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    payload["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return payload


def prepare_backends(backends: list[str], threads: int) -> float:
    """Make (and cache) the ONNX exports before any timing; returns the seconds it took (0 when cached)."""
    started = time.perf_counter()
    from transforms.model import load_sentence_transformer

    for backend in backends:
        if backend != "torch":
            load_sentence_transformer("bundled", backend=backend, threads=threads)
    return time.perf_counter() - started


def backend_figures(ours: dict, st: dict) -> dict:
    return {
        "negforge_pairs_full_fraction": ours["selection"].get("pairs_full_fraction", {}).get("hard"),
        "wall_s": round(ours["process_wall_s"], 2),
        "ratio_over_st": round(ours["process_wall_s"] / st["process_wall_s"], 3),
        "cpu_s": round(ours["process_cpu_s"], 2),
        "cpu_ratio_over_st": round(ours["process_cpu_s"] / st["process_cpu_s"], 3),
        "load_1min_before_after": ours["load_1min"],
        "in_process_s": round(ours["wall_s"], 2),
        "stage_s": ours["stage_s"],
        "deeper_search_histogram": ours["selection"].get("deeper_search_histogram"),
        "dropped": ours["selection"].get("dropped"),
        **{f"vs_st_{k}": v for k, v in compare(ours["negatives"], st["negatives"], st["pair_keys"]).items()
           if k != "pair_keys"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", default=os.path.join(os.path.dirname(__file__), "..", "data", "scifact-sample"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--quick", action="store_true", help="50 queries, their positives + 250 other docs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch,onnx-int8", help="negforge --embed-backend values to time")
    parser.add_argument("--side", choices=("negforge", "st", "tiers"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _side(args)
        return
    backends = [b for b in args.backends.split(",") if b]
    export_s = prepare_backends(backends, args.threads)
    with tempfile.TemporaryDirectory(prefix="mine_vs_st-") as workdir:
        beir = slice_beir(args.beir, args.split, os.path.join(workdir, "beir"), 50, 250) if args.quick else args.beir
        st = _spawn("st", beir, args.split, workdir, args.threads)
        ours = {b: _spawn("negforge", beir, args.split, workdir, args.threads, b) for b in backends}
        tiers = _spawn("tiers", beir, args.split, workdir, args.threads) if "torch" in ours else None
    first = ours[backends[0]]
    figures = compare(first["negatives"], st["negatives"], st["pair_keys"])  # agreement of the first backend
    figures.update({
        "pairs": st["pairs"],
        "wall_s_st": round(st["process_wall_s"], 2),
        "cpu_s_st": round(st["process_cpu_s"], 2),
        "in_process_s_st": round(st["wall_s"], 2),
        "load_1min_before_after_st": st["load_1min"],
        "negforge": {b: backend_figures(ours[b], st) for b in backends},
        "onnx_export_s_before_timing": round(export_s, 2),
        "negforge_default_tiers_untimed": tiers,
    })
    inputs = {"beir": args.beir, "split": args.split, "quick": args.quick, "pairs": st["pairs"],
              "threads": args.threads, "model": "bundled all-MiniLM-L6-v2", "k": K, "relative_margin": MARGIN,
              "backends": backends}
    path = write_results("mine_vs_st_quick" if args.quick else "mine_vs_st", {"inputs": inputs, "figures": figures})
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
