"""In-training refresh (re-score each query's mined pool, redraw hard/semi_hard behind the margin guard) and
the BEIR + compact-negatives loader the GPU benchmark carries."""

from __future__ import annotations

import json
import os

import pytest
import torch

from schemas.train_config import TrainConfig
from tests.test_trainer_run import write_run_dir
from trainer.data import compact_negatives, load_beir_negatives, load_run_dir
from trainer.loop import train_model
from trainer.refresh import candidate_pools, refresh_examples


class _Model(torch.nn.Module):
    """encode(): a fixed embedding per text, so the test chooses every score."""

    def __init__(self, vectors: dict[str, list[float]]):
        super().__init__()
        self.vectors = vectors

    def encode(self, texts, **_):
        out = torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32)
        return torch.nn.functional.normalize(out, dim=-1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    return write_run_dir(str(tmp_path_factory.mktemp("run")))


def test_refresh_ranks_the_pool_by_the_current_model_and_keeps_the_margin_guard(run_dir):
    data = load_run_dir(run_dir, ("hard", "semi_hard", "random", "contextual"))
    example = next(e for e in data.examples if e.query_id == "q05")
    pool = candidate_pools(data)["q05"]
    assert {n.doc_id for t in ("hard", "semi_hard", "random") for n in example.negatives[t]} == set(pool)
    ranked = sorted(pool)  # the model's order: the last id scores highest; the top one breaks the guard
    vectors = {example.anchor: [1.0, 0.0], example.positive: [0.8, 0.6]}  # cos(q, p) = 0.8
    for k, doc_id in enumerate(ranked):
        cos = 0.9 if k == len(ranked) - 1 else 0.1 + 0.05 * k  # 0.9 > 0.95 * 0.8: dropped by the guard
        vectors[pool[doc_id].text] = [cos, (1 - cos * cos) ** 0.5]
    others = {e.anchor for e in data.examples} | {e.positive for e in data.examples}
    others |= {n.text for p in candidate_pools(data).values() for n in p.values()}
    for text in others - set(vectors):
        vectors[text] = [0.0, 1.0]
    examples, counts = refresh_examples(_Model(vectors), data, margin=0.05)
    new = next(e for e in examples if e.query_id == "q05")
    assert [n.doc_id for n in new.negatives["hard"]] == sorted(ranked[-4:-1])  # next three below the guard
    assert [n.doc_id for n in new.negatives["semi_hard"]] == sorted(ranked[-6:-4])
    assert new.negatives["random"] == example.negatives["random"]
    assert new.negatives["contextual"] == example.negatives["contextual"]
    assert [e.query_id for e in examples] == [e.query_id for e in data.examples]
    assert counts["queries"] == 20 and counts["hard_new"] + counts["hard_kept"] > 0
    q0 = [e for e in examples if e.query_id == "q00"]
    assert all(n.doc_id not in {"d00", "d20"} for e in q0 for t in ("hard", "semi_hard") for n in e.negatives[t])


def test_training_with_refresh_logs_each_round(run_dir, tiny_model_dir, tmp_path):
    data = load_run_dir(run_dir, ("hard", "semi_hard", "random"))
    config = TrainConfig(base_model=tiny_model_dir, batch_size=4, tiers=("hard",), tier_weights=(1.0,),
                         refresh_every=2, max_steps=5, device="cpu", seed=3)
    model, summary = train_model(config, data, str(tmp_path / "m"), progress=False, save_model=False)
    assert [r["step"] for r in summary["refreshes"]] == [2, 4]
    with open(tmp_path / "m" / "train_log.jsonl") as handle:
        logged = [json.loads(line) for line in handle]
    assert [r["step"] for r in logged if "refresh" in r] == [2, 4]
    assert not os.path.exists(tmp_path / "m" / "model.safetensors")


def test_refresh_needs_a_tier_it_can_redraw():
    with pytest.raises(Exception, match="refresh-every"):
        TrainConfig(tiers=("random",), tier_weights=(1.0,), refresh_every=5)


def test_beir_plus_compact_negatives_loads_like_the_run_dir(run_dir, tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    full = load_run_dir(run_dir, ("hard", "contextual"))
    import pyarrow.parquet as pq

    docs = pq.read_table(os.path.join(run_dir, "inputs", "docs")).to_pylist()
    with open(beir / "corpus.jsonl", "w") as handle:
        handle.writelines(json.dumps({"_id": d["doc_id"], "title": d["title"], "text": d["text"]}) + "\n"
                          for d in docs)
    with open(beir / "queries.jsonl", "w") as handle:
        handle.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in full.queries.items())
    with open(beir / "qrels" / "train.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{e.query_id}\t{e.positive_id}\t1\n" for e in full.examples)
    compact = str(tmp_path / "negatives.parquet")
    assert compact_negatives(run_dir, compact, ("hard", "contextual")) == sum(full.tier_counts().values())
    texts = pq.read_table(compact).column("negative").to_pylist()
    assert sum(t is not None for t in texts) == full.tier_counts()["contextual"]  # corpus texts are not carried
    loaded = load_beir_negatives(str(beir), compact, ("hard", "contextual"))
    assert [(e.query_id, e.positive_id, e.negatives) for e in loaded.examples] == [
        (e.query_id, e.positive_id, e.negatives) for e in full.examples]
    assert loaded.corpus == full.corpus and loaded.positives_of == full.positives_of
