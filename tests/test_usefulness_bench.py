"""The usefulness bench's bookkeeping: run order, mean ± sd per scheme, the goal lines, ST n-tuples."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from bench.usefulness import Bench, goals, schedule, summarise


def test_schedule_runs_groups_in_order_seed_by_seed_and_base_once():
    order = schedule(["base", "st_inbatch", "nf_hard", "nf_hsr", "nf_hard_3ep", "nf_hard_3ep_refresh"], [1, 2])
    assert order[:5] == [("base", None), ("st_inbatch", 1), ("nf_hard", 1), ("st_inbatch", 2), ("nf_hard", 2)]
    assert order[5:] == [("nf_hsr", 1), ("nf_hsr", 2), ("nf_hard_3ep", 1), ("nf_hard_3ep", 2),
                         ("nf_hard_3ep_refresh", 1), ("nf_hard_3ep_refresh", 2)]


def _row(scheme, seed, ndcg, epochs=1):
    return {"scheme": scheme, "trainer": "st", "negatives": "x", "seed": seed, "epochs": epochs, "pairs": 9,
            "ndcg@10": ndcg, "mrr@10": ndcg, "recall@100": 1.0, "train_s": 1.0}


def test_summary_and_goals():
    rows = [_row("st_mined", 1, 0.70), _row("st_mined", 2, 0.72), _row("nf_hard_st", 1, 0.73),
            _row("nf_hard_st", 2, 0.73), _row("st_mined_3ep", 1, 0.70, 3), _row("nf_hard_3ep", 1, 0.725, 3)]
    summary = summarise(rows)
    assert summary["st_mined"]["ndcg@10"] == 0.71 and abs(summary["st_mined"]["ndcg@10_sd"] - 0.01414) < 1e-4
    assert summary["nf_hard_3ep"]["ndcg@10_sd"] is None
    lines = goals(summary)
    assert "met" in lines[0] and "+0.0200" in lines[0]
    assert "0.7250" in lines[1] and ": met;" in lines[1]  # +0.025 and >= 0.72
    assert "`nf_hard_st` 0.7300 vs `st_mined` 0.7100 (met)" in lines[2]


def test_ntuples_take_ranked_picks_fill_from_later_tiers_and_drop_short_pairs(tmp_path):
    negatives = str(tmp_path / "n.parquet")
    rows = [("q1", "d1", "n1", "hard", 2, None), ("q1", "d1", "n2", "hard", 1, None),
            ("q1", "d1", "n3", "semi_hard", 1, None), ("q1", "d1", "c1", "contextual", None, "edited"),
            ("q2", "d2", "n1", "random", None, None)]
    pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(
        ["query_id", "positive_id", "negative_id", "tier", "rank", "negative"])}), negatives)
    bench = Bench.__new__(Bench)
    bench.args = SimpleNamespace(negatives=negatives)
    bench.corpus = {d: f"text {d}" for d in ("d1", "d2", "n1", "n2", "n3")}
    bench.train_queries = {"q1": "query 1", "q2": "query 2"}
    bench.pairs = [("q1", "d1"), ("q2", "d2")]
    bench._ntuples = {}
    two_hard = bench.ntuples((("hard", 2),))
    assert two_hard == [{"anchor": "query 1", "positive": "text d1", "negative_1": "text n2",
                         "negative_2": "text n1"}]  # rank order; q2 has one candidate and is left out
    mixed = bench.ntuples((("hard", 1), ("semi_hard", 1), ("random", 1)))
    assert [r["negative_3"] for r in mixed] == ["text n1"]  # no random for q1: the next hard fills in
    assert json.dumps(mixed)  # plain rows for datasets.Dataset.from_list
