"""Element-wise and row transforms of ID and number columns: Bucketize, Mod and Truncate.

Each takes a dense tensor or a `Ragged` (row structure and weights kept). Bucketize and Mod run
as one fused C++ call over the flat values (`fused.py`); their references are
`torch.bucketize(right=True)` and `torch.remainder`. Truncate is the core's `Ragged.truncate`.
Bucketize's TensorFlow semantics round the boundaries to float32 here, so the kernel stays float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from recis.core import Ragged

from . import fused
from .columns import Column, describe, is_strings
from .fused import check_int

Semantics = Literal["float64", "tensorflow"]
SEMANTICS = get_args(Semantics)


def boundaries_tensor(boundaries: Sequence[float] | Tensor, semantics: str = "float64") -> Tensor:
    """Boundaries as a float64 tensor, checked: finite and strictly increasing (ValueError otherwise).

    With `semantics="tensorflow"` they are then rounded to float32 (TensorFlow's `boundaries` attr
    is a list of float32), which must keep them finite and distinct.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"bucketize: semantics must be 'float64' or 'tensorflow', got {semantics!r}")
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
    return _as_float32(b) if semantics == "tensorflow" else b


def _as_float32(b: Tensor) -> Tensor:
    """Float64 boundaries rounded to the float32 TensorFlow keeps (and back to float64 for the kernel)."""
    b32 = b.to(torch.float32).to(torch.float64)
    if not bool(torch.isfinite(b32).all()):
        i = int((~torch.isfinite(b32)).nonzero()[0, 0])
        raise ValueError(f"bucketize: boundaries[{i}]={b[i].item()!r} overflows float32 (TensorFlow semantics)")
    if len(b32) > 1 and not bool((b32.diff() > 0).all()):
        i = int((b32.diff() <= 0).nonzero()[0, 0])
        raise ValueError(
            f"bucketize: boundaries[{i}]={b[i].item()!r} and boundaries[{i + 1}]={b[i + 1].item()!r} are the same "
            f"float32 ({b32[i].item():.9g}); TensorFlow semantics need distinct float32 boundaries"
        )
    return b32


def _column(x: Any, op: str) -> Column:
    if not isinstance(x, (Tensor, Ragged)):
        raise TypeError(f"{op}: expected a Tensor or a Ragged, got {type(x).__name__}")
    return x


def bucketize(x: Column, boundaries: Sequence[float] | Tensor, semantics: Semantics = "float64") -> Column:
    """Bucket IDs: the number of boundaries <= each value (int64).

    Bucket 0 is (-inf, b[0]), bucket i is [b[i-1], b[i]), the last is [b[-1], inf). Boundaries must
    be strictly increasing and finite; NaN values raise (fill missing values first).

    Args:
        x: numbers, a Tensor or a Ragged.
        boundaries: the bucket edges.
        semantics: "float64" (default): boundaries stay float64 and values are compared as float64,
            i.e. `torch.bucketize(x.double(), b_float64, right=True)`. "tensorflow": TensorFlow's
            `Bucketize` exactly: boundaries are rounded to float32 (its `boundaries` attr is a list
            of float32), float64 values are compared with them widened, float32 values in float32,
            and integer values are rounded to float32 first. They differ where a boundary is not a
            float32: a float32 0.7 (0.699999988...) is below the float64 boundary 0.7 but equal to
            TensorFlow's float32 one.

    Examples:
        >>> bucketize(torch.tensor([-1.0, 0.0, 0.5, 7.0]), [0.0, 1.0]).tolist()
        [0, 1, 1, 2]
        >>> x = torch.tensor([0.7])  # float32
        >>> bucketize(x, [0.7]).tolist(), bucketize(x, [0.7], semantics="tensorflow").tolist()
        ([0], [1])
    """
    b = boundaries_tensor(boundaries, semantics)
    return fused.bucketize_many([_column(x, "bucketize")], [b], [semantics == "tensorflow"])[0]


def mod(x: Column, modulus: int) -> Column:
    """IDs mod `modulus` with Python's sign rule (`torch.remainder`): results in [0, modulus).

    Examples:
        >>> mod(torch.tensor([-7, 7, 12]), 5).tolist()
        [3, 2, 2]
    """
    x = _column(x, "mod")
    modulus = check_int("mod", "modulus", modulus, 1)
    if isinstance(x, Tensor) and (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool):
        raise TypeError(f"mod: IDs must be integers, got {x.dtype}")
    return fused.mod_many([x], [modulus])[0]


def truncate(x: Column, max_len: int, side: str = "right") -> Ragged:
    """Keeps at most `max_len` values per row of a list column (IDs, numbers or strings).

    `side="right"` keeps each row's first values; `side="left"` keeps its last ones (the most
    recent events of a history stored oldest first). A string column (one string per row) is
    not a list and is refused.

    Examples:
        >>> truncate(Ragged.from_list([[1, 2, 3], [4]]), 2, side="left").tolist()
        [[2, 3], [4]]
    """
    if not isinstance(x, Ragged) or is_strings(x):
        raise TypeError(f"truncate: expected a list column (a Ragged), got {describe(x)}")
    return x.truncate(check_int("truncate", "max_len", max_len, 0), side)
