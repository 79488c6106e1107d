"""The mine stage end to end on a planted RUN_DIR (vectors built by hand, exact sharded index).

Planted: q1 has two judged positives (p1 0.80, p2 0.70), a text copy of p1 under another id, an embedding
near-copy of p2, and a spread of ordinary candidates; q2 is buried under 60 documents above its margin (its
window starts below them, at its margin threshold: no deeper round); q3 is an ordinary query.
"""

from __future__ import annotations

import glob
import os
from dataclasses import replace

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from planted_run import read_rows, write_run

from pipelines.stage_mine import run_mine
from schemas.build_config import BuildConfig, IndexConfig, IngestConfig, MiningConfig
from schemas.contracts import contract_violations, judged_positives
from schemas.layout import RunLayout
from schemas.negatives import IDENTITY_COLUMNS, NEGATIVES_SCHEMA, TIERS, text_hash

DIM = 16


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _at(score: float, direction: np.ndarray, axis: int = 0) -> np.ndarray:
    """A unit vector with cos = score to e_axis, the rest along `direction` (orthogonal to e_axis)."""
    base = np.zeros(DIM)
    base[axis] = 1.0
    return _unit(score * base + np.sqrt(1 - score**2) * _unit(direction))


def planted() -> tuple[dict, dict, list, dict, dict]:
    rng = np.random.default_rng(3)
    e = np.eye(DIM)
    docs, vecs = {}, {}
    docs["p1"], vecs["p1"] = "Aspirin lowers the risk of stroke.", _at(0.80, e[1])
    docs["p2"], vecs["p2"] = "Statins reduce cholesterol levels.", _at(0.70, e[2])
    # Without their guards these two would be q1's first hard negatives (just under the 0.665 margin bound).
    docs["zcopy"], vecs["zcopy"] = "ASPIRIN lowers the risk   of stroke.", _at(0.664, e[4])  # text copy of p1
    away = _unit(e[0] - 0.70 * vecs["p2"])  # unit, orthogonal to p2, towards the query
    docs["near"], vecs["near"] = "Statins lower cholesterol levels.", _unit(0.997 * vecs["p2"] - 0.0774 * away)
    for i, score in enumerate(np.linspace(0.66, 0.05, 24)):  # q1's ordinary candidates
        direction = np.concatenate([[0.0], rng.normal(size=DIM - 1)])
        direction[[5, 8]] = 0.0  # nothing for q2 (axis 5) or q3 (axis 8)
        docs[f"d{i:02d}"] = f"ordinary passage number {i} about topic {i % 5}"
        vecs[f"d{i:02d}"] = _at(score, direction)
    for i in range(60):  # q2 (axis 5): 60 docs above its positive, all dropped by the relative margin
        direction = np.concatenate([np.zeros(6), rng.normal(size=DIM - 6)])
        docs[f"b{i:02d}"], vecs[f"b{i:02d}"] = f"buried decoy {i}", _at(0.9 - 0.003 * i, direction, axis=5)
    docs["p3"], vecs["p3"] = "the buried positive", _at(0.5, e[6], axis=5)
    for i in range(6):
        direction = np.concatenate([np.zeros(6), rng.normal(size=DIM - 6)])
        docs[f"c{i}"], vecs[f"c{i}"] = f"below the buried positive {i}", _at(0.45 - 0.05 * i, direction, axis=5)
    docs["p4"], vecs["p4"] = "an easy positive", _at(0.9, e[9], axis=8)
    for i, score in enumerate(np.arange(0.80, 0.25, -0.05)):  # q3 (axis 8): an ordinary spread below 0.855
        direction = np.concatenate([np.zeros(9), rng.normal(size=DIM - 9)])
        docs[f"e{i:02d}"], vecs[f"e{i:02d}"] = f"easy candidate {i}", _at(score, direction, axis=8)
    queries = {"q1": "does aspirin prevent stroke", "q2": "buried query", "q3": "ordinary query"}
    query_vecs = {"q1": _unit(e[0]), "q2": _unit(e[5]), "q3": _unit(e[8])}
    pairs = [("q1", "p1"), ("q1", "p2"), ("q2", "p3"), ("q3", "p4")]
    return docs, queries, pairs, vecs, query_vecs


MINING = MiningConfig(hard=3, semi_hard=2, random=1, range_max=10, relative_margin=0.05, max_depth=100,
                      semi_hard_band=(0.10, 0.30), margin_reference="lowest")


