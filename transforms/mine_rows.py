"""Rows of the negatives dataset from a query's mined negatives and the texts joined to it (BuildRowsFn)."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.negatives import text_hash, token_set
from transforms.mine_types import (
    CONTEXTUAL_PAIRS,
    MINED_TIERS,
    MinedQuery,
)

logger = logging.getLogger(__name__)


def text_requests(mined: MinedQuery):
    """(doc_id, query_id) for every document whose text the query's rows need (positives and negatives)."""
    wanted = dict.fromkeys(mined.payload.positives.ids.tolist() + mined.negative_ids.tolist())
    for doc_id in wanted:
        yield doc_id, mined.query_id


class BuildRowsFn(beam.DoFn):
    """(query_id, {'mined', 'texts', 'query'}) -> the query's negatives rows, one (tier, [row dicts in
    NEGATIVES_SCHEMA]) batch per tier (transforms/write_negatives.py: ~240 rows per query on dense qrels, so no
    Beam step runs per row); with contextual on, also one element per (query, positive) on 'contextual_pairs'."""

    def __init__(self, contextual: bool):
        self.contextual = contextual
        self.missing_text = Metrics.counter("mine", "rows_missing_text")

    def process(self, element):
        query_id, groups = element
        mined_list, texts, anchors = list(groups["mined"]), dict(groups["texts"]), list(groups["query"])
        if not mined_list:
            return
        mined = mined_list[0]
        if not anchors:
            self.missing_text.inc()
            logger.warning("query %s has no text in inputs/queries; its rows are skipped", query_id)
            return
        positives = mined.payload.positives
        negative_ids = mined.negative_ids.tolist()
        tiers = [MINED_TIERS[t] for t in mined.tiers.tolist()]
        ranks = [None if tier == "random" else rank for tier, rank in zip(tiers, mined.ranks.tolist())]
        scores = mined.scores.tolist()
        generators = ["uniform" if tier == "random" else mined.generator for tier in tiers]
        offsets, members, sims = mined.pair_offsets.tolist(), mined.pair_negatives.tolist(), mined.pair_sims.tolist()
        batches: dict[str, list[dict]] = {}
        hashes: dict[int, str] = {}  # per negative of the query, once
        tokens: dict[str, frozenset] = {}  # token sets of the texts, once per document (lexical_overlap)
        for j, positive_id in enumerate(positives.ids.tolist()):
            positive = texts.get(positive_id)
            if positive is None:
                self.missing_text.inc()
                continue
            for e in range(offsets[j], offsets[j + 1]):
                n = members[e]
                negative = texts.get(negative_ids[n])
                if negative is None:
                    self.missing_text.inc()
                    continue
                if n not in hashes:
                    hashes[n] = text_hash(negative)
                batches.setdefault(tiers[n], []).append({
                    "query_id": query_id,
                    "positive_id": positive_id,
                    "negative_id": negative_ids[n],
                    "anchor": anchors[0],
                    "positive": positive,
                    "negative": negative,
                    "tier": tiers[n],
                    "rank": ranks[n],
                    "score_positive": float(positives.scores[j]),
                    "score_negative": scores[n],
                    "similarity_to_positive": sims[e],
                    "generator": generators[n],
                    "edit": None,
                    "negative_text_hash": hashes[n],  # text_hash of the negative's text, as ingest hashed the passage
                    "lexical_overlap": _overlap(tokens, positive_id, positive, negative_ids[n], negative),
                })
            if self.contextual:
                yield beam.pvalue.TaggedOutput(CONTEXTUAL_PAIRS, _contextual_pair(mined, j, anchors[0], positive))
        yield from batches.items()


def _overlap(tokens: dict, a_id: str, a: str, b_id: str, b: str) -> float:
    """schemas.negatives.lexical_overlap(a, b), with each text's token set computed once per query."""
    if a_id not in tokens:
        tokens[a_id] = token_set(a)
    if b_id not in tokens:
        tokens[b_id] = token_set(b)
    ta, tb = tokens[a_id], tokens[b_id]
    union = len(ta | tb)
    return 1.0 if union == 0 else len(ta & tb) / union


def _contextual_pair(mined: MinedQuery, j: int, anchor: str, positive: str) -> dict:
    positives = mined.payload.positives
    return {
        "query_id": mined.query_id,
        "positive_id": str(positives.ids[j]),
        "anchor": anchor,
        "positive": positive,
        "query_vector": mined.payload.vector,
        "positive_vector": positives.vectors[j],
        "score_positive": float(positives.scores[j]),
        "judged_positive_ids": positives.ids.tolist(),
        "judged_positive_hashes": positives.text_hashes.tolist(),
    }
