"""The ingest stage end to end on DirectRunner: counts, tables, dead-letter reasons, memfs:// paths, early errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import BeamIOError, CompressedFile, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing import test_pipeline

from pipelines.stage_ingest import run_ingest
from schemas.build_config import BuildConfig, IngestConfig
from schemas.inputs import DEADLETTER_SCHEMA, DOCS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA, passage_of
from schemas.layout import RunLayout
from schemas.negatives import text_hash
from transforms.beir import BeirLayoutError
from transforms.ingest_checks import InputLayoutError, validate_inputs

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
MEMFS_ROOT_ENV = "NEGFORGE_TEST_MEMFS_ROOT"


class MemFileSystem(FileSystem):
    """memfs://path -> files under $NEGFORGE_TEST_MEMFS_ROOT, with object-store semantics (no directories)."""

    @classmethod
    def scheme(cls):
        return "memfs"

    @staticmethod
    def _local(path: str) -> str:
        assert path.startswith("memfs://"), path
        return os.path.join(os.environ[MEMFS_ROOT_ENV], path[len("memfs://") :])

    @staticmethod
    def _remote(local: str) -> str:
        return "memfs://" + os.path.relpath(local, os.environ[MEMFS_ROOT_ENV])

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # an object store has no directories

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for folder, _, names in os.walk(os.environ[MEMFS_ROOT_ENV]):
            for name in names:
                remote = self._remote(os.path.join(folder, name))
                if remote.startswith(dir_or_prefix):
                    yield self.metadata(remote)

    def _open(self, path, mode, compression_type):
        if "w" in mode:
            os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
        raw = open(self._local(path), mode)
        compression = FileSystem._get_compression_type(path, compression_type)
        return raw if compression == "uncompressed" else CompressedFile(raw, compression_type=compression)

    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return self._open(path, "rb", compression_type)

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            os.makedirs(os.path.dirname(self._local(destination)), exist_ok=True)
            shutil.copyfile(self._local(source), self._local(destination))

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for path in paths:
            local = self._local(path)
            if os.path.isdir(local):
                shutil.rmtree(local)
            elif os.path.exists(local):
                os.remove(local)
            else:
                raise BeamIOError("delete failed", {path: FileNotFoundError(path)})


def _read_table(folder: str, schema: pa.Schema) -> list[dict]:
    """Every row of a folder of Parquet parts (any file system), sorted, after checking the schema."""
    files = sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "*.parquet")])[0].metadata_list)
    assert files, f"no Parquet part in {folder}"
    tables = []
    for path in files:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(pa.BufferReader(handle.read())))
    table = pa.concat_tables(tables)
    assert table.schema.remove_metadata().equals(schema.remove_metadata()), table.schema
    return sorted(table.to_pylist(), key=lambda row: tuple(str(v) for v in row.values()))


def _run(tmp_path, beam_args=None, **ingest):
    out = RunLayout(str(tmp_path / "run"))
    config = BuildConfig(output=out.run_dir, ingest=IngestConfig(**ingest))
    pipeline = None if beam_args else test_pipeline.TestPipeline(runner="FnApiRunner")
    summary = run_ingest(config, out, out, beam_args or [], test_pipeline=pipeline)
    return summary, out


def _files(summary) -> dict:
    """Per-file counts keyed by the file name relative to the fixtures folder."""
    return {Path(p).relative_to(FIXTURES).as_posix(): c for p, c in summary["files"].items()}


def _counts(read, accepted, dead_lettered=0, out_of_split=0):
    assert read == accepted + dead_lettered + out_of_split
    return {"read": read, "accepted": accepted, "dead_lettered": dead_lettered, "out_of_split": out_of_split}


