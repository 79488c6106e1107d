"""Doc blocks -> a sharded faiss index under RUN_DIR/index, as Beam transforms (the index stage's work).

    TrainSample (seeded, train_sample docs) -> TrainIndex (once) ------------------> side input
    SplitByShard -> GroupByShard -> FillShards -> CollectShardStats -> WriteIndexMeta (+ any empty shard)

FillShards streams a shard's grouped blocks (transforms.index.build_shard): a plain GroupByKey, not a
CoGroupByKey, whose Python implementation copies every group into a list before the DoFn sees it. Shards
that receive no doc are written empty by WriteIndexMeta (from the shard stats it collects), not by flattening
one None marker per shard into the grouped input: the local runners materialise a Flatten as a pass of its
whole input through a worker (bench/scale.py --trace-bundles, 400k docs: +1.08 GB in one worker).

The maths (sampling priority, shard split, fill, write) is in transforms/index.py.
"""

from __future__ import annotations

import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.build_config import IndexConfig
from schemas.layout import RunLayout
from transforms.index import (
    DocBlock,
    build_shard,
    concat_blocks,
    index_meta,
    keep_lowest_priority,
    loaded,
    make_index,
    sample_priority,
    split_by_shard,
    train_index,
    write_index_meta,
    write_shard,
)

logger = logging.getLogger(__name__)
_NAMESPACE = "negforge.index"


class TrainSampleFn(beam.CombineFn):
    """DocBlocks -> the n docs of lowest seeded priority (transforms.index.sample_priority), as one DocBlock."""

    def __init__(self, n: int, seed: int, dim: int) -> None:
        self._n, self._seed, self._dim = n, seed, dim

    def create_accumulator(self) -> tuple[list, int]:
        return [], 0  # (pieces of (priority, DocBlock), rows held)

    def _compact(self, pieces: list) -> tuple[list, int]:
        priority = np.concatenate([p for p, _ in pieces]) if pieces else np.zeros(0, np.uint64)
        kept = keep_lowest_priority(priority, concat_blocks([b for _, b in pieces], self._dim), self._n)
        return [kept], len(kept[1])

    def add_input(self, accumulator, block):
        pieces, held = accumulator
        block = loaded(block)  # a RefBlock's vectors (only non-Flat factories train)
        pieces.append(keep_lowest_priority(sample_priority(block.doc_ids, self._seed), block, self._n))
        held += len(pieces[-1][1])
        return self._compact(pieces) if held > 2 * self._n else (pieces, held)  # amortised: copy every n rows

    def merge_accumulators(self, accumulators):
        return self._compact([piece for pieces, _ in accumulators for piece in pieces])

    def extract_output(self, accumulator) -> DocBlock:
        return self._compact(accumulator[0])[0][0][1]


class FillShardFn(beam.DoFn):
    """(shard, iterable of DocBlock | None) + trained index -> shard files; yields {shard, ntotal}.

    The iterable is read twice, block by block (ids, then vectors), never copied as a whole."""

    def __init__(self, out: RunLayout, num_shards: int, dim: int) -> None:
        self._out, self._num_shards, self._dim = out, num_shards, dim
        self._docs = Metrics.counter(_NAMESPACE, "docs_indexed")
        self._shards = Metrics.counter(_NAMESPACE, "shards_written")

    def process(self, element, trained):
        shard, parts = element
        index, docs = build_shard(trained[0], parts, self._dim)
        stats = write_shard(self._out, shard, self._num_shards, index, docs)
        del index, docs
        self._docs.inc(stats["ntotal"])
        self._shards.inc()
        logger.info("shard %d/%d written: %d docs", shard, self._num_shards, stats["ntotal"])
        yield stats


class BuildShardedIndex(beam.PTransform):
    """PCollection[DocBlock] -> PCollection[index.json dict] (one element), writing the shards under `out`."""

    def __init__(self, index: IndexConfig, dim: int, seed: int, out: RunLayout) -> None:
        super().__init__()
        self._index, self._dim, self._seed, self._out = index, dim, seed, out

    def _trained(self, doc_blocks):
        factory, dim = self._index.index_factory, self._dim
        if make_index(factory, dim).is_trained:  # Flat, HNSW: nothing to train, share the empty index
            empty = train_index(factory, dim, concat_blocks([], dim))
            return doc_blocks.pipeline | "EmptyIndex" >> beam.Create([(empty, 0)])
        return (
            doc_blocks
            | "TrainSample" >> beam.CombineGlobally(TrainSampleFn(self._index.train_sample, self._seed, dim))
            | "TrainIndex" >> beam.Map(lambda sample: (train_index(factory, dim, sample), len(sample)))
        )

    def expand(self, doc_blocks):
        n, trained = self._index.num_shards, beam.pvalue.AsSingleton(self._trained(doc_blocks))
        shard_stats = (
            doc_blocks
            | "SplitByShard" >> beam.FlatMap(split_by_shard, n)
            | "GroupByShard" >> beam.GroupByKey()
            | "FillShards" >> beam.ParDo(FillShardFn(self._out, n, self._dim), trained=trained)
        )
        index, dim, seed, out = self._index, self._dim, self._seed, self._out
        return (
            shard_stats
            | "CollectShardStats" >> beam.combiners.ToList()
            | "WriteIndexMeta" >> beam.Map(_write_meta, index, dim, seed, out, trained=trained)
        )


def _write_meta(shard_stats: list[dict], index: IndexConfig, dim: int, seed: int, out: RunLayout, trained) -> dict:
    """Write the shards no doc went to (empty, so every shard's files exist), then index.json."""
    filled = {stats["shard"] for stats in shard_stats}
    for shard in sorted(set(range(index.num_shards)) - filled):
        empty, docs = build_shard(trained[0], [], dim)
        shard_stats = [*shard_stats, write_shard(out, shard, index.num_shards, empty, docs)]
    meta = index_meta(index, dim, shard_stats, trained[1], seed)
    write_index_meta(out, meta)
    return meta
