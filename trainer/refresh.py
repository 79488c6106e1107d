"""In-training refresh: re-score each query's mined candidate pool with the model being trained and redraw
the hard and semi_hard tiers behind the same relative-margin guard as mining.

The pool of a query is every mined candidate of that query in the training data (hard, semi_hard and random
rows of all its positives; contextual edits are generated, not retrieved, and stay as they are). For each
(query, positive) example, candidates that are judged positives of the query, or whose cosine to the query
is not below (1 - margin) * cos(query, positive), are dropped (sentence-transformers' relative_margin);
the rest, by descending score, give the new hard tier (as many as the example had) and then semi_hard.
Pure torch + the model: no Beam or faiss, so it runs wherever the trainer does.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from trainer.data import Example, Negative, TrainingData

MINED = ("hard", "semi_hard", "random")


def candidate_pools(data: TrainingData) -> dict[str, dict[str, Negative]]:
    """query_id -> doc_id -> Negative: every mined candidate of the query, over all its positives."""
    pools: dict[str, dict[str, Negative]] = {}
    for example in data.examples:
        pool = pools.setdefault(example.query_id, {})
        for tier in MINED:
            for negative in example.negatives.get(tier, ()):
                pool.setdefault(negative.doc_id, negative)
    return {q: dict(sorted(pool.items())) for q, pool in pools.items()}


@torch.no_grad()
def _embed(model, texts: list[str], batch_size: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        out = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                           show_progress_bar=False)
    finally:
        model.train(was_training)
    return out.float()


def refresh_examples(model, data: TrainingData, margin: float = 0.05, batch_size: int = 128) -> tuple[list, dict]:
    """New examples with hard and semi_hard redrawn from the current model's scores; and counts for the log.

    An example keeps its number of hard and semi_hard negatives where the guard leaves enough candidates
    (fewer otherwise; the batch pads from the corpus as for any short example)."""
    pools = candidate_pools(data)
    queries = sorted({e.query_id for e in data.examples})
    docs = sorted({d for pool in pools.values() for d in pool} | {e.positive_id for e in data.examples})
    text_of = {e.positive_id: e.positive for e in data.examples}
    text_of.update({n.doc_id: n.text for pool in pools.values() for n in pool.values()})
    q_emb = _embed(model, [data.queries.get(q) or _anchor(data, q) for q in queries], batch_size)
    d_emb = _embed(model, [text_of[d] for d in docs], batch_size)
    q_row, d_row = {q: i for i, q in enumerate(queries)}, {d: i for i, d in enumerate(docs)}
    scores = (q_emb @ d_emb.T).cpu().numpy()  # [queries, docs]: one matrix product, read on the CPU below
    examples, changed, kept = [], 0, 0
    for example in data.examples:
        pool = [n for d, n in pools.get(example.query_id, {}).items()
                if d not in data.positives_of.get(example.query_id, ()) and d != example.positive_id]
        row = scores[q_row[example.query_id]]
        positive_score = float(row[d_row[example.positive_id]])
        scored = sorted(((float(row[d_row[n.doc_id]]), n.doc_id, n) for n in pool), key=lambda t: (-t[0], t[1]))
        allowed = [n for score, _, n in scored if score < positive_score * (1.0 - margin)]
        n_hard, n_semi = len(example.negatives.get("hard", ())), len(example.negatives.get("semi_hard", ()))
        negatives = dict(example.negatives)
        if "hard" in negatives:
            negatives["hard"] = tuple(sorted(allowed[:n_hard], key=lambda n: n.doc_id))
        if "semi_hard" in negatives:
            negatives["semi_hard"] = tuple(sorted(allowed[n_hard:n_hard + n_semi], key=lambda n: n.doc_id))
        before = {n.doc_id for n in example.negatives.get("hard", ())}
        after = {n.doc_id for n in negatives.get("hard", ())}
        changed += len(after - before)
        kept += len(after & before)
        examples.append(replace(example, negatives=negatives))
    return examples, {"hard_new": changed, "hard_kept": kept, "queries": len(queries), "candidates": len(docs)}


def _anchor(data: TrainingData, query_id: str) -> str:
    return next(e.anchor for e in data.examples if e.query_id == query_id)


__all__ = ["Example", "candidate_pools", "refresh_examples"]
