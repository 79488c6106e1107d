"""End to end on the tiny model: RUN_DIR and export loading, the dev split, a short run that lowers the loss,
determinism, save/load, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from schemas.inputs import DOCS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA, passage_of
from schemas.negatives import lexical_overlap, rows_to_table, text_hash
from schemas.train_config import TrainConfig
from trainer.data import load_export, load_run_dir, split_dev
from trainer.loop import train, train_from_source
from trainer.loss import compute_loss_from_embeddings

TOPICS = ["protein", "insulin", "vaccine", "tumor", "neuron", "bone", "kidney", "virus", "enzyme", "liver",
          "heart", "lung", "blood", "muscle", "skin", "brain", "retina", "gene", "cell", "immune",
          "sleep", "diet", "smoking", "exercise", "obesity", "stroke", "malaria", "asthma"]
N_QUERIES = 20


def write_run_dir(root: str) -> str:
    """20 queries (q00 has two positives), 28 docs, 4 tiers of negatives, written like `negforge build` does."""
    docs = [{"doc_id": f"d{i:02d}", "title": t, "text": f"the {t} study measured {t} changes in {t} samples"}
            for i, t in enumerate(TOPICS)]
    for doc in docs:
        doc["passage"] = passage_of(doc["title"], doc["text"])
        doc["text_hash"] = text_hash(doc["passage"])
    queries = [{"query_id": f"q{i:02d}", "text": f"what happens to {TOPICS[i]} in patients"} for i in range(N_QUERIES)]
    pairs = [{"query_id": f"q{i:02d}", "positive_id": f"d{i:02d}", "score": 1} for i in range(N_QUERIES)]
    pairs.append({"query_id": "q00", "positive_id": "d20", "score": 1})
    for name, rows, schema in (("docs", docs, DOCS_SCHEMA), ("queries", queries, QUERIES_SCHEMA),
                               ("pairs", pairs, PAIRS_SCHEMA)):
        os.makedirs(os.path.join(root, "inputs", name))
        pq.write_table(pa.Table.from_pylist(rows, schema), os.path.join(root, "inputs", name, "part-00000.parquet"))
    by_id = {d["doc_id"]: d["passage"] for d in docs}
    rows = []
    for pair in pairs:
        i = int(pair["query_id"][1:])
        plan = {"hard": [(i + 1) % 20, (i + 2) % 20, (i + 3) % 20], "semi_hard": [(i + 5) % 20, (i + 6) % 20],
                "random": [21 + i % 7, 21 + (i + 3) % 7]}
        for tier, indices in plan.items():
            for rank, j in enumerate(indices, start=1):
                if f"d{j:02d}" in ({"d00", "d20"} if i == 0 else {pair["positive_id"]}):
                    continue
                rows.append(_row(pair, queries[i]["text"], by_id, f"d{j:02d}", by_id[f"d{j:02d}"], tier, rank))
        positive = by_id[pair["positive_id"]]
        rows.append(_row(pair, queries[i]["text"], by_id, f"ctx:{pair['positive_id']}:0", "no " + positive,
                         "contextual", None))
    table = rows_to_table(rows)
    for tier in ("hard", "semi_hard", "random", "contextual"):
        folder = os.path.join(root, "negatives", f"tier={tier}")
        os.makedirs(folder)
        pq.write_table(table.filter(pa.compute.equal(table["tier"].cast(pa.string()), tier)),
                       os.path.join(folder, "part-00000.parquet"))
    with open(os.path.join(root, "manifest.json"), "w") as handle:
        json.dump({"schema_version": 1, "seed": 13, "model": "bundled"}, handle)
    return root


def _row(pair, anchor, by_id, negative_id, negative, tier, rank):
    positive = by_id[pair["positive_id"]]
    return {"query_id": pair["query_id"], "positive_id": pair["positive_id"], "negative_id": negative_id,
            "anchor": anchor, "positive": positive, "negative": negative, "tier": tier,
            "rank": rank if tier in ("hard", "semi_hard") else None, "score_positive": 0.8, "score_negative": 0.5,
            "generator": "test", "negative_text_hash": text_hash(negative),
            "lexical_overlap": lexical_overlap(positive, negative)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    return write_run_dir(str(tmp_path_factory.mktemp("run")))


def test_run_dir_loads_pairs_pools_and_positives(run_dir):
    data = load_run_dir(run_dir, ("hard", "random", "contextual"))
    assert len(data.examples) == N_QUERIES + 1 and len(data.corpus) == len(TOPICS)
    assert data.positives_of["q00"] == {"d00", "d20"}
    example = next(e for e in data.examples if (e.query_id, e.positive_id) == ("q05", "d05"))
    assert [n.doc_id for n in example.negatives["hard"]] == ["d06", "d07", "d08"]
    assert set(example.negatives) == {"hard", "random", "contextual"}  # semi_hard was not asked for
    assert data.tier_counts()["contextual"] == N_QUERIES + 1
    assert data.source["manifest"]["seed"] == 13
    with pytest.raises(FileNotFoundError, match="tier 'exported' is not in .*contextual, hard, random, semi_hard"):
        load_run_dir(run_dir, ("exported",))


def test_dev_split_is_seeded_exact_and_removed_from_training(run_dir):
    data = load_run_dir(run_dir, ("hard",))
    train_a, dev_a = split_dev(data, 0.25, seed=7)
    train_b, dev_b = split_dev(data, 0.25, seed=7)
    assert len(dev_a.queries) == 5 and dev_a.queries == dev_b.queries
    assert not {e.query_id for e in train_a.examples} & set(dev_a.queries)
    assert len(train_a.examples) + sum(len(dev_a.qrels[q]) for q in dev_a.queries) == len(data.examples)
    assert split_dev(data, 0.25, seed=8)[1].queries != dev_a.queries
    assert dev_a.corpus == data.corpus and split_dev(data, 0.0, 7) == (data, None)


def test_export_files_load_with_hash_ids_and_shared_anchor_positives(tmp_path):
    path = str(tmp_path / "ntuple.parquet")
    pq.write_table(pa.table({"anchor": ["a", "a", "b"], "positive": ["p1", "p2", "p3"],
                             "negative_1": ["n1", "n2", "n1"], "negative_2": ["n3", None, "n4"]}), path)
    data = load_export(path)
    assert len(data.examples) == 3 and data.source["tiers"] == ["exported"]
    q_a = f"q:{text_hash('a')}"
    assert data.positives_of[q_a] == {f"d:{text_hash('p1')}", f"d:{text_hash('p2')}"}
    first = next(e for e in data.examples if e.positive == "p1")
    assert [n.text for n in first.negatives["exported"]] == sorted(["n1", "n3"], key=lambda t: f"d:{text_hash(t)}")
    triplet = str(tmp_path / "triplet.parquet")
    pq.write_table(pa.table({"anchor": ["a"], "positive": ["p1"], "negative": ["n1"], "tier": ["hard"]}), triplet)
    assert set(load_export(triplet).examples[0].negatives) == {"hard"}


def _eval_loss(model_or_dir, data) -> float:
    """Loss of a fixed batch (every example, its first hard negative), no dropout, no gradient."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_or_dir, device="cpu") if isinstance(model_or_dir, str) else model_or_dir
    examples = [e for e in data.examples if e.positive_id != "d20"]
    with torch.no_grad():
        q = model.encode([e.anchor for e in examples], convert_to_tensor=True)
        p = model.encode([e.positive for e in examples], convert_to_tensor=True)
        n = model.encode([e.negatives["hard"][0].text for e in examples], convert_to_tensor=True)
    return compute_loss_from_embeddings(q, p, n[:, None, :]).item()


