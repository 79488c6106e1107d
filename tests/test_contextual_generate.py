"""Contextual negatives end to end on 20 SciFact train positives (tests/fixtures/contextual), tiny model.

The tiny random model moves little under one-word edits, so these tests use a wide band (0.5, 0.999999);
the real model and the default band are exercised by tests/test_contextual_bundled.py and bench/contextual.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from schemas.build_config import CONTEXTUAL_KINDS, ContextualConfig, EmbedConfig
from schemas.negatives import IDENTITY_COLUMNS, NEGATIVES_SCHEMA, lexical_overlap, rows_to_table, text_hash
from transforms.contextual.entity import entities_in, vocabulary_from_counts

FIXTURES = Path(__file__).parent / "fixtures" / "contextual"
BAND = (0.5, 0.999999)
SEED = 13
# Share of the 20 positives with >= 1 accepted negative per kind, measured with the tiny model once edits
# moved into the sentence that matches the query (antonym 17, synonym 17, negation 14, number 1, entity 11,
# focus 16 of 20; whole-window edits had 20, 20, 20, 5, 18, 16); floors a little below.
FLOORS = {"antonym": 0.75, "synonym": 0.75, "negation": 0.6, "number": 0.05, "entity": 0.45, "focus": 0.6}
GENERATORS = {"nlpaug:antonym", "nlpaug:synonym", "negation", "number", "entity", "focus"}


def read_jsonl(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8") as fp:
        return [json.loads(line) for line in fp]


def entity_vocabulary() -> dict:
    frequency: dict[str, int] = {}
    for row in read_jsonl("corpus.jsonl"):
        for entity in entities_in(row["passage"]):
            frequency[entity] = frequency.get(entity, 0) + 1
    return vocabulary_from_counts(frequency)


def with_vectors(pairs: list[dict], model) -> list[dict]:
    """Pair dicts as the mine stage builds them: vectors from the run's model, score_positive = cos(q, p)."""
    queries = model.encode_query([p["anchor"] for p in pairs], convert_to_numpy=True)
    positives = model.encode_document([p["positive"] for p in pairs], convert_to_numpy=True)
    out = []
    for pair, q, v in zip(pairs, queries, positives):
        q, v = (q / np.linalg.norm(q)).astype(np.float32), (v / np.linalg.norm(v)).astype(np.float32)
        out.append({**pair, "query_vector": q, "positive_vector": v, "score_positive": float(q @ v)})
    return out


@pytest.fixture(scope="module")
def embed(tiny_model_dir) -> EmbedConfig:
    return EmbedConfig(model=tiny_model_dir, max_seq_length=128, batch_size=32)


@pytest.fixture(scope="module")
def generator(embed):
    from transforms.contextual.generator import ContextualGenerator

    config = ContextualConfig(per_pair=100, kinds=CONTEXTUAL_KINDS, similarity_band=BAND)
    return ContextualGenerator.load(config, embed, SEED)


@pytest.fixture(scope="module")
def pairs(generator) -> list[dict]:
    return with_vectors(read_jsonl("pairs.jsonl"), generator.model)


@pytest.fixture(scope="module")
def vocab() -> dict:
    return entity_vocabulary()


@pytest.fixture(scope="module")
def all_accepted(generator, pairs, vocab):
    """Every accepted candidate (per_pair=100), all kinds, one batch of 20 pairs."""
    return generator.run(pairs, vocab)


def identities(rows: list[dict]) -> dict[tuple, dict]:
    return {tuple(r[c] for c in IDENTITY_COLUMNS): r for r in rows}


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    ia, ib = identities(a), identities(b)
    assert ia.keys() == ib.keys() and len(ia) == len(a)
    for key, row in ia.items():
        for column in ("score_negative", "similarity_to_positive", "score_positive"):
            assert abs(row[column] - ib[key][column]) <= 1e-6
        assert row["negative"] == ib[key]["negative"] and row["edit"] == ib[key]["edit"]


def test_each_kind_yields_accepted_negatives_for_most_positives(all_accepted):
    rows, deadletter, counts = all_accepted
    assert deadletter == [] and counts.pairs == 20
    for kind, floor in FLOORS.items():
        generator = "nlpaug:" + kind if kind in ("antonym", "synonym") else kind
        covered = {r["positive_id"] for r in rows if r["generator"] == generator}
        assert len(covered) >= floor * 20, (kind, len(covered))


def test_edits_land_in_the_sentence_that_matches_the_query(all_accepted, generator):
    from transforms.contextual.common import changed_spans, match_sentence, split_at_window
    from transforms.contextual.entity import same_entity_type

    rows, _, _ = all_accepted
    for row in rows:
        head, _ = split_at_window(row["positive"], generator.model.tokenizer, generator.window_tokens)
        start, end = match_sentence(head, row["anchor"])
        spans = changed_spans(row["positive"], row["negative"])
        inside = [start <= a and b <= end for a, b in spans]
        if row["generator"] == "entity":  # the entity of that sentence, at every mention in the window
            assert any(inside) and all(b <= len(head) for _, b in spans)
            assert same_entity_type(*row["edit"].split(" -> ")), row["edit"]
        else:
            assert spans and all(inside), (row["generator"], row["edit"])


