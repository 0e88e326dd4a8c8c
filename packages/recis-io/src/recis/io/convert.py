"""Arrow arrays to torch: scalars to 1-D tensors, lists to `Ragged`, strings to (offsets, bytes).

Tensors view Arrow's buffers (`torch.frombuffer`), so a column costs no copy unless Arrow's layout
forbids it: bit-packed bools, and int32 offsets that `Ragged` wants as int64 (rebased to start at 0).
Nulls are resolved earlier, per file, by `fill_nulls`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import torch
from torch import Tensor

from recis.core import Ragged

StringHash = Callable[[Tensor, Tensor], Tensor]
"""`(offsets int64 (n+1,), bytes uint8) -> int64 IDs (n,)`, e.g. `recis.features.hash_strings`."""

_NUMERIC = {
    pa.int8(): torch.int8,
    pa.int16(): torch.int16,
    pa.int32(): torch.int32,
    pa.int64(): torch.int64,
    pa.uint8(): torch.uint8,
    pa.float16(): torch.float16,
    pa.float32(): torch.float32,
    pa.float64(): torch.float64,
}
SUPPORTED = "int8/16/32/64, uint8, float16/32/64, bool, string, binary, and list<...> or list<list<...>> of those"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def describe(t: pa.DataType) -> str:
    """A type's name without list field names or large_ prefixes: `list<int64>`, `list<list<string>>`."""
    if _is_list(t):
        return f"list<{describe(t.value_type)}>"
    if _is_string(t):
        return "binary" if "binary" in str(t) else "string"
    return str(t)


def check_type(t: pa.DataType, depth: int = 0) -> str | None:
    """None when RecIS can convert `t`, else why not."""
    if _is_list(t):
        return "lists nest at most two levels" if depth >= 2 else check_type(t.value_type, depth + 1)
    if t in _NUMERIC or pa.types.is_boolean(t) or _is_string(t):
        return None
    return f"{describe(t)} is not supported (supported: {SUPPORTED})"


def innermost(t: pa.DataType) -> pa.DataType:
    """The scalar type at the bottom of a (nested) list type."""
    return innermost(t.value_type) if _is_list(t) else t


def default_fill(t: pa.DataType) -> Any:
    """The value a null becomes under `nulls="fill"`: 0, False, empty string or empty list."""
    if _is_list(t):
        return []
    if _is_string(t):
        return b"" if "binary" in str(t) else ""
    return False if pa.types.is_boolean(t) else 0


def count_nulls(arr: pa.Array | pa.ChunkedArray) -> int:
    """Nulls at every nesting level (a null list and a null inside a list both count)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    total = 0
    for c in chunks:
        total += c.null_count
        if _is_list(c.type):
            total += count_nulls(_list_values(c))
    return total


def fill_nulls(arr: pa.Array, fill: Any) -> pa.Array:
    """Replaces nulls: a null list becomes [], a null scalar (at any depth) becomes `fill`."""
    if _is_list(arr.type):
        if arr.null_count:
            arr = pc.fill_null(arr, pa.scalar([], arr.type))
        values = _list_values(arr)
        if count_nulls(values):
            offsets = pc.subtract(arr.offsets, arr.offsets[0])
            arr = type(arr).from_arrays(offsets, fill_nulls(values, fill), type=arr.type)
        return arr
    return pc.fill_null(arr, pa.scalar(fill, arr.type)) if arr.null_count else arr


def _list_values(arr: pa.Array) -> pa.Array:
    """The child values a (possibly sliced) list array's rows refer to."""
    first, last = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
    return arr.values.slice(first, last - first)


def _offsets(arr: pa.Array) -> tuple[np.ndarray, int]:
    """A list or string array's offsets as int64 from 0 (n + 1,), and its first raw offset."""
    t = arr.type
    large = pa.types.is_large_list(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    width = np.int64 if large else np.int32
    raw = np.frombuffer(arr.buffers()[1], width, len(arr) + 1, arr.offset * np.dtype(width).itemsize)
    first = int(raw[0])
    return np.subtract(raw, first, dtype=np.int64), first


def _buffer(buf: pa.Buffer | None, dtype: torch.dtype, start: int, count: int) -> Tensor:
    """`count` items of `buf` from item `start`, zero-copy (a tensor viewing Arrow's memory)."""
    if buf is None or count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype, count=count, offset=start * dtype.itemsize)


