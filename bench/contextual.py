"""Contextual negatives on SciFact train positives with the bundled model: speed, coverage, guard, examples.

    python bench/contextual.py [--pairs 200 | --quick] [--band 0.80,0.995] [--kinds antonym,...] [--per-pair 2]

Runs transforms.contextual.generator.ContextualGenerator (what the Beam DoFn runs per batch of 16 pairs) on
--pairs (query, positive) pairs of qrels/train.tsv, chosen by crc32 order (deterministic), and prints and
writes bench/results/contextual[-quick].json with: candidates and accepted negatives per second (model and
WordNet loading timed apart), the share of positives with >= 1 accepted negative per kind, guard
acceptance per kind and rejections per reason, the share of candidates each upper band edge would keep
(a band sweep: one-word edits of long abstracts move a mean-pooled model very little), where the edits
land (per kind: the share of accepted negatives whose every changed span lies inside the sentence of the
model window that best matches the query -- common.match_sentence -- and the share that touch it at all),
the type consistency of entity swaps (entity.same_entity_type on each "old -> new": same entity type, no
heading word), and 10 random accepted examples per kind (the edited span of the positive, before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from common import Timer, write_results  # noqa: E402

from schemas.build_config import CONTEXTUAL_KINDS, ContextualConfig, EmbedConfig  # noqa: E402
from schemas.inputs import passage_of  # noqa: E402
from schemas.negatives import text_hash  # noqa: E402
from transforms.contextual.common import changed_spans, match_sentence, split_at_window  # noqa: E402
from transforms.contextual.entity import entities_in, same_entity_type, vocabulary_from_counts  # noqa: E402
from transforms.contextual.generator import ContextualGenerator  # noqa: E402

BATCH = 16
SWEEP_HIGH = (0.995, 0.998, 0.999, 0.9995, 0.9999, 0.999999)
EXAMPLES_PER_KIND = 10


def read_scifact(data_dir: str, limit: int) -> tuple[list[dict], list[str]]:
    """(pair dicts without vectors, all passages): `limit` train pairs in crc32 order of 'query\\tdoc'."""
    with open(os.path.join(data_dir, "corpus.jsonl"), encoding="utf-8") as fp:
        docs = [json.loads(line) for line in fp]
    passages = {d["_id"]: passage_of(d["title"], d["text"]) for d in docs}
    with open(os.path.join(data_dir, "queries.jsonl"), encoding="utf-8") as fp:
        queries = {q["_id"]: q["text"] for q in map(json.loads, fp)}
    with open(os.path.join(data_dir, "qrels", "train.tsv"), encoding="utf-8") as fp:
        qrels = [line.rstrip("\r\n").split("\t") for line in fp][1:]
    judged: dict[str, list[str]] = {}
    for query_id, doc_id, score in qrels:
        if int(score) > 0 and doc_id in passages:
            judged.setdefault(query_id, []).append(doc_id)
    keys = sorted({(q, d) for q, ids in judged.items() for d in ids}, key=lambda k: zlib.crc32("\t".join(k).encode()))
    pairs = [
        {
            "query_id": q,
            "positive_id": d,
            "anchor": queries[q],
            "positive": passages[d],
            "judged_positive_ids": judged[q],
            "judged_positive_hashes": [text_hash(passages[i]) for i in judged[q]],
        }
        for q, d in keys[:limit]
    ]
    return pairs, list(passages.values())


def add_vectors(pairs: list[dict], model) -> None:
    queries = model.encode_query([p["anchor"] for p in pairs], convert_to_numpy=True, normalize_embeddings=True)
    positives = model.encode_document([p["positive"] for p in pairs], convert_to_numpy=True, normalize_embeddings=True)
    for pair, q, v in zip(pairs, queries.astype(np.float32), positives.astype(np.float32)):
        pair.update(query_vector=q, positive_vector=v, score_positive=float(q @ v))


def span_before_after(positive: str, negative: str, context: int = 60) -> tuple[str, str]:
    start = next((i for i, (a, b) in enumerate(zip(positive, negative)) if a != b), min(len(positive), len(negative)))
    end = 0
    while end < min(len(positive), len(negative)) - start and positive[-1 - end] == negative[-1 - end]:
        end += 1
    lo = max(start - context, 0)
    return positive[lo : len(positive) - end + context], negative[lo : len(negative) - end + context]


def examples(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    out = {}
    for generator in sorted({r["generator"] for r in rows}):
        mine = [r for r in rows if r["generator"] == generator]
        picked = np.random.default_rng([seed, zlib.crc32(generator.encode())]).permutation(len(mine))
        out[generator] = []
        for index in sorted(picked[:EXAMPLES_PER_KIND]):
            row = mine[index]
            before, after = span_before_after(row["positive"], row["negative"])
            out[generator].append(
                {
                    "query": row["anchor"],
                    "edit": row["edit"],
                    "before": before,
                    "after": after,
                    "similarity_to_positive": round(row["similarity_to_positive"], 5),
                    "score_negative_minus_positive": round(row["score_negative"] - row["score_positive"], 5),
                }
            )
    return out


def band_sweep(log: list[tuple[str, float, str | None]], low: float) -> dict:
    """Share of band-checked candidates per kind that [low, HIGH) keeps, for each HIGH in SWEEP_HIGH."""
    sweep = {}
    for kind in sorted({k for k, _, _ in log}):
        sims = np.array([s for k, s, _ in log if k == kind])
        sweep[kind] = {
            "band_checked": int(sims.size),
            "similarity_percentiles_5_50_95": [round(float(x), 5) for x in np.percentile(sims, [5, 50, 95])],
            **{
                f"kept_below_{h}": round(float(((sims.round(6) >= low) & (sims.round(6) < h)).mean()), 3)
                for h in SWEEP_HIGH
            },
        }
    return sweep


def edit_locations(rows: list[dict], tokenizer, window_tokens: int) -> dict:
    """Per generator: accepted negatives, the share whose every changed span lies in the match sentence of
    the model window (common.match_sentence; a window sharing no word with the query has none), and the share
    with at least one changed span there."""
    by_generator: dict[str, list[tuple[bool, bool]]] = {}
    for row in rows:
        head, _ = split_at_window(row["positive"], tokenizer, window_tokens)
        span = match_sentence(head, row["anchor"])
        spans = changed_spans(row["positive"], row["negative"])
        inside = [span is not None and span[0] <= a and b <= span[1] for a, b in spans]
        by_generator.setdefault(row["generator"], []).append((bool(inside) and all(inside), any(inside)))
    out = {}
    for generator, flags in sorted(by_generator.items()):
        out[generator] = {
            "accepted": len(flags),
            "all_edits_in_match_sentence": round(sum(a for a, _ in flags) / len(flags), 3),
            "touches_match_sentence": round(sum(t for _, t in flags) / len(flags), 3),
        }
    every = [f for flags in by_generator.values() for f in flags]
    out["all"] = {
        "accepted": len(every),
        "all_edits_in_match_sentence": round(sum(a for a, _ in every) / max(len(every), 1), 3),
        "touches_match_sentence": round(sum(t for _, t in every) / max(len(every), 1), 3),
    }
    return out


def entity_type_consistency(rows: list[dict]) -> dict:
    """Entity rows whose every "old -> new" swap keeps the entity type (and brings no heading word)."""
    entity_rows = [r for r in rows if r["generator"] == "entity"]
    consistent = [
        all(same_entity_type(*part.split(" -> ", 1)) for part in r["edit"].split("; ") if " -> " in part)
        for r in entity_rows
    ]
    inconsistent = sorted({r["edit"] for r, ok in zip(entity_rows, consistent) if not ok})
    return {
        "entity_rows": len(entity_rows),
        "type_consistent_share": round(sum(consistent) / max(len(entity_rows), 1), 3),
        "inconsistent_examples": inconsistent[:15],
    }


def summarise(rows, counts, pairs, seconds: float, kinds) -> dict:
    stats = counts.as_dict()
    n = len(pairs)
    coverage = {}
    for kind in kinds:
        generator = f"nlpaug:{kind}" if kind in ("antonym", "synonym") else kind
        coverage[kind] = round(
            len({(r["query_id"], r["positive_id"]) for r in rows if r["generator"] == generator}) / n, 3
        )
    acceptance = {k: round(stats["accepted"].get(k, 0) / max(stats["candidates"].get(k, 0), 1), 3) for k in kinds}
    total_candidates = sum(stats["candidates"].values())
    return {
        "pairs": n,
        "seconds_generate_guard_select": round(seconds, 2),
        "pairs_per_second": round(n / seconds, 2),
        "candidates_per_second": round(total_candidates / seconds, 2),
        "accepted_negatives_per_second": round(len(rows) / seconds, 2),
        "share_of_positives_with_accepted_negative": coverage,
        "share_of_positives_with_any_accepted_negative": round(stats["pairs_with_negative"] / n, 3),
        "guard_acceptance_per_kind": acceptance,
        "guard_acceptance_overall": round(len(rows) / max(total_candidates, 1), 3),
        "rejections_per_reason_share": {
            r: round(c / max(total_candidates, 1), 3) for r, c in stats["rejected"].items()
        },
        "counts": stats,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="40 pairs")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "scifact-sample"))
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--band", default=None, help="LOW,HIGH (default: ContextualConfig's)")
    parser.add_argument("--kinds", default=",".join(CONTEXTUAL_KINDS))
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    limit = 40 if args.quick else args.pairs
    kinds = tuple(args.kinds.split(","))
    band = tuple(float(x) for x in args.band.split(",")) if args.band else ContextualConfig().similarity_band
    # per_pair large: every accepted candidate becomes a row, so coverage counts what the guard accepted.
    config = ContextualConfig(per_pair=1000, kinds=kinds, similarity_band=band)

    pairs, passages = read_scifact(args.data, limit)
    with Timer() as load:
        generator = ContextualGenerator.load(config, EmbedConfig(model=args.model), args.seed)
    with Timer() as vocab_time:
        frequency: dict[str, int] = {}
        for passage in passages:
            for entity in entities_in(passage):
                frequency[entity] = frequency.get(entity, 0) + 1
        vocab = vocabulary_from_counts(frequency)
    add_vectors(pairs, generator.model)
    generator.similarity_log = []
    rows, counts = [], None
    with Timer() as run:
        for start in range(0, len(pairs), BATCH):
            batch_rows, _, batch_counts = generator.run(pairs[start : start + BATCH], vocab)
            rows += batch_rows
            counts = batch_counts if counts is None else counts.merge(batch_counts)
    figures = summarise(rows, counts, pairs, run.seconds, kinds)
    figures["seconds_load_model_wordnet"] = round(load.seconds, 2)
    figures["seconds_entity_vocabulary"] = round(vocab_time.seconds, 2)
    figures["band_sweep"] = band_sweep(generator.similarity_log, band[0])
    figures["edit_location"] = edit_locations(rows, generator.model.tokenizer, generator.window_tokens)
    figures["entity_type_consistency"] = entity_type_consistency(rows)
    payload = {
        "inputs": {
            "dataset": "scifact train",
            "pairs": len(pairs),
            "corpus_passages": len(passages),
            "model": args.model,
            "similarity_band": list(band),
            "kinds": list(kinds),
            "seed": args.seed,
            "window_tokens": generator.window_tokens,
            "entity_types": len(vocab),
        },
        "figures": figures,
        "examples": examples(rows, args.seed),
    }
    name = "contextual-quick" if args.quick else "contextual"
    path = write_results(name, payload, command=[os.path.basename(sys.executable), *sys.argv])
    print(json.dumps({k: v for k, v in figures.items() if k not in ("counts", "band_sweep")}, indent=1))
    for generator_name, items in payload["examples"].items():
        print(f"\n== {generator_name} ==")
        for item in items:
            print(f"- edit: {item['edit']}  (cos to positive {item['similarity_to_positive']})")
            print(f"  before: ...{item['before']}...\n  after:  ...{item['after']}...")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
