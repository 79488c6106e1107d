"""Stage `mine`: tiered negatives (hard / semi-hard / random, optionally contextual) from RUN_DIR's inputs,
embeddings and sharded index, written as negatives/tier=<tier>/part-*.parquet.

Recipe (CONTRACT.md "Mining semantics"):
  1. payloads: join each query's vector with its judged positives' vectors and text hashes (CoGroupByKey);
  2. search every shard with the per-shard mining fn, which applies the guards on the shard (transforms/mine.py);
  3. merge per query, pick tiers; queries the guards left short are searched again, deeper (depth x4 per round,
     up to mining.max_depth) - only those queries;
  4. join texts by id (CoGroupByKey: the corpus travels through a shuffle, not a side input), build rows;
  5. optional contextual negatives; write every tier; sum the per-query statistics into stats/mine.json.

Shard-count independence: a query's ranked list is the merge of the shards' top-`depth` lists cut at `depth`
(every entry there is in its shard's top-depth), ranks and guard counts are taken on that cut, so hard and
semi-hard rows do not depend on the number of shards. Random tier: each shard draws a uniform permutation
prefix of its documents with default_rng([seed, crc32(query_id), 0, shard]) and guards the draws; the merge
picks shards with probability ∝ their size using default_rng([seed, crc32(query_id), 3]) and keeps draws that
passed and are not chosen yet (rejection sampling: uniform over the surviving corpus). Hard / semi-hard
sampling (uniform, simans) uses default_rng([seed, crc32(query_id), 1|2]). Statistics are summed in the
pipeline (CombineGlobally), so they are exact on any runner; Beam counters "mine/*" mirror them.
"""

from __future__ import annotations

import logging
import zlib

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet, ReadFromParquetBatched

from pipelines.options import make_pipeline_options, run_pipeline
from pipelines.run_files import read_json, write_json
from schemas.build_config import BuildConfig
from schemas.layout import RunLayout
from schemas.negatives import TIERS
from transforms import mining_math as mm
from transforms.mine import (
    CONTEXTUAL_PAIRS,
    DEEPER,
    BuildRowsFn,
    MergeShardsFn,
    MineShardQueries,
    QueryPayload,
    text_requests,
)
from transforms.search import SearchShards, make_query_blocks
from transforms.write_negatives import WriteNegatives

logger = logging.getLogger(__name__)

STATS_FILE = "mine.json"
QUERY_GROUPS = 8  # first-round query groups cut into blocks in parallel (deeper rounds hold few queries)


def _parquet(folder: str) -> str:
    return FileSystems.join(folder, "*.parquet")


def _vectors_of(table, kind: str):
    """(id, (vector [dim] float32, text_hash)) for the rows of one kind of an embeddings table."""
    kinds = np.asarray(table.column("kind").to_pylist())
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = flat.reshape(len(kinds), vectors.type.list_size)  # [n, dim]
    ids, hashes = table.column("id").to_pylist(), table.column("text_hash").to_pylist()
    for i in np.flatnonzero(kinds == kind):
        yield ids[i], (matrix[i].copy(), hashes[i])  # a copy: never pins the whole batch in memory


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
        ids=np.array([p[0] for p in positives], dtype=str),
        text_hashes=np.array([p[2] for p in positives], dtype=str),
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
        doc_vectors = tables | "DocVectors" >> beam.FlatMap(_vectors_of, "doc")
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


def _blocks_of_group(element, block_size: int):
    group, payloads = element
    payloads = list(payloads)
    vectors = np.stack([p.vector for p in payloads]).astype(np.float32)  # [n, dim]
    return make_query_blocks([p.query_id for p in payloads], vectors, payloads, block_size, prefix=f"g{group:04d}-")


