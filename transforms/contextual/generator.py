"""Candidates -> guard -> selection for a batch of (query, positive) pairs, without Beam.

transforms/contextual/beam.py's DoFn and bench/contextual.py both call `ContextualGenerator.run()`.
For every pair the generators of ContextualConfig.kinds (transforms/contextual/<kind>.py) edit the sentence
that carries the query match (common.match_sentence: most content words shared with the query) inside the
part of the positive the model reads (its first max_seq_length tokens, prompt and special tokens included):
an edit elsewhere leaves the passage answering the query, a false negative rather than a hard one. A pair
whose window shares no content word with the query gets no contextual negative. The entity kind swaps an
entity of that sentence at every mention in the window (WINDOW_KINDS). The guard
(transforms/contextual/guard.py) keeps candidates that are new, differ in a content word, are no judged
positive, and whose re-embedding lies in the similarity band; up to `per_pair` survivors are chosen, spread
across kinds. All candidates of a batch are re-embedded in one encode() call.

Randomness: per pair and stream, np.random.default_rng([seed, crc32(f"{query_id}\\t{positive_id}"),
crc32(stream)]) with stream = a kind or "select", so adding a kind never changes another kind's draws and
no output depends on worker count, bundling or threads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import zlib
from collections.abc import Callable

import numpy as np

from schemas.build_config import ContextualConfig, EmbedConfig
from schemas.negatives import lexical_overlap, text_hash
from transforms.contextual.common import Candidate, PerturbResources, match_sentence, split_at_window
from transforms.contextual.guard import GuardCounts, band_rejection, text_rejection
from transforms.contextual.wordnet_install import disable_nltk_download

logger = logging.getLogger(__name__)

GENERATOR_NAMES = {
    "antonym": "nlpaug:antonym",
    "synonym": "nlpaug:synonym",
    "negation": "negation",
    "number": "number",
    "entity": "entity",
    "focus": "focus",
}
CANDIDATES_PER_KIND = 3  # drawn per kind and pair before the guard
WINDOW_KINDS = frozenset({"entity"})  # given the whole window and the match sentence's span (resources.focus)
RAW_CHARS = 300


def default_generators() -> dict[str, Callable]:
    from transforms.contextual.entity import entity_candidates
    from transforms.contextual.focus import focus_candidates
    from transforms.contextual.lexical import antonym_candidates, synonym_candidates
    from transforms.contextual.negation import negation_candidates
    from transforms.contextual.number import number_candidates

    return {
        "antonym": antonym_candidates,
        "synonym": synonym_candidates,
        "negation": negation_candidates,
        "number": number_candidates,
        "entity": entity_candidates,
        "focus": focus_candidates,
    }


def pair_rng(seed: int, query_id: str, positive_id: str, stream: str) -> np.random.Generator:
    pair_key = zlib.crc32(f"{query_id}\t{positive_id}".encode())
    return np.random.default_rng([seed, pair_key, zlib.crc32(stream.encode())])


def spread_across_kinds(by_kind: dict[str, list], kind_order: list[str], k: int) -> list:
    """Round-robin over kinds in `kind_order`, each kind's items in their own order, until k items."""
    chosen, depth = [], 0
    while len(chosen) < k and any(depth < len(by_kind.get(kind, ())) for kind in kind_order):
        for kind in kind_order:
            items = by_kind.get(kind, ())
            if depth < len(items) and len(chosen) < k:
                chosen.append(items[depth])
        depth += 1
    return chosen


def load_contextual_model(embed: EmbedConfig):
    """The run's sentence-transformers model, with the run's embed backend and device (threads from
    embed.torch_threads when set)."""
    import torch

    from transforms.model import load_sentence_transformer

    if embed.torch_threads:
        torch.set_num_threads(embed.torch_threads)
    return load_sentence_transformer(
        embed.model, device=embed.device, max_seq_length=embed.max_seq_length, backend=embed.backend,
        threads=embed.torch_threads,
    )


