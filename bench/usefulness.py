"""Are negforge's negatives useful? One honest table: every scheme, several seeds, one run of one commit.

    python -m bench.usefulness --beir SCIFACT_DIR [--device cuda] [--seeds 1,2,3] [--schemes a,b]
        [--groups core,recipes,...] [--negatives FILE.parquet | --run-dir RUN_DIR] [--model SPEC] [--quick]
        [--time-budget SECONDS] [--results-dir DIR] [--dev-fraction 0.1] [--dev-seed 13]

Fine-tunes all-MiniLM-L6-v2 on SciFact train minus a dev hold-out (`--dev-fraction` of the train queries,
the first by crc32("dev-seed:query_id"), held out of training for every row: all rows train on the same
pairs) and scores SciFact test and the dev queries (nDCG@10, MRR@10, Recall@100 over the whole corpus,
max_seq_length 256). SciFact's BEIR qrels have no dev split: dev is carved out of qrels/train.tsv. The
table picks the best negforge recipe and the best st_* anchor by dev nDCG@10 and reports their test scores.
Budget for every trained row: batch 32, lr 2e-5, warmup 10 %, max_seq_length 256, 3 negatives per pair
where a row uses negatives, MNRL / InfoNCE at temperature 0.05 (scale 20), 1 epoch (3 where the name says
3ep). Rows, in the order they run (most important first; `--groups` picks):
  core     base                  the bundled model, untrained (seed-independent: one row)
           st_inbatch            sentence-transformers' trainer, in-batch negatives only
           st_mined              sentence-transformers' `mine_hard_negatives` (k=3, relative margin 0.05, top,
                                 whole corpus) + its trainer: ST's own pipeline, the anchor
           nf_hard_st            negforge `hard` tier (ranks 1-3) fed to ST's trainer as n-tuples
           nf_hard               negforge `hard` tier through negforge's trainer
  long     st_mined_3ep, nf_hard_st_3ep, nf_hard_3ep      the same at 3 epochs
  recipes  nf_hsr_st             negforge hard #1 + semi_hard #1 + random #1 through ST's trainer
           nf_hsr                hard:0.5, semi_hard:0.3, random:0.2 through negforge's trainer
           nf_hard_ctx           hard:0.67, contextual:0.33 through negforge's trainer
           nf_inbatch            negforge's trainer, in-batch only (the trainers' parity check)
  levers   nf_pool8_3ep          nf_hard_3ep drawing 3 of each pair's 8 hardest afresh every epoch (--hard 8)
           nf_hard_3ep_sym       nf_hard_3ep + the symmetric loss (doc_to_query, one softmax per direction)
           nf_pool8_3ep_sym      both
           nf_hard_3ep_t03       nf_hard_3ep at temperature 0.03 (scale 33)
           nf_hard_ctx_3ep       nf_hard_ctx at 3 epochs
           nf_hard_3ep_refresh   nf_hard_3ep + in-training refresh twice per epoch (trainer/refresh.py)
           nf_hsr_bank_curr_3ep  nf_hsr at 3 epochs + memory bank 512 + fixed curriculum
Training data: SciFact train pairs from the BEIR folder; negforge's negatives from a compact Parquet file
(`--negatives`, trainer.data.compact_negatives), made from `--run-dir RUN_DIR`, or mined here with
`negforge build` (hard 3, semi_hard 3, random 3, contextual 3, relative margin 0.05: the only Beam step),
plus each pair's hard negatives 4-8 from the same build with --hard 8 (`--pool-run-dir`) for the pool8 rows;
every other row keeps each pair's 3 hardest. `--parallel N` runs N rows at once, each its own process on
the same device, and merges their rows into the one table as they finish.
The training/eval part imports only torch, sentence-transformers, pyarrow (and `datasets` for ST's
trainer): a GPU box needs neither Beam, faiss nor Polars (bench/usefulness_device.sh).

Resumable per (scheme, seed): every finished row is written at once to <results>/usefulness.json (rows)
and usefulness.md (mean +- sd per scheme); a rerun of the same commit and settings skips the rows there.
`--time-budget S` starts no row after S seconds (the table stays consistent when a device call is capped).
`--quick`: a seeded slice of SciFact (40 train + 20 test queries, ~300 docs), 2 optimizer steps of batch 4,
max_seq_length 32, one scheme of each row kind (QUICK_SCHEMES; --schemes for others), results
usefulness-quick.*: proves the machinery, measures nothing. With --negatives
or --run-dir, --quick keeps the given BEIR folder (it must be the slice those negatives were mined on).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "scifact-sample")  # shipped: --quick's default
REFERENCE_NDCG, REFERENCE_TOLERANCE = 0.645, 0.005
MINING_FLAGS = ["--hard", "3", "--semi-hard", "3", "--random", "3", "--contextual", "3",
                "--relative-margin", "0.05", "--sampling", "top", "--seed", "13"]
BUDGET = {"batch_size": 32, "lr": 2e-5, "warmup_ratio": 0.1, "max_seq_length": 256, "temperature": 0.05,
          "file_negatives": 3}
QUICK_BUDGET = {"batch_size": 4, "max_seq_length": 32, "max_steps": 2}
ST_MINING = {"num_negatives": 3, "relative_margin": 0.05, "sampling_strategy": "top"}
HSR = "hard:0.5,semi_hard:0.3,random:0.2"
HARD_CTX = "hard:0.67,contextual:0.33"
HARD_POOL = 3  # each pair's hard negatives a row draws from (the 3 hardest) unless it names "hard_pool"
TRAINER_SETTINGS = ("tiers", "temperature", "memory_bank", "curriculum", "loss_directions", "loss_partition")
SYMMETRIC = {"loss_directions": "query_to_doc,doc_to_query", "loss_partition": "per_direction"}
# name -> (group, trainer, negatives, settings); trainer: none | st | negforge
SCHEMES: dict[str, tuple[str, str, str, dict]] = {
    "base": ("core", "none", "none", {}),
    "st_inbatch": ("core", "st", "none", {"epochs": 1}),
    "st_mined": ("core", "st", "st mine_hard_negatives k=3, relative margin 0.05", {"epochs": 1, "st": "mined"}),
    "nf_hard_st": ("core", "st", "negforge hard ranks 1-3", {"epochs": 1, "st": (("hard", 3),)}),
    "nf_hard": ("core", "negforge", "negforge hard", {"epochs": 1, "tiers": "hard"}),
    "nf_hsr_st": ("recipes", "st", "negforge hard #1 + semi_hard #1 + random #1",
                  {"epochs": 1, "st": (("hard", 1), ("semi_hard", 1), ("random", 1))}),
    "nf_hsr": ("recipes", "negforge", f"negforge {HSR}", {"epochs": 1, "tiers": HSR}),
    "nf_hard_ctx": ("recipes", "negforge", f"negforge {HARD_CTX}", {"epochs": 1, "tiers": HARD_CTX}),
    "nf_inbatch": ("recipes", "negforge", "none", {"epochs": 1, "tiers": "none", "file_negatives": 0}),
    "st_mined_3ep": ("long", "st", "st mine_hard_negatives k=3, relative margin 0.05", {"epochs": 3, "st": "mined"}),
    "nf_hard_st_3ep": ("long", "st", "negforge hard ranks 1-3", {"epochs": 3, "st": (("hard", 3),)}),
    "nf_hard_3ep": ("long", "negforge", "negforge hard", {"epochs": 3, "tiers": "hard"}),
    "nf_pool8_3ep": ("levers", "negforge", "negforge 8 hardest, 3 drawn per pair each epoch",
                     {"epochs": 3, "tiers": "hard", "hard_pool": 8}),
    "nf_hard_3ep_sym": ("levers", "negforge", "negforge hard, symmetric loss (+ doc_to_query, per direction)",
                        {"epochs": 3, "tiers": "hard", **SYMMETRIC}),
    "nf_pool8_3ep_sym": ("levers", "negforge", "negforge 8 hardest, 3 drawn per epoch, symmetric loss",
                         {"epochs": 3, "tiers": "hard", "hard_pool": 8, **SYMMETRIC}),
    "nf_hard_3ep_t03": ("levers", "negforge", "negforge hard, temperature 0.03",
                        {"epochs": 3, "tiers": "hard", "temperature": 0.03}),
    "nf_hard_ctx_3ep": ("levers", "negforge", f"negforge {HARD_CTX}", {"epochs": 3, "tiers": HARD_CTX}),
    "nf_hard_3ep_refresh": ("levers", "negforge", "negforge hard, refreshed twice per epoch",
                            {"epochs": 3, "tiers": "hard", "refresh_per_epoch": 2}),
    "nf_hsr_bank_curr_3ep": ("levers", "negforge", f"negforge {HSR} + memory bank 512 + fixed curriculum",
                             {"epochs": 3, "tiers": HSR, "memory_bank": 512, "curriculum": "fixed"}),
}
GROUPS = ("core", "long", "recipes", "levers")  # run order: the 3-epoch goal rows before the 1-epoch recipes
# --quick's default: one scheme of every row kind (no training, ST in-batch / mined / negforge n-tuples,
# negforge's trainer with one tier / mixed tiers with contextual / 3 epochs with refresh, bank and curriculum)
QUICK_SCHEMES = ("base", "st_inbatch", "st_mined", "nf_hard_st", "nf_hsr_st", "nf_hard", "nf_hard_ctx",
                 "nf_hard_3ep_refresh", "nf_hsr_bank_curr_3ep")
ANCHORS = ("st_inbatch", "st_mined", "st_mined_3ep")  # sentence-transformers' own pipeline
DEFAULT_RECIPE = "nf_hard_3ep"  # what trainer.presets' default (`hard`: hard tier, 3 epochs) trains
ROW_KEYS = ("scheme", "trainer", "negatives", "seed", "epochs", "pairs", "ndcg@10", "mrr@10", "recall@100",
            "train_s")  # + dev_ndcg@10, dev_mrr@10, dev_recall@100 when a dev split is held out
METRICS = ("ndcg@10", "mrr@10", "recall@100")
DEV_FRACTION, DEV_SEED = 0.1, 13


def git_sha() -> str:
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def code_digest() -> str:
    """sha256 of the Python sources that train and score (the packages below the repository root, sorted by
    path): names the code that ran even where a device's git metadata lags the carried working tree."""
    import glob
    import hashlib

    digest = hashlib.sha256()
    for package in ("bench", "trainer", "schemas", "pipelines", "transforms", "audit", "storage"):
        for path in sorted(glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)):
            digest.update(os.path.relpath(path, REPO).encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(handle.read() + b"\0")
    return digest.hexdigest()


def log(message: str) -> None:
    part = os.environ.get("USEFULNESS_PART")
    print(f"[usefulness{' part ' + part if part else ''} {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- data (no Beam)


def dev_query_ids(query_ids, fraction: float, seed: int) -> frozenset[str]:
    """round(fraction * n) of `query_ids` (at most n - 1), the first by (crc32(f"{seed}:{id}"), id): the rule
    of trainer.data.split_dev, so a query's fate depends on its id and the seed only."""
    ids = sorted(set(query_ids))
    count = min(round(fraction * len(ids)), len(ids) - 1) if fraction > 0 else 0
    if count <= 0:
        return frozenset()
    return frozenset(sorted(ids, key=lambda q: (zlib.crc32(f"{seed}:{q}".encode()), q))[:count])


def write_slice(beir_dir: str, out_dir: str, seed: int = 13, n_train: int = 40, n_test: int = 20,
                n_extra: int = 250) -> str:
    """A small BEIR folder: the first queries of each split by crc32(seed:id), their positives and n_extra docs."""

    def rank(key: str) -> tuple[int, str]:
        return zlib.crc32(f"{seed}:{key}".encode()), key

    qrels = {}
    for split, count in (("train", n_train), ("test", n_test)):
        full: dict[str, dict[str, str]] = {}
        with open(os.path.join(beir_dir, "qrels", f"{split}.tsv"), encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                parts = line.rstrip("\r\n").split("\t")
                if number or parts[-1].lstrip("-").isdigit():
                    full.setdefault(parts[0], {})[parts[1]] = parts[2]
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

    The one place the benchmark touches Beam: the GPU run is given the negatives instead."""
    from pipelines.build import run_build
    from pipelines.build_args import resolve_build_config

    argv = ["--beir", beir_dir, "--split", "train", "--output", run_dir, "--model", model, *MINING_FLAGS]
    argv += ["--num-shards", "1" if quick else "4", *extra]  # a later flag wins over MINING_FLAGS
    if os.path.exists(os.path.join(run_dir, "manifest.json")):
        argv.append("--resume")
    config, beam_args = resolve_build_config(argv)
    return run_build(config, beam_args)


def compact_with_pool(run_dir: str, pool_run_dir: str | None, out_path: str) -> int:
    """run_dir's negatives as one compact file (trainer.data.compact_negatives), plus, from pool_run_dir (the
    same flags but a larger --hard), each pair's hard negatives beyond run_dir's: a row that keeps each pair's
    3 hardest (Bench.negatives_file) sees run_dir's negatives exactly. Refuses a pool that does not extend
    run_dir's hard tier (a different run or flags). Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainer.data import _available_tiers, compact_negatives

    tiers = tuple(t for t in ("hard", "semi_hard", "random", "contextual") if t in _available_tiers(run_dir))
    count = compact_negatives(run_dir, out_path + ".partial", tiers)
    if not pool_run_dir:
        os.replace(out_path + ".partial", out_path)
        return count
    compact_negatives(pool_run_dir, out_path + ".pool", ("hard",))
    base, pool = pq.read_table(out_path + ".partial"), pq.read_table(out_path + ".pool")
    os.remove(out_path + ".pool")
    cols = base.to_pydict()
    hard = {(q, p, n): r for q, p, n, t, r in zip(cols["query_id"], cols["positive_id"], cols["negative_id"],
                                                 cols["tier"], cols["rank"]) if t == "hard"}
    pooled = pool.to_pydict()
    keys = list(zip(pooled["query_id"], pooled["positive_id"], pooled["negative_id"]))
    deepest = {}
    for (q, p, _), r in hard.items():
        deepest[(q, p)] = max(deepest.get((q, p), -1), r)
    missing = set(hard) - set(keys)
    extra = [i for i, key in enumerate(keys) if key not in hard]
    shallower = [i for i in extra if pooled["rank"][i] <= deepest.get(keys[i][:2], -1)]
    if missing or shallower:
        os.remove(out_path + ".partial")
        raise ValueError(f"{pool_run_dir} does not extend the hard tier of {run_dir}: {len(missing)} of its hard "
                         f"negatives are missing and {len(shallower)} pool negatives rank above them; mine the "
                         "pool with the same flags and a larger --hard")
    deeper = pool.take(pa.array(extra, pa.int64())).cast(base.schema)
    pq.write_table(pa.concat_tables([base, deeper]), out_path + ".partial")
    os.replace(out_path + ".partial", out_path)
    return count + deeper.num_rows


class Bench:
    """What every row shares: the BEIR folder, negatives, base model, device and budget."""

    def __init__(self, args):
        from trainer.data import read_beir

        self.args = args
        self.budget = BUDGET | (QUICK_BUDGET if args.quick else {})
        self.corpus, self.test_queries, self.test_qrels = read_beir(args.beir, "test")
        corpus, queries, qrels = read_beir(args.beir, "train")
        all_pairs = [(q, d) for q in sorted(qrels) for d in sorted(qrels[q])
                     if qrels[q][d] > 0 and q in queries and d in corpus]
        dev_ids = dev_query_ids((q for q, _ in all_pairs), getattr(args, "dev_fraction", 0.0),
                                getattr(args, "dev_seed", DEV_SEED))
        # dev: held-out train queries with their judged positives, scored on the whole corpus like test
        self.dev_queries = {q: queries[q] for q in sorted(dev_ids)}
        self.dev_qrels = {q: {d: s for d, s in qrels[q].items() if s > 0} for q in sorted(dev_ids)}
        self.train_queries = {q: t for q, t in queries.items() if q not in dev_ids}
        self.train_qrels = {q: docs for q, docs in qrels.items() if q not in dev_ids}
        self.train_beir = (corpus, self.train_queries, self.train_qrels)  # what both trainers see
        self.pairs = [(q, d) for q, d in all_pairs if q not in dev_ids]
        self.st_mined_rows: list[dict] | None = None
        self._ntuples: dict = {}
        self._negatives_files: dict[int, str] = {}

    # ------------------------------------------------------------------ models and scoring

    def load_model(self):
        from trainer.loop import load_base_model

        return load_base_model(self.args.model, self.args.torch_device, self.budget["max_seq_length"])

    def score(self, model) -> dict[str, float]:
        from trainer.evaluate import evaluate_retrieval_splits

        model.eval()
        model.max_seq_length = 32 if self.args.quick else 256  # every row is scored at the same length
        splits = {"test": (self.test_queries, self.test_qrels)}
        if self.dev_queries:
            splits["dev"] = (self.dev_queries, self.dev_qrels)
        results = evaluate_retrieval_splits(model, self.corpus, splits, batch_size=self.args.eval_batch_size)
        scores = dict(results["test"])
        scores.update({f"dev_{k}": v for k, v in results.get("dev", {}).items()})
        return scores

    # ------------------------------------------------------------------ negatives
    def negatives_file(self, hard_pool: int) -> str:
        """The compact negatives with each pair's hard tier cut to its first `hard_pool` by retrieval rank (the
        file itself when nothing is cut): rows use the 3 hardest unless their settings name a deeper pool."""
        if hard_pool not in self._negatives_files:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pq.read_table(self.args.negatives)
            columns = table.select(["query_id", "positive_id", "tier", "rank", "negative_id"]).to_pydict()
            hard_rows: dict[tuple[str, str], list[int]] = {}
            for i, tier in enumerate(columns["tier"]):
                if tier == "hard":
                    hard_rows.setdefault((columns["query_id"][i], columns["positive_id"][i]), []).append(i)
            cut = set()
            for rows in hard_rows.values():
                rows.sort(key=lambda i: (columns["rank"][i] if columns["rank"][i] is not None else 1 << 30,
                                         columns["negative_id"][i]))
                cut.update(rows[hard_pool:])
            path = self.args.negatives
            if cut:
                path = os.path.join(self.args.workdir, f"negatives_hard{hard_pool}.parquet")
                partial = f"{path}.{os.getpid()}.partial"  # parallel parts share the workdir
                pq.write_table(table.filter(pa.array([i not in cut for i in range(table.num_rows)])), partial)
                os.replace(partial, path)
            kept = sum(min(len(rows), hard_pool) for rows in hard_rows.values())
            log(f"hard pool {hard_pool}: {kept} hard negatives for {len(hard_rows)} pairs "
                f"({kept / max(len(hard_rows), 1):.2f} per pair) -> {path}")
            self._negatives_files[hard_pool] = path
        return self._negatives_files[hard_pool]

    # ------------------------------------------------------------------ training inputs for ST's trainer

    def ntuples(self, picks: tuple[tuple[str, int], ...]) -> list[dict]:
        """(anchor, positive, negative_1..n) rows from negforge's negatives: `picks` (tier, count) in rank order;
        a pair short of a tier takes the next candidates of the later tiers (hard, semi_hard, random); a pair
        that still has fewer than n is left out (as ST's n-tuple mining leaves out short pairs)."""
        if picks in self._ntuples:
            return self._ntuples[picks]
        import pyarrow.parquet as pq

        table = pq.read_table(self.negatives_file(HARD_POOL),
                              columns=["query_id", "positive_id", "negative_id", "tier", "rank", "negative"])
        by_pair: dict[tuple[str, str], dict[str, list]] = {}
        for q, p, n, tier, rank, text in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            by_pair.setdefault((q, p), {}).setdefault(tier, []).append((rank if rank is not None else 1 << 30, n,
                                                                        text))
        count = sum(c for _, c in picks)
        rows = []
        for q, d in self.pairs:
            pools = {t: [(n, text) for _, n, text in sorted(v)] for t, v in by_pair.get((q, d), {}).items()}
            chosen: list[tuple[str, str | None]] = []
            for tier, want in picks:
                chosen += pools.get(tier, [])[:want]
            spare = [c for t in ("hard", "semi_hard", "random") for c in pools.get(t, []) if c not in chosen]
            chosen += spare[: count - len(chosen)]
            if len(chosen) < count:
                continue
            row = {"anchor": self.train_queries[q], "positive": self.corpus[d]}
            row.update({f"negative_{i + 1}": text if text is not None else self.corpus[n]
                        for i, (n, text) in enumerate(chosen)})
            rows.append(row)
        self._ntuples[picks] = rows
        return rows

    def st_mined(self) -> list[dict]:
        """sentence-transformers' mine_hard_negatives with the base model over the whole corpus (seed-free:
        'top' sampling is deterministic), once per process."""
        if self.st_mined_rows is None:
            from datasets import Dataset
            from sentence_transformers.util import mine_hard_negatives

            started = time.perf_counter()
            pairs = Dataset.from_dict({"anchor": [self.train_queries[q] for q, _ in self.pairs],
                                       "positive": [self.corpus[d] for _, d in self.pairs]})
            model = self.load_model()
            mined = mine_hard_negatives(pairs, model, corpus=list(self.corpus.values()), output_format="n-tuple",
                                        batch_size=self.args.eval_batch_size, use_faiss=False, verbose=False,
                                        **ST_MINING)
            self.st_mined_rows = mined.to_list()
            log(f"st mine_hard_negatives: {len(self.st_mined_rows)} of {len(self.pairs)} pairs kept "
                f"({time.perf_counter() - started:.1f} s)")
        return self.st_mined_rows

    # ------------------------------------------------------------------ the two trainers

    def train_st(self, rows: list[dict], epochs: int, seed: int) -> tuple[object, dict]:
        """sentence-transformers' own trainer: MNRL (scale 1/temperature), NO_DUPLICATES batches, linear
        warmup 10 % then decay, AdamW, fp32, no checkpoints."""
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        try:
            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        except ImportError:  # sentence-transformers < 6
            from sentence_transformers.losses import MultipleNegativesRankingLoss

        import torch

        torch.manual_seed(seed)
        model = self.load_model()
        budget = self.budget
        steps = math.ceil(len(rows) / budget["batch_size"]) * epochs
        if budget.get("max_steps"):
            steps = min(steps, budget["max_steps"])
        with tempfile.TemporaryDirectory() as out:
            arguments = SentenceTransformerTrainingArguments(
                output_dir=out, num_train_epochs=epochs, max_steps=budget.get("max_steps") or -1,
                per_device_train_batch_size=budget["batch_size"], learning_rate=budget["lr"],
                warmup_steps=int(budget["warmup_ratio"] * steps), seed=seed, data_seed=seed,
                batch_sampler="no_duplicates", save_strategy="no", report_to="none", logging_steps=10,
                disable_tqdm=True, dataloader_num_workers=0,
            )
            loss = MultipleNegativesRankingLoss(model, scale=1.0 / budget["temperature"])
            trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=Dataset.from_list(rows),
                                                 loss=loss)
            started = time.perf_counter()
            output = trainer.train()
            seconds = time.perf_counter() - started
        return model, {"train_s": round(seconds, 2), "steps": int(output.global_step),
                       "train_loss": round(float(output.training_loss), 5)}

    def train_negforge(self, settings: dict, epochs: int, seed: int, workdir: str) -> tuple[object, dict]:
        from trainer.data import load_beir_negatives
        from trainer.loop import train_model
        from trainer.presets import resolve_train_config

        budget = {k: v for k, v in self.budget.items() if k != "file_negatives"}
        flags = {"preset": "none", **budget, "epochs": epochs, "seed": seed, "base_model": self.args.model,
                 "device": self.args.device, "eval_batch_size": self.args.eval_batch_size,
                 "file_negatives": settings.get("file_negatives", self.budget["file_negatives"]),
                 **{k: v for k, v in settings.items() if k in TRAINER_SETTINGS}}
        config = resolve_train_config(flags)
        tiers = config.tiers
        if settings.get("refresh_per_epoch"):
            tiers = tuple(dict.fromkeys([*tiers, "hard", "semi_hard", "random"]))  # the refresh pool
        negatives = self.negatives_file(settings.get("hard_pool", HARD_POOL)) if tiers else None
        data = load_beir_negatives(self.args.beir, negatives, tiers, beir=self.train_beir)
        if settings.get("refresh_per_epoch"):
            from dataclasses import replace

            from trainer.data import no_duplicate_batches

            per_epoch = len(no_duplicate_batches(data.examples, config.batch_size, seed, 0))
            every = 1 if self.args.quick else max(1, per_epoch // settings["refresh_per_epoch"])  # quick: 2 steps
            config = replace(config, refresh_every=every)
        model, summary = train_model(config, data, workdir, progress=False, save_model=False)
        extra = {"train_s": round(summary["train_seconds"], 2), "steps": summary["optimizer_steps"],
                 "train_loss": round(summary["last_loss"], 5), "padded_negatives": summary["padded_negatives"]}
        if summary.get("refreshes"):
            extra["refreshes"] = summary["refreshes"]
        return model, extra | {"pairs": len(data.examples)}

    # ------------------------------------------------------------------ one row

    def run_row(self, scheme: str, seed: int | None) -> dict:
        group, trainer, negatives, settings = SCHEMES[scheme]
        epochs = settings.get("epochs", 0)
        started = time.perf_counter()
        row = {"scheme": scheme, "trainer": trainer, "negatives": negatives, "seed": seed, "epochs": epochs,
               "group": group}
        if trainer == "none":
            model, extra = self.load_model(), {"train_s": 0.0, "pairs": 0}
        elif trainer == "st":
            picks = settings.get("st")
            rows = ([{"anchor": self.train_queries[q], "positive": self.corpus[d]} for q, d in self.pairs]
                    if picks is None else self.st_mined() if picks == "mined" else self.ntuples(picks))
            model, extra = self.train_st(rows, epochs, seed)
            extra["pairs"] = len(rows)
        else:
            workdir = os.path.join(self.args.workdir, "logs", f"{scheme}_seed{seed}")
            model, extra = self.train_negforge(settings, epochs, seed, workdir)
        scores = self.score(model)
        row.update(extra)
        row.update({k: round(v, 5) for k, v in scores.items()})
        row["wall_s"] = round(time.perf_counter() - started, 2)
        del model
        _free_device_memory()
        return row


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- the table


def schedule(schemes: list[str], seeds: list[int]) -> list[tuple[str, int | None]]:
    """(scheme, seed) in run order: group by group, seed by seed within a group, schemes in table order."""
    order = []
    for group in GROUPS:
        members = [s for s in schemes if SCHEMES[s][0] == group]
        if "base" in members:
            order.append(("base", None))
        for seed in seeds:
            order += [(s, seed) for s in members if s != "base"]
    return order


def row_cost(scheme: str) -> float:
    """Rough relative wall time of one row (epochs, plus scoring; a refresh re-encodes the pools)."""
    settings = SCHEMES[scheme][3]
    epochs = settings.get("epochs", 0)
    return 0.5 + epochs * (2.2 if settings.get("refresh_per_epoch") else 1.0)


def split_plan(plan: list[tuple[str, int | None]], parts: int) -> list[list[tuple[str, int | None]]]:
    """`plan` dealt to at most `parts` lists, each row (in plan order) to the least loaded list so far: every
    part runs the most important rows first and the parts finish close together."""
    loads, out = [0.0] * parts, [[] for _ in range(parts)]
    for item in plan:
        k = min(range(parts), key=lambda i: (loads[i], i))
        out[k].append(item)
        loads[k] += row_cost(item[0])
    return [part for part in out if part]


def encode_rows(items: list[tuple[str, int | None]]) -> str:
    return ",".join(f"{scheme}@{'-' if seed is None else seed}" for scheme, seed in items)


def decode_rows(value: str) -> set[tuple[str, int | None]]:
    out = set()
    for token in (t.strip() for t in value.split(",") if t.strip()):
        scheme, _, seed = token.partition("@")
        out.add((scheme, None if seed in ("", "-") else int(seed)))
    return out


def run_parallel(plan, parts: int, argv: list[str], args, meta: dict, rows: list[dict], path_base: str,
                 started: float) -> None:
    """Run `plan` as `parts` processes of this bench on one device (a small model leaves a GPU mostly idle
    between kernels: several rows at once fill it). Each part writes its own results folder; this process
    merges their rows into the one table every few seconds, so a capped call still leaves a whole table."""
    import shutil
    import signal

    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // parts))
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    procs, part_dirs = [], []
    for k, items in enumerate(split_plan(plan, parts), start=1):
        part_dir = os.path.join(args.results_dir, "parts", str(k))
        shutil.rmtree(part_dir, ignore_errors=True)
        child = [*argv, "--parallel", "1", "--rows", encode_rows(items), "--results-dir", part_dir, "--fresh",
                 "--beir", args.beir]  # the parent's slice and negatives: no part slices or mines again
        if args.negatives:
            child += ["--negatives", args.negatives]
        if args.time_budget is not None:
            child += ["--time-budget", f"{max(0.0, args.time_budget - (time.perf_counter() - started)):.0f}"]
        log(f"part {k}: {len(items)} rows ({sum(row_cost(s) for s, _ in items):.1f} cost units)")
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.usefulness", *child], cwd=REPO,
                                      env=env | {"USEFULNESS_PART": str(k)}))
        part_dirs.append(part_dir)

    def stop(signum, _frame):  # a timeout's TERM: stop the parts, keep the merged table
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        merge()
        raise SystemExit(128 + signum)

    part_files = [os.path.join(d, os.path.basename(path_base) + ".json") for d in part_dirs]
    last = {"stamp": None, "rows": len(rows)}  # the part files' (name, mtime) behind the table last written

    def merge() -> int:
        """Rewrite the one table from the parts' files when one of them changed since the last time."""
        stamp = [(path, os.stat(path).st_mtime_ns) for path in part_files if os.path.exists(path)]
        if stamp != last["stamp"]:
            parts = [json.load(open(path)) for path, _ in stamp]
            merged = list(rows) + [row for part in parts for row in part["rows"]]
            failed = list(meta.get("failed", [])) + [f for part in parts for f in part.get("failed", [])]
            write_table(path_base, meta | ({"failed": failed} if failed else {}), merged)
            last.update(stamp=stamp, rows=len(merged))
        return last["rows"]

    signal.signal(signal.SIGTERM, stop)
    while any(proc.poll() is None for proc in procs):
        merge()
        time.sleep(3)
    log(f"parts finished (exit codes {[proc.returncode for proc in procs]}); {merge()} rows in {path_base}.json")


