"""QueryPayloads -> MinedQuery per query: the search rounds of the mine stage, as one Beam transform.

Round 0 searches every query at its initial depth; queries the guards left short come back on the DEEPER
output and are searched again, deeper, up to mining.max_depth (transforms/mining_math.max_deeper_rounds).
"""

from __future__ import annotations

import apache_beam as beam

from schemas.build_config import BuildConfig
from schemas.layout import RunLayout
from transforms import mining_math as mm
from transforms.mine import DEEPER, MergeShardsFn, MineShardQueries
from transforms.search import SearchShards, ToQueryBlocks

QUERY_GROUPS = 8  # first-round query groups cut into blocks in parallel (deeper rounds hold few queries)


class MineQueries(beam.PTransform):
    """QueryPayloads -> MinedQuery per query: search, guard on the shards, merge, deeper rounds for short ones."""

    def __init__(self, run: RunLayout, config: BuildConfig):
        super().__init__()
        self.run = run
        self.config = config

    def expand(self, payloads):
        mining, rounds = self.config.mining, mm.max_deeper_rounds(self.config.mining)
        per_shard = MineShardQueries(mining, self.config.seed)
        generator = f"faiss:{self.config.index.index_factory}"
        mined, pending = [], payloads
        for r in range(rounds + 1):
            merged = (
                pending
                | f"QueryRows[{r}]" >> beam.Map(lambda p: (p.query_id, p.vector, p))
                | f"Blocks[{r}]" >> ToQueryBlocks(self.config.index.block_size, QUERY_GROUPS if r == 0 else 1)
                | f"SearchShards[{r}]" >> SearchShards(self.run, self.config.index, per_shard)
                | f"MergeAndPick[{r}]"
                >> beam.ParDo(MergeShardsFn(mining, self.config.seed, generator, rounds)).with_outputs(
                    DEEPER, main="mined"
                )
            )
            mined.append(merged.mined)
            pending = merged[DEEPER]
        return mined | "AllMined" >> beam.Flatten()
