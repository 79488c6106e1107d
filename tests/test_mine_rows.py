"""BuildRowsFn and the row writer's grouping: columnar rows are the rows a dict per row would give."""

import numpy as np
import pyarrow as pa
from apache_beam.pvalue import TaggedOutput

from schemas.negatives import NEGATIVES_SCHEMA, RowColumns, columns_to_table, lexical_overlap, rows_to_table
from transforms import mining_math as mm
from transforms.mine_rows import BuildRowsFn, QueryTexts, text_requests
from transforms.mine_types import MinedQuery, QueryPayload
from transforms.write_negatives import RowGroupsFn

TEXTS = {
    "p1": "Aspirin lowers the risk of stroke.",
    "n1": "aspirin and the heart",
    "n2": "Statins lower cholesterol.",
    "n3": "",  # no tokens
}
HASHES = {doc_id: f"h-{doc_id}" for doc_id in TEXTS}  # inputs/docs text_hash, taken as given


def _mined() -> MinedQuery:
    """q1: p1 (texts joined) and p2 (no text: its rows are skipped); negatives n1 hard, n2 semi-hard, n3 random,
    n4 hard without a text (its rows are skipped)."""
    ids = np.array(["p1", "p2"], dtype=object)
    positives = mm.Positives(ids=ids, text_hashes=np.array(["h-p1", "h-p2"], dtype=object),
                             vectors=np.eye(2, dtype=np.float32), scores=np.array([0.8, 0.7]))
    return MinedQuery(
        query_id="q1",
        payload=QueryPayload("q1", np.ones(2, np.float32), positives, depth=10),
        negative_ids=np.array(["n1", "n2", "n3", "n4"], dtype=object),
        tiers=np.array([0, 1, 2, 0], np.int8),
        ranks=np.array([3, 7, -1, 4]),
        scores=np.array([0.61, 0.45, 0.1, 0.6]),
        pair_offsets=np.array([0, 4, 6]),
        pair_negatives=np.array([0, 3, 1, 2, 0, 1], np.int32),
        pair_sims=np.array([0.5, 0.4, 0.3, 0.2, 0.55, 0.35], np.float32),
        generator="faiss:Flat",
        stats={},
    )


def _expected_rows(mined: MinedQuery) -> list[dict]:
    """p1's rows as the per-row dict code built them (p2 and n4 have no text)."""
    rows = []
    for e, n in [(0, 0), (2, 1), (3, 2)]:
        negative_id = mined.negative_ids[n]
        tier = ("hard", "semi_hard", "random")[mined.tiers[n]]
        rows.append({
            "query_id": "q1", "positive_id": "p1", "negative_id": negative_id, "anchor": "does aspirin help",
            "positive": TEXTS["p1"], "negative": TEXTS[negative_id], "tier": tier,
            "rank": None if tier == "random" else int(mined.ranks[n]), "score_positive": 0.8,
            "score_negative": float(mined.scores[n]), "similarity_to_positive": float(mined.pair_sims[e]),
            "generator": "uniform" if tier == "random" else "faiss:Flat", "edit": None,
            "negative_text_hash": HASHES[negative_id],
            "lexical_overlap": lexical_overlap(TEXTS["p1"], TEXTS[negative_id]),
        })
    return rows


def _texts(doc_ids: list[str]) -> QueryTexts:
    return QueryTexts(doc_ids, [TEXTS[d] for d in doc_ids], [HASHES[d] for d in doc_ids])


def test_text_requests_name_each_document_once():
    assert text_requests(_mined()) == ("q1", ["p1", "p2", "n1", "n2", "n3", "n4"])


def test_rows_from_columns_equal_rows_from_dicts():
    mined = _mined()
    fn = BuildRowsFn(contextual=True)
    fn.setup()
    # the texts come from two buckets of the join; p2 and n4 have none
    element = ("q1", {"mined": [mined], "texts": [_texts(["n2", "p1"]), _texts(["n3", "n1"])],
                      "query": ["does aspirin help"]})
    out = list(fn.process(element))
    pairs = [o.value for o in out if isinstance(o, TaggedOutput)]
    batches = [o for o in out if not isinstance(o, TaggedOutput)]
    assert [p["positive_id"] for p in pairs] == ["p1"]  # contextual pairs only where the positive has a text
    assert [tier for tier, _ in batches] == ["hard", "semi_hard", "random"]
    expected = _expected_rows(mined)
    for tier, columns in batches:
        want = rows_to_table([r for r in expected if r["tier"] == tier])
        assert columns_to_table([columns]).equals(want), tier
    # one row group of several queries' batches is the table of their rows in order
    assert columns_to_table([c for _, c in batches]).equals(rows_to_table(expected))


def test_a_query_without_text_gives_no_rows():
    element = ("q1", {"mined": [_mined()], "texts": [_texts(["p1", "n1"])], "query": []})
    assert list(BuildRowsFn(contextual=True).process(element)) == []


def _columns(query: str, k: int) -> RowColumns:
    rows = [{"query_id": query, "positive_id": "p", "negative_id": f"n{i}", "anchor": "a", "positive": "x",
             "negative": "y", "tier": "hard", "rank": i + 1, "score_positive": 0.5, "score_negative": 0.25,
             "similarity_to_positive": 0.125, "generator": "g", "edit": None, "negative_text_hash": "h",
             "lexical_overlap": 0.0} for i in range(k)]
    table = rows_to_table(rows)
    return RowColumns({f.name: (table.column(f.name).to_numpy() if pa.types.is_floating(f.type)
                                else np.asarray(table.column(f.name).to_pylist(), np.int32) if f.name == "rank"
                                else table.column(f.name).to_pylist()) for f in NEGATIVES_SCHEMA})


def test_row_groups_keep_batches_whole_and_convert_dict_rows_once():
    fn = RowGroupsFn(rows=5)
    fn.start_bundle()
    tables = [t for batch in [("hard", _columns("q1", 3)), ("hard", _columns("q2", 3))] for t in fn.process(batch)]
    dict_rows = [{"query_id": "q3", "positive_id": "p", "negative_id": "c", "anchor": "a", "positive": "x",
                  "negative": "y", "tier": "hard", "score_positive": 0.5, "score_negative": 0.25,
                  "generator": "ctx", "negative_text_hash": "h", "lexical_overlap": 0.0}]
    tables += [t for batch in [("hard", dict_rows), ("hard", list(dict_rows))] for t in fn.process(batch)]
    tables += [w.value for w in fn.finish_bundle()]
    assert [t.num_rows for t in tables] == [3, 5]  # 3 + 3 > 5: the first batch alone; then 3 + 1 + 1
    assert tables[1].column("query_id").to_pylist() == ["q2"] * 3 + ["q3"] * 2
    assert tables[1].column("rank").to_pylist() == [1, 2, 3, None, None]
    assert all(t.schema.equals(NEGATIVES_SCHEMA) for t in tables)
