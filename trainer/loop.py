"""The training loop: duplicate-free batches, file negatives drawn by tier weights, InfoNCE with an optional
memory bank, gradient accumulation, warmup + linear lr decay, per-step JSONL logs, and a saved model.

Outputs in MODEL_DIR: the sentence-transformers model (`SentenceTransformer(MODEL_DIR)` loads it),
train_config.json (resolved config, data source and counts, device, versions), train_log.jsonl (one line
per optimizer step: loss, per-tier margins, tier weights, lr, temperature, ...) and train_summary.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from schemas.model_spec import resolve_model_path
from schemas.train_config import TrainConfig
from trainer.curriculum import TierCurriculum
from trainer.data import Batch, DevSet, TrainingData, collate_batch, no_duplicate_batches
from trainer.loss import build_candidate_mask, compute_loss_from_embeddings, temperature_at, tier_margins
from trainer.memory_bank import MemoryBank

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; use --device auto or cpu")
    return torch.device(name)


def load_base_model(spec: str, device: torch.device, max_seq_length: int | None = None):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(spec), device=str(device))
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def encode(model, texts: list[str], device: torch.device) -> torch.Tensor:
    """[len(texts), d] sentence embeddings with gradients (the model's forward, not encode())."""
    prepare = getattr(model, "preprocess", None) or model.tokenize  # preprocess: sentence-transformers >= 6
    features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prepare(texts).items()}
    return model(features)["sentence_embedding"]


def _optimizer(model, config: TrainConfig, total_steps: int):
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    warmup = int(config.warmup_ratio * total_steps)

    def lr_factor(step: int) -> float:  # linear warmup, then linear decay to 0 (transformers' default)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def _micro_step(model, batch: Batch, bank: MemoryBank | None, temperature: float, config: TrainConfig, device):
    """Forward + backward of one micro-batch; returns (loss, per-tier margins)."""
    size, count = len(batch.anchors), config.file_negatives
    q = encode(model, batch.anchors, device)  # [B, d]
    docs = encode(model, batch.positives + batch.negatives, device)  # [B + B*n, d]
    p = docs[:size]
    negs = docs[size:].reshape(size, count, -1) if count else None  # [B, n, d]
    bank_embeddings = bank.embeddings() if bank is not None and len(bank) else None
    candidate_ids = batch.positive_ids + batch.negative_ids + (bank.ids() if bank_embeddings is not None else [])
    mask = torch.from_numpy(build_candidate_mask(batch.query_positives, candidate_ids)).to(device)
    same_query = None
    if "query_to_query" in config.loss_directions:  # rows holding the same query text are no negatives of each other
        same_query = torch.tensor([[a == b for b in batch.anchors] for a in batch.anchors], device=device)
    loss = compute_loss_from_embeddings(
        q, p, negs, bank_embeddings, temperature=temperature, candidate_mask=mask,
        directions=config.loss_directions, partition=config.loss_partition, same_query=same_query,
    )
    (loss / config.grad_accum).backward()
    margins = tier_margins(q, p, negs, batch.negative_tiers)
    if bank is not None:
        bank.enqueue(docs.detach(), batch.positive_ids + batch.negative_ids)
    return float(loss.detach()), margins


