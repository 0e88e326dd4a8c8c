"""Sparse optimizers over hash-table embeddings: only the rows a step touched are updated.

Each update is one C++ pass per table that reads a row's reduced gradient and updates its
optimizer slots (kept in the table, under the row's index) and its embedding together. They are
`torch.optim.Optimizer`s, one param group per physical table, so `lr_scheduler`s drive them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from recis.core import kernels
from recis.embedding import DeviceTable, EmbeddingEngine, HashTable, PooledGrad, SparseGrad, Table
from recis.embedding.ops import COMBINERS, pooled_embedding_backward

from . import row_updates

Sources = EmbeddingEngine | nn.Module | Table | Iterable[EmbeddingEngine | nn.Module | Table]


class SparseOptimizer(torch.optim.Optimizer):
    """Base class: applies `kind`'s update to the rows of hash tables that a step touched.

    Args:
        params: an `EmbeddingEngine`, a module containing engines, a `HashTable` or `DeviceTable`, or
            a list of them. Tables kept on a device are updated there (`row_updates`, in tensor ops).
            Engines hand over their gradients by themselves; for bare tables pass them to
            `accumulate()`.
        fused: apply each table's update inside backward, as soon as its gradient is complete, so no
            sparse gradient is stored. Results equal the two-phase path; it rules out gradient
            accumulation over micro-batches and global norm clipping (both need every gradient first),
            and sharded engines (their gradients reach the owning rank after backward).
        defaults: the kind's hyper-parameters (`lr`, ...); each table is one param group holding
            them, with its name under "name".

    Semantics are "lazy": a row's moments and accumulators move only in steps that touch it.
    The bias-correction step `t` of the Adam kinds is the optimizer's step count (1 on the first
    `step()`), shared by all rows, as in `torch.optim.SparseAdam` and TF's LazyAdam. A row that is
    evicted and re-inserted starts with fresh slots.
    """

    kind: ClassVar[str]

    def __init__(self, params: Sources, *, fused: bool = False, **defaults: Any):
        if defaults.get("lr", 0.0) < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {defaults['lr']}")
        self.engines, tables = _collect(params, type(self).__name__)
        groups = [{"params": [torch.zeros(0)], "name": name} for name in tables]
        super().__init__(groups, defaults)
        self.tables = list(tables.values())
        self._slots = [self._ensure_slots(t) for t in self.tables]
        self._index = {id(t): i for i, t in enumerate(self.tables)}
        self._step = 0
        # (gradient, rows known distinct) since the last step
        self._grads: list[tuple[SparseGrad | PooledGrad, bool]] = []
        self._merged: list[SparseGrad | PooledGrad] | None = None  # reduced per table, cached for clipping
        self._grad_scale = 1.0
        self.fused = fused
        self._fused_done: set[int] = set()
        if fused and any(e.sharded for e in self.engines):
            raise ValueError(
                f"{type(self).__name__}(fused=True): sharded engines send gradients to their owners after backward, "
                "so the update cannot run inside it; use fused=False"
            )
        if fused:
            taken = [e.grad_hook for e in self.engines] + [t.fused_backward for t in self.tables]
            if any(h is not None and getattr(h, "alive", True) for h in taken):
                raise ValueError(
                    f"{type(self).__name__}: a table or engine already has a live fused optimizer (detach() it first)"
                )
            for engine in self.engines:  # gathered lookups: once their gradient is complete
                engine.grad_hook = _FusedHook(self, "_apply_in_backward")
            for i, table in enumerate(self.tables):  # pooled ones: reduce + update in one pass
                table.fused_backward = _FusedHook(self, "_pooled_backward", i)

    def detach(self) -> None:
        """Unhooks a fused optimizer from its engines and tables (another may then take them)."""
        for engine in self.engines:
            if isinstance(engine.grad_hook, _FusedHook) and engine.grad_hook.owner() is self:
                engine.grad_hook = None
        for table in self.tables:
            if isinstance(table.fused_backward, _FusedHook) and table.fused_backward.owner() is self:
                table.fused_backward = None

    # -- the torch.optim interface ---------------------------------------------------------------

    def step(self, closure: Any = None) -> Any:
        """Applies one update to every row touched since the last step (gradients summed per row).

        After a failure (e.g. a row evicted between backward and step) this step's gradients are
        dropped and the step count does not advance.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        try:
            with torch.no_grad():
                if not self.fused:
                    for i, g in enumerate(self._gather(fuse=True)):
                        if isinstance(g, PooledGrad):  # sum per row inside the update
                            bags = [len(g.offsets) - 1]
                            self._fused_update(
                                i, g.rows, g.inverse, g.offsets, g.weights, ["sum"], bags, g.pooled_grad, scale=g.scale
                            )
                        elif len(g.rows):
                            self._update(i, g.rows, g.grad, self._step + 1)
            self._step += 1
        finally:
            self._clear()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears gradients collected so far; lookups recorded by a forward stay (their backward
        may still come, as with dense parameters)."""
        self._clear()
        for engine in self.engines:
            engine.zero_sparse_grads()

    def _clear(self) -> None:
        self._grads, self._merged, self._grad_scale = [], None, 1.0
        self._fused_done.clear()

    def state_dict(self, slots: bool | None = None) -> dict[str, Any]:
        """Hyper-parameters per table, the step count and every table's optimizer slots under
        "sparse_slots": per table, the live rows' `ids`, `tags` and `slot.<name>`.

        With the engines' `state_dict()` (which holds the rows) this makes `torch.save` of model
        and optimizer a complete copy of a small model. `slots`: None (default) includes them
        unless an engine is sharded (its rows are spread over the ranks, and the engine's own
        `state_dict()` refuses them: the `Saver` stores both); True insists (and raises on a
        sharded engine); False leaves them out, as the `Saver` asks.

        Examples:
            >>> from recis.embedding import EmbeddingEngine, EmbeddingSpec
            >>> engine = EmbeddingEngine({"item": EmbeddingSpec(4)})
            >>> opt = SparseAdagrad(engine, lr=0.1)
            >>> engine({"item": torch.tensor([3, 5])})["item"].sum().backward()
            >>> opt.step()
            >>> sorted(opt.state_dict()["sparse_slots"][0])
            ['ids', 'slot.adagrad.sum', 'tags']
        """
        out = super().state_dict() | {"sparse_step": self._step}
        sharded = any(e.sharded for e in self.engines)
        if slots or (slots is None and not sharded):
            if sharded:
                raise RuntimeError(
                    f"{type(self).__name__}.state_dict: a sharded engine's rows are spread over the ranks; save "
                    "them with recis.optim.Saver (or take state_dict(slots=False))"
                )
            out["sparse_slots"] = [_slot_state(t) for t in self.tables]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores hyper-parameters, the step count and, when the state holds them, the slots of its
        rows; tables must match by name and order. Load the model's state (its tables' rows) first:
        a row the optimizer state has and its table lacks is an error, and nothing changes."""
        who = f"{type(self).__name__}.load_state_dict"
        if "sparse_step" not in state_dict:
            raise ValueError(f"{who}: not a sparse optimizer state (no 'sparse_step')")
        names = [g.get("name") for g in state_dict.get("param_groups", [])]
        mine = [g["name"] for g in self.param_groups]
        if names != mine:
            raise ValueError(f"{who}: the state is for tables {names}, this optimizer has {mine}")
        state = dict(state_dict)
        step = int(state.pop("sparse_step"))
        saved = state.pop("sparse_slots", None)
        merged = []
        if saved is not None:
            if len(saved) != len(self.tables):
                raise ValueError(f"{who}: the state holds slots of {len(saved)} tables, this has {len(self.tables)}")
            merged = [_with_slots(t, n, s, who) for t, n, s in zip(self.tables, mine, saved, strict=True)]
        super().load_state_dict(state)
        self._step = step
        for table, rows in zip(self.tables, merged, strict=False):
            if rows is not None:
                table.load_state_dict(rows)

    # -- gradients -------------------------------------------------------------------------------

    def accumulate(self, grads: Iterable[SparseGrad]) -> None:
        """Adds gradients of bare tables (rows, (n, D) grads; rows may repeat: they are summed)."""
        who = f"{type(self).__name__}.accumulate"
        if self.fused:
            raise RuntimeError(f"{who}: a fused optimizer takes gradients only from backward")
        if self._grad_scale != 1.0:
            raise RuntimeError(f"{who}: gradients were already clipped for this step; accumulate before clipping")
        for g in grads:
            if id(g.table) not in self._index:
                raise ValueError(f"{who}: {g.table!r} is not one of this optimizer's tables")
            if g.rows.dim() != 1 or g.rows.dtype.is_floating_point or g.grad.shape != (len(g.rows), g.table.dim):
                raise ValueError(
                    f"{who}: expected integer rows (n,) and grad (n, {g.table.dim}), "
                    f"got rows {tuple(g.rows.shape)} {g.rows.dtype} and grad {tuple(g.grad.shape)}"
                )
            device = g.table.device if isinstance(g.table, DeviceTable) else torch.device("cpu")
            rows, grad = g.rows.to(device, torch.int64), g.grad.detach().to(device)
            self._grads.append((SparseGrad(g.table, rows, grad), False))

    def grad_sq_norm(self) -> Tensor:
        """Sum of squares of the reduced sparse gradients as the update will apply them (scaled);
        over all ranks for sharded engines (a collective: every rank calls it)."""
        total = torch.zeros((), dtype=torch.float64)
        for g in self._reduce():
            total += g.grad.double().square().sum().cpu()  # device tables: one read each
        sharded = [e for e in self.engines if e.sharded]
        if sharded:  # each rank holds the gradients of the rows it owns: the norm is their sum
            torch.distributed.all_reduce(total, group=sharded[0].process_group)
        return total * self._grad_scale**2

    def scale_grads(self, factor: float) -> None:
        """Multiplies this step's gradients by `factor` (applied inside the update kernel)."""
        self._grad_scale *= factor

    def _reduce(self) -> list[SparseGrad]:
        """Pulls the engines' gradients and sums them per table and row (cached until the step)."""
        return [g.reduce() if isinstance(g, PooledGrad) else g for g in self._gather(fuse=False)]

    def _gather(self, fuse: bool) -> list[SparseGrad | PooledGrad]:
        """`_reduce`; with `fuse`, a table whose one gradient is a `PooledGrad` keeps it unsummed, for
        the update to sum and apply in one pass."""
        if self.fused:
            raise RuntimeError(f"{type(self).__name__}(fused=True) keeps no gradients to read or clip")
        for engine in self.engines:  # an engine's entries have distinct rows
            self._grads.extend((g, True) for g in engine.raw_sparse_grads(strict=False) if id(g.table) in self._index)
        if self._merged is not None and not self._grads:
            return self._merged
        per_table: list[list[tuple[SparseGrad | PooledGrad, bool]]] = [[] for _ in self.tables]
        for g, distinct in [*((m, True) for m in self._merged or []), *self._grads]:
            per_table[self._index[id(g.table)]].append((g, distinct))
        self._grads = []
        self._merged = [
            parts[0][0] if fuse and len(parts) == 1 and isinstance(parts[0][0], PooledGrad) else _merge(table, parts)
            for table, parts in zip(self.tables, per_table, strict=True)
        ]
        return self._merged

    def _apply_in_backward(self, g: SparseGrad) -> None:
        i = self._index.get(id(g.table))
        if i is None:
            return
        self._mark_fused(i)
        merged = _merge(g.table, [(g, True)])
        self._update(i, merged.rows, merged.grad, self._step + 1)

    def _pooled_backward(self, i: int, *pooled: Any) -> None:
        """Backward of a pooled lookup straight into the update (`_fused_update`'s arguments after
        `i`, as `HashTable.fused_backward` gets them): no (U, D) gradient is stored."""
        self._mark_fused(i)
        self._fused_update(i, *pooled)

    def _fused_update(
        self,
        i: int,
        rows: Tensor,
        inverse: Tensor,
        offsets: Tensor,
        weights: Tensor | None,
        combiners: list[str],
        runs: list[int],
        grad: Tensor,
        batch_major: bool = False,
        scale: float = 1.0,
    ) -> None:
        """Sums a pooled output's gradient (times `scale`) per row and applies it, in one pass per row."""
        w = None if weights is None else weights.to(torch.float32).contiguous()
        config = self._config(i, self._step + 1)
        config.grad_scale *= scale
        table = self.tables[i]
        if isinstance(table, DeviceTable):  # summed per row, then updated, in tensor ops on its device
            codes = [COMBINERS.index(c) for c in combiners]
            reduced = pooled_embedding_backward(grad, inverse, offsets, w, codes, runs, len(rows), batch_major)
            row_updates.sparse_update(table, self.kind, config, rows, reduced)
            return
        kernels.optim.pooled_backward_update(
            table._c,
            config,
            self._slots[i],
            rows,
            inverse.contiguous(),
            offsets.contiguous(),
            w,
            combiners,
            runs,
            grad.to(device="cpu", dtype=torch.float32).contiguous(),
            batch_major,
        )

    def _mark_fused(self, i: int) -> None:
        if i in self._fused_done:
            raise RuntimeError(
                f"{type(self).__name__}(fused=True): table {self.param_groups[i]['name']!r} got a second gradient "
                "before step() (a second backward, or a second lookup of the table in one step); a fused update "
                "takes exactly one per step: use fused=False to accumulate"
            )
        self._fused_done.add(i)

    # -- the update ------------------------------------------------------------------------------

    def _config(self, i: int, step: int) -> Any:
        config = kernels.optim.OptConfig(self.kind)
        self._configure(config, self.param_groups[i])
        config.step = step
        config.grad_scale = self._grad_scale
        return config

    def _update(self, i: int, rows: Tensor, grad: Tensor, step: int) -> None:
        config, table = self._config(i, step), self.tables[i]
        if isinstance(table, DeviceTable):
            row_updates.sparse_update(table, self.kind, config, rows, grad)
            return
        grad = grad.to(device="cpu", dtype=torch.float32).contiguous()
        kernels.optim.sparse_update(table._c, config, self._slots[i], rows.cpu(), grad)

    def _configure(self, config: Any, group: dict[str, Any]) -> None:
        """Copies the group's hyper-parameters into the kernel config."""
        config.lr = group["lr"]
        config.weight_decay = group.get("weight_decay", 0.0)

    def _ensure_slots(self, table: Table) -> list[int]:
        """Adds this kind's slots to `table` (or reuses them, e.g. after a checkpoint load)."""
        names = table.slot_names()
        init = self.defaults.get("initial_accumulator_value", 0.0)
        out = []
        for name, width, accumulator in kernels.optim.optimizer_slots(self.kind):
            width = width or table.dim
            if name in names:
                out.append(names.index(name))
            else:
                out.append(table.add_slot(name, width, init if accumulator else 0.0))
        return out


