"""Flags -> BuildConfig: precedence, validation before any job, Beam flag checking."""

from __future__ import annotations

import pytest

from pipelines.build_args import resolve_build_config
from pipelines.options import UnknownFlagError, make_pipeline_options
from schemas.build_config import ConfigError, IndexConfig, MiningConfig

BASE = ["--beir", "data/scifact-sample", "--split", "train", "--output", "runs/x"]


def test_precedence_flag_over_toml_over_preset_over_default(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("seed = 7\n[mining]\nhard = 4\nsemi_hard = 1\n[contextual]\nper_pair = 3\n")
    config, beam_args = resolve_build_config(BASE + ["--preset", "hard", "--config", str(toml), "--semi-hard", "2"])
    assert config.mining.hard == 4  # toml beats preset (hard preset keeps 3)
    assert config.mining.semi_hard == 2  # flag beats toml
    assert config.mining.random == 0  # preset beats default (1)
    assert config.mining.range_max == MiningConfig().range_max  # default
    assert config.contextual.per_pair == 3
    assert config.seed == 7 and config.preset == "hard"
    assert beam_args == []


def test_beam_flags_pass_through_and_optional_floats():
    config, beam_args = resolve_build_config(
        BASE + ["--relative-margin", "none", "--semi-hard-band", "0.05,0.25", "--runner", "DirectRunner"]
    )
    assert config.mining.relative_margin is None
    assert config.mining.semi_hard_band == (0.05, 0.25)
    assert beam_args == ["--runner", "DirectRunner"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hard", "5", "--range-max", "3"], "lower --hard or raise --range-max"),
        (["--range-min", "5", "--range-max", "5"], "range_min must be < range_max"),
        (["--random", "-1"], "--random must be >= 0"),
        (["--semi-hard-band", "0.3,0.1"], "0 <= LOW < HIGH"),
        (["--num-shards", "0"], "num_shards must be >= 1"),
        (["--contextual-kinds", "antonym,telepathy"], "unknown contextual kinds ['telepathy']"),
    ],
)
def test_bad_config_fails_with_value_and_fix(flags, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_build_config(BASE + flags)


def test_unknown_toml_key_is_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[mining]\nhrad = 4\n")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_build_config(BASE + ["--config", str(toml)])


def test_input_choice_is_exclusive():
    with pytest.raises(ConfigError, match="exactly one input"):
        resolve_build_config(["--output", "r"])
    with pytest.raises(ConfigError, match="needs --split"):
        resolve_build_config(["--beir", "d", "--output", "r"])


def test_mistyped_flag_is_an_error_not_a_silent_drop():
    _, beam_args = resolve_build_config(BASE + ["--hadr", "3"])
    with pytest.raises(UnknownFlagError, match="--hadr"):
        make_pipeline_options(beam_args)
    assert make_pipeline_options(["--direct_num_workers", "2"]).get_all_options()["direct_num_workers"] == 2


def test_overwrite_and_resume_exclude_each_other():
    with pytest.raises(SystemExit):
        resolve_build_config(BASE + ["--overwrite", "--resume"])


def test_index_config_exactness():
    assert IndexConfig().is_exact and not IndexConfig(index_factory="IVF64,Flat").is_exact
