"""Peak memory of one shard build (FillShardFn's work), before and after the streaming build, in subprocesses.

    python bench/shard_build_memory.py                      # 200k x 384 random unit vectors, one shard, Flat
    python bench/shard_build_memory.py --docs 50000 --factory IVF256,PQ48

Modes (each in its own process; peak = VmHWM after a reset, minus the RSS before the shard's blocks exist):
- before: the blocks as a list (what CoGroupByKey handed FillShardFn), then the pre-streaming code: one sorted
  copy of the shard (sorted_shard), then faiss add() in chunks into a third copy (fill_shard before it streamed).
- list: the blocks as a list (runners that hand a group over as a list), then transforms.index.build_shard.
- paged: the blocks as a re-iterable that produces them again on each pass, as runners that page a large group
  from shuffle (state-backed iterables) do, then build_shard.
Every mode writes the shard files (write_shard) inside the measured window.
Writes bench/results/shard_build_memory.json (other factories: shard_build_memory_<factory>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402

from schemas.layout import RunLayout  # noqa: E402
from transforms import index as ix  # noqa: E402

MIB = 2**20
BLOCK = 4096  # rows per DocBlock, IndexConfig.block_size


def rss_mib() -> dict:
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "VmHWM")):
                name, value, _ = line.split()
                values[name.rstrip(":")] = int(value) / 1024
    return values


def make_block(number: int, docs: int, dim: int) -> ix.DocBlock:
    """Block `number` of a synthetic shard: ids shuffled across blocks (so the build must sort), unit vectors."""
    rows = np.arange(number * BLOCK, min(docs, (number + 1) * BLOCK))
    ids = np.array([f"doc-{(r * 7919) % docs:09d}" for r in rows], dtype=object)
    vectors = np.random.default_rng(number).standard_normal((len(rows), dim)).astype(np.float32)  # [b, dim]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ix.DocBlock(ids, vectors, ids.copy())


class Paged:
    """A re-iterable of the shard's blocks that makes each block again on every pass (nothing held between)."""

    def __init__(self, docs: int, dim: int) -> None:
        self.docs, self.dim = docs, dim

    def __iter__(self):
        for number in range(-(-self.docs // BLOCK)):
            yield make_block(number, self.docs, self.dim)


def old_fill(trained: bytes, parts: list, dim: int):
    """The pre-streaming FillShardFn: sorted_shard (a sorted copy) then chunked add() into the index (a third)."""
    docs = ix.sorted_shard(parts, dim)
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    for start in range(0, len(docs), 65_536):
        index.add(np.ascontiguousarray(docs.vectors[start : start + 65_536]))
    return index, docs


def worker(mode: str, docs: int, dim: int, factory: str, out_dir: str) -> dict:
    sample = ix.concat_blocks(list(Paged(min(docs, 20_000), dim)), dim)  # trained before the window
    trained = ix.train_index(factory, dim, sample)
    del sample
    before = rss_mib()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := current RSS
    started = time.perf_counter()
    if mode == "paged":
        parts = Paged(docs, dim)
    else:
        parts = list(Paged(docs, dim))
    if mode == "before":
        index, shard = old_fill(trained, parts, dim)
    else:
        index, shard = ix.build_shard(trained, parts, dim)
    ix.write_shard(RunLayout(out_dir), 0, 1, index, shard)
    elapsed = time.perf_counter() - started
    peak = rss_mib()["VmHWM"]
    shard_mib = docs * dim * 4 / MIB
    return {
        "mode": mode,
        "docs": docs,
        "dim": dim,
        "factory": factory,
        "seconds": round(elapsed, 2),
        "rss_before_mib": round(before, 1),
        "peak_mib": round(peak, 1),
        "peak_over_before_mib": round(peak - before, 1),
        "shard_vectors_mib": round(shard_mib, 1),
        "peak_in_shard_copies": round((peak - before) / shard_mib, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--factory", default="Flat")
    parser.add_argument("--modes", default="before,list,paged")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with tempfile.TemporaryDirectory() as out_dir:
            os.makedirs(os.path.join(out_dir, "index"))
            print(json.dumps(worker(args.worker, args.docs, args.dim, args.factory, out_dir)))
        return
    load = os.getloadavg()
    rows = []
    for mode in args.modes.split(","):
        command = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--docs", str(args.docs),
                   "--dim", str(args.dim), "--factory", args.factory]
        result = subprocess.run(command, capture_output=True, text=True, check=True,
                                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    name = "shard_build_memory" + ("" if args.factory == "Flat" else "_" + args.factory.replace(",", "_"))
    write_results(name, {"load_average": load, "rows": rows})


if __name__ == "__main__":
    main()
