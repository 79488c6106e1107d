"""Are negforge's negatives useful? Fine-tune all-MiniLM-L6-v2 on SciFact train under one budget per scheme.

    .venv/bin/python -m bench.usefulness [--schemes a,b,...] [--quick] [--workdir DIR] [--beir DIR]

(run from the repository root, as a module). Schemes, all with the same budget (1 epoch, batch 32,
lr 2e-5, max_seq_length 256, 3 file negatives per example where a scheme uses file negatives, seed 13):
  a  base:            the bundled model, untrained (must reproduce nDCG@10 0.645 +- 0.005 on test)
  b  in_batch:        in-batch negatives only
  c  st_recipe:       hard tier (k = 3, relative margin 0.05, top): sentence-transformers' recipe
  d  hsr:             hard + semi_hard + random (0.5 / 0.3 / 0.2)
  e  hsr_ctx:         (d) + contextual (0.4 / 0.25 / 0.15 / 0.2)
  f  best_bank_curr:  the better of (d) / (e) on the dev split, + memory bank 512 + fixed curriculum
  g  refresh:         (f)'s scheme again from the base model, on negatives re-mined with (f)'s model
                      (`--model MODEL_DIR`; only the tiers f samples), so the training budget stays that of
                      every other scheme
  h  symmetric:       a lever towards the 0.70 goal, not one of the issue's schemes: the best of c-g on the
                      dev split + the symmetric loss (doc_to_query, per direction: the objective
                      all-MiniLM-L6-v2 was pre-trained with); on g's refreshed negatives when g wins
Mining runs once on train (`negforge build` through pipelines.build.run_build, all tiers: hard 3,
semi_hard 3, random 3, contextual 3) and is reused by b-f (resumable: `--resume`). Each trained scheme
holds out a seeded 10 % of train queries as dev (choosing (f)) and is evaluated on test once.
Resumable per scheme: bench/results/usefulness/<scheme>.json; finished schemes are skipped. The table
(nDCG@10, MRR@10, Recall@100, train minutes) goes to bench/results/usefulness.md and .json.
`--quick`: a seeded slice of SciFact (40 train + 20 test queries, ~300 docs), 3 optimizer steps of batch 8,
max_seq_length 64, results under bench/results/usefulness-quick*: proves the machinery, measures nothing.
Every scheme is scored at max_seq_length 256 (the base model's), whatever length it was trained at.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_NDCG, REFERENCE_TOLERANCE = 0.645, 0.005
EVAL_MAX_SEQ_LENGTH = 256  # every scheme is scored at the base model's length (a saved model keeps its training one)
MINING_FLAGS = [
    "--hard",
    "3",
    "--semi-hard",
    "3",
    "--random",
    "3",
    "--contextual",
    "3",
    "--relative-margin",
    "0.05",
    "--sampling",
    "top",
    "--seed",
    "13",
]
BUDGET = {"epochs": 1, "batch_size": 32, "lr": 2e-5, "max_seq_length": 256, "seed": 13, "dev_fraction": 0.1}
QUICK_BUDGET = {"batch_size": 8, "max_seq_length": 64, "max_steps": 3, "dev_fraction": 0.2}
SCHEMES = {
    "a": ("base", "bundled all-MiniLM-L6-v2, not trained", None),
    "b": ("in_batch", "in-batch negatives only", {"tiers": "none", "file_negatives": 0}),
    "c": (
        "st_recipe",
        "hard tier, k=3, relative margin 0.05 (sentence-transformers' recipe)",
        {"tiers": "hard", "file_negatives": 3},
    ),
    "d": ("hsr", "hard + semi-hard + random", {"tiers": "hard:0.5,semi_hard:0.3,random:0.2", "file_negatives": 3}),
    "e": (
        "hsr_ctx",
        "hard + semi-hard + random + contextual",
        {"tiers": "hard:0.4,semi_hard:0.25,random:0.15,contextual:0.2", "file_negatives": 3},
    ),
    "f": ("best_bank_curr", "best of d/e on dev + memory bank 512 + fixed curriculum", None),
    "g": ("refresh", "f re-run on negatives re-mined with f's model", None),
    "h": ("symmetric", "best of c-g on dev + symmetric loss (doc_to_query, per direction)", None),
}
SYMMETRIC_LOSS = {"loss_directions": ("query_to_doc", "doc_to_query"), "loss_partition": "per_direction"}


def git_sha() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "no-commit"


def write_slice(
    beir_dir: str, out_dir: str, seed: int = 13, n_train: int = 40, n_test: int = 20, n_extra: int = 250
) -> str:
    """A small BEIR folder: the first queries of each split by crc32(seed:id), their positives and n_extra docs."""
    from transforms.beir import read_qrels

    def rank(key: str) -> tuple[int, str]:
        return zlib.crc32(f"{seed}:{key}".encode()), key

    qrels = {}
    for split, count in (("train", n_train), ("test", n_test)):
        full = read_qrels(os.path.join(beir_dir, "qrels", f"{split}.tsv"))
        qrels[split] = {q: full[q] for q in sorted(full, key=rank)[:count]}
    with open(os.path.join(beir_dir, "corpus.jsonl"), encoding="utf-8") as handle:
        corpus_lines = {str(json.loads(line)["_id"]): line for line in handle if line.strip()}
    keep_docs = {d for split in qrels.values() for docs in split.values() for d in docs}
    keep_docs |= set(sorted(corpus_lines, key=rank)[:n_extra])
    keep_queries = {q for split in qrels.values() for q in split}
    os.makedirs(os.path.join(out_dir, "qrels"), exist_ok=True)
    with open(os.path.join(out_dir, "corpus.jsonl"), "w", encoding="utf-8") as handle:
        handle.writelines(corpus_lines[d] for d in sorted(keep_docs) if d in corpus_lines)
    with (
        open(os.path.join(beir_dir, "queries.jsonl"), encoding="utf-8") as src,
        open(os.path.join(out_dir, "queries.jsonl"), "w", encoding="utf-8") as dst,
    ):
        dst.writelines(line for line in src if line.strip() and str(json.loads(line)["_id"]) in keep_queries)
    for split, rows in qrels.items():
        with open(os.path.join(out_dir, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            handle.writelines(f"{q}\t{d}\t{score}\n" for q in sorted(rows) for d, score in sorted(rows[q].items()))
    return out_dir


def mine(beir_dir: str, run_dir: str, model: str = "bundled", quick: bool = False, extra: tuple = ()) -> dict:
    """Mine train negatives into run_dir with `negforge build` (reusing finished stages); returns the manifest.

    The one place the benchmark touches Beam: switch this function to change how mining runs."""
    from pipelines.build import run_build
    from pipelines.build_args import resolve_build_config

    argv = ["--beir", beir_dir, "--split", "train", "--output", run_dir, "--model", model, *MINING_FLAGS]
    argv += ["--num-shards", "1" if quick else "4", *extra]  # a later flag wins over MINING_FLAGS
    if os.path.exists(os.path.join(run_dir, "manifest.json")):
        argv.append("--resume")
    config, beam_args = resolve_build_config(argv)
    return run_build(config, beam_args)


def evaluate(model_dir: str, beir_dir: str, max_seq_length: int | None = None, dev=None) -> dict:
    """nDCG@10, MRR@10, Recall@100 of a model on the BEIR test split and, when given, the dev set held out
    of train (trainer/evaluate.py). Both rank the whole BEIR corpus, encoded once for the two."""
    from trainer.evaluate import evaluate_retrieval_splits
    from trainer.loop import load_base_model, resolve_device
    from transforms.beir import load_beir

    test = load_beir(beir_dir, "test")
    model = load_base_model(model_dir, resolve_device("auto"), max_seq_length)
    model.eval()
    splits = {"test": (test.queries, test.qrels)} | ({"dev": (dev.queries, dev.qrels)} if dev else {})
    metrics = evaluate_retrieval_splits(model, test.corpus, splits, batch_size=64)
    return {
        name: {**values, "queries": len(splits[name][0]), "docs": len(test.corpus)} for name, values in metrics.items()
    }


def mean_tier_weights(model_dir: str) -> dict[str, float]:
    """Each tier's weight averaged over the optimizer steps of MODEL_DIR/train_log.jsonl (what the curriculum gave)."""
    with open(os.path.join(model_dir, "train_log.jsonl")) as handle:
        steps = [json.loads(line)["tier_weights"] for line in handle if line.strip()]
    tiers = sorted({tier for weights in steps for tier in weights})
    return {tier: round(sum(w.get(tier, 0.0) for w in steps) / max(1, len(steps)), 4) for tier in tiers}


