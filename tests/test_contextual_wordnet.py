"""Offline WordNet: the local copy, the start-up error, no downloads, the WordNet tagger."""

from __future__ import annotations

import gzip
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from transforms.contextual import tagger as pos
from transforms.contextual import wordnet_install as wn
from transforms.contextual import wordnet_reader


def _fake_source(path, content: str = "x") -> str:
    os.makedirs(path, exist_ok=True)
    for name in wn.REQUIRED_FILES:
        with open(os.path.join(path, name), "w") as fp:
            fp.write(f"{name} {content}\n")
    return str(path)


def test_lexnames_are_45_lines_of_number_name_category():
    lines = wn.lexnames_text().splitlines()
    assert len(lines) == 45
    fields = [line.split("\t") for line in lines]
    assert all(len(f) == 3 for f in fields)
    assert [int(f[0]) for f in fields] == list(range(45))
    assert fields[3] == ["03", "noun.Tops", "1"] and fields[29] == ["29", "verb.body", "2"]
    assert fields[44] == ["44", "adj.ppl", "3"] and fields[2] == ["02", "adv.all", "4"]


def test_lexnames_match_the_installed_man_page():
    page = "/usr/share/man/man5/lexnames.5WN.gz"
    if not os.path.exists(page):
        pytest.skip("lexnames(5WN) man page not installed")
    with gzip.open(page, "rt") as fp:
        names = [line.split("\t")[1].strip() for line in fp if line[:2].isdigit() and line[2:3] == "\t"]
    assert names == wn.LEXNAMES


def test_install_copy_is_idempotent_and_process_safe(tmp_path):
    source = _fake_source(tmp_path / "src")
    cache = str(tmp_path / "cache")
    with ProcessPoolExecutor(max_workers=4) as pool:
        targets = list(pool.map(wn.install_wordnet_copy, [source] * 4, [cache] * 4))
    target = os.path.join(cache, "corpora", "wordnet")
    assert targets == [target] * 4
    assert sorted(os.listdir(os.path.join(cache, "corpora"))) == ["wordnet"]  # no temp folders left behind
    for name in wn.REQUIRED_FILES:
        with open(os.path.join(target, name)) as fp:
            assert fp.read() == f"{name} x\n"
    with open(os.path.join(target, "lexnames")) as fp:
        assert fp.read() == wn.lexnames_text()
    stamp = os.stat(os.path.join(target, "index.noun")).st_mtime_ns
    assert wn.install_wordnet_copy(source, cache) == target
    assert os.stat(os.path.join(target, "index.noun")).st_mtime_ns == stamp  # second call copies nothing


def test_a_changed_source_replaces_the_stale_copy(tmp_path):
    cache = str(tmp_path / "cache")
    target = wn.install_wordnet_copy(_fake_source(tmp_path / "a", "old"), cache)
    wn.install_wordnet_copy(_fake_source(tmp_path / "b", "new content"), cache)
    with open(os.path.join(target, "data.verb")) as fp:
        assert fp.read() == "data.verb new content\n"
    assert sorted(os.listdir(os.path.join(cache, "corpora"))) == ["wordnet"]


