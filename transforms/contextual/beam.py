"""Contextual negatives (tier=contextual) in Beam: plausible, meaning-changing perturbations of each positive.

    rows, deadletter = {"pairs": pairs, "corpus": passages} | GenerateContextualNegatives(contextual, embed, seed)

pairs: one dict per (query, positive): query_id, positive_id, anchor, positive, query_vector and
positive_vector (float32 [dim], L2-normalised), score_positive, judged_positive_ids, judged_positive_hashes.
corpus: passage strings, from which the entity vocabulary (side input) is counted.
rows: NEGATIVES_SCHEMA dicts, tier "contextual"; deadletter: DEADLETTER_SCHEMA dicts (reason
"perturbation_failed"). The work per batch of pairs is transforms.contextual.generator.ContextualGenerator; the
model, WordNet tagger and nlpaug augmenters are built in setup(), once per worker process (beam Shared:
threads share them; the augmenters take a lock per call, the model only reads).

Counts: Beam counters in namespace "negforge.contextual" (pairs, candidates_<kind>, accepted_<kind>,
selected_<kind>, rejected_<reason>, rejected_by_kind_<kind>_<reason>, deadletter); `contextual_stats(result)`
reads them back as a dict, and `with_stats=True` adds a third output of per-batch count dicts
({"contextual": GuardCounts.as_dict()}) to sum exactly on any runner.
"""

from __future__ import annotations

import heapq
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.utils import shared

from schemas.build_config import ContextualConfig, EmbedConfig
from transforms.contextual.entity import entities_in, entity_type
from transforms.contextual.guard import GuardCounts
from transforms.contextual.wordnet_install import disable_nltk_download, prepare_wordnet

logger = logging.getLogger(__name__)

NAMESPACE = "negforge.contextual"
DEADLETTER = "deadletter"
STATS = "stats"
PAIRS_PER_BATCH = 16  # pairs whose candidates are re-embedded in one encode() call
ENTITIES_PER_SHAPE = 200
ENTITY_SHAPES = 300
ENTITY_MIN_DOCS = 2  # an entity must occur in this many passages (drops typos and one-off codes)


class TopEntitiesPerTypeFn(beam.CombineFn):
    """(entity, document frequency) -> {entity type: entities by (-df, entity), at most per_shape each}.

    Exact top-k per type under a total order, so the result does not depend on how inputs were bundled.
    """

    def __init__(self, per_shape: int = ENTITIES_PER_SHAPE, max_shapes: int = ENTITY_SHAPES):
        self.per_shape, self.max_shapes = per_shape, max_shapes

    def create_accumulator(self) -> dict:
        return {}

    def _trim(self, items: list) -> list:
        return heapq.nsmallest(self.per_shape, items)

    def add_input(self, accumulator: dict, element) -> dict:
        entity, df = element
        items = accumulator.setdefault(entity_type(entity), [])
        items.append((-int(df), entity))
        if len(items) > 2 * self.per_shape:
            accumulator[entity_type(entity)] = self._trim(items)
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for accumulator in accumulators:
            for shape, items in accumulator.items():
                merged[shape] = self._trim(merged.get(shape, []) + items)
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        top = {shape: self._trim(items) for shape, items in accumulator.items()}
        kept = sorted(top, key=lambda shape: (-len(top[shape]), shape))[: self.max_shapes]
        return {shape: tuple(entity for _, entity in top[shape]) for shape in sorted(kept)}


class BuildEntityVocabulary(beam.PTransform):
    """Passages -> one dict {entity type: entities} (document frequency >= min_docs, capped per shape)."""

    def __init__(self, min_docs: int = ENTITY_MIN_DOCS, per_shape: int = ENTITIES_PER_SHAPE):
        super().__init__()
        self.min_docs, self.per_shape = min_docs, per_shape

    def expand(self, passages):
        return (
            passages
            | "EntitiesPerPassage" >> beam.FlatMap(entities_in)
            | "DocumentFrequency" >> beam.combiners.Count.PerElement()
            | "FrequentEntities" >> beam.Filter(lambda kv, n: kv[1] >= n, self.min_docs)
            | "TopEntitiesPerType" >> beam.CombineGlobally(TopEntitiesPerTypeFn(self.per_shape))
        )


class GenerateContextualFn(beam.DoFn):
    """Batch of pair dicts -> contextual rows; failed pairs on output 'deadletter'; counts on 'stats'."""

    def __init__(self, contextual: ContextualConfig, embed: EmbedConfig, seed: int, with_stats: bool = False):
        self.contextual, self.embed, self.seed, self.with_stats = contextual, embed, seed, with_stats
        self._shared = shared.Shared()  # one model + WordNet per worker process, whatever its thread count
        self._generator = None

    def setup(self):
        from transforms.contextual.generator import ContextualGenerator

        self._generator = self._shared.acquire(
            lambda: ContextualGenerator.load(self.contextual, self.embed, self.seed),
            tag=repr((self.contextual, self.embed, self.seed)),
        )

    def process(self, batch, entity_vocab):
        rows, deadletter, counts = self._generator.run(list(batch), entity_vocab)
        for name, increment in counts.metric_increments().items():
            Metrics.counter(NAMESPACE, name).inc(increment)
        yield from rows
        for dead in deadletter:
            yield beam.pvalue.TaggedOutput(DEADLETTER, dead)
        if self.with_stats:
            yield beam.pvalue.TaggedOutput(STATS, {"contextual": counts.as_dict()})


class GenerateContextualNegatives(beam.PTransform):
    """{"pairs": pair dicts, "corpus": passages} -> (rows, deadletter[, stats]); see the module docstring.

    WordNet is prepared (or its absence reported) here, in the launcher, before any worker starts.
    """

    def __init__(self, contextual: ContextualConfig, embed: EmbedConfig, seed: int, with_stats: bool = False):
        super().__init__()
        self.contextual, self.embed, self.seed, self.with_stats = contextual, embed, seed, with_stats

    def expand(self, inputs):
        prepare_wordnet()
        disable_nltk_download()
        pairs, corpus = inputs["pairs"], inputs["corpus"]
        if "entity" in self.contextual.kinds:
            entity_vocab = corpus | "EntityVocabulary" >> BuildEntityVocabulary()
        else:
            entity_vocab = pairs.pipeline | "NoEntityVocabulary" >> beam.Create([{}])
        results = (
            pairs
            | "BatchPairs" >> beam.BatchElements(min_batch_size=1, max_batch_size=PAIRS_PER_BATCH)
            | "PerturbAndGuard"
            >> beam.ParDo(
                GenerateContextualFn(self.contextual, self.embed, self.seed, self.with_stats),
                entity_vocab=beam.pvalue.AsSingleton(entity_vocab),
            ).with_outputs(DEADLETTER, STATS, main="rows")
        )
        if self.with_stats:
            return results.rows, results[DEADLETTER], results[STATS]
        return results.rows, results[DEADLETTER]


def contextual_stats(result, kinds: tuple[str, ...]) -> dict:
    """The contextual counts of a finished PipelineResult, as GuardCounts.as_dict() (committed counters)."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters: dict[str, int] = {}
    for counter in query["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(counter.committed or 0)
    return GuardCounts.from_metric_counters(counters, kinds).as_dict()
