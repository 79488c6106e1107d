"""The usefulness bench's bookkeeping: run order, mean ± sd per scheme, the goal lines, ST n-tuples."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.usefulness import (
    Bench,
    best_by,
    decode_rows,
    dev_query_ids,
    encode_rows,
    goals,
    row_cost,
    schedule,
    split_plan,
    summarise,
    write_table,
)


def test_schedule_runs_groups_in_order_seed_by_seed_and_base_once():
    order = schedule(["base", "st_inbatch", "nf_hard", "nf_hsr", "nf_hard_3ep", "nf_hard_3ep_refresh"], [1, 2])
    assert order[:5] == [("base", None), ("st_inbatch", 1), ("nf_hard", 1), ("st_inbatch", 2), ("nf_hard", 2)]
    assert order[5:] == [("nf_hard_3ep", 1), ("nf_hard_3ep", 2), ("nf_hsr", 1), ("nf_hsr", 2),
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
    bench.args = SimpleNamespace(negatives=negatives, workdir=str(tmp_path))
    bench.corpus = {d: f"text {d}" for d in ("d1", "d2", "n1", "n2", "n3")}
    bench.train_queries = {"q1": "query 1", "q2": "query 2"}
    bench.pairs = [("q1", "d1"), ("q2", "d2")]
    bench._ntuples, bench._negatives_files = {}, {}
    two_hard = bench.ntuples((("hard", 2),))
    assert two_hard == [{"anchor": "query 1", "positive": "text d1", "negative_1": "text n2",
                         "negative_2": "text n1"}]  # rank order; q2 has one candidate and is left out
    mixed = bench.ntuples((("hard", 1), ("semi_hard", 1), ("random", 1)))
    assert [r["negative_3"] for r in mixed] == ["text n1"]  # no random for q1: the next hard fills in
    assert json.dumps(mixed)  # plain rows for datasets.Dataset.from_list


def test_dev_query_ids_are_seeded_by_query_id_and_sized_by_fraction():
    ids = [str(i) for i in range(40)]
    dev = dev_query_ids(ids, 0.1, 13)
    assert len(dev) == 4 and dev == dev_query_ids(reversed(ids * 2), 0.1, 13)  # order and repeats do not matter
    assert dev != dev_query_ids(ids, 0.1, 14) and dev_query_ids(ids, 0.0, 13) == frozenset()
    assert dev <= dev_query_ids(ids, 0.2, 13)  # a larger fraction extends the same ranking
    assert len(dev_query_ids(["a", "b"], 0.9, 13)) == 1  # never every query


def _beir(folder, n_queries=20):
    (folder / "qrels").mkdir(parents=True)
    docs = [f"d{i}" for i in range(2 * n_queries)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": f"doc {d}"}) + "\n"
                                                 for d in docs))
    queries = [f"q{i}" for i in range(n_queries)] + ["t0"]
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n"
                                                  for q in queries))
    train = "".join(f"q{i}\td{2 * i}\t1\nq{i}\td{2 * i + 1}\t1\n" for i in range(n_queries))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + train)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt0\td0\t1\n")
    return str(folder)


def test_bench_holds_the_same_dev_queries_out_of_every_row(tmp_path):
    args = SimpleNamespace(beir=_beir(tmp_path / "beir"), quick=True, dev_fraction=0.1, dev_seed=13)
    bench = Bench(args)
    dev = dev_query_ids([f"q{i}" for i in range(20)], 0.1, 13)
    assert set(bench.dev_queries) == dev and len(dev) == 2
    assert bench.dev_qrels == {q: {f"d{2 * int(q[1:])}": 1, f"d{2 * int(q[1:]) + 1}": 1} for q in dev}
    assert len(bench.pairs) == 36 and not {q for q, _ in bench.pairs} & dev  # ST rows' pairs
    corpus, queries, qrels = bench.train_beir  # negforge rows' pairs (trainer.data.load_beir_negatives)
    assert not (set(queries) | set(qrels)) & dev and len(corpus) == 40
    assert Bench(SimpleNamespace(**{**vars(args), "dev_fraction": 0.0})).dev_queries == {}


def test_best_recipe_is_chosen_on_dev_and_reported_on_test():
    def row(scheme, dev, test):
        return {**_row(scheme, 1, test), "dev_ndcg@10": dev, "dev_mrr@10": dev, "dev_recall@100": 1.0}

    summary = summarise([row("st_inbatch", 0.60, 0.66), row("st_mined", 0.62, 0.65), row("nf_hard", 0.70, 0.67),
                         row("nf_hsr", 0.65, 0.69)])
    assert best_by({s: summary[s] for s in ("nf_hard", "nf_hsr")}) == ("nf_hard", "dev")
    line = goals(summary)[0]
    assert "`nf_hard` 0.6700 vs strongest st_* `st_inbatch` 0.6600: +0.0100" in line  # ours on dev, anchor on test
    assert "best chosen on dev nDCG@10, test reported" in line
    assert "chosen on test, no dev split" in goals(summarise([_row("st_mined", 1, 0.7), _row("nf_hard", 1, 0.8)]))[0]


def test_three_epoch_goal_also_judges_the_default_preset_row():
    lines = goals(summarise([_row("st_mined_3ep", 1, 0.70, 3), _row("nf_hard_3ep", 1, 0.721, 3),
                             _row("nf_pool8_3ep", 1, 0.725, 3)]))
    assert "`nf_pool8_3ep` 0.7250" in lines[1] and "best chosen on test" in lines[1]
    assert "`nf_hard_3ep` 0.7210 vs strongest st_* `st_mined_3ep` 0.7000: +0.0210" in lines[2]
    assert "met; the default train preset, fixed before this run" in lines[2]


def test_table_shows_dev_and_test_and_says_how_dev_was_held_out(tmp_path):
    rows = [{**_row("nf_hard", seed, 0.67 + seed / 100), "dev_ndcg@10": 0.7, "dev_mrr@10": 0.6,
             "dev_recall@100": 0.9} for seed in (1, 2)]
    meta = {"quick": False, "git_sha": "abc", "machine": "m", "command": "c", "schemes": ["nf_hard"],
            "budget": {"batch_size": 32, "lr": 2e-5, "max_seq_length": 256},
            "dev": {"fraction": 0.1, "seed": 13, "queries": 81, "train_pairs": 830}}
    write_table(str(tmp_path / "u"), meta, rows)
    table = (tmp_path / "u.md").read_text()
    assert "81 of the train queries (0.1, seed 13) held out of training for every row as dev" in table
    assert "| `nf_hard` | st | x | 1 | 9 | 2 | 0.7000 ± 0.0000 | 0.6850 ± 0.0071 |" in table
    assert json.loads((tmp_path / "u.json").read_text())["summary"]["nf_hard"]["dev_ndcg@10"] == 0.7


def test_hard_pool_keeps_each_pairs_hardest_by_retrieval_rank_unless_a_row_draws_from_a_deeper_pool(tmp_path):
    negatives = str(tmp_path / "n.parquet")
    ranks = [10, 3, 40, 7, 22, 5, 9, 15]  # retrieval ranks: not 1..n
    rows = [("q1", "d1", f"h{r}", "hard", r, None) for r in ranks]
    rows += [("q2", "d2", "h2", "hard", 2, None), ("q1", "d1", "s1", "semi_hard", 60, None),
             ("q1", "d1", "c1", "contextual", None, "edited")]
    pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(
        ["query_id", "positive_id", "negative_id", "tier", "rank", "negative"])}), negatives)
    bench = Bench.__new__(Bench)
    bench.args = SimpleNamespace(negatives=negatives, workdir=str(tmp_path))
    bench._negatives_files = {}
    cut = pq.read_table(bench.negatives_file(3)).to_pydict()
    assert sorted(cut["negative_id"]) == ["c1", "h2", "h3", "h5", "h7", "s1"]  # other tiers and pairs stay
    assert bench.negatives_file(8) == negatives  # nothing to cut: the file itself


def test_parallel_parts_balance_cost_keep_plan_order_and_round_trip():
    plan = schedule(["base", "st_mined", "nf_hard", "nf_hard_3ep", "nf_hard_3ep_refresh"], [1, 2, 3])
    parts = split_plan(plan, 4)
    assert sorted(map(str, (item for part in parts for item in part))) == sorted(map(str, plan))
    for part in parts:
        assert part == [item for item in plan if item in part]  # each part keeps the priority order
    loads = [sum(row_cost(s) for s, _ in part) for part in parts]
    assert max(loads) - min(loads) <= max(row_cost(s) for s, _ in plan)
    assert split_plan(plan[:2], 4) == [[plan[0]], [plan[1]]]  # never an empty part
    assert decode_rows(encode_rows(plan)) == set(plan)


def test_default_recipe_row_trains_what_the_default_train_preset_trains():
    from bench.usefulness import BUDGET, DEFAULT_RECIPE, SCHEMES
    from trainer.presets import resolve_train_config

    preset = resolve_train_config({})
    settings = SCHEMES[DEFAULT_RECIPE][3]
    assert (preset.tiers, preset.epochs, preset.file_negatives) == (("hard",), settings["epochs"],
                                                                    BUDGET["file_negatives"])
    assert (preset.memory_bank, preset.curriculum, preset.refresh_every) == (0, "none", 0)
    assert (preset.batch_size, preset.lr, preset.temperature) == (BUDGET["batch_size"], BUDGET["lr"],
                                                                  BUDGET["temperature"])
    assert set(settings) == {"epochs", "tiers"} and settings["tiers"] == "hard"


def test_parallel_parts_merge_into_one_table(tmp_path):
    """Two rows as two processes (no training on the quick slice's base row; 2 steps for st_inbatch): the
    merged table holds both parts' rows and says the device was shared."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "bench.usefulness", "--quick", "--parallel", "2", "--schemes",
                           "base,st_inbatch", "--seeds", "1", "--device", "cpu", "--results-dir",
                           str(tmp_path / "results"), "--workdir", str(tmp_path / "work")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = json.load(open(tmp_path / "results" / "usefulness-quick.json"))
    assert sorted((r["scheme"], r["seed"]) for r in table["rows"]) == [("base", None), ("st_inbatch", 1)]
    assert table["parallel"] == 2 and sorted(os.listdir(tmp_path / "results" / "parts")) == ["1", "2"]
    assert "rows sharing the device" in open(tmp_path / "results" / "usefulness-quick.md").read()


def _fake_run(folder, hard_ranks: dict[str, int], semi: dict[str, int] | None = None):
    """The parts of a RUN_DIR that trainer.data.compact_negatives reads: inputs/docs and negatives/tier=*."""
    import os

    os.makedirs(folder / "inputs" / "docs")
    pq.write_table(pa.table({"doc_id": ["d1", *hard_ranks, *(semi or {})]}), folder / "inputs" / "docs" / "p.parquet")
    for tier, ranks in (("hard", hard_ranks), ("semi_hard", semi)):
        if ranks:
            os.makedirs(folder / "negatives" / f"tier={tier}")
            pq.write_table(pa.table({"query_id": ["q1"] * len(ranks), "positive_id": ["d1"] * len(ranks),
                                     "negative_id": list(ranks), "rank": pa.array(list(ranks.values()), pa.int32()),
                                     "negative": [f"text {n}" for n in ranks]}),
                           folder / "negatives" / f"tier={tier}" / "p.parquet")


def test_pool_run_adds_each_pairs_deeper_hard_negatives_and_refuses_a_pool_that_does_not_extend_the_run(tmp_path):
    from bench.usefulness import compact_with_pool

    _fake_run(tmp_path / "run", {"n2": 2, "n5": 5, "n9": 9}, semi={"s40": 40})
    _fake_run(tmp_path / "pool", {"n2": 2, "n5": 5, "n9": 9, "n11": 11, "n14": 14}, semi={"s60": 60})
    out = str(tmp_path / "negatives.parquet")
    assert compact_with_pool(str(tmp_path / "run"), str(tmp_path / "pool"), out) == 6
    table = pq.read_table(out).to_pydict()
    assert sorted(zip(table["tier"], table["negative_id"])) == [
        ("hard", "n11"), ("hard", "n14"), ("hard", "n2"), ("hard", "n5"), ("hard", "n9"), ("semi_hard", "s40")]
    bench = Bench.__new__(Bench)
    bench.args = SimpleNamespace(negatives=out, workdir=str(tmp_path))
    bench._negatives_files = {}
    kept = pq.read_table(bench.negatives_file(3)).column("negative_id").to_pylist()
    assert sorted(kept) == ["n2", "n5", "n9", "s40"]  # the --hard 3 run exactly

    _fake_run(tmp_path / "other", {"n2": 2, "n3": 3, "n5": 5, "n9": 9})  # n3 outranks the run's n5, n9
    with pytest.raises(ValueError, match="does not extend the hard tier"):
        compact_with_pool(str(tmp_path / "run"), str(tmp_path / "other"), str(tmp_path / "bad.parquet"))


def test_code_digest_names_the_sources_and_changes_with_them(tmp_path, monkeypatch):
    import bench.usefulness as usefulness

    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "loop.py").write_text("a = 1\n")
    monkeypatch.setattr(usefulness, "REPO", str(tmp_path))
    first = usefulness.code_digest()
    assert len(first) == 64 and first == usefulness.code_digest()
    (tmp_path / "trainer" / "loop.py").write_text("a = 2\n")
    assert usefulness.code_digest() != first
