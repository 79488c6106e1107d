"""Parity with sentence_transformers.util.mine_hard_negatives (the tool most users reach for).

Same embeddings on both sides (the tiny model's, handed to sentence-transformers through its encode calls),
hard tier only, `top`, relative_margin 0.05, exact index and the text / near-copy guards off.
sentence-transformers retrieves a fixed depth (range_max + max_positives with its automatic range_max =
10 * K + max_positives) from rank 1, so a pair whose surviving candidates lie below it gets fewer than K or none;
negforge starts each pair's window at its margin threshold (issue 15), so it fills those pairs too, and
wherever sentence-transformers has negatives, its negatives are negforge's best ones. The fixture has
multi-positive queries, margin drops and a planted tie at K. sentence-transformers has no tie rule (faiss and
torch.topk order ties arbitrarily), so at a tie only the tied group must agree; negforge takes the smallest id.
"""

from __future__ import annotations

import numpy as np
import pytest
from planted_run import read_rows, write_run

from pipelines.stage_mine import run_mine
from schemas.build_config import BuildConfig, IndexConfig, IngestConfig, MiningConfig
from schemas.layout import RunLayout
from transforms.topk import round_scores

K = 3
MEAN_SHIFT = 1.0
WORDS = (
    "gene protein cell cancer risk dose trial mouse human brain heart blood vitamin drug therapy immune virus "
    "bacteria sleep diet exercise stroke insulin obesity tumour receptor signal pathway enzyme membrane neuron "
    "muscle bone liver kidney lung skin infection vaccine antibody"
).split()


def corpus_and_pairs():
    rng = np.random.default_rng(11)
    docs = {f"d{i:03d}": " ".join(rng.choice(WORDS, size=rng.integers(6, 14))) + f" study {i}" for i in range(90)}
    queries = {f"q{i:02d}": " ".join(rng.choice(WORDS, size=rng.integers(3, 7))) for i in range(14)}
    pairs = []
    free = iter(rng.permutation(sorted(docs)).tolist())
    for i, query_id in enumerate(sorted(queries)):
        for _ in range(1 + i % 3):  # 1-3 positives per query
            doc_id = next(free)
            if i % 4 != 3:  # a relevant positive: the query's words plus a few others; else a weak one (short)
                extra = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
                docs[doc_id] = f"{queries[query_id]} {extra} study {doc_id}"
            pairs.append((query_id, doc_id))
    return docs, queries, pairs


def centred(vectors: np.ndarray) -> np.ndarray:
    """Tiny-model embeddings around their mean, re-normalised: a random tiny BERT puts every text at
    cos ~ 0.9, so without this nothing would survive a 5% margin. Both sides get exactly these vectors."""
    shifted = vectors - MEAN_SHIFT * vectors.mean(axis=0, keepdims=True)
    return (shifted / np.linalg.norm(shifted, axis=1, keepdims=True)).astype(np.float32)


def st_survivors(qv, doc_ids, doc_matrix, positives, depth):
    """sentence-transformers' survivors of one query: top-`depth` raw, minus positives and the 0.05 margin."""
    scores = doc_matrix @ qv  # [n] float64
    order = np.lexsort((doc_ids, -round_scores(scores)))[:depth]
    floor = float(round_scores(min(doc_matrix[doc_ids.tolist().index(p)] @ qv for p in positives)))
    keep = [i for i in order if doc_ids[i] not in positives and round_scores(scores[i]) <= floor - abs(floor) * 0.05]
    return [str(doc_ids[i]) for i in keep], scores


