"""Missing values and numeric transforms of dense (and ragged) number columns, in torch.

These are one or two vectorized torch ops per column, already memory-bound, so they have no C++
kernel; each is its own reference. Weights and row structure are kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from recis.core import Ragged

from .columns import Column, describe, encode_strings, innermost, is_string_list, is_strings, map_values


def _numbers(x: Column, op: str) -> Tensor:
    v = innermost(x) if isinstance(x, (Tensor, Ragged)) else None
    if v is None or is_strings(x) or is_string_list(x) or v.dtype == torch.bool or v.dtype.is_complex:
        raise TypeError(f"{op}: expected numbers, got {describe(x)}")
    return v


def _float(v: Tensor) -> Tensor:
    return v if v.dtype.is_floating_point else v.to(torch.float32)


def _take(items: Tensor | Ragged, index: Tensor) -> Tensor | Ragged:
    return items.select(index) if isinstance(items, Ragged) else items.index_select(0, index)


def _fill_empty_rows(r: Ragged, fill: Tensor | Ragged) -> Ragged:
    """Gives every empty row of r all items of `fill` (weight 1 each); other rows are unchanged."""
    lengths = r.lengths()
    empty = lengths == 0
    num_empty = int(empty.sum())
    if num_empty == 0:
        return r
    width = len(fill)
    new_lengths = torch.where(empty, width, lengths)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=r.device)
    torch.cumsum(new_lengths, 0, out=offsets[1:])
    total = int(offsets[-1])
    is_fill = torch.repeat_interleave(empty, new_lengths, output_size=total)
    index = torch.empty(total, dtype=torch.int64, device=r.device)
    index[~is_fill] = torch.arange(r.num_values, device=r.device)
    index[is_fill] = (r.num_values + torch.arange(width, device=r.device)).repeat(num_empty)
    items = Ragged.cat([r.values, fill]) if isinstance(fill, Ragged) else torch.cat([r.values, fill])  # type: ignore[list-item]
    weights = None
    if r.weights is not None:
        ones = torch.ones(width, dtype=r.weights.dtype, device=r.device)
        weights = torch.cat([r.weights, ones]).index_select(0, index)
    return Ragged(_take(items, index), offsets, weights, validate=False)


def fill_missing(x: Column, value: float | int | str) -> Column:
    """Replaces missing values with `value`.

    Missing means: NaN in a float tensor or float list; an empty row of a list column (it becomes
    `[value]`, weight 1); an empty string in a string column, an empty list in a list<string>
    column (give a `str` value for these). Integer tensors have no missing values and pass through.

    Examples:
        >>> fill_missing(torch.tensor([1.0, float("nan")]), 0.0).tolist()
        [1.0, 0.0]
        >>> fill_missing(Ragged.from_list([[3], []]), -1).tolist()
        [[3], [-1]]
    """
    if is_strings(x) or is_string_list(x):
        if not isinstance(value, str):
            raise TypeError(f"fill_missing: a string column needs a str value, got {value!r}")
        _, data = encode_strings([value])
        assert isinstance(x, Ragged)
        if is_strings(x):
            return _fill_empty_rows(x, data)
        return _fill_empty_rows(x, Ragged(data, torch.tensor([0, len(data)]), validate=False))
    v = _numbers(x, "fill_missing")
    if isinstance(value, str):
        raise TypeError(f"fill_missing: a number column needs a number value, got {value!r}")
    if not v.dtype.is_floating_point and not (math.isfinite(value) and value == int(value)):
        raise TypeError(f"fill_missing: {value!r} does not fit the {v.dtype} values of {describe(x)}")

    def nan_to_value(t: Tensor) -> Tensor:  # nan_to_num: one pass, 2.5x faster than where(isnan(t), ...)
        return torch.nan_to_num(t, nan=value, posinf=math.inf, neginf=-math.inf) if t.dtype.is_floating_point else t

    out = map_values(x, nan_to_value)
    if isinstance(out, Ragged):
        if isinstance(out.values, Ragged):
            raise TypeError(f"fill_missing: nested number lists are not supported, got {describe(x)}")
        out = _fill_empty_rows(out, torch.full((1, *out.values.shape[1:]), value, dtype=out.values.dtype))
    return out


def log1p(x: Column) -> Column:
    """log(1 + x), float (integers become float32). Values below -1 give NaN: clip them first.

    Examples:
        >>> log1p(torch.tensor([0, 9])).tolist()
        [0.0, 2.3025851249694824]
    """
    _numbers(x, "log1p")
    return map_values(x, lambda t: torch.log1p(_float(t)))


def clip(x: Column, min: float | None = None, max: float | None = None) -> Column:
    """Clamps values into [min, max] (either bound may be None); the dtype is kept.

    Examples:
        >>> clip(torch.tensor([-5, 3, 50]), min=0, max=10).tolist()
        [0, 3, 10]
    """
    _numbers(x, "clip")
    if min is None and max is None:
        raise ValueError("clip: give min, max or both")
    if min is not None and max is not None and min > max:
        raise ValueError(f"clip: min must be <= max, got min={min}, max={max}")
    return map_values(x, lambda t: torch.clamp(t, min=min, max=max))


def standardize(x: Column, mean: float, std: float) -> Column:
    """(x - mean) / std, float (integers become float32); `std` must be > 0.

    Examples:
        >>> standardize(torch.tensor([1.0, 3.0]), mean=2.0, std=2.0).tolist()
        [-0.5, 0.5]
    """
    _numbers(x, "standardize")
    if not (std > 0 and math.isfinite(std) and math.isfinite(mean)):
        raise ValueError(f"standardize: needs a finite mean and std > 0, got mean={mean}, std={std}")
    return map_values(x, lambda t: (_float(t) - mean) / std)


class RunningMoments:
    """Count, mean and variance of the finite values seen so far (Chan et al.'s parallel update, float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: Column) -> None:
        v = _numbers(x, "standardize").reshape(-1).to(torch.float64)
        v = v[torch.isfinite(v)]
        n = len(v)
        if n == 0:
            return
        mean = float(v.mean())
        m2 = float(((v - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    def std(self) -> float:
        """Population standard deviation; 1.0 when it is 0 or nothing was seen (then x - mean passes unscaled)."""
        s = math.sqrt(self.m2 / self.count) if self.count else 0.0
        return s if s > 0 else 1.0
