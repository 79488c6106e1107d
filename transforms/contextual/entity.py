"""Entity swaps: a gene, protein, drug, chemical or place named in the positive is replaced, everywhere in the
edit window, by another entity of the same written shape taken from other documents ("BRCA1" -> "HDAC6",
"IL-6" -> "IL-10", "TNF-α" -> "PGC-1α").

Entities are found by rules, no tagger: tokens mixing letters and digits ("BRCA1", "p53", "CD4+"), with two
or more capitals ("TNF", "HIV"), or with a hyphenated Greek or digit part ("TNF-α", "IL-6"); capitalised
words inside a sentence ("Alzheimer", "Danish") also count; statistics abbreviations, abstract headings
("METHODS") and hyphenated modifiers ("PCR-based") do not. Their shape is the token with every run of
capitals written "A", of small letters "a", of digits "9", of Greek letters "α" ("IL-6" -> "A-9").
The vocabulary (shape -> entities by document frequency, capped) is built from the corpus passages
(`entities_in` per passage, document frequencies, `vocabulary_from_counts`; in Beam
transforms.contextual.beam.BuildEntityVocabulary) and reaches workers as a side input.
"""

from __future__ import annotations

import re

from transforms.contextual.common import STOPWORDS, Candidate, PerturbResources, describe_edit, pick

_GREEK = "\u0370-\u03ff"
_TOKEN_RE = re.compile(
    rf"(?<![\w{_GREEK}\-])[A-Za-z0-9{_GREEK}][\w{_GREEK}\-+/]*[\w{_GREEK}+]|(?<![\w{_GREEK}\-])[A-Za-z]"
)
# Abbreviations of statistics and study design, roman numerals and structured-abstract headings ("METHODS"):
# swapping them is not an entity change. Capitalised runs of 8+ letters are headings too ("CONCLUSIONS").
_NOT_ENTITIES = frozenset(
    "CI OR HR RR SD SE SEM IQR AUC ROC ANOVA BMI RCT RCTs vs USD II III IV VI VII VIII IX XI XII "
    "AIM AIMS BACKGROUND CONTEXT DESIGN DATA METHOD METHODS RESULT RESULTS SETTING SETTINGS PURPOSE "
    "FINDINGS OBJECTIVE OBJECTIVES SUMMARY REVIEW STUDY SOURCES MAIN".split()
)
_HEADING_MIN_LETTERS = 8


def entity_shape(token: str) -> str:
    """'BRCA1' -> 'A9', 'IL-6' -> 'A-9', 'TNF-α' -> 'A-α', 'p53' -> 'a9', 'Alzheimer' -> 'Aa'."""
    out = []
    for char in token:
        if "\u0370" <= char <= "\u03ff":
            cls = "α"
        elif char.isdigit():
            cls = "9"
        elif char.isupper():
            cls = "A"
        elif char.islower():
            cls = "a"
        else:
            cls = char
        if not out or out[-1] != cls:
            out.append(cls)
    return "".join(out)


def is_entity(token: str, sentence_initial: bool = False) -> bool:
    """Rule-based: identifiers (letters + digits, 2+ capitals, Greek parts) or a mid-sentence Capitalised word."""
    if token.isalpha() and token.islower():  # most words: fast exit
        return False
    if len(token) < 2 or token in _NOT_ENTITIES or token.lower() in STOPWORDS or token.isdigit():
        return False
    if token.isalpha() and token.isupper() and len(token) >= _HEADING_MIN_LETTERS:
        return False
    suffix = token.rsplit("-", 1)[-1] if "-" in token else ""
    if len(suffix) >= 3 and suffix.isalpha() and suffix.islower():  # "PCR-based", "IL-6-induced": modifiers
        return False
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    capitals = sum(c.isupper() for c in token)
    greek = any("\u0370" <= c <= "\u03ff" for c in token)
    if has_alpha and (has_digit or capitals >= 2 or (greek and "-" in token)):
        return not token.replace("-", "").replace("/", "").isdigit()
    capitalised_word = token[0].isupper() and token[1:].islower() and token.isalpha() and len(token) >= 4
    return capitalised_word and not sentence_initial


def entities_in(text: str) -> list[str]:
    """Distinct entities of `text` in order of first appearance."""
    seen, out = set(), []
    for m in _TOKEN_RE.finditer(text):
        token = m.group(0)
        j = m.start() - 1
        while j >= 0 and text[j].isspace():
            j -= 1
        sentence_initial = j < 0 or text[j] in ".!?:;(["
        if token not in seen and is_entity(token, sentence_initial):
            seen.add(token)
            out.append(token)
    return out


def vocabulary_from_counts(
    doc_frequency: dict[str, int], per_shape: int = 200, max_shapes: int = 300, min_df: int = 2
) -> dict[str, tuple[str, ...]]:
    """shape -> up to `per_shape` entities seen in >= min_df documents, by (-df, entity); the `max_shapes`
    shapes with the most entities kept (ties by shape). Deterministic for a given count table."""
    by_shape: dict[str, list[tuple[int, str]]] = {}
    for entity, df in doc_frequency.items():
        if df >= min_df:
            by_shape.setdefault(entity_shape(entity), []).append((-df, entity))
    kept = sorted(by_shape, key=lambda shape: (-len(by_shape[shape]), shape))[:max_shapes]
    return {shape: tuple(e for _, e in sorted(by_shape[shape])[:per_shape]) for shape in sorted(kept)}


def _shape_priority(shape: str) -> int:
    """Identifier-like shapes (digits, Greek, hyphens, all capitals) before plain Capitalised words."""
    return 1 if shape == "Aa" else 0


def entity_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """Up to `attempts` candidates, each replacing every occurrence of one entity by a same-shape entity
    from the vocabulary that does not occur in `text` (so it comes from another document)."""
    vocab = resources.entity_vocab or {}
    present = {t.lower() for t in _TOKEN_RE.findall(text)}
    by_priority: dict[int, list[tuple[str, list[str]]]] = {0: [], 1: []}
    for entity in entities_in(text):
        shape = entity_shape(entity)
        options = [e for e in vocab.get(shape, ()) if e.lower() not in present]
        if len(options) >= 1:
            by_priority[_shape_priority(shape)].append((entity, options))
    chosen = pick(rng, by_priority[0], attempts)
    chosen += pick(rng, by_priority[1], attempts - len(chosen))
    out = []
    for entity, options in chosen:
        replacement = options[int(rng.integers(len(options)))]
        pattern = re.compile(rf"(?<![\w{_GREEK}\-]){re.escape(entity)}(?![\w{_GREEK}\-+])")
        candidate = pattern.sub(lambda _m, r=replacement: r, text)
        if candidate != text:
            out.append(Candidate(candidate, describe_edit(entity, replacement), "entity"))
    return out
