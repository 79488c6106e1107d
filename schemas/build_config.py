"""Frozen, validated configuration of `negforge build`, one dataclass per stage.

Flags are parsed once (pipelines/cli.py) into these objects; DoFns receive them (never PipelineOptions).
Every validation error names the bad value, what is allowed and a hint.

Each `negforge build` flag is declared once, here, on the field it sets: `field(metadata=flag("--hard", ...))`.
pipelines/build_args.py generates the parser from these fields; a field without `flag` metadata is set by
--config FILE.toml or a preset only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

FLAG = "negforge.flag"  # the metadata key of a field's command-line flag


def flag(
    name: str,
    *,
    type: Callable[[str], Any] | None = None,  # noqa: A002 - argparse's own word
    metavar: str | None = None,
    help: str | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    action: str | None = None,
    group: str | None = None,
) -> dict:
    """Field metadata declaring the field's command-line flag (argparse keyword arguments)."""
    options = {"type": type, "metavar": metavar, "help": help, "choices": choices, "action": action}
    spec = {"name": name, "options": {k: v for k, v in options.items() if v is not None}}
    if group is not None:
        spec["group"] = group  # e.g. "mode": flags of one mutually exclusive group
    return {FLAG: spec}


def optional_float(text: str) -> float | None:
    """A float, or None for 'none' / 'off' (turns a guard off)."""
    if text.strip().lower() in ("none", "off"):
        return None
    return float(text)


