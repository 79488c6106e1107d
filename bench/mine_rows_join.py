"""The mine stage's text join, row building and Parquet writing alone (JoinTexts + WriteNegatives), on the
MinedQuery elements of an existing RUN_DIR: the part of the stage outside the mining maths (issue 15).

    python bench/mine_rows_join.py dump RUN_DIR MINED.pkl     # mine once (the stage up to MineQueries), pickle
    python bench/mine_rows_join.py time RUN_DIR MINED.pkl OUT  # time JoinTexts + WriteNegatives on them

`dump` pickles every MinedQuery (transforms/mine_types.py: the same class on both sides of a change), so `time`
can run the code version on PYTHONPATH against the same input: run it for two versions back to back and compare
the walls (the ~2 s of building and starting the pipeline included). Mining settings are /work/prof/remine.py's:
3 hard, relative margin 0.05, margin reference pair, the RUN_DIR's shard count.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import time

import apache_beam as beam
from apache_beam.io.parquetio import ReadFromParquet, ReadFromParquetBatched

from pipelines.stage_mine import _parquet
from schemas.build_config import BuildConfig, IndexConfig, IngestConfig, MiningConfig
from schemas.layout import RunLayout


def dump(run_dir: str, path: str) -> None:
    from transforms.mine_join import BuildQueryPayloads
    from transforms.mine_rounds import MineQueries

    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    config = BuildConfig(output=run_dir, ingest=IngestConfig(beir_dir="unused", split="train"),
                         index=IndexConfig(num_shards=manifest["config"]["index"]["num_shards"]),
                         mining=MiningConfig(hard=3, relative_margin=0.05, margin_reference="pair"))
    run = RunLayout(run_dir)

    def write(items):
        with open(path, "wb") as f:
            pickle.dump(list(items), f, protocol=5)

    with beam.Pipeline() as p:
        pairs = p | "ReadPairs" >> ReadFromParquet(_parquet(run.inputs_table("pairs")))
        tables = p | "ReadEmbeddings" >> ReadFromParquetBatched(_parquet(run.embeddings_dir))
        mined = {"embeddings": tables, "pairs": pairs} | BuildQueryPayloads(config.mining) | MineQueries(run, config)
        _ = mined | beam.combiners.ToList() | beam.Map(write)


def _load(path: str):
    with open(path, "rb") as f:
        yield from pickle.load(f)


def time_join(run_dir: str, path: str, out: str) -> float:
    from transforms.mine_join import JoinTexts
    from transforms.write_negatives import WriteNegatives

    run = RunLayout(run_dir)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with beam.Pipeline() as p:
        docs = p | "ReadDocs" >> ReadFromParquet(_parquet(run.inputs_table("docs")))
        queries = p | "ReadQueries" >> ReadFromParquet(_parquet(run.inputs_table("queries")))
        mined = p | beam.Create([path]) | beam.FlatMap(_load)
        joined = mined | JoinTexts(docs, queries, contextual=False)
        _ = joined.rows | WriteNegatives(RunLayout(out))
        _ = joined.rows | beam.MapTuple(lambda tier, batch: len(batch)) | beam.CombineGlobally(sum) | beam.Map(print)
    return time.perf_counter() - start


if __name__ == "__main__":
    if sys.argv[1:2] == ["dump"]:
        dump(*sys.argv[2:4])
    elif sys.argv[1:2] == ["time"]:
        wall = time_join(*sys.argv[2:5])
        print(f"join+rows+write wall {wall:.2f} s  load {os.getloadavg()[0]:.2f}")
    else:
        sys.exit(__doc__)
