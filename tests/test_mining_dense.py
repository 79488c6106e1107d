"""Dense qrels (issue 15): ~40 graded judged positives per query, some scoring low.

A synthetic BEIR folder (tests/dense_qrels.py: 300 docs, 12 queries x 40 graded positives) embedded by the tiny
in-process model (centred as in test_mining_parity, so scores spread), written as a RUN_DIR with an exact
2-shard index, then mined with the default tiers under each margin reference. Under 'lowest' the weakest
positive costs whole queries their negatives; under 'pair' nearly every pair keeps its hard negatives; under
both, no judged positive of the query is ever a negative of any of its pairs, and the rows obey the per-tier
contract.
"""

from __future__ import annotations

import os
from dataclasses import replace

import polars as pl
import pytest
from dense_qrels import DenseShape, write_dense_beir
from planted_run import read_rows, write_run
from test_mining_parity import centred

from pipelines.stage_mine import run_mine
from schemas.build_config import BuildConfig, IndexConfig, IngestConfig, MiningConfig
from schemas.contracts import contract_violations
from schemas.layout import RunLayout
from transforms import mining_math as mm
from transforms.beir import load_beir

SHAPE = DenseShape(domains=3, topics_per_domain=2, docs_per_topic=50, queries_per_topic=2, topic_positives=36,
                   siblings=2, strays=2)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    tmp = tmp_path_factory.mktemp("dense")
    write_dense_beir(str(tmp / "beir"), SHAPE, seed=5)
    data = load_beir(str(tmp / "beir"), "train")
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    doc_ids, query_ids = sorted(data.corpus), sorted(data.queries)
    doc_vecs = dict(zip(doc_ids, centred(model.encode([data.corpus[d] for d in doc_ids]))))
    query_vecs = dict(zip(query_ids, centred(model.encode([data.queries[q] for q in query_ids]))))
    pairs = [(q, d) for q in query_ids for d in sorted(data.qrels[q]) if data.qrels[q][d] > 0]
    run = write_run(str(tmp / "run"), data.corpus, data.queries, pairs, doc_vecs, query_vecs, num_shards=2)
    return tmp, run, data, pairs


def _mine(dense_run, reference: str, **mining_flags):
    tmp, run, _, _ = dense_run
    mining = replace(MiningConfig(), margin_reference=reference, **mining_flags)
    config = BuildConfig(output=run.run_dir, ingest=IngestConfig(beir_dir="unused", split="train"),
                         index=IndexConfig(num_shards=2), mining=mining, seed=3)
    out = RunLayout(str(tmp / f"out-{reference}-{len(mining_flags)}"))
    stats = run_mine(config, run, out, [])
    return config, stats, read_rows(out)


@pytest.fixture(scope="module")
def mined(dense_run):
    return {reference: _mine(dense_run, reference) for reference in mm.MARGIN_REFERENCES}


def test_fixture_is_dense_with_low_scoring_positives(dense_run):
    _, _, data, pairs = dense_run
    assert len(data.corpus) == 300 and len(data.queries) == 12
    assert len(pairs) == 12 * 40 and {len(data.qrels[q]) for q in data.queries} == {40}
    assert {g for judged in data.qrels.values() for g in judged.values()} == {1, 2, 3}


def test_pair_reference_keeps_hard_negatives_for_nearly_every_pair(mined):
    _, lowest, _ = mined["lowest"]
    _, pair, rows = mined["pair"]
    assert pair["pairs"] == 480
    assert pair["pairs_full_fraction"]["hard"] >= 0.95
    # the search is exhaustive here (300 docs < max_depth), so 'lowest' is not starved outright as on a large
    # corpus, but its weakest positive still costs whole queries their hard and random negatives
    for tier in ("hard", "semi_hard", "random"):
        assert lowest["pairs_full_fraction"][tier] < pair["pairs_full_fraction"][tier]
    assert lowest["dropped"]["relative_margin"] > 10 * pair["dropped"]["relative_margin"]
    per_pair = rows.filter(pl.col("tier") == "hard").group_by("query_id", "positive_id").len()
    assert per_pair.filter(pl.col("len") == 3).height == pair["pairs_full"]["hard"]


@pytest.mark.parametrize("reference", mm.MARGIN_REFERENCES)
def test_no_judged_positive_is_ever_mined_and_rows_obey_the_contract(mined, dense_run, reference):
    _, _, data, _ = dense_run
    config, stats, rows = mined[reference]
    judged = pl.DataFrame([(q, d) for q, ds in data.qrels.items() for d in ds], schema=["query_id", "negative_id"],
                          orient="row")
    assert rows.join(judged, on=["query_id", "negative_id"]).height == 0
    assert stats["dropped"]["judged_positive"] > 0  # the guard did drop judged positives from the candidates
    assert sum(stats["dropped_pairs"].values()) >= sum(stats["dropped"].values())
    docs = pl.scan_parquet(os.path.join(dense_run[1].inputs_table("docs"), "*.parquet"))
    pairs = pl.scan_parquet(os.path.join(dense_run[1].inputs_table("pairs"), "*.parquet"))
    from schemas.contracts import judged_positives

    violations = contract_violations(rows.lazy(), config.to_dict(), judged_positives(rows.lazy(), pairs, docs))
    assert violations.height == 0, violations


def test_pair_rows_respect_their_own_positive_margin(mined):
    _, _, rows = mined["pair"]
    mined_rows = rows.filter(pl.col("tier").is_in(["hard", "semi_hard", "random"]))
    bound = pl.col("score_positive").cast(pl.Float64).round(6)
    bound = bound - bound.abs() * 0.05
    assert mined_rows.filter(pl.col("score_negative").cast(pl.Float64).round(6) > bound + 2e-6).height == 0
    # pairs of one query get different negatives when their positives score differently
    per_query = rows.filter(pl.col("tier") == "hard").group_by("query_id").agg(pl.col("negative_id").n_unique())
    assert per_query["negative_id"].max() > 3


def test_pairs_whose_positive_ranks_below_max_depth_keep_their_hard_negatives(dense_run):
    """Issue 15: with max_depth far above the weakest positives' ranks, each pair's window starts at its own margin
    threshold, so deep positives still get K hard negatives (ranks beyond max_depth) and no judged positive."""
    _, _, data, _ = dense_run
    _, stats, rows = _mine(dense_run, "pair", max_depth=30)
    assert stats["pairs_full_fraction"]["hard"] >= 0.95
    hard = rows.filter(pl.col("tier") == "hard")
    assert hard["rank"].max() > 30 * 5  # a positive ranked far below max_depth got its negatives
    judged = {(q, d) for q, ds in data.qrels.items() for d in ds}
    assert not any(key in judged for key in rows.select("query_id", "negative_id").iter_rows())
