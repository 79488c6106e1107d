"""Ids and text hashes without fixed width (issue 13): the UTF-8 blob + offsets layout, the shard store, order."""

from __future__ import annotations

import zipfile

import numpy as np
import pyarrow as pa
import pytest

from schemas.layout import RunLayout
from transforms.index import DocBlock, doc_blocks_from_table, fill_shard, sorted_shard, train_index, write_shard
from transforms.shard_search import ShardSearcher, load_npz, load_store
from transforms.string_column import StringColumn, as_object_strings, pack_strings
from transforms.topk import merge_topk

LONG_ID = "L" * 500 + "é" * 6  # 512 UTF-8 bytes, the ingest cap
TRICKY = ["b", "a", "", "é", "e\u0301", "日本語", "😀", "Z", "a b", "ab", LONG_ID, "ß", "\u00a0x"]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_round_trip_keeps_every_string_including_non_ascii_and_a_512_byte_id():
    assert len(LONG_ID.encode("utf-8")) == 512
    data, offsets = pack_strings(TRICKY)
    assert data.dtype == np.uint8 and offsets.dtype == np.int64 and offsets[0] == 0
    column = StringColumn(data, offsets)
    assert len(column) == len(TRICKY) and column.tolist() == TRICKY
    assert [column[i] for i in range(len(TRICKY))] == TRICKY and column[-1] == TRICKY[-1]
    assert all(type(s) is str for s in column.to_numpy())


def test_take_decodes_only_the_rows_asked_for_in_their_order_and_shape():
    column = StringColumn.from_strings(TRICKY)
    rows = np.array([10, 0, 5, 10, -1])
    taken = column[rows]
    assert taken.dtype == object and taken.tolist() == [TRICKY[i] for i in rows]
    assert column.take(np.array([[1, 2], [3, 4]])).tolist() == [TRICKY[1:3], TRICKY[3:5]]
    assert column[1:4].tolist() == TRICKY[1:4]
    assert column[np.arange(len(TRICKY)) % 2 == 0].tolist() == TRICKY[::2]
    assert column[np.zeros(0, np.int64)].tolist() == []
    with pytest.raises(IndexError):
        column[np.array([len(TRICKY)])]
    with pytest.raises(IndexError):
        column[len(TRICKY)]


def test_size_is_proportional_to_total_bytes_not_rows_times_the_longest():
    ids = [f"doc-{i:06d}" for i in range(10_000)] + [LONG_ID]
    data, offsets = pack_strings(ids)
    total = sum(len(d.encode("utf-8")) for d in ids)
    assert data.nbytes == total and offsets.nbytes == 8 * (len(ids) + 1)
    fixed = np.asarray(ids, dtype=str)  # what the old layout held: 4 bytes x 506 code points per row
    assert fixed.nbytes == len(ids) * 4 * len(LONG_ID)
    assert data.nbytes + offsets.nbytes < fixed.nbytes / 50


def test_empty_columns_missing_values_and_damaged_offsets():
    data, offsets = pack_strings([])
    assert data.size == 0 and offsets.tolist() == [0] and len(StringColumn(data, offsets)) == 0
    assert pack_strings(["", ""])[1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="missing"):
        pack_strings(["a", None])
    with pytest.raises(ValueError, match="rebuild"):
        StringColumn(np.zeros(3, np.uint8), np.array([0, 1, 2], np.int64))
    sliced = pa.array(["xx", "yy", "zz"], pa.large_string()).slice(1)  # non-zero Arrow offset
    assert StringColumn.from_strings(sliced).tolist() == ["yy", "zz"]


