"""Dense qrels (issue 15): negforge's whole build vs sentence-transformers' mine_hard_negatives, same data.

    python bench/mine_dense.py            # 5,000 docs, 2,500 queries x 40 graded positives = 100,000 pairs
    python bench/mine_dense.py --quick --compare-references   # 1,000 docs, 250 queries x 40 = 10,000 pairs

Data: tests/dense_qrels.py writes a synthetic BEIR folder (real words; domains > topics > documents). Each query
judges 40 documents: 36 of its topic (graded 3/2/1 by shared topic words), 3 of a sibling topic of the same
domain and 1 of another domain (grade 1: they score low, the stray often below most of the corpus).

Both sides run cold, each in its own fresh process, with the same model (the bundled all-MiniLM-L6-v2), the
same torch threads (--threads, also OMP_NUM_THREADS), K = 3 hard negatives and relative_margin 0.05 (--backend:
negforge's embed backend, torch by default; --beam-arg: Beam options for its build, e.g. the runner mode):
  negforge  pipelines.build.run_build: ingest -> embed -> index -> mine with the default tiers (3 hard,
            2 semi-hard, 1 random) and --margin-reference pair (the default), DirectRunner
  st        mine_hard_negatives(num_negatives=3, relative_margin=0.05, use_faiss=True, output_format="n-tuple")
Reported per side: wall seconds (process, imports included), CPU seconds of the process tree (comparable on a
shared machine), peak RSS (ru_maxrss of the process and of its children), coverage (pairs with the full K),
and judged positives mined (must be 0). For negforge also: coverage per tier, guard drops, the deeper-search
histogram, how hard the hard tier is (medians of score_negative and of the gap to the positive) and, with
--compare-references, after the timed build, the mine stage alone under each margin reference (untimed).
Writes bench/results/mine_dense[_quick].json (--name NAME: NAME.json).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from common import st_mine_judged_pairs, write_results  # noqa: E402
from dense_qrels import DenseShape, write_dense_beir  # noqa: E402

K = 3
MARGIN = 0.05
SPLIT = "train"
FULL = DenseShape(domains=25, topics_per_domain=5, docs_per_topic=40, queries_per_topic=20, topic_positives=36,
                  siblings=3, strays=1)
QUICK = DenseShape(domains=5, topics_per_domain=5, docs_per_topic=40, queries_per_topic=10, topic_positives=36,
                   siblings=3, strays=1)


def _peak_rss_mib() -> dict:
    """Peak resident memory so far: this process, and the largest waited-for child (Beam workers, if any)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "children": round(children, 1)}


def _judged(beir: str) -> dict:
    from transforms.beir import load_beir

    return load_beir(beir, SPLIT)


def run_negforge(beir: str, workdir: str, threads: int, reference: str, compare: bool, backend: str = "torch",
                 beam_args: list[str] | None = None) -> dict:
    """The whole build, timed; then (untimed, if `compare`) the mine stage alone under every margin reference."""
    import polars as pl

    from pipelines.build import run_build
    from schemas.build_config import BuildConfig, EmbedConfig, IngestConfig, MiningConfig

    config = BuildConfig(
        output=os.path.join(workdir, "run"),
        ingest=IngestConfig(beir_dir=beir, split=SPLIT),
        embed=EmbedConfig(model="bundled", torch_threads=threads, backend=backend),
        mining=MiningConfig(hard=K, relative_margin=MARGIN, margin_reference=reference),
        overwrite=True,
    )
    started = time.perf_counter()
    manifest = run_build(config, list(beam_args or []))
    wall = time.perf_counter() - started
    peak = _peak_rss_mib()
    rows = pl.read_parquet(os.path.join(config.output, "negatives"), hive_partitioning=True)
    data = _judged(beir)
    judged = pl.DataFrame([(q, d) for q, ds in data.qrels.items() for d in ds], schema=["query_id", "negative_id"],
                          orient="row")
    mined_positives = rows.join(judged, on=["query_id", "negative_id"]).height
    return {"wall_s": wall, "peak_rss_mib": peak, "stage_s": manifest.get("timings_s", {}),
            "selection": manifest.get("selection", {}), "rows": rows.height, "judged_positives_mined": mined_positives,
            "hard_scores": hard_scores(rows), "references": mine_each_reference(config) if compare else None}


def hard_scores(rows) -> dict:
    """How hard the hard tier is: medians of score_negative and of score_positive - score_negative."""
    import polars as pl

    hard = rows.filter(pl.col("tier").cast(pl.String) == "hard")
    if hard.height == 0:
        return {}
    gap = (pl.col("score_positive") - pl.col("score_negative")).median()
    medians = hard.select(pl.col("score_negative").median().alias("neg"), gap.alias("gap")).row(0)
    return {"score_negative_p50": round(medians[0], 4), "gap_p50": round(medians[1], 4)}


def mine_each_reference(config) -> dict:
    """The mine stage alone on the finished RUN_DIR under each margin reference (coverage, drops, mine time)."""
    from dataclasses import replace

    import polars as pl

    from pipelines.stage_mine import run_mine
    from schemas.layout import RunLayout
    from transforms.mining_math import MARGIN_REFERENCES

    run, out = RunLayout(config.output), {}
    for reference in MARGIN_REFERENCES:
        started = time.perf_counter()
        staging = RunLayout(run.staging_dir(f"mine-{reference}"))
        stats = run_mine(replace(config, mining=replace(config.mining, margin_reference=reference)), run, staging, [])
        rows = pl.read_parquet(staging.negatives_dir, hive_partitioning=True)
        out[reference] = {"mine_stage_s": round(time.perf_counter() - started, 2), "hard_scores": hard_scores(rows),
                          "pairs_full_fraction": stats.get("pairs_full_fraction"), "dropped": stats.get("dropped"),
                          "dropped_pairs": stats.get("dropped_pairs"),
                          "deeper_search_histogram": stats.get("deeper_search_histogram")}
    return out