def _tiny_config(tiny_model_dir, **overrides) -> TrainConfig:
    values = {"base_model": tiny_model_dir, "epochs": 6, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0,
              "tiers": ("random", "semi_hard", "hard", "contextual"), "tier_weights": (0.2, 0.3, 0.35, 0.15),
              "file_negatives": 2, "memory_bank": 16, "curriculum": "fixed", "device": "cpu", "seed": 3}
    return TrainConfig(**(values | overrides))


def test_short_run_lowers_loss_logs_every_step_and_saves_a_loadable_model(run_dir, tiny_model_dir, tmp_path):
    data = load_run_dir(run_dir, ("random", "semi_hard", "hard", "contextual"))
    before = _eval_loss(tiny_model_dir, data)
    output = str(tmp_path / "model")
    summary = train(_tiny_config(tiny_model_dir, epochs=3), data, output, progress=False)
    after = _eval_loss(output, data)
    assert after < before - 0.1, (before, after)
    log = [json.loads(line) for line in open(os.path.join(output, "train_log.jsonl"))]
    assert len(log) == summary["optimizer_steps"] == 3 * 3  # 21 examples, batch 8
    assert [r["step"] for r in log] == list(range(1, len(log) + 1))
    assert log[0]["tier_weights"]["hard"] == 0 and log[-1]["tier_weights"]["hard"] > 0.3  # the fixed curriculum
    assert {"loss", "margins", "lr", "temperature", "memory_bank"} <= set(log[-1])
    assert log[-1]["memory_bank"] == 16 and set(log[-1]["margins"]) <= {"random", "semi_hard", "hard", "contextual"}
    assert log[0]["lr"] == pytest.approx(1e-3) and log[-1]["lr"] < log[0]["lr"]  # linear decay
    saved = json.load(open(os.path.join(output, "train_config.json")))
    assert saved["config"]["memory_bank"] == 16 and saved["data"]["examples"] == N_QUERIES + 1
    from sentence_transformers import SentenceTransformer

    reloaded = SentenceTransformer(output, device="cpu")
    vectors = reloaded.encode(["a protein claim"])
    assert vectors.shape == (1, 32) and np.isclose(np.linalg.norm(vectors), 1.0, atol=1e-5)