def _write_json(path: str, payload: dict) -> None:
    with open(path + ".tmp", "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _versions() -> dict:
    import sentence_transformers
    import transformers

    return {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__}


@dataclass
class _Run:
    """What one training run carries between steps."""

    model: object
    data: TrainingData
    config: TrainConfig
    device: torch.device
    total: int
    curriculum: TierCurriculum
    bank: MemoryBank | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0
    losses: list = field(default_factory=list)
    reused: int = 0
    padded: int = 0

    def epoch(self, epoch: int, batches: list[list[int]], log, bar) -> None:
        config, window = self.config, []
        for index, indices in enumerate(batches):
            progress = self.step / self.total
            weights = self.curriculum.weights(progress)
            examples = [self.data.examples[i] for i in indices]
            batch = collate_batch(examples, self.data, config.file_negatives, weights, config.seed, epoch)
            temperature = temperature_at(config.temperature, config.temperature_end, config.temperature_schedule,
                                         progress)
            loss, margins = _micro_step(self.model, batch, self.bank, temperature, config, self.device)
            self.curriculum.observe(margins)
            window.append((loss, margins))
            self.reused += batch.reused
            self.padded += batch.padded
            if (index + 1) % config.grad_accum and index + 1 < len(batches):
                continue
            lr = self._optimizer_step()
            move = self.curriculum.on_optimizer_step(self.step)
            record = {"step": self.step, "epoch": epoch, "progress": round(progress, 6),
                      "loss": sum(w[0] for w in window) / len(window), "margins": _mean_margins(window),
                      "tier_weights": {t: round(w, 6) for t, w in weights.items()}, "lr": lr,
                      "temperature": temperature, "memory_bank": len(self.bank) if self.bank is not None else 0,
                      "batch_size": len(indices), "reused_negatives": batch.reused,
                      "padded_negatives": batch.padded}
            if move is not None:
                record["curriculum_move"] = {"from": move[0], "to": move[1]}
            log.write(json.dumps(record) + "\n")
            self.losses.append(record["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window = []
            if self.step >= self.total:
                return

    def _optimizer_step(self) -> float:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return lr

    def summary(self, seconds: float) -> dict:
        losses, tenth = self.losses, max(1, len(self.losses) // 10)
        return {"optimizer_steps": self.step, "first_loss": losses[0], "last_loss": losses[-1],
                "mean_loss_first_10pct": sum(losses[:tenth]) / tenth,
                "mean_loss_last_10pct": sum(losses[-tenth:]) / tenth, "train_seconds": round(seconds, 3),
                "reused_negatives": self.reused, "padded_negatives": self.padded,
                "curriculum_moves": self.curriculum.moves, "final_tier_weights": self.curriculum.weights(1.0),
                "device": str(self.device), "preset": self.config.preset}


def _mean_margins(window: list[tuple[float, dict]]) -> dict[str, float]:
    tiers = sorted({t for _, margins in window for t in margins})
    return {t: sum(m[t] for _, m in window if t in m) / sum(1 for _, m in window if t in m) for t in tiers}


def train(
    config: TrainConfig, data: TrainingData, output_dir: str, dev: DevSet | None = None, progress: bool | None = None
) -> dict:
    """Fine-tune config.base_model on `data`, save it to output_dir, evaluate on `dev`; returns the summary."""
    if not data.examples:
        raise ValueError(f"no training examples in {data.source.get('path')}; check the RUN_DIR and --dev-fraction")
    os.makedirs(output_dir, exist_ok=True)  # fail on a bad path before any work
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    schedule = [no_duplicate_batches(data.examples, config.batch_size, config.seed, e) for e in range(config.epochs)]
    total = sum(math.ceil(len(batches) / config.grad_accum) for batches in schedule)
    total = min(total, config.max_steps) if config.max_steps else total
    counts = {"examples": len(data.examples), "queries": len({e.query_id for e in data.examples}),
              "corpus": len(data.corpus), "negatives_per_tier": data.tier_counts(), "optimizer_steps": total,
              "dev_queries": len(dev.queries) if dev else 0}
    _write_json(os.path.join(output_dir, "train_config.json"), {
        "config": config.to_dict(), "source": data.source, "data": counts, "device": str(device),
        "versions": _versions()})
    model = load_base_model(config.base_model, device, config.max_seq_length)
    model.train()
    optimizer, scheduler = _optimizer(model, config, total)
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    bank = MemoryBank(config.memory_bank, dim, device) if config.memory_bank else None
    run = _Run(model, data, config, device, total, TierCurriculum(config), bank, optimizer, scheduler)
    started = time.perf_counter()
    with open(os.path.join(output_dir, "train_log.jsonl"), "w", buffering=1) as log, tqdm(
        total=total, disable=(None if progress is None else not progress), desc="train"
    ) as bar:
        for epoch, batches in enumerate(schedule):
            if run.step < total:
                run.epoch(epoch, batches, log, bar)
    summary = run.summary(time.perf_counter() - started)
    model.eval()
    model.save(output_dir)
    if dev is not None:
        from trainer.evaluate import evaluate_retrieval

        summary["dev"] = evaluate_retrieval(model, dev.corpus, dev.queries, dev.qrels, config.eval_batch_size, "dev")
    _write_json(os.path.join(output_dir, "train_summary.json"), summary)
    return summary


def load_source(config: TrainConfig, source: str):
    """Load a RUN_DIR or an export and hold out the dev split: (config, train data, dev set or None).

    The config comes back changed only for an export without a tier column (one tier, 'exported')."""
    from dataclasses import replace

    from trainer.data import load_training_data, split_dev

    data = load_training_data(source, config.tiers)
    if data.source["kind"] == "export" and data.source["tiers"] == ["exported"] and config.file_negatives:
        logger.warning("%s has no tier column: its negatives form one tier, 'exported' (was %s)", source, config.tiers)
        config = replace(config, tiers=("exported",), tier_weights=(1.0,), curriculum="none")
    missing = sorted(set(config.tiers) - set(data.source["tiers"]))
    if data.source["kind"] == "export" and missing:
        raise ValueError(f"tiers {missing} are not in {source} (it has {data.source['tiers']}); change --tiers")
    data, dev = split_dev(data, config.dev_fraction, config.seed)
    logger.info("training on %d examples (%d dev queries) from %s", len(data.examples),
                len(dev.queries) if dev else 0, source)
    return config, data, dev


def train_from_source(config: TrainConfig, source: str, output_dir: str, progress: bool | None = None) -> dict:
    """Load a RUN_DIR or an export, hold out the dev split, train and save; returns the summary."""
    config, data, dev = load_source(config, source)
    return train(config, data, output_dir, dev, progress)
