"""Fill the folder the GPU run of the usefulness table carries (bench/usefulness_device.sh reads it).

    python -m bench.usefulness_prepare --beir SCIFACT_DIR --run-dir RUN_DIR --pool-run-dir RUN_DIR_HARD8 --out .gpu

Writes (each step skipped when its output is already there, unless --force):
  OUT/wheels/            datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19 for CPython 3.12 (pip download;
                         the GPU box lacks them and sentence-transformers' trainer needs `datasets`)
  OUT/model/minilm_fp16/ the bundled all-MiniLM-L6-v2 in fp16 (~45 MB; trainer.loop casts it to fp32)
  OUT/data/scifact/      corpus.jsonl.gz, queries.jsonl, qrels/{train,test}.tsv
  OUT/data/negatives.parquet  the RUN_DIR's hard, semi_hard, random and contextual negatives as ids
                         (texts only for contextual edits): trainer.data.compact_negatives, plus each pair's
                         hard negatives 4-8 from RUN_DIR_HARD8 (the same flags, --hard 8); mined for every
                         train query: bench.usefulness's dev queries (--dev-fraction) simply go unused
and checks the folder stays under 60 MiB (the device call carries 64 MiB with the repository).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys

WHEELS = ("datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT_MIB = 60


def folder_mib(path: str) -> float:
    total = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return total / 2**20


def wheels(out: str, force: bool) -> None:
    folder = os.path.join(out, "wheels")
    os.makedirs(folder, exist_ok=True)
    for spec in WHEELS:
        name = spec.split("==")[0]
        if not force and any(f.startswith(name + "-") and f.endswith(".whl") for f in os.listdir(folder)):
            continue
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", folder, spec],
                       check=True)


def model(out: str, force: bool) -> None:
    folder = os.path.join(out, "model", "minilm_fp16")
    if os.path.exists(os.path.join(folder, "model.safetensors")) and not force:
        return
    from trainer.loop import load_base_model

    base = load_base_model("bundled", __import__("torch").device("cpu"))
    base.half()
    base.save(folder)


def data(out: str, beir: str, force: bool) -> None:
    folder = os.path.join(out, "data", "scifact")
    if os.path.exists(os.path.join(folder, "corpus.jsonl.gz")) and not force:
        return
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(beir, "corpus.jsonl"), "rb") as src, gzip.open(
        os.path.join(folder, "corpus.jsonl.gz"), "wb", compresslevel=9
    ) as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(os.path.join(beir, "queries.jsonl"), folder)
    for split in ("train", "test"):
        shutil.copy(os.path.join(beir, "qrels", f"{split}.tsv"), os.path.join(folder, "qrels"))


def negatives(out: str, run_dir: str, pool_run_dir: str | None, force: bool) -> int:
    from bench.usefulness import compact_with_pool

    path = os.path.join(out, "data", "negatives.parquet")
    if os.path.exists(path) and not force:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if not os.path.exists(os.path.join(run_dir, "manifest.json")):
        raise SystemExit(f"{run_dir} has no manifest.json: is `negforge build` finished?")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    count = compact_with_pool(run_dir, pool_run_dir, path)
    print(f"{count} negatives of {run_dir} (+ deeper hard pool of {pool_run_dir}) -> {path}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.usefulness_prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".gpu", help="the carried folder (ignore it in git)")
    parser.add_argument("--run-dir", default=None, help="finished `negforge build` RUN_DIR of SciFact train")
    parser.add_argument("--pool-run-dir", default=None,
                        help="the same build with --hard 8 (the *pool8* rows' deeper hard pool)")
    parser.add_argument("--beir", required=True, help="BEIR folder of the full SciFact (not shipped)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    wheels(args.out, args.force)
    model(args.out, args.force)
    data(args.out, args.beir, args.force)
    if args.run_dir:
        negatives(args.out, args.run_dir, args.pool_run_dir, args.force)
    elif not os.path.exists(os.path.join(args.out, "data", "negatives.parquet")):
        print("no --run-dir: data/negatives.parquet still missing", file=sys.stderr)
    size = folder_mib(args.out)
    print(f"{args.out}: {size:.1f} MiB")
    if size > LIMIT_MIB:
        raise SystemExit(f"{args.out} is {size:.1f} MiB, over {LIMIT_MIB}: the device call carries 64 MiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
