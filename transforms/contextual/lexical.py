"""Antonym and synonym-shift substitutions through nlpaug's WordNet augmenters, made offline and deterministic.

nlpaug's AntonymAug / SynonymAug are used as they are, with four things swapped in:
- `sample()`/`prob()` draw from a per-call numpy Generator instead of the global `random` state, so the
  output depends only on (text, rng) whatever the thread or worker count;
- the part-of-speech tagger is transforms.contextual.tagger.WordNetTagger (nltk.pos_tag's model is not shipped
  offline; nlpaug would download it);
- substitutes are inflected like the word they replace with lemminflect ("increased" -> "decreased");
- tokens are words, whitespace and punctuation kept verbatim, so only the substituted word changes
  (nlpaug's own tokenizer re-spaces punctuation all over the text).
Build augmenters once per worker (`build_lexical_augmenters`, in DoFn.setup()).
"""

from __future__ import annotations

import contextlib
import difflib
import threading

import nlpaug.augmenter.word as naw
import nlpaug.model.word_dict as nmw
from nlpaug.util import PartOfSpeech

from transforms.contextual.common import Candidate, PerturbResources, describe_edit, gap_tokens, is_content_word
from transforms.contextual.tagger import inflect

NEGATION_CUES = frozenset("no not nor never without cannot none nothing neither".split())
_OPEN_CLASS_PREFIXES = ("NN", "VB", "JJ", "RB")


class OfflineWordNet(nmw.WordNet):
    """nlpaug's WordNet dictionary with an offline tagger and substitutes inflected like the original word."""

    def __init__(self, tagger, is_synonym: bool, cache_size: int = 200_000):
        self._tagger = tagger
        self._predictions: dict[tuple[str, str | None], list[str]] = {}
        self._cache_size = cache_size
        super().__init__(lang="eng", is_synonym=is_synonym)

    def read(self):  # upstream returns nltk.corpus.wordnet (slow to load, and downloads when missing)
        return self._tagger.wordnet

    def pos_tag(self, tokens):  # replaces nltk.pos_tag (a classmethod upstream)
        return self._tagger.tag(tokens)

    def _cached(self, key: tuple, compute) -> list[str]:
        value = self._predictions.get(key)
        if value is None:
            if len(self._predictions) >= self._cache_size:  # bounded: a long-running worker sees many words
                self._predictions.clear()
            value = self._predictions[key] = compute()
        return list(value)

    def lemmas(self, word, pos=None) -> list[str]:
        """WordNet lemma names, not inflected. Synonyms: upstream's (every sense). Antonyms: those of the most
        frequent sense that has any (WordNet lists senses by frequency) - upstream samples antonyms of all
        senses alike, which turns "regular" into "constipated" and gene "silencing" into "loudening"."""
        return self._cached(("lemmas", word.lower(), pos), lambda: self._lemmas(word.lower(), pos))

    def _lemmas(self, word: str, pos) -> list[str]:
        if self.is_synonym:
            return super().predict(word, pos)
        for synset in self.model.synsets(word, pos=pos):
            antonyms = [a.name() for lemma in synset.lemmas() for a in lemma.antonyms()]
            if antonyms:
                return antonyms
        return []

    def predict(self, word, pos=None):
        return self._cached(("forms", word, pos), lambda: self._inflected(word, pos))

    def _inflected(self, word, pos) -> list[str]:
        tag = self._tagger.tag_word(word)
        seen, results = set(), []
        for lemma in self.lemmas(word, pos):
            form = inflect(lemma, tag) if tag not in ("NN", "VB", "JJ", "RB", "VBP") else lemma
            if self.is_synonym and _variant_of(word, form):
                continue  # "tumour" -> "tumor", "cortex" -> "cerebral cortex": no change of meaning at all
            if form.lower() not in seen:
                seen.add(form.lower())
                results.append(form)
        return results


def _variant_of(word: str, form: str) -> bool:
    """A spelling or inflection variant, or one containing the other ("cortex" / "cerebral_cortex")."""
    a, b = word.lower(), form.lower().replace("_", " ").replace("-", " ")
    return a in b or b in a or difflib.SequenceMatcher(a=a, b=b).ratio() >= 0.8


