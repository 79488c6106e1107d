"""The WordNet 3.0 reader of the local copy (contextual/wordnet_install.py makes the copy).

Imports nltk: import this module only where WordNet is used (DoFn.setup, tests).
"""

from __future__ import annotations

import os

from nltk.corpus.reader.wordnet import ADJ, ADJ_SAT, WordNetCorpusReader, WordNetError

from transforms.contextual.wordnet_install import prepare_wordnet


class WordNet30Reader(WordNetCorpusReader):
    """nltk's WordNetCorpusReader with its slow steps made cheap (same results; see load_wordnet)."""

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
        return WordNet30Reader(os.path.join(cache, "corpora", "wordnet"), None)
