"""Offline WordNet 3.0 for nltk and nlpaug: local copy, no downloads, and a part-of-speech lookup.

nltk 3.10 refuses a reader rooted in /usr/share/wordnet (or a symlink into it), and its reader also needs
a `lexnames` file Debian does not ship, so `prepare_wordnet()` copies the Debian files into
<cache>/corpora/wordnet/ with a generated `lexnames` and puts <cache> on nltk.data.path (see
/work/shared/WORDNET.md). nlpaug tags words with `nltk.pos_tag`, whose tagger model nobody ships offline,
and downloads it on failure; `disable_nltk_download()` turns that into an error and `WordNetTagger`
replaces the tagger with a lookup in WordNet itself (the most frequent sense's part of speech, refined to a
Penn tag with lemminflect).

Call `prepare_wordnet()` and `disable_nltk_download()` once in the launcher (a missing WordNet then fails
before the job starts) and in every DoFn.setup() that uses WordNet (worker processes start bare).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile

logger = logging.getLogger(__name__)

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
WORDNET_DIR_ENV = "NEGFORGE_WORDNET_DIR"
NLTK_CACHE_ENV = "NEGFORGE_NLTK_DATA"
INSTALL_HINT = (
    "install it with `apt-get update && apt-get install -y wordnet-base wordnet-sense-index` (or run `make run`, "
    f"which installs it), or point ${WORDNET_DIR_ENV} at a WordNet 3.0 dict folder"
)
REQUIRED_FILES = tuple(
    [f"index.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    + [f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    + [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
    + ["index.sense", "cntlist.rev"]
)
_MARKER = ".negforge-source.json"

# WordNet 3.0's lexicographer files in number order (lexnames(5WN)); nltk wants "NN name category" lines.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissingError(RuntimeError):
    """WordNet 3.0 is not installed where negforge looks for it."""


class NltkDownloadDisabledError(RuntimeError):
    """Something inside negforge asked nltk to download data; negforge never uses the network."""


def lexnames_text() -> str:
    """The 45-line `lexnames` file nltk's WordNet reader expects (number, name, category)."""
    lines = [f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
    return "\n".join(lines) + "\n"


def default_cache_dir() -> str:
    return os.environ.get(NLTK_CACHE_ENV) or os.path.join(tempfile.gettempdir(), "negforge-nltk-data")


def _source_fingerprint(source: str) -> dict:
    files = sorted(n for n in os.listdir(source) if os.path.isfile(os.path.join(source, n)))
    return {"source": os.path.abspath(source), "files": {n: os.path.getsize(os.path.join(source, n)) for n in files}}


def _check_source(source: str) -> None:
    missing = [n for n in REQUIRED_FILES if not os.path.isfile(os.path.join(source, n))]
    if missing:
        raise WordNetMissingError(
            f"WordNet 3.0 not found in {source!r} (missing {', '.join(missing)}); {INSTALL_HINT}"
        )


def _read_marker(target: str) -> dict | None:
    try:
        with open(os.path.join(target, _MARKER), encoding="utf-8") as fp:
            return json.load(fp)
    except (OSError, ValueError):
        return None


def _install_copy(source: str, target: str, fingerprint: dict) -> None:
    """Copy into a private temp folder, then rename: a reader never sees a half-written copy."""
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".wordnet.tmp.", dir=parent)
    try:
        for name in fingerprint["files"]:
            shutil.copyfile(os.path.join(source, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "lexnames"), "w", encoding="utf-8") as fp:
            fp.write(lexnames_text())
        with open(os.path.join(tmp, _MARKER), "w", encoding="utf-8") as fp:
            json.dump(fingerprint, fp)
        if os.path.isdir(target) and _read_marker(target) != fingerprint:  # stale copy of another source
            stale = tempfile.mkdtemp(prefix=".wordnet.stale.", dir=parent)
            try:
                os.rename(target, os.path.join(stale, "wordnet"))
            except OSError:  # another process moved it first
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another process installed it first; theirs is complete (marker written before rename)
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wordnet_source() -> str:
    """Where WordNet 3.0 is read from: $NEGFORGE_WORDNET_DIR, else /usr/share/wordnet."""
    return os.environ.get(WORDNET_DIR_ENV) or DEFAULT_WORDNET_DIR


def install_wordnet_copy(source: str, cache: str) -> str:
    """Copy WordNet files from `source` into <cache>/corpora/wordnet (plus `lexnames`) unless an identical
    copy is there; returns that folder. Safe when several processes call it at once (temp dir + rename)."""
    if not os.path.isdir(source):
        raise WordNetMissingError(f"WordNet 3.0 folder {source!r} does not exist; {INSTALL_HINT}")
    _check_source(source)
    target = os.path.join(os.path.abspath(cache), "corpora", "wordnet")
    fingerprint = _source_fingerprint(source)
    for _ in range(3):  # a concurrent stale-copy replacement can race with us; re-check after installing
        if _read_marker(target) == fingerprint:
            return target
        logger.info("copying WordNet from %s to %s", source, target)
        _install_copy(source, target, fingerprint)
    if _read_marker(target) != fingerprint:
        raise WordNetMissingError(f"could not install a WordNet copy into {target!r}; remove it and retry")
    return target


