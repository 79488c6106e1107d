"""Training presets and the merge flag > --config TOML > preset > built-in default into one TrainConfig.

Presets are sampling rules plus hyperparameters (everything else keeps TrainConfig's defaults:
batch 32, lr 2e-5, warmup 10 %, temperature 0.05 = scale 20). They follow what measured best on SciFact
(issue 16; bench/usefulness.py at 140e81b, 3 seeds per row): the hard tier alone beat every mix with
semi_hard, random or contextual negatives and every lever tried (deeper pool, refresh, temperature 0.03,
symmetric loss, memory bank + curriculum), and 3 epochs beat 1 (0.7201 vs 0.6831 nDCG@10 on all train pairs).
- hard:     the default when no preset is named: 3 file negatives per example from the hard tier, 3 epochs;
            no memory bank, no curriculum.
- baseline: in-batch negatives + a 512-entry memory bank; no file negatives; 1 epoch.
- full:     3 file negatives per example from every mined tier (hard 0.5, semi_hard 0.3, random 0.2),
            3 epochs. No contextual negatives by default: they have not paid for themselves yet (add them
            with --tiers ...,contextual:W); no memory bank or curriculum (both lowered nDCG@10 at 1 epoch).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from schemas.build_config import ConfigError
from schemas.train_config import TRAIN_FIELDS, TrainConfig

PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {"tiers": (), "tier_weights": (), "file_negatives": 0, "memory_bank": 512, "curriculum": "none",
                 "epochs": 1},
    "hard": {"tiers": ("hard",), "tier_weights": (1.0,), "file_negatives": 3, "memory_bank": 0, "curriculum": "none",
             "epochs": 3},
    "full": {
        "tiers": ("random", "semi_hard", "hard"),
        "tier_weights": (0.2, 0.3, 0.5),
        "file_negatives": 3,
        "memory_bank": 0,
        "curriculum": "none",
        "epochs": 3,
    },
}
DEFAULT_PRESET = "hard"  # the best measured recipe


def parse_tiers(value: str | list | dict) -> dict[str, Any]:
    """'hard,semi_hard' (equal weights) or 'hard:0.5,random:0.5', a list of names, or a {tier: weight} table.

    'none' or '' means no tiers. Returns {"tiers": (...), "tier_weights": (...)}.
    """
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        parts = value if isinstance(value, list) else [p for p in str(value).split(",") if p.strip()]
        if [str(p).strip() for p in parts] == ["none"]:
            parts = []
        items = []
        for part in parts:
            name, _, weight = str(part).strip().partition(":")
            items.append((name.strip(), weight or 1.0))
    try:
        weights = tuple(float(w) for _, w in items)
    except ValueError as error:
        raise ConfigError(f"tier weights must be numbers, got {value!r}; e.g. --tiers hard:0.5,random:0.5") from error
    return {"tiers": tuple(name for name, _ in items), "tier_weights": weights}


def parse_temperature(value: str | float) -> dict[str, Any]:
    """'0.05' (fixed) or 'T0:T1[:linear|cosine]' (annealed; linear by default)."""
    parts = str(value).split(":")
    try:
        numbers = [float(p) for p in parts[:2]]
    except ValueError as error:
        raise ConfigError(f"--temperature must be T or T0:T1[:linear|cosine], got {value!r}") from error
    if len(parts) == 1:
        return {"temperature": numbers[0], "temperature_end": None, "temperature_schedule": "fixed"}
    if len(parts) > 3:
        raise ConfigError(f"--temperature must be T or T0:T1[:linear|cosine], got {value!r}")
    schedule = parts[2] if len(parts) == 3 else "linear"
    return {"temperature": numbers[0], "temperature_end": numbers[1], "temperature_schedule": schedule}


def read_train_toml(path: str) -> dict[str, Any]:
    """The [train] table of a TOML file, or its top-level keys when it has no [train] table."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"--config {path} not found; give a TOML file with a [train] table") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config {path} is not valid TOML: {error}") from error
    table = document.get("train", document)
    return {k: v for k, v in table.items() if not isinstance(v, dict) or k == "tiers"}


def _normalised(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Hyphens to underscores, tiers / temperature strings expanded, unknown keys refused."""
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key == "tiers":
            out.update(parse_tiers(value))
        elif key == "temperature" and isinstance(value, str):
            out.update(parse_temperature(value))
        elif key == "loss_directions" and isinstance(value, str):
            out[key] = tuple(part.strip() for part in value.split(",") if part.strip())
        elif key in TRAIN_FIELDS:
            out[key] = tuple(value) if isinstance(value, list) else value
        else:
            raise ConfigError(f"unknown training setting {raw_key!r} in {origin}; known: {', '.join(TRAIN_FIELDS)}")
    return out


def resolve_train_config(
    flags: Mapping[str, Any] | None = None, toml_values: Mapping[str, Any] | None = None, preset: str | None = None
) -> TrainConfig:
    """flag > TOML > preset > default. `preset` (a flag) wins over a `preset` key in the TOML file; with no
    preset named anywhere, DEFAULT_PRESET applies (pass preset="none" for TrainConfig's bare defaults)."""
    from_toml = _normalised(toml_values or {}, "the --config file")
    from_flags = _normalised(flags or {}, "the flags")
    name = preset or from_flags.pop("preset", None) or from_toml.pop("preset", None) or DEFAULT_PRESET
    from_toml.pop("preset", None)
    name = None if name == "none" else name
    if name is not None and name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    merged: dict[str, Any] = dict(PRESETS[name]) if name else {}
    merged.update(from_toml)
    merged.update(from_flags)
    merged["preset"] = name
    return TrainConfig(**merged)
