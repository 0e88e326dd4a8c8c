"""Differentiable pooled lookup over a batch's unique rows, as `torch.library` custom ops.

`pooled_embedding(emb, inverse, offsets, weights, combiner)` pools rows `emb[inverse[j]]` per bag.
`emb` holds only the batch's unique rows (U x D), so backward yields a U x D gradient: never one
the size of the table. CPU tensors run the C++ kernels; other devices run the torch reference.
Weights are treated as constants (no gradient flows to them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from recis.core import kernels

if TYPE_CHECKING:
    from .device_table import Table

COMBINERS = ("sum", "mean", "sqrtn")  # custom ops take a combiner as its index here (no list[str] in op schemas)


class SparseGrad(NamedTuple):
    """Gradient of one lookup: rows (U,) of `table` (-1: no row) and grads (U, D) summed per row."""

    table: Table
    rows: Tensor
    grad: Tensor


class PooledGrad(NamedTuple):
    """Gradient of a pooled lookup before it is summed per row: `pooled_grad` (bags, D) of the
    output, whose bag b summed `weights[j] * row(rows[inverse[j]])` over keys j in
    `offsets[b]:offsets[b + 1]` (weights None: all 1), all times `scale`. `reduce()` gives its
    `SparseGrad`; a sparse optimizer may instead reduce and update in one pass
    (`kernels.optim.pooled_backward_update`, with `scale` folded into its gradient scale)."""

    table: Table
    rows: Tensor  # distinct
    inverse: Tensor
    offsets: Tensor
    weights: Tensor | None
    pooled_grad: Tensor
    scale: float = 1.0

    def reduce(self) -> SparseGrad:
        bags = len(self.offsets) - 1
        grad = pooled_embedding_backward(
            self.pooled_grad, self.inverse, self.offsets, self.weights, [0], [bags], len(self.rows)
        )
        return SparseGrad(self.table, self.rows, grad.mul_(self.scale) if self.scale != 1.0 else grad)


def _bag_scale(
    offsets: Tensor, weights: Tensor | None, combiners: list[str], runs: list[int], dtype: torch.dtype
) -> Tensor | None:
    if all(c == "sum" for c in combiners):
        return None
    lengths = offsets.diff()
    bag = torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)
    w = torch.ones(int(offsets[-1]), dtype=dtype, device=offsets.device) if weights is None else weights.to(dtype)
    sums = torch.zeros(len(lengths), dtype=dtype, device=offsets.device).index_add_(0, bag, w)
    squares = torch.zeros(len(lengths), dtype=dtype, device=offsets.device).index_add_(0, bag, w * w)
    pieces = []
    for combiner, s, q in zip(combiners, sums.split(runs), squares.split(runs), strict=True):
        scale = {"sum": torch.ones_like(s), "mean": s, "sqrtn": q.sqrt()}[combiner]
        pieces.append(torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale))
    return torch.cat(pieces)


def pooled_embedding_reference(
    emb: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiner: str | list[str],
    runs: list[int] | None = None,
) -> Tensor:
    """Pure-torch pooled lookup; differentiable in `emb` through ordinary autograd.

    `combiner` may be a list, one per run of `runs[i]` consecutive bags (several features at once).
    """
    combiners, runs = _runs(combiner, runs, offsets)
    lengths = offsets.diff()
    bag = torch.repeat_interleave(torch.arange(len(lengths), device=emb.device), lengths)
    rows = emb.index_select(0, inverse)  # (N, D)
    if weights is not None:
        rows = rows * weights[:, None].to(emb.dtype)
    out = torch.zeros(len(lengths), emb.shape[1], dtype=emb.dtype, device=emb.device)
    out = out.index_add(0, bag, rows)  # (B, D)
    scale = _bag_scale(offsets, weights, combiners, runs, emb.dtype)
    return out if scale is None else out * scale[:, None]


def _runs(combiner: str | list[str], runs: list[int] | None, offsets: Tensor) -> tuple[list[str], list[int]]:
    combiners = [combiner] if isinstance(combiner, str) else list(combiner)
    runs = [len(offsets) - 1] if runs is None else list(runs)
    for c in combiners:
        if c not in COMBINERS:
            raise ValueError(f"pooled_embedding: combiner must be one of {COMBINERS}, got {c!r}")
    if len(runs) != len(combiners) or sum(runs) != len(offsets) - 1:
        raise ValueError(f"pooled_embedding: runs {runs} must give {len(offsets) - 1} bags, one run per combiner")
    return combiners, runs


def batch_major(pooled: Tensor, runs: list[int]) -> Tensor:
    """(runs * B, D) feature-major pooled rows -> (B, runs * D), the runs side by side."""
    if not runs:
        return pooled
    dim = pooled.shape[1]
    return pooled.view(len(runs), runs[0], dim).transpose(0, 1).reshape(runs[0], len(runs) * dim)


def feature_major(pooled: Tensor, runs: list[int]) -> Tensor:
    """Inverse of `batch_major`: (B, runs * D) -> (runs * B, D)."""
    if not runs:
        return pooled
    return feature_major_view(pooled, runs).reshape(len(runs) * runs[0], pooled.shape[1] // len(runs))


def feature_major_view(pooled: Tensor, runs: list[int]) -> Tensor:
    """(B, runs * D) batch-major -> its (runs, B, D) feature-major view, no copy (for `copy_` or `out=`)."""
    return pooled.view(runs[0], len(runs), pooled.shape[1] // len(runs)).transpose(0, 1)


def _check(emb: Tensor, inverse: Tensor, offsets: Tensor, combiner: str) -> None:
    _runs(combiner, None, offsets)
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
    return pooled_embedding_eager(emb, inverse, offsets, weights, combiner)


def pooled_embedding_eager(
    emb: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str
) -> Tensor:
    """`pooled_embedding` without the custom op around it (no autograd, no tracing): for lookups
    that need no gradient, where the op's dispatch would cost more than the kernel at small batches."""
    _check(emb, inverse, offsets, combiner)
    if not _on_cpu(emb, inverse, offsets, weights) or emb.dtype != torch.float32:
        return pooled_embedding_reference(emb, inverse, offsets, weights, combiner)
    out = torch.empty(len(offsets) - 1, emb.shape[1], dtype=emb.dtype)
    w = None if weights is None else weights.to(torch.float32).contiguous()
    kernels.embedding.pooled_forward(
        emb.contiguous(), inverse.contiguous(), offsets.contiguous(), w, [combiner], [len(out)], out
    )
    return out


