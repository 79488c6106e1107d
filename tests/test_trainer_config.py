"""TrainConfig validation, presets and the flag > TOML > preset > default precedence."""

from __future__ import annotations

import pytest

from pipelines.train import main_train
from schemas.build_config import ConfigError
from schemas.train_config import TrainConfig
from trainer.presets import PRESETS, parse_temperature, parse_tiers, read_train_toml, resolve_train_config


def test_defaults_match_sentence_transformers_recipe():
    config = resolve_train_config()
    assert (config.temperature, config.tiers, config.file_negatives, config.memory_bank) == (0.05, ("hard",), 3, 0)
    assert (config.epochs, config.batch_size, config.lr, config.preset) == (3, 32, 2e-5, "hard")  # best measured
    assert config.tiers == ("hard",) and config.file_negatives == 3 and config.memory_bank == 0
    assert resolve_train_config(preset="none").epochs == 1  # TrainConfig's bare defaults


def test_precedence_flag_over_toml_over_preset_over_default(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('[train]\npreset = "full"\nlr = 1e-3\nbatch-size = 8\nmemory_bank = 64\n')
    config = resolve_train_config({"batch_size": 16, "seed": 5}, read_train_toml(str(path)))
    assert config.preset == "full"  # from the TOML file
    assert config.batch_size == 16 and config.seed == 5  # flags
    assert config.lr == 1e-3 and config.memory_bank == 64  # TOML over the preset's 512
    assert config.tiers == PRESETS["full"]["tiers"] and config.epochs == 3  # preset
    assert config.warmup_ratio == 0.1  # default
    flagged = resolve_train_config({"preset": "hard", "tiers": "hard:2,random:1"}, read_train_toml(str(path)))
    assert flagged.preset == "hard" and flagged.memory_bank == 64  # preset flag beats TOML preset; TOML beats preset
    assert flagged.tiers == ("hard", "random") and flagged.tier_weights == (2.0, 1.0)


def test_presets_resolve_to_valid_configs():
    baseline = resolve_train_config(preset="baseline")
    assert baseline.file_negatives == 0 and baseline.tiers == () and baseline.memory_bank == 512
    assert resolve_train_config(preset="hard").tiers == ("hard",)
    full = resolve_train_config(preset="full")
    assert set(full.tiers) == {"random", "semi_hard", "hard"} and full.curriculum == "none"  # no contextual


def test_parsers():
    assert parse_tiers("hard,semi_hard") == {"tiers": ("hard", "semi_hard"), "tier_weights": (1.0, 1.0)}
    assert parse_tiers({"hard": 0.7, "random": 0.3}) == {"tiers": ("hard", "random"), "tier_weights": (0.7, 0.3)}
    assert parse_tiers("none") == {"tiers": (), "tier_weights": ()}
    assert parse_temperature("0.1:0.05:cosine") == {"temperature": 0.1, "temperature_end": 0.05,
                                                    "temperature_schedule": "cosine"}
    assert parse_temperature(0.07)["temperature_schedule"] == "fixed"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"tiers": "hardest"}, "unknown tier"),
        ({"tiers": "hard:0"}, "must be > 0"),
        ({"temperature": "0.1:0.05:zigzag"}, "temperature_schedule"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"file_negatives": 2, "tiers": "none"}, "needs --tiers"),
        ({"dev_fraction": 1.5}, "dev-fraction"),
        ({"learning_rate": 1e-5}, "unknown training setting 'learning_rate'"),
        ({"preset": "extreme"}, "unknown preset 'extreme'"),
        ({"loss_directions": "doc_to_query"}, "start with query_to_doc"),
        ({"loss_directions": "query_to_doc,doc_to_doc"}, "loss-directions"),
        ({"loss_directions": "query_to_doc,query_to_query", "loss_partition": "per_direction"},
         "use --loss-partition joint"),
        ({"loss_partition": "split"}, "loss-partition must be one of"),
    ],
)
def test_bad_settings_name_the_value(settings, message):
    with pytest.raises(ConfigError, match=message):
        resolve_train_config(settings)


def test_loss_directions_from_flags_and_toml(tmp_path):
    flagged = resolve_train_config({"loss_directions": "query_to_doc, doc_to_query",
                                    "loss_partition": "per_direction"})
    assert flagged.loss_directions == ("query_to_doc", "doc_to_query") and flagged.loss_partition == "per_direction"
    path = tmp_path / "train.toml"
    path.write_text('[train]\nloss-directions = ["query_to_doc", "query_to_query"]\n')
    assert resolve_train_config({}, read_train_toml(str(path))).loss_directions == ("query_to_doc", "query_to_query")
    assert resolve_train_config().loss_directions == ("query_to_doc",)  # sentence-transformers' MNRL by default


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().lr = 1.0  # type: ignore[misc]


def test_cli_refuses_unknown_flags_and_bad_values(tmp_path, capsys):
    assert main_train([str(tmp_path), "--output", str(tmp_path / "m"), "--learning-rate", "1"]) == 2
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err
    assert main_train([str(tmp_path), "--output", str(tmp_path / "m"), "--curriculum", "fixed"]) == 2
    assert "random or semi_hard" in capsys.readouterr().err
    assert main_train([str(tmp_path), "--output", str(tmp_path / "m"), "--config", str(tmp_path / "no.toml")]) == 2
    assert "no.toml not found" in capsys.readouterr().err
    assert main_train([str(tmp_path), "--output", str(tmp_path / "m"), "--loss-directions", "doc_to_query"]) == 2
    assert "start with query_to_doc" in capsys.readouterr().err