def summarise(rows: list[dict]) -> dict[str, dict]:
    """scheme -> mean and sample sd of each metric over its seeds, with n and the shared settings."""
    out = {}
    for scheme in SCHEMES:
        mine = [r for r in rows if r["scheme"] == scheme]
        if not mine:
            continue
        entry = {"n": len(mine), "trainer": mine[0]["trainer"], "negatives": mine[0]["negatives"],
                 "epochs": mine[0]["epochs"], "pairs": mine[0]["pairs"],
                 "train_s": round(statistics.fmean(r["train_s"] for r in mine), 1)}
        for metric in (*METRICS, *(f"dev_{m}" for m in METRICS)):
            values = [r[metric] for r in mine if metric in r]
            if len(values) != len(mine):
                continue  # no dev split in this run
            entry[metric] = round(statistics.fmean(values), 5)
            entry[metric + "_sd"] = round(statistics.stdev(values), 5) if len(values) > 1 else None
        out[scheme] = entry
    return out


def best_by(entries: dict[str, dict]) -> tuple[str, str]:
    """(scheme, how it was chosen): the highest dev nDCG@10 when every entry has one (ties: test nDCG@10,
    then name), else the highest test nDCG@10 (a run without a dev split chooses on test and says so)."""
    if all("dev_ndcg@10" in e for e in entries.values()):
        return max(sorted(entries), key=lambda s: (entries[s]["dev_ndcg@10"], entries[s]["ndcg@10"])), "dev"
    return max(sorted(entries), key=lambda s: entries[s]["ndcg@10"]), "test"


