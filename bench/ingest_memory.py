"""Per-worker memory of the ingest stage alone against corpus size (issue 12, item 3).

    python bench/ingest_memory.py --docs 100000 400000 --corpora /work/scale-run --workdir /tmp/ingest3-scale
    python bench/ingest_memory.py --docs 100000 --code /tmp/ingest3-base --label before   # another checkout

Runs `run_ingest` (pipelines/stage_ingest.py) on the synthetic BEIR corpora of bench/scale.py (corpora/beir-N,
written there with scale.write_corpus when missing) with `--direct_running_mode multi_processing
--direct_num_workers 2`, in a child process whose code comes from --code (default: this checkout), so an older
commit extracted elsewhere (`git archive COMMIT | tar -x -C DIR`) is measured the same way. Every 0.2 s it
reads /proc/PID/status of the runner (the child) and of each SDK worker (its descendants running
sdk_worker_main) and keeps each one's peak VmRSS, RssAnon and RssFile (peaks taken apart, so anon + file may
exceed the total peak). Prints one JSON line per size with `uptime`'s load and writes
bench/results/ingest_memory[_LABEL].json. Each size takes a minute or two on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2**20
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of a process in bytes ({} once it is gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in FIELDS:
                    values[name] = int(rest.split()[0]) * 1024
    except OSError:
        return {}
    return values


def _descendants(pid: int) -> list[int]:
    """Every process below pid (children of any of its threads: the runner starts workers from threads)."""
    children = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children += [int(p) for p in handle.read().split()]
        except OSError:
            continue
    return children + [d for child in children for d in _descendants(child)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class Sampler(threading.Thread):
    """Peaks of each field for the runner process and for each SDK worker process."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.runner: dict[str, int] = {}
        self.workers: dict[int, dict[str, int]] = {}
        self._halt = threading.Event()

    @staticmethod
    def _keep(peaks: dict[str, int], values: dict[str, int]) -> None:
        for name, value in values.items():
            peaks[name] = max(peaks.get(name, 0), value)

    def run(self) -> None:
        while not self._halt.is_set():
            self._keep(self.runner, _status(self.pid))
            for child in _descendants(self.pid):
                if child in self.workers or "sdk_worker_main" in _cmdline(child):
                    self._keep(self.workers.setdefault(child, {}), _status(child))
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _mib(peaks: dict[str, int]) -> dict[str, float]:
    return {f"{name}_mib": round(peaks.get(name, 0) / MIB, 1) for name in FIELDS}


def _top_bundles(trace_dir: str, top: int = 6) -> list[dict]:
    """The worker bundles that grew the RSS most (bench/trace_site records), largest first."""
    records = []
    for name in sorted(os.listdir(trace_dir)) if os.path.isdir(trace_dir) else []:
        with open(os.path.join(trace_dir, name), encoding="utf-8") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    for record in records:
        record["growth_mib"] = round(record["peak_mib"] - record["start_mib"], 1)
    return sorted(records, key=lambda r: -r["growth_mib"])[:top]


def measure(beir: str, out_dir: str, code: str, trace_dir: str | None = None) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=code, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    if trace_dir:  # per-bundle peaks inside the SDK workers (bench/trace_site/sitecustomize.py)
        shutil.rmtree(trace_dir, ignore_errors=True)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "bench", "trace_site"), code])
        env["NEGFORGE_BUNDLE_TRACE"] = trace_dir
    command = [sys.executable, os.path.abspath(__file__), "--child", beir, out_dir]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(process.pid)
    sampler.start()
    output = process.communicate()[0]
    sampler.stop()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"ingest failed ({process.returncode}):\n{output[-4000:]}")
    summary = json.loads(output.strip().splitlines()[-1])
    # A worker's launcher shell (a few MiB, same command line) is not a worker.
    workers = [_mib(p) for _, p in sorted(sampler.workers.items()) if p.get("VmRSS", 0) > 32 * MIB]
    return {
        **({"bundle_trace": _top_bundles(trace_dir)} if trace_dir else {}),
        "wall_s": round(wall, 1),
        "docs_written": summary["docs"],
        "runner": _mib(sampler.runner),
        "workers": workers,
        "worker_peak_mib": max((w["VmRSS_mib"] for w in workers), default=0.0),
        "worker_peak_anon_mib": max((w["RssAnon_mib"] for w in workers), default=0.0),
    }


TARGET_DOCS = 10_000_000


def figures(runs: list[dict]) -> dict:
    """Least-squares line of each peak against docs and its value at 10M docs (GiB); needs two sizes."""
    if len({r["docs"] for r in runs}) < 2:
        return {}
    xs = [r["docs"] for r in runs]
    series = {
        "worker_peak": [r["worker_peak_mib"] for r in runs],
        "worker_peak_anon": [r["worker_peak_anon_mib"] for r in runs],
        "runner_peak": [r["runner"]["VmRSS_mib"] for r in runs],
    }
    mean_x = sum(xs) / len(xs)
    out = {}
    for name, ys in series.items():
        mean_y = sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
        at_target = mean_y + slope * (TARGET_DOCS - mean_x)
        out[name] = {"mib_per_million_docs": round(slope * 1e6, 1), "gib_at_10m": round(at_target / 1024, 2)}
    return out


def child(beir: str, out_dir: str) -> None:
    """Run the ingest stage of `beir` into out_dir on 2 worker processes; print its summary as JSON."""
    from pipelines.stage_ingest import run_ingest
    from schemas.build_config import BuildConfig, IngestConfig
    from schemas.layout import RunLayout

    out = RunLayout(out_dir)
    config = BuildConfig(output=out_dir, ingest=IngestConfig(beir_dir=beir, split="train"))
    args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    summary = run_ingest(config, out, out, args)
    print(json.dumps({k: summary[k] for k in ("docs", "queries", "pairs")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--corpora", default="/work/scale-run", help="folder holding beir-<docs>/ (read only)")
    parser.add_argument("--workdir", default="/tmp/ingest3-scale", help="run folders and missing corpora")
    parser.add_argument("--code", default=REPO, help="checkout whose negforge code runs the stage")
    parser.add_argument("--label", default=None, help="results file suffix (ingest_memory_LABEL.json)")
    parser.add_argument("--trace-bundles", action="store_true",
                        help="also record each SDK worker bundle's peak (bench/trace_site); slower")
    parser.add_argument("--child", nargs=2, metavar=("BEIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    os.makedirs(args.workdir, exist_ok=True)
    runs = []
    for docs in args.docs:
        beir = os.path.join(args.corpora, f"beir-{docs}")
        if not os.path.exists(beir + ".complete"):
            from scale import prepare_corpus

            beir = prepare_corpus(args.workdir, docs)
        load = [round(x, 2) for x in os.getloadavg()]
        result = {"docs": docs, "code": args.code, "load_average_1_5_15": load,
                  **measure(beir, os.path.join(args.workdir, f"run-{args.label or 'now'}-{docs}"), args.code,
                            os.path.join(args.workdir, f"trace-{docs}") if args.trace_bundles else None)}
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result), flush=True)
        runs.append(result)
    name = "ingest_memory" + (f"_{args.label}" if args.label else "")
    beam_flags = "--direct_running_mode multi_processing --direct_num_workers 2"
    path = write_results(name, {"beam": beam_flags, "runs": runs, "figures": figures(runs)})
    print(json.dumps(figures(runs)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