def config_for(run_dir: str, mining: MiningConfig = MINING, num_shards: int = 3) -> BuildConfig:
    return BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir="unused", split="train"),
                       index=IndexConfig(num_shards=num_shards), mining=mining, seed=7)


def mine(tmp_path, name: str, mining: MiningConfig = MINING, num_shards: int = 3, beam_args=()):
    run = write_run(str(tmp_path / f"run-{name}"), *planted(), num_shards=num_shards)
    out = RunLayout(str(tmp_path / f"out-{name}"))
    stats = run_mine(config_for(run.run_dir, mining, num_shards), run, out, list(beam_args))
    return out, stats


def identity(rows: pl.DataFrame) -> list[tuple]:
    return sorted(rows.select(IDENTITY_COLUMNS).iter_rows(), key=str)


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mine")
    out, stats = mine(tmp, "a")
    return tmp, out, stats, read_rows(out)


def test_planted_copies_would_be_hard_negatives_without_their_guards():
    docs, _, _, vecs, qvecs = planted()
    q = qvecs["q1"]
    assert float(vecs["near"] @ vecs["p2"]) >= 0.98 and float(vecs["zcopy"] @ vecs["p1"]) < 0.98
    assert text_hash(docs["zcopy"]) == text_hash(docs["p1"])
    unguarded = sorted((d for d in docs if d not in ("p1", "p2") and float(vecs[d] @ q) <= 0.665),
                       key=lambda d: -float(vecs[d] @ q))
    assert unguarded[:3] == ["zcopy", "d00", "near"]


def test_planted_false_negatives_never_come_out(mined):
    _, _, stats, rows = mined
    q1 = rows.filter(pl.col("query_id") == "q1")
    assert not set(q1["negative_id"]) & {"p1", "p2", "zcopy", "near"}
    assert stats["dropped"]["judged_positive"] >= 2
    assert stats["dropped"]["text_copy"] >= 1 and stats["dropped"]["near_copy"] >= 1
    # q1's positives: the text copy and the near-copy rank above its first hard negative
    assert set(q1["positive_id"]) == {"p1", "p2"}


def test_rows_obey_the_per_tier_contract_and_tier_priority(mined):
    _, out, _, rows = mined
    config = config_for(out.run_dir).to_dict()
    docs = pl.scan_parquet(os.path.join(mined[0], "run-a", "inputs", "docs", "*.parquet"))
    pairs = pl.scan_parquet(os.path.join(mined[0], "run-a", "inputs", "pairs", "*.parquet"))
    judged = judged_positives(rows.lazy(), pairs, docs)
    assert contract_violations(rows.lazy(), config, judged).height == 0
    q1 = rows.filter((pl.col("query_id") == "q1") & (pl.col("positive_id") == "p1"))
    hard = q1.filter(pl.col("tier") == "hard").sort("rank")
    # floor 0.70 -> relative bound 0.665: d00 (0.66) is the first survivor; hard = the three best survivors
    assert hard["negative_id"].to_list() == ["d00", "d01", "d02"]
    assert hard["generator"].unique().to_list() == ["faiss:Flat"]
    semi = q1.filter(pl.col("tier") == "semi_hard")
    assert semi["score_negative"].max() <= 0.6 + 1e-6 and semi["score_negative"].min() >= 0.4 - 1e-6
    assert not set(semi["negative_id"]) & set(hard["negative_id"])
    random = q1.filter(pl.col("tier") == "random")
    assert random.height == 1 and random["rank"].is_null().all() and random["generator"].to_list() == ["uniform"]
    assert not set(random["negative_id"]) & (set(hard["negative_id"]) | set(semi["negative_id"]))
    # one row per (query, positive, negative): q1's negatives are joined with both positives
    per_positive = rows.filter(pl.col("query_id") == "q1").group_by("positive_id").len()
    assert per_positive["len"].to_list() == [6, 6]


def test_scores_and_texts_are_joined_correctly(mined):
    _, _, _, rows = mined
    docs, queries, _, vecs, qvecs = planted()
    for row in rows.iter_rows(named=True):
        assert row["anchor"] == queries[row["query_id"]]
        assert row["positive"] == docs[row["positive_id"]] and row["negative"] == docs[row["negative_id"]]
        q, p, n = qvecs[row["query_id"]], vecs[row["positive_id"]], vecs[row["negative_id"]]
        assert row["score_positive"] == pytest.approx(float(q @ p), abs=1e-6)
        assert row["score_negative"] == pytest.approx(float(q @ n), abs=1e-6)
        assert row["similarity_to_positive"] == pytest.approx(float(p @ n), abs=1e-6)
        assert row["negative_text_hash"] == text_hash(docs[row["negative_id"]])
        assert 0.0 <= row["lexical_overlap"] <= 1.0


