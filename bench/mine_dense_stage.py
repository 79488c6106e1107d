"""The mine stage alone on dense qrels at bench/mine_dense.py's shapes, without a model: peak RSS and wall.

    python bench/mine_dense_stage.py            # 5,000 docs, 2,500 queries x 40 graded positives = 100,000 pairs
    python bench/mine_dense_stage.py --quick    # 1,000 docs, 250 queries x 40 = 10,000 pairs

Data: tests/dense_qrels.py's synthetic BEIR folder; vectors are bag-of-words random projections (384-d, seeded:
topical structure like a real model's, no embed stage), written as a RUN_DIR with an exact 4-shard index by
tests/planted_run.py. Then pipelines.stage_mine.run_mine runs with the defaults (3 hard, 2 semi-hard, 1 random,
--margin-reference pair, relative margin 0.05) in this process, on the DirectRunner, while a thread samples its
RSS every 0.2 s. Reports the mine stage's peak RSS (imports included), wall, coverage per tier and the rows per
tier. Issue 15's memory goal is about the whole build; this isolates what the mine stage holds. Writes
bench/results/mine_dense_stage[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from common import write_results  # noqa: E402
from mine_dense import FULL, MARGIN, QUICK, SPLIT, K  # noqa: E402

SHARDS = 4
DIM = 384


def prepare(workdir: str, shape) -> int:
    """Write the BEIR folder and the RUN_DIR (inputs, embeddings, index); return the number of pairs."""
    import numpy as np
    from dense_qrels import write_dense_beir
    from planted_run import write_run

    from transforms.beir import load_beir

    write_dense_beir(os.path.join(workdir, "beir"), shape, seed=0, split=SPLIT)
    data = load_beir(os.path.join(workdir, "beir"), SPLIT)
    rng, words = np.random.default_rng(0), {}

    def embed(text: str) -> np.ndarray:
        vector = np.zeros(DIM)
        for word in text.lower().split():
            if word not in words:
                words[word] = rng.normal(size=DIM)
            vector += words[word]
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    doc_vecs = {d: embed(t) for d, t in sorted(data.corpus.items())}
    query_vecs = {q: embed(t) for q, t in sorted(data.queries.items())}
    pairs = [(q, d) for q in sorted(data.qrels) for d in sorted(data.qrels[q]) if data.qrels[q][d] > 0]
    write_run(os.path.join(workdir, "run"), data.corpus, data.queries, pairs, doc_vecs, query_vecs, SHARDS)
    return len(pairs)


def mine(workdir: str) -> dict:
    import psutil

    from pipelines.stage_mine import run_mine
    from schemas.build_config import BuildConfig, IndexConfig, IngestConfig, MiningConfig
    from schemas.layout import RunLayout

    config = BuildConfig(output=os.path.join(workdir, "run"), ingest=IngestConfig(beir_dir="unused", split=SPLIT),
                         index=IndexConfig(num_shards=SHARDS), mining=MiningConfig(hard=K, relative_margin=MARGIN))
    samples, stop = [], threading.Event()

    def sample() -> None:
        process = psutil.Process()
        while not stop.is_set():
            samples.append(process.memory_info().rss)
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    run = RunLayout(config.output)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    stats = run_mine(config, run, RunLayout(run.staging_dir("mine")), [])
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    return {"mine_wall_s": round(wall, 2), "peak_rss_mib": round(max(samples) / 2**20, 1),
            "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "pairs_full_fraction": stats["pairs_full_fraction"], "rows_per_tier": stats["rows_per_tier"],
            "dropped": stats["dropped"], "deeper_search_histogram": stats["deeper_search_histogram"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 docs, 250 queries x 40 positives")
    args = parser.parse_args()
    shape = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="mine_dense_stage-") as workdir:
        pairs = prepare(workdir, shape)
        figures = mine(workdir)
    inputs = {"shape": shape.__dict__, "docs": shape.docs, "queries": shape.queries, "pairs": pairs,
              "vectors": f"bag-of-words random projections, {DIM}-d", "shards": SHARDS, "k": K,
              "relative_margin": MARGIN, "negforge_tiers": "3 hard, 2 semi-hard, 1 random (defaults)"}
    path = write_results("mine_dense_stage_quick" if args.quick else "mine_dense_stage",
                         {"inputs": inputs, "figures": figures})
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