class Column:
    """One converted column of a chunk, from which batches are cut without touching Arrow again.

    `values` is a tensor (viewing Arrow's buffer) or the inner Column of a list; `offsets` (int64
    from 0, numpy) is None for scalars. Cutting a batch costs a few microseconds per column.
    """

    __slots__ = ("offsets", "values")

    def __init__(self, values: Tensor | Column, offsets: np.ndarray | None):
        self.values, self.offsets = values, offsets

    @classmethod
    def of(cls, arr: pa.Array, string_hash: StringHash | None = None) -> Column:
        """Converts an Arrow array without nulls; `string_hash` turns strings into int64 IDs."""
        t = arr.type
        if t in _NUMERIC:
            return cls(_buffer(arr.buffers()[1], _NUMERIC[t], arr.offset, len(arr)), None)
        if pa.types.is_boolean(t):  # bit-packed in Arrow: the one layout that must be copied
            return cls(torch.from_numpy(arr.to_numpy(zero_copy_only=False)), None)
        if not (_is_list(t) or _is_string(t)):
            raise TypeError(f"[recis.io] cannot convert {describe(t)}: supported are {SUPPORTED}")
        offsets, first = _offsets(arr)
        size = int(offsets[-1])
        if _is_list(t):
            return cls(cls.of(arr.values.slice(first, size), string_hash), offsets)
        data = _buffer(arr.buffers()[2], torch.uint8, first, size)
        if string_hash is not None:
            return cls(string_hash(torch.from_numpy(offsets), data), None)
        return cls(data, offsets)

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1 if self.offsets is not None else len(self.values)  # type: ignore[arg-type]

    def cut(self, start: int, stop: int) -> Tensor | Ragged:
        """Rows [start, stop) as a tensor or Ragged (values zero-copy, offsets a small new array)."""
        if self.offsets is None:
            assert isinstance(self.values, Tensor)
            return self.values[start:stop]
        offsets = self.offsets[start : stop + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        values = self.values.cut(lo, hi) if isinstance(self.values, Column) else self.values[lo:hi]
        return Ragged(values, torch.from_numpy(offsets - lo if lo else offsets), validate=False)


def join(parts: list[Tensor | Ragged]) -> Tensor | Ragged:
    """Stacks the rows of a batch's parts cut from consecutive chunks (copies; one part is returned as is)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], Ragged):
        return Ragged.cat(parts)  # type: ignore[arg-type]  # parts of one column share their kind
    return torch.cat(parts)  # type: ignore[arg-type]


def to_torch(arr: pa.Array | pa.ChunkedArray, string_hash: StringHash | None = None) -> Tensor | Ragged:
    """Converts one column without nulls.

    Args:
        arr: an Arrow array (a chunked one is combined first, which copies when it has several chunks).
        string_hash: when given, strings become its int64 IDs instead of Raggeds of bytes.

    Returns:
        A 1-D tensor for scalars; a `Ragged` for lists (nested for list<list>) and for strings
        (uint8 values, one row per string) unless `string_hash` turns them into int64 IDs.

    Examples:
        >>> to_torch(pa.array([[1, 2], [], [3]])).tolist()
        [[1, 2], [], [3]]
        >>> to_torch(pa.array(["ab", "c"])).tolist()
        [[97, 98], [99]]
        >>> to_torch(pa.array(["ab", "c"]), string_hash=lambda offsets, data: offsets[1:]).tolist()
        [2, 3]
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    column = Column.of(arr, string_hash)
    return column.cut(0, column.rows)


def to_columns(table: pa.Table, string_hashes: Mapping[str, StringHash]) -> dict[str, Column]:
    """Converts every column of `table`; string columns named in `string_hashes` are hashed."""
    return {
        name: Column.of(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0), string_hashes.get(name))
        for name, col in zip(table.column_names, table.columns, strict=True)
    }