def goals(summary: dict[str, dict]) -> list[str]:
    """The issue's goals, checked on what this run has (a goal whose rows are missing says so). The best
    negforge recipe is chosen on dev nDCG@10 (on test when no dev is held out, and the line says so); the
    anchor is the strongest st_* row on test (anchors are not tuned here: the strongest is the highest bar).
    At 3 epochs the default train preset's row is judged too: fixed before the run, it is chosen on nothing."""
    lines = []
    nf = {s: e for s, e in summary.items() if s.startswith("nf_")}
    for epochs in (1, 3):
        st = {s: e for s, e in summary.items() if s in ANCHORS and e["epochs"] == epochs}
        ours = {s: e for s, e in nf.items() if e["epochs"] == epochs}
        if not st or not ours:
            lines.append(f"- {epochs} epoch(s): not enough rows to compare")
            continue
        anchor = max(sorted(st), key=lambda s: st[s]["ndcg@10"])
        best_nf, chosen_on = best_by(ours)
        judged = [(best_nf, "best chosen on dev nDCG@10, test reported" if chosen_on == "dev"
                   else "best chosen on test, no dev split")]
        if epochs == 3 and DEFAULT_RECIPE in ours and DEFAULT_RECIPE != best_nf:
            judged.append((DEFAULT_RECIPE, "the default train preset, fixed before this run"))
        for name, how in judged:
            gap = ours[name]["ndcg@10"] - st[anchor]["ndcg@10"]
            verdict = "met" if gap >= 0.01 and (epochs == 1 or ours[name]["ndcg@10"] >= 0.72) else "not met"
            lines.append(f"- {epochs} epoch(s): negforge `{name}` {ours[name]['ndcg@10']:.4f} vs strongest st_* "
                         f"`{anchor}` {st[anchor]['ndcg@10']:.4f}: {gap:+.4f} (goal: >= +0.01"
                         f"{' and >= 0.72' if epochs == 3 else ''}: {verdict}; {how})")
    for ours_name, anchor in (("nf_hard_st", "st_mined"), ("nf_hard_st_3ep", "st_mined_3ep")):
        if ours_name in summary and anchor in summary:
            a, b = summary[ours_name]["ndcg@10"], summary[anchor]["ndcg@10"]
            lines.append(f"- same trainer (ST's): `{ours_name}` {a:.4f} vs `{anchor}` {b:.4f} "
                         f"({'met' if a >= b else 'not met'})")
    return lines


