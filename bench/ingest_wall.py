"""Wall and CPU time of the ingest stage alone on a small input, for several checkouts back to back (issue 15).

    python bench/ingest_wall.py --beir /work/runs/dense_beir --code /work/main . --repeat 4
    python bench/ingest_wall.py --beir data/scifact-sample --code /tmp/base . --label sample

Each run is `pipelines.stage_ingest.run_ingest` with no Beam flags (the local runner, in-process workers, as
bench/mine_dense.py's build runs it), in a fresh child process whose code comes from one --code checkout
(default: this one), so an older commit extracted elsewhere (`git archive COMMIT | tar -x -C DIR`) is timed
the same way. The checkouts alternate, run after run, so load from other work on the machine falls on all of
them alike; each run prints its wall and CPU seconds (CPU: the child's own, steadier under load) next to the
load average. Imports are not timed. Writes bench/results/ingest_wall[_LABEL].json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(beir: str, split: str, out: str) -> None:
    """One timed run_ingest (in the child process); prints one JSON line."""
    import time

    from pipelines.stage_ingest import run_ingest
    from schemas.build_config import BuildConfig, IngestConfig
    from schemas.layout import RunLayout

    layout = RunLayout(out)
    config = BuildConfig(output=out, ingest=IngestConfig(beir_dir=beir, split=split))
    wall, cpu = time.perf_counter(), time.process_time()
    summary = run_ingest(config, layout, layout, [])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "docs": summary["docs"],
                      "queries": summary["queries"], "pairs": summary["pairs"]}))


def timed_run(code: str, beir: str, split: str, workdir: str) -> dict:
    out = os.path.join(workdir, "run")
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.path.abspath(code), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, os.path.abspath(__file__), "--child", beir, split, out]
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir", default="/work/runs/dense_beir", help="BEIR folder (read only)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--code", nargs="+", default=[REPO], help="checkouts whose negforge code runs the stage")
    parser.add_argument("--repeat", type=int, default=3, help="runs per checkout")
    parser.add_argument("--label", default=None, help="results file suffix (ingest_wall_LABEL.json)")
    parser.add_argument("--child", nargs=3, metavar=("BEIR", "SPLIT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    runs: dict[str, list] = {code: [] for code in args.code}
    with tempfile.TemporaryDirectory(prefix="ingest_wall_") as workdir:
        for _ in range(args.repeat):
            for code in args.code:
                result = timed_run(code, os.path.abspath(args.beir), args.split, workdir)
                runs[code].append(result)
                print(json.dumps({"code": code, **result}), flush=True)
    name = "ingest_wall" + (f"_{args.label}" if args.label else "")
    print("wrote", write_results(name, {"inputs": {"beir": args.beir, "split": args.split}, "runs": runs}))


if __name__ == "__main__":
    main()
