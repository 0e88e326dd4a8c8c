"""Element-wise transforms of feature columns: Bucketize and Mod.

Each takes a dense tensor or a `Ragged` (row structure and weights kept) and runs as one C++
call over the flat values; the torch equivalents (`torch.bucketize(right=True)`,
`torch.remainder`) are the references the tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from recis.core import _C, Ragged, threads


def _per_value(x: Tensor | Ragged, fn: Callable[[Tensor], Tensor], op: str) -> Tensor | Ragged:
    if isinstance(x, Ragged):
        if isinstance(x.values, Ragged):
            return x.with_values(_per_value(x.values, fn, op))
        return x.with_values(fn(x.values))
    if isinstance(x, Tensor):
        return fn(x)
    raise TypeError(f"{op}: expected a Tensor or a Ragged, got {type(x).__name__}")


def bucketize(x: Tensor | Ragged, boundaries: Sequence[float] | Tensor) -> Tensor | Ragged:
    """Bucket IDs: the number of boundaries <= each value (int64).

    Bucket 0 is (-inf, b[0]), bucket i is [b[i-1], b[i]), the last is [b[-1], inf): TensorFlow's
    `Bucketize` and `torch.bucketize(x, b, right=True)`. Boundaries must be strictly increasing and
    finite; NaN values raise (fill missing values first).

    Example:
        >>> bucketize(torch.tensor([-1.0, 0.0, 0.5, 7.0]), [0.0, 1.0]).tolist()
        [0, 1, 1, 2]
    """
    b = torch.as_tensor(boundaries, dtype=torch.float64).reshape(-1).contiguous()

    def run(v: Tensor) -> Tensor:
        if v.dtype == torch.bool or v.dtype.is_complex:
            raise TypeError(f"bucketize: values must be numbers, got {v.dtype}")
        flat = v.reshape(-1).to(device="cpu", dtype=torch.float64).contiguous()
        out = torch.empty(flat.shape, dtype=torch.int64)
        threads.sync()
        _C.bucketize(flat, b, out)
        return out.reshape(v.shape).to(v.device)

    return _per_value(x, run, "bucketize")


def mod(x: Tensor | Ragged, modulus: int) -> Tensor | Ragged:
    """IDs mod `modulus` with Python's sign rule (`torch.remainder`): results in [0, modulus).

    Example:
        >>> mod(torch.tensor([-7, 7, 12]), 5).tolist()
        [3, 2, 2]
    """

    def run(v: Tensor) -> Tensor:
        if v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool:
            raise TypeError(f"mod: IDs must be integers, got {v.dtype}")
        flat = v.reshape(-1).to(device="cpu", dtype=torch.int64).contiguous()
        out = torch.empty_like(flat)
        threads.sync()
        _C.mod(flat, modulus, out)
        return out.reshape(v.shape).to(v.device)

    return _per_value(x, run, "mod")