def test_beir_train_split_reads_crlf_qrels_and_multi_positive_queries(tmp_path):
    assert b"\r\n" in (FIXTURES / "beir_clean" / "qrels" / "train.tsv").read_bytes()  # guards the fixture
    summary, out = _run(tmp_path, beir_dir=str(FIXTURES / "beir_clean"), split="train")
    assert _files(summary) == {
        "beir_clean/corpus.jsonl": _counts(6, 6),
        "beir_clean/queries.jsonl": _counts(4, 2, out_of_split=2),
        "beir_clean/qrels/train.tsv": _counts(4, 3, out_of_split=1),
    }
    assert (summary["docs"], summary["queries"], summary["pairs"]) == (6, 2, 3)
    assert summary["deadletter_by_reason"] == {} and summary["warnings_by_reason"] == {}
    pairs = _read_table(out.inputs_table("pairs"), PAIRS_SCHEMA)
    assert pairs == [
        {"query_id": "q1", "positive_id": "d1", "score": 1},
        {"query_id": "q1", "positive_id": "d2", "score": 1},
        {"query_id": "q2", "positive_id": "d3", "score": 2},
    ]
    queries = _read_table(out.inputs_table("queries"), QUERIES_SCHEMA)
    assert queries == [
        {"query_id": "q1", "text": "what controls growth"},
        {"query_id": "q2", "text": "what binds calcium"},
    ]
    docs = {row["doc_id"]: row for row in _read_table(out.inputs_table("docs"), DOCS_SCHEMA)}
    assert sorted(docs) == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert (
        docs["d1"]["passage"] == "Gene A Gene A regulates growth." == passage_of("Gene A", "Gene A regulates growth.")
    )
    assert docs["d4"]["passage"] == "Untitled passage about mitochondria."
    assert all(row["text_hash"] == text_hash(row["passage"]) for row in docs.values())
    assert _read_table(out.deadletter_dir, DEADLETTER_SCHEMA) == []  # an empty part with the schema is written


def test_beir_test_split_selects_its_own_queries_and_pairs(tmp_path):
    summary, out = _run(tmp_path, beir_dir=str(FIXTURES / "beir_clean"), split="test")
    assert _files(summary)["beir_clean/queries.jsonl"] == _counts(4, 2, out_of_split=2)
    assert [row["query_id"] for row in _read_table(out.inputs_table("queries"), QUERIES_SCHEMA)] == ["q1", "q3"]
    assert [(r["query_id"], r["positive_id"]) for r in _read_table(out.inputs_table("pairs"), PAIRS_SCHEMA)] == [
        ("q1", "d5"),
        ("q3", "d4"),
    ]


def test_every_kind_of_bad_row_is_dead_lettered_and_every_file_balances(tmp_path):
    # Run through beam_args (not a TestPipeline) on two worker threads: counts must not depend on it.
    beam_args = ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    summary, out = _run(tmp_path, beam_args, beir_dir=str(FIXTURES / "beir_corrupt"), split="train", max_text_chars=40)
    assert _files(summary) == {
        "beir_corrupt/corpus.jsonl": _counts(11, 5, dead_lettered=6),
        "beir_corrupt/queries.jsonl": _counts(6, 3, dead_lettered=1, out_of_split=2),
        "beir_corrupt/qrels/train.tsv": _counts(15, 4, dead_lettered=10, out_of_split=1),
    }
    assert summary["deadletter_by_reason"] == {
        "invalid_json": 1,
        "missing_id": 1,
        "empty_text": 2,
        "undecodable_bytes": 1,
        "duplicate_id_conflicting_text": 2,
        "unknown_query_id": 1,
        "unknown_doc_id": 1,
        "doc_dead_lettered": 3,
        "query_dead_lettered": 1,
        "malformed_row": 2,
        "duplicate_pair_conflicting_score": 2,
    }
    assert summary["warnings_by_reason"] == {"truncated": 1, "identical_duplicate": 3}
    assert (summary["docs"], summary["queries"], summary["pairs"]) == (4, 2, 3)
    dead = _read_table(out.deadletter_dir, DEADLETTER_SCHEMA)
    by_place = {(Path(r["source"]).name, r["location"].split(" (")[0]): r["reason"] for r in dead}
    assert by_place == {
        ("corpus.jsonl", "line 2"): "invalid_json",
        ("corpus.jsonl", "line 3"): "missing_id",
        ("corpus.jsonl", "line 4"): "empty_text",
        ("corpus.jsonl", "line 5"): "undecodable_bytes",
        ("corpus.jsonl", "line 6"): "duplicate_id_conflicting_text",
        ("corpus.jsonl", "line 7"): "duplicate_id_conflicting_text",
        ("queries.jsonl", "line 4"): "empty_text",
        ("train.tsv", "line 4"): "doc_dead_lettered",
        ("train.tsv", "line 6"): "unknown_query_id",
        ("train.tsv", "line 7"): "unknown_doc_id",
        ("train.tsv", "line 8"): "doc_dead_lettered",
        ("train.tsv", "line 9"): "doc_dead_lettered",
        ("train.tsv", "line 10"): "query_dead_lettered",
        ("train.tsv", "line 11"): "malformed_row",
        ("train.tsv", "line 12"): "malformed_row",
        ("train.tsv", "line 15"): "duplicate_pair_conflicting_score",
        ("train.tsv", "line 16"): "duplicate_pair_conflicting_score",
    }
    raw_by_line = {r["location"].split(" (")[0]: r["raw"] for r in dead if r["source"].endswith("corpus.jsonl")}
    assert raw_by_line["line 5"] == '{"_id": "d5", "title": "", "text": "bad \ufffd byte"}'
    warnings = _read_table(out.warnings_dir, DEADLETTER_SCHEMA)
    assert sorted((Path(w["source"]).name, w["location"].split(" (")[0], w["reason"]) for w in warnings) == [
        ("corpus.jsonl", "line 10", "truncated"),
        ("corpus.jsonl", "line 9", "identical_duplicate"),
        ("queries.jsonl", "line 6", "identical_duplicate"),
        ("train.tsv", "line 14", "identical_duplicate"),
    ]
    docs = {r["doc_id"]: r["text"] for r in _read_table(out.inputs_table("docs"), DOCS_SCHEMA)}
    assert docs == {"d1": "alpha text one", "d8": "delta eight", "d10": "x" * 40, "d11": "epsilon eleven"}
    pairs = [(r["query_id"], r["positive_id"]) for r in _read_table(out.inputs_table("pairs"), PAIRS_SCHEMA)]
    assert pairs == [("q1", "d1"), ("q1", "d11"), ("q3", "d8")]


