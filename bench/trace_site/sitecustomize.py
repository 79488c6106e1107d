"""Peak RSS per bundle inside each Beam SDK worker process (bench/scale.py --trace-bundles; not part of negforge).

Put this folder first on PYTHONPATH and set NEGFORGE_BUNDLE_TRACE=DIR: in a process started as
`python -m apache_beam.runners.worker.sdk_worker_main`, BundleProcessor.process_bundle is wrapped and a thread
samples the RSS every 20 ms; each bundle appends one JSON line to DIR/<pid>.jsonl: the fused stage's transform
names, RSS at its start and end, and the peak while it ran (MiB). Other processes are left alone.
"""

from __future__ import annotations

import json
import os
import threading
import time


def _is_sdk_worker() -> bool:
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            return b"sdk_worker_main" in handle.read()
    except OSError:
        return False


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stage_names(descriptor) -> list[str]:
    """The distinct user-level transform names of a fused stage (two path levels, Beam's internals dropped)."""
    names = set()
    for transform in descriptor.transforms.values():
        name = transform.unique_name
        if not name or name.startswith("ref_"):
            continue
        names.add("/".join(name.split("/")[:3]))
    return sorted(names)


def _install(folder: str) -> None:
    from apache_beam.runners.worker import bundle_processor

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{os.getpid()}.jsonl")
    state = {"peak": 0.0}
    lock = threading.Lock()

    def sample() -> None:
        while True:
            rss = _rss_mib()
            with lock:
                state["peak"] = max(state["peak"], rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True, name="negforge-rss").start()
    original = bundle_processor.BundleProcessor.process_bundle

    def process_bundle(self, instruction_id, *args, **kwargs):
        start = _rss_mib()
        with lock:
            state["peak"] = start
        began = time.monotonic()
        try:
            return original(self, instruction_id, *args, **kwargs)
        finally:
            end = _rss_mib()
            with lock:
                peak = max(state["peak"], end)
            record = {"stage": _stage_names(self.process_bundle_descriptor), "start_mib": round(start, 1),
                      "peak_mib": round(peak, 1), "end_mib": round(end, 1),
                      "seconds": round(time.monotonic() - began, 2), "t_end": round(time.time(), 2)}
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    bundle_processor.BundleProcessor.process_bundle = process_bundle


if os.environ.get("NEGFORGE_BUNDLE_TRACE") and _is_sdk_worker():
    _install(os.environ["NEGFORGE_BUNDLE_TRACE"])
