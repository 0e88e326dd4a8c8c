"""Many columns, one C++ call: the fused kernels behind every op and the `FeatureEngine`.

Each function takes lists (one entry per column, each with its own parameters) and returns the
transformed columns in order, with row structure and weights kept. CPU columns go to one kernel
call whose work is split into column x chunk tasks on the core's pool; CUDA columns take the
core's CUDA kernels (one launch per column, on the current stream) when it was built with CUDA;
columns on other devices take the pure-torch reference one by one (string hashing: the CPU kernel).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.dlpack import to_dlpack

from recis.core import Ragged, kernels

from . import reference
from .columns import Column, describe, innermost, is_integer, is_string_list, is_strings

INT64_MAX = 2**63 - 1  # bucket counts, moduli and lengths cross into the kernels as int64_t


def check_int(op: str, name: str, value: Any, low: int, high: int = INT64_MAX, or_none: bool = False) -> int:
    """`value` as an int when it is an integer (Python or numpy, not bool) in [low, high], else a
    ValueError naming the op, the setting, the allowed range and the value (`or_none`: None is allowed too).

    Examples:
        >>> check_int("Mod", "n", 2**63, 1)
        Traceback (most recent call last):
        ValueError: Mod: n must be an int in [1, 2**63 - 1], got 9223372036854775808
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= int(value) <= high:
        return int(value)
    show = lambda bound: "2**63 - 1" if bound == INT64_MAX else str(bound)
    allowed = f"{'None or ' if or_none else ''}an int in [{show(low)}, {show(high)}]"
    raise ValueError(f"{op}: {name} must be {allowed}, got {value!r}")


def _dl(tensors: Sequence[Tensor]) -> list[Any]:
    """DLPack capsules: nanobind takes them in about 1 µs, a tensor (its Python `__dlpack__`) in about 15."""
    return [to_dlpack(t.detach()) for t in tensors]


def _rebuild(x: Column, flat: Tensor) -> Column:
    """x's structure (all levels' offsets and weights) over new innermost values, reshaped to fit."""
    if isinstance(x, Ragged):
        return Ragged(_rebuild(x.values, flat), x.offsets, x.weights, validate=False)
    return flat.reshape(*x.shape, flat.shape[1]) if flat.dim() == 2 else flat.reshape(x.shape)


def _ids(x: Column, op: str) -> Tensor:
    if is_strings(x) or is_string_list(x):
        raise TypeError(f"{op}: expected integer IDs, got {describe(x)}")
    v = innermost(x)
    if not is_integer(v.dtype):
        raise TypeError(f"{op}: expected integer IDs, got {describe(x)}")
    return v.reshape(-1).to(torch.int64).contiguous()


def _on_cpu(x: Column) -> bool:
    return innermost(x).device.type == "cpu"


def _on_gpu(x: Column) -> bool:
    return kernels.on_gpu(innermost(x))


def _hash_strings_off_cpu(s: Ragged, algo: str, seed: int, buckets: int) -> Tensor:
    """One string column on a device: the CUDA kernel, or the CPU kernel over a host copy."""
    if not kernels.on_gpu(s.values):
        hashed = hash_many([s.to("cpu")], [algo], [seed], [buckets])[0]
        assert isinstance(hashed, Tensor)
        return hashed.to(s.device)
    data = s.values
    assert isinstance(data, Tensor)
    out = torch.empty(s.num_rows, dtype=torch.int64, device=s.device)
    offsets = s.offsets.to(torch.int64).contiguous()
    kernels.gpu.hash_strings(offsets, data.contiguous(), algo == "murmur", seed % 2**64, buckets, out,
                             kernels.stream(s.device))  # fmt: skip
    return out


