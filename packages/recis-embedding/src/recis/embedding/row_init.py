"""New rows' values in torch ops, on any device: the twin of the core's `init_row`.

A row is a pure function of (seed, ID): a counter-based stream mix64(seed ^ mix64(id)) feeds every
value, so tables built on different devices, thread counts or insertion orders hold the same rows.
Uniform and xavier rows are bit-exact with the C++ ones; normal rows go through float64 log and cos,
whose last bit may differ between libraries before the float32 rounding (rarely the float32 value).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .sharding import _shr, mix64
from .table import Initializer

_GOLDEN64 = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_M32 = 2**32 - 1


def row_streams(seeds: Tensor, ids: Tensor) -> Tensor:
    """Each row's stream base: mix64(seed ^ mix64(id)), int64 bits (`seeds`: one per row, as int64)."""
    return mix64(seeds ^ mix64(ids))


def init_rows(init: Initializer, seeds: Tensor, ids: Tensor, dim: int) -> Tensor:
    """(n, dim) float32 rows for `ids` (int64) with per-row `seeds` (int64 bits), on their device.

    Examples:
        >>> rows = init_rows(Initializer.uniform(-1, 1), torch.zeros(2, dtype=torch.int64), torch.tensor([7, 8]), 4)
        >>> rows.shape, bool((rows.abs() < 1).all())
        (torch.Size([2, 4]), True)
    """
    streams = row_streams(seeds, ids)
    if init.kind == "constant":
        return torch.full((len(ids), dim), init.value, dtype=torch.float32, device=ids.device)
    if init.kind in ("uniform", "xavier_uniform"):
        if init.kind == "uniform":
            low, width = _f32(init.low, ids), _f32(init.high, ids) - _f32(init.low, ids)
        else:
            bound = _f32(math.sqrt(6.0 / (1.0 + dim)), ids)
            low, width = -bound, 2 * bound
        return _uniform(streams, low, width, dim)
    if init.kind in ("normal", "truncated_normal"):
        return _normal(streams, init.mean, init.std, dim, truncated=init.kind == "truncated_normal")
    raise ValueError(f"init_rows: unknown initializer {init.kind!r}")


def _f32(x: float, like: Tensor) -> Tensor:
    return torch.tensor(x, dtype=torch.float32, device=like.device)


def _mix32(x: Tensor) -> Tensor:
    """lowbias32 over 32-bit values held in int64 (products wrap at 32 bits by the mask)."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D & _M32
    x = x ^ (x >> 15)
    x = x * 0x846CA68B & _M32
    return x ^ (x >> 16)


def _uniform(streams: Tensor, low: Tensor, width: Tensor, dim: int) -> Tensor:
    """low + width * u_k on a 2^-24 grid, one rounding per float32 operation, as the C++ loop."""
    lo, hi = (streams & _M32)[:, None], _shr(streams, 32)[:, None]
    k = torch.arange(dim, device=streams.device)
    grid = _mix32(_mix32(lo + k * 0x9E3779B9 & _M32) ^ hi) >> 8
    top = torch.nextafter(low + width, low)  # float rounding must not reach the open end
    return torch.minimum(low + width * (grid.to(torch.float32) * 2.0**-24), top)


def _next(streams: Tensor, k: Tensor) -> Tensor:
    """Value k (1-based) of each stream: uniform doubles in [0, 1) on a 2^-53 grid."""
    return _shr(mix64(streams + _GOLDEN64 * k), 11).to(torch.float64) * 2.0**-53


def _normal(streams: Tensor, mean: float, std: float, dim: int, truncated: bool) -> Tensor:
    """Box-Muller draws position by position; truncated rows redraw beyond 2 stddev, each redraw
    taking the next two stream values of that row only (the C++ loop's order)."""
    n = len(streams)
    k = torch.zeros(n, dtype=torch.int64, device=streams.device)  # stream values used so far per row
    out = torch.empty(n, dim, dtype=torch.float64, device=streams.device)
    for d in range(dim):
        z = torch.empty(n, dtype=torch.float64, device=streams.device)
        todo = torch.arange(n, device=streams.device)
        while len(todo):
            u = 1.0 - _next(streams[todo], k[todo] + 1)
            v = _next(streams[todo], k[todo] + 2)
            k[todo] += 2
            z[todo] = torch.sqrt(-2.0 * torch.log(u)) * torch.cos(6.283185307179586 * v)
            todo = todo[z[todo].abs() > 2.0] if truncated else todo[:0]
        out[:, d] = mean + std * z
    return out.to(torch.float32)
