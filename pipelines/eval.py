"""`negforge eval --beir DIR --split S --model SPEC`: retrieval quality of a model, as one JSON line.

Corpus text is title + " " + text (BEIR's and MTEB's join); the metrics come from sentence-transformers'
InformationRetrievalEvaluator (trainer/evaluate.py). `--embed-backend torch|onnx|onnx-int8` and
`--device cpu|cuda|auto` pick how the model runs (as for `negforge build`). Output, on stdout:
    {"ndcg@10": .., "mrr@10": .., "recall@100": .., "model": .., "split": .., "queries": .., "docs": ..,
     "embed_backend": .., "device": ..}
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from schemas.build_config import EMBED_BACKENDS, EMBED_DEVICES
from transforms.model import BUNDLED, ModelSpecError, load_sentence_transformer  # sets HF_HUB_OFFLINE first
from transforms.onnx_backend import resolve_device

logger = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="negforge eval", description="nDCG@10, MRR@10 and Recall@100 of a model on a BEIR split."
    )
    parser.add_argument("--beir", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", required=True, help="qrels split to score, e.g. test")
    parser.add_argument("--model", default=BUNDLED, help="'bundled' or a sentence-transformers directory")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="texts per forward pass")
    parser.add_argument("--max-seq-length", type=_positive_int, default=None, help="tokens; default: the model's")
    parser.add_argument("--query-prompt", default="", help="prepended to every query (default: none)")
    parser.add_argument("--doc-prompt", default="", help="prepended to every document (default: none)")
    parser.add_argument(
        "--embed-backend", choices=EMBED_BACKENDS, default="torch",
        help="torch (fp32), onnx (fp32 ONNX Runtime) or onnx-int8 (dynamic int8; fastest on CPU); "
        "ONNX exports are made locally and cached in $NEGFORGE_ONNX_CACHE (default ~/.cache/negforge/onnx)",
    )
    parser.add_argument("--device", choices=EMBED_DEVICES, default="cpu", help="auto: cuda when torch sees one")
    return parser


def main_eval(argv: list[str]) -> int:
    """Parse argv, evaluate, print one JSON line; return 0, or 2 on a bad input (message on stderr)."""
    args = eval_parser().parse_args(argv)
    from trainer.evaluate import evaluate_retrieval
    from transforms.beir import BeirLayoutError, load_beir

    try:
        data = load_beir(args.beir, args.split)
        model = load_sentence_transformer(
            args.model, device=args.device, max_seq_length=args.max_seq_length, backend=args.embed_backend
        )
        metrics = evaluate_retrieval(
            model,
            data.corpus,
            data.queries,
            data.qrels,
            batch_size=args.batch_size,
            name=f"{args.split}",
            query_prompt=args.query_prompt,
            corpus_prompt=args.doc_prompt,
        )
    except (BeirLayoutError, ModelSpecError, ValueError) as error:
        print(f"negforge eval: {error}", file=sys.stderr)
        return 2
    line = {
        **{name: round(value, 6) for name, value in metrics.items()},
        "model": args.model,
        "split": args.split,
        "queries": len(data.queries),
        "docs": len(data.corpus),
        "max_seq_length": model.max_seq_length,
        "embed_backend": args.embed_backend,
        "device": resolve_device(args.device),
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main_eval(sys.argv[1:]))
