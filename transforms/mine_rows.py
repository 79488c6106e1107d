"""Rows of the negatives dataset from a query's mined negatives and the texts joined to it (BuildRowsFn).

Rows are built as columns (numpy indices into the query's arrays), one schemas.negatives.RowColumns per query and
tier, made Arrow once per written row group: on dense qrels a query has hundreds of rows, and a dict per row then
Arrow from the dicts cost more than mining them (issue 15).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.negatives import RowColumns, token_set
from transforms.mine_types import (
    CONTEXTUAL_PAIRS,
    MINED_TIERS,
    MinedQuery,
)

logger = logging.getLogger(__name__)

TOKEN_CACHE_DOCS = 10_000  # token sets a BuildRowsFn keeps (~5 KB each); a popular document is tokenised once


@dataclass
class QueryTexts:
    """Texts of some of a query's documents (those of one bucket of the text join), as parallel lists."""

    doc_ids: list[str]
    passages: list[str]
    text_hashes: list[str]  # schemas.negatives.text_hash of each passage (inputs/docs text_hash)


def text_requests(mined: MinedQuery) -> tuple[str, list[str]]:
    """(query_id, [doc_id]): every document whose text the query's rows need (positives and negatives), once."""
    return mined.query_id, list(dict.fromkeys(mined.payload.positives.ids.tolist() + mined.negative_ids.tolist()))


@dataclass
class _Rows:
    """A query's rows before they become tables: per row, its pair j and negative n, in row order."""

    pairs: np.ndarray  # [r] int64 index into the positives
    negatives: np.ndarray  # [r] int64 index into mined.negative_ids
    entries: np.ndarray  # [r] int64 index into mined.pair_negatives / pair_sims


