#!/usr/bin/env bash
# The usefulness table on a bare GPU box, in one Python process (bench/usefulness.py).
#
#   GIT_SHA=<sha> bash bench/usefulness_device.sh [extra bench.usefulness flags]
#
# Pass the sha as a literal: the device's git metadata can lag the carried working tree (140e81b ran as
# "812813e" when GIT_SHA came from `git rev-parse HEAD` there). The table's json also records `code_digest`,
# a sha256 of the sources, to check against `python -c "import bench.usefulness as u; print(u.code_digest())"`.
#
# Run from the repository root with the carried folder $GPU_DIR (default .gpu, ignored by git):
#   .gpu/wheels/*.whl              datasets, dill, multiprocess (cp312; ST's trainer needs `datasets`)
#   .gpu/model/minilm_fp16/        the bundled all-MiniLM-L6-v2 saved in fp16 (cast to fp32 on load)
#   .gpu/data/scifact/             corpus.jsonl.gz, queries.jsonl, qrels/{train,test}.tsv
#   .gpu/data/negatives.parquet    negforge's SciFact train negatives (trainer.data.compact_negatives)
# The box needs python3 with torch, sentence-transformers, transformers, accelerate, pyarrow, pandas, xxhash,
# huggingface-hub; no network, Beam, faiss or Polars. Results (usefulness.json, usefulness.md,
# usefulness.log, env.txt) go flat into $OUT (default runs/device-out). Every finished row is written at
# once: a call cut short still returns the rows done. TIME_BUDGET (s, default 390): no row starts later;
# HARD_LIMIT (s, default TIME_BUDGET + 50) kills the Python process; DEVICE (default cuda); PARALLEL (default 5)
# rows train at once, each in its own process on the one GPU (MiniLM at batch 32 leaves an H100 mostly idle).
# bench.usefulness holds 10 % of the train queries out of training for every row (--dev-fraction, seeded by
# query id) and scores them as dev next to test; pass --dev-fraction 0 for the old all-pairs table.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
GPU_DIR=${GPU_DIR:-.gpu}
OUT=${OUT:-$PWD/runs/device-out}
SITE=${SITE:-/tmp/site}
TIME_BUDGET=${TIME_BUDGET:-390}
HARD_LIMIT=${HARD_LIMIT:-$((TIME_BUDGET + 50))}
DEVICE=${DEVICE:-cuda}
PARALLEL=${PARALLEL:-5}  # rows at once on the one GPU (bench.usefulness --parallel)
RESULTS=${RESULTS:-/tmp/usefulness-results}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$SITE" "$RESULTS"
started=$(date +%s)

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$GPU_DIR"/wheels/*.whl
export PYTHONPATH="$SITE:$PWD${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}"  # EXTRA_: a local rehearsal's blocker
export GIT_SHA=${GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}

"$PYTHON" - >"$OUT/env.txt" 2>&1 <<'EOF' || true
import importlib, platform, sys
print(sys.version.split()[0], platform.platform())
for name in ("torch", "sentence_transformers", "transformers", "accelerate", "datasets", "pyarrow", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:
        print(name, "MISSING", repr(error))
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
cat "$OUT/env.txt"
echo "setup $(($(date +%s) - started)) s"

status=0
# GPU use every 5 s while the table runs: shows whether --parallel fills the device
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 >"$OUT/gpu_use.csv" 2>&1 &
sampler=$!
timeout --signal=TERM --kill-after=10 "$HARD_LIMIT" "$PYTHON" -m bench.usefulness --device "$DEVICE" \
    --beir "$GPU_DIR/data/scifact" --negatives "$GPU_DIR/data/negatives.parquet" \
    --model "$GPU_DIR/model/minilm_fp16" --results-dir "$RESULTS" --workdir /tmp/usefulness-work \
    --time-budget "$TIME_BUDGET" --parallel "$PARALLEL" "$@" 2>&1 | tee "$OUT/usefulness.log" || status=$?
cp "$RESULTS"/usefulness*.json "$RESULTS"/usefulness*.md "$OUT"/ 2>/dev/null || true
for part in "$RESULTS"/parts/*/; do  # each part's own rows, in case the merged table was cut short
    [ -d "$part" ] && cp "$part"usefulness*.json "$OUT/usefulness-part$(basename "$part").json" 2>/dev/null || true
done
kill "$sampler" 2>/dev/null || true
echo "done in $(($(date +%s) - started)) s, exit $status"
exit "$status"