def test_pair_file_with_corpus_derives_ids_and_groups_positives_by_anchor(tmp_path):
    q_genes = "q:" + text_hash("How do genes work?")
    summary, out = _run(
        tmp_path, pairs_file=str(FIXTURES / "pairs.jsonl"), corpus_file=str(FIXTURES / "pairs_corpus.jsonl")
    )
    assert _files(summary) == {"pairs.jsonl": _counts(5, 5), "pairs_corpus.jsonl": _counts(2, 2)}
    assert summary["warnings_by_reason"] == {"identical_duplicate": 1} and summary["deadletter_by_reason"] == {}
    pairs = {
        (r["query_id"], r["positive_id"], r["score"]) for r in _read_table(out.inputs_table("pairs"), PAIRS_SCHEMA)
    }
    assert pairs == {
        (q_genes, "d:" + text_hash("Genes encode proteins."), 1),
        (q_genes, "d:" + text_hash("DNA is transcribed into RNA."), 1),
        ("Q7", "d:" + text_hash("RNA is a nucleic acid."), 1),
        ("Q7", "c2", 1),
    }
    queries = _read_table(out.inputs_table("queries"), QUERIES_SCHEMA)
    assert queries == [{"query_id": "Q7", "text": "What is RNA?"}, {"query_id": q_genes, "text": "How do genes work?"}]
    docs = {r["doc_id"]: r["passage"] for r in _read_table(out.inputs_table("docs"), DOCS_SCHEMA)}
    assert len(docs) == 5 and docs["c1"] == "Cells Cells divide." and docs["c2"] == "Proteins fold."
    assert (summary["docs"], summary["queries"], summary["pairs"]) == (5, 2, 4)


def test_pair_file_conflicts_kill_the_ids_involved(tmp_path):
    summary, out = _run(
        tmp_path, pairs_file=str(FIXTURES / "pairs_bad.jsonl"), corpus_file=str(FIXTURES / "pairs_corpus.jsonl")
    )
    assert _files(summary) == {
        "pairs_bad.jsonl": _counts(9, 1, dead_lettered=8),
        "pairs_corpus.jsonl": _counts(2, 1, 1),
    }
    dead = _read_table(out.deadletter_dir, DEADLETTER_SCHEMA)
    by_place = sorted((Path(r["source"]).name, int(r["location"].split()[1]), r["reason"]) for r in dead)
    assert by_place == [
        ("pairs_bad.jsonl", 1, "anchor_conflicting_query_id"),
        ("pairs_bad.jsonl", 2, "anchor_conflicting_query_id"),
        ("pairs_bad.jsonl", 3, "duplicate_id_conflicting_text"),
        ("pairs_bad.jsonl", 4, "duplicate_id_conflicting_text"),
        ("pairs_bad.jsonl", 5, "doc_dead_lettered"),
        ("pairs_bad.jsonl", 6, "invalid_field"),
        ("pairs_bad.jsonl", 7, "empty_text"),
        ("pairs_bad.jsonl", 9, "invalid_json"),
        ("pairs_corpus.jsonl", 1, "duplicate_id_conflicting_text"),
    ]
    assert [r["query_id"] for r in _read_table(out.inputs_table("queries"), QUERIES_SCHEMA)] == [
        "q:" + text_hash("eta?")
    ]