def _slot_state(table: Table) -> dict[str, Tensor]:
    """The live rows' keys and optimizer slots (nothing for a table without slots)."""
    if not table.slot_names():
        return {}
    return {k: v for k, v in table.state_dict().items() if k in ("ids", "tags") or k.startswith("slot.")}


def _with_slots(table: Table, name: str, saved: dict[str, Tensor], who: str) -> dict[str, Tensor] | None:
    """The table's rows with the slots of `saved` (from `_slot_state`) written over theirs, ready
    for `table.load_state_dict`; None when `saved` holds nothing. Raises before anything changes."""
    if not saved:
        return None
    mine = {f"slot.{n}" for n in table.slot_names()}
    theirs = {k for k in saved if k.startswith("slot.")}
    if theirs != mine:
        raise ValueError(f"{who}: table '{name}' has slots {sorted(mine)}, the state {sorted(theirs)}")
    rows = table.state_dict()
    ids, tags = saved["ids"].to(torch.int64), saved["tags"].to(torch.int64)
    if ids.shape != tags.shape or ids.dim() != 1:
        raise ValueError(
            f"{who}: table '{name}' ids and tags must be 1-D of one length, "
            f"got {tuple(ids.shape)} and {tuple(tags.shape)}"
        )
    at = _positions(rows["ids"], rows["tags"].to(torch.int64), ids, tags)
    missing = int((at < 0).sum())
    if missing:
        raise ValueError(
            f"{who}: {missing} of the {len(ids)} rows with slots in the state are not in table '{name}' "
            f"({len(rows['ids'])} rows); load the model's state_dict (its tables) before the optimizer's"
        )
    for k in sorted(theirs):
        values = saved[k].to(torch.float32)
        want = (len(ids), rows[k].shape[1])
        if tuple(values.shape) != want:
            raise ValueError(f"{who}: table '{name}' {k} must be {want[0]} x {want[1]}, got {tuple(values.shape)}")
        rows[k][at] = values  # state_dict() tensors are the table's copies: written in place
    return rows