def test_rows_are_valid_contextual_negatives(all_accepted, pairs, generator):
    rows, _, _ = all_accepted
    table = rows_to_table(rows)
    assert table.schema == NEGATIVES_SCHEMA and table.num_rows == len(rows) > 100
    by_pair = {(p["query_id"], p["positive_id"]): p for p in pairs}
    vectors = generator.embed_texts([r["negative"] for r in rows])  # [n, dim]
    for row, vector in zip(rows, vectors):
        pair = by_pair[(row["query_id"], row["positive_id"])]
        assert row["tier"] == "contextual" and row["rank"] is None and row["generator"] in GENERATORS
        assert row["negative_id"] == f"ctx:{row['positive_id']}:{text_hash(row['negative'])}"
        assert row["negative_text_hash"] == text_hash(row["negative"]) not in pair["judged_positive_hashes"]
        assert BAND[0] <= round(row["similarity_to_positive"], 6) < BAND[1]
        assert abs(row["similarity_to_positive"] - float(vector @ pair["positive_vector"])) < 1e-5
        assert abs(row["score_negative"] - float(vector @ pair["query_vector"])) < 1e-5
        assert row["lexical_overlap"] == pytest.approx(lexical_overlap(row["positive"], row["negative"]))
        assert " -> " in row["edit"] or " <-> " in row["edit"]


def test_edits_fall_inside_the_model_window(all_accepted, generator):
    from transforms.contextual.common import split_at_window

    rows, _, _ = all_accepted
    tokenizer = generator.model.tokenizer
    long_positives = 0
    for row in rows:
        positive, negative = row["positive"], row["negative"]
        head, tail = split_at_window(positive, tokenizer, generator.window_tokens)
        first_change = next(i for i, (a, b) in enumerate(zip(positive, negative)) if a != b)
        assert first_change < len(head) and negative.endswith(tail)  # the rest of a long abstract is untouched
        tokens_before = len(tokenizer(positive[:first_change], add_special_tokens=False)["input_ids"])
        assert tokens_before < generator.window_tokens == 128 - 2
        long_positives += bool(tail)
    assert long_positives > len(rows) / 2  # most SciFact abstracts are longer than the window


def test_counts_add_up_per_kind(all_accepted):
    rows, _, counts = all_accepted
    stats = counts.as_dict()
    for kind in CONTEXTUAL_KINDS:
        rejected = sum(stats["rejected_by_kind"].get(kind, {}).values())
        assert stats["candidates"][kind] == stats["accepted"].get(kind, 0) + rejected > 0
        assert stats["selected"].get(kind, 0) == stats["accepted"].get(kind, 0)  # per_pair=100 keeps all
    assert sum(stats["selected"].values()) == len(rows)
    assert stats["pairs_with_negative"] == len({(r["query_id"], r["positive_id"]) for r in rows})


def test_per_pair_cap_spreads_across_kinds_and_is_deterministic(generator, pairs, vocab, all_accepted):
    capped = dataclasses.replace(generator.contextual, per_pair=2)
    original, generator.contextual = generator.contextual, capped
    try:
        rows, _, counts = generator.run(pairs[:8], vocab)  # another batch composition than all_accepted
        again, _, _ = generator.run(list(reversed(pairs[:8])), vocab)
    finally:
        generator.contextual = original
    assert_same_rows(rows, again)
    all_rows = identities(all_accepted[0])
    per_pair: dict[tuple, list] = {}
    for row in rows:
        per_pair.setdefault((row["query_id"], row["positive_id"]), []).append(row["generator"])
        assert tuple(row[c] for c in IDENTITY_COLUMNS) in all_rows  # same decisions in a different batch
    assert per_pair and all(len(kinds) == 2 and len(set(kinds)) == 2 for kinds in per_pair.values())
    assert sum(counts.selected.values()) == len(rows) <= 16


def test_a_failing_perturbation_is_dead_lettered_and_the_run_goes_on(generator, pairs, vocab):
    from transforms.contextual.generator import default_generators

    def broken_number(text, rng, resources, attempts=3):
        if "HIV" in text:
            raise ValueError("cannot parse quantity")
        return default_generators()["number"](text, rng, resources, attempts)

    generators = dict(generator.generators, number=broken_number)
    original, generator.generators = generator.generators, generators
    try:
        rows, deadletter, counts = generator.run(pairs[:4], vocab)
    finally:
        generator.generators = original
    bad = [p for p in pairs[:4] if "HIV" in p["positive"]]
    assert len(bad) == 1 and counts.deadletter == 1
    assert deadletter == [
        {
            "source": "contextual",
            "location": f"{bad[0]['query_id']}/{bad[0]['positive_id']}",
            "reason": "perturbation_failed",
            "detail": "ValueError: cannot parse quantity",
            "raw": bad[0]["positive"][:300],
        }
    ]
    assert rows and all(r["positive_id"] != bad[0]["positive_id"] for r in rows)
