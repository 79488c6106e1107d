"""Offline WordNet 3.0 for nltk and nlpaug: the local copy, and no downloads.

nltk 3.10 refuses a reader rooted in /usr/share/wordnet (or a symlink into it), and its reader also needs
a `lexnames` file Debian does not ship, so `prepare_wordnet()` copies the Debian files into
<cache>/corpora/wordnet/ with a generated `lexnames` and puts <cache> on nltk.data.path (see
docs/WORDNET.md). nlpaug tags words with `nltk.pos_tag`, whose tagger model nobody ships offline,
and downloads it on failure; `disable_nltk_download()` turns that into an error and `WordNetTagger`
(contextual/tagger.py) replaces the tagger with a lookup in WordNet itself; contextual/wordnet_reader.py
reads the copy.

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


def _refuse_download(*args, **kwargs):
    what = args[0] if args else kwargs.get("info_or_id")
    raise NltkDownloadDisabledError(
        f"nltk.download({what!r}) called inside negforge, which never downloads; WordNet comes from the OS: "
        f"{INSTALL_HINT}. Taggers are replaced by transforms.contextual.tagger.WordNetTagger."
    )


def disable_nltk_download() -> None:
    """Make nltk.download (and nltk.downloader.download) raise NltkDownloadDisabledError in this process."""
    import nltk
    import nltk.downloader

    nltk.download = _refuse_download  # idempotent; nlpaug looks nltk.download up at call time
    nltk.downloader.download = _refuse_download