def hard_overlap(round_one: str, round_two: str) -> dict:
    """How many of round two's hard rows (query, positive, negative) round one had mined too."""
    import polars as pl

    from audit.load import scan_negatives

    keys = ["query_id", "positive_id", "negative_id"]
    first, second = (scan_negatives(run).filter(pl.col("tier") == "hard").select(keys).collect()
                     for run in (round_one, round_two))
    shared = second.join(first, on=keys, how="semi").height
    return {"round_two_hard_rows": second.height, "also_in_round_one": shared,
            "fraction": round(shared / max(1, second.height), 4)}


def budget_config(overrides: dict, quick: bool):
    from trainer.presets import resolve_train_config

    budget = BUDGET | (QUICK_BUDGET if quick else {})
    return resolve_train_config({**budget, **overrides})


def _finished(parents: str, results_dir: str, why: str) -> dict[str, dict]:
    """The result files of the schemes a later scheme builds on; stops with a hint when one is missing."""
    results = {}
    for parent in parents:
        path = os.path.join(results_dir, f"{parent}.json")
        if not os.path.exists(path):
            raise SystemExit(f"{why}; run --schemes {','.join(parents)} first ({path})")
        results[parent] = json.load(open(path))
    return results


def _best_on_dev(results: dict[str, dict]) -> tuple[str, dict[str, float]]:
    """The scheme with the highest dev nDCG@10 (ties: the earlier letter) and every candidate's dev score."""
    dev = {scheme: result["dev"]["ndcg@10"] for scheme, result in results.items()}
    return max(sorted(dev), key=lambda s: dev[s]), dev


