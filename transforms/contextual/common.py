"""What every contextual-negative generator shares: the candidate type, resources, tokens, edit descriptions.

A generator is a pure function `(text, rng, resources) -> list[Candidate]`: `text` is the part of the
positive it may edit, `rng` a numpy Generator seeded per (query, positive, kind), `resources` the per-worker
objects (tagger, augmenters, entity vocabulary) plus the query text. ContextualGenerator passes the sentence
of the edit window that carries the query match (`match_sentence`); the entity kind gets the whole window
and that sentence's span as `resources.focus`. Candidates carry the whole text they were given; the caller
puts the untouched rest of the positive back around it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

# Function words that never count as "a content word changed". Negation cues (no, not, never, without, nor)
# are deliberately absent: inserting or removing them is the edit of the negation kind.
STOPWORDS = frozenset(
    """a an the this that these those each every some any all both either neither such own same other another
    of in on at by for with from to into onto over under between among through during after before than via
    within across against about upon out up down off as if whether while because since until so and or but
    i we you he she it they me us him her them my our your his its their which who whom whose what when where
    how why there here be is are was were been being am do does did has have had having can could may might
    must shall should will would also then thus therefore however moreover furthermore yet still only just
    very more most less least much many few per vs versus et al se ie eg""".split()
)

_WORD_RE = re.compile(r"\w+(?:[-'’]\w+)*", re.UNICODE)
_GAP_TOKEN_RE = re.compile(r"\w+(?:[-'’]\w+)*|\s+|[^\w\s]", re.UNICODE)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass(frozen=True)
class Candidate:
    """One perturbed version of the edit window: `text` (whole window), `edit` ("old -> new"), `kind`."""

    text: str
    edit: str
    kind: str


@dataclass(frozen=True)
class PerturbResources:
    """Per-worker helpers plus the pair's query; generators read only what they need."""

    query: str = ""
    tagger: Any = None  # transforms.contextual.tagger.WordNetTagger
    augmenters: dict = field(default_factory=dict)  # kind -> nlpaug augmenter (contextual/lexical.py)
    entity_vocab: dict = field(default_factory=dict)  # type -> tuple of entities (contextual/entity.py)
    focus: tuple[int, int] | None = None  # (start, end) of the match sentence in the text, where known


def gap_tokens(text: str) -> list[str]:
    """Words, whitespace runs and single punctuation marks; "".join(gap_tokens(t)) == t."""
    return _GAP_TOKEN_RE.findall(text)


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def is_content_word(token: str) -> bool:
    return bool(_WORD_RE.fullmatch(token)) and token.lower() not in STOPWORDS


def content_words(text: str) -> list[str]:
    """Lower-cased content words in order (numbers count: "12" -> "24" changes content)."""
    return [w.lower() for w in words(text) if w.lower() not in STOPWORDS]


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of sentences, split after . ! ? before a capital, digit or bracket."""
    spans, start = [], 0
    for match in _SENTENCE_END_RE.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def stem_word(word: str) -> str:
    """Crude de-pluralisation for overlap counts ("cells" ~ "cell", "class" stays)."""
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def match_sentence(text: str, query: str) -> tuple[int, int] | None:
    """(start, end) of the sentence of `text` that carries the query match: the one sharing the most distinct
    (crudely de-pluralised) content words with `query`, ties to the earliest; None when none shares any.

    Lexical overlap, not the embedding model: it is a pure function of the two strings (no extra encode per
    sentence: the re-embedding of candidates already dominates the cost), deterministic across backends and
    devices, and the query's words are what a meaning-changing edit has to hit to change the answer."""
    query_words = {stem_word(w) for w in content_words(query)}
    best, best_overlap = None, 0
    for start, end in sentences(text):
        overlap = len(query_words & {stem_word(w) for w in content_words(text[start:end])})
        if overlap > best_overlap:
            best, best_overlap = (start, end), overlap
    return best


def describe_edit(before: str, after: str, max_chars: int = 200) -> str:
    """The changed span(s) as "old -> new" joined by "; ", with one word of context around pure insertions
    or deletions ("is associated -> is not associated")."""
    a, b = before.split(), after.split()
    spans = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if i1 == i2 or j1 == j2:  # insertion or deletion: show a neighbour so the edit reads on its own
            left = 1 if i1 > 0 and j1 > 0 else 0
            right = 1 if i2 < len(a) and j2 < len(b) else 0
            i1, j1, i2, j2 = i1 - left, j1 - left, i2 + right, j2 + right
        spans.append(f"{' '.join(a[i1:i2])} -> {' '.join(b[j1:j2])}")
    text = "; ".join(spans)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def changed_spans(before: str, after: str) -> list[tuple[int, int]]:
    """(start, end) character spans of `before` that `after` changed, token by token (words, spaces,
    punctuation); an insertion is an empty span at its position."""
    a, b = gap_tokens(before), gap_tokens(after)
    offsets = [0]
    for token in a:
        offsets.append(offsets[-1] + len(token))
    return [
        (offsets[i1], offsets[i2])
        for op, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
        if op != "equal"
    ]


def split_at_window(text: str, tokenizer: Any, window_tokens: int, margin_tokens: int = 8) -> tuple[str, str]:
    """(head, tail) with head = the prefix the model reads, ending at whitespace, so edits made in head are
    inside the first `window_tokens` tokens (special tokens and a `margin_tokens` slack for longer
    substitutes taken off). head + tail == text.

    SciFact abstracts often exceed a 256-token window; an edit after it changes nothing the model sees.
    """
    budget = max(window_tokens - margin_tokens, 1)
    encoded = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=budget + 1
    )
    offsets = encoded["offset_mapping"]
    if len(offsets) <= budget:
        return text, ""
    end = offsets[budget - 1][1]  # end character of the last token inside the budget
    if not text[end].isspace():  # the budget ends inside a word: cut before that word
        end = max(text.rfind(" ", 0, end), 0)
    return text[:end], text[end:]


def match_case(source: str, target: str) -> str:
    """Give `target` the capitalisation pattern of `source` (Capitalised or UPPER); else leave it."""
    if source.isupper() and len(source) > 1:
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def pick(rng, items: list, k: int) -> list:
    """Up to k items, drawn without replacement by `rng` (order of the draw kept)."""
    if k <= 0 or not items:
        return []
    order = rng.permutation(len(items))[:k]
    return [items[i] for i in order]
