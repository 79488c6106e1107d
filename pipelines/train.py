"""`negforge train RUN_DIR --output MODEL_DIR`: fine-tune a sentence-transformers model on RUN_DIR's tiers.

Flags are parsed strictly and merged flag > --config TOML ([train] table) > --preset > default into a
TrainConfig (trainer/presets.py documents the presets). RUN_DIR may also be an exported triplet / n-tuple
Parquet file. Writes the model plus train_config.json, train_log.jsonl and train_summary.json into
MODEL_DIR, and prints the summary as one JSON line. No Beam here: this runs on a GPU box as is.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from schemas.build_config import ConfigError
from schemas.train_config import CURRICULA, DEVICES, LOSS_PARTITIONS
from trainer.presets import PRESETS, read_train_toml, resolve_train_config

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Every flag defaults to 'absent', so only what the user typed overrides the TOML file and the preset."""
    parser = argparse.ArgumentParser(
        prog="negforge train", allow_abbrev=False, argument_default=argparse.SUPPRESS,
        description="Fine-tune a sentence-transformers model on negforge's tiered negatives.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished RUN_DIR, or an exported *.parquet file")
    parser.add_argument("--output", required=True, metavar="MODEL_DIR", help="where the trained model is saved")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file; its [train] table holds settings")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="hard (the default: the best measured recipe) | full | baseline (trainer/presets.py)")
    parser.add_argument("--base-model", metavar="SPEC", help="'bundled' (default) or a sentence-transformers dir")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup-ratio", type=float)
    parser.add_argument("--temperature", metavar="T|T0:T1[:linear|cosine]", help="0.05 = scale 20 (default)")
    parser.add_argument(
        "--loss-directions", metavar="D,...",
        help="query_to_doc (default) plus doc_to_query (symmetric) and/or query_to_query",
    )
    parser.add_argument("--loss-partition", choices=LOSS_PARTITIONS, help="joint (default) | per_direction")
    parser.add_argument("--memory-bank", type=int, metavar="N", help="queue of N past doc embeddings; 0 = off")
    parser.add_argument("--tiers", metavar="TIER[:W],...", help="e.g. hard,semi_hard or hard:0.6,random:0.4; none")
    parser.add_argument("--curriculum", choices=CURRICULA)
    parser.add_argument("--file-negatives", type=int, metavar="N", help="file negatives per example (same for all)")
    parser.add_argument("--refresh-every", type=int, metavar="N",
                        help="every N optimizer steps, re-score each query's mined candidates with the model being "
                             "trained and redraw hard/semi_hard behind the relative-margin guard; 0 = off")
    parser.add_argument("--grad-accum", type=int, metavar="N")
    parser.add_argument("--max-seq-length", type=int, metavar="N")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dev-fraction", type=float, metavar="F", help="seeded share of queries held out as dev")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (smoke runs)")
    parser.add_argument("--device", choices=DEVICES)
    return parser


def _train_anywhere(config, source: str, output: str, train_from_source) -> dict:
    """Train with a gs:// base model and/or MODEL_DIR too: the trainer works on local folders, so a remote
    base model is copied to this machine first and a remote MODEL_DIR is written locally, then uploaded."""
    import dataclasses
    import tempfile

    from storage.files import is_remote, upload_tree

    if is_remote(config.base_model):
        from transforms.model import resolve_model_dir

        config = dataclasses.replace(config, base_model=resolve_model_dir(config.base_model))
    if not is_remote(output):
        return train_from_source(config, source, output)
    with tempfile.TemporaryDirectory(prefix="negforge-train-") as local:
        summary = train_from_source(config, source, local)
        upload_tree(local, output)
    return summary


def main_train(argv: list[str]) -> int:
    """Parse, resolve, train; 0 on success, 2 on a usage or configuration error."""
    try:
        args = vars(build_parser().parse_args(argv))
    except SystemExit as exit_:  # argparse: --help (0) or a bad flag (2, usage already printed)
        return int(exit_.code or 0)
    source, output, config_file = args.pop("run_dir"), args.pop("output"), args.pop("config", None)
    from trainer.loop import train_from_source  # torch and sentence-transformers load only past parsing

    try:
        config = resolve_train_config(args, read_train_toml(config_file) if config_file else {})
        summary = _train_anywhere(config, source, output, train_from_source)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"negforge train: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"model": output, **summary}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:]))
