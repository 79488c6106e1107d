"""Negation insertion and removal: "is associated" -> "is not associated", "does not" -> "does",
"increases" -> "does not increase", "no significant" -> "a significant".

Rules over words and the WordNet tagger (no parser): every site found in the edit window is one candidate
(one edit each); the rng picks which sites become candidates.
"""

from __future__ import annotations

import re

from transforms.contextual.common import Candidate, PerturbResources, describe_edit, match_case, pick

_AUX = "is|are|was|were|can|could|may|might|must|should|will|would|does|do|did|has|have|had"
_BE_MODAL = frozenset("is are was were can could may might must should will would".split())
_DO_HAVE = frozenset("does do did has have had".split())
_CONTRACTED = {
    "isn't": "is",
    "aren't": "are",
    "wasn't": "was",
    "weren't": "were",
    "doesn't": "does",
    "don't": "do",
    "didn't": "did",
    "hasn't": "has",
    "haven't": "have",
    "hadn't": "had",
    "couldn't": "could",
    "wouldn't": "would",
    "shouldn't": "should",
    "can't": "can",
    "won't": "will",
    "cannot": "can",
}
_NOT_AFTER_AUX_RE = re.compile(rf"\b({_AUX})\s+not\b", re.IGNORECASE)
_CONTRACTED_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k in _CONTRACTED) + r")(?![\w'])", re.IGNORECASE)
_AUX_NEXT_RE = re.compile(rf"\b({_AUX})(\s+)([A-Za-z][\w-]*)", re.IGNORECASE)
_NO_NEXT_RE = re.compile(r"\b(no)(\s+)([A-Za-z][\w-]*)", re.IGNORECASE)
_WITHOUT_RE = re.compile(r"(?<!\bor )\bwithout\b", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Za-z][\w-]*")
# A main verb directly after one of these is probably a noun ("the increases") or not finite.
_NOT_A_SUBJECT_END = frozenset(
    "a an the this that these those of in on at by for with from to into its their our his her which who and or "
    "not no been be being".split()
)
_NEGATION_AHEAD_RE = re.compile(r"(?:\W+\w+){0,3}?\W+(?:no|not|never|neither|none|without)\b", re.IGNORECASE)
_CLAUSE_BREAK_RE = re.compile(r"[.!?:;()\[\]]")
_PRONOUNS = frozenset("we they i you".split())
_DO_FOR_TAG = {"VBZ": "does", "VBD": "did", "VBP": "do"}


def _removals(text: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) sites that remove a negation."""
    sites = [(m.start(), m.end(), m.group(1)) for m in _NOT_AFTER_AUX_RE.finditer(text)]
    for m in _CONTRACTED_RE.finditer(text):
        sites.append((m.start(), m.end(), match_case(m.group(1), _CONTRACTED[m.group(1).lower()])))
    for m in _WITHOUT_RE.finditer(text):
        sites.append((m.start(), m.end(), match_case(m.group(0), "with")))
    return sites


def _no_to_article(text: str, tagger) -> list[tuple[int, int, str]]:
    sites = []
    for m in _NO_NEXT_RE.finditer(text):
        nxt = m.group(3)
        tag = tagger.tag_word(nxt) if tagger is not None else "NN"
        article = "some" if tag in ("NNS", "NNPS") else ("an" if nxt[0].lower() in "aeiou" else "a")
        sites.append((m.start(), m.end(), match_case(m.group(1), article) + m.group(2) + nxt))
    return sites


def _aux_insertions(text: str, tagger) -> list[tuple[int, int, str]]:
    """'is associated' -> 'is not associated'; do/have only before a verb ('has been' -> 'has not been')."""
    sites = []
    for m in _AUX_NEXT_RE.finditer(text):
        aux, space, nxt = m.group(1), m.group(2), m.group(3)
        if nxt.lower() in ("not", "n't", "no", "never"):
            continue
        if aux.lower() in _DO_HAVE:
            tag = tagger.tag_word(nxt) if tagger is not None else ""
            if not tag.startswith("VB") and nxt.lower() not in ("been", "shown", "found", "reported"):
                continue
        sites.append((m.start(), m.end(), f"{aux}{space}not{space}{nxt}"))
    return sites


def _main_verb_insertions(text: str, tagger) -> list[tuple[int, int, str]]:
    """'X increases Y' -> 'X does not increase Y'; 'we found' -> 'we did not find'."""
    if tagger is None:
        return []
    sites, previous = [], None
    for m in _WORD_RE.finditer(text):
        word = m.group(0)
        tag = tagger.tag_word(word)
        prev = previous.group(0).lower() if previous is not None else None
        finite = tag == "VBZ" or (tag in ("VBD", "VBP", "VB") and prev in _PRONOUNS)
        negated_after = _NEGATION_AHEAD_RE.match(text, m.end()) is not None  # "found no effect": no double negation
        same_sentence = previous is not None and not _CLAUSE_BREAK_RE.search(text, previous.end(), m.start())
        subject_before = same_sentence and prev not in _NOT_A_SUBJECT_END  # "Links between ..." is a title
        if finite and subject_before and not negated_after and word.lower() not in _BE_MODAL | _DO_HAVE:
            do = _DO_FOR_TAG.get(tag, "do")
            sites.append((m.start(), m.end(), f"{match_case(word, do)} not {tagger.lemma(word, tag)}"))
        previous = m
    return sites


def negation_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """Up to `attempts` candidates, each flipping one negation site (removal or insertion)."""
    tagger = resources.tagger
    sites = _removals(text) + _no_to_article(text, tagger) + _aux_insertions(text, tagger)
    sites += _main_verb_insertions(text, tagger)
    sites = sorted(set(sites))  # stable order before the draw, whatever order the rules ran in
    out, seen = [], set()
    for start, end, new in pick(rng, sites, len(sites)):
        candidate = text[:start] + new + text[end:]
        if candidate != text and candidate not in seen:
            seen.add(candidate)
            out.append(Candidate(candidate, describe_edit(text[start:end], new), "negation"))
        if len(out) >= attempts:
            break
    return out
