"""Small inputs for the scale-out tests (gs://, portable runner, threads): a synthetic BEIR folder and row reads."""

from __future__ import annotations

import json
import os
import random

import polars as pl

WORDS = (
    "protein cell gene tumor immune virus brain heart blood liver enzyme receptor signal pathway mutation "
    "therapy vaccine antibody neuron muscle insulin glucose lipid membrane kinase stress sleep diet exercise "
    "bacteria infection cancer risk dose trial mouse human child adult aging memory"
).split()

# Flags of every scale-out test build: 2 shards, contextual generation on (the shared model sees concurrent
# encode calls from both embedding and contextual generation), small encode batches (more calls).
BUILD_FLAGS = ("--split", "train", "--num-shards", "2", "--contextual", "1", "--embed-batch-size", "4")
BEIR_SIZE = {"docs": 48, "queries": 10}

ROW_KEY = ["query_id", "positive_id", "negative_id", "tier", "rank", "generator"]


def write_beir(folder: str, docs: int = 60, queries: int = 12, seed: int = 0, words: int = 14) -> str:
    """BEIR layout (corpus.jsonl, queries.jsonl, qrels/train.tsv) of random texts; query i judges doc 3i."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w") as handle:
        for i in range(docs):
            text = " ".join(rng.choice(WORDS) for _ in range(words))
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(os.path.join(folder, "queries.jsonl"), "w") as handle:
        for i in range(queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": " ".join(rng.choice(WORDS) for _ in range(5))}) + "\n")
    with open(os.path.join(folder, "qrels", "train.tsv"), "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for i in range(queries):
            handle.write(f"q{i}\td{(3 * i) % docs}\t1\n")
    return folder


def negative_rows(run_dir: str) -> pl.DataFrame:
    """Every tier's rows of a RUN_DIR (local or gs://), sorted by ROW_KEY."""
    from audit.load import scan_negatives

    return scan_negatives(run_dir).collect().sort(ROW_KEY)


def assert_same_rows(left: pl.DataFrame, right: pl.DataFrame) -> None:
    assert left.height > 0
    assert left.select(ROW_KEY).equals(right.select(ROW_KEY))
    for column in ("score_negative", "score_positive"):
        if column in left.columns:
            assert (left[column] - right[column]).abs().max() <= 1e-4, column
    assert left["negative"].equals(right["negative"])  # negative rows keep their texts


def build(beir: str, run_dir: str, model: str, *extra: str) -> int:
    """`negforge build` with BUILD_FLAGS; extra: more negforge flags or Beam flags (--runner ...)."""
    from pipelines.cli import main

    return main(["build", "--beir", beir, "--model", model, "--output", run_dir, *BUILD_FLAGS, *extra])
