"""Retrieval quality of an embedding model on a BEIR-style split (nDCG@10, MRR@10, Recall@100).

The maths is sentence-transformers' `InformationRetrievalEvaluator` (the same evaluator its trainer
uses), not ours: it ranks the whole corpus by the model's similarity, breaks ties by (-score, doc_id)
and scores binary relevance (every qrel > 0 counts as relevant), like BEIR/MTEB on SciFact.

This module must import without Beam, faiss or nlpaug: the trainer and `negforge eval` use it alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # evaluation never reaches a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "mrr@10", "recall@100")


def _evaluator_class():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    except ImportError:  # 3.x - 5.x
        from sentence_transformers.evaluation import InformationRetrievalEvaluator
    return InformationRetrievalEvaluator


def relevant_sets(qrels: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    """query_id -> {doc_id with score > 0}; queries with no relevant doc are left out."""
    relevant = {qid: {doc_id for doc_id, score in docs.items() if score > 0} for qid, docs in qrels.items()}
    return {qid: docs for qid, docs in relevant.items() if docs}


def _evaluator(corpus, queries, relevant, batch_size, name, query_prompt, corpus_prompt):
    return _evaluator_class()(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10, 100],
        map_at_k=[100],
        batch_size=batch_size,
        name=name,
        write_csv=False,
        query_prompt=query_prompt or None,
        corpus_prompt=corpus_prompt or None,
    )


def evaluate_retrieval_splits(
    model: Any,
    corpus: dict[str, str],
    splits: dict[str, tuple[dict[str, str], dict[str, dict[str, int]]]],
    batch_size: int = 64,
    query_prompt: str | None = None,
    corpus_prompt: str | None = None,
) -> dict[str, dict[str, float]]:
    """evaluate_retrieval for several query sets (name -> (queries, qrels)) against one corpus.

    The corpus is encoded once and shared: with one model and one corpus the document embeddings are the
    same for every split, so this equals one evaluate_retrieval per split at a fraction of the cost.
    Returns name -> {"ndcg@10", "mrr@10", "recall@100"}."""
    evaluators = {}
    for name, (queries, qrels) in splits.items():
        relevant = relevant_sets(qrels)
        scored = [qid for qid in queries if qid in relevant]
        if not scored or not corpus:
            raise ValueError(
                f"nothing to evaluate in {name!r}: {len(queries)} queries, {len(corpus)} docs, {len(scored)} "
                "queries with a relevant doc in the qrels; check the split and that query ids match the qrels"
            )
        evaluators[name] = (
            _evaluator(corpus, queries, relevant, batch_size, name, query_prompt, corpus_prompt),
            len(scored),
        )
    first = next(iter(evaluators.values()))[0]
    corpus_embeddings = first.embed_inputs(
        model, first.corpus, encode_fn_name="document", prompt_name=None, prompt=first.corpus_prompt
    )
    results = {}
    for name, (evaluator, scored_count) in evaluators.items():
        scores = evaluator(model, corpus_embeddings=corpus_embeddings)
        prefix = evaluator.primary_metric[: -len("ndcg@10")]  # e.g. "dev_cosine_"
        results[name] = {metric: float(scores[prefix + metric]) for metric in METRICS}
        logger.info("%s: %d queries, %d docs: %s", name, scored_count, len(corpus), results[name])
    return results


def evaluate_retrieval(
    model: Any,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    batch_size: int = 64,
    name: str = "eval",
    query_prompt: str | None = None,
    corpus_prompt: str | None = None,
) -> dict[str, float]:
    """Score `model` (a SentenceTransformer, or anything with its encode_query/encode_document/similarity)
    retrieving from `corpus` (doc_id -> passage) for `queries` (query_id -> text) against `qrels`.

    Returns {"ndcg@10", "mrr@10", "recall@100"} as floats in [0, 1]. Queries without a relevant doc in
    `qrels` are not scored (BEIR's rule). Raises ValueError when nothing can be scored.
    """
    splits = {name: (queries, qrels)}
    return evaluate_retrieval_splits(model, corpus, splits, batch_size, query_prompt, corpus_prompt)[name]
