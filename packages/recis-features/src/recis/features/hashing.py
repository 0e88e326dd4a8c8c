"""String and ID hashing for feature IDs, in one C++ call per batch.

Strings stay in Arrow layout (int32/int64 offsets + a uint8 byte buffer) from the reader to here.
`farm` is FarmHash Fingerprint64, identical to TensorFlow's `string_to_hash_bucket_fast`;
`murmur` is the low 64 bits of MurmurHash3 x64-128 (`mmh3.hash64(...)[0]`), seeded. Integer IDs
are re-hashed with the same murmur over their 8 little-endian bytes (`hash_ids`, `multi_hash`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from recis.core import Ragged, kernels

from . import fused
from .columns import Column, encode_strings, is_integer
from .fused import check_int

Algo = Literal["farm", "murmur"]
__all__ = ["Algo", "encode_strings", "hash_ids", "hash_strings", "multi_hash"]


def hash_strings(offsets: Tensor, data: Tensor, algo: Algo = "farm", buckets: int = 0, seed: int = 0) -> Tensor:
    """Hashes each string data[offsets[i]:offsets[i+1]] to an int64 ID, on `data`'s device.

    Args:
        offsets: int32 or int64 (n+1,) Arrow offsets.
        data: uint8 bytes.
        algo: "farm" (FarmHash Fingerprint64; `seed` must be 0) or "murmur" (MurmurHash3 x64-128,
            low 64 bits, with `seed`).
        buckets: in [1, 2**63 - 1] gives `hash mod buckets` on the unsigned hash (TensorFlow's
            bucket IDs); 0 keeps all 64 bits as int64 (negative when the top bit is set).
        seed: murmur seed (0 <= seed < 2**64).

    Examples:
        >>> hash_strings(*encode_strings(["Hello", "TensorFlow", "2.x"]), buckets=3).tolist()
        [0, 2, 2]
    """
    if algo not in ("farm", "murmur"):
        raise ValueError(f"hash_strings: algo must be 'farm' or 'murmur', got {algo!r}")
    buckets = check_int("hash_strings", "buckets", buckets, 0)
    if algo == "farm" and seed != 0:
        raise ValueError("hash_strings: FarmHash Fingerprint64 takes no seed; use algo='murmur' for seeded hashes")
    _check_seed("hash_strings", seed)
    if offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64) or len(offsets) == 0:
        got = f"{offsets.dtype} {tuple(offsets.shape)}"
        raise TypeError(f"hash_strings: offsets must be a non-empty 1-D int32/int64 tensor, got {got}")
    if data.dim() != 1 or data.dtype != torch.uint8:
        raise TypeError(f"hash_strings: data must be a 1-D uint8 tensor, got {data.dtype} {tuple(data.shape)}")
    if data.device.type != "cpu":  # validated offsets, then the device's kernel: the result stays there
        column = Ragged(data, offsets.to(device=data.device, dtype=torch.int64))
        return fused.hash_many([column], [algo], [seed], [buckets])[0]  # type: ignore[return-value]
    out = torch.empty(len(offsets) - 1, dtype=torch.int64)
    kernels.features.hash_strings(offsets.cpu().contiguous(), data.cpu().contiguous(), algo, seed, buckets, out)
    return out


def hash_ids(ids: Column, seed: int = 0, buckets: int = 0) -> Column:
    """Re-hashes integer IDs (to salt them, or spread them over `buckets`); a Tensor or a Ragged.

    Each ID's 8 little-endian bytes (as int64) go through MurmurHash3 x64-128 (low 64 bits) with
    `seed`; `buckets` in [1, 2**63 - 1] gives the unsigned hash mod `buckets` (0 keeps all 64 bits).
    Same shape (or rows) as `ids`, int64.

    Examples:
        >>> salted = hash_ids(torch.tensor([1, 1, 2]), seed=7, buckets=100)
        >>> bool(salted[0] == salted[1]), bool((salted >= 0).all() and (salted < 100).all())
        (True, True)
    """
    if isinstance(ids, Tensor) and not is_integer(ids.dtype):
        raise TypeError(f"hash_ids: IDs must be integers, got {ids.dtype}")
    buckets = check_int("hash_ids", "buckets", buckets, 0)
    _check_seed("hash_ids", seed)
    return fused.hash_many([ids], ["murmur"], [seed], [buckets])[0]


def multi_hash(ids: Column, buckets: int | Sequence[int], k: int | None = None, seed: int = 0) -> Column:
    """k independent hashes of every ID: hash j is `hash_ids(ids, seed + j, buckets[j])`.

    The values gain a trailing dimension of size k: a (B,) tensor becomes (B, k), a Ragged's
    values (N,) become (N, k), rows and weights kept. Used for hashing tricks that look one ID up
    in k tables (or k rows of one table) to make collisions unlikely.

    Args:
        ids: integer IDs, a Tensor or a Ragged.
        buckets: one bucket count for all k hashes, or one per hash (then k may be left out),
            each in [0, 2**63 - 1]; 0 keeps all 64 bits.
        k: number of hashes (>= 1).
        seed: the first hash's seed; hash j uses seed + j (mod 2**64).

    Examples:
        >>> multi_hash(torch.tensor([5, 5, 6]), buckets=1000, k=2).shape
        torch.Size([3, 2])
    """
    per_hash = multi_hash_buckets(buckets, k)
    _check_seed("multi_hash", seed)
    return fused.multi_hash_many([ids], [seed], [per_hash])[0]


def multi_hash_buckets(buckets: int | Sequence[int], k: int | None) -> list[int]:
    """The per-hash bucket counts of `multi_hash`, checked."""
    per_hash = [buckets] * (k if k is not None else 1) if isinstance(buckets, int) else list(buckets)
    if k is not None and len(per_hash) != k:
        raise ValueError(f"multi_hash: {len(per_hash)} bucket counts for k={k} hashes")
    if not per_hash:
        raise ValueError("multi_hash: k must be >= 1, got 0")
    return [check_int("multi_hash", "buckets", b, 0) for b in per_hash]


def _check_seed(op: str, seed: int) -> None:
    if not 0 <= seed < 2**64:
        raise ValueError(f"{op}: seed must be in [0, 2**64), got {seed}")