def hash_many(
    columns: Sequence[Column], algos: Sequence[str], seeds: Sequence[int], buckets: Sequence[int]
) -> list[Column]:
    """Hashes string, list<string> and integer columns: strings with `algo`, integers with MurmurHash3.

    A string column (one string per row) becomes a dense int64 (B,) tensor; a list<string> column
    a Ragged of int64 with the same rows; integer columns keep their shape.
    """
    out: list[Column | None] = [None] * len(columns)
    strings: list[tuple[int, Ragged]] = []
    ids: list[int] = []
    for i, x in enumerate(columns):
        if is_strings(x) or is_string_list(x):
            s = x if is_strings(x) else x.values
            assert isinstance(s, Ragged)
            if s.device.type == "cpu":
                strings.append((i, s))
            else:
                on_device = _hash_strings_off_cpu(s, algos[i], seeds[i], buckets[i])
                out[i] = on_device if s is x else Ragged(on_device, x.offsets, x.weights, validate=False)  # type: ignore[union-attr]
        else:
            if algos[i] != "murmur":
                raise TypeError(
                    f"hash: algo={algos[i]!r} hashes strings, got {describe(x)}; integer IDs are re-hashed with "
                    "algo='murmur'"
                )
            ids.append(i)
    if strings:
        outs = [torch.empty(s.num_rows, dtype=torch.int64) for _, s in strings]
        kernels.features.hash_string_columns(
            _dl([s.offsets for _, s in strings]),
            _dl([s.values for _, s in strings]),  # type: ignore[misc]  # uint8 tensors: is_strings
            [algos[i] for i, _ in strings],
            [seeds[i] for i, _ in strings],
            [buckets[i] for i, _ in strings],
            _dl(outs),
        )
        for (i, _), hashed_strings in zip(strings, outs, strict=True):
            col = columns[i]
            assert isinstance(col, Ragged)
            out[i] = (
                hashed_strings if is_strings(col) else Ragged(hashed_strings, col.offsets, col.weights, validate=False)
            )
    if ids:
        hashed = multi_hash_many([columns[i] for i in ids], [seeds[i] for i in ids], [[buckets[i]] for i in ids])
        for i, hashed_ids in zip(ids, hashed, strict=True):
            out[i] = _rebuild(columns[i], innermost(hashed_ids).reshape(-1))
    return out  # type: ignore[return-value]


def multi_hash_many(columns: Sequence[Column], seeds: Sequence[int], buckets: Sequence[Sequence[int]]) -> list[Column]:
    """k = len(buckets[c]) hashes of every ID of column c: values gain a trailing dimension of size k."""
    flats = [_ids(x, "hash") for x in columns]
    out: list[Column | None] = [None] * len(columns)
    cpu = [i for i, x in enumerate(columns) if _on_cpu(x)]
    for i, x in enumerate(columns):
        if not _on_cpu(x):
            out[i] = _rebuild(x, reference.multi_hash(flats[i], buckets[i], seeds[i]))
    if cpu:
        outs = [torch.empty((len(flats[i]), len(buckets[i])), dtype=torch.int64) for i in cpu]
        kernels.features.hash_id_columns(
            _dl([flats[i] for i in cpu]),
            [seeds[i] for i in cpu],
            _dl([torch.tensor(list(buckets[i]), dtype=torch.int64) for i in cpu]),
            _dl([o.view(-1) for o in outs]),
        )
        for i, o in zip(cpu, outs, strict=True):
            out[i] = _rebuild(columns[i], o)
    return out  # type: ignore[return-value]


_NATIVE = (torch.float32, torch.float64, torch.int32, torch.int64)