def test_whole_stage_runs_on_a_remote_style_file_system(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMFS_ROOT_ENV, str(tmp_path / "bucket"))
    shutil.copytree(FIXTURES / "beir_clean", tmp_path / "bucket" / "data" / "beir")
    out = RunLayout("memfs://runs/demo/_staging/ingest")
    config = BuildConfig(output="memfs://runs/demo", ingest=IngestConfig(beir_dir="memfs://data/beir", split="train"))
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    summary = run_ingest(config, RunLayout("memfs://runs/demo"), out, [], test_pipeline=pipeline)
    assert summary["files"] == {
        "memfs://data/beir/corpus.jsonl": _counts(6, 6),
        "memfs://data/beir/queries.jsonl": _counts(4, 2, out_of_split=2),
        "memfs://data/beir/qrels/train.tsv": _counts(4, 3, out_of_split=1),
    }
    assert (summary["docs"], summary["queries"], summary["pairs"]) == (6, 2, 3)
    pairs = [(r["query_id"], r["positive_id"]) for r in _read_table(out.inputs_table("pairs"), PAIRS_SCHEMA)]
    assert pairs == [("q1", "d1"), ("q1", "d2"), ("q2", "d3")]
    assert [r["doc_id"] for r in _read_table(out.inputs_table("docs"), DOCS_SCHEMA)] == [f"d{i}" for i in range(1, 7)]
    assert _read_table(out.warnings_dir, DEADLETTER_SCHEMA) == []
    staged = tmp_path / "bucket" / "runs" / "demo" / "_staging" / "ingest"
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "deadletter/part-00000-of-00001.parquet",
        "inputs/docs/part-00000-of-00001.parquet",  # one part per read range of the corpus
        "inputs/pairs/part-00000-of-00001.parquet",
        "inputs/queries/part-00000-of-00001.parquet",
        "stats/ingest.json",
        "warnings/part-00000-of-00001.parquet",
    ]


def _copy_beir(tmp_path) -> Path:
    target = tmp_path / "beir"
    shutil.copytree(FIXTURES / "beir_clean", target)
    return target


def test_missing_files_and_wrong_layouts_fail_before_any_pipeline(tmp_path):
    beir = _copy_beir(tmp_path)
    with pytest.raises(BeirLayoutError, match=r"qrels/dev\.tsv not found.*splits found: test, train"):
        validate_inputs(IngestConfig(beir_dir=str(beir), split="dev"))
    (beir / "queries.jsonl").unlink()
    with pytest.raises(BeirLayoutError, match=r"queries\.jsonl not found"):
        validate_inputs(IngestConfig(beir_dir=str(beir), split="train"))
    with pytest.raises(FileNotFoundError, match=r"--pairs .*nope\.jsonl not found"):
        validate_inputs(IngestConfig(pairs_file=str(tmp_path / "nope.jsonl")))
    with pytest.raises(InputLayoutError, match=r"is a BEIR folder.*--beir"):
        validate_inputs(IngestConfig(pairs_file=str(FIXTURES / "beir_clean")))
    with pytest.raises(InputLayoutError, match=r"none of its first 6 rows is valid.*\"positive\""):
        validate_inputs(IngestConfig(pairs_file=str(FIXTURES / "beir_clean" / "corpus.jsonl")))
    (tmp_path / "empty.jsonl").write_bytes(b"\n\n")
    with pytest.raises(InputLayoutError, match=r"empty\.jsonl holds no rows"):
        validate_inputs(
            IngestConfig(pairs_file=str(FIXTURES / "pairs.jsonl"), corpus_file=str(tmp_path / "empty.jsonl"))
        )


def test_run_ingest_refuses_a_swapped_file_without_writing_anything(tmp_path):
    beir = _copy_beir(tmp_path / "in")
    shutil.copyfile(beir / "queries.jsonl", beir / "qrels" / "train.tsv")  # qrels replaced by JSON lines
    with pytest.raises(InputLayoutError, match=r"train\.tsv: none of its first 4 rows is valid.*query-id<TAB>"):
        _run(tmp_path, beir_dir=str(beir), split="train")
    assert not (tmp_path / "run").exists()


def test_dry_run_builds_the_graph_but_writes_nothing(tmp_path):
    summary, _ = _run(tmp_path, ["--runner=FnApiRunner", "--dry_run=true"], pairs_file=str(FIXTURES / "pairs.jsonl"))
    assert summary == {}
    assert not (tmp_path / "run").exists()
