"""The joins around mining, as Beam transforms (CoGroupByKey: big inputs travel through shuffles, not side inputs).

    {"embeddings", "pairs"} | BuildQueryPayloads(mining) -> QueryPayload per query (vector, judged positives)
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


def _positives_for_queries(element):
    doc_id, groups = element
    found = list(groups["vector"])
    if not found:
        return
    vector, text_hash = found[0]
    for query_id in groups["queries"]:
        yield query_id, (doc_id, vector, text_hash)


def _payload(element, mining) -> list[QueryPayload]:
    query_id, groups = element
    query_vectors, positives = list(groups["query"]), sorted(groups["positives"], key=lambda p: p[0])
    if not query_vectors or not positives:
        return []
    vector = query_vectors[0][0]  # [dim] float32
    pos_vectors = np.stack([p[1] for p in positives]).astype(np.float32)  # [p, dim]
    pos = mm.Positives(
        ids=as_object_strings([p[0] for p in positives]),
        text_hashes=as_object_strings([p[2] for p in positives]),
        vectors=pos_vectors,
        scores=mm.cosine_rows(pos_vectors, vector),
    )
    return [QueryPayload(query_id, vector, pos, depth=mm.initial_depth(mining, len(positives)))]


class BuildQueryPayloads(beam.PTransform):
    """{'embeddings': pyarrow tables, 'pairs': pair rows} -> QueryPayload per query with >= 1 embedded positive."""

    def __init__(self, mining):
        super().__init__()
        self.mining = mining

    def expand(self, inputs):
        tables, pairs = inputs["embeddings"], inputs["pairs"]
        query_vectors = tables | "QueryVectors" >> beam.FlatMap(_vectors_of, "query")
        positive_ids = pairs | "PositiveIds" >> beam.Map(lambda r: r["positive_id"])
        doc_vectors = (
            tables
            | "DocVectors" >> beam.FlatMap(_vectors_of, "doc")
            | "KeepPositiveVectors" >> KeepIds(positive_ids)
        )
        positive_to_query = pairs | "PositiveToQuery" >> beam.Map(lambda r: (r["positive_id"], r["query_id"]))
        query_to_positive = (
            {"vector": doc_vectors, "queries": positive_to_query}
            | "JoinPositiveVectors" >> beam.CoGroupByKey()
            | "PositivesPerQuery" >> beam.FlatMap(_positives_for_queries)
        )
        return (
            {"query": query_vectors, "positives": query_to_positive}
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