def test_missing_wordnet_fails_at_start_naming_the_apt_packages(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(wn.WORDNET_DIR_ENV, str(empty))
    with pytest.raises(wn.WordNetMissingError) as info:
        wn.prepare_wordnet(str(tmp_path / "cache"))
    message = str(info.value)
    assert "apt-get install -y wordnet-base wordnet-sense-index" in message and "make run" in message
    assert "index.noun" in message and str(empty) in message
    assert not os.path.exists(tmp_path / "cache" / "corpora" / "wordnet")


def test_missing_wordnet_fails_while_building_the_pipeline(tmp_path, monkeypatch):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from schemas.build_config import ContextualConfig, EmbedConfig
    from transforms.contextual.beam import GenerateContextualNegatives

    monkeypatch.setenv(wn.WORDNET_DIR_ENV, str(tmp_path / "nowhere"))
    pipeline = TestPipeline()
    pairs = pipeline | "Pairs" >> beam.Create([])
    corpus = pipeline | "Corpus" >> beam.Create([])
    with pytest.raises(wn.WordNetMissingError, match="wordnet-sense-index"):
        _ = {"pairs": pairs, "corpus": corpus} | GenerateContextualNegatives(
            ContextualConfig(per_pair=1), EmbedConfig(), 13
        )


def test_nltk_download_raises_inside_negforge(monkeypatch):
    import nlpaug.model.word_dict as nmw
    import nltk

    wn.disable_nltk_download()
    with pytest.raises(wn.NltkDownloadDisabledError, match="never downloads"):
        nltk.download("averaged_perceptron_tagger")

    def no_tagger(tokens):
        raise LookupError("Resource averaged_perceptron_tagger not found")

    monkeypatch.setattr(nltk, "pos_tag", no_tagger)
    with pytest.raises(wn.NltkDownloadDisabledError):  # nlpaug's own fallback would have gone to the network
        nmw.WordNet.pos_tag(["cells"])


def test_real_wordnet_loads_offline_and_tags_words():
    import nltk

    cache = wn.prepare_wordnet()
    assert cache == wn.prepare_wordnet()  # idempotent
    assert nltk.data.find("corpora/wordnet/lexnames").path.startswith(cache)  # nltk itself finds the copy
    reader = wordnet_reader.load_wordnet()
    assert reader.get_version() == "3.0" and reader.map30 is None
    assert [s.name() for s in reader.synsets("increase", "v")][:1] == ["increase.v.01"]
    tagger = pos.WordNetTagger(reader)
    tags = dict(tagger.tag("The drug increased survival of cells ; levels were higher in 12 patients".split()))
    assert tags["increased"] == "VBD" and tags["cells"] == "NNS" and tags["higher"] == "JJR"
    assert tags["The"] == "DT" and tags["12"] == "CD" and tags[";"] == ";" and tags["drug"] == "NN"
    assert pos.inflect("decrease", "VBD") == "decreased" and pos.inflect("low", "JJR") == "lower"


def test_a_wordnet_that_is_not_3_0_is_refused(tmp_path, monkeypatch):
    source = _fake_source(tmp_path / "src")
    with open(os.path.join(source, "data.adj"), "w") as fp:
        fp.write("  1 This software and database is being provided ... WordNet 2.1 Copyright 2005\n")
    monkeypatch.setenv(wn.WORDNET_DIR_ENV, source)
    with pytest.raises(wn.WordNetMissingError, match="expected WordNet 3.0 .* found '2.1'"):
        wn.prepare_wordnet(str(tmp_path / "cache"))


@pytest.mark.slow
def test_fast_reader_loads_exactly_what_nltk_loads():
    import warnings

    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    fast = wordnet_reader.load_wordnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = WordNetCorpusReader(os.path.join(wn.prepare_wordnet(), "corpora", "wordnet"), None)
    assert fast.satellite_offsets == reference.satellite_offsets and len(fast.satellite_offsets) > 10_000
    assert {k: dict(v) for k, v in fast._lemma_pos_offset_map.items()} == {
        k: dict(v) for k, v in reference._lemma_pos_offset_map.items()
    }
    assert fast._exception_map == reference._exception_map and fast._lexnames == reference._lexnames


def test_fast_lemma_counts_equal_nltks():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    reader = wordnet_reader.load_wordnet()
    lemmas = [
        lemma
        for word in ("increase", "cell", "high", "risk", "run")
        for s in reader.synsets(word)
        for lemma in s.lemmas()
    ]
    expected = [WordNetCorpusReader.lemma_count(reader, lemma) for lemma in lemmas]  # upstream's disk search
    assert [lemma.count() for lemma in lemmas] == expected and sum(expected) > 1000
