"""The Trainer's view of `torch.distributed`: who this rank is, and the few agreements it needs.

Under `torchrun` (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT),
`init_from_env()` starts the process group: gloo on CPU; when CUDA is available, gloo for CPU
tensors and NCCL for CUDA tensors (`"cpu:gloo,cuda:nccl"`: host tables exchange CPU tensors, tables
on the GPU CUDA ones), with each rank's current GPU its LOCAL_RANK; with a timeout on every
collective. A rank that dies makes the others' next collective fail (or time
out) instead of hanging forever; `Ranks.guard` turns that into a `DistributedError` naming the rank
and the step. Ranks agree on when a pass over the data ends (`all_have`), so uneven shards never
leave a rank waiting for a partner that has run out of batches.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recis.embedding import EmbeddingEngine


class DistributedError(RuntimeError):
    """A collective failed: another rank died, raised, or did not answer within the timeout."""


def init_from_env(timeout_s: float = 300.0, backend: str | None = None) -> bool:
    """Initializes the default process group from the launcher's environment when WORLD_SIZE > 1.

    Returns True when this process is one of several ranks. A group that already exists is kept.
    """
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend or "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_world_size() > 1


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1
    group: Any = None

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_have(self, have: bool) -> bool:
        """True when every rank has `have` (e.g. a next batch); one tiny all-reduce."""
        if self.world == 1:
            return have
        flag = torch.tensor([int(have)])
        dist.all_reduce(flag, dist.ReduceOp.MIN, group=self.group)
        return bool(flag.item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean over ranks of a scalar (a NaN anywhere makes it NaN everywhere)."""
        if self.world == 1:
            return value
        out = value.detach().to(torch.float64).reshape(1).clone()
        dist.all_reduce(out, group=self.group)
        return out[0] / self.world

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    @contextlib.contextmanager
    def guard(self, where: str) -> Iterator[None]:
        """Re-raises a failed collective as a `DistributedError` that says where and why."""
        if self.world == 1:
            yield
            return
        try:
            yield
        except (RuntimeError, dist.DistBackendError) as e:
            if isinstance(e, DistributedError) or not _looks_distributed(e):
                raise
            raise DistributedError(
                f"[recis.train] rank {self.rank} of {self.world}: a collective failed during {where}; "
                f"another rank probably died, raised or timed out ({type(e).__name__}: {e})"
            ) from e


def _looks_distributed(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, dist.DistBackendError) or any(
        w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe")
    )


def fully_shard_dense(model: nn.Module, optimizers: Iterable[torch.optim.Optimizer]) -> list[nn.Module]:
    """FSDP (`fully_shard`) over the model's dense layers; returns the modules made sharding units.

    Every largest submodule with a forward, parameters and no `EmbeddingEngine` inside becomes one
    unit (containers such as `ModuleDict` are looked into): its parameters are gathered for its
    forward and backward, then freed. The model itself becomes a unit too when parameters are left
    over. Every rank first takes rank 0's dense weights and buffers, as DDP does. The optimizers,
    built over the model's parameters before, are pointed at the sharded ones (by name); they must
    not have stepped yet.
    """
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError as e:  # pragma: no cover
        raise RuntimeError(
            f"dense_sharding='fsdp' needs torch >= 2.6 (fully_shard), this is {torch.__version__}"
        ) from e

    optimizers = list(optimizers)
    for opt in optimizers:
        if opt.state:
            raise ValueError(
                f"dense_sharding='fsdp': {type(opt).__name__} already has state; build the Trainer before stepping it"
            )
    names = {id(p): n for n, p in model.named_parameters()}

    def units(module: nn.Module) -> list[nn.Module]:
        if isinstance(module, EmbeddingEngine) or next(module.parameters(), None) is None:
            return []
        has_forward = type(module).forward is not nn.Module.forward  # ModuleDict, ModuleList: containers only
        if has_forward and not any(isinstance(m, EmbeddingEngine) for m in module.modules()):
            return [module]
        return [u for child in module.children() for u in units(child)]

    with torch.no_grad():  # every rank starts from rank 0's weights, as DDP makes sure too
        for t in _dense_tensors(model):
            dist.broadcast(t, src=0)
    found = [u for child in model.children() for u in units(child)]
    inside = {id(p) for unit in found for p in unit.parameters()}
    if any(id(p) not in inside for p in model.parameters()):
        found.append(model)
    for unit in found:  # resharded after every forward, so the next gather sees stage changes of requires_grad
        fully_shard(unit, reshard_after_forward=True)
    sharded = dict(model.named_parameters())
    for opt in optimizers:
        for group in opt.param_groups:
            group["params"] = [sharded[names[id(p)]] if id(p) in names else p for p in group["params"]]
    return found


def _dense_tensors(model: nn.Module) -> list[torch.Tensor]:
    engines = [m for m in model.modules() if isinstance(m, EmbeddingEngine)]
    inside = {id(t) for e in engines for t in [*e.parameters(), *e.buffers()]}
    return [t for t in [*model.parameters(), *model.buffers()] if id(t) not in inside]
