"""The `negforge` command: build | export | audit | train | eval.

HF_HUB_OFFLINE is set before anything imports sentence-transformers: nothing downloads at run time.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402
import sys  # noqa: E402

USAGE = """usage: negforge {build,export,audit,train,eval} ...

  build   mine tiered negatives into RUN_DIR (Beam: DirectRunner, Dataflow, ...)
  export  write triplet / n-tuple Parquet for a trainer
  audit   statistics, contract checks and plots of RUN_DIR's tiers
  train   fine-tune a sentence-transformers model on RUN_DIR's tiers
  eval    nDCG@10, MRR@10, Recall@100 of a model on a BEIR split (one JSON line)

`negforge COMMAND --help` lists each command's flags."""

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
    from schemas.build_config import ConfigError
    from transforms.contextual.wordnet_install import WordNetMissingError
    from transforms.ingest_checks import InputLayoutError
    from transforms.model import ModelSpecError

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


def _export(argv: list[str]) -> int:
    from pipelines.export import main_export

    return main_export(argv)


def _audit(argv: list[str]) -> int:
    from pipelines.audit import main_audit

    return main_audit(argv)


def _train(argv: list[str]) -> int:
    from pipelines.train import main_train

    return main_train(argv)


def _eval(argv: list[str]) -> int:
    from pipelines.eval import main_eval

    return main_eval(argv)


# command -> function taking argv and returning an exit code; each imports its module only when called
COMMANDS = {"build": main_build, "export": _export, "audit": _audit, "train": _train, "eval": _eval}


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
    return int(COMMANDS[command](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
