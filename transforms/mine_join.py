"""The joins around mining, as Beam transforms (CoGroupByKey: big inputs travel through shuffles, not side inputs).

    {"embeddings", "pairs"} | BuildQueryPayloads(mining) -> QueryPayload per query (vector, judged positive ids)
    MinedQuery | JoinTexts(docs, queries, contextual)    -> row batches (+ contextual pair elements)

Corpus-sized inputs (doc vectors, passages) are filtered to the ids the join needs before its shuffle
(KeepIds: the needed ids as one Bloom filter side input, 2 bytes per needed id; the joins are exact, so the few
others it lets through change nothing).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from transforms import mining_math as mm
from transforms.mine_rows import BuildRowsFn, text_requests
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


BLOOM_BITS_PER_ID = 16  # 2 bytes per needed id: 0.05% of other ids pass (11 hashes)
BLOOM_HASHES = 11


@dataclass(frozen=True)
class IdFilter:
    """A Bloom filter of ids: `id in f` is True for every added id and for ~0.05% of the others.

    A Python set of the needed ids costs ~100 bytes per id in every worker process that reads the side input
    (millions of ids with MS MARCO-sized query sets); this costs 2. bits: [bit_count // 8] bytes.
    """

    bit_count: int
    bits: bytes

    def __contains__(self, key: str) -> bool:
        bits = self.bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in bloom_positions(key, self.bit_count))


def bloom_bit_count(ids: int) -> int:
    """Bits of the filter for `ids` ids: a whole number of bytes, at least 64 bits."""
    return max(64, -(-ids * BLOOM_BITS_PER_ID // 8) * 8)


def bloom_positions(key: str, bit_count: int) -> list[int]:
    """The BLOOM_HASHES bit positions of an id (double hashing of a 128-bit blake2b; the same on every worker)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
    return [(h1 + i * h2) % bit_count for i in range(BLOOM_HASHES)]


class BuildIdFilterFn(beam.CombineFn):
    """(bit_count, positions of one id) -> IdFilter (None when no id came)."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, element):
        bit_count, positions = element
        if accumulator is None:
            accumulator = bytearray(bit_count // 8)
        for p in positions:
            accumulator[p >> 3] |= 1 << (p & 7)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is None:
                continue
            if merged is None:
                merged = bytearray(accumulator)
            else:
                merged = bytearray((np.frombuffer(merged, np.uint8) | np.frombuffer(accumulator, np.uint8)).tobytes())
        return merged

    def extract_output(self, accumulator):
        return None if accumulator is None else IdFilter(len(accumulator) * 8, bytes(accumulator))


def keep_keyed(element, wanted) -> bool:
    """True when the key of a (key, value) element is in `wanted` (an IdFilter or a set; None: nothing)."""
    return wanted is not None and element[0] in wanted


class KeepIds(beam.PTransform):
    """(id, value) elements -> those whose id is in `ids` (a PCollection of ids, duplicates allowed), plus ~0.05%
    of the others, so a corpus-sized input enters a shuffle with the rows a join needs, not the whole corpus.

    The ids reach every worker as one Bloom filter side input (IdFilter, 2 bytes per id, sized from their count),
    not as a set (~100 bytes per id per worker process): the few others it lets through find nothing to join.
    """

    def __init__(self, ids):
        super().__init__()
        self.ids = ids

    def expand(self, keyed):
        bit_count = beam.pvalue.AsSingleton(
            self.ids
            | "CountIds" >> beam.combiners.Count.Globally()
            | "FilterBits" >> beam.Map(bloom_bit_count)
        )
        wanted = (
            self.ids
            | "BitPositions" >> beam.Map(lambda key, n: (n, bloom_positions(key, n)), n=bit_count)
            | "WantedIdFilter" >> beam.CombineGlobally(BuildIdFilterFn())
        )
        return keyed | "KeepWanted" >> beam.Filter(keep_keyed, wanted=beam.pvalue.AsSingleton(wanted))


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
    return [QueryPayload(query_id, query_vectors[0][0], pos, depth=mm.initial_depth(mining, p))]


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


def _text_to_queries(element):
    """(doc_id, {'doc': [passage], 'request': [query_id, ...]}) -> (query_id, (doc_id, passage)) per request,
    yielded one by one (a popular negative is requested by many queries)."""
    doc_id, groups = element
    for passage in groups["doc"][:1]:
        for query_id in groups["request"]:
            yield query_id, (doc_id, passage)


class JoinTexts(beam.PTransform):
    """MinedQuery -> row batches, (tier, [row dicts]) per query and tier (+ contextual pair elements on
    'contextual_pairs'), texts joined by id."""

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
            | "TextsToQueries" >> beam.FlatMap(_text_to_queries)
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