class PayloadBlocks(beam.PTransform):
    """QueryPayloads -> QueryBlocks: spread over num_groups groups by crc32(query_id), each cut into blocks
    (sorted by query id). Block composition never changes results: each query carries its own depth."""

    def __init__(self, block_size: int, num_groups: int):
        super().__init__()
        self.block_size, self.num_groups = block_size, num_groups

    def expand(self, payloads):
        groups = self.num_groups
        return (
            payloads
            | "KeyByGroup" >> beam.Map(lambda p: (zlib.crc32(p.query_id.encode("utf-8")) % groups, p))
            | "GroupQueries" >> beam.GroupByKey()
            | "CutIntoBlocks" >> beam.FlatMap(_blocks_of_group, self.block_size)
        )


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
                | f"Blocks[{r}]" >> PayloadBlocks(self.config.index.block_size, QUERY_GROUPS if r == 0 else 1)
                | f"SearchShards[{r}]" >> SearchShards(self.run, self.config.index, per_shard)
                | f"MergeAndPick[{r}]"
                >> beam.ParDo(MergeShardsFn(mining, self.config.seed, generator, rounds)).with_outputs(
                    DEEPER, main="mined"
                )
            )
            mined.append(merged.mined)
            pending = merged[DEEPER]
        return mined | "AllMined" >> beam.Flatten()


class JoinTexts(beam.PTransform):
    """MinedQuery -> row dicts (+ contextual pair elements on 'contextual_pairs'), texts joined by id."""

    def __init__(self, docs, queries, contextual: bool):
        super().__init__()
        self.docs, self.queries, self.contextual = docs, queries, contextual

    def expand(self, mined):
        passages = self.docs | "PassageById" >> beam.Map(lambda r: (r["doc_id"], r["passage"]))
        requests = mined | "TextRequests" >> beam.FlatMap(text_requests)
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
                "query": self.queries | "QueryText" >> beam.Map(lambda r: (r["query_id"], r["text"])),
            }
            | "JoinPerQuery" >> beam.CoGroupByKey()
            | "BuildRows" >> beam.ParDo(BuildRowsFn(self.contextual)).with_outputs(CONTEXTUAL_PAIRS, main="rows")
        )


