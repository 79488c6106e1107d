"""QueryPayloads -> MinedQuery per query: the search and merge of the mine stage, as one Beam transform.

Queries travel in groups of about mining.query_group_size (`--query-group-size`): each (shard, query group) is
one search task, so a shard is searched by as many workers as there are groups, and no task holds more than one
group's queries whatever the query count. One pass over the shards: each shard grows every pair group's window
below its margin threshold (x4 per round) while it is loaded, until the group has enough there
(transforms/mine.MineShardQueries), so no query comes back for another fan-out that would reload every shard
(issue 15).
"""

from __future__ import annotations

import apache_beam as beam

from schemas.build_config import BuildConfig
from schemas.layout import RunLayout
from transforms.mine_merge import MergeShardsFn
from transforms.mine_shard import MineShardQueries
from transforms.mine_types import without_vectors
from transforms.search import SearchShards, ToQueryBlocks


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
            | "Blocks" >> ToQueryBlocks(self.config.index.block_size, group_size=mining.query_group_size)
            | "SearchShards" >> SearchShards(self.run, self.config.index, MineShardQueries(
                mining, seed, keep_vectors, run=self.run, num_shards=self.config.index.num_shards))
            | "MergeAndPick" >> beam.ParDo(MergeShardsFn(mining, seed, generator, keep_vectors=keep_vectors))
        )
