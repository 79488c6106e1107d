"""Embedding cache and progress: a rebuild embeds nothing and gives the same vectors; identical texts once."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.stage_embed import run_embed
from schemas.build_config import BuildConfig, EmbedConfig, IngestConfig
from schemas.inputs import DOCS_SCHEMA, QUERIES_SCHEMA, passage_of
from schemas.layout import RunLayout
from schemas.negatives import text_hash
from transforms.embed_cache import cache_namespace, list_cache_files, read_cache_file, text_key, write_cache_file
from transforms.embed_plan import embedding_cache_dirs
from transforms.embed_progress import EmbedProgress, progress_line

SAME = "Statins reduce LDL cholesterol."
DOCS = [("d1", "Genes", "BRCA1 mutations raise breast cancer risk."), ("d2", "", SAME), ("d3", "", SAME),
        ("d4", "Sleep", "Short sleep is linked to obesity in children.")]
QUERIES = [("q1", "Does BRCA1 affect cancer risk?"), ("q2", SAME)]


def write_inputs(run: RunLayout, docs=DOCS) -> None:
    for name in ("docs", "queries"):
        os.makedirs(run.inputs_table(name), exist_ok=True)
    rows = [{"doc_id": d, "title": t, "text": x, "passage": passage_of(t, x), "text_hash": text_hash(passage_of(t, x))}
            for d, t, x in docs]
    pq.write_table(pa.Table.from_pylist(rows, DOCS_SCHEMA), os.path.join(run.inputs_table("docs"), "p.parquet"))
    queries = pa.Table.from_pylist([{"query_id": q, "text": t} for q, t in QUERIES], QUERIES_SCHEMA)
    pq.write_table(queries, os.path.join(run.inputs_table("queries"), "p.parquet"))


def vectors_of(out: RunLayout) -> dict[tuple[str, str], np.ndarray]:
    table = pq.read_table(out.embeddings_dir).to_pylist()
    return {(row["kind"], row["id"]): np.array(row["vector"], np.float32) for row in table}


def embed_once(tmp_path, model_dir, name, cache, docs=DOCS):
    run, out = RunLayout(str(tmp_path / f"run-{name}")), RunLayout(str(tmp_path / f"out-{name}"))
    write_inputs(run, docs)
    config = BuildConfig(output=run.run_dir, ingest=IngestConfig(beir_dir=str(tmp_path), split="test"),
                         embed=EmbedConfig(model=model_dir, batch_size=2, embedding_cache=cache))
    return run_embed(config, run, out, []), vectors_of(out)


def test_rebuild_with_a_warm_cache_embeds_nothing_and_gives_the_same_vectors(tmp_path, tiny_model_dir):
    cache = str(tmp_path / "cache")
    plain_stats, plain = embed_once(tmp_path, tiny_model_dir, "plain", None)
    first_stats, first = embed_once(tmp_path, tiny_model_dir, "first", cache)
    assert (first_stats["docs_texts_embedded"], first_stats["docs_from_cache"]) == (3, 0)  # d2, d3 share a text
    assert (first_stats["docs_embedded"], first_stats["queries_embedded"]) == (4, 2)
    assert plain_stats["docs_texts_embedded"] == 4 and plain_stats["embedding_cache"] is None
    np.testing.assert_array_equal(first[("doc", "d2")], first[("doc", "d3")])
    assert sorted(first) == sorted(plain)
    for key in plain:
        np.testing.assert_allclose(first[key], plain[key], atol=1e-5)

    second_stats, second = embed_once(tmp_path, tiny_model_dir, "second", cache)
    assert (second_stats["docs_texts_embedded"], second_stats["queries_texts_embedded"]) == (0, 0)
    assert (second_stats["docs_from_cache"], second_stats["queries_from_cache"]) == (4, 2)
    assert (second_stats["docs_embedded"], second_stats["queries_embedded"]) == (4, 2)
    for key in first:
        np.testing.assert_array_equal(second[key], first[key])

    more = [*DOCS, ("d5", "", "Aspirin lowers the risk of heart attack.")]
    third_stats, third = embed_once(tmp_path, tiny_model_dir, "third", cache, more)
    assert (third_stats["docs_texts_embedded"], third_stats["docs_from_cache"]) == (1, 4)  # only the new text
    np.testing.assert_array_equal(third[("doc", "d1")], first[("doc", "d1")])
    # the query cache is its own namespace: SAME as a query was embedded apart from SAME as a doc
    folders = embedding_cache_dirs(EmbedConfig(model=tiny_model_dir, embedding_cache=cache))
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(f) for f in folders.values())
    cached_docs = dict(kv for path in list_cache_files(folders["doc"]) for kv in read_cache_file(path))
    assert len(cached_docs) == 4 and text_key(SAME) in cached_docs
    assert not [name for name in os.listdir(folders["doc"]) if not name.endswith(".parquet")]


def test_namespace_changes_with_every_setting_that_changes_vectors():
    base = ("fp", "torch", "doc", "", None)
    names = {cache_namespace(*base)}
    for index, other in enumerate(["fp2", "onnx-int8", "query", "passage: ", 128]):
        changed = list(base)
        changed[index] = other
        names.add(cache_namespace(*changed))
    assert len(names) == 6
    assert cache_namespace(*base) == cache_namespace(*base)


def test_cache_files_round_trip_and_are_named_by_content(tmp_path):
    folder = str(tmp_path / "ns")
    assert list_cache_files(folder) == []
    entries = [(text_key("b"), np.array([0.0, 1.0], np.float32)), (text_key("a"), np.array([1.0, 0.0], np.float32))]
    path = write_cache_file(folder, entries)
    assert write_cache_file(folder, list(reversed(entries))) == path  # same content, same name
    assert list_cache_files(folder) == [path] and write_cache_file(folder, []) is None
    read = dict(read_cache_file(path))
    np.testing.assert_array_equal(read[text_key("a")], [1.0, 0.0])
    assert text_key("a") != text_key("a ") and text_hash("a") == text_hash("a ")  # exact, not normalised


def test_progress_lines_give_counts_rate_and_eta():
    assert progress_line("docs", 50, 200, 10.0) == "embedding docs: 50 / 200 texts (25%), 5.0 texts/s, ETA 30 s"
    assert progress_line("queries", 10, None, 2.0) == "embedding queries: 10 texts, 5.0 texts/s"
    lines = []
    progress = EmbedProgress("docs", 4, interval_s=0.02, log=lines.append)
    progress.start()
    progress.add(1)
    for _ in range(200):  # the reporter thread logs while texts are pending
        if lines:
            break
        __import__("time").sleep(0.01)
    assert lines and lines[0].startswith("embedding docs: 1 / 4 texts (25%)") and "texts/s, ETA" in lines[0]
    progress.add(3)
    assert lines[-1].startswith("embedding docs: 4 / 4 texts (100%)")


def test_cli_build_with_int8_and_a_warm_cache_embeds_nothing_and_gives_the_same_rows(tmp_path, tiny_model_dir,
                                                                                    monkeypatch, caplog):
    import json

    import polars as pl

    from pipelines.cli import main

    monkeypatch.setenv("NEGFORGE_ONNX_CACHE", str(tmp_path / "onnx"))
    sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "scifact-sample")
    key = ["query_id", "positive_id", "negative_id", "tier", "rank", "generator"]

    def build(name: str, *extra: str):
        run_dir = str(tmp_path / name)
        argv = ["build", "--beir", sample, "--split", "train", "--model", tiny_model_dir, "--output", run_dir,
                "--num-shards", "2", "--embed-backend", "onnx-int8", *extra]
        assert main(argv) == 0
        manifest = json.load(open(os.path.join(run_dir, "manifest.json"), encoding="utf-8"))
        rows = pl.read_parquet(os.path.join(run_dir, "negatives"), hive_partitioning=True)
        rows = rows.with_columns(pl.col("tier").cast(pl.String)).select(key).sort(key)
        return manifest, rows

    cache = str(tmp_path / "cache")
    with caplog.at_level("INFO", logger="transforms.embed_progress"):
        plain, plain_rows = build("plain")
    progress = [r.getMessage() for r in caplog.records if r.name == "transforms.embed_progress"]
    assert any(line.startswith("embedding docs: 450 / 450 texts (100%)") and "texts/s" in line for line in progress)
    first, first_rows = build("first", "--embedding-cache", cache)
    second, second_rows = build("second", "--embedding-cache", cache)
    assert first["config"]["embed"]["backend"] == "onnx-int8" and first["config"]["embed"]["embedding_cache"] == cache
    embed_first, embed_second = first["stages"]["embed"]["stats"], second["stages"]["embed"]["stats"]
    assert embed_first["docs_texts_embedded"] > 0 and embed_first["backend"] == "onnx-int8"
    assert (embed_second["docs_texts_embedded"], embed_second["queries_texts_embedded"]) == (0, 0)
    assert embed_second["docs_from_cache"] == embed_first["docs_embedded"] == plain["counts"]["docs"]
    assert second_rows.equals(first_rows)
    assert first_rows.equals(plain_rows)


def test_progress_logs_while_a_call_runs_and_falls_quiet_after():
    import time

    lines = []
    progress = EmbedProgress("docs", None, interval_s=0.02, log=lines.append)
    progress.begin()  # a long encode call: nothing done yet, still a line every interval
    time.sleep(0.15)
    assert len(lines) >= 3 and all(line.startswith("embedding docs: 0 texts") for line in lines)
    progress.add(5)
    time.sleep(0.3)  # the call ended: one more line with the new count, then quiet, then the reporter stops
    quiet = len(lines)
    assert any(line.startswith("embedding docs: 5 texts") for line in lines)
    time.sleep(0.1)
    assert len(lines) == quiet and progress._thread is None
