"""Which rank owns an ID: the one rule that checkpoint loading and distributed tables share.

A 64-bit finalizer (splitmix64's) mixes the ID before the modulo, so sequential or strided IDs
(user IDs, bucketized features) spread evenly over ranks instead of following their low bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LOW = [(1 << (64 - s)) - 1 for s in range(65)]  # masks that turn torch's arithmetic >> into a logical one


def _shr(x: Tensor, s: int) -> Tensor:
    return (x >> s) & _LOW[s]


def mix64(ids: Tensor) -> Tensor:
    """splitmix64's finalizer over int64 IDs (wrapping arithmetic; the bits are read as unsigned)."""
    x = ids.to(torch.int64)
    x = (x ^ _shr(x, 30)) * -4658895280553007687  # 0xBF58476D1CE4E5B9 as int64
    x = (x ^ _shr(x, 27)) * -7723592293110705685  # 0x94D049BB133111EB as int64
    return x ^ _shr(x, 31)


def owner(ids: Tensor, world_size: int) -> Tensor:
    """The rank in [0, world_size) that owns each ID: `mix64(id) mod world_size`, unsigned.

    Args:
        ids: integer IDs, any shape (all 64 bits used, negative IDs allowed).
        world_size: number of ranks, >= 1.

    Returns:
        int64 tensor of ranks, the shape of `ids`.

    Examples:
        >>> owner(torch.tensor([0, 1, -1, 2**62, 12345]), 7).tolist()
        [0, 6, 0, 0, 6]
        >>> torch.bincount(owner(torch.arange(100_000), 4)).tolist()  # sequential IDs spread evenly
        [25074, 24973, 25063, 24890]
    """
    if world_size < 1:
        raise ValueError(f"owner: world_size must be >= 1, got {world_size}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"owner: IDs must be integers (int64), got {ids.dtype}")
    x = mix64(ids)
    # Unsigned x mod w = (2 * (x >>> 1) + (x & 1)) mod w, all in non-negative int64.
    return ((_shr(x, 1) % world_size) * 2 + (x & 1)) % world_size