def write_table(path_base: str, meta: dict, rows: list[dict]) -> None:
    summary = summarise(rows)
    payload = {**meta, "rows": rows, "summary": summary}
    with open(path_base + ".json.partial", "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(path_base + ".json.partial", path_base + ".json")

    def cell(entry: dict, metric: str) -> str:
        if metric not in entry:
            return "–"
        sd = entry[metric + "_sd"]
        return f"{entry[metric]:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")

    lines = [
        f"SciFact test (nDCG@10, MRR@10, Recall@100; mean ± sd over seeds){' -- QUICK SLICE, measures nothing' if meta['quick'] else ''}.",  # noqa: E501
        f"git {meta['git_sha']}{' (' + meta['git_sha_note'] + ')' if meta.get('git_sha_note') else ''}; "
        f"{meta['machine']}; `{meta['command']}`.",
        f"Budget: batch {meta['budget']['batch_size']}, lr {meta['budget']['lr']}, warmup 10 %, max_seq_length "
        f"{meta['budget']['max_seq_length']}, temperature 0.05 (scale 20) unless named, 3 negatives per pair; every "
        f"row trains on the same SciFact train pairs from the same base model ({dev_note(meta)}).",
        *([f"train s: wall seconds with up to {meta['parallel']} rows sharing the device at once (--parallel)."]
          if meta.get("parallel", 1) > 1 else []),
        "",
        "| scheme | trainer | negatives | epochs | pairs | seeds | dev nDCG@10 | nDCG@10 | MRR@10 | Recall@100 "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scheme, entry in summary.items():
        lines.append(f"| `{scheme}` | {entry['trainer']} | {entry['negatives']} | {entry['epochs']} "
                     f"| {entry['pairs']} | {entry['n']} | {cell(entry, 'dev_ndcg@10')} | {cell(entry, 'ndcg@10')} | "
                     f"{cell(entry, 'mrr@10')} | {cell(entry, 'recall@100')} | {entry['train_s']} |")
    missing = [s for s in meta["schemes"] if s not in summary]
    if missing:
        lines += ["", f"Not run (time budget or not asked for): {', '.join(missing)}."]
    for failure in meta.get("failed", []):
        lines.append(f"- FAILED: `{failure['scheme']}` seed {failure['seed']}: {failure['error']}")
    lines += ["", "Goals (issue 16):", *goals(summary)]
    with open(path_base + ".md", "w") as handle:
        handle.write("\n".join(lines) + "\n")


def dev_note(meta: dict) -> str:
    dev = meta.get("dev") or {}
    if not dev.get("queries"):
        return "no dev hold-out"
    return (f"{dev['queries']} of the train queries ({dev['fraction']:g}, seed {dev['seed']}) held out of training "
            "for every row as dev; columns other than dev nDCG@10 are test")


def _settings_key(args) -> dict:
    return {"quick": args.quick, "beir": os.path.abspath(args.beir), "model": args.model,
            "negatives_rows": args.negatives_rows, "dev_fraction": args.dev_fraction, "dev_seed": args.dev_seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.usefulness", description=__doc__.split("\n")[0])
    parser.add_argument("--schemes", default=None, help=f"comma-separated from {','.join(SCHEMES)} (default all)")
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated from " + ",".join(GROUPS))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2,3; --quick 1,2)")
    parser.add_argument("--quick", action="store_true", help="a small slice and 3 steps: a smoke run")
    parser.add_argument("--beir", default=None,
                        help="BEIR folder of the full SciFact (not shipped); --quick defaults to data/scifact-sample")
    parser.add_argument("--negatives", default=None, help="compact negatives Parquet (trainer.data.compact_negatives)")
    parser.add_argument("--run-dir", default=None, help="a finished `negforge build` RUN_DIR of the BEIR train split")
    parser.add_argument("--pool-run-dir", default=None,
                        help="the same build with --hard 8: the deeper hard pool of *pool8* rows (mined if absent)")
    parser.add_argument("--model", default="bundled", help="'bundled' or a sentence-transformers folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default 512 on cuda, 64 on cpu")
    parser.add_argument("--time-budget", type=float, default=None, help="start no row after this many seconds")
    parser.add_argument("--workdir", default=None, help="mining run and logs (default runs/usefulness[-quick])")
    parser.add_argument("--results-dir", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--fresh", action="store_true", help="ignore rows of an earlier run")
    parser.add_argument("--dev-fraction", type=float, default=DEV_FRACTION,
                        help="share of the train queries held out of training for every row and scored as dev "
                             "(picks the best recipe; 0: none)")
    parser.add_argument("--dev-seed", type=int, default=DEV_SEED, help="seed of the dev hold-out (by query id)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="rows at once, each its own process on the same device (a GPU: 4-6 fill an H100)")
    parser.add_argument("--rows", default=None, help=argparse.SUPPRESS)  # a part of --parallel: scheme@seed,...
    args = parser.parse_args(argv)
    if not 0.0 <= args.dev_fraction < 1.0:
        parser.error(f"--dev-fraction must be in [0, 1), got {args.dev_fraction}")
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    process_started = time.perf_counter()
    if args.beir is None:
        if not args.quick:
            parser.error("--beir SCIFACT_DIR is required for the table (the full SciFact is not shipped)")
        args.beir = SAMPLE

    if args.schemes:
        schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    else:
        groups = {g.strip() for g in args.groups.split(",") if g.strip()}
        schemes = [s for s, spec in SCHEMES.items() if spec[0] in groups and (not args.quick or s in QUICK_SCHEMES)]
    unknown = sorted(set(schemes) - set(SCHEMES))
    if unknown:
        parser.error(f"unknown scheme(s) {unknown}; allowed: {','.join(SCHEMES)}")
    seeds = [int(s) for s in (args.seeds or ("1,2" if args.quick else "1,2,3")).split(",") if s.strip()]
    suffix = "-quick" if args.quick else ""
    args.workdir = args.workdir or os.path.join(REPO, "runs", f"usefulness{suffix}")
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)

    import torch

    from trainer.loop import resolve_device

    args.torch_device = resolve_device(args.device)
    args.device = args.torch_device.type
    if args.torch_device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls; weights, optimizer and loss stay fp32
        torch.backends.cudnn.allow_tf32 = True
    args.eval_batch_size = args.eval_batch_size or (512 if args.torch_device.type == "cuda" else 64)

    needs_negatives = any(SCHEMES[s][1] == "negforge" or isinstance(SCHEMES[s][3].get("st"), tuple) for s in schemes)
    hard_pool = max((SCHEMES[s][3].get("hard_pool", HARD_POOL) for s in schemes), default=HARD_POOL)
    if args.quick and args.negatives is None and args.run_dir is None and args.rows is None:
        # given negatives come with their slice; a --parallel part gets its parent's slice as --beir
        args.beir = write_slice(args.beir, os.path.join(args.workdir, "beir_slice"), seed=13)
    if args.negatives is None and needs_negatives:
        if args.run_dir is None:  # mine here (Beam)
            args.run_dir = os.path.join(args.workdir, "run_train")
            mine(args.beir, args.run_dir, quick=args.quick)
        if hard_pool > HARD_POOL and args.pool_run_dir is None:
            args.pool_run_dir = os.path.join(args.workdir, f"run_train_hard{hard_pool}")
            mine(args.beir, args.pool_run_dir, quick=args.quick, extra=("--hard", str(hard_pool)))
        args.negatives = os.path.join(args.workdir, "negatives.parquet")
        count = compact_with_pool(args.run_dir, args.pool_run_dir if hard_pool > HARD_POOL else None, args.negatives)
        log(f"{count} negatives of {args.run_dir} (+ pool {args.pool_run_dir}) -> {args.negatives}")
    args.negatives_rows = 0
    if args.negatives:
        import pyarrow.parquet as pq

        args.negatives_rows = pq.ParquetFile(args.negatives).metadata.num_rows

    import sentence_transformers
    import transformers

    meta = {
        "git_sha": git_sha(),
        "code_digest": code_digest(),  # `python -c "import bench.usefulness as u; print(u.code_digest())"` at a commit
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
                   + (torch.cuda.get_device_name(0) if args.torch_device.type == "cuda" else "cpu only"),
        "command": " ".join(["python", "-m", "bench.usefulness", *(sys.argv[1:] if argv is None else argv)]),
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__},
        "budget": BUDGET | (QUICK_BUDGET if args.quick else {}),
        "mining_flags": MINING_FLAGS, "st_mining": ST_MINING, "seeds": seeds, "schemes": schemes,
        "settings": _settings_key(args), "quick": args.quick, "parallel": args.parallel,
    }
    path_base = os.path.join(args.results_dir, f"usefulness{suffix}")
    rows: list[dict] = []
    if os.path.exists(path_base + ".json") and not args.fresh:
        earlier = json.load(open(path_base + ".json"))
        if earlier.get("git_sha") == meta["git_sha"] and earlier.get("settings") == meta["settings"]:
            rows = earlier["rows"]
            log(f"resuming: {len(rows)} rows of {path_base}.json kept")
        else:
            log(f"{path_base}.json is from another commit or settings; starting a fresh table")
    done = {(r["scheme"], r["seed"]) for r in rows}
    plan = [item for item in schedule(schemes, seeds) if item not in done]
    if args.rows is not None:  # one part of a --parallel run
        wanted = decode_rows(args.rows)
        plan = [item for item in plan if item in wanted]
    log(f"{len(plan)} rows to run on {args.device} ({len(done)} done); negatives {args.negatives}")
    bench = Bench(args)
    meta["dev"] = {"fraction": args.dev_fraction, "seed": args.dev_seed, "queries": len(bench.dev_queries),
                   "train_pairs": len(bench.pairs)}
    log(f"train pairs {len(bench.pairs)} (dev: {len(bench.dev_queries)} queries held out), test queries "
        f"{len(bench.test_queries)}, corpus {len(bench.corpus)}")
    if args.parallel > 1 and len(plan) > 1:
        run_parallel(plan, args.parallel, list(sys.argv[1:] if argv is None else argv), args, meta, rows, path_base,
                     process_started)
        log(f"table: {path_base}.md ({time.perf_counter() - process_started:.0f} s)")
        return 0
    for number, (scheme, seed) in enumerate(plan, start=1):
        elapsed = time.perf_counter() - process_started
        if args.time_budget is not None and elapsed > args.time_budget:
            log(f"time budget {args.time_budget:.0f} s spent ({elapsed:.0f} s): {len(plan) - number + 1} rows left")
            break
        try:
            row = bench.run_row(scheme, seed)
        except Exception as error:  # one broken row must not cost the rest of a capped device call
            import traceback

            traceback.print_exc()
            meta.setdefault("failed", []).append({"scheme": scheme, "seed": seed, "error": repr(error)[:500]})
            log(f"[{number}/{len(plan)}] {scheme} seed {seed}: FAILED ({error!r:.200}); going on")
            write_table(path_base, meta, rows)
            continue
        if scheme == "base" and not args.quick:
            row["reproduces_reference"] = abs(row["ndcg@10"] - REFERENCE_NDCG) <= REFERENCE_TOLERANCE
        rows.append(row)
        write_table(path_base, meta, rows)
        dev = f"dev nDCG@10 {row['dev_ndcg@10']:.4f} " if "dev_ndcg@10" in row else ""
        log(f"[{number}/{len(plan)}] {scheme} seed {seed}: {dev}nDCG@10 {row['ndcg@10']:.4f} "
            f"MRR@10 {row['mrr@10']:.4f} R@100 {row['recall@100']:.4f} pairs {row['pairs']} "
            f"train {row['train_s']:.1f} s "
            f"wall {row['wall_s']:.1f} s")
    write_table(path_base, meta, rows)
    log(f"table: {path_base}.md ({len(rows)} rows, {time.perf_counter() - process_started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