def run_st(beir: str, threads: int) -> dict:
    """mine_hard_negatives on the same pairs and corpus (n-tuple: a row per pair that got all K)."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = _judged(beir)
    pairs, mined = st_mine_judged_pairs(data, K, MARGIN, "n-tuple")
    wall = time.perf_counter() - started
    peak = _peak_rss_mib()
    query_of = {}
    for q, text in data.queries.items():
        query_of.setdefault(text, set()).add(q)
    judged_texts = {q: {data.corpus[d] for d in data.qrels[q]} for q in data.qrels}
    negative_columns = [c for c in mined.column_names if c.startswith("negative")]
    mined_positives = 0
    for row in mined:
        judged = set().union(*(judged_texts[q] for q in query_of[row["anchor"]]))
        mined_positives += sum(row[c] in judged for c in negative_columns)
    return {"wall_s": wall, "peak_rss_mib": peak, "pairs": len(pairs), "pairs_full": len(mined),
            "judged_positives_mined": mined_positives}


def _side(args) -> None:
    """Child process: run one side, write its JSON."""
    if args.side == "negforge":
        result = run_negforge(args.beir, args.workdir, args.threads, args.reference, args.compare_references,
                              args.backend, args.beam_arg)
    else:
        result = run_st(args.beir, args.threads)
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def _spawn(side: str, args, beir: str, workdir: str) -> dict:
    result = os.path.join(workdir, f"{side}.json")
    command = [sys.executable, os.path.abspath(__file__), "--side", side, "--beir", beir, "--workdir", workdir,
               "--threads", str(args.threads), "--reference", args.reference, "--result", result]
    command += ["--compare-references"] if args.compare_references else []
    command += ["--backend", args.backend] + [f"--beam-arg={a}" for a in args.beam_arg]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(args.threads))
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - started  # includes imports: what a user waits (and, for negforge, the untimed
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # per-reference runs, so in_process_s is the one)
    with open(result, encoding="utf-8") as handle:
        payload = json.load(handle)
    payload["process_wall_s"] = wall
    payload["process_cpu_s"] = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    payload["load_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 docs, 250 queries x 40 positives")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", default="pair", help="negforge's --margin-reference for the timed build")
    parser.add_argument("--compare-references", action="store_true",
                        help="after the timed build, run the mine stage alone under each margin reference")
    parser.add_argument("--name", help="results file name under bench/results (default mine_dense[_quick]): "
                        "keeps a run under load out of the canonical file")
    parser.add_argument("--backend", default="torch", help="negforge's --embed-backend (torch, onnx, onnx-int8)")
    parser.add_argument("--beam-arg", action="append", default=[],
                        help="a Beam option for the build: --beam-arg=--direct_running_mode=multi_processing")
    parser.add_argument("--side", choices=("negforge", "st"), help=argparse.SUPPRESS)
    parser.add_argument("--beir", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _side(args)
        return
    shape = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="mine_dense-") as workdir:
        beir = os.path.join(workdir, "beir")
        write_dense_beir(beir, shape, seed=0, split=SPLIT)
        st = _spawn("st", args, beir, workdir)
        ours = _spawn("negforge", args, beir, workdir)
    pairs = st["pairs"]
    selection = ours["selection"]
    # negforge's process CPU includes the untimed per-reference runs when --compare-references is on
    figures = {
        "pairs": pairs,
        "coverage_hard_negforge": selection.get("pairs_full_fraction", {}).get("hard"),
        "coverage_st_ntuple": round(st["pairs_full"] / pairs, 4),
        "coverage_per_tier_negforge": selection.get("pairs_full_fraction"),
        "judged_positives_mined": {"negforge": ours["judged_positives_mined"], "st": st["judged_positives_mined"]},
        "wall_s": {"negforge_build": round(ours["wall_s"], 2), "st": round(st["wall_s"], 2)},
        "wall_ratio_negforge_over_st": round(ours["wall_s"] / st["wall_s"], 3),
        "process_wall_s": {"negforge": round(ours["process_wall_s"], 2), "st": round(st["process_wall_s"], 2)},
        "process_cpu_s": {"negforge": round(ours["process_cpu_s"], 2),
                          "st": round(st["process_cpu_s"], 2)},
        "peak_rss_mib": {"negforge_build": ours["peak_rss_mib"], "st": st["peak_rss_mib"]},
        "load_1min_before_after": {"negforge": ours["load_1min_before_after"], "st": st["load_1min_before_after"]},
        "negforge_stage_s": ours["stage_s"],
        "negforge_rows": ours["rows"],
        "negforge_dropped": selection.get("dropped"),
        "negforge_dropped_pairs": selection.get("dropped_pairs"),
        "negforge_deeper_search_histogram": selection.get("deeper_search_histogram"),
        "negforge_hard_scores": ours["hard_scores"],
        "negforge_mine_stage_per_reference": ours["references"],
    }
    inputs = {"shape": shape.__dict__, "docs": shape.docs, "queries": shape.queries, "pairs": pairs,
              "seed": 0, "threads": args.threads, "model": "bundled all-MiniLM-L6-v2 (both sides)", "k": K,
              "relative_margin": MARGIN, "negforge_tiers": "3 hard, 2 semi-hard, 1 random (defaults)",
              "negforge_margin_reference": args.reference, "st_output_format": "n-tuple",
              "negforge_embed_backend": args.backend, "negforge_beam_args": args.beam_arg,
              "compare_references": args.compare_references}
    name = args.name or ("mine_dense_quick" if args.quick else "mine_dense")
    path = write_results(name, {"inputs": inputs, "figures": figures})
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