class _SeededMixin:
    """Routes nlpaug's random choices to `self._rng` (set by `seeded()`); skips all but content words of 3+
    letters ("p" in "p < 0.05" is no word to replace with "phosphorus")."""

    _rng = None

    @classmethod
    def get_model(cls, *args, **kwargs):  # upstream builds a WordNet on nltk.corpus.wordnet; _init_seeding ours
        return None

    def _init_seeding(self, tagger, is_synonym: bool) -> None:
        self._lock = threading.Lock()
        self._rng = None
        self.model = OfflineWordNet(tagger, is_synonym=is_synonym)

    @contextlib.contextmanager
    def seeded(self, rng):
        with self._lock:
            self._rng = rng
            try:
                yield self
            finally:
                self._rng = None

    def sample(self, x, num=None):
        if self._rng is None:
            raise RuntimeError("call the augmenter inside `with augmenter.seeded(rng):` for deterministic output")
        if isinstance(x, list):
            return [x[i] for i in self._rng.permutation(len(x))[:num]]
        return int(self._rng.integers(1, x - 1))

    def prob(self):
        return float(self._rng.random())

    def pre_skip_aug(self, tokens, tuple_idx=None):
        results = []
        for idx, token in enumerate(tokens):
            word = token[tuple_idx] if tuple_idx is not None else token
            if is_content_word(word) and word.lower() not in NEGATION_CUES and word.isalpha() and len(word) >= 3:
                results.append(idx)
        return results


class SeededAntonymAug(_SeededMixin, naw.AntonymAug):
    """nlpaug.AntonymAug (verbs, adjectives, adverbs with a WordNet antonym), seeded per call."""

    def __init__(self, tagger, aug_max: int = 1):
        super().__init__(aug_min=1, aug_max=aug_max, tokenizer=gap_tokens, reverse_tokenizer="".join)
        self._init_seeding(tagger, is_synonym=False)


class SeededSynonymAug(_SeededMixin, naw.SynonymAug):
    """nlpaug.SynonymAug over WordNet (any sense of the tagged part of speech), seeded per call."""

    def __init__(self, tagger, aug_max: int = 2):
        super().__init__(
            aug_src="wordnet", aug_min=1, aug_max=aug_max, tokenizer=gap_tokens, reverse_tokenizer="".join
        )
        self._init_seeding(tagger, is_synonym=True)

    def skip_aug(self, token_idxes, tokens):
        # Upstream only skips determiners; keep open-class words that have a synonym, so a draw is never wasted.
        keep = []
        for idx in token_idxes:
            word, tag = tokens[idx]
            if tag.startswith(_OPEN_CLASS_PREFIXES) and tag != "NNP":
                poses = PartOfSpeech.constituent2pos(tag)
                if any(c.lower() != word.lower() for p in poses for c in self.model.lemmas(word, pos=p)):
                    keep.append(idx)
        return keep


def build_lexical_augmenters(tagger, kinds: tuple[str, ...]) -> dict:
    """{kind: augmenter} for the lexical kinds requested; `tagger` holds the WordNet reader (load_wordnet())."""
    builders = {"antonym": SeededAntonymAug, "synonym": SeededSynonymAug}
    return {kind: builders[kind](tagger) for kind in kinds if kind in builders}


def _augment(kind: str, text: str, rng, resources: PerturbResources, attempts: int) -> list[Candidate]:
    augmenter = resources.augmenters[kind]
    core = text.strip()
    if not core:
        return []
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
    seen, out = {core}, []
    with augmenter.seeded(rng):
        for _ in range(attempts):
            new = augmenter.augment(core)[0]
            if new not in seen:
                seen.add(new)
                out.append(Candidate(lead + new + trail, describe_edit(core, new), kind))
    return out


def antonym_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """One word replaced by a WordNet antonym ("increased" -> "decreased"), up to `attempts` distinct draws."""
    return _augment("antonym", text, rng, resources, attempts)


def synonym_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """One or two words replaced by WordNet synonyms of any sense: a sense shift, not always a paraphrase."""
    return _augment("synonym", text, rng, resources, attempts)