@pytest.fixture(scope="module")
def fixture_with_tie(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    docs, queries, pairs = corpus_and_pairs()
    doc_ids = sorted(docs)
    doc_vecs = dict(zip(doc_ids, centred(model.encode([docs[d] for d in doc_ids]))))
    query_vecs = dict(zip(sorted(queries), centred(model.encode([queries[q] for q in sorted(queries)]))))
    max_pos = max(sum(1 for q, _ in pairs if q == query_id) for query_id in queries)
    depth = 10 * K + 2 * max_pos
    # Plant a tie at K: copy the K-th survivor of a multi-positive query under an id sorting before it, with
    # text differing only in case (same tokens for the uncased tokenizer, same vector, different string).
    matrix = np.stack([doc_vecs[d] for d in doc_ids]).astype(np.float64)  # [n, dim]
    for tied_query in sorted(queries):
        positives = {d for q, d in pairs if q == tied_query}
        survivors, _ = st_survivors(query_vecs[tied_query].astype(np.float64), np.array(doc_ids), matrix,
                                    positives, depth)
        if len(positives) > 1 and len(survivors) > K:
            break
    kth = survivors[K - 1]
    twin = kth.replace("d", "c")  # 'c...' sorts before every 'd...'
    docs[twin], doc_vecs[twin] = docs[kth].upper(), doc_vecs[kth].copy()
    return model, docs, queries, pairs, doc_vecs, query_vecs, max_pos, tied_query, (kth, twin)


def mine_with_negforge(tmp_path, docs, queries, pairs, doc_vecs, query_vecs, max_pos):
    run = write_run(str(tmp_path / "run"), docs, queries, pairs, doc_vecs, query_vecs, num_shards=2)
    range_max = 10 * K + max_pos  # sentence-transformers' automatic range_max with a margin
    mining = MiningConfig(hard=K, semi_hard=0, random=0, range_max=range_max, max_depth=range_max + max_pos,
                          relative_margin=0.05, sampling="top", text_copy_guard=False, near_copy_guard=False,
                          margin_reference="lowest")
    config = BuildConfig(output=run.run_dir, ingest=IngestConfig(beir_dir="unused", split="train"),
                         index=IndexConfig(num_shards=2), mining=mining)
    out = RunLayout(str(tmp_path / "out"))
    stats = run_mine(config, run, out, [])
    return read_rows(out), stats


def mine_with_sentence_transformers(model, docs, queries, pairs, doc_vecs, query_vecs):
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    by_text = {docs[d]: v for d, v in doc_vecs.items()} | {queries[q]: v for q, v in query_vecs.items()}
    model.encode_document = lambda texts, **_: np.stack([by_text[t] for t in texts])
    model.encode_query = lambda texts, **_: np.stack([by_text[t] for t in texts])
    dataset = Dataset.from_dict({"anchor": [queries[q] for q, _ in pairs], "positive": [docs[d] for _, d in pairs]})
    mined = mine_hard_negatives(dataset, model, corpus=[docs[d] for d in sorted(docs)], num_negatives=K,
                                relative_margin=0.05, sampling_strategy="top", use_faiss=True, verbose=False,
                                output_format="triplet")
    return mined.to_polars()


@pytest.mark.slow
def test_hard_negatives_equal_sentence_transformers(fixture_with_tie, tmp_path):
    model, docs, queries, pairs, doc_vecs, query_vecs, max_pos, tied_query, (kth, twin) = fixture_with_tie
    ours, stats = mine_with_negforge(tmp_path, docs, queries, pairs, doc_vecs, query_vecs, max_pos)
    theirs = mine_with_sentence_transformers(model, docs, queries, pairs, doc_vecs, query_vecs)
    text_to_id = {t: d for d, t in docs.items()}
    query_of = {t: q for q, t in queries.items()}
    st = {}
    for anchor, positive, negative in theirs.select("anchor", "positive", "negative").iter_rows():
        st.setdefault((query_of[anchor], text_to_id[positive]), set()).add(text_to_id[negative])
    nf = {}
    for q, p, n in ours.select("query_id", "positive_id", "negative_id").iter_rows():
        nf.setdefault((q, p), set()).add(n)

    assert stats["dropped"]["relative_margin"] > 0 and max_pos > 1  # margin drops, multi-positive queries
    assert set(st) <= set(nf) and all(len(n) == K for n in nf.values())  # every pair ST mined, and the rest
    score = lambda q, d: float(round_scores(float(doc_vecs[d] @ query_vecs[q])))  # noqa: E731
    for key in sorted(st):
        q = key[0]
        ours_best = sorted((score(q, d) for d in nf[key]), reverse=True)[: len(st[key])]
        assert sorted((score(q, d) for d in st[key]), reverse=True) == ours_best, key
        if len(st[key]) < K:
            continue  # sentence-transformers' depth ran out: negforge went on below it
        lowest = min(score(q, d) for d in nf[key])
        above = lambda ids: {d for d in ids if score(q, d) > lowest}  # noqa: E731
        assert above(st[key]) == above(nf[key]), key  # only a tie at the last place may differ
        tied = {d for d in docs if score(q, d) == lowest and d not in {p for qq, p in pairs if qq == q}}
        taken = sum(score(q, d) == lowest for d in nf[key])
        assert sorted(nf[key] & tied) == sorted(tied)[:taken], key  # negforge: smallest ids of the tie
    tied_pairs = [key for key in st if key[0] == tied_query]
    assert tied_pairs and all(nf[key] & {kth, twin} == {twin} and len(st[key] & {kth, twin}) == 1
                              for key in tied_pairs)
    short_st = sum(len(v) < K for v in st.values()) + len({(q, d) for q, d in pairs} - set(st))
    assert short_st > 0 and stats["pairs_full"]["hard"] == stats["pairs"]  # ST left pairs short, negforge none
