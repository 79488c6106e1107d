"""Focus swaps: change who does what to whom in the part of the positive the query is about.

The focus sentence is the sentence sharing the most content words with the query (ties: the earliest;
common.match_sentence, which also picks the sentence every other kind edits). Inside it, two content words
with the same Penn tag trade places, at least one of them a query word: "IL-6 activates STAT3 in T cells"
-> "STAT3 activates IL-6 in T cells". Pairs where both words come from the query (the relation the query
asks about) are drawn first; the same words still appear, so this kind tests word order and roles, which
bag-of-words overlap cannot see.
"""

from __future__ import annotations

import re

from transforms.contextual.common import Candidate, PerturbResources, content_words, match_case, pick
from transforms.contextual.common import match_sentence as focus_sentence
from transforms.contextual.common import stem_word as _norm

_WORD_SPAN_RE = re.compile(r"[\w\u0370-\u03ff]+(?:[-'][\w\u0370-\u03ff]+)*")
__all__ = ["focus_candidates", "focus_sentence"]


def _swap_pairs(spans: list[re.Match], query_words: set[str], tagger) -> tuple[list, list]:
    """(pairs of two query words, pairs of a query word and another word), same tag, different words."""
    tags = [tagger.tag_word(m.group(0)) if tagger is not None else "NN" for m in spans]
    both, one = [], []
    for i, a in enumerate(spans):
        for j in range(i + 1, len(spans)):
            b = spans[j]
            if tags[i] != tags[j] or a.group(0).lower() == b.group(0).lower():
                continue
            in_query = (_norm(a.group(0)) in query_words) + (_norm(b.group(0)) in query_words)
            if in_query == 2:
                both.append((a, b))
            elif in_query == 1:
                one.append((a, b))
    return both, one


def focus_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """Up to `attempts` candidates, each swapping two same-tag content words of the focus sentence."""
    span = focus_sentence(text, resources.query)
    if span is None:
        return []
    start, end = span
    query_words = {_norm(w) for w in content_words(resources.query)}
    words = [m for m in _WORD_SPAN_RE.finditer(text, start, end) if len(m.group(0)) >= 3 and content_words(m.group(0))]
    both, one = _swap_pairs(words, query_words, resources.tagger)
    chosen = pick(rng, both, attempts)
    chosen += pick(rng, one, attempts - len(chosen))
    out = []
    for a, b in chosen:
        first, second = b.group(0), a.group(0)
        if a.start() == start and second[1:].islower():  # keep the sentence's capital at the sentence start
            first, second = match_case(second, first), second.lower()
        candidate = text[: a.start()] + first + text[a.end() : b.start()] + second + text[b.end() :]
        out.append(Candidate(candidate, f"{a.group(0)} <-> {b.group(0)}", "focus"))
    return out