def test_same_seed_same_model(run_dir, tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    data = load_run_dir(run_dir, ("hard", "random"))
    config = _tiny_config(tiny_model_dir, epochs=1, tiers=("hard", "random"), tier_weights=(1.0, 1.0),
                          curriculum="adaptive", memory_bank=8)
    vectors = []
    for name in ("a", "b"):
        train(config, data, str(tmp_path / name), progress=False)
        vectors.append(SentenceTransformer(str(tmp_path / name), device="cpu").encode(["what about kidney"]))
    logs = [open(tmp_path / name / "train_log.jsonl").read() for name in ("a", "b")]
    assert logs[0] == logs[1]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_cli_trains_with_dev_split_and_records_the_resolved_config(run_dir, tiny_model_dir, tmp_path, capsys):
    from pipelines.train import main_train

    toml = tmp_path / "train.toml"
    toml.write_text("[train]\nlr = 5e-4\nbatch_size = 4\nmax_steps = 2\n")
    output = str(tmp_path / "cli_model")
    code = main_train([run_dir, "--output", output, "--preset", "hard", "--base-model", tiny_model_dir,
                       "--config", str(toml), "--batch-size", "6", "--dev-fraction", "0.2", "--device", "cpu"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed["dev"]) == {"ndcg@10", "mrr@10", "recall@100"} and printed["optimizer_steps"] == 2
    saved = json.load(open(os.path.join(output, "train_config.json")))
    config = saved["config"]
    assert (config["preset"], config["batch_size"], config["lr"], config["tiers"]) == ("hard", 6, 5e-4, ["hard"])
    assert saved["data"]["dev_queries"] == 4 and saved["data"]["examples"] < N_QUERIES + 1


def test_export_without_tiers_trains_on_its_negatives(tiny_model_dir, tmp_path):
    path = str(tmp_path / "triplets.parquet")
    anchors = [f"what happens to {t}" for t in TOPICS[:8]]
    pq.write_table(pa.table({"anchor": anchors, "positive": [f"{t} study" for t in TOPICS[:8]],
                             "negative": [f"{t} review" for t in TOPICS[8:16]]}), path)
    summary = train_from_source(_tiny_config(tiny_model_dir, epochs=1, curriculum="none", memory_bank=0,
                                             tiers=("hard",), tier_weights=(1.0,), file_negatives=1),
                                path, str(tmp_path / "export_model"), progress=False)
    assert summary["optimizer_steps"] == 1 and summary["padded_negatives"] == 0
    saved = json.load(open(tmp_path / "export_model" / "train_config.json"))
    assert saved["config"]["tiers"] == ["exported"]


def test_gradient_accumulation_and_annealed_temperature_in_the_log(run_dir, tiny_model_dir, tmp_path):
    data = load_run_dir(run_dir, ("hard",))
    config = _tiny_config(tiny_model_dir, epochs=1, batch_size=4, grad_accum=2, tiers=("hard",), tier_weights=(1.0,),
                          curriculum="none", memory_bank=0, temperature=0.1, temperature_end=0.05,
                          temperature_schedule="linear")
    summary = train(config, data, str(tmp_path / "accum"), progress=False)
    log = [json.loads(line) for line in open(tmp_path / "accum" / "train_log.jsonl")]
    assert summary["optimizer_steps"] == len(log) == 3  # 21 examples -> 6 micro-batches of <= 4 -> 3 steps
    temperatures = [r["temperature"] for r in log]
    assert temperatures[0] == pytest.approx(0.1) and temperatures == sorted(temperatures, reverse=True)
    assert temperatures[-1] < 0.1


def test_loss_directions_reach_the_training_loss(run_dir, tiny_model_dir, tmp_path):
    data = load_run_dir(run_dir, ("hard",))
    first_losses = {}
    for name, directions, partition in [("plain", ("query_to_doc",), "joint"),
                                        ("symmetric", ("query_to_doc", "doc_to_query"), "per_direction"),
                                        ("gte", ("query_to_doc", "doc_to_query", "query_to_query"), "joint")]:
        config = _tiny_config(tiny_model_dir, epochs=1, tiers=("hard",), tier_weights=(1.0,), curriculum="none",
                              memory_bank=8, loss_directions=directions, loss_partition=partition)
        train(config, data, str(tmp_path / name), progress=False)
        log = [json.loads(line) for line in open(tmp_path / name / "train_log.jsonl")]
        assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
        first_losses[name] = log[0]["loss"]
        saved = json.load(open(tmp_path / name / "train_config.json"))["config"]
        assert (tuple(saved["loss_directions"]), saved["loss_partition"]) == (directions, partition)
    # same seed, same first batch: only the loss differs (the joint softmax over more negatives is larger)
    assert first_losses["gte"] > first_losses["plain"]
    assert first_losses["symmetric"] != pytest.approx(first_losses["plain"], rel=1e-4)
