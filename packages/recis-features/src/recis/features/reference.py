"""Pure-torch references for the feature kernels: the test oracles and the path for non-CPU tensors.

Hashes are computed with wrapping int64 arithmetic; a logical right shift is an arithmetic shift
masked to the bits that stayed. String hashing has no torch twin: its oracles are the independent
`pyfarmhash` and `mmh3` packages, used in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from recis.core import reference as core_reference

_C1, _C2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
_F1, _F2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53


def _signed(v: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    v %= 2**64
    return v - 2**64 if v >= 2**63 else v


def _shr(x: Tensor, s: int) -> Tensor:
    return (x >> s) & ((1 << (64 - s)) - 1)


def _rotl(x: Tensor, r: int) -> Tensor:
    return (x << r) | _shr(x, 64 - r)


def _fmix(k: Tensor) -> Tensor:
    k = k ^ _shr(k, 33)
    k = k * _signed(_F1)
    k = k ^ _shr(k, 33)
    k = k * _signed(_F2)
    return k ^ _shr(k, 33)


def murmur3_ids(ids: Tensor, seed: int = 0) -> Tensor:
    """Low 64 bits of MurmurHash3 x64-128 of each row's IDs as little-endian bytes.

    Args:
        ids: int64 (N, k): row i is hashed as the 8k bytes of ids[i, 0], ..., ids[i, k-1].
        seed: 0 <= seed < 2**64.

    Returns:
        int64 (N,), the unsigned hash's bits.
    """
    n, k = ids.shape
    h1 = torch.full((n,), _signed(seed), dtype=torch.int64, device=ids.device)
    h2 = h1.clone()
    for b in range(k // 2):
        a = _rotl(ids[:, 2 * b] * _signed(_C1), 31) * _signed(_C2)
        h1 = (_rotl(h1 ^ a, 27) + h2) * 5 + 0x52DCE729
        c = _rotl(ids[:, 2 * b + 1] * _signed(_C2), 33) * _signed(_C1)
        h2 = (_rotl(h2 ^ c, 31) + h1) * 5 + 0x38495AB5
    if k % 2:  # an 8-byte tail
        h1 = h1 ^ (_rotl(ids[:, k - 1] * _signed(_C1), 31) * _signed(_C2))
    h1 = h1 ^ (8 * k)
    h2 = h2 ^ (8 * k)
    h1 = h1 + h2
    h2 = h2 + h1
    return _fmix(h1) + _fmix(h2)


def unsigned_mod(h: Tensor, buckets: int) -> Tensor:
    """The unsigned value of int64 bits `h` mod `buckets` (0 < buckets < 2**63); buckets == 0 keeps h."""
    if buckets == 0:
        return h
    r = torch.remainder(h, buckets)
    shift = 2**64 % buckets  # what the sign bit adds back for negative h
    wrapped = torch.where(r >= buckets - shift, r - (buckets - shift), r + shift)
    return torch.where(h < 0, wrapped, r)


def hash_ids(ids: Tensor, seed: int = 0, buckets: int = 0) -> Tensor:
    """Reference of `recis.features.hash_ids`: MurmurHash3 of each ID's 8 bytes, unsigned mod buckets."""
    flat = ids.reshape(-1, 1).to(torch.int64)
    return unsigned_mod(murmur3_ids(flat, seed), buckets).reshape(ids.shape)


def multi_hash(ids: Tensor, buckets: Sequence[int], seed: int = 0) -> Tensor:
    """Reference of `recis.features.multi_hash`: hash j uses seed + j and buckets[j]; shape (*ids.shape, k)."""
    outs = [hash_ids(ids, (seed + j) % 2**64, b) for j, b in enumerate(buckets)]
    return torch.stack(outs, dim=-1) if outs else torch.empty((*ids.shape, 0), dtype=torch.int64)


def cross(
    inputs: Sequence[tuple[Tensor, Tensor, Tensor | None]], seed: int = 0, buckets: int = 0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Reference of the cross kernel, vectorized: each output position decodes its mixed-radix digits.

    Args:
        inputs: (offsets, int64 values, float weights or None) per input, same number of rows.

    Returns:
        (offsets, values, weights or None) of the crossed column.
    """
    lengths = torch.stack([o.diff() for o, _, _ in inputs])  # (k, B)
    dev = lengths.device
    counts = lengths.prod(dim=0)
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64, device=dev)
    torch.cumsum(counts, 0, out=offsets[1:])
    total = int(offsets[-1])
    row = torch.repeat_interleave(torch.arange(len(counts), device=dev), counts, output_size=total)
    q = torch.arange(total, device=dev) - offsets[:-1][row]  # position inside the row
    ids, weights = [], []
    stride = torch.ones(total, dtype=torch.int64, device=dev)
    for f in reversed(range(len(inputs))):  # the last input varies fastest
        o, v, w = inputs[f]
        length = lengths[f][row]
        digit = torch.div(q, stride, rounding_mode="floor") % length.clamp(min=1)
        stride = stride * length
        pos = o[:-1][row] + digit
        ids.append(v[pos])
        weights.append(None if w is None else w[pos].to(torch.float32))
    matrix = torch.stack(ids[::-1], dim=1)  # (total, k)
    values = unsigned_mod(murmur3_ids(matrix, seed), buckets)
    present = [w for w in weights if w is not None]
    out_w = None
    if present:
        out_w = torch.ones(total, dtype=torch.float32, device=dev)
        for w in reversed(present):  # same multiplication order as the kernel (first input first)
            out_w = out_w * w
    return offsets, values, out_w


truncate = core_reference.ragged_truncate
