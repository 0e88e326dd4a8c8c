"""String and ID hashing for feature IDs, in one C++ call per batch.

Strings stay in Arrow layout (int32/int64 offsets + a uint8 byte buffer) from the reader to here.
`farm` is FarmHash Fingerprint64, identical to TensorFlow's `string_to_hash_bucket_fast`;
`murmur` is the low 64 bits of MurmurHash3 x64-128 (`mmh3.hash64(...)[0]`), seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from recis.core import _C, threads

Algo = Literal["farm", "murmur"]


def encode_strings(strings: Sequence[str | bytes]) -> tuple[Tensor, Tensor]:
    """Python strings (UTF-8 encoded) or bytes to Arrow layout: (int64 offsets (n+1,), uint8 data).

    Example:
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


def hash_strings(offsets: Tensor, data: Tensor, algo: Algo = "farm", buckets: int = 0, seed: int = 0) -> Tensor:
    """Hashes each string data[offsets[i]:offsets[i+1]] to an int64 ID.

    Args:
        offsets: int32 or int64 (n+1,) Arrow offsets.
        data: uint8 bytes.
        algo: "farm" (FarmHash Fingerprint64; `seed` must be 0) or "murmur" (MurmurHash3 x64-128,
            low 64 bits, with `seed`).
        buckets: > 0 gives `hash mod buckets` on the unsigned hash (TensorFlow's bucket IDs);
            0 keeps all 64 bits as int64 (negative when the top bit is set).
        seed: murmur seed (0 <= seed < 2**64).

    Example:
        >>> hash_strings(*encode_strings(["Hello", "TensorFlow", "2.x"]), buckets=3).tolist()
        [0, 2, 2]
    """
    if algo not in ("farm", "murmur"):
        raise ValueError(f"hash_strings: algo must be 'farm' or 'murmur', got {algo!r}")
    if buckets < 0:
        raise ValueError(f"hash_strings: buckets must be >= 0, got {buckets}")
    if algo == "farm" and seed != 0:
        raise ValueError("hash_strings: FarmHash Fingerprint64 takes no seed; use algo='murmur' for seeded hashes")
    if not 0 <= seed < 2**64:
        raise ValueError(f"hash_strings: seed must be in [0, 2**64), got {seed}")
    if offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64) or len(offsets) == 0:
        got = f"{offsets.dtype} {tuple(offsets.shape)}"
        raise TypeError(f"hash_strings: offsets must be a non-empty 1-D int32/int64 tensor, got {got}")
    if data.dim() != 1 or data.dtype != torch.uint8:
        raise TypeError(f"hash_strings: data must be a 1-D uint8 tensor, got {data.dtype} {tuple(data.shape)}")
    threads.sync()
    out = torch.empty(len(offsets) - 1, dtype=torch.int64)
    _C.hash_strings(offsets.cpu().contiguous(), data.cpu().contiguous(), algo, seed, buckets, out)
    return out


def hash_ids(ids: Tensor, seed: int = 0, buckets: int = 0) -> Tensor:
    """Re-hashes int64 IDs (to salt them, or spread them over `buckets`).

    Each ID's 8 little-endian bytes go through MurmurHash3 x64-128 (low 64 bits) with `seed`;
    `buckets > 0` gives the unsigned hash mod `buckets`. Same shape as `ids`.

    Example:
        >>> salted = hash_ids(torch.tensor([1, 1, 2]), seed=7, buckets=100)
        >>> bool(salted[0] == salted[1]), bool((salted >= 0).all() and (salted < 100).all())
        (True, True)
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"hash_ids: IDs must be integers, got {ids.dtype}")
    if buckets < 0:
        raise ValueError(f"hash_ids: buckets must be >= 0, got {buckets}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"hash_ids: seed must be in [0, 2**64), got {seed}")
    flat = ids.reshape(-1).to(device="cpu", dtype=torch.int64).contiguous()
    threads.sync()
    out = torch.empty_like(flat)
    _C.hash_ids(flat, seed, buckets, out)
    return out.reshape(ids.shape).to(ids.device)
