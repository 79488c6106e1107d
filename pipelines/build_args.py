"""Flags of `negforge build` -> one frozen BuildConfig.

Precedence: command-line flag > --config FILE.toml > --preset > built-in default. Flags negforge does not
own are returned untouched for Beam (pipelines/options.py refuses the ones Beam does not know either).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib

from schemas.build_config import (
    EMBED_BACKENDS,
    EMBED_DEVICES,
    SAMPLING_STRATEGIES,
    BuildConfig,
    ConfigError,
    ContextualConfig,
    EmbedConfig,
    IndexConfig,
    IngestConfig,
    MiningConfig,
)

SECTIONS = {
    "ingest": IngestConfig,
    "embed": EmbedConfig,
    "index": IndexConfig,
    "mining": MiningConfig,
    "contextual": ContextualConfig,
}

# Presets are sampling rules; `baseline` is the built-in default. See README "Presets".
BUILD_PRESETS: dict[str, dict[str, dict]] = {
    "baseline": {"mining": {"hard": 3, "semi_hard": 2, "random": 1}, "contextual": {"per_pair": 0}},
    "hard": {"mining": {"hard": 3, "semi_hard": 0, "random": 0}, "contextual": {"per_pair": 0}},
    "full": {"mining": {"hard": 3, "semi_hard": 2, "random": 1}, "contextual": {"per_pair": 2}},
}

# flag dest -> (section, field); section None means a top-level BuildConfig field.
FLAG_TARGETS = {
    "beir": ("ingest", "beir_dir"),
    "split": ("ingest", "split"),
    "pairs": ("ingest", "pairs_file"),
    "corpus": ("ingest", "corpus_file"),
    "strict": ("ingest", "strict"),
    "max_text_chars": ("ingest", "max_text_chars"),
    "model": ("embed", "model"),
    "embed_batch_size": ("embed", "batch_size"),
    "max_seq_length": ("embed", "max_seq_length"),
    "query_prompt": ("embed", "query_prompt"),
    "doc_prompt": ("embed", "doc_prompt"),
    "embed_backend": ("embed", "backend"),
    "device": ("embed", "device"),
    "embedding_cache": ("embed", "embedding_cache"),
    "num_shards": ("index", "num_shards"),
    "index_factory": ("index", "index_factory"),
    "nprobe": ("index", "nprobe"),
    "hard": ("mining", "hard"),
    "semi_hard": ("mining", "semi_hard"),
    "random": ("mining", "random"),
    "range_min": ("mining", "range_min"),
    "range_max": ("mining", "range_max"),
    "relative_margin": ("mining", "relative_margin"),
    "absolute_margin": ("mining", "absolute_margin"),
    "max_score": ("mining", "max_score"),
    "semi_hard_band": ("mining", "semi_hard_band"),
    "sampling": ("mining", "sampling"),
    "near_copy_threshold": ("mining", "near_copy_threshold"),
    "near_copy_guard": ("mining", "near_copy_guard"),
    "contextual": ("contextual", "per_pair"),
    "contextual_kinds": ("contextual", "kinds"),
    "seed": (None, "seed"),
    "overwrite": (None, "overwrite"),
    "resume": (None, "resume"),
    "output": (None, "output"),
}


def _optional_float(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    return float(text)


def _float_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}")
    return float(parts[0]), float(parts[1])


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="negforge build", allow_abbrev=False, argument_default=argparse.SUPPRESS,
        description="Mine tiered negatives into RUN_DIR. Flags not listed here go to Beam (e.g. --runner).",
    )
    g = p.add_argument_group("inputs")
    g.add_argument("--beir", metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    g.add_argument("--split", metavar="S")
    g.add_argument("--pairs", metavar="FILE", help="JSONL of {query|anchor, positive[, query_id, positive_id]}")
    g.add_argument("--corpus", metavar="FILE", help="extra corpus (BEIR corpus.jsonl layout) for --pairs")
    g.add_argument("--output", metavar="RUN_DIR", required=True)
    g.add_argument("--config", metavar="FILE.toml", default=None)
    g.add_argument("--preset", choices=sorted(BUILD_PRESETS), default="baseline")
    g.add_argument("--seed", type=int)
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true")
    mode.add_argument("--resume", action="store_true")
    g.add_argument("--strict", action="store_true", help="exit non-zero when any input row is dead-lettered")
    g.add_argument("--max-text-chars", type=int, metavar="N")
    e = p.add_argument_group("embedding")
    e.add_argument("--model", metavar="SPEC", help="'bundled' (default) or a sentence-transformers directory")
    e.add_argument("--embed-batch-size", type=int, metavar="N")
    e.add_argument("--max-seq-length", type=int, metavar="N")
    e.add_argument("--query-prompt", metavar="TEXT")
    e.add_argument("--doc-prompt", metavar="TEXT")
    e.add_argument("--embed-backend", choices=EMBED_BACKENDS, help="torch (default), onnx, onnx-int8 (fastest on CPU)")
    e.add_argument("--device", choices=EMBED_DEVICES, help="cpu (default), cuda, auto (cuda when torch sees one)")
    e.add_argument("--embedding-cache", metavar="DIR", help="reuse vectors across builds (local or gs://)")
    i = p.add_argument_group("index")
    i.add_argument("--num-shards", type=int, metavar="N")
    i.add_argument("--index-factory", metavar="STR", help="faiss factory string: Flat, IVF1024,Flat, IVF1024,PQ32")
    i.add_argument("--nprobe", type=int, metavar="N")
    m = p.add_argument_group("mining")
    for flag in ("--hard", "--semi-hard", "--random", "--contextual", "--range-min", "--range-max"):
        m.add_argument(flag, type=int, metavar="K" if flag != "--range-min" and flag != "--range-max" else "N")
    m.add_argument("--relative-margin", type=_optional_float, metavar="F", help="0.05 = NV-Retriever; 'none' off")
    m.add_argument("--absolute-margin", type=_optional_float, metavar="F")
    m.add_argument("--max-score", type=_optional_float, metavar="F")
    m.add_argument("--semi-hard-band", type=_float_pair, metavar="LOW,HIGH")
    m.add_argument("--sampling", choices=SAMPLING_STRATEGIES)
    m.add_argument("--near-copy-threshold", type=float, metavar="F")
    m.add_argument("--no-near-copy-guard", dest="near_copy_guard", action="store_false")
    m.add_argument("--contextual-kinds", type=_names, metavar="K1,K2")
    return p


def _read_toml(path: str) -> dict:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        try:
            return tomllib.loads(handle.read().decode("utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from err


def _merge(base: dict, layer: dict, origin: str) -> None:
    for key, value in layer.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{key}] must be a table, got {value!r}")
            allowed = {f.name for f in dataclasses.fields(SECTIONS[key])}
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ConfigError(f"{origin}: unknown key(s) {unknown} in [{key}]; allowed: {sorted(allowed)}")
            base.setdefault(key, {}).update(value)
        elif key in ("seed",):
            base[key] = value
        else:
            raise ConfigError(f"{origin}: unknown key {key!r}; allowed: seed and tables {sorted(SECTIONS)}")


def resolve_build_config(argv: list[str]) -> tuple[BuildConfig, list[str]]:
    """Parse negforge's flags; return the resolved config and the remaining (Beam) arguments."""
    args, beam_args = build_parser().parse_known_args(argv)
    flags = vars(args)
    layered: dict = {}
    _merge(layered, BUILD_PRESETS[flags["preset"]], f"preset {flags['preset']}")
    if flags.get("config"):
        _merge(layered, _read_toml(flags["config"]), flags["config"])
    top: dict = {"preset": flags["preset"]}
    for dest, value in flags.items():
        if dest not in FLAG_TARGETS:
            continue
        section, name = FLAG_TARGETS[dest]
        if section is None:
            top[name] = value
        else:
            layered.setdefault(section, {})[name] = value
    top.setdefault("seed", layered.pop("seed", 13))
    layered.pop("seed", None)
    sections = {name: _build_section(cls, layered.get(name, {})) for name, cls in SECTIONS.items()}
    return BuildConfig(**top, **sections), beam_args


def _build_section(cls, values: dict):
    values = dict(values)
    for name in ("semi_hard_band", "similarity_band", "kinds"):
        if name in values and isinstance(values[name], list):
            values[name] = tuple(values[name])
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"bad {cls.__name__} values {values}: {err}") from err
