"""Entity swaps: an entity named in the sentence that carries the query match is replaced, at every mention
in the edit window, by another entity of the same type taken from other documents ("BRCA1" -> "HDAC6",
"IL-6" -> "IL-10", "SIDS" -> "COPD", "Danish" -> "Swedish", "New Zealand" -> "South Africa"). Every mention,
not just the one in that sentence: a passage that still names the query's entity elsewhere still answers it.

Entities are found by rules, no tagger: tokens mixing letters and digits ("BRCA1", "p53", "CD4+"), with two
or more capitals ("TNF", "HIV"), or with a hyphenated Greek or digit part ("TNF-α", "IL-6"); capitalised
words inside a sentence ("Alzheimer", "Danish") and runs of 2-4 of them ("New Zealand") also count;
statistics abbreviations, abstract headings ("METHODS", "MAIN OUTCOME MEASURES": listed heading words and
the capitals run they stand in) and hyphenated modifiers ("PCR-based") do not.

Type-consistent swaps: an entity is replaced only by one of the same `entity_type` (never "SIDS" ->
"OUTCOME"): acronyms (capital letters only) by length class, numbers with a unit ("10mg") by unit,
gene/protein-like symbols by written shape (every run of capitals "A", small letters "a", digits "9",
Greek letters "α": "IL-6" -> "A-9"), single capitalised names, multiword names by word count; at swap
time names made of capitalised common words of title-case titles ("Review", "Outer Membrane Biogenesis":
WordNet knows them in small letters only) are neither swapped nor drawn.
The vocabulary (type -> entities by document frequency, capped) is built from the corpus passages
(`entities_in` per passage, document frequencies, `vocabulary_from_counts`; in Beam
transforms.contextual.beam.BuildEntityVocabulary) and reaches workers as a side input: replacements are
the corpus's own entities of that type, never a generic word.
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
# Words of structured-abstract headings written in capitals ("MAIN OUTCOME MEASURES", "DESIGN, SETTING, AND
# PARTICIPANTS", "TRIAL REGISTRATION"): any run of capitals words containing one is a heading, all of it.
_HEADING_WORDS = _NOT_ENTITIES | frozenset(
    "OUTCOME OUTCOMES MEASURE MEASURES MEASUREMENTS PARTICIPANTS PATIENTS SUBJECTS INTERVENTION INTERVENTIONS "
    "REGISTRATION TRIAL TRIALS EXPOSURE EXPOSURES CONCLUSION INTRODUCTION DISCUSSION SIGNIFICANCE RATIONALE "
    "IMPORTANCE MATERIALS POPULATION SAMPLE LIMITATIONS EVIDENCE SYNTHESIS SELECTION CRITERIA EXTRACTION "
    "ANALYSIS ANALYSES INTERPRETATION FUNDING PRINCIPAL GOAL GOALS HYPOTHESIS AND OF".split()
)
_HEADING_MIN_LETTERS = 8
_CAPITALS_RUN_RE = re.compile(r"(?<![\w\-])[A-Z]{2,}(?:,?\s+[A-Z]{2,})*(?![\w\-])")
_NAME_RUN_RE = re.compile(r"(?<![\w\-])[A-Z][a-z]{2,}(?:\s[A-Z][a-z]{2,}){1,3}(?![\w\-])")
_ACRONYM_CLASSES = ((3, "2-3"), (5, "4-5"))  # upper length bound -> class; longer: "6+"
_MONTHS = frozenset(
    "January February March April May June July August September October November December".split()
)


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


def entity_type(entity: str) -> str:
    """What an entity may be swapped for: 'acronym:4-5' ("SIDS"), 'quantity:mg' ("10mg"), 'symbol:A-9'
    ("IL-6"), 'name:1' ("Danish"), 'name:2' ("New Zealand")."""
    if " " in entity:
        return f"name:{len(entity.split())}"
    if entity.isalpha() and entity.isascii() and entity.isupper():
        return "acronym:" + next((c for bound, c in _ACRONYM_CLASSES if len(entity) <= bound), "6+")
    shape = entity_shape(entity)
    if shape == "9a":
        return "quantity:" + entity.lstrip("0123456789")
    if shape == "Aa" and entity[1:].islower():
        return "month" if entity in _MONTHS else "name:1"
    return "symbol:" + shape


def is_heading_word(token: str) -> bool:
    """A word of a structured-abstract heading in capitals ("OUTCOME", "CONCLUSIONS")."""
    return token in _HEADING_WORDS or (token.isalpha() and token.isupper() and len(token) >= _HEADING_MIN_LETTERS)


def same_entity_type(old: str, new: str) -> bool:
    """Would swapping `old` for `new` be type-consistent? (bench/contextual.py's type-consistency rate.)"""
    return entity_type(old) == entity_type(new) and not any(is_heading_word(w) for w in new.split())


def _heading_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _CAPITALS_RUN_RE.finditer(text):
        if any(is_heading_word(w) for w in re.findall(r"[A-Z]+", m.group(0))):
            spans.append(m.span())
    return spans


def _sentence_initial(text: str, start: int, heading_ends: frozenset[int] = frozenset()) -> bool:
    """After a sentence end, an opening bracket, or a heading ("MAIN OUTCOME MEASURES Risk of ...")."""
    j = start - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    return j < 0 or text[j] in ".!?:;([" or j + 1 in heading_ends


def entities_in(text: str) -> list[str]:
    """Distinct entities of `text` in order of first appearance (multiword names as one entity).

    A Capitalised word whose small-letter form also occurs in `text` is a common word in a title-case
    title ("Cells", "Review"), not a name."""
    headings = _heading_spans(text)
    ends = frozenset(b for _, b in headings)
    lower_words = {w for w in re.findall(r"[a-z]+", text) if w[:1].islower()}
    names = []
    for m in _NAME_RUN_RE.finditer(text):
        parts = m.group(0).split()
        if _sentence_initial(text, m.start(), ends) or any(p.lower() in STOPWORDS for p in parts):
            continue
        if all(p.lower() in lower_words for p in parts):
            continue
        names.append(m)
    found: list[tuple[int, str]] = [(m.start(), m.group(0)) for m in names]
    for m in _TOKEN_RE.finditer(text):
        token = m.group(0)
        if any(a <= m.start() < b for a, b in headings) or any(n.start() <= m.start() < n.end() for n in names):
            continue
        if token.isalpha() and token[1:].islower() and token.lower() in lower_words:
            continue
        if is_entity(token, _sentence_initial(text, m.start(), ends)):
            found.append((m.start(), token))
    seen, out = set(), []
    for _, entity in sorted(found):
        if entity not in seen:
            seen.add(entity)
            out.append(entity)
    return out


def vocabulary_from_counts(
    doc_frequency: dict[str, int], per_shape: int = 200, max_shapes: int = 300, min_df: int = 2
) -> dict[str, tuple[str, ...]]:
    """entity type -> up to `per_shape` entities seen in >= min_df documents, by (-df, entity); the
    `max_shapes` types with the most entities kept (ties by type). Deterministic for a given count table."""
    by_shape: dict[str, list[tuple[int, str]]] = {}
    for entity, df in doc_frequency.items():
        if df >= min_df:
            by_shape.setdefault(entity_type(entity), []).append((-df, entity))
    kept = sorted(by_shape, key=lambda shape: (-len(by_shape[shape]), shape))[:max_shapes]
    return {shape: tuple(e for _, e in sorted(by_shape[shape])[:per_shape]) for shape in sorted(kept)}


def _type_priority(kind: str) -> int:
    """Identifier-like types (symbols, acronyms, quantities) before names."""
    return 1 if kind.startswith("name:") else 0


def _proper_in_wordnet(phrase: str, tagger) -> bool | None:
    """True: WordNet has `phrase` as a capitalised lemma ("Danish", "New_Zealand"); False: only in small
    letters ("Successful"); None: WordNet lacks it ("Adiponectin")."""
    key = phrase.replace(" ", "_")
    names = [lemma.name() for synset in tagger.wordnet.synsets(key.lower()) for lemma in synset.lemmas()]
    same = [name for name in names if name.lower() == key.lower()]
    if not same:
        return None
    return any(name[:1].isupper() for name in same)


def _common_word(name: str, tagger) -> bool:
    """A name of the vocabulary that is really common words capitalised by a title-case title: one word
    WordNet knows only in small letters ("Successful", "Review"), or several words not listed as a name
    whose any word is such a word ("Outer Membrane Biogenesis"; "Papua New Guinea" is listed). Names WordNet
    lacks ("Adiponectin", "Hlabisa") are kept; without a tagger nothing is ruled out."""
    if tagger is None:
        return False
    if " " not in name:
        return _proper_in_wordnet(name, tagger) is False
    if _proper_in_wordnet(name, tagger):
        return False
    return any(_proper_in_wordnet(word, tagger) is False for word in name.split())


def entity_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """Up to `attempts` candidates, each replacing every occurrence of one entity of the focus sentence
    (`resources.focus`; the whole text when None) by an entity of the same type from the vocabulary that
    does not occur in `text` (so it comes from another document). Capitalised words of title-case titles
    reach the vocabulary too: names made of common words (`_common_word`) are neither swapped nor drawn
    ("Adiponectin" -> "Successful" is no name swap; "Danish" -> "Swedish", "New Zealand" -> "South Africa"
    are)."""
    vocab = resources.entity_vocab or {}
    present = {t.lower() for t in _TOKEN_RE.findall(text)}
    lowered = text.lower()
    start, end = resources.focus or (0, len(text))
    by_priority: dict[int, list[tuple[str, list[str]]]] = {0: [], 1: []}
    for entity in entities_in(text[start:end]):
        kind = entity_type(entity)
        options = [
            e for e in vocab.get(kind, ())
            if (e.lower() not in lowered if " " in e else e.lower() not in present) and not is_heading_word(e)
        ]
        if kind.startswith("name:"):
            if _common_word(entity, resources.tagger):
                continue
            options = [e for e in options if not _common_word(e, resources.tagger)]
        if len(options) >= 1:
            by_priority[_type_priority(kind)].append((entity, options))
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