def test_object_order_is_the_fixed_width_order_byte_for_byte():
    """Ties are broken by id: object arrays (Python str) must sort exactly as the old `U` arrays did."""
    rng = np.random.default_rng(3)
    ids = TRICKY + [f"d{i}" for i in rng.permutation(50)]
    as_objects, as_fixed = as_object_strings(ids), np.asarray(ids, dtype=str)
    assert as_objects.dtype == object
    np.testing.assert_array_equal(np.argsort(as_objects, kind="stable"), np.argsort(as_fixed, kind="stable"))
    priority = rng.integers(0, 3, len(ids)).astype(np.uint64)
    np.testing.assert_array_equal(np.lexsort((as_objects, priority)), np.lexsort((as_fixed, priority)))
    scores = np.full(len(ids), 0.5, np.float32)  # one big tie: the order is the id order
    _, merged = merge_topk([(scores[:20], as_fixed[:20]), (scores[20:], list(ids[20:]))], len(ids))
    assert merged.dtype == object and merged.tolist() == sorted(set(ids) - {""})


def test_doc_blocks_carry_object_ids_not_fixed_width_arrays():
    table = pa.table(
        {
            "id": ["short", LONG_ID, "q"],
            "kind": ["doc", "doc", "query"],
            "vector": pa.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], pa.list_(pa.float32(), 2)),
            "text_hash": ["h1", "h2", "h3"],
        }
    )
    (block,) = doc_blocks_from_table(table, 10)
    assert block.doc_ids.dtype == object and block.text_hashes.dtype == object
    assert block.doc_ids.tolist() == ["short", LONG_ID] and block.text_hashes.tolist() == ["h1", "h2"]


def test_shard_store_holds_blobs_without_pickle_memory_mapped_and_searchable(tmp_path):
    rng = np.random.default_rng(11)
    ids = [f"doc-{i:04d}" for i in range(200)] + [LONG_ID, "日本語", "é"]
    vectors = unit(rng.standard_normal((len(ids), 8)))
    hashes = as_object_strings([f"h{i}-ü" for i in range(len(ids))])
    block = sorted_shard([DocBlock(as_object_strings(ids), vectors, hashes)], 8)
    run = RunLayout(str(tmp_path))
    index, docs = fill_shard(train_index("Flat", 8, block), block)
    write_shard(run, 0, 1, index, docs)
    path = run.shard_store(0, 1)

    with np.load(path, allow_pickle=False) as raw:  # plain arrays only: no pickle needed to read any member
        assert sorted(raw.files) == sorted(
            ["format", "vectors", "doc_ids.data", "doc_ids.offsets", "text_hashes.data", "text_hashes.offsets"]
        )
        assert raw["doc_ids.data"].dtype == np.uint8 and raw["doc_ids.offsets"].dtype == np.int64
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        id_bytes = archive.getinfo("doc_ids.data.npy").file_size
    assert id_bytes < 200 + sum(len(d.encode("utf-8")) for d in ids)  # + the .npy header, not n x 2 KiB

    store = load_store(path)
    assert isinstance(store["doc_ids"].data.base, np.memmap) and isinstance(store["vectors"], np.memmap)  # a view
    assert store["doc_ids"].tolist() == sorted(ids)
    by_id = dict(zip(ids, hashes.tolist()))
    assert store["text_hashes"].tolist() == [by_id[d] for d in sorted(ids)]

    searcher = ShardSearcher.load(run, 0, 1, nprobe=1)
    _, local = searcher.search(vectors[ids.index(LONG_ID)][None, :], 3)
    found = searcher.doc_ids[local[0]]
    assert found.dtype == object and found[0] == LONG_ID


def test_an_old_fixed_width_store_is_refused_with_a_rebuild_hint(tmp_path):
    path = str(tmp_path / "old.store.npz")
    np.savez(path, vectors=np.zeros((1, 2), np.float32), doc_ids=np.array(["a"]), text_hashes=np.array(["h"]))
    assert load_npz(path)["doc_ids"].tolist() == ["a"]
    with pytest.raises(ValueError, match="format 1.*rebuild the index stage"):
        load_store(path)


def test_rows_of_finds_the_first_row_of_each_value_it_holds():
    column = StringColumn.from_strings(["a", "b", "b", "é", "zz", ""])
    assert column.rows_of(["b", "é", "missing", "", "a", "b"]) == {"b": 1, "é": 3, "": 5, "a": 0}
    assert column.rows_of([]) == {}
    assert StringColumn.from_strings([]).rows_of(["a"]) == {}