def _settings(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k not in ("parent", "parent_dev")}


def scheme_overrides(scheme: str, results_dir: str) -> dict:
    """Training settings of a scheme; f, g and h read the results of the schemes they build on."""
    if SCHEMES[scheme][2] is not None:
        return dict(SCHEMES[scheme][2])
    if scheme == "f":
        best, dev = _best_on_dev(_finished("de", results_dir, "scheme f picks the better of d and e on dev"))
        return {**SCHEMES[best][2], "memory_bank": 512, "curriculum": "fixed", "parent": best, "parent_dev": dev}
    if scheme == "h":
        results = _finished("cdefg", results_dir, "scheme h starts from the best of c-g on dev")
        best, dev = _best_on_dev(results)
        return {**_settings(results[best]["overrides"]), **SYMMETRIC_LOSS, "parent": best, "parent_dev": dev}
    f = _finished("f", results_dir, "scheme g refreshes f's negatives with f's model")["f"]
    return {**_settings(f["overrides"]), "parent": "f"}


def run_scheme(scheme: str, args, results_dir: str, beir_dir: str) -> dict:
    name, description, _ = SCHEMES[scheme]
    started = time.perf_counter()
    result = {"scheme": scheme, "name": name, "description": description, "quick": args.quick}
    if scheme == "a":
        result["test"] = evaluate("bundled", beir_dir, EVAL_MAX_SEQ_LENGTH)["test"]
        result["train_minutes"] = 0.0
        result["reproduces_reference"] = abs(result["test"]["ndcg@10"] - REFERENCE_NDCG) <= REFERENCE_TOLERANCE
        result["wall_minutes"] = round((time.perf_counter() - started) / 60, 3)
        return result
    overrides = scheme_overrides(scheme, results_dir)
    settings = _settings(overrides)
    run_dir = os.path.join(args.workdir, "run_train")
    mine_started = time.perf_counter()
    if scheme == "g" or overrides.get("parent") == "g":  # h on g's negatives reuses g's finished mining run
        run_dir = os.path.join(args.workdir, "run_train_refresh")
        # re-mine only the tiers f samples from: contextual negatives are generated from the positives, not
        # retrieved, and cost most of the mining time, so they are regenerated only when f uses them
        uses_contextual = "contextual" in str(overrides.get("tiers", ""))
        refresh_model = os.path.abspath(os.path.join(args.workdir, "models", "f"))
        extra = () if uses_contextual else ("--contextual", "0")
        mine(beir_dir, run_dir, model=refresh_model, quick=args.quick, extra=extra)
    else:
        mine(beir_dir, run_dir, quick=args.quick)
    result["mine_minutes"] = round((time.perf_counter() - mine_started) / 60, 3)
    from trainer.loop import load_source, train

    config, data, dev = load_source(budget_config(settings, args.quick), run_dir)
    model_dir = os.path.join(args.workdir, "models", scheme)
    summary = train(config, data, model_dir, dev=None)  # dev is scored below, sharing test's corpus pass
    result.update(
        overrides=overrides,
        train_config=config.to_dict(),
        run_dir=run_dir,
        model_dir=model_dir,
        train_minutes=round(summary["train_seconds"] / 60, 3),
        train_summary={
            k: summary[k]
            for k in ("optimizer_steps", "first_loss", "last_loss", "padded_negatives", "reused_negatives")
        },
    )
    result["mean_tier_weights"] = mean_tier_weights(model_dir)
    if scheme == "g":
        result["refresh_hard_overlap"] = hard_overlap(os.path.join(args.workdir, "run_train"), run_dir)
    scores = evaluate(model_dir, beir_dir, EVAL_MAX_SEQ_LENGTH, dev)
    result["dev"], result["test"] = scores["dev"], scores["test"]
    result["wall_minutes"] = round((time.perf_counter() - started) / 60, 3)
    return result