def _positions(have_ids: Tensor, have_tags: Tensor, ids: Tensor, tags: Tensor) -> Tensor:
    """Index of each key (ids[i], tags[i]) among the keys (have_ids, have_tags), -1 if absent."""
    out = torch.full_like(ids, -1)
    for tag in torch.unique(tags).tolist():
        have = (have_tags == tag).nonzero().flatten()
        want = (tags == tag).nonzero().flatten()
        if not len(have):
            continue
        sorted_ids, order = have_ids[have].sort()
        at = torch.searchsorted(sorted_ids, ids[want]).clamp(max=len(have) - 1)
        hit = sorted_ids[at] == ids[want]
        out[want[hit]] = have[order[at[hit]]]
    return out


class _FusedHook:
    """A fused optimizer's hook on an engine or table; holds the optimizer weakly, so a dropped
    optimizer neither stays alive nor blocks a new one."""

    def __init__(self, opt: SparseOptimizer, method: str, *args: Any):
        self.owner = weakref.ref(opt)
        self.method, self.args = method, args

    @property
    def alive(self) -> bool:
        return self.owner() is not None

    def __call__(self, *args: Any) -> None:
        opt = self.owner()
        if opt is None:
            raise RuntimeError("a fused sparse optimizer was dropped while its engine still trains; call detach()")
        getattr(opt, self.method)(*self.args, *args)


