"""Stage `mine`: tiered negatives (hard / semi-hard / random, optionally contextual) from RUN_DIR's inputs,
embeddings and sharded index, written as negatives/tier=<tier>/part-*.parquet.

Recipe (docs/CONTRACT.md "Mining semantics"):
  1. payloads: join each query's vector with its judged positive ids (CoGroupByKey; one element per query and
     batch of pairs); every shard completes them from the index's stores (vectors, text hashes);
  2. on every shard, the per-shard mining fn takes each pair group's window below its margin threshold and
     guards it there (transforms/mine_shard.py; the window grows x4 per round while the shard is loaded);
  3. merge each group's shard windows per query, pick tiers;
  4. join texts by id (CoGroupByKey on buckets of doc ids, one request per query and bucket: the corpus travels
     through a shuffle, not a side input), build rows (columns per query and tier: no Beam step runs per row);
  5. optional contextual negatives; write every tier; sum the per-query statistics into stats/mine.json.

Shard-count independence: a group's list is the merge of the shards' windows below its threshold, cut at the
earliest end of a window that is not complete (every entry before it is in its shard's window); its ranks add
the shards' counts above the threshold, so hard and semi-hard rows do not depend on the number of shards.
Random tier: each shard draws a uniform permutation
prefix of its documents with default_rng([seed, crc32(query_id), 0, shard]) and guards the draws; the merge
picks shards with probability ∝ their size using default_rng([seed, crc32(query_id), 3]) and keeps draws that
passed and are not chosen yet (rejection sampling: uniform over the surviving corpus). Hard / semi-hard
sampling (uniform, simans) uses default_rng([seed, crc32(query_id), 1|2]). Statistics are summed in the
pipeline (CombineGlobally), so they are exact on any runner; Beam counters "mine/*" mirror them.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet, ReadFromParquetBatched

from pipelines.options import make_pipeline_options, run_pipeline
from schemas.build_config import BuildConfig
from schemas.layout import RunLayout
from schemas.negatives import TIERS
from storage.files import read_json
from transforms import mining_math as mm
from transforms.counts import SumCountsFn, WriteJson
from transforms.mine_join import BuildQueryPayloads, JoinTexts
from transforms.mine_rounds import MineQueries
from transforms.mine_types import CONTEXTUAL_PAIRS
from transforms.write_negatives import WriteNegatives, as_batch

logger = logging.getLogger(__name__)

STATS_FILE = "mine.json"


def _parquet(folder: str) -> str:
    return FileSystems.join(folder, "*.parquet")


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
    from transforms.contextual.beam import GenerateContextualNegatives  # lazy: nlpaug / WordNet only when asked

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
    docs_columns = ["doc_id", "passage", "text_hash"]  # text_hash: the rows' negative_text_hash, hashed once at ingest
    docs_source = ReadFromParquet(_parquet(run.inputs_table("docs")), columns=docs_columns, validate=False)
    docs = pipeline | "ReadDocs" >> docs_source
    queries = pipeline | "ReadQueries" >> ReadFromParquet(_parquet(run.inputs_table("queries")), validate=False)
    pairs = pipeline | "ReadPairs" >> ReadFromParquetBatched(
        _parquet(run.inputs_table("pairs")), columns=["query_id", "positive_id"], validate=False)
    embeddings = pipeline | "ReadEmbeddings" >> ReadFromParquetBatched(_parquet(run.embeddings_dir), validate=False)

    payloads = {"embeddings": embeddings, "pairs": pairs} | "BuildQueryPayloads" >> BuildQueryPayloads(config.mining)
    mined = payloads | "MineQueries" >> MineQueries(run, config)
    joined = mined | "JoinTexts" >> JoinTexts(docs, queries, contextual=config.contextual.per_pair > 0)
    rows, stats_parts = joined.rows, [mined | "QueryStats" >> beam.Map(lambda m: m.stats)]  # (tier, [rows])
    if config.contextual.per_pair > 0:
        context_rows, context_counts = _contextual(config, joined[CONTEXTUAL_PAIRS], docs, out)
        rows = (rows, context_rows | "ContextualBatches" >> beam.Map(as_batch)) | "AllRows" >> beam.Flatten()
        stats_parts.append(context_counts)
    _ = rows | "WriteNegatives" >> WriteNegatives(out)
    row_counts = rows | "RowStats" >> beam.MapTuple(lambda tier, batch: {"rows_per_tier": {tier: len(batch)}})
    _ = (
        (*stats_parts, row_counts)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(SumCountsFn())
        | "WriteStats" >> WriteJson(stats_path)
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