def bucketize_many(
    columns: Sequence[Column], boundaries: Sequence[Tensor], ints_as_float32: Sequence[bool] | None = None
) -> list[Column]:
    """Bucket IDs per value (number of boundaries <= value), int64, structure kept. Boundaries are float64.

    `ints_as_float32[c]`: column c's integer values are rounded to float32 before they are compared,
    as TensorFlow's Bucketize kernel does (`Bucketize(semantics="tensorflow")`).
    """
    flats = []
    for c, x in enumerate(columns):
        v = innermost(x)
        if is_strings(x) or is_string_list(x) or v.dtype == torch.bool or v.dtype.is_complex:
            raise TypeError(f"bucketize: expected numbers, got {describe(x)}")
        v = v.reshape(-1)
        if ints_as_float32 is not None and ints_as_float32[c] and is_integer(v.dtype):
            v = v.to(torch.float32)
        flats.append(v.contiguous() if v.dtype in _NATIVE else v.to(torch.float64).contiguous())
    out: list[Column | None] = [None] * len(columns)
    cpu = [i for i, x in enumerate(columns) if _on_cpu(x)]
    off_cpu = [i for i, x in enumerate(columns) if not _on_cpu(x)]
    _check_no_nan([flats[i] for i in off_cpu], off_cpu)
    for i in off_cpu:
        v, b = flats[i].to(torch.float64), boundaries[i].to(flats[i].device)
        if _on_gpu(columns[i]):
            o = torch.empty(len(v), dtype=torch.int64, device=v.device)
            kernels.gpu.bucketize(v.contiguous(), b.contiguous(), o, kernels.stream(v.device))
        else:
            o = torch.bucketize(v, b, right=True)
        out[i] = _rebuild(columns[i], o)
    if cpu:
        outs = [torch.empty(len(flats[i]), dtype=torch.int64) for i in cpu]
        kernels.features.bucketize_columns(_dl([flats[i] for i in cpu]), _dl([boundaries[i] for i in cpu]), _dl(outs))
        for i, o in zip(cpu, outs, strict=True):
            out[i] = _rebuild(columns[i], o)
    return out  # type: ignore[return-value]


def _check_no_nan(flats: Sequence[Tensor], where: Sequence[int]) -> None:
    """The CPU kernel's NaN error for columns off the CPU: one host read for all of them."""
    floats = [(c, f) for c, f in zip(where, flats, strict=True) if f.dtype.is_floating_point and len(f)]
    if not floats:
        return
    per_column = torch.stack([torch.isnan(f).any() for _, f in floats])
    if bool(per_column.any()):
        c, f = floats[int(per_column.to(torch.int64).argmax())]
        i = int(torch.isnan(f).nonzero()[0, 0])
        raise ValueError(f"bucketize: column {c}: value at position {i} is NaN (fill missing values first)")


def fill_nan_many(columns: Sequence[Tensor], values: Sequence[float]) -> list[Tensor]:
    """FillMissing for dense float32/float64 CPU tensors: NaN becomes the column's value (others copied)."""
    flats = [x.detach().reshape(-1).contiguous() for x in columns]
    outs = [torch.empty_like(f) for f in flats]
    kernels.features.fill_nan_columns(_dl(flats), [float(v) for v in values], _dl(outs))
    return [o.reshape(x.shape) for o, x in zip(outs, columns, strict=True)]


def mod_many(columns: Sequence[Column], moduli: Sequence[int]) -> list[Column]:
    """IDs mod their column's modulus, in [0, modulus), structure kept."""
    flats = [_ids(x, "mod") for x in columns]
    out: list[Column | None] = [None] * len(columns)
    cpu = [i for i, x in enumerate(columns) if _on_cpu(x)]
    for i, x in enumerate(columns):
        if _on_gpu(x):
            o = torch.empty_like(flats[i])
            kernels.gpu.mod(flats[i], moduli[i], o, kernels.stream(o.device))
            out[i] = _rebuild(x, o)
        elif not _on_cpu(x):
            out[i] = _rebuild(x, torch.remainder(flats[i], moduli[i]))
    if cpu:
        outs = [torch.empty_like(flats[i]) for i in cpu]
        kernels.features.mod_columns(_dl([flats[i] for i in cpu]), [moduli[i] for i in cpu], _dl(outs))
        for i, o in zip(cpu, outs, strict=True):
            out[i] = _rebuild(columns[i], o)
    return out  # type: ignore[return-value]