@pooled_embedding.register_fake
def _(emb: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiner: str) -> Tensor:
    return emb.new_empty(offsets.shape[0] - 1, emb.shape[1])


@torch.library.custom_op("recis::pooled_embedding_backward", mutates_args=())
def pooled_embedding_backward(
    grad: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[int],
    runs: list[int],
    num_unique: int,
    batch_major: bool = False,
) -> Tensor:
    """Gradient of a pooled lookup with respect to its unique rows: (U, D), summed per row.
    `batch_major`: `grad` is (B, runs * D), the runs side by side (as `table_pooled` gives them)."""
    names = [COMBINERS[c] for c in combiners]
    if kernels.on_gpu(grad, inverse, offsets, weights) and grad.dtype == torch.float32:
        if batch_major:
            grad = feature_major(grad, runs)
        w = None if weights is None else weights.to(torch.float32).contiguous()
        scales = _bag_scale(offsets, w, names, runs, torch.float32)
        out = grad.new_zeros(num_unique, grad.shape[1])
        kernels.gpu.pool_backward(grad.contiguous(), inverse.contiguous(), offsets.contiguous(), w, scales, out,
                                  kernels.stream(grad.device))  # fmt: skip
        return out
    if not _on_cpu(grad, inverse, offsets, weights) or grad.dtype != torch.float32:
        if batch_major:
            grad = feature_major(grad, runs)
        rows = grad.new_zeros(num_unique, grad.shape[1])
        with torch.enable_grad():
            rows.requires_grad_()
            out = pooled_embedding_reference(rows, inverse, offsets, weights, names, runs)
            (g,) = torch.autograd.grad(out, rows, grad)
        return g
    dim = grad.shape[1] // len(runs) if batch_major and runs else grad.shape[1]
    out = torch.empty(num_unique, dim, dtype=grad.dtype)
    w = None if weights is None else weights.to(torch.float32).contiguous()
    kernels.embedding.pooled_backward(
        grad.contiguous(), inverse.contiguous(), offsets.contiguous(), w, names, runs, out, batch_major
    )
    return out


