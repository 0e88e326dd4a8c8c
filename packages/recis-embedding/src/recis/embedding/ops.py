"""Differentiable pooled lookup over a batch's unique rows, as `torch.library` custom ops.

`pooled_embedding(emb, inverse, offsets, weights, combiner)` pools rows `emb[inverse[j]]` per bag.
`emb` holds only the batch's unique rows (U x D), so backward yields a U x D gradient: never one
the size of the table. CPU tensors run the C++ kernels; other devices run the torch reference.
Weights are treated as constants (no gradient flows to them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from recis.core import _C

COMBINERS = ("sum", "mean", "sqrtn")


def _bag_scale(offsets: Tensor, weights: Tensor | None, combiner: str, dtype: torch.dtype) -> Tensor | None:
    if combiner == "sum":
        return None
    lengths = offsets.diff()
    bag = torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)
    w = torch.ones(int(offsets[-1]), dtype=dtype, device=offsets.device) if weights is None else weights.to(dtype)
    per_bag = torch.zeros(len(lengths), dtype=dtype, device=offsets.device)
    per_bag.index_add_(0, bag, w if combiner == "mean" else w * w)
    scale = per_bag if combiner == "mean" else per_bag.sqrt()
    return torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)


def pooled_embedding_reference(
    emb: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str
) -> Tensor:
    """Pure-torch pooled lookup; differentiable in `emb` through ordinary autograd."""
    lengths = offsets.diff()
    bag = torch.repeat_interleave(torch.arange(len(lengths), device=emb.device), lengths)
    rows = emb.index_select(0, inverse)  # (N, D)
    if weights is not None:
        rows = rows * weights[:, None].to(emb.dtype)
    out = torch.zeros(len(lengths), emb.shape[1], dtype=emb.dtype, device=emb.device)
    out = out.index_add(0, bag, rows)  # (B, D)
    scale = _bag_scale(offsets, weights, combiner, emb.dtype)
    return out if scale is None else out * scale[:, None]


def _check(emb: Tensor, inverse: Tensor, offsets: Tensor, combiner: str) -> None:
    if combiner not in COMBINERS:
        raise ValueError(f"pooled_embedding: combiner must be one of {COMBINERS}, got {combiner!r}")
    if emb.dim() != 2 or inverse.dim() != 1 or offsets.dim() != 1:
        raise ValueError(
            f"pooled_embedding: expected emb (U, D), inverse (N,), offsets (B+1,), got {tuple(emb.shape)}, "
            f"{tuple(inverse.shape)}, {tuple(offsets.shape)}"
        )


def _on_cpu(*tensors: Tensor | None) -> bool:
    return all(t is None or t.device.type == "cpu" for t in tensors)


@torch.library.custom_op("recis::pooled_embedding", mutates_args=())
def pooled_embedding(emb: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str) -> Tensor:
    """out[b] = scale_b * sum_{j in bag b} w_j * emb[inverse[j]]  (B, D); empty bags give zeros."""
    _check(emb, inverse, offsets, combiner)
    if not _on_cpu(emb, inverse, offsets, weights) or emb.dtype != torch.float32:
        return pooled_embedding_reference(emb, inverse, offsets, weights, combiner)
    out = torch.empty(len(offsets) - 1, emb.shape[1], dtype=emb.dtype)
    w = None if weights is None else weights.to(torch.float32).contiguous()
    _C.pooled_forward(emb.contiguous(), inverse.contiguous(), offsets.contiguous(), w, combiner, out)
    return out


@pooled_embedding.register_fake
def _(emb: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str) -> Tensor:
    return emb.new_empty(offsets.shape[0] - 1, emb.shape[1])


@torch.library.custom_op("recis::pooled_embedding_backward", mutates_args=())
def pooled_embedding_backward(
    grad: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str, num_unique: int
) -> Tensor:
    """Gradient of pooled_embedding with respect to emb: (U, D), summed per unique row."""
    if not _on_cpu(grad, inverse, offsets, weights) or grad.dtype != torch.float32:
        rows = grad.new_zeros(num_unique, grad.shape[1])
        with torch.enable_grad():
            rows.requires_grad_()
            out = pooled_embedding_reference(rows, inverse, offsets, weights, combiner)
            (g,) = torch.autograd.grad(out, rows, grad)
        return g
    out = torch.empty(num_unique, grad.shape[1], dtype=grad.dtype)
    w = None if weights is None else weights.to(torch.float32).contiguous()
    _C.pooled_backward(grad.contiguous(), inverse.contiguous(), offsets.contiguous(), w, combiner, out)
    return out


@pooled_embedding_backward.register_fake
def _(grad: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str, num_unique: int) -> Tensor:
    return grad.new_empty(num_unique, grad.shape[1])


# Both pooled ops share one backward: it needs the pooling structure and U, never the rows.
def _save_pooling(ctx, unique: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(inverse, offsets, weights)
    ctx.combiner = combiner
    ctx.num_unique = unique.shape[0]


def _grad_of_rows(ctx, grad: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    inverse, offsets, weights = ctx.saved_tensors
    return pooled_embedding_backward(grad, inverse, offsets, weights, ctx.combiner, ctx.num_unique)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    emb, inverse, offsets, weights, combiner = inputs
    _save_pooling(ctx, emb, inverse, offsets, weights, combiner)


def _backward(ctx, grad: Tensor):  # type: ignore[no-untyped-def]
    return _grad_of_rows(ctx, grad), None, None, None, None


pooled_embedding.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("recis::table_pooled", mutates_args=())
def table_pooled(
    anchor: Tensor, rows: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str, table: int
) -> Tensor:
    """`pooled_embedding` reading the unique rows straight from table `table` (a handle).

    `anchor` is a (U, D) stand-in for the unique rows, usually a zero-stride
    `torch.zeros(()).expand(U, D)` that requires grad: it costs no memory, and backward gives it
    the (U, D) gradient of the rows. The rows themselves are never copied out of the table.
    """
    from .table import table_by_handle

    if combiner not in COMBINERS:
        raise ValueError(f"table_pooled: combiner must be one of {COMBINERS}, got {combiner!r}")
    return table_by_handle(table).pool(rows, inverse, offsets, weights, combiner).to(anchor.device)


@table_pooled.register_fake
def _(
    anchor: Tensor, rows: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str, table: int
) -> Tensor:
    return anchor.new_empty(offsets.shape[0] - 1, anchor.shape[1])


def _setup_table_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    anchor, _rows, inverse, offsets, weights, combiner, _table = inputs
    _save_pooling(ctx, anchor, inverse, offsets, weights, combiner)


def _table_backward(ctx, grad: Tensor):  # type: ignore[no-untyped-def]
    return _grad_of_rows(ctx, grad), None, None, None, None, None, None


table_pooled.register_autograd(_table_backward, setup_context=_setup_table_context)