def add_counts(total: dict, part: dict) -> dict:
    """Add a (nested) dict of counts into `total` in place and return it."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


class SumCountsFn(beam.CombineFn):
    """Sums nested dicts of counts: exact on any runner (unlike attempted metrics)."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        return add_counts(accumulator, element)

    def merge_accumulators(self, accumulators):
        total: dict = {}
        for accumulator in accumulators:
            add_counts(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


def summarise(counts: dict, config: BuildConfig) -> dict:
    """The selection statistics returned to the manifest: counts plus coverage fractions per tier."""
    stats = {key: counts.get(key, 0) for key in ("queries", "pairs", "candidates_seen")}
    stats["margin_reference"] = config.mining.margin_reference
    stats["dropped"] = {guard: counts.get("dropped", {}).get(guard, 0) for guard in mm.GUARDS}
    stats["dropped_pairs"] = {guard: counts.get("dropped_pairs", {}).get(guard, 0) for guard in mm.GUARDS}
    histogram = counts.get("deeper_search_histogram", {})
    stats["deeper_search_histogram"] = {k: histogram[k] for k in sorted(histogram, key=int)}
    stats["rows_per_tier"] = {tier: counts.get("rows_per_tier", {}).get(tier, 0) for tier in TIERS}
    wanted = {"hard": config.mining.hard, "semi_hard": config.mining.semi_hard, "random": config.mining.random}
    stats["negatives_per_tier"] = {t: counts.get("negatives", {}).get(t, 0) for t in wanted}
    stats["queries_full"], stats["pairs_full"], stats["pairs_full_fraction"] = {}, {}, {}
    for tier, k in wanted.items():
        if k == 0:
            continue
        stats["queries_full"][tier] = counts.get("queries_full", {}).get(tier, 0)
        stats["pairs_full"][tier] = counts.get("pairs_full", {}).get(tier, 0)
        stats["pairs_full_fraction"][tier] = round(stats["pairs_full"][tier] / max(stats["pairs"], 1), 6)
    if "contextual" in counts:
        stats["contextual"] = counts["contextual"]
    return stats


def _contextual(config: BuildConfig, pairs, docs, out: RunLayout):
    from apache_beam.io.parquetio import WriteToParquet

    from schemas.inputs import DEADLETTER_SCHEMA
    from transforms.contextual import GenerateContextualNegatives  # lazy: nlpaug / WordNet only when asked

    corpus = docs | "CorpusPassages" >> beam.Map(lambda r: r["passage"])
    rows, deadletter, counts = {"pairs": pairs, "corpus": corpus} | "Contextual" >> GenerateContextualNegatives(
        config.contextual, config.embed, config.seed, with_stats=True
    )
    _ = deadletter | "WriteContextualDeadletter" >> WriteToParquet(
        FileSystems.join(out.deadletter_dir, "contextual"), DEADLETTER_SCHEMA, file_name_suffix=".parquet"
    )
    return rows, counts  # counts: per-batch {"contextual": {...}} dicts, summed exactly with the rest


def build_mine_pipeline(pipeline, config: BuildConfig, run: RunLayout, out: RunLayout, stats_path: str) -> None:
    """Add the whole mine stage to `pipeline` (nothing runs until pipeline.run())."""
    # validate=False: these are earlier stages' outputs, absent while a --dry_run builds the job graph
    docs_source = ReadFromParquet(_parquet(run.inputs_table("docs")), columns=["doc_id", "passage"], validate=False)
    docs = pipeline | "ReadDocs" >> docs_source
    queries = pipeline | "ReadQueries" >> ReadFromParquet(_parquet(run.inputs_table("queries")), validate=False)
    pairs = pipeline | "ReadPairs" >> ReadFromParquet(_parquet(run.inputs_table("pairs")), validate=False)
    embeddings = pipeline | "ReadEmbeddings" >> ReadFromParquetBatched(_parquet(run.embeddings_dir), validate=False)

    payloads = {"embeddings": embeddings, "pairs": pairs} | "BuildQueryPayloads" >> BuildQueryPayloads(config.mining)
    mined = payloads | "MineQueries" >> MineQueries(run, config)
    joined = mined | "JoinTexts" >> JoinTexts(docs, queries, contextual=config.contextual.per_pair > 0)
    rows, stats_parts = joined.rows, [mined | "QueryStats" >> beam.Map(lambda m: m.stats)]
    if config.contextual.per_pair > 0:
        context_rows, context_counts = _contextual(config, joined[CONTEXTUAL_PAIRS], docs, out)
        rows = (rows, context_rows) | "AllRows" >> beam.Flatten()
        stats_parts.append(context_counts)
    _ = rows | "WriteNegatives" >> WriteNegatives(out)
    row_counts = (
        rows
        | "RowTier" >> beam.Map(lambda r: r["tier"])
        | "CountRowsPerTier" >> beam.combiners.Count.PerElement()
        | "RowStats" >> beam.Map(lambda kv: {"rows_per_tier": {kv[0]: kv[1]}})
    )
    _ = (
        (*stats_parts, row_counts)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(SumCountsFn())
        | "WriteStats" >> beam.Map(lambda counts: write_json(stats_path, counts))
    )


def run_mine(config: BuildConfig, run: RunLayout, out: RunLayout, beam_args: list[str], test_pipeline=None) -> dict:
    """Run the mine stage; outputs go under `out` (staging), inputs come from `run`. Returns selection stats."""
    options = make_pipeline_options(beam_args)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    stats_path = FileSystems.join(out.stats_dir, STATS_FILE)
    build_mine_pipeline(pipeline, config, run, out, stats_path)
    if not run_pipeline(pipeline, options):
        logger.info("mine: graph built (--dry_run=true); nothing was run")
        return {}
    stats = summarise(read_json(stats_path), config)
    logger.info(
        "mine: %d queries, %d pairs; rows per tier %s; full hard coverage %.4f of pairs",
        stats["queries"], stats["pairs"], stats["rows_per_tier"], stats["pairs_full_fraction"].get("hard", 1.0),
    )
    return stats
