"""Peak RSS per bundle inside each Beam SDK worker process (bench/scale.py --trace-bundles; not part of negforge).

Put this folder first on PYTHONPATH and set NEGFORGE_BUNDLE_TRACE=DIR: in a process started as
`python -m apache_beam.runners.worker.sdk_worker_main`, BundleProcessor.process_bundle is wrapped and a thread
samples the resident memory every 20 ms; each bundle appends one JSON line to DIR/<pid>.jsonl: the fused stage's
transform names and, at its start, its end and at the peak while it ran (MiB), the RSS and apart its anonymous
part (RssAnon + RssShmem: what bounds a worker) and its mapped-file part (RssFile: shared libraries and
memory-mapped shard stores, clean pages the kernel can reclaim); each kind's peak is its own. Other processes
are left alone.
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


def _memory_mib() -> dict[str, float]:
    """{"rss", "anon", "file"} in MiB from /proc/self/status (see bench/scale.memory_of)."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields.get("VmRSS", 0.0), "anon": fields.get("RssAnon", 0.0) + fields.get("RssShmem", 0.0),
            "file": fields.get("RssFile", 0.0)}


def _max(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {kind: max(a[kind], b[kind]) for kind in a}


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
    state = {"peak": _memory_mib()}
    lock = threading.Lock()

    def sample() -> None:
        while True:
            now = _memory_mib()
            with lock:
                state["peak"] = _max(state["peak"], now)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True, name="negforge-rss").start()
    original = bundle_processor.BundleProcessor.process_bundle

    def process_bundle(self, instruction_id, *args, **kwargs):
        start = _memory_mib()
        with lock:
            state["peak"] = dict(start)
        began = time.monotonic()
        try:
            return original(self, instruction_id, *args, **kwargs)
        finally:
            end = _memory_mib()
            with lock:
                peak = _max(state["peak"], end)
            record = {"stage": _stage_names(self.process_bundle_descriptor),
                      "seconds": round(time.monotonic() - began, 2), "t_end": round(time.time(), 2)}
            for kind, suffix in (("rss", ""), ("anon", "_anon"), ("file", "_file")):
                record.update({f"start{suffix}_mib": round(start[kind], 1), f"peak{suffix}_mib": round(peak[kind], 1),
                               f"end{suffix}_mib": round(end[kind], 1)})
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    bundle_processor.BundleProcessor.process_bundle = process_bundle


if os.environ.get("NEGFORGE_BUNDLE_TRACE") and _is_sdk_worker():
    _install(os.environ["NEGFORGE_BUNDLE_TRACE"])
