"""SafeTensors files written as a stream and read back tensor by tensor, for checkpoint shards.

A writer reserves a header sized for the largest shapes it was promised, appends each tensor as
it is produced and writes the real header last, padded with spaces (which the format allows), so
it never holds more than the tensor in hand; any `safetensors` reader opens the result.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import xxhash
from torch import Tensor

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32"}
_TORCH = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 << 20  # the limit `safetensors` itself enforces


def digest(data: Tensor | bytes | memoryview) -> str:
    """XXH3-64 of a tensor's bytes (or of a buffer), as 16 hex digits (tens of GB/s a core).

    A real hash: flipped, zeroed, truncated and reordered bytes all change it.
    """
    return xxhash.xxh3_64_hexdigest(_bytes(data) if isinstance(data, Tensor) else data)


def _bytes(t: Tensor) -> memoryview:
    return memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]


class ShardWriter:
    """Writes one SafeTensors file whose tensors arrive in a planned order.

    Args:
        path: the file to create.
        planned: (name, dtype, largest shape) of every tensor, in the order `write` will get them.
        metadata: string pairs for the header's `__metadata__`.
    """

    def __init__(self, path: Path, planned: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str]):
        self.path = path
        self.planned = planned
        self.metadata = metadata
        self.entries: dict[str, dict[str, Any]] = {}
        worst_end = sum(int(np.prod(shape)) * _itemsize(dtype) for _, dtype, shape in planned)
        worst = {name: _entry(dtype, shape, worst_end, worst_end) for name, dtype, shape in planned}
        self.reserved = _round8(len(self._header_bytes(worst)))
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.file.seek(8 + self.reserved)
        self.at = 0

    def write(self, name: str, t: Tensor) -> str:
        """Appends the next planned tensor; returns its `digest`."""
        want, dtype, largest = self.planned[len(self.entries)]
        if name != want or t.dtype != dtype or t.dim() != len(largest) or any(map(int.__gt__, t.shape, largest)):
            raise ValueError(
                f"ShardWriter {self.path}: expected {want} {dtype} within {largest}, got {name} {t.dtype} "
                f"{tuple(t.shape)}"
            )
        data = _bytes(t)
        self.file.write(data)
        self.entries[name] = _entry(dtype, tuple(t.shape), self.at, self.at + len(data))
        self.at += len(data)
        return digest(data)

    def close(self, fsync: bool = True) -> int:
        """Writes the header and closes the file; returns its size in bytes."""
        if len(self.entries) != len(self.planned):
            raise ValueError(f"ShardWriter {self.path}: {len(self.entries)} of {len(self.planned)} tensors written")
        header = self._header_bytes(self.entries)
        self.file.seek(0)
        self.file.write(struct.pack("<Q", self.reserved) + header + b" " * (self.reserved - len(header)))
        self.file.flush()
        if fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        return 8 + self.reserved + self.at

    def _header_bytes(self, entries: dict[str, dict[str, Any]]) -> bytes:
        return json.dumps({"__metadata__": self.metadata, **entries}, separators=(",", ":")).encode()


def read_header(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The tensor entries of a SafeTensors file and where its data starts; ValueError saying what
    is wrong (missing file, truncation, a header that does not parse or does not cover the data)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit a file of {size} bytes (truncated?)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise ValueError("file is missing") from None
    except OSError as e:
        raise ValueError(f"file cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    end = 0
    for name, entry in sorted(header.items(), key=lambda kv: _offsets(kv[0], kv[1])[0]):
        begin, stop = _offsets(name, entry)
        shape = entry.get("shape")
        if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in _TORCH:
            raise ValueError(f"header entry {name!r}: dtype {entry.get('dtype')!r} is not one of {sorted(_TORCH)}")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**48 for d in shape)):
            raise ValueError(f"header entry {name!r}: shape {shape!r} is not a list of sizes")
        if begin != end or stop - begin != _nbytes(entry):
            raise ValueError(f"header entry {name!r}: data_offsets {[begin, stop]} do not fit its shape and the data")
        end = stop
    if 8 + n + end != size:
        raise ValueError(f"file has {size} bytes but its header describes {8 + n + end} (truncated or padded)")
    return header, 8 + n


def _offsets(name: str, entry: Any) -> tuple[int, int]:
    """An entry's [begin, end) data offsets; ValueError naming the entry unless two sizes in order."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):  # fmt: skip
        raise ValueError(f"header entry {name!r}: data_offsets {offsets!r} are not two increasing sizes")
    return offsets[0], offsets[1]


def read_tensor(f: io.BufferedReader, data_start: int, entry: dict[str, Any]) -> Tensor:
    """Reads one tensor whose header entry is `entry` into a fresh tensor."""
    t = torch.empty(entry["shape"], dtype=_TORCH[entry["dtype"]])
    f.seek(data_start + entry["data_offsets"][0])
    view = _bytes(t)
    if f.readinto(view) != len(view):
        raise ValueError(f"file ended inside tensor data at offset {entry['data_offsets'][0]} (truncated)")
    return t


def _entry(dtype: torch.dtype, shape: tuple[int, ...], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [begin, end]}


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _nbytes(e: dict[str, Any]) -> int:
    return math.prod(e["shape"]) * _itemsize(_TORCH[e["dtype"]])


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8