def prepare_wordnet(cache_dir: str | None = None) -> str:
    """Make WordNet 3.0 loadable by nltk offline; returns the nltk data folder (<cache>).

    Source: $NEGFORGE_WORDNET_DIR or /usr/share/wordnet; cache: `cache_dir`, $NEGFORGE_NLTK_DATA or
    <tmp>/negforge-nltk-data. Idempotent and process-safe. Raises WordNetMissingError (naming the apt
    packages) if the source is missing or incomplete, or is not WordNet 3.0.
    """
    cache = os.path.abspath(cache_dir or default_cache_dir())
    target = install_wordnet_copy(wordnet_source(), cache)
    version = wordnet_version(target)
    if version != "3.0":
        raise WordNetMissingError(f"expected WordNet 3.0 in {wordnet_source()!r}, found {version!r}; {INSTALL_HINT}")
    import nltk  # after the checks: a missing WordNet fails fast, before nltk's slow import

    if cache not in nltk.data.path:
        nltk.data.path.insert(0, cache)
    return cache


def wordnet_version(folder: str) -> str | None:
    """The version in data.adj's licence header, read as nltk's WordNetCorpusReader.get_version() does."""
    with open(os.path.join(folder, "data.adj"), encoding="utf-8", errors="replace") as fp:
        for _, line in zip(range(60), fp):
            match = re.search(r"Word[nN]et (\d+\+?|\d+\.\d+) Copyright", line)
            if match:
                return match.group(1)
    return None


def load_wordnet(cache_dir: str | None = None):
    """prepare_wordnet(), then an English WordNet 3.0 reader of the local copy (once per worker).

    The reader is nltk's WordNetCorpusReader with slow steps made cheap (same results):
    nltk 3.10 compares its version ("3.0") with the corpus name ("wordnet") and so always builds a 3.0 -> 3.0
    sense map for the multilingual functions, reading index.sense twice - skipped, as only the Open
    Multilingual Wordnet uses it; and it reads index.* and data.adj through a pure-Python stream reader -
    read here with plain files, the same parsing as nltk's; lemma counts (sense frequencies, used by the
    tagger) come from cntlist.rev read once into a dict instead of a binary search on disk per call.
    """
    import warnings

    cache = prepare_wordnet(cache_dir)
    with warnings.catch_warnings():  # "multilingual functions are not available": intended
        warnings.simplefilter("ignore")
        return _reader_class()(os.path.join(cache, "corpora", "wordnet"), None)


def _reader_class():
    from nltk.corpus.reader.wordnet import ADJ, ADJ_SAT, WordNetCorpusReader, WordNetError

    class WordNet30Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None

        def _lines(self, name: str):
            with open(os.path.join(self.root.path, name), encoding="utf-8") as fp:
                yield from fp

        def lemma_count(self, lemma):  # upstream binary-searches cntlist.rev on disk for every call
            if lemma._lang != "eng":
                return 0
            counts = getattr(self, "_negforge_counts", None)
            if counts is None:
                counts = {}
                for line in self._lines("cntlist.rev"):  # "sense_key sense_number tag_count"
                    fields = line.split()
                    if fields:
                        counts.setdefault(fields[0], int(fields[-1]))
                self._negforge_counts = counts
            return counts.get(lemma._key, 0)

        def _scan_satellites(self):
            self.satellite_offsets = {
                int(fields[0])
                for fields in (line.split() for line in self._lines("data.adj") if not line.startswith(" "))
                if len(fields) >= 3 and fields[2] == "s"
            }

        def _load_lemma_pos_offset_map(self):
            for suffix in self._FILEMAP.values():
                for number, line in enumerate(self._lines(f"index.{suffix}"), start=1):
                    if line.startswith(" "):
                        continue
                    fields = line.split()
                    try:  # lemma pos n_synsets n_pointers pointers... n_senses n_ranked offsets...
                        lemma, pos, n_synsets, n_pointers = fields[0], fields[1], int(fields[2]), int(fields[3])
                        rest = fields[4 + n_pointers :]
                        if n_synsets <= 0 or int(rest[0]) != n_synsets or len(rest) < 2 + n_synsets:
                            raise ValueError(f"{n_synsets} synsets, senses field {rest[:1]}")
                        offsets = [int(offset) for offset in rest[2 : 2 + n_synsets]]
                    except (IndexError, ValueError) as error:
                        raise WordNetError(f"file index.{suffix}, line {number}: {error}") from error
                    self._lemma_pos_offset_map[lemma][pos] = offsets
                    if pos == ADJ:
                        satellites = [offset for offset in offsets if offset in self.satellite_offsets]
                        self._lemma_pos_offset_map[lemma][ADJ_SAT] = satellites

    return WordNet30Reader


def _refuse_download(*args, **kwargs):
    what = args[0] if args else kwargs.get("info_or_id")
    raise NltkDownloadDisabledError(
        f"nltk.download({what!r}) called inside negforge, which never downloads; WordNet comes from the OS: "
        f"{INSTALL_HINT}. Taggers are replaced by transforms.wordnet.WordNetTagger."
    )


def disable_nltk_download() -> None:
    """Make nltk.download (and nltk.downloader.download) raise NltkDownloadDisabledError in this process."""
    import nltk
    import nltk.downloader

    nltk.download = _refuse_download  # idempotent; nlpaug looks nltk.download up at call time
    nltk.downloader.download = _refuse_download


# Part-of-speech lookup -------------------------------------------------------------------------------------

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
