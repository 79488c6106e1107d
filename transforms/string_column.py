"""Strings (doc ids, text hashes) stored without fixed width: one UTF-8 blob + int64 offsets (Arrow's layout).

A fixed-width numpy `U` array costs 4 bytes x the longest string for every row, so one 512-byte id makes every
row 2 KiB (issue 13). Here a column of n strings is

    data    [total bytes] uint8, the UTF-8 bytes of all strings back to back
    offsets [n + 1] int64, string i is data[offsets[i]:offsets[i + 1]] (offsets[0] == 0)

so its size is proportional to the total bytes. Both arrays are plain (no pickle) and memory-mappable;
StringColumn decodes only the rows asked for. In memory, strings travel as numpy object arrays of Python str:
Python str comparison is code point order, the same order numpy `U` comparison gives, so sorts and lexsort
tie-breaks by id are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property

import numpy as np
import pyarrow as pa


def as_object_strings(values: Iterable[str] | np.ndarray) -> np.ndarray:
    """Flat [n] object array of Python str (from a list, an Arrow array, a numpy array of any shape or a
    StringColumn)."""
    if isinstance(values, StringColumn):
        return values.take(np.arange(len(values)))
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_pylist()
    elif isinstance(values, np.ndarray):
        values = values.ravel().tolist()
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]  # np.str_ -> str; slice assignment keeps it 1-D whatever the contents
    return out


def pack_strings(values: Iterable[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data [total bytes] uint8, offsets [n + 1] int64): the UTF-8 bytes of `values` back to back, Arrow's
    large_string layout. Raises ValueError on a missing value (None)."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        values = values.tolist()
    array = pa.array(values, type=pa.large_string())
    if array.null_count:
        raise ValueError(f"{array.null_count} of {len(array)} strings are missing (None); every row needs one")
    n = len(array)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, n + 1, array.offset * 8) if n else np.zeros(1, np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buffer, np.uint8)[start:stop] if data_buffer is not None and stop > start else None
    return (np.zeros(0, np.uint8) if data is None else data.copy()), (offsets - start).astype(np.int64)


class StringColumn:
    """Read-only column of n strings over (data uint8, offsets int64) arrays, e.g. memory-mapped from a shard
    store; column[rows] decodes just those rows into an object array of str."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        if offsets.ndim != 1 or len(offsets) < 1 or offsets.dtype != np.int64 or data.ndim != 1:
            raise ValueError("a string column needs 1-D uint8 data and 1-D int64 offsets of length n + 1")
        if int(offsets[0]) != 0 or int(offsets[-1]) != len(data):
            raise ValueError(
                f"string offsets span [{int(offsets[0])}, {int(offsets[-1])}] but data holds {len(data)}"
                " bytes; the store is damaged: rebuild the index stage"
            )
        # plain ndarray views (no copy; a memmap stays mapped): slicing a np.memmap subclass costs a Python
        # __array_finalize__ per row, which dominated mining's id decoding (profile of bench/mine_dense_stage.py)
        self.data, self.offsets = data.view(np.ndarray), offsets.view(np.ndarray)

    @classmethod
    def from_strings(cls, values: Iterable[str] | np.ndarray) -> StringColumn:
        return cls(*pack_strings(values))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes)

    @cached_property
    def fixed_width(self) -> np.ndarray | None:
        """The strings as one fixed-width bytes array (a view of data, no copy) when they all have one length
        (text hashes: 16 hex digits), else None; worked out once per column."""
        n, offsets = len(self), self.offsets
        width = int(offsets[-1]) // n if n else 0
        fixed = n and width and int(offsets[-1]) == width * n and np.array_equal(offsets, np.arange(n + 1) * width)
        return self.data.view(f"S{width}") if fixed else None

    def rows_of(self, values: Iterable[str]) -> dict[str, int]:
        """{value: first row holding it} for the values the column holds: one hashed pass over the column (Arrow's
        index_in on a zero-copy view of data and offsets), never a decode per comparison (issue 15: bisecting a
        memory-mapped column per id decoded ~11 rows per lookup)."""
        import pyarrow.compute as pc

        wanted = pa.array(list(dict.fromkeys(values)), type=pa.large_string())
        if not len(wanted) or not len(self):
            return {}
        column = pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(self.offsets), pa.py_buffer(self.data))
        found = pc.index_in(column, value_set=wanted)  # [n] index into wanted, null where absent
        rows = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
        which = found.drop_null().to_numpy(zero_copy_only=False)
        out: dict[str, int] = {}
        for value, row in zip(wanted.take(pa.array(which)).to_pylist(), rows.tolist()):
            out.setdefault(value, row)
        return out

    def _decode(self, i: int) -> str:
        return bytes(self.data[int(self.offsets[i]) : int(self.offsets[i + 1])]).decode("utf-8")

    def take(self, rows) -> np.ndarray:
        """The strings at `rows` (any int array shape) as an object array of the same shape."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(self)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for a column of {n} strings")
        rows = np.where(rows < 0, rows + n, rows)
        starts, stops = self.offsets[rows.ravel()], self.offsets[rows.ravel() + 1]
        data = self.data
        out = np.empty(rows.size, dtype=object)
        out[:] = [bytes(data[a:b]).decode("utf-8") for a, b in zip(starts.tolist(), stops.tolist())]
        return out.reshape(rows.shape)

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            if not -len(self) <= key < len(self):
                raise IndexError(f"row {key} out of range for a column of {len(self)} strings")
            return self._decode(int(key) % len(self))
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.take(key)

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self._decode(i)

    def tolist(self) -> list[str]:
        return list(self)

    def to_numpy(self) -> np.ndarray:
        """Every string, as an object array (for small columns and tests: a big store is read row by row)."""
        return self.take(np.arange(len(self)))
