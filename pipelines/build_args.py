"""Flags of `negforge build` -> one frozen BuildConfig.

Precedence: command-line flag > --config FILE.toml > --preset > built-in default. Each flag is declared once,
on the config field it sets (schemas/build_config.py, `flag` metadata); the parser is generated from those
fields. Flags negforge does not own are returned untouched for Beam (pipelines/options.py refuses the ones
Beam does not know either).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib

from schemas.build_config import (
    FLAG,
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

TOP = "build"  # dest prefix of flags that set a top-level BuildConfig field
GROUPS = {TOP: "inputs", "ingest": "inputs", "embed": "embedding", "index": "index", "mining": "mining",
          "contextual": "mining"}


def _flag_fields():
    """(section, field) for every config field that declares a flag; section TOP for BuildConfig's own."""
    for section, cls in (*SECTIONS.items(), (TOP, BuildConfig)):
        for f in dataclasses.fields(cls):
            if FLAG in f.metadata:
                yield section, f


def build_parser() -> argparse.ArgumentParser:
    """The parser of `negforge build`, generated from the config fields' flag metadata (schemas/build_config.py)."""
    p = argparse.ArgumentParser(
        prog="negforge build", allow_abbrev=False, argument_default=argparse.SUPPRESS,
        description="Mine tiered negatives into RUN_DIR. Flags not listed here go to Beam (e.g. --runner).",
    )
    groups = {title: p.add_argument_group(title) for title in dict.fromkeys(GROUPS.values())}
    groups["inputs"].add_argument("--config", metavar="FILE.toml", default=None)
    groups["inputs"].add_argument("--preset", choices=sorted(BUILD_PRESETS), default="baseline")
    exclusive: dict = {}
    for section, f in _flag_fields():
        spec = f.metadata[FLAG]
        group = groups[GROUPS[section]]
        if "group" in spec:
            if spec["group"] not in exclusive:
                exclusive[spec["group"]] = group.add_mutually_exclusive_group()
            group = exclusive[spec["group"]]
        required = {"required": True} if section == TOP and f.default is dataclasses.MISSING else {}
        group.add_argument(spec["name"], dest=f"{section}__{f.name}", **spec["options"], **required)
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
        section, _, name = dest.partition("__")
        if not name:
            continue  # --config, --preset
        if section == TOP:
            top[name] = value
        else:
            layered.setdefault(section, {})[name] = value
    top.setdefault("seed", layered.pop("seed", 13))
    layered.pop("seed", None)
    automatic = {"num_shards": "auto_shards", "index_factory": "auto_factory", "nprobe": "auto_nprobe"}
    for name, auto in automatic.items():  # no flag, file or preset: sized from the corpus (transforms/sizing.py)
        if name not in layered.get("index", {}):
            layered.setdefault("index", {})[auto] = True
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
