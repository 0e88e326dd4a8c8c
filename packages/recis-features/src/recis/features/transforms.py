"""Element-wise and row transforms of ID and number columns: Bucketize, Mod and Truncate.

Each takes a dense tensor or a `Ragged` (row structure and weights kept). Bucketize and Mod run
as one fused C++ call over the flat values (`fused.py`); their references are
`torch.bucketize(right=True)` and `torch.remainder`. Truncate is the core's `Ragged.truncate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from recis.core import Ragged

from . import fused
from .columns import Column, describe, is_strings


def boundaries_tensor(boundaries: Sequence[float] | Tensor) -> Tensor:
    """Boundaries as a float64 tensor, checked: finite and strictly increasing (ValueError otherwise)."""
    b = torch.as_tensor(boundaries, dtype=torch.float64).reshape(-1).contiguous()
    if not bool(torch.isfinite(b).all()):
        i = int((~torch.isfinite(b)).nonzero()[0, 0])
        raise ValueError(f"bucketize: boundaries[{i}] is not finite")
    steps = b.diff()
    if len(steps) and not bool((steps > 0).all()):
        i = int((steps <= 0).nonzero()[0, 0])
        raise ValueError(
            f"bucketize: boundaries must be strictly increasing, got boundaries[{i}]={b[i].item()} >= "
            f"boundaries[{i + 1}]={b[i + 1].item()}"
        )
    return b


def _column(x: Any, op: str) -> Column:
    if not isinstance(x, (Tensor, Ragged)):
        raise TypeError(f"{op}: expected a Tensor or a Ragged, got {type(x).__name__}")
    return x


def bucketize(x: Column, boundaries: Sequence[float] | Tensor) -> Column:
    """Bucket IDs: the number of boundaries <= each value (int64).

    Bucket 0 is (-inf, b[0]), bucket i is [b[i-1], b[i]), the last is [b[-1], inf): TensorFlow's
    `Bucketize` and `torch.bucketize(x, b, right=True)`. Boundaries must be strictly increasing and
    finite; NaN values raise (fill missing values first).

    Example:
        >>> bucketize(torch.tensor([-1.0, 0.0, 0.5, 7.0]), [0.0, 1.0]).tolist()
        [0, 1, 1, 2]
    """
    return fused.bucketize_many([_column(x, "bucketize")], [boundaries_tensor(boundaries)])[0]


def mod(x: Column, modulus: int) -> Column:
    """IDs mod `modulus` with Python's sign rule (`torch.remainder`): results in [0, modulus).

    Example:
        >>> mod(torch.tensor([-7, 7, 12]), 5).tolist()
        [3, 2, 2]
    """
    x = _column(x, "mod")
    if modulus <= 0:
        raise ValueError(f"mod: the modulus must be > 0, got {modulus}")
    if isinstance(x, Tensor) and (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool):
        raise TypeError(f"mod: IDs must be integers, got {x.dtype}")
    return fused.mod_many([x], [modulus])[0]


def truncate(x: Column, max_len: int, side: str = "right") -> Ragged:
    """Keeps at most `max_len` values per row of a list column (IDs, numbers or strings).

    `side="right"` keeps each row's first values; `side="left"` keeps its last ones (the most
    recent events of a history stored oldest first). A string column (one string per row) is
    not a list and is refused.

    Example:
        >>> truncate(Ragged.from_list([[1, 2, 3], [4]]), 2, side="left").tolist()
        [[2, 3], [4]]
    """
    if not isinstance(x, Ragged) or is_strings(x):
        raise TypeError(f"truncate: expected a list column (a Ragged), got {describe(x)}")
    return x.truncate(max_len, side)