class BuildRowsFn(beam.DoFn):
    """(query_id, {'mined', 'texts': QueryTexts per bucket, 'query'}) -> the query's negatives rows, one (tier,
    RowColumns) per tier (transforms/write_negatives.py: ~240 rows per query on dense qrels,
    so no Beam step runs per row); with contextual on, also one element per (query, positive) on
    'contextual_pairs'. A row whose positive or negative has no text is skipped and counted (rows_missing_text)."""

    def __init__(self, contextual: bool):
        self.contextual = contextual
        self.missing_text = Metrics.counter("mine", "rows_missing_text")
        self._tokens: dict[str, frozenset] = {}  # doc_id -> token_set(passage), at most TOKEN_CACHE_DOCS

    def setup(self):
        self._tokens = {}

    def process(self, element):
        query_id, groups = element
        mined_list, anchors = list(groups["mined"]), list(groups["query"])
        if not mined_list:
            return
        mined = mined_list[0]
        if not anchors:
            self.missing_text.inc()
            logger.warning("query %s has no text in inputs/queries; its rows are skipped", query_id)
            return
        texts = QueryTexts([], [], [])
        for part in groups["texts"]:
            texts.doc_ids += part.doc_ids
            texts.passages += part.passages
            texts.text_hashes += part.text_hashes
        index = {doc_id: i for i, doc_id in enumerate(texts.doc_ids)}
        positive_text = np.array([index.get(d, -1) for d in mined.payload.positives.ids.tolist()], np.int64)  # [p]
        negative_text = np.array([index.get(d, -1) for d in mined.negative_ids.tolist()], np.int64)  # [n]
        rows = self._rows(mined, positive_text, negative_text)
        if len(rows.entries):
            yield from self._batches(query_id, anchors[0], mined, texts, rows, positive_text, negative_text)
        if self.contextual:
            for j in np.flatnonzero(positive_text >= 0).tolist():
                positive = texts.passages[positive_text[j]]
                yield beam.pvalue.TaggedOutput(CONTEXTUAL_PAIRS, _contextual_pair(mined, j, anchors[0], positive))

    def _rows(self, mined: MinedQuery, positive_text: np.ndarray, negative_text: np.ndarray) -> _Rows:
        """The rows whose positive and negative both have a text, in pair then list order; counts the others
        (a pair without its positive's text once, a listed negative without its text once per pair)."""
        offsets = np.asarray(mined.pair_offsets, np.int64)  # [p + 1]
        members = np.asarray(mined.pair_negatives, np.int64)  # [e]
        pair_of = np.repeat(np.arange(len(positive_text)), np.diff(offsets))  # [e]
        with_positive = (positive_text >= 0)[pair_of]  # [e]
        with_negative = negative_text[members] >= 0  # [e]
        missing = int((positive_text < 0).sum()) + int((with_positive & ~with_negative).sum())
        if missing:
            self.missing_text.inc(missing)
        entries = np.flatnonzero(with_positive & with_negative)  # [r]
        return _Rows(pair_of[entries], members[entries], entries)

    def _batches(self, query_id, anchor, mined, texts, rows: _Rows, positive_text, negative_text):
        """(tier, RowColumns) per tier with rows, each batch's rows in the query's row order."""
        positives = mined.payload.positives
        positive_ids, negative_ids = positives.ids.tolist(), mined.negative_ids.tolist()
        overlap = self._overlaps(texts, positive_text[rows.pairs], negative_text[rows.negatives])  # [r] float64
        tiers = np.asarray(mined.tiers)[rows.negatives]  # [r]
        ranks = np.asarray(mined.ranks).astype(np.int32)  # [n]
        score_positive = np.asarray(positives.scores, np.float64).astype(np.float32)  # [p]
        score_negative = np.asarray(mined.scores, np.float64).astype(np.float32)  # [n]
        pair_sims = np.asarray(mined.pair_sims, np.float32)  # [e]
        for code in np.unique(tiers).tolist():
            tier = MINED_TIERS[code]
            sel = np.flatnonzero(tiers == code)  # rows of this tier, in row order
            j, n, e, k = rows.pairs[sel], rows.negatives[sel], rows.entries[sel], len(sel)
            positive_at, negative_at = positive_text[j].tolist(), negative_text[n].tolist()
            yield tier, RowColumns({
                "query_id": [query_id] * k,
                "positive_id": [positive_ids[i] for i in j.tolist()],
                "negative_id": [negative_ids[i] for i in n.tolist()],
                "anchor": [anchor] * k,
                "positive": [texts.passages[i] for i in positive_at],
                "negative": [texts.passages[i] for i in negative_at],
                "tier": [tier] * k,
                # random: no rank (-1: null)
                "rank": np.full(k, -1, np.int32) if tier == "random" else ranks[n],
                "score_positive": score_positive[j],
                "score_negative": score_negative[n],
                "similarity_to_positive": pair_sims[e],
                "generator": ["uniform" if tier == "random" else mined.generator] * k,
                "edit": [None] * k,
                # text_hash of the negative's text, as ingest hashed the passage (inputs/docs)
                "negative_text_hash": [texts.text_hashes[i] for i in negative_at],
                "lexical_overlap": overlap[sel].astype(np.float32),
            })

    def _overlaps(self, texts: QueryTexts, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """[r] float64 schemas.negatives.lexical_overlap(passages[a[i]], passages[b[i]]): each document's token set
        computed once per worker (up to TOKEN_CACHE_DOCS), not once per query; per row only the intersection is
        built (|A u B| = |A| + |B| - |A n B|), and the division is numpy's, as exact as Python's."""
        sets: list = [frozenset()] * len(texts.doc_ids)
        for i in np.unique(np.concatenate([a, b])).tolist():
            sets[i] = self._token_set(texts.doc_ids[i], texts.passages[i])
        sizes = np.array([len(s) for s in sets], np.int64)  # [texts]
        inter = np.array([len(sets[x] & sets[y]) for x, y in zip(a.tolist(), b.tolist())], np.int64)  # [r]
        union = sizes[a] + sizes[b] - inter  # [r]
        return np.divide(inter, union, out=np.ones(len(a), np.float64), where=union > 0)  # two empty texts: 1.0

    def _token_set(self, doc_id: str, passage: str) -> frozenset:
        cached = self._tokens.get(doc_id)
        if cached is None:
            if len(self._tokens) >= TOKEN_CACHE_DOCS:
                self._tokens.clear()
            cached = self._tokens[doc_id] = token_set(passage)
        return cached


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
