"""QueryPayloads -> MinedQuery per query: the search and merge of the mine stage, as one Beam transform.

One pass over the shards: each shard grows every pair group's window below its margin threshold (x4 per round)
while it is loaded, until the group has enough there (transforms/mine.MineShardQueries), so no query comes back
for another fan-out that would reload every shard (issue 15).
"""

from __future__ import annotations

import apache_beam as beam

from schemas.build_config import BuildConfig
from schemas.layout import RunLayout
from transforms.mine import MergeShardsFn, MineShardQueries, without_vectors
from transforms.search import SearchShards, ToQueryBlocks

QUERY_GROUPS = 8  # query groups cut into blocks in parallel


class MineQueries(beam.PTransform):
    """QueryPayloads -> MinedQuery per query: search and guard on the shards, merge, pick per pair group."""

    def __init__(self, run: RunLayout, config: BuildConfig):
        super().__init__()
        self.run = run
        self.config = config

    def expand(self, payloads):
        mining, seed = self.config.mining, self.config.seed
        generator = f"faiss:{self.config.index.index_factory}"
        keep_vectors = self.config.contextual.per_pair > 0  # only contextual negatives read them downstream
        return (
            payloads
            # payloads fan out to every shard without vectors: shards read the positives' from the index stores
            | "QueryRows" >> beam.Map(lambda p: (p.query_id, p.vector, without_vectors(p)))
            | "Blocks" >> ToQueryBlocks(self.config.index.block_size, QUERY_GROUPS)
            | "SearchShards" >> SearchShards(self.run, self.config.index, MineShardQueries(
                mining, seed, keep_vectors, run=self.run, num_shards=self.config.index.num_shards))
            | "MergeAndPick" >> beam.ParDo(MergeShardsFn(mining, seed, generator, keep_vectors=keep_vectors))
        )