@pooled_embedding_backward.register_fake
def _(
    grad: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[int],
    runs: list[int],
    num_unique: int,
    batch_major: bool = False,
) -> Tensor:
    return grad.new_empty(num_unique, grad.shape[1] // len(runs) if batch_major and runs else grad.shape[1])


# Both pooled ops share one backward: it needs the pooling structure and U, never the rows.
def _save_pooling(  # type: ignore[no-untyped-def]
    ctx, unique: Tensor, inverse: Tensor, offsets: Tensor, weights: Tensor | None, combiners: list[int], runs: list[int]
) -> None:
    ctx.save_for_backward(inverse, offsets, weights)
    ctx.combiners, ctx.runs = combiners, runs
    ctx.num_unique = unique.shape[0]
    ctx.batch_major = False


def _grad_of_rows(ctx, grad: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    inverse, offsets, weights = ctx.saved_tensors
    return pooled_embedding_backward(
        grad, inverse, offsets, weights, ctx.combiners, ctx.runs, ctx.num_unique, ctx.batch_major
    )


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    emb, inverse, offsets, weights, combiner = inputs
    _save_pooling(ctx, emb, inverse, offsets, weights, [COMBINERS.index(combiner)], [len(offsets) - 1])


def _backward(ctx, grad: Tensor):  # type: ignore[no-untyped-def]
    return _grad_of_rows(ctx, grad), None, None, None, None


pooled_embedding.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("recis::table_pooled", mutates_args=())
def table_pooled(
    anchor: Tensor,
    rows: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[int],
    runs: list[int],
    table: int,
    batch_major: bool = False,
) -> Tensor:
    """Pooled lookup reading the unique rows straight from table `table` (a handle).

    Pools several features in one call: their bags are concatenated in `offsets` and run i (the
    next `runs[i]` bags) uses combiner `COMBINERS[combiners[i]]`. The result is (bags, D), or
    with `batch_major` (all runs of B bags) (B, runs * D): the features side by side, as a model
    concatenates them, so no copy is needed for that (see `recis.embedding.concat`).

    `anchor` is a (U, D) stand-in for the unique rows, usually a zero-stride
    `torch.zeros(()).expand(U, D)` that requires grad: it costs no memory, and backward gives it
    the (U, D) gradient of the rows, or, when the table has a fused optimizer
    (`HashTable.fused_backward`), hands the output gradient to it (`table_update`, which declares
    the write) and gives none.
    """
    from .table import table_by_handle

    names = _runs([COMBINERS[c] for c in combiners], runs, offsets)[0]
    return table_by_handle(table).pool(rows, inverse, offsets, weights, names, runs, batch_major).to(anchor.device)


@table_pooled.register_fake
def _(
    anchor: Tensor,
    rows: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[int],
    runs: list[int],
    table: int,
    batch_major: bool = False,
) -> Tensor:
    if batch_major and runs:
        return anchor.new_empty(runs[0], len(runs) * anchor.shape[1])
    return anchor.new_empty(offsets.shape[0] - 1, anchor.shape[1])


def _setup_table_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    anchor, rows, inverse, offsets, weights, combiners, runs, table, batch_major = inputs
    _save_pooling(ctx, anchor, inverse, offsets, weights, combiners, runs)
    ctx.rows, ctx.table, ctx.batch_major = rows, table, batch_major


def _table_backward(ctx, grad: Tensor):  # type: ignore[no-untyped-def]
    from .table import table_by_handle

    table = table_by_handle(ctx.table)
    if table.fused_backward is not None:
        inverse, offsets, weights = ctx.saved_tensors
        args = (ctx.rows, inverse, offsets, weights, ctx.combiners, ctx.runs, grad, ctx.table, ctx.batch_major)
        table_update(table.version, *args)
        return None, None, None, None, None, None, None, None, None
    return _grad_of_rows(ctx, grad), None, None, None, None, None, None, None, None


table_pooled.register_autograd(_table_backward, setup_context=_setup_table_context)


@torch.library.custom_op("recis::table_update", mutates_args=("version",))
def table_update(
    version: Tensor,
    rows: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[int],
    runs: list[int],
    grad: Tensor,
    table: int,
    batch_major: bool = False,
) -> None:
    """The fused sparse optimizer's update of table `table` from the output gradient of a
    `table_pooled` lookup: writes the rows in place, declared as a write of `version` (the
    table's `HashTable.version`, which stands for its rows)."""
    from .table import table_by_handle

    fused = table_by_handle(table).fused_backward
    if fused is None:
        raise ValueError(f"table_update: table {table} has no fused sparse optimizer")
    fused(rows, inverse, offsets, weights, [COMBINERS[c] for c in combiners], runs, grad, batch_major)
    version.add_(1)


@table_update.register_fake
def _(
    version: Tensor,
    rows: Tensor,
    inverse: Tensor,
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[int],
    runs: list[int],
    grad: Tensor,
    table: int,
    batch_major: bool = False,
) -> None:
    return None
