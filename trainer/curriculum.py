"""Tier mixing weights over training: fixed targets, a fixed curriculum, or an adaptive one.

- none:     the target weights throughout.
- fixed:    easy tiers (random, semi_hard) at their target weights from the start; each harder tier
            (hard, contextual, ...) enters at epoch fraction `curriculum_start` and ramps linearly to its
            target weight over `curriculum_ramp` (weights renormalised at every step).
- adaptive: start from the easy tiers only; keep an EMA of the mean margin s_pos - s_neg per tier; every
            `adaptive_every` optimizer steps, the easiest tier whose EMA margin exceeds `adaptive_threshold`
            (its negatives have become easy) hands `adaptive_step` of weight to the next harder configured
            tier, never dropping below `adaptive_floor` (mix in easy negatives: sentence-transformers' advice).
Pure Python: the loop feeds margins in and reads weights out; nothing here touches torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.train_config import EASY_TIERS, HARDNESS_ORDER, TrainConfig


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"tier weights must have a positive sum, got {dict(weights)}")
    return {t: w / total for t, w in weights.items()}


def by_hardness(tiers) -> list[str]:
    """Tiers ordered easy -> hard (the direction a curriculum shifts weight)."""
    return sorted(tiers, key=HARDNESS_ORDER.index)


def start_weights(target: Mapping[str, float]) -> dict[str, float]:
    """Only the easy tiers, in their target proportions; harder tiers at 0."""
    return normalise({t: (w if t in EASY_TIERS else 0.0) for t, w in target.items()})


def fixed_schedule_weights(
    target: Mapping[str, float], progress: float, start: float, ramp: float
) -> dict[str, float]:
    """Weights at epoch fraction `progress` in [0, 1] (see the module docstring)."""
    share = min(max((progress - start) / ramp, 0.0), 1.0)
    return normalise({t: (w if t in EASY_TIERS else w * share) for t, w in target.items()})


def shift_weight(
    weights: Mapping[str, float], ema: Mapping[str, float], threshold: float, step: float, floor: float
) -> tuple[dict[str, float], tuple[str, str] | None]:
    """Move `step` of weight from the easiest too-easy tier to the next harder one; returns (weights, move)."""
    order = by_hardness(weights)
    new = dict(weights)
    for easier, harder in zip(order, order[1:]):
        margin = ema.get(easier)
        movable = min(step, new[easier] - floor)
        if margin is not None and margin > threshold and movable > 1e-9:
            new[easier] -= movable
            new[harder] += movable
            return new, (easier, harder)
    return new, None


class TierCurriculum:
    """Current tier weights for one training run; state = weights + per-tier EMA margins."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.target = config.target_weights
        self.mode = config.curriculum if self.target else "none"
        self.ema: dict[str, float] = {}
        self._adaptive = start_weights(self.target) if self.mode == "adaptive" else {}
        self.moves: list[dict] = []

    def weights(self, progress: float) -> dict[str, float]:
        """Tier weights to draw file negatives with at epoch fraction `progress`."""
        c = self.config
        if self.mode == "fixed":
            return fixed_schedule_weights(self.target, progress, c.curriculum_start, c.curriculum_ramp)
        if self.mode == "adaptive":
            return dict(self._adaptive)
        return dict(self.target)

    def observe(self, margins: Mapping[str, float]) -> None:
        """Update the per-tier EMA of mean margins (s_pos - s_neg) with one batch's values."""
        decay = self.config.adaptive_ema
        for tier, margin in margins.items():
            previous = self.ema.get(tier)
            self.ema[tier] = margin if previous is None else decay * previous + (1.0 - decay) * margin

    def on_optimizer_step(self, step: int) -> tuple[str, str] | None:
        """Adaptive mode: maybe shift weight after optimizer step `step` (1-based); returns the move."""
        c = self.config
        if self.mode != "adaptive" or step % c.adaptive_every:
            return None
        self._adaptive, move = shift_weight(
            self._adaptive, self.ema, c.adaptive_threshold, c.adaptive_step, c.adaptive_floor
        )
        if move is not None:
            self.moves.append({"step": step, "from": move[0], "to": move[1]})
        return move
