"""The `negforge` command: build | export | audit | train | eval.

HF_HUB_OFFLINE is set before anything imports sentence-transformers: nothing downloads at run time.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

USAGE = """usage: negforge {build,export,audit,train,eval} ...

  build   mine tiered negatives into RUN_DIR (Beam: DirectRunner, Dataflow, ...)
  export  write triplet / n-tuple Parquet for a trainer
  audit   statistics, contract checks and plots of RUN_DIR's tiers
  train   fine-tune a sentence-transformers model on RUN_DIR's tiers
  eval    nDCG@10, MRR@10, Recall@100 of a model on a BEIR split (one JSON line)

`negforge COMMAND --help` lists each command's flags."""

# command -> (module, function taking argv and returning an exit code)
COMMANDS = {
    "build": ("pipelines.cli", "main_build"),
    "export": ("pipelines.export", "main_export"),
    "audit": ("pipelines.audit", "main_audit"),
    "train": ("pipelines.train", "main_train"),
    "eval": ("pipelines.eval", "main_eval"),
}


def _summary(manifest: dict, output: str) -> str:
    selection = manifest.get("selection", {})
    rows = selection.get("rows_per_tier", {})
    lines = [f"negforge build: finished in {manifest.get('wall_s', 0):.1f}s -> {output}"]
    counts = manifest.get("counts", {})
    if counts:
        lines.append(
            f"  inputs: {counts.get('docs', '?')} docs, {counts.get('queries', '?')} queries, "
            f"{counts.get('pairs', '?')} pairs; dead-lettered {sum(counts.get('deadletter_by_reason', {}).values())}"
        )
    if rows:
        lines.append("  negatives per tier: " + ", ".join(f"{t}={n}" for t, n in sorted(rows.items())))
    return "\n".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or flags: reported in one line, exit code 2, no traceback."""
    from pipelines.build import NotARunDirError, RunDirExistsError
    from pipelines.options import UnknownFlagError
    from pipelines.stage_ingest import InputLayoutError
    from schemas.build_config import ConfigError
    from transforms.model import ModelSpecError
    from transforms.wordnet import WordNetMissingError

    return (ConfigError, UnknownFlagError, RunDirExistsError, NotARunDirError, InputLayoutError, ModelSpecError,
            WordNetMissingError, FileNotFoundError, NotADirectoryError)


def main_build(argv: list[str]) -> int:
    from pipelines.build import StrictModeError, run_build
    from pipelines.build_args import resolve_build_config

    try:
        config, beam_args = resolve_build_config(argv)
        manifest = run_build(config, beam_args)
    except _user_errors() as err:
        print(f"negforge build: error: {err}", file=sys.stderr)
        return 2
    except StrictModeError as err:
        print(f"negforge build: {err}", file=sys.stderr)
        return 3
    if manifest.get("stages"):
        print(_summary(manifest, config.output))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("NEGFORGE_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "sentence_transformers", "faiss", "absl", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"negforge: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, function = COMMANDS[command]
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
