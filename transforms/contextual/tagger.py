"""A part-of-speech lookup in WordNet itself, standing in for nltk.pos_tag (whose model nobody ships offline).

The most frequent sense's part of speech, refined to a Penn tag with lemminflect; `inflect` puts a WordNet
lemma in the form a tag asks for.
"""

from __future__ import annotations

# Closed-class words WordNet does not cover (or covers badly), with their Penn tags.
_CLOSED_CLASS = {
    **dict.fromkeys("a an the this that these those each every some any no all both either neither".split(), "DT"),
    **dict.fromkeys(
        "of in on at by for with without from to into onto over under between among through during after before "
        "than via within across against about upon".split(),
        "IN",
    ),
    **dict.fromkeys("and or but nor".split(), "CC"),
    **dict.fromkeys("i we you he she it they me us him her them".split(), "PRP"),
    **dict.fromkeys("my our your his its their".split(), "PRP$"),
    **dict.fromkeys("can could may might must shall should will would".split(), "MD"),
    **dict.fromkeys("is has does was".split(), "VBZ"),
    **dict.fromkeys("are have do".split(), "VBP"),
    **dict.fromkeys("were had did".split(), "VBD"),
    "be": "VB",
    "been": "VBN",
    "being": "VBG",
    "not": "RB",
    "which": "WDT",
    "who": "WP",
    "whether": "IN",
    "if": "IN",
    "as": "IN",
}
_WN_TO_UPOS = {"n": "NOUN", "v": "VERB", "a": "ADJ", "s": "ADJ", "r": "ADV"}
_BASE_TAG = {"n": "NN", "v": "VB", "a": "JJ", "s": "JJ", "r": "RB"}
_INFLECTED_TAGS = {
    "n": ("NNS",),
    "v": ("VBZ", "VBD", "VBN", "VBG"),
    "a": ("JJR", "JJS"),
    "s": ("JJR", "JJS"),
    "r": ("RBR", "RBS"),
}


class WordNetTagger:
    """Penn tags from WordNet sense frequencies: a context-free, offline stand-in for nltk.pos_tag.

    Build one per worker (it caches lookups per instance). Words WordNet does not know are NN (NNP when
    capitalised); numbers CD; other non-words are tagged with themselves (as Penn does for punctuation).
    """

    def __init__(self, wordnet):
        self.wordnet = wordnet  # a reader from load_wordnet()
        self._cache: dict[str, str] = {}

    def tag(self, tokens: list[str]) -> list[tuple[str, str]]:
        """nltk.pos_tag's interface: [(token, penn_tag)]."""
        return [(token, self.tag_word(token)) for token in tokens]

    def tag_word(self, word: str) -> str:
        tag = self._cache.get(word)
        if tag is None:
            tag = self._lookup(word)
            self._cache[word] = tag
        return tag

    def _lookup(self, word: str) -> str:
        lower = word.lower()
        if lower in _CLOSED_CLASS:
            return _CLOSED_CLASS[lower]
        if not any(c.isalpha() for c in word):
            return "CD" if any(c.isdigit() for c in word) else word.strip() or "SP"
        pos = self.most_frequent_pos(lower)
        if pos is None:
            return "NNP" if word[:1].isupper() else "NN"
        return self._inflected_tag(lower, pos)

    def most_frequent_pos(self, word: str) -> str | None:
        """WordNet POS ('n','v','a','r') of the sense of `word` with the highest tagged-corpus count."""
        best, best_count = None, -1
        for synset in self.wordnet.synsets(word):
            pos = "a" if synset.pos() == "s" else synset.pos()
            base = self.wordnet.morphy(word, synset.pos()) or word
            count = sum(lemma.count() for lemma in synset.lemmas() if lemma.name().lower() == base)
            if count > best_count:  # first (noun, then verb, adj, adv) wins ties, as WordNet orders senses
                best, best_count = pos, count
        return best

    def _inflected_tag(self, word: str, pos: str) -> str:
        import lemminflect

        lemmas = lemminflect.getAllLemmas(word, upos=_WN_TO_UPOS[pos]).get(_WN_TO_UPOS[pos], ())
        for lemma in lemmas:
            if lemma == word:
                continue
            for tag in _INFLECTED_TAGS[pos]:
                if word in lemminflect.getInflection(lemma, tag=tag):
                    return tag
        return _BASE_TAG[pos]

    def lemma(self, word: str, tag: str) -> str:
        """The dictionary form of `word` read as `tag` (lemminflect; the word itself when unknown)."""
        import lemminflect

        upos = {"N": "NOUN", "V": "VERB", "J": "ADJ", "R": "ADV"}.get(tag[:1])
        if upos is None:
            return word
        lemmas = lemminflect.getAllLemmas(word.lower(), upos=upos).get(upos, ())
        return lemmas[0] if lemmas else word.lower()


def inflect(lemma: str, tag: str) -> str:
    """Put a WordNet lemma ('decrease', 'cut_down') in the form `tag` asks for ('decreased', 'cut_down')."""
    import lemminflect

    parts = lemma.split("_")
    head = 0 if tag.startswith("V") else len(parts) - 1  # verbs inflect their first word, nouns their last
    forms = lemminflect.getInflection(parts[head], tag=tag)
    if forms:
        parts[head] = forms[0]
    return "_".join(parts)
