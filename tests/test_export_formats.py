"""`negforge export`: triplet / n-tuple Parquet in sentence-transformers' column layout, deterministic order."""

from __future__ import annotations

import os

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipelines.export import main_export
from schemas.layout import RunLayout
from schemas.negatives import TIERS, rows_to_table, text_hash


def _row(tier, query, positive, negative, rank, score):
    return {
        "query_id": query, "positive_id": positive, "negative_id": negative, "anchor": f"anchor {query}",
        "positive": f"text {positive}", "negative": f"text {negative}", "tier": tier, "rank": rank,
        "score_positive": 0.8, "score_negative": score, "similarity_to_positive": 0.3,
        "generator": "uniform" if tier == "random" else "faiss:Flat", "edit": None,
        "negative_text_hash": text_hash(f"text {negative}"), "lexical_overlap": 0.1,
    }


ROWS = [
    # q1 has two positives and full K (2 hard, 1 semi-hard, 1 random); q2's only positive lacks a hard negative
    *[_row("hard", "q1", p, n, r, s) for p in ("p1", "p2") for n, r, s in (("n2", 4, 0.6), ("n1", 2, 0.7))],
    *[_row("semi_hard", "q1", p, "n5", 9, 0.5) for p in ("p1", "p2")],
    *[_row("random", "q1", p, "n9", None, 0.1) for p in ("p1", "p2")],
    _row("hard", "q2", "p3", "n3", 1, 0.4), _row("semi_hard", "q2", "p3", "n4", 7, 0.3),
    _row("random", "q2", "p3", "n8", None, 0.05),
]


@pytest.fixture
def run_dir(tmp_path):
    run = RunLayout(str(tmp_path / "run"))
    for tier in TIERS:  # shuffled row order on disk: the export must sort
        folder = run.tier_dir(tier)
        os.makedirs(folder)
        rows = [r for r in reversed(ROWS) if r["tier"] == tier]
        pq.write_table(rows_to_table(rows), os.path.join(folder, "part-00000-of-00001.parquet"))
    return run.run_dir


def test_triplets_have_only_the_three_text_columns_in_a_fixed_order(run_dir, tmp_path):
    out = str(tmp_path / "triplets.parquet")
    assert main_export([run_dir, "--format", "triplet", "--output", out]) == 0
    frame = pl.read_parquet(out)
    assert frame.columns == ["anchor", "positive", "negative"]
    assert frame.height == len(ROWS)
    q1p1 = frame.filter(pl.col("positive") == "text p1")["negative"].to_list()
    assert q1p1 == ["text n1", "text n2", "text n5", "text n9"]  # tier order, then rank
    again = str(tmp_path / "again.parquet")
    assert main_export([run_dir, "--format", "triplet", "--output", again]) == 0
    assert pl.read_parquet(again).equals(frame)


def test_tiers_flag_selects_and_orders_tiers(run_dir, tmp_path):
    out = str(tmp_path / "t.parquet")
    assert main_export([run_dir, "--format", "triplet", "--output", out, "--tiers", "random,hard"]) == 0
    frame = pl.read_parquet(out)
    assert frame.height == 3 + 5  # 3 random rows, 5 hard rows
    assert frame.filter(pl.col("positive") == "text p1")["negative"].to_list() == ["text n9", "text n1", "text n2"]


def test_n_tuples_drop_short_pairs_and_say_so(run_dir, tmp_path, capsys):
    out = str(tmp_path / "n.parquet")
    assert main_export([run_dir, "--format", "n-tuple", "--output", out]) == 0
    frame = pl.read_parquet(out)
    assert frame.columns == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "negative_4"]
    assert frame["positive"].to_list() == ["text p1", "text p2"]  # q2/p3 has 3 negatives, not 4
    assert frame.row(0) == ("anchor q1", "text p1", "text n1", "text n2", "text n5", "text n9")
    assert "dropped 1 (query, positive) pair(s)" in capsys.readouterr().err


def test_bad_tier_and_missing_run_fail_with_exit_code_2(run_dir, tmp_path, capsys):
    out = str(tmp_path / "x.parquet")
    assert main_export([run_dir, "--format", "triplet", "--output", out, "--tiers", "hard,easy"]) == 2
    assert "allowed: hard,semi_hard,random,contextual" in capsys.readouterr().err
    assert main_export([str(tmp_path / "nothing"), "--format", "triplet", "--output", out]) == 2
    assert not os.path.exists(out)


@pytest.mark.parametrize("fmt, inputs", [("triplet", 3), ("n-tuple", 6)])
def test_exports_feed_sentence_transformers_collator_and_loss(run_dir, tmp_path, tiny_model_dir, fmt, inputs):
    """What SentenceTransformerTrainer does with a batch: collate every column, split features, compute a loss
    (the trainer itself needs `accelerate`, which is not installed)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    out = str(tmp_path / f"{fmt}.parquet")
    assert main_export([run_dir, "--format", fmt, "--output", out]) == 0
    dataset = Dataset.from_parquet(out, cache_dir=str(tmp_path / "hf"))
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    batch = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)([dataset[i] for i in range(2)])
    features, labels = SentenceTransformerTrainer.collect_features(None, batch)
    assert len(features) == inputs and labels is None
    loss = MultipleNegativesRankingLoss(model)(features, labels)
    assert torch.isfinite(loss) and loss.item() > 0
