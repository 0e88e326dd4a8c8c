"""Splitting a model into hash tables and dense parameters, and global gradient-norm clipping."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .dense_state import is_sharded
from .sparse import SparseOptimizer


def split_parameters(model: nn.Module) -> tuple[list[EmbeddingEngine], list[nn.Parameter]]:
    """The model's embedding engines (for a sparse optimizer) and its trainable dense parameters
    (for any `torch.optim` optimizer).

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> model = nn.ModuleDict({"emb": EmbeddingEngine({"item": EmbeddingSpec(4)}), "mlp": nn.Linear(4, 1)})
        >>> engines, dense = split_parameters(model)
        >>> len(engines), [tuple(p.shape) for p in dense]
        (1, [(1, 4), (1,)])
    """
    engines = [m for m in model.modules() if isinstance(m, EmbeddingEngine)]
    dense = [p for p in model.parameters() if p.requires_grad]
    return engines, dense


def clip_grad_norm_(
    dense: Iterable[Tensor], sparse: SparseOptimizer | Iterable[SparseOptimizer], max_norm: float
) -> Tensor:
    """Clips the global 2-norm of all gradients, dense parameters' and sparse optimizers' together,
    to `max_norm` (the rule of `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.

    Call it after backward and before the optimizers' `step()`. Sparse gradients are summed per
    row first (the norm of what the update will apply); they are scaled inside the update kernel.
    """
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be > 0, got {max_norm}")
    grads = [p.grad for p in dense if p.grad is not None]
    sparse = [sparse] if isinstance(sparse, SparseOptimizer) else list(sparse)
    total_sq = _sq_sum(g for g in grads if not is_sharded(g))
    shards = [g for g in grads if is_sharded(g)]
    if shards:  # FSDP: each rank holds a shard of these gradients; the norm sums all shards
        shard_sq = _sq_sum(g.to_local() for g in shards)
        torch.distributed.all_reduce(shard_sq, group=shards[0].device_mesh.get_group())
        total_sq = total_sq + shard_sq
    for opt in sparse:
        total_sq = total_sq + opt.grad_sq_norm()
    total = total_sq.sqrt()
    coef = max_norm / (float(total) + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.detach().mul_(coef)
        for opt in sparse:
            opt.scale_grads(coef)
    return total.float()


def _sq_sum(grads: Iterable[Tensor]) -> Tensor:
    return sum((g.detach().double().square().sum() for g in grads), torch.zeros((), dtype=torch.float64))