def _merge(table: Table, grads: list[tuple[SparseGrad | PooledGrad, bool]]) -> SparseGrad:
    """One gradient per distinct row (rows -1, which have no row, dropped). `grads` pairs each
    gradient with whether its rows are known to be distinct (a lone such part needs no sort)."""
    parts = [(g.reduce() if isinstance(g, PooledGrad) else g, distinct) for g, distinct in grads]
    if not parts:
        return SparseGrad(table, torch.empty(0, dtype=torch.int64), torch.empty(0, table.dim))
    rows = torch.cat([p.rows for p, _ in parts]) if len(parts) > 1 else parts[0][0].rows
    grad = torch.cat([p.grad for p, _ in parts]) if len(parts) > 1 else parts[0][0].grad  # (N, D)
    keep = rows >= 0
    if not bool(keep.all()):
        rows, grad = rows[keep], grad[keep]
    if len(parts) > 1 or not parts[0][1]:
        rows, inverse = torch.unique(rows, return_inverse=True)
        grad = torch.zeros(len(rows), table.dim, dtype=grad.dtype, device=grad.device).index_add_(0, inverse, grad)
    return SparseGrad(table, rows, grad)


def _collect(params: Sources, who: str) -> tuple[list[EmbeddingEngine], dict[str, Table]]:
    """Engines and the physical tables (by name) that `params` names."""
    items = [params] if isinstance(params, nn.Module | HashTable | DeviceTable) else list(params)
    engines: list[EmbeddingEngine] = []
    tables: dict[str, Table] = {}
    for item in items:
        if isinstance(item, HashTable | DeviceTable):
            tables.setdefault(f"table{len(tables)}", item)
        elif isinstance(item, nn.Module):
            for module in item.modules():
                if isinstance(module, EmbeddingEngine) and module not in engines:
                    engines.append(module)
                    prefix = f"engine{len(engines) - 1}." if len(engines) > 1 else ""
                    tables |= {prefix + name: t for name, t in module.tables().items()}
        else:
            raise TypeError(f"{who}: expected EmbeddingEngines, modules or HashTables, got {type(item).__name__}")
    if not tables:
        raise ValueError(f"{who}: no hash tables to optimize (pass an EmbeddingEngine or a module holding one)")
    if len({id(t) for t in tables.values()}) != len(tables):
        raise ValueError(f"{who}: a table was given twice")
    return engines, tables


