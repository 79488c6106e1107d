"""GenerateContextualNegatives in Beam: rows, dead letters, metrics, and the same output in-process and with
two worker processes (DirectRunner multi_processing). Tiny model, 6 SciFact fixture pairs plus a broken one."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline

from schemas.build_config import CONTEXTUAL_KINDS, ContextualConfig, EmbedConfig
from schemas.negatives import IDENTITY_COLUMNS, rows_to_table
from transforms.contextual.beam import GenerateContextualNegatives, contextual_stats
from transforms.contextual.guard import GuardCounts

FIXTURES = Path(__file__).parent / "fixtures" / "contextual"
SEED = 13


def read_jsonl(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8") as fp:
        return [json.loads(line) for line in fp]


@pytest.fixture(scope="module")
def configs(tiny_model_dir) -> tuple[ContextualConfig, EmbedConfig]:
    contextual = ContextualConfig(per_pair=3, kinds=CONTEXTUAL_KINDS, similarity_band=(0.5, 0.999999))
    return contextual, EmbedConfig(model=tiny_model_dir, max_seq_length=128)


@pytest.fixture(scope="module")
def inputs(tiny_model_dir) -> tuple[list[dict], list[str]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    model.max_seq_length = 128
    pairs = read_jsonl("pairs.jsonl")[:6]
    queries = model.encode_query([p["anchor"] for p in pairs], normalize_embeddings=True)
    positives = model.encode_document([p["positive"] for p in pairs], normalize_embeddings=True)
    elements = [
        {**p, "query_vector": q, "positive_vector": v, "score_positive": float(q @ v)}
        for p, q, v in zip(pairs, queries.astype(np.float32), positives.astype(np.float32))
    ]
    broken = {**elements[0], "query_id": "q-broken", "positive": None}  # a malformed pair: perturbation raises
    return elements + [broken], [row["passage"] for row in read_jsonl("corpus.jsonl")]


def run_pipeline(configs, inputs, out_dir: Path, beam_args: list[str]):
    contextual, embed = configs
    pairs, corpus = inputs
    pipeline = test_pipeline.TestPipeline(options=PipelineOptions(beam_args), blocking=False)
    pair_pcoll = pipeline | "Pairs" >> beam.Create(pairs)
    corpus_pcoll = pipeline | "Corpus" >> beam.Create(corpus)
    rows, deadletter, stats = {"pairs": pair_pcoll, "corpus": corpus_pcoll} | "Contextual" >> (
        GenerateContextualNegatives(contextual, embed, SEED, with_stats=True)
    )
    for name, pcoll in (("rows", rows), ("deadletter", deadletter), ("stats", stats)):
        _ = (
            pcoll
            | f"Json{name}" >> beam.Map(json.dumps, sort_keys=True)
            | f"Write{name}" >> beam.io.WriteToText(str(out_dir / name))
        )
    result = pipeline.run()
    result.wait_until_finish()
    read = {}
    for name in ("rows", "deadletter", "stats"):
        read[name] = [json.loads(line) for path in glob.glob(str(out_dir / f"{name}*")) for line in open(path)]
    return result, read


@pytest.fixture(scope="module")
def in_process(configs, inputs, tmp_path_factory):
    return run_pipeline(configs, inputs, tmp_path_factory.mktemp("in_process"), [])


def identity_map(rows: list[dict]) -> dict[tuple, dict]:
    return {tuple(r[c] for c in IDENTITY_COLUMNS): r for r in rows}


def test_rows_deadletter_and_counts(in_process, configs, inputs):
    result, out = in_process
    rows, deadletter = out["rows"], out["deadletter"]
    assert rows_to_table(rows).num_rows == len(rows) > 0
    per_pair: dict[tuple, int] = {}
    for row in rows:
        per_pair[(row["query_id"], row["positive_id"])] = per_pair.get((row["query_id"], row["positive_id"]), 0) + 1
        assert row["tier"] == "contextual" and row["negative_id"].startswith(f"ctx:{row['positive_id']}:")
    # 5 of 6: pair 0's positive shares no content word with its query, so no sentence carries the match
    assert len(per_pair) == 5 and max(per_pair.values()) <= configs[0].per_pair
    broken = inputs[0][-1]
    assert len(deadletter) == 1 and deadletter[0]["detail"]  # the exception text
    assert {k: deadletter[0][k] for k in ("source", "location", "reason", "raw")} == {
        "source": "contextual",
        "location": f"q-broken/{broken['positive_id']}",
        "reason": "perturbation_failed",
        "raw": "None",
    }
    total = GuardCounts()
    for part in out["stats"]:
        part = part["contextual"]
        counts = GuardCounts(part["pairs"], part["pairs_with_negative"], part["deadletter"])
        counts.candidates, counts.accepted, counts.selected = part["candidates"], part["accepted"], part["selected"]
        counts.rejected = part["rejected_by_kind"]
        total.merge(counts)
    stats = total.as_dict()
    assert stats["pairs"] == 7 and stats["deadletter"] == 1 and stats["pairs_with_negative"] == 5
    assert sum(stats["selected"].values()) == len(rows)
    assert sum(stats["candidates"].values()) == sum(stats["accepted"].values()) + sum(stats["rejected"].values())
    assert contextual_stats(result, CONTEXTUAL_KINDS) == stats  # Beam counters agree with the stats output


@pytest.mark.slow  # two worker processes each import torch, transformers and nltk and load WordNet
def test_multi_processing_runner_gives_the_same_rows(in_process, configs, inputs, tmp_path):
    _, reference = in_process
    args = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    _, out = run_pipeline(configs, inputs, tmp_path, args)
    expected, actual = identity_map(reference["rows"]), identity_map(out["rows"])
    assert actual.keys() == expected.keys() and len(actual) == len(out["rows"])
    for key, row in actual.items():
        assert row["negative"] == expected[key]["negative"] and row["edit"] == expected[key]["edit"]
        for column in ("score_negative", "similarity_to_positive", "score_positive", "lexical_overlap"):
            assert abs(row[column] - expected[key][column]) <= 1e-6
    assert [d["location"] for d in out["deadletter"]] == [d["location"] for d in reference["deadletter"]]