def test_the_buried_query_gets_full_k_at_its_raw_ranks_without_deeper_rounds(mined):
    _, _, stats, rows = mined
    # each pair group's window starts at its margin threshold, below q2's 60 decoys: no round grows it
    assert stats["deeper_search_histogram"] == {"0": 3}
    q2_hard = rows.filter((pl.col("query_id") == "q2") & (pl.col("tier") == "hard")).sort("rank")
    assert q2_hard["negative_id"].to_list() == ["c0", "c1", "c2"]  # below the 60 decoys and its positive
    assert q2_hard["rank"].to_list() == [62, 63, 64]  # raw positions: 60 decoys, then p3, then c0...
    assert stats["queries_full"]["hard"] == 3 and stats["pairs_full_fraction"]["hard"] == 1.0
    assert stats["queries"] == 3 and stats["pairs"] == 4


def test_every_tier_has_a_part_file_with_the_full_schema(mined):
    _, out, stats, rows = mined
    for tier in TIERS:
        parts = glob.glob(os.path.join(out.tier_dir(tier), "part-*.parquet"))
        assert parts, tier
        for part in parts:
            assert pq.read_schema(part).remove_metadata().equals(NEGATIVES_SCHEMA.remove_metadata())
    assert stats["rows_per_tier"] == {t: rows.filter(pl.col("tier") == t).height for t in TIERS}
    assert stats["rows_per_tier"]["contextual"] == 0


def test_all_four_readers_see_the_same_rows(mined, tmp_path):
    import datasets
    import duckdb
    import pandas as pd

    _, out, _, rows = mined
    root = out.negatives_dir
    expected = identity(rows)
    as_pandas = pd.read_parquet(root)
    assert identity(pl.from_pandas(as_pandas.astype({"tier": str}))) == expected
    duck = duckdb.sql(f"select * from read_parquet('{root}/*/*.parquet', hive_partitioning=true)").pl()
    assert identity(duck.with_columns(pl.col("tier").cast(pl.String))) == expected
    files = sorted(glob.glob(os.path.join(root, "*", "*.parquet")))
    hf = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert identity(pl.from_arrow(hf.data.table).with_columns(pl.col("tier").cast(pl.String))) == expected


@pytest.mark.slow
def test_mined_tiers_do_not_depend_on_shard_count(mined, tmp_path):
    _, _, _, rows = mined
    one_shard = read_rows(mine(tmp_path, "one", num_shards=1)[0])
    mined_only = lambda r: identity(r.filter(pl.col("tier") != "random"))  # noqa: E731
    assert mined_only(one_shard) == mined_only(rows)


@pytest.mark.slow
def test_second_run_on_the_multi_processing_runner_gives_the_same_rows(mined, tmp_path):
    _, _, _, rows = mined
    out, _ = mine(tmp_path, "mp", beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert identity(read_rows(out)) == identity(rows)


def test_rows_do_not_depend_on_the_query_groups(mined, tmp_path):
    """One query per group (each shard searched as 3 tasks) gives exactly the rows of one group per shard."""
    _, _, _, rows = mined
    out, _ = mine(tmp_path, "groups", mining=replace(MINING, query_group_size=1))
    sort = lambda r: r.sort(IDENTITY_COLUMNS, nulls_last=True)  # noqa: E731
    assert sort(read_rows(out)).equals(sort(rows))


def test_rows_do_not_depend_on_the_text_join_buckets(mined, tmp_path, monkeypatch):
    """Texts joined in buckets of ~10 requested documents (several buckets) give exactly the rows of one bucket."""
    from transforms import mine_join

    _, _, _, rows = mined
    monkeypatch.setattr(mine_join, "DOCS_PER_BUCKET", 10)
    out, _ = mine(tmp_path, "buckets")
    sort = lambda r: r.sort(IDENTITY_COLUMNS, nulls_last=True)  # noqa: E731
    assert sort(read_rows(out)).equals(sort(rows))
