"""The joins around mining, as Beam transforms (CoGroupByKey: big inputs travel through shuffles, not side inputs).

    {"embeddings", "pairs"} | BuildQueryPayloads(mining) -> QueryPayload per query (vector, judged positive ids)
    MinedQuery | JoinTexts(docs, queries, contextual)    -> row batches per query and tier (+ contextual pairs)

Corpus-sized inputs (passages, query texts) are filtered to the ids the join needs before its shuffle
(transforms/id_filter.py: the needed ids as one Bloom filter side input, 2 bytes per needed id).
"""

from __future__ import annotations

import math
import zlib

import apache_beam as beam
import numpy as np

from schemas.negatives import text_hash
from transforms import mining_math as mm
from transforms import mining_windows as mw
from transforms.id_filter import BuildIdFilter, IdFilter, KeepIds, keep_keyed
from transforms.mine_rows import BuildRowsFn, QueryTexts, text_requests
from transforms.mine_types import CONTEXTUAL_PAIRS, QueryPayload
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


def _payload(element, mining) -> list[QueryPayload]:
    """A QueryPayload with the judged positives' ids only: every shard completes it from the index's shard
    stores (transforms.mine_shard.with_vectors: vectors, text hashes, scores), so no vector crosses a shuffle per
    pair (issue 15)."""
    query_id, groups = element
    query_vectors = list(groups["query"])
    positive_ids = sorted({doc_id for batch in groups["positives"] for doc_id in batch})
    if not query_vectors or not positive_ids:
        return []
    p = len(positive_ids)
    pos = mm.Positives(ids=as_object_strings(positive_ids), text_hashes=as_object_strings([""] * p),
                       vectors=np.zeros((p, 0), np.float32), scores=np.zeros(p))
    return [QueryPayload(query_id, query_vectors[0][0], pos, depth=mw.initial_depth(mining, p))]


def _positives_of_batch(table) -> list[tuple[str, list[str]]]:
    """(query_id, [positive ids]) per query of a batch of pair rows: one shuffled element per query and batch,
    not per pair (issue 15: 100k pairs were 100k elements through the join)."""
    by_query: dict[str, list[str]] = {}
    for query_id, positive_id in zip(table.column("query_id").to_pylist(), table.column("positive_id").to_pylist()):
        by_query.setdefault(query_id, []).append(positive_id)
    return list(by_query.items())


class BuildQueryPayloads(beam.PTransform):
    """{'embeddings': pyarrow tables, 'pairs': pyarrow tables of pair rows (query_id, positive_id)} -> QueryPayload
    per query with >= 1 judged positive (positive ids only; the shards complete them, dropping positives the
    index does not hold)."""

    def __init__(self, mining):
        super().__init__()
        self.mining = mining

    def expand(self, inputs):
        tables, pairs = inputs["embeddings"], inputs["pairs"]
        query_vectors = tables | "QueryVectors" >> beam.FlatMap(_vectors_of, "query")
        positives = pairs | "PositivesPerQuery" >> beam.FlatMap(_positives_of_batch)
        return (
            {"query": query_vectors, "positives": positives}
            | "JoinQueryVectors" >> beam.CoGroupByKey()
            | "MakePayloads" >> beam.FlatMap(_payload, self.mining)
        )


DOCS_PER_BUCKET = 20_000  # requested documents per bucket of the text join: bounds the passages one bucket holds
REQUESTS_PER_BUCKET = 2_000_000  # (query, document) requests per bucket: a bucket's group is served by one worker


def bucket_count(wanted: IdFilter | None, requests: int) -> int:
    """Buckets of the text join: ~DOCS_PER_BUCKET distinct requested ids each (500 buckets for a 10M-document
    corpus whose every document is requested), and at most ~REQUESTS_PER_BUCKET of the `requests` (query,
    document) requests each, so that a small corpus under a huge query set still spreads over workers."""
    if wanted is None:
        return 1
    return max(1, math.ceil(wanted.estimated_ids() / DOCS_PER_BUCKET), math.ceil(requests / REQUESTS_PER_BUCKET))


def bucket_of(doc_id: str, buckets: int) -> int:
    return zlib.crc32(doc_id.encode("utf-8")) % buckets