class ContextualGenerator:
    """Candidates -> guard -> selection for batches of pair dicts; Beam-free (the DoFn and bench call it)."""

    def __init__(
        self,
        contextual: ContextualConfig,
        embed: EmbedConfig,
        seed: int,
        model,
        tagger,
        augmenters,
        generators: dict[str, Callable] | None = None,
        candidates_per_kind: int = CANDIDATES_PER_KIND,
    ):
        self.contextual, self.embed, self.seed = contextual, embed, seed
        self.model, self.tagger, self.augmenters = model, tagger, augmenters
        self.generators = generators or default_generators()
        self.candidates_per_kind = candidates_per_kind
        self._lock = threading.Lock()
        self.similarity_log: list | None = None  # bench/contextual.py sets a list: (kind, similarity, rejection)
        # Edits must be inside what the model reads: never beyond its max_seq_length, prompt included.
        window = min(contextual.edit_window_tokens or model.max_seq_length, model.max_seq_length)
        prompt = embed.doc_prompt or (getattr(model, "prompts", None) or {}).get("document", "")
        prompt_tokens = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
        self.window_tokens = max(window - 2 - prompt_tokens, 1)  # [CLS] ... [SEP] and the prompt share it

    @classmethod
    def load(cls, contextual: ContextualConfig, embed: EmbedConfig, seed: int, **kwargs) -> ContextualGenerator:
        """Prepare WordNet offline, load the model, tagger and augmenters (once per worker)."""
        from transforms.contextual.lexical import build_lexical_augmenters
        from transforms.contextual.tagger import WordNetTagger
        from transforms.contextual.wordnet_reader import load_wordnet

        disable_nltk_download()
        tagger = WordNetTagger(load_wordnet())
        augmenters = build_lexical_augmenters(tagger, contextual.kinds)
        return cls(contextual, embed, seed, load_contextual_model(embed), tagger, augmenters, **kwargs)

    def pair_candidates(self, pair: dict, entity_vocab: dict) -> list[Candidate]:
        """Every kind's candidates for one pair, as whole texts: edits inside the match sentence of the window
        (entity: its entities, at every mention in the window), the rest of the positive untouched."""
        head, tail = split_at_window(pair["positive"], self.model.tokenizer, self.window_tokens)
        span = match_sentence(head, pair["anchor"])
        if span is None:
            return []
        start, end = span
        resources = PerturbResources(pair["anchor"], self.tagger, self.augmenters, entity_vocab)
        window_resources = dataclasses.replace(resources, focus=span)
        out = []
        for kind in self.contextual.kinds:
            rng = pair_rng(self.seed, pair["query_id"], pair["positive_id"], kind)
            if kind in WINDOW_KINDS:
                for cand in self.generators[kind](head, rng, window_resources, attempts=self.candidates_per_kind):
                    out.append(Candidate(cand.text + tail, cand.edit, kind))
                continue
            sentence = head[start:end]
            for cand in self.generators[kind](sentence, rng, resources, attempts=self.candidates_per_kind):
                out.append(Candidate(head[:start] + cand.text + head[end:] + tail, cand.edit, kind))
        return out

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.model.encode_document(
            texts,
            prompt=self.embed.doc_prompt or None,
            batch_size=self.embed.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )  # [n, dim]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def run(self, pairs: list[dict], entity_vocab: dict) -> tuple[list[dict], list[dict], GuardCounts]:
        """(rows, deadletter rows, counts) for a batch of pair dicts (see GenerateContextualNegatives).

        One call at a time per generator: threads of a worker share it (fast tokenizers are not thread-safe;
        the Python work holds the GIL anyway and encode() uses torch's own threads)."""
        with self._lock:
            return self._run(pairs, entity_vocab)

    def _run(self, pairs: list[dict], entity_vocab: dict) -> tuple[list[dict], list[dict], GuardCounts]:
        counts, deadletter, pending = GuardCounts(pairs=len(pairs)), [], []
        for index, pair in enumerate(pairs):
            try:
                candidates = self.pair_candidates(pair, entity_vocab)
            except Exception as error:  # any generator failure dead-letters the pair; the run goes on
                logger.warning(
                    "contextual perturbation failed for %s/%s: %r",
                    pair.get("query_id"),
                    pair.get("positive_id"),
                    error,
                )
                deadletter.append(_deadletter(pair, error))
                counts.deadletter += 1
                continue
            judged, seen = frozenset(pair["judged_positive_hashes"]), set()
            for cand in candidates:
                counts.candidate(cand.kind)
                reason = text_rejection(pair["positive"], cand.text, judged, seen, self.contextual.max_length_ratio)
                if reason:
                    counts.reject(cand.kind, reason)
                else:
                    pending.append((index, cand))
        vectors = self.embed_texts([cand.text for _, cand in pending])  # [n_pending, dim]
        accepted: dict[int, dict[str, list]] = {}
        for (index, cand), vector in zip(pending, vectors):
            pair = pairs[index]
            similarity = float(vector @ np.asarray(pair["positive_vector"], dtype=np.float32))
            reason = band_rejection(similarity, self.contextual.similarity_band)
            if self.similarity_log is not None:
                self.similarity_log.append((cand.kind, similarity, reason))
            if reason:
                counts.reject(cand.kind, reason)
                continue
            counts.accept(cand.kind)
            score = float(vector @ np.asarray(pair["query_vector"], dtype=np.float32))
            accepted.setdefault(index, {}).setdefault(cand.kind, []).append((cand, similarity, score))
        rows = []
        for index, by_kind in sorted(accepted.items()):
            rows.extend(self._select(pairs[index], by_kind, counts))
        return rows, deadletter, counts

    def _select(self, pair: dict, by_kind: dict[str, list], counts: GuardCounts) -> list[dict]:
        rng = pair_rng(self.seed, pair["query_id"], pair["positive_id"], "select")
        order = [self.contextual.kinds[i] for i in rng.permutation(len(self.contextual.kinds))]
        chosen = spread_across_kinds(by_kind, order, self.contextual.per_pair)
        if chosen:
            counts.pairs_with_negative += 1
        for cand, _, _ in chosen:
            counts.select(cand.kind)
        return [_row(pair, cand, similarity, score) for cand, similarity, score in chosen]


def _row(pair: dict, cand: Candidate, similarity: float, score: float) -> dict:
    digest = text_hash(cand.text)
    return {
        "query_id": pair["query_id"],
        "positive_id": pair["positive_id"],
        "negative_id": f"ctx:{pair['positive_id']}:{digest}",
        "anchor": pair["anchor"],
        "positive": pair["positive"],
        "negative": cand.text,
        "tier": "contextual",
        "rank": None,
        "score_positive": float(pair["score_positive"]),
        "score_negative": score,
        "similarity_to_positive": similarity,
        "generator": GENERATOR_NAMES[cand.kind],
        "edit": cand.edit,
        "negative_text_hash": digest,
        "lexical_overlap": lexical_overlap(pair["positive"], cand.text),
    }


def _deadletter(pair: dict, error: Exception) -> dict:
    return {
        "source": "contextual",
        "location": f"{pair.get('query_id')}/{pair.get('positive_id')}",
        "reason": "perturbation_failed",
        "detail": f"{type(error).__name__}: {error}",
        "raw": str(pair.get("positive"))[:RAW_CHARS],
    }
