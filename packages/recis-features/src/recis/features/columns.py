"""What a feature column can be, and how Python input becomes one.

A column is a dense `Tensor` (one value per row, or a fixed number) or a `Ragged`. Strings use
Arrow's layout, as the reader delivers them: a `Ragged` whose values are uint8 bytes holds one
string per row, and a `Ragged` of such a `Ragged` is a list<string> column. Python lists of `str`
(or of lists of `str`) are accepted for convenience and encoded once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from recis.core import Ragged

Column = Tensor | Ragged


def encode_strings(strings: Sequence[str | bytes]) -> tuple[Tensor, Tensor]:
    """Python strings (UTF-8 encoded) or bytes to Arrow layout: (int64 offsets (n+1,), uint8 data).

    Examples:
        >>> offsets, data = encode_strings(["ab", "", "c"])
        >>> offsets.tolist(), bytes(data.tolist())
        ([0, 2, 2, 3], b'abc')
    """
    raw = [s.encode() if isinstance(s, str) else bytes(s) for s in strings]
    offsets = torch.zeros(len(raw) + 1, dtype=torch.int64)
    torch.cumsum(torch.tensor([len(r) for r in raw], dtype=torch.int64), 0, out=offsets[1:])
    data = (
        torch.frombuffer(bytearray(b"".join(raw)), dtype=torch.uint8)
        if offsets[-1]
        else torch.empty(0, dtype=torch.uint8)
    )
    return offsets, data


def string_column(strings: Sequence[Any]) -> Ragged:
    """Python strings (UTF-8) or bytes to a string column; a list of lists gives a list<string> column.

    Examples:
        >>> col = string_column(["ab", "", "c"])
        >>> col.lengths().tolist(), col.values.dtype
        ([2, 0, 1], torch.uint8)
        >>> string_column([["a", "b"], []]).lengths().tolist()
        [2, 0]
    """
    if any(isinstance(s, (list, tuple)) for s in strings):
        rows = [list(s) for s in strings]
        inner = string_column([s for row in rows for s in row])
        return Ragged.from_lengths(inner, [len(row) for row in rows])
    offsets, data = encode_strings(strings)
    return Ragged(data, offsets, validate=False)


def as_column(x: Any) -> Column:
    """Accepts a Tensor, a Ragged, or a Python list of str/bytes (or of lists of them)."""
    if isinstance(x, (Tensor, Ragged)):
        return x
    if isinstance(x, (list, tuple)) and all(isinstance(s, (str, bytes, list, tuple)) for s in x):
        return string_column(x)
    raise TypeError(f"expected a Tensor, a Ragged or a list of str, got {describe(x)}")


def is_strings(x: Any) -> bool:
    """True for a string column: a Ragged of uint8 bytes, one string per row."""
    return isinstance(x, Ragged) and isinstance(x.values, Tensor) and x.values.dtype == torch.uint8


def is_string_list(x: Any) -> bool:
    """True for a list<string> column: a Ragged whose values are a string column."""
    return isinstance(x, Ragged) and is_strings(x.values)


def is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def innermost(x: Column) -> Tensor:
    """The flat values under any nesting."""
    while isinstance(x, Ragged):
        x = x.values
    return x


def describe(x: Any) -> str:
    """A short description of a column for error messages."""
    if is_strings(x):
        return f"a string column ({x.num_rows} rows)"
    if is_string_list(x):
        return f"a list<string> column ({x.num_rows} rows)"
    if isinstance(x, Ragged):
        depth = "nested " if isinstance(x.values, Ragged) else ""
        return f"a {depth}Ragged of {innermost(x).dtype} ({x.num_rows} rows)"
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def map_values(x: Column, fn: Callable[[Tensor], Tensor]) -> Column:
    """Applies fn to the innermost values, keeping every level's offsets and weights."""
    if isinstance(x, Ragged):
        return x.with_values(map_values(x.values, fn))
    return fn(x)