class SparseSGD(SparseOptimizer):
    """w -= lr * (g + weight_decay * w) on touched rows.

    Examples:
        >>> from recis.embedding import EmbeddingEngine, EmbeddingSpec
        >>> engine = EmbeddingEngine({"item": EmbeddingSpec(4)})
        >>> opt = SparseSGD(engine, lr=0.1)
        >>> engine({"item": torch.tensor([1, 2])})["item"].sum().backward()
        >>> opt.step()
    """

    kind = "sgd"

    def __init__(self, params: Sources, lr: float = 0.01, weight_decay: float = 0.0, *, fused: bool = False):
        super().__init__(params, fused=fused, lr=lr, weight_decay=weight_decay)


class SparseAdagrad(SparseOptimizer):
    """`torch.optim.Adagrad` on touched rows: s += g^2; w -= lr_t * g / (sqrt(s) + eps), with
    lr_t = lr / (1 + (t - 1) * lr_decay) and weight decay added to g (L2). Slot: adagrad.sum (D)."""

    kind = "adagrad"

    def __init__(
        self,
        params: Sources,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        fused: bool = False,
    ):
        super().__init__(
            params,
            fused=fused,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )

    def _configure(self, config: Any, group: dict[str, Any]) -> None:
        super()._configure(config, group)
        config.lr_decay, config.eps = group["lr_decay"], group["eps"]


