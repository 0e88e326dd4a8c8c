"""Dense state in one format however the dense layers are spread over ranks.

FSDP keeps each rank's shard of a parameter (and of its optimizer state) as a `DTensor`. For a
checkpoint, sharded tensors are gathered to full ones (`full_*`, a collective when there are any);
for loading, full tensors are cut back to this rank's shard (`shard_*`, local slicing, no traffic).
So `model.pt` and `optimizers.pt` hold plain tensors whether the run used one process, DDP or FSDP,
and load into any of them.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
from torch import Tensor, nn

from recis.embedding import without_tables

try:  # torch >= 2.5 built with torch.distributed; without it nothing can be sharded
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover
    DTensor = distribute_tensor = None  # type: ignore[assignment,misc]


def full_model_state(model: nn.Module) -> dict[str, Any]:
    """`model.state_dict()` without table rows (the saver stores those), sharded tensors gathered
    to full ones (every rank calls it)."""
    with without_tables(model):
        return {k: v.full_tensor() if is_sharded(v) else v for k, v in model.state_dict().items()}


def shard_model_state(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """`state` (full tensors) with the entries the model shards cut to this rank's shards."""
    with without_tables(model):
        have = model.state_dict()
    return {k: _like(have.get(k), v) for k, v in state.items()}


def load_model_state(model: nn.Module, state: dict[str, Any]) -> None:
    """Loads `full_model_state`'s `state` (no table rows) into `model`, each rank its shards."""
    with without_tables(model):
        model.load_state_dict(shard_model_state(model, state))


def full_optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """`opt.state_dict()` with sharded state tensors gathered, in parameter order on every rank."""
    sd = opt.state_dict()
    state = {i: {k: v.full_tensor() if is_sharded(v) else v for k, v in sd["state"][i].items()}
             for i in sorted(sd["state"])}  # fmt: skip
    return {**sd, "state": state}


def shard_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """`state` (from `full_optimizer_state` or a plain `state_dict()`) cut to this rank's shards:
    each per-element tensor (the shape of its parameter) is sharded as the parameter is."""
    params = [p for g in opt.param_groups for p in g["params"]]
    out = {}
    for i, slots in state["state"].items():
        p = params[i] if isinstance(i, int) and 0 <= i < len(params) else None
        out[i] = {k: _like(p, v) if isinstance(v, Tensor) and p is not None and v.shape == p.shape and v.dim() else v
                  for k, v in slots.items()}  # fmt: skip
    return {**state, "state": out}


def is_sharded(t: Any) -> TypeGuard[DTensor]:
    """Whether `t` is a `DTensor` (a shard of a tensor spread over ranks)."""
    return DTensor is not None and isinstance(t, DTensor)


def has_sharded(model: nn.Module | None) -> bool:
    return model is not None and any(is_sharded(p) for p in model.parameters())


def _like(ref: Any, full: Any) -> Any:
    if not is_sharded(ref) or not isinstance(full, Tensor):
        return full
    return distribute_tensor(full.to(ref.dtype), ref.device_mesh, ref.placements, src_data_rank=None)
