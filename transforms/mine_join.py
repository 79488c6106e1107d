"""The joins around mining, as Beam transforms (CoGroupByKey: big inputs travel through shuffles, not side inputs).

    {"embeddings", "pairs"} | BuildQueryPayloads(mining) -> QueryPayload per query (vector, judged positive ids)
    MinedQuery | JoinTexts(docs, queries, contextual)    -> row dicts (+ contextual pair elements)

Corpus-sized inputs (doc vectors, passages) are filtered to the ids the join needs before its shuffle
(KeepIds: the needed ids as one set side input, bounded by the pairs / mined rows, not the corpus).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from transforms import mining_math as mm
from transforms.mine import CONTEXTUAL_PAIRS, BuildRowsFn, QueryPayload, text_requests
from transforms.string_column import as_object_strings


def _vectors_of(table, kind: str):
    """(id, (vector [dim] float32, text_hash)) for the rows of one kind of an embeddings table."""
    kinds = np.asarray(table.column("kind").to_pylist())
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = flat.reshape(len(kinds), vectors.type.list_size)  # [n, dim]
    ids, hashes = table.column("id").to_pylist(), table.column("text_hash").to_pylist()
    for i in np.flatnonzero(kinds == kind):
        yield ids[i], (matrix[i].copy(), hashes[i])  # a copy: never pins the whole batch in memory


def keep_keyed(element, wanted) -> bool:
    """True when the key of a (key, value) element is in `wanted`."""
    return element[0] in wanted


class KeepIds(beam.PTransform):
    """(id, value) elements -> only those whose id is in `ids` (a PCollection of ids, duplicates allowed),
    so a corpus-sized input enters a shuffle with the rows a join needs, not the whole corpus."""

    def __init__(self, ids):
        super().__init__()
        self.ids = ids

    def expand(self, keyed):
        wanted = self.ids | "WantedIdSet" >> beam.combiners.ToSet()
        return keyed | "KeepWanted" >> beam.Filter(keep_keyed, wanted=beam.pvalue.AsSingleton(wanted))


def _payload(element, mining) -> list[QueryPayload]:
    """A QueryPayload with the judged positives' ids only: every shard completes it from the index's shard
    stores (transforms.mine.with_vectors: vectors, text hashes, scores), so no vector crosses a shuffle per
    pair (issue 15)."""
    query_id, groups = element
    query_vectors, positive_ids = list(groups["query"]), sorted(set(groups["positives"]))
    if not query_vectors or not positive_ids:
        return []
    p = len(positive_ids)
    pos = mm.Positives(ids=as_object_strings(positive_ids), text_hashes=as_object_strings([""] * p),
                       vectors=np.zeros((p, 0), np.float32), scores=np.zeros(p))
    return [QueryPayload(query_id, query_vectors[0][0], pos, depth=mm.initial_depth(mining, p))]


class BuildQueryPayloads(beam.PTransform):
    """{'embeddings': pyarrow tables, 'pairs': pair rows} -> QueryPayload per query with >= 1 judged positive
    (positive ids only; the shards complete them, dropping positives the index does not hold)."""

    def __init__(self, mining):
        super().__init__()
        self.mining = mining

    def expand(self, inputs):
        tables, pairs = inputs["embeddings"], inputs["pairs"]
        query_vectors = tables | "QueryVectors" >> beam.FlatMap(_vectors_of, "query")
        positives = pairs | "PositivesPerQuery" >> beam.Map(lambda r: (r["query_id"], r["positive_id"]))
        return (
            {"query": query_vectors, "positives": positives}
            | "JoinQueryVectors" >> beam.CoGroupByKey()
            | "MakePayloads" >> beam.FlatMap(_payload, self.mining)
        )


class JoinTexts(beam.PTransform):
    """MinedQuery -> row dicts (+ contextual pair elements on 'contextual_pairs'), texts joined by id."""

    def __init__(self, docs, queries, contextual: bool):
        super().__init__()
        self.docs, self.queries, self.contextual = docs, queries, contextual

    def expand(self, mined):
        requests = mined | "TextRequests" >> beam.FlatMap(text_requests)
        passages = (
            self.docs
            | "PassageById" >> beam.Map(lambda r: (r["doc_id"], r["passage"]))
            | "KeepRequestedPassages" >> KeepIds(requests | "RequestedDocIds" >> beam.Keys())
        )
        query_texts = (
            self.queries
            | "QueryText" >> beam.Map(lambda r: (r["query_id"], r["text"]))
            | "KeepMinedQueryTexts" >> KeepIds(mined | "MinedQueryIds" >> beam.Map(lambda m: m.query_id))
        )
        texts_per_query = (
            {"doc": passages, "request": requests}
            | "JoinDocTexts" >> beam.CoGroupByKey()
            | "TextsToQueries"
            >> beam.FlatMap(lambda e: [(q, (e[0], e[1]["doc"][0])) for q in e[1]["request"] if e[1]["doc"]])
        )
        return (
            {
                "mined": mined | "KeyMined" >> beam.Map(lambda m: (m.query_id, m)),
                "texts": texts_per_query,
                "query": query_texts,
            }
            | "JoinPerQuery" >> beam.CoGroupByKey()
            | "BuildRows" >> beam.ParDo(BuildRowsFn(self.contextual)).with_outputs(CONTEXTUAL_PAIRS, main="rows")
        )