class SparseRowWiseAdagrad(SparseOptimizer):
    """Adagrad with one accumulator per row (FBGEMM/TorchRec's row-wise Adagrad): s += mean(g^2);
    w -= lr * g / (sqrt(s) + eps). Slot: rowwise_adagrad.sum (1 float per row)."""

    kind = "rowwise_adagrad"

    def __init__(
        self,
        params: Sources,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-8,
        *,
        fused: bool = False,
    ):
        super().__init__(
            params,
            fused=fused,
            lr=lr,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )

    def _configure(self, config: Any, group: dict[str, Any]) -> None:
        super()._configure(config, group)
        config.eps = group["eps"]


class SparseAdam(SparseOptimizer):
    """`torch.optim.Adam` on touched rows (lazy): weight decay is L2 (added to g). Slots: adam.m, adam.v.

    Examples:
        >>> from recis.embedding import EmbeddingEngine, EmbeddingSpec
        >>> engine = EmbeddingEngine({"item": EmbeddingSpec(4)})
        >>> opt = SparseAdam(engine, lr=1e-3)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
        >>> engine({"item": torch.tensor([1, 2])})["item"].sum().backward()
        >>> opt.step(); sched.step()
    """

    kind = "adam"
    decoupled = False

    def __init__(
        self,
        params: Sources,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        fused: bool = False,
    ):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        super().__init__(params, fused=fused, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _configure(self, config: Any, group: dict[str, Any]) -> None:
        super()._configure(config, group)
        config.beta1, config.beta2 = group["betas"]
        config.eps = group["eps"]
        config.decoupled = self.decoupled


class SparseAdamW(SparseAdam):
    """`torch.optim.AdamW` on touched rows: decoupled decay w *= 1 - lr * weight_decay, then Adam."""

    decoupled = True

    def __init__(
        self,
        params: Sources,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        fused: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, fused=fused)


class SparseAdamTF(SparseAdam):
    """TensorFlow's Adam (`tf.compat.v1.train.AdamOptimizer` / Keras `Adam`) on touched rows, as LazyAdam:

    lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    w -= lr_t * m / (sqrt(v) + eps)   (epsilon outside the bias correction, unlike torch).
    """

    kind = "adam_tf"


class SparseAdamWTF(SparseAdamTF):
    """Keras `AdamW` on touched rows: w -= w * weight_decay * lr, then TF's Adam update."""

    decoupled = True

    def __init__(
        self,
        params: Sources,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 4e-3,
        *,
        fused: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, fused=fused)


class SparseFtrl(SparseOptimizer):
    """FTRL-Proximal (McMahan et al., KDD 2013, Algorithm 1), per coordinate, on touched rows:

    sigma = (sqrt(n + g^2) - sqrt(n)) / lr; z += g - sigma * w; n += g^2;
    w = 0 if |z| <= l1 else -(z - sign(z) * l1) / ((beta + sqrt(n)) / lr + l2).

    Slots: ftrl.z, ftrl.n (n starts at `initial_accumulator_value`). The paper's weights start at
    0: give such tables `Initializer.constant(0.0)`. TF's `FtrlOptimizer` is this with beta=0 and
    2 * l2.
    """

    kind = "ftrl"

    def __init__(
        self,
        params: Sources,
        lr: float = 0.05,
        l1: float = 0.0,
        l2: float = 0.0,
        beta: float = 1.0,
        initial_accumulator_value: float = 0.0,
        *,
        fused: bool = False,
    ):
        if lr <= 0:
            raise ValueError(f"SparseFtrl: lr must be > 0, got {lr}")
        if l1 < 0 or l2 < 0 or beta < 0 or initial_accumulator_value < 0:
            raise ValueError(
                f"SparseFtrl: l1, l2, beta and initial_accumulator_value must be >= 0, "
                f"got {l1}, {l2}, {beta}, {initial_accumulator_value}"
            )
        super().__init__(
            params, fused=fused, lr=lr, l1=l1, l2=l2, beta=beta, initial_accumulator_value=initial_accumulator_value
        )

    def _configure(self, config: Any, group: dict[str, Any]) -> None:
        super()._configure(config, group)
        config.l1, config.l2, config.ftrl_beta = group["l1"], group["l2"], group["beta"]
