"""Tier weights over training: the fixed schedule and the adaptive shift."""

from __future__ import annotations

import pytest

from schemas.build_config import ConfigError
from schemas.train_config import TrainConfig
from trainer.curriculum import TierCurriculum, fixed_schedule_weights, shift_weight

TIERS = ("random", "semi_hard", "hard", "contextual")
WEIGHTS = (0.2, 0.3, 0.35, 0.15)


def _config(**overrides) -> TrainConfig:
    values = {"tiers": TIERS, "tier_weights": WEIGHTS, "curriculum": "fixed"} | overrides
    return TrainConfig(**values)


def test_fixed_schedule_starts_easy_and_reaches_the_targets():
    curriculum = TierCurriculum(_config(curriculum_start=0.25, curriculum_ramp=0.5))
    start = curriculum.weights(0.0)
    assert start["hard"] == 0 and start["contextual"] == 0
    assert start["random"] == pytest.approx(0.4) and start["semi_hard"] == pytest.approx(0.6)
    assert curriculum.weights(0.25) == start  # harder tiers enter only after curriculum_start
    hard = [curriculum.weights(x / 20)["hard"] for x in range(21)]
    assert all(a <= b + 1e-12 for a, b in zip(hard, hard[1:]))  # ramps up monotonically
    assert 0 < curriculum.weights(0.5)["hard"] < 0.35
    for progress in (0.75, 0.9, 1.0):
        assert curriculum.weights(progress) == pytest.approx(dict(zip(TIERS, WEIGHTS)))
    for progress in (0.0, 0.3, 0.6, 1.0):
        assert sum(curriculum.weights(progress).values()) == pytest.approx(1.0)


def test_no_curriculum_uses_target_weights_normalised():
    curriculum = TierCurriculum(TrainConfig(tiers=("hard", "random"), tier_weights=(3.0, 1.0)))
    assert curriculum.weights(0.0) == curriculum.weights(1.0) == {"hard": 0.75, "random": 0.25}
    assert TierCurriculum(TrainConfig(tiers=(), tier_weights=(), file_negatives=0)).weights(0.5) == {}


def test_adaptive_shifts_weight_to_the_next_harder_tier_when_margins_are_large():
    config = _config(curriculum="adaptive", adaptive_threshold=0.3, adaptive_step=0.1, adaptive_every=2,
                     adaptive_ema=0.5, adaptive_floor=0.1)
    curriculum = TierCurriculum(config)
    assert curriculum.weights(0.0) == pytest.approx({"random": 0.4, "semi_hard": 0.6, "hard": 0.0, "contextual": 0.0})
    curriculum.observe({"random": 0.2, "semi_hard": 0.1})
    assert curriculum.on_optimizer_step(2) is None  # nothing is too easy yet
    curriculum.observe({"random": 0.8, "semi_hard": 0.1})  # EMA random: 0.5 > 0.3
    assert curriculum.ema["random"] == pytest.approx(0.5)
    assert curriculum.on_optimizer_step(3) is None  # only every adaptive_every steps
    assert curriculum.on_optimizer_step(4) == ("random", "semi_hard")
    assert curriculum.weights(0.5)["random"] == pytest.approx(0.3)
    assert curriculum.weights(0.5)["semi_hard"] == pytest.approx(0.7)
    for step in (6, 8, 10):  # random drains to the floor, then stops giving
        curriculum.on_optimizer_step(step)
    assert curriculum.weights(0.5)["random"] == pytest.approx(0.1)
    assert curriculum.on_optimizer_step(12) is None
    curriculum.observe({"semi_hard": 2.0})  # EMA semi_hard: 0.5 * 0.1 + 0.5 * 2.0 > 0.3
    assert curriculum.on_optimizer_step(14) == ("semi_hard", "hard")
    weights = curriculum.weights(0.9)
    assert weights["hard"] == pytest.approx(0.1) and sum(weights.values()) == pytest.approx(1.0)
    assert [m["to"] for m in curriculum.moves] == ["semi_hard"] * 3 + ["hard"]


def test_shift_weight_moves_from_the_easiest_qualifying_tier_only():
    weights = {"random": 0.5, "semi_hard": 0.5, "hard": 0.0}
    new, move = shift_weight(weights, {"random": 0.9, "semi_hard": 0.9}, threshold=0.3, step=0.2, floor=0.0)
    assert move == ("random", "semi_hard") and new == pytest.approx({"random": 0.3, "semi_hard": 0.7, "hard": 0.0})
    same, move = shift_weight(weights, {"random": 0.1}, threshold=0.3, step=0.2, floor=0.0)
    assert move is None and same == weights


def test_fixed_schedule_function_is_pure():
    target = {"random": 0.5, "hard": 0.5}
    assert fixed_schedule_weights(target, 0.0, 0.5, 0.5) == {"random": 1.0, "hard": 0.0}
    assert fixed_schedule_weights(target, 0.75, 0.5, 0.5) == pytest.approx({"random": 0.5 / 0.75, "hard": 0.25 / 0.75})


def test_curriculum_needs_an_easy_tier():
    with pytest.raises(ConfigError, match="random or semi_hard"):
        TrainConfig(tiers=("hard",), tier_weights=(1.0,), curriculum="fixed")