def _requests_per_bucket(request: tuple[str, list[str]], buckets: int):
    """(query_id, doc ids) -> (bucket, (query_id, its doc ids in the bucket)) per bucket the query needs."""
    query_id, doc_ids = request
    if buckets == 1:
        yield 0, request
        return
    per_bucket: dict[int, list[str]] = {}
    for doc_id in doc_ids:
        per_bucket.setdefault(bucket_of(doc_id, buckets), []).append(doc_id)
    for bucket, ids in per_bucket.items():
        yield bucket, (query_id, ids)


def _passage_in_bucket(row: dict, buckets: int):
    """A docs row -> (bucket, (doc_id, passage, text_hash)); inputs/docs holds text_hash(passage) (ingest), so no
    text is hashed here."""
    passage = row["passage"]
    hashed = row.get("text_hash") or text_hash(passage)
    return bucket_of(row["doc_id"], buckets), (row["doc_id"], passage, hashed)


def _serve_texts(element):
    """(bucket, {'doc': [(doc_id, passage, text_hash)], 'request': [(query_id, doc ids)]}) -> (query_id,
    QueryTexts) per request: the bucket's passages are held once (~DOCS_PER_BUCKET), the requests stream past."""
    _, groups = element
    docs: dict[str, tuple[str, str]] = {}
    for doc_id, passage, hashed in groups["doc"]:
        docs.setdefault(doc_id, (passage, hashed))  # ids are unique in inputs/docs; keep the first regardless
    for query_id, doc_ids in groups["request"]:
        found = [doc_id for doc_id in doc_ids if doc_id in docs]
        texts = [docs[doc_id] for doc_id in found]
        yield query_id, QueryTexts(found, [t[0] for t in texts], [t[1] for t in texts])


class JoinTexts(beam.PTransform):
    """MinedQuery -> row batches, (tier, schemas.negatives.RowColumns) per query and tier (+ contextual pair
    elements on 'contextual_pairs'), texts joined by id.

    docs: rows with doc_id, passage, text_hash (inputs/docs). The join is a shuffle on buckets of doc ids, not one
    element per (query, document): each query sends one request per bucket it needs (its doc ids as a list), a
    bucket meets its passages (the requested ones, via KeepIds) in one group, and one element per (query,
    bucket) goes on to the query's rows (issue 15: ~430k request elements and ~430k text elements became ~2.5k
    each on dense qrels). The bucket count grows with the distinct requested ids (and the requests), so a bucket
    holds ~DOCS_PER_BUCKET passages whatever the corpus size.
    """

    def __init__(self, docs, queries, contextual: bool):
        super().__init__()
        self.docs, self.queries, self.contextual = docs, queries, contextual

    def expand(self, mined):
        requests = mined | "TextRequests" >> beam.Map(text_requests)  # (query_id, [doc_id]) per query
        requested = requests | "RequestedIds" >> beam.Values()
        wanted = requested | "RequestedIdFilter" >> BuildIdFilter(batched=True)
        request_count = requested | "CountRequests" >> beam.Map(len) | "SumRequests" >> beam.CombineGlobally(sum)
        buckets = beam.pvalue.AsSingleton(
            wanted | "BucketCount" >> beam.Map(bucket_count, beam.pvalue.AsSingleton(request_count))
        )
        passages = (
            self.docs
            | "PassageById" >> beam.Map(lambda r: (r["doc_id"], r))
            | "KeepRequestedPassages" >> beam.Filter(keep_keyed, wanted=beam.pvalue.AsSingleton(wanted))
            | "PassageBucket" >> beam.Map(lambda kv, n: _passage_in_bucket(kv[1], n), n=buckets)
        )
        query_texts = (
            self.queries
            | "QueryText" >> beam.Map(lambda r: (r["query_id"], r["text"]))
            | "KeepMinedQueryTexts" >> KeepIds(mined | "MinedQueryIds" >> beam.Map(lambda m: m.query_id))
        )
        texts_per_query = (
            {"doc": passages, "request": requests | "RequestBuckets" >> beam.FlatMap(_requests_per_bucket, buckets)}
            | "JoinDocTexts" >> beam.CoGroupByKey()
            | "TextsToQueries" >> beam.FlatMap(_serve_texts)
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
