"""Frozen, validated configuration of `negforge build`, one dataclass per stage.

Flags are parsed once (pipelines/cli.py) into these objects; DoFns receive them (never PipelineOptions).
Every validation error names the bad value, what is allowed and a hint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any pipeline starts."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class IngestConfig:
    """Where the inputs are and how strictly they are read."""

    beir_dir: str | None = None  # BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv
    split: str | None = None
    pairs_file: str | None = None  # JSONL of {"query"|"anchor", "positive", optional ids}
    corpus_file: str | None = None  # optional extra corpus (BEIR corpus.jsonl layout) for pair files
    max_text_chars: int = 20_000  # longer texts are truncated and noted in warnings/
    strict: bool = False  # any dead-letter row makes the build exit non-zero

    def __post_init__(self) -> None:
        has_beir = self.beir_dir is not None
        has_pairs = self.pairs_file is not None
        _require(
            has_beir != has_pairs,
            "give exactly one input: --beir DIR --split S, or --pairs FILE [--corpus FILE]",
        )
        _require(
            not has_beir or bool(self.split),
            f"--beir {self.beir_dir} needs --split (e.g. --split train: reads qrels/train.tsv)",
        )
        _require(not (has_beir and self.corpus_file), "--corpus goes with --pairs; a BEIR folder has its own corpus")
        _require(self.max_text_chars >= 1, f"max_text_chars must be >= 1, got {self.max_text_chars}")


@dataclass(frozen=True)
class EmbedConfig:
    """The embedding model and how it is run."""

    model: str = "bundled"  # 'bundled' or a sentence-transformers directory (local or gs://)
    batch_size: int = 64
    max_seq_length: int | None = None  # None: the model's own
    query_prompt: str = ""
    doc_prompt: str = ""
    torch_threads: int | None = None  # None: cores / workers

    def __post_init__(self) -> None:
        _require(bool(self.model), "model must be 'bundled' or a sentence-transformers directory")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(
            self.max_seq_length is None or self.max_seq_length >= 8,
            f"max_seq_length must be >= 8 tokens, got {self.max_seq_length}",
        )


@dataclass(frozen=True)
class IndexConfig:
    """The sharded faiss index. Always inner product on L2-normalised vectors."""

    num_shards: int = 4
    index_factory: str = "Flat"
    nprobe: int = 16
    train_sample: int = 100_000  # vectors sampled (seeded) to train IVF/PQ quantisers
    block_size: int = 4096  # rows per element when embeddings travel through Beam

    def __post_init__(self) -> None:
        _require(self.num_shards >= 1, f"num_shards must be >= 1, got {self.num_shards}; use 1 for one shard")
        _require(bool(self.index_factory.strip()), "index_factory must be a faiss factory string such as 'Flat'")
        _require(self.nprobe >= 1, f"nprobe must be >= 1, got {self.nprobe}")
        _require(self.train_sample >= 1, f"train_sample must be >= 1, got {self.train_sample}")
        _require(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")

    @property
    def is_exact(self) -> bool:
        return self.index_factory.replace(" ", "") in ("Flat", "IDMap,Flat")


SAMPLING_STRATEGIES = ("top", "uniform", "simans")
MARGIN_REFERENCES = ("lowest", "pair")  # see transforms/mining_math.reference_scores


@dataclass(frozen=True)
class MiningConfig:
    """Tier sizes, windows and false-negative guards (see CONTRACT.md, Mining semantics).

    Scores are cosine similarities. Margins, max_score and the semi-hard band are taken against the
    query's lowest judged-positive score (sentence-transformers' rule).
    """

    hard: int = 3
    semi_hard: int = 2
    random: int = 1
    range_min: int = 0  # hard window [range_min, range_max) over surviving candidates
    range_max: int = 30
    relative_margin: float | None = 0.05  # drop s_neg > s_pos - |s_pos| * m (NV-Retriever TopK-PercPos)
    absolute_margin: float | None = None  # drop s_neg + m > s_pos
    max_score: float | None = None  # drop s_neg > max_score
    semi_hard_band: tuple[float, float] = (0.10, 0.30)  # keep s_pos - HIGH <= s_neg <= s_pos - LOW
    semi_hard_pool: int = 100  # at most this many band candidates are considered per query
    sampling: str = "top"  # top | uniform | simans (applies to the hard window and the semi-hard band)
    simans_a: float = 100.0  # SimANS: p ∝ exp(-a * (s_neg - s_pos - b)^2)
    simans_b: float = -0.15
    near_copy_guard: bool = True
    near_copy_threshold: float = 0.98  # drop candidates with cos(positive, candidate) >= threshold
    text_copy_guard: bool = True  # drop candidates whose normalised text equals a positive's
    max_depth: int = 2000  # deeper searches stop here (per shard)
    margin_reference: str = "lowest"  # lowest | pair: the positive score margins are taken against (issue 15)

    def __post_init__(self) -> None:
        for name in ("hard", "semi_hard", "random"):
            value = getattr(self, name)
            _require(value >= 0, f"--{name.replace('_', '-')} must be >= 0, got {value}")
        _require(self.range_min >= 0, f"range_min must be >= 0, got {self.range_min}")
        _require(
            self.range_min < self.range_max,
            f"range_min must be < range_max, got {self.range_min} >= {self.range_max}; raise --range-max",
        )
        _require(
            self.range_max - self.range_min >= self.hard,
            f"the hard window [{self.range_min}, {self.range_max}) holds {self.range_max - self.range_min} "
            f"candidates, fewer than --hard {self.hard}; lower --hard or raise --range-max",
        )
        low, high = self.semi_hard_band
        _require(
            0.0 <= low < high,
            f"semi_hard_band must be LOW,HIGH with 0 <= LOW < HIGH (offsets below the positive score), "
            f"got {low},{high}; e.g. --semi-hard-band 0.10,0.30",
        )
        _require(
            self.sampling in SAMPLING_STRATEGIES,
            f"sampling must be one of {', '.join(SAMPLING_STRATEGIES)}, got {self.sampling!r}",
        )
        for name in ("relative_margin", "absolute_margin"):
            value = getattr(self, name)
            _require(value is None or value >= 0, f"{name} must be >= 0 or unset, got {value}")
        _require(
            0.0 < self.near_copy_threshold <= 1.0,
            f"near_copy_threshold must be in (0, 1], got {self.near_copy_threshold}",
        )
        _require(self.semi_hard_pool >= self.semi_hard, f"semi_hard_pool must be >= semi_hard ({self.semi_hard})")
        _require(self.simans_a > 0, f"simans_a must be > 0, got {self.simans_a}")
        _require(self.max_depth >= self.range_max, f"max_depth must be >= range_max ({self.range_max})")
        _require(
            self.margin_reference in MARGIN_REFERENCES,
            f"margin_reference must be one of {', '.join(MARGIN_REFERENCES)}, got {self.margin_reference!r}",
        )


CONTEXTUAL_KINDS = ("antonym", "synonym", "negation", "number", "entity", "focus")


@dataclass(frozen=True)
class ContextualConfig:
    """Contextual negatives: meaning-changing perturbations of the positive (tier=contextual)."""

    per_pair: int = 0  # --contextual K; 0 turns the stage off
    kinds: tuple[str, ...] = ("antonym", "negation", "number", "entity")
    similarity_band: tuple[float, float] = (0.80, 0.995)  # keep LOW <= cos(positive, candidate) < HIGH
    max_length_ratio: float = 1.5  # candidate length / positive length must stay below this
    edit_window_tokens: int | None = None  # None: the model's max_seq_length

    def __post_init__(self) -> None:
        _require(self.per_pair >= 0, f"--contextual must be >= 0, got {self.per_pair}")
        unknown = sorted(set(self.kinds) - set(CONTEXTUAL_KINDS))
        _require(not unknown, f"unknown contextual kinds {unknown}; allowed: {', '.join(CONTEXTUAL_KINDS)}")
        low, high = self.similarity_band
        _require(0.0 <= low < high <= 1.0, f"similarity_band must satisfy 0 <= LOW < HIGH <= 1, got {low},{high}")
        _require(self.max_length_ratio > 1.0, f"max_length_ratio must be > 1, got {self.max_length_ratio}")


@dataclass(frozen=True)
class BuildConfig:
    """Everything `negforge build` needs, resolved (flag > --config file > preset > default)."""

    output: str
    ingest: IngestConfig
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    contextual: ContextualConfig = field(default_factory=ContextualConfig)
    seed: int = 13
    preset: str = "baseline"
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        _require(not (self.overwrite and self.resume), "--overwrite and --resume exclude each other; pick one")

    def to_dict(self) -> dict:
        return asdict(self)
