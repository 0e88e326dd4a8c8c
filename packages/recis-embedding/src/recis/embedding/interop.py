"""Converters between TorchRec's `KeyedJaggedTensor` and recis batches (`dict[str, Ragged]`), so a
data pipeline or a model can move across one piece at a time. TorchRec is optional: these two
functions import it when called and say so when it is missing.

A KJT holds several features' IDs key after key, with one length per (key, row), and weights for
every value or for none. A recis batch holds one `Ragged` (values, offsets, optional weights) per
feature; a plain 1-D tensor there means one ID per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from recis.core import Ragged

__all__ = ["from_kjt", "to_kjt"]


def _kjt_class() -> Any:
    try:
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # type: ignore[import-untyped]
    except ImportError as e:
        raise ImportError(
            "recis.embedding.interop needs torchrec (pip install torchrec; on CPU-only torch see docs/from-torchrec.md)"
        ) from e
    return KeyedJaggedTensor


def from_kjt(kjt: Any) -> dict[str, Ragged]:
    """Each key of a `KeyedJaggedTensor` as a `Ragged` of int64 IDs (weights kept when it has them).

    Examples:
        >>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["user", "items"], values=torch.tensor([7, 1, 2, 3]), lengths=torch.tensor([1, 0, 2, 1])
        ... )
        >>> batch = from_kjt(kjt)
        >>> batch["items"].offsets.tolist(), batch["items"].values.tolist()
        ([0, 2, 3], [1, 2, 3])
    """
    kjt_class = _kjt_class()
    if not isinstance(kjt, kjt_class):
        raise TypeError(f"from_kjt: expected a KeyedJaggedTensor, got {type(kjt).__name__}")
    out = {}
    for key in kjt.keys():  # noqa: SIM118 (a KJT is no dict; its to_dict() fails on a batch of 0 rows)
        jt = kjt[key]
        values = jt.values()
        if values.is_floating_point():
            raise TypeError(f"from_kjt: key '{key}' holds {values.dtype} values, not IDs")
        out[key] = Ragged(values.to(torch.int64), jt.offsets().to(torch.int64), jt.weights_or_none())
    return out


def to_kjt(batch: Mapping[str, Any], keys: Sequence[str] | None = None) -> Any:
    """The ID features of `batch` as one `KeyedJaggedTensor`, keys in the order of `keys`.

    Args:
        batch: features as `Ragged`s of integer IDs (list columns) or 1-D integer tensors (one ID
            per row); every chosen feature must have the same number of rows.
        keys: the features to take (default: every `Ragged` or 1-D integer tensor of `batch`, in
            its order; labels and float columns are left out).

    Weights: a KJT has a weight for every value or none, so when some features carry weights the
    others get weight 1.0 (what an unweighted sum means).

    Examples:
        >>> batch = {"user": torch.tensor([7, 8]), "items": Ragged.from_lengths(torch.tensor([1, 2, 3]), [2, 1])}
        >>> kjt = to_kjt(batch)
        >>> kjt.keys(), kjt.lengths().tolist()
        (['user', 'items'], [1, 1, 2, 1])
    """
    kjt_class = _kjt_class()
    if keys is None:
        keys = [k for k, v in batch.items() if isinstance(v, Ragged) or _is_id_column(v)]
    if not keys:
        raise ValueError("to_kjt: no ID features to convert")
    parts: list[tuple[Tensor, Ragged]] = []  # (IDs, the feature)
    for k in keys:
        if k not in batch:
            raise KeyError(f"to_kjt: feature '{k}' is not in the batch (keys: {sorted(batch)})")
        v = batch[k]
        if isinstance(v, Tensor) and _is_id_column(v):
            v = Ragged(v.to(torch.int64), torch.arange(len(v) + 1, device=v.device), validate=False)
        if not isinstance(v, Ragged) or isinstance(v.values, Ragged) or v.values.dim() != 1:
            got = _describe(v)
            raise TypeError(f"to_kjt: feature '{k}' must be a Ragged of IDs or a 1-D integer tensor, got {got}")
        ids = v.values
        if ids.is_floating_point():
            raise TypeError(f"to_kjt: feature '{k}' holds {ids.dtype} values, not IDs")
        parts.append((ids, v))
    rows = {k: len(r.offsets) - 1 for k, (_, r) in zip(keys, parts, strict=True)}
    if len(set(rows.values())) > 1:
        raise ValueError(f"to_kjt: features have different numbers of rows: {rows}")
    values = torch.cat([ids.to(torch.int64) for ids, _ in parts])
    lengths = torch.cat([r.offsets.diff() for _, r in parts])
    weights = None
    if any(r.weights is not None for _, r in parts):
        ones = [torch.ones(len(ids), device=values.device) for ids, _ in parts]
        weights = torch.cat(
            [o if r.weights is None else r.weights.float() for (_, r), o in zip(parts, ones, strict=True)]
        )
    return kjt_class(keys=list(keys), values=values, weights=weights, lengths=lengths)


def _describe(v: Any) -> str:
    if isinstance(v, Ragged):
        inner = "a Ragged of lists" if isinstance(v.values, Ragged) else f"{v.values.dim()}-D values"
        return f"a Ragged with {inner}"
    if isinstance(v, Tensor):
        return f"a {v.dim()}-D {v.dtype} tensor"
    return type(v).__name__


def _is_id_column(v: Any) -> bool:
    return isinstance(v, Tensor) and v.dim() == 1 and not v.is_floating_point() and v.dtype != torch.bool