def _cross_input(x: Column) -> tuple[Tensor, Tensor, Tensor | None]:
    """(offsets, int64 values, float32 weights or None) of a flat ID column; a dense (B,) tensor is one ID per row."""
    if isinstance(x, Tensor):
        if x.dim() != 1:
            raise TypeError(f"cross: dense inputs must be 1-D (one ID per row), got {describe(x)}")
        return torch.arange(len(x) + 1, device=x.device), _ids(x, "cross"), None
    if isinstance(x.values, Ragged) or x.values.dim() != 1:
        raise TypeError(f"cross: inputs must be flat ID lists, got {describe(x)}")
    w = None if x.weights is None else x.weights.to(torch.float32).contiguous()
    return x.offsets.contiguous(), _ids(x, "cross"), w


def _cross_off_cpu(
    inputs: Sequence[tuple[Tensor, Tensor, Tensor | None]], seed: int, buckets: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One cross off the CPU: the CUDA kernel (up to 16 inputs), else the reference. The output's
    size is read on the host: one synchronization per cross."""
    if not (kernels.on_gpu(*(t for inp in inputs for t in inp)) and len(inputs) <= _MAX_CROSS_INPUTS):
        return reference.cross(inputs, seed, buckets)
    device = inputs[0][0].device
    counts = torch.stack([o.diff() for o, _, _ in inputs]).prod(dim=0)
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=offsets[1:])
    total = int(offsets[-1])
    values = torch.empty(total, dtype=torch.int64, device=device)
    weights = torch.empty(total, device=device) if any(w is not None for _, _, w in inputs) else None
    kernels.gpu.cross([o.contiguous() for o, _, _ in inputs], [v for _, v, _ in inputs], [w for _, _, w in inputs],
                      offsets, seed % 2**64, buckets, values, weights, kernels.stream(device))  # fmt: skip
    return offsets, values, weights


_MAX_CROSS_INPUTS = 16  # the CUDA kernel's bound (recis::gpu::kMaxCrossInputs); more take the reference


def cross_many(crosses: Sequence[Sequence[Column]], seeds: Sequence[int], buckets: Sequence[int]) -> list[Column]:
    """Crosses, each of 2+ columns with the same rows: a dense (B,) tensor when every input is dense, else a Ragged."""
    inputs = [[_cross_input(x) for x in cols] for cols in crosses]
    for i, cols in enumerate(inputs):
        if len(cols) < 2:
            raise ValueError(f"cross: needs at least 2 inputs, got {len(cols)}")
        rows = {len(o) - 1 for o, _, _ in cols}
        if len(rows) > 1:
            raise ValueError(f"cross: inputs must have the same number of rows, got {sorted(rows)} (cross {i})")
    results: list[tuple[Tensor, Tensor, Tensor | None] | None] = [None] * len(crosses)
    cpu = [i for i, cols in enumerate(crosses) if all(_on_cpu(x) for x in cols)]
    for i in range(len(crosses)):
        if i not in cpu:
            results[i] = _cross_off_cpu(inputs[i], seeds[i], buckets[i])
    if cpu:
        flat = [inp for i in cpu for inp in inputs[i]]
        outs = kernels.features.cross_columns(
            _dl([o for o, _, _ in flat]),
            _dl([v for _, v, _ in flat]),
            [None if w is None else to_dlpack(w) for _, _, w in flat],
            [len(inputs[i]) for i in cpu],
            [seeds[i] for i in cpu],
            [buckets[i] for i in cpu],
        )
        for i, result in zip(cpu, outs, strict=True):
            results[i] = result
    out: list[Column] = []
    for sources, crossed in zip(crosses, results, strict=True):
        assert crossed is not None
        offsets, values, weights = crossed
        if all(isinstance(x, Tensor) for x in sources):
            out.append(values)
        else:
            out.append(Ragged(values, offsets, weights, validate=False))
    return out