def float_pair(text: str) -> tuple[float, float]:
    """'LOW,HIGH' -> (LOW, HIGH)."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}")
    return float(parts[0]), float(parts[1])


def names(text: str) -> tuple[str, ...]:
    """'a, b,c' -> ('a', 'b', 'c')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any pipeline starts."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class IngestConfig:
    """Where the inputs are and how strictly they are read."""

    beir_dir: str | None = field(
        default=None,
        metadata=flag("--beir", metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"),
    )
    split: str | None = field(default=None, metadata=flag("--split", metavar="S"))
    pairs_file: str | None = field(
        default=None,
        metadata=flag("--pairs", metavar="FILE", help="JSONL of {query|anchor, positive[, query_id, positive_id]}"),
    )
    corpus_file: str | None = field(
        default=None,
        metadata=flag("--corpus", metavar="FILE", help="extra corpus (BEIR corpus.jsonl layout) for --pairs"),
    )
    max_text_chars: int = field(  # longer texts are truncated and noted in warnings/
        default=20_000, metadata=flag("--max-text-chars", type=int, metavar="N")
    )
    strict: bool = field(
        default=False,
        metadata=flag("--strict", action="store_true", help="exit non-zero when any input row is dead-lettered"),
    )
    max_line_bytes: int = field(  # longer lines are dead-lettered (line_too_long), never held whole
        default=8 * 1024 * 1024,
        metadata=flag("--max-line-bytes", type=int, metavar="N", help="longer lines are dead-lettered (8 MiB)"),
    )

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
        _require(self.max_line_bytes >= 1, f"max_line_bytes must be >= 1, got {self.max_line_bytes}")


EMBED_BACKENDS = ("torch", "onnx", "onnx-int8")
EMBED_DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class EmbedConfig:
    """The embedding model and how it is run."""

    model: str = field(
        default="bundled",
        metadata=flag("--model", metavar="SPEC", help="'bundled' (default) or a sentence-transformers directory"),
    )
    batch_size: int = field(default=64, metadata=flag("--embed-batch-size", type=int, metavar="N"))
    max_seq_length: int | None = field(  # None: the model's own
        default=None, metadata=flag("--max-seq-length", type=int, metavar="N")
    )
    query_prompt: str = field(default="", metadata=flag("--query-prompt", metavar="TEXT"))
    doc_prompt: str = field(default="", metadata=flag("--doc-prompt", metavar="TEXT"))
    torch_threads: int | None = None  # None: cores / workers
    backend: str = field(  # transforms/onnx_backend.py
        default="torch",
        metadata=flag("--embed-backend", choices=EMBED_BACKENDS,
                      help="torch (default, fp32), onnx (fp32 ONNX Runtime), onnx-int8 (fastest on CPU)"),
    )
    device: str = field(
        default="cpu", metadata=flag("--device", choices=EMBED_DEVICES, help="cpu (default), cuda, auto (cuda if any)")
    )
    embedding_cache: str | None = field(  # transforms/embed_cache.py
        default=None,
        metadata=flag("--embedding-cache", metavar="DIR", help="reuse vectors across builds (local or gs://)"),
    )

    def __post_init__(self) -> None:
        _require(bool(self.model), "model must be 'bundled' or a sentence-transformers directory")
        _require(self.backend in EMBED_BACKENDS, f"embed backend must be one of {', '.join(EMBED_BACKENDS)}, "
                 f"got {self.backend!r}; onnx-int8 is the fastest on CPU")
        _require(
            self.device in EMBED_DEVICES, f"device must be one of {', '.join(EMBED_DEVICES)}, got {self.device!r}"
        )
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(
            self.max_seq_length is None or self.max_seq_length >= 8,
            f"max_seq_length must be >= 8 tokens, got {self.max_seq_length}",
        )


@dataclass(frozen=True)
class IndexConfig:
    """The sharded faiss index. Always inner product on L2-normalised vectors."""

    num_shards: int = field(default=4, metadata=flag("--num-shards", type=int, metavar="N"))
    index_factory: str = field(
        default="Flat",
        metadata=flag("--index-factory", metavar="STR", help="faiss factory string: Flat, IVF1024,Flat, IVF1024,PQ32"),
    )
    nprobe: int = field(default=16, metadata=flag("--nprobe", type=int, metavar="N"))
    worker_memory_gb: float = field(
        default=4.0,
        metadata=flag("--worker-memory-gb", type=float, metavar="GB",
                      help="memory per worker the default shard count and factory are sized for "
                           "(transforms/sizing.py)"),
    )
    auto_shards: bool = False  # True when num_shards came from no flag or file: sized from the corpus before indexing
    auto_factory: bool = False  # True when index_factory came from no flag or file: chosen from the corpus size
    auto_nprobe: bool = False  # True when nprobe came from no flag or file: an automatic IVF factory sets it
    factory_reason: str = ""  # why the automatic factory was chosen (transforms/sizing.choose_index)
    train_sample: int = 100_000  # vectors sampled (seeded) to train IVF/PQ quantisers
    block_size: int = 4096  # rows per element when embeddings travel through Beam

    def __post_init__(self) -> None:
        _require(self.num_shards >= 1, f"num_shards must be >= 1, got {self.num_shards}; use 1 for one shard")
        _require(bool(self.index_factory.strip()), "index_factory must be a faiss factory string such as 'Flat'")
        _require(self.nprobe >= 1, f"nprobe must be >= 1, got {self.nprobe}")
        _require(self.worker_memory_gb > 0, f"worker_memory_gb must be > 0, got {self.worker_memory_gb}")
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

    Scores are cosine similarities. Margins and the semi-hard band are taken against each pair's own positive
    score (margin_reference "pair", the default) or the query's lowest judged-positive score ("lowest",
    sentence-transformers' rule); judged positives are excluded for every pair either way.
    """

    hard: int = field(default=3, metadata=flag("--hard", type=int, metavar="K"))
    semi_hard: int = field(default=2, metadata=flag("--semi-hard", type=int, metavar="K"))
    random: int = field(default=1, metadata=flag("--random", type=int, metavar="K"))
    range_min: int = field(  # hard window [range_min, range_max) over surviving candidates
        default=0, metadata=flag("--range-min", type=int, metavar="N")
    )
    range_max: int = field(default=30, metadata=flag("--range-max", type=int, metavar="N"))
    relative_margin: float | None = field(  # drop s_neg > s_pos - |s_pos| * m (NV-Retriever TopK-PercPos)
        default=0.05,
        metadata=flag("--relative-margin", type=optional_float, metavar="F", help="0.05 = NV-Retriever; 'none' off"),
    )
    absolute_margin: float | None = field(  # drop s_neg + m > s_pos
        default=None, metadata=flag("--absolute-margin", type=optional_float, metavar="F")
    )
    max_score: float | None = field(  # drop s_neg > max_score
        default=None, metadata=flag("--max-score", type=optional_float, metavar="F")
    )
    semi_hard_band: tuple[float, float] = field(  # keep s_pos - HIGH <= s_neg <= s_pos - LOW
        default=(0.10, 0.30), metadata=flag("--semi-hard-band", type=float_pair, metavar="LOW,HIGH")
    )
    semi_hard_pool: int = 100  # at most this many band candidates are considered per query
    sampling: str = field(  # applies to the hard window and the semi-hard band
        default="top", metadata=flag("--sampling", choices=SAMPLING_STRATEGIES)
    )
    simans_a: float = 100.0  # SimANS: p ∝ exp(-a * (s_neg - s_pos - b)^2)
    simans_b: float = -0.15
    near_copy_guard: bool = field(default=True, metadata=flag("--no-near-copy-guard", action="store_false"))
    near_copy_threshold: float = field(  # drop candidates with cos(positive, candidate) >= threshold
        default=0.98, metadata=flag("--near-copy-threshold", type=float, metavar="F")
    )
    text_copy_guard: bool = True  # drop candidates whose normalised text equals a positive's
    max_depth: int = 2000  # deeper searches stop here (per shard)
    query_group_size: int = field(  # queries per (shard, query group) search task (transforms/search.ToQueryBlocks)
        default=1024,
        metadata=flag("--query-group-size", type=int, metavar="N",
                      help="queries searched together on a shard by one worker; smaller: more workers per shard"),
    )
    margin_reference: str = field(  # the score margins and the semi-hard band are taken against (issue 15)
        default="pair",
        metadata=flag(
            "--margin-reference",
            choices=MARGIN_REFERENCES,
            help="lowest: the query's lowest judged positive (sentence-transformers); pair: each pair's own positive",
        ),
    )

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
        _require(self.query_group_size >= 1, f"query_group_size must be >= 1, got {self.query_group_size}")
        _require(
            self.margin_reference in MARGIN_REFERENCES,
            f"margin_reference must be one of {', '.join(MARGIN_REFERENCES)}, got {self.margin_reference!r}",
        )


CONTEXTUAL_KINDS = ("antonym", "synonym", "negation", "number", "entity", "focus")


@dataclass(frozen=True)
class ContextualConfig:
    """Contextual negatives: meaning-changing perturbations of the positive (tier=contextual)."""

    per_pair: int = field(default=0, metadata=flag("--contextual", type=int, metavar="K"))  # 0: off
    kinds: tuple[str, ...] = field(
        default=("antonym", "negation", "number", "entity"),
        metadata=flag("--contextual-kinds", type=names, metavar="K1,K2"),
    )
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

    output: str = field(metadata=flag("--output", metavar="RUN_DIR"))
    ingest: IngestConfig = field()
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    contextual: ContextualConfig = field(default_factory=ContextualConfig)
    seed: int = field(default=13, metadata=flag("--seed", type=int, metavar="N"))
    preset: str = "baseline"  # --preset: resolved in pipelines/build_args.py (it picks the layers)
    overwrite: bool = field(default=False, metadata=flag("--overwrite", action="store_true", group="mode"))
    resume: bool = field(default=False, metadata=flag("--resume", action="store_true", group="mode"))

    def __post_init__(self) -> None:
        _require(not (self.overwrite and self.resume), "--overwrite and --resume exclude each other; pick one")

    def to_dict(self) -> dict:
        return asdict(self)
