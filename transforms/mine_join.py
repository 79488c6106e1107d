"""The joins around mining, as Beam transforms (CoGroupByKey: big inputs travel through shuffles, not side inputs).

    {"embeddings", "pairs"} | BuildQueryPayloads(mining) -> QueryPayload per query (vector, judged positive ids)
    MinedQuery | JoinTexts(docs, queries, contextual)    -> row batches per query and tier (+ contextual pairs)

Corpus-sized inputs (doc vectors, passages) are filtered to the ids the join needs before its shuffle
(KeepIds: the needed ids as one Bloom filter side input, 2 bytes per needed id; the joins are exact, so the few
others it lets through change nothing).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from schemas.negatives import text_hash
from transforms import mining_math as mm
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


BLOOM_BITS_PER_ID = 16  # 2 bytes per needed id: 0.05% of other ids pass (11 hashes)
BLOOM_HASHES = 11
_MASK64 = (1 << 64) - 1
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.int64)  # set bits of each byte value


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

    def estimated_ids(self) -> float:
        """The number of distinct ids added, estimated from the set bits (Swamidass & Baldi 2007:
        n = -(m / k) ln(1 - X / m)); within a few percent while the filter is far from full, as it is here (it
        is sized for every request, duplicates included)."""
        set_bits = int(_POPCOUNT[np.frombuffer(self.bits, np.uint8)].sum())
        if set_bits >= self.bit_count:  # full: no estimate; at most one id per bit is what it can tell apart
            return float(self.bit_count)
        return -self.bit_count / BLOOM_HASHES * math.log1p(-set_bits / self.bit_count)


def bloom_bit_count(ids: int) -> int:
    """Bits of the filter for `ids` ids: a whole number of bytes, at least 64 bits."""
    return max(64, -(-ids * BLOOM_BITS_PER_ID // 8) * 8)


def bloom_positions(key: str, bit_count: int) -> list[int]:
    """The BLOOM_HASHES bit positions of an id: double hashing of a 128-bit blake2b, in 64-bit wrapping
    arithmetic so that bloom_positions_of (many ids at once, numpy) gives the same positions on every worker."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
    return [((h1 + i * h2) & _MASK64) % bit_count for i in range(BLOOM_HASHES)]


def bloom_positions_of(keys, bit_count: int) -> np.ndarray:
    """[len(keys) * BLOOM_HASHES] uint64: bloom_positions of every key, one blake2b call per key and the rest in
    numpy (a query requests hundreds of texts: issue 15)."""
    digests = b"".join(hashlib.blake2b(k.encode("utf-8"), digest_size=16).digest() for k in keys)
    halves = np.frombuffer(digests, "<u8").reshape(-1, 2)  # [n, 2]
    h1, h2 = halves[:, :1], halves[:, 1:] | np.uint64(1)
    steps = np.arange(BLOOM_HASHES, dtype=np.uint64)  # [k]
    return ((h1 + steps * h2) % np.uint64(bit_count)).ravel()  # uint64 arithmetic wraps like & _MASK64


class BuildIdFilterFn(beam.CombineFn):
    """(bit_count, bit positions of one or more ids) -> IdFilter (None when no id came)."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, element):
        bit_count, positions = element
        if accumulator is None:
            accumulator = np.zeros(bit_count // 8, np.uint8)
        positions = np.asarray(positions, np.uint64)  # [ids * BLOOM_HASHES]
        masks = np.left_shift(1, positions & np.uint64(7)).astype(np.uint8)
        np.bitwise_or.at(accumulator, positions >> np.uint64(3), masks)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is None:
                continue
            merged = accumulator.copy() if merged is None else merged | accumulator
        return merged

    def extract_output(self, accumulator):
        return None if accumulator is None else IdFilter(len(accumulator) * 8, accumulator.tobytes())


def keep_keyed(element, wanted) -> bool:
    """True when the key of a (key, value) element is in `wanted` (an IdFilter or a set; None: nothing)."""
    return wanted is not None and element[0] in wanted


class FreshIdsFn(beam.DoFn):
    """A batch of ids -> the list of those not seen earlier in the bundle (nothing when none is new): an id added to
    a Bloom filter twice changes nothing but its size, and a popular document is requested by many queries (on
    dense qrels ~430k requests name 5,000 documents). The ids seen are forgotten every SEEN_IDS (bounded memory)."""

    SEEN_IDS = 100_000

    def start_bundle(self):
        self._seen: set[str] = set()

    def process(self, keys):
        if len(self._seen) > self.SEEN_IDS:
            self._seen.clear()
        fresh = [key for key in dict.fromkeys(keys) if key not in self._seen]
        self._seen.update(fresh)
        if fresh:
            yield fresh


class BuildIdFilter(beam.PTransform):
    """ids (batched=True: lists of ids, e.g. one per query) -> one IdFilter of them (None when none came), sized
    from their count after the duplicates each bundle drops (FreshIdsFn)."""

    def __init__(self, batched: bool = False):
        super().__init__()
        self.batched = batched

    def expand(self, ids):
        batches = ids if self.batched else ids | "AsBatches" >> beam.Map(lambda key: [key])
        fresh = batches | "FreshIds" >> beam.ParDo(FreshIdsFn())
        bit_count = beam.pvalue.AsSingleton(
            fresh
            | "CountIds" >> beam.Map(len)
            | "SumIds" >> beam.CombineGlobally(sum)
            | "FilterBits" >> beam.Map(bloom_bit_count)
        )
        return (
            fresh
            | "BitPositions" >> beam.Map(lambda keys, n: (n, bloom_positions_of(keys, n)), n=bit_count)
            | "WantedIdFilter" >> beam.CombineGlobally(BuildIdFilterFn())
        )


class KeepIds(beam.PTransform):
    """(id, value) elements -> those whose id is in `ids` (a PCollection of ids, duplicates allowed; batched=True:
    of lists of ids), plus ~0.05% of the others, so a corpus-sized input enters a shuffle with the rows a join
    needs, not the whole corpus.

    The ids reach every worker as one Bloom filter side input (IdFilter, 2 bytes per id, sized from their count),
    not as a set (~100 bytes per id per worker process): the few others it lets through find nothing to join.
    """

    def __init__(self, ids, batched: bool = False):
        super().__init__()
        self.ids, self.batched = ids, batched

    def expand(self, keyed):
        wanted = self.ids | "IdFilter" >> BuildIdFilter(self.batched)
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