def write_table(results_dir: str, table_base: str, meta: dict) -> None:
    rows = []
    for scheme, (name, description, _) in SCHEMES.items():
        path = os.path.join(results_dir, f"{scheme}.json")
        rows.append(
            json.load(open(path))
            if os.path.exists(path)
            else {"scheme": scheme, "name": name, "description": description}
        )
    lines = ["| scheme | | nDCG@10 | MRR@10 | Recall@100 | dev nDCG@10 | train min |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        test, dev = row.get("test") or {}, row.get("dev") or {}
        cells = [f"{test[m]:.4f}" if m in test else "not run" for m in ("ndcg@10", "mrr@10", "recall@100")]
        dev_cell = f"{dev['ndcg@10']:.4f}" if "ndcg@10" in dev else "-"
        minutes = f"{row['train_minutes']:.1f}" if "train_minutes" in row else "-"
        lines.append(
            f"| ({row['scheme']}) {row['name']} | {row['description']} | {' | '.join(cells)} | {dev_cell} "
            f"| {minutes} |"
        )
    header = (
        f"SciFact test (300 queries, 5,183 docs){' -- QUICK SLICE, not comparable' if meta['quick'] else ''}; "
        f"git {meta['git_sha']}, {meta['machine']}.\n\n"
    )
    with open(table_base + ".md", "w") as handle:
        handle.write(header + "\n".join(lines) + "\n")
    with open(table_base + ".json", "w") as handle:
        json.dump({**meta, "rows": rows}, handle, indent=2, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.usefulness", description=__doc__.split("\n")[0])
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated, from a,b,c,d,e,f,g,h")
    parser.add_argument("--quick", action="store_true", help="a small slice and 3 steps: a smoke run")
    parser.add_argument("--beir", required=True, help="BEIR folder of the full SciFact (not shipped)")
    parser.add_argument("--workdir", default=None, help="runs and models (default runs/usefulness[-quick])")
    args = parser.parse_args(argv)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    unknown = sorted(set(schemes) - set(SCHEMES))
    if unknown:
        parser.error(f"unknown scheme(s) {unknown}; allowed: {','.join(SCHEMES)}")
    suffix = "-quick" if args.quick else ""
    args.workdir = args.workdir or os.path.join(REPO, "runs", f"usefulness{suffix}")
    results_dir = os.path.join(REPO, "bench", "results", f"usefulness{suffix}")
    os.makedirs(results_dir, exist_ok=True)
    os.makedirs(args.workdir, exist_ok=True)
    beir_dir = write_slice(args.beir, os.path.join(args.workdir, "beir_slice"), seed=13) if args.quick else args.beir
    meta = {
        "git_sha": git_sha(),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "command": " ".join([sys.executable, "-m", "bench.usefulness", *(argv or sys.argv[1:])]),
        "beir": beir_dir,
        "quick": args.quick,
        "budget": BUDGET | (QUICK_BUDGET if args.quick else {}),
        "mining_flags": MINING_FLAGS,
    }
    for scheme in schemes:
        path = os.path.join(results_dir, f"{scheme}.json")
        if os.path.exists(path):
            print(f"scheme {scheme}: finished earlier ({path}); skipped")
            continue
        print(f"scheme {scheme} ({SCHEMES[scheme][0]}): running", flush=True)
        result = {**meta, **run_scheme(scheme, args, results_dir, beir_dir)}
        with open(path + ".partial", "w") as handle:
            json.dump(result, handle, indent=2, sort_keys=True)
        os.replace(path + ".partial", path)
        print(f"scheme {scheme}: test {result['test']}", flush=True)
    write_table(results_dir, os.path.join(REPO, "bench", "results", f"usefulness{suffix}"), meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
