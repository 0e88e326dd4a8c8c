"""`EmbeddingEngine`: a batch of ID features in, their embeddings out, one probe pipeline per table.

Features that name the same `table` share its rows. Logical tables whose settings match (dim,
initializer, admission, eviction, dtype) are merged into one physical `HashTable`: each logical
table gets a 16-bit tag and the table key is the exact pair (ID, tag), so merging never makes two
features' IDs collide, and each physical table costs one de-duplicate/probe/gather call per batch.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake

from recis.core import Padded, Ragged

from . import distributed, ops
from .device_table import DeviceTable, Table
from .frozen import FrozenBags, FrozenTable
from .ops import PooledGrad, SparseGrad
from .table import Eviction, HashTable, Initializer

Combiner = Literal["sum", "mean", "sqrtn", "tile"]


@dataclass(frozen=True)
class EmbeddingSpec:
    """How one feature is embedded.

    Args:
        dim: embedding width.
        table: logical table name; features naming the same table share rows (default: the feature's name).
        combiner: "sum", "mean", "sqrtn" (pooled to (B, D)), "tile" (the first `max_len` positions
            side by side, (B, max_len * D)), or None for a sequence: per-position rows (B, L, D) plus a mask.
        max_len: keep at most this many IDs per row before embedding (required for "tile").
        side: which end `max_len` cuts: "left" keeps the last IDs (the latest events of a history
            stored oldest first), "right" the first.
        ragged: sequences only: return a `Ragged` of (N, D) rows instead of a padded tensor.
        initializer: how new rows are filled.
        min_count: frequency admission: an ID gets a row after this many sightings.
        eviction: what `EmbeddingEngine.evict()` drops.
        dtype: row storage type: torch.float32, or torch.bfloat16 / torch.float16 (host tables):
            half the row bytes; lookups return float32 and updates are computed in float32.
        rounding: how updated 16-bit rows are rounded: "nearest" (even), or "stochastic"
            (bfloat16; keeps updates smaller than half a bf16 step on average).
        seed: base seed of the table's initializer.
        device: where the table lives. None (default): host memory, in the core's C++ `HashTable`.
            A torch device ("cuda", "cuda:1", ...): ID map, rows, slots and metadata stay there
            (`DeviceTable`), and so do the lookups' results; "cpu" gives the same on the host.

    Examples:
        >>> EmbeddingSpec(dim=16, combiner="mean")
        EmbeddingSpec(dim=16, table=None, combiner='mean', ...)
    """

    dim: int
    table: str | None = None
    combiner: Combiner | None = "sum"
    max_len: int | None = None
    side: Literal["left", "right"] = "left"
    ragged: bool = False
    initializer: Initializer = field(default_factory=Initializer)
    min_count: int = 1
    eviction: Eviction | None = None
    dtype: torch.dtype = torch.float32
    rounding: Literal["nearest", "stochastic"] = "nearest"
    seed: int = 0
    device: str | None = None

    def __repr__(self) -> str:
        return f"EmbeddingSpec(dim={self.dim}, table={self.table!r}, combiner={self.combiner!r}, ...)"

    def table_settings(self) -> tuple:
        """What must match for two logical tables to share one physical table."""
        return (
            self.dim, self.initializer, self.min_count, self.eviction, self.dtype, self.rounding, self.seed, self.device
        )  # fmt: skip

    def merge_key(self, table: str) -> tuple:
        """Physical-table key: the settings, plus the table name when a capacity is set (a capacity
        is a per-table promise, so such tables are never merged)."""
        capped = self.eviction is not None and self.eviction.capacity is not None
        return (*self.table_settings(), table if capped else None)


@dataclass
class _Group:  # one physical table and the features that read it
    table: Table
    features: list[str]
    tags: list[int]


class EmbeddingEngine(nn.Module):
    """Maps `dict[str, Tensor | Ragged]` batches to embeddings for the configured features.

    Inputs per feature: a `Ragged` of int IDs (optionally weighted), a (B,) tensor (one ID per
    row) or a (B, k) tensor (k IDs per row). Outputs: (B, D) for pooled features, (B, max_len * D)
    for "tile", `Padded(values (B, L, D), mask (B, L), weights)` or a `Ragged` of (N, D) rows for
    sequences. Keys without a spec pass through unchanged. Pooled features that share a physical
    table and a batch size are column blocks of one (B, F * D) tensor (views, not contiguous):
    `concat` joins them without a copy.

    In training mode lookups insert unknown IDs and record, per physical table, the unique rows
    and their (U, D) embedding leaf; after backward, `sparse_grads()` hands (table, rows, grads) to
    a sparse optimizer (call it every step: recorded lookups are kept until then). In eval mode
    lookups are read-only: no inserts, no change to row metadata, nothing recorded. `step` (the
    training step recorded per row, for eviction) advances by one per training forward and is
    saved in `state_dict()`. Recorded lookups stop growing after `max_recorded_steps` training
    forwards without `sparse_grads()` (with a warning): a model whose sparse optimizer never steps
    would otherwise hold every batch's rows and graph.

    Examples:
        >>> engine = EmbeddingEngine({"user": EmbeddingSpec(8), "clicks": EmbeddingSpec(8, combiner=None)})
        >>> batch = {"user": torch.tensor([3, 9]), "clicks": Ragged.from_list([[1, 2, 3], [4]]), "label": torch.ones(2)}
        >>> out = engine(batch)
        >>> out["user"].shape, out["clicks"].values.shape, out["label"].shape
        (torch.Size([2, 8]), torch.Size([2, 3, 8]), torch.Size([2]))
    """

    max_recorded_steps = 1000

    def __init__(self, specs: dict[str, EmbeddingSpec]):
        super().__init__()
        self.specs = dict(specs)
        self.step = 0
        self._pending: list[SparseGrad] = []
        self._recorded_steps = 0  # training forwards recorded since the last sparse_grads()
        self._warned_unread = False
        # Set by a fused sparse optimizer: called with each lookup's gradient as backward makes it.
        self.grad_hook: Callable[[SparseGrad], None] | None = None
        self.groups: list[_Group] = []
        self.sharded = False  # set by shard()
        self.process_group: distributed.ProcessGroup | None = None
        self.pool_on_owner: bool | None = None
        self.wire_dtype = torch.float32
        self._routes: list[bool] | None = None  # per group: pooled on the owners (set at the first sharded forward)
        # Sharded training lookups awaiting exchange_grads.
        self._remote: list[distributed.RemoteLookup | distributed.RemotePooled] = []
        logical: dict[str, tuple[str, EmbeddingSpec]] = {}  # table name -> (first feature, spec)
        by_settings: dict[tuple, _Group] = {}
        for name, spec in self.specs.items():
            _check_spec(name, spec)
            table = spec.table or name
            if table in logical:
                first, other = logical[table]
                if other.table_settings() != spec.table_settings():
                    raise ValueError(
                        f"EmbeddingEngine: feature {name!r} uses table {table!r} with settings {spec.table_settings()} "
                        f"but feature {first!r} declared it with {other.table_settings()}"
                    )
            logical.setdefault(table, (name, spec))
            group = by_settings.get(spec.merge_key(table))
            if group is None:
                settings = (spec.dim, spec.initializer, spec.min_count, spec.eviction, spec.seed)
                physical = (
                    HashTable(*settings, dtype=spec.dtype, rounding=spec.rounding)
                    if spec.device is None
                    else DeviceTable(*settings, device=spec.device)
                )
                group = by_settings[spec.merge_key(table)] = _Group(physical, [], [])
                self.groups.append(group)
            group.features.append(name)
            group.tags.append(group.table.add_logical_table(table))

    def shard(
        self,
        process_group: distributed.ProcessGroup | None = None,
        pool_on_owner: bool | None = None,
        wire_dtype: torch.dtype = torch.float32,
    ) -> EmbeddingEngine:
        """Shards every table row-wise over `process_group` (default: the default group).

        Each rank then stores the rows it owns (`owner(id, world_size)`); every rank calls forward
        with its own batch (all ranks together, as for any collective) and gets its own batch's
        embeddings; `sparse_grads()` sends gradients to the owners, averaged over ranks. Call
        before training or loading; returns the engine.

        `pool_on_owner`: whether tables whose features are all pooled (sum/mean/sqrtn) pool on the
        owners and exchange (bags, D) partial sums, or exchange (unique keys, D) rows. None (the
        default) picks per table at the first forward, agreed by all ranks: pool on the owners
        when the unique keys per bag, over all ranks, exceed the world size (then the partial sums
        are the fewer bytes; see docs/scaling.md). Tables on a device (`EmbeddingSpec.device`)
        always exchange rows, as device tensors (NCCL for CUDA).

        `wire_dtype`: how partial sums, rows and gradients travel between ranks. torch.bfloat16
        halves those bytes at bf16 precision (8-bit mantissa) for what crosses ranks; sums and
        updates stay float32. torch.float16 keeps 11 bits but can flush tiny gradients to zero.
        """
        if not torch.distributed.is_initialized():
            raise RuntimeError("EmbeddingEngine.shard: torch.distributed is not initialized (init_process_group first)")
        if any(len(g.table) for g in self.groups):
            raise ValueError("EmbeddingEngine.shard: the tables already hold rows; shard before training or loading")
        if self.grad_hook is not None:
            raise ValueError("EmbeddingEngine.shard: a fused optimizer is attached; fused updates need local tables")
        if wire_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(
                f"EmbeddingEngine.shard: wire_dtype must be float32, bfloat16 or float16, got {wire_dtype}"
            )
        self.sharded, self.process_group = True, process_group
        self.pool_on_owner, self.wire_dtype = pool_on_owner, wire_dtype
        self._routes = None
        return self

    # The lookups insert into and read from tables outside the graph, so the engine runs eagerly:
    # under torch.compile the model's graph breaks here once and its dense part compiles.
    @torch.compiler.disable
    def forward(self, batch: dict[str, Tensor | Ragged]) -> dict[str, object]:
        _refuse_tracing(batch)
        out: dict[str, object] = dict(batch)
        if self.sharded:
            self._forward_sharded(batch, out)
            if self.training:
                self.step += 1
            return out
        insert, record = self.training, self._recording()
        for group in self.groups:
            if not self.training and isinstance(group.table, FrozenTable) and self._serve_frozen(group, batch, out):
                continue
            present, inputs = self._inputs(group, batch)
            device = inputs[0].device if inputs else torch.device("cpu")
            # All-pooled groups pool straight from the table's blocks; others gather (U, D) rows.
            all_pooled = self._all_pooled(present)
            tags = [t for _, t in present]
            if all_pooled and not self.training:  # read-only: pool straight from the keys, no de-duplication
                self._pool_keys(group, present, inputs, out)
                continue
            found = group.table.lookup([r.values for r in inputs], self.step, insert, tags, gather=not all_pooled)  # type: ignore[misc]
            dim = group.table.dim
            emb = torch.zeros(()).expand(len(found.rows), dim) if all_pooled else found.embeddings  # (U, D)
            assert emb is not None  # gathered unless all pooled
            if self.training and torch.is_grad_enabled():
                emb.requires_grad_()
                if record:
                    self._record(group.table, found.rows, emb)
            emb_d = emb.to(device)
            if all_pooled:
                self._pool_group(group, present, inputs, found.rows, found.inverse, emb_d, out)
                continue
            self._embed_group(present, inputs, emb, found.inverse, out)
        if self.training:
            self.step += 1
        return out

    def _serve_frozen(self, group: _Group, batch: dict[str, Tensor | Ragged], out: dict[str, object]) -> bool:
        """A frozen table's features in one kernel call (`FrozenTable.embed`): IDs found, rows
        pooled, padded or packed, no intermediate rows. False, leaving `out` as it was, when a
        feature needs the general path: a missing column, or inputs other than int64 IDs (and
        float32 weights) on the CPU, whose errors or conversions that path gives."""
        table = group.table
        assert isinstance(table, FrozenTable)
        wanted: list[FrozenBags] = []
        for name, tag in zip(group.features, group.tags, strict=True):
            spec, x = self.specs[name], batch.get(name)
            max_len = -1 if spec.max_len is None else spec.max_len
            combiner = str(spec.combiner) if spec.combiner in ("sum", "mean", "sqrtn") else "dense"
            combiner = "rows" if spec.ragged and spec.combiner is None else combiner
            if isinstance(x, Tensor) and x.dim() in (1, 2) and x.dtype == torch.int64 and x.device.type == "cpu":
                wanted.append(
                    FrozenBags(x.reshape(-1), None, len(x), None, tag, combiner, max_len, spec.side == "left")
                )
            elif (
                isinstance(x, Ragged)
                and isinstance(x.values, Tensor)
                and x.values.dtype == torch.int64
                and x.values.device.type == "cpu"
                and (x.weights is None or (x.weights.dtype == torch.float32 and x.weights.shape == x.values.shape))
            ):
                wanted.append(
                    FrozenBags(x.values, x.offsets, x.num_rows, x.weights, tag, combiner, max_len, spec.side == "left")
                )
            else:
                return False
        try:
            found = table.embed(wanted)
        except ValueError as e:
            raise ValueError(f"EmbeddingEngine: features {group.features}: {e}") from e
        for name, (values, structure, weights) in zip(group.features, found, strict=True):
            spec = self.specs[name]
            if spec.combiner == "tile":
                out[name] = values.reshape(len(values), -1)
            elif structure is None:
                out[name] = values
            elif spec.ragged:
                out[name] = Ragged(values, structure, weights, validate=False)
            else:
                out[name] = Padded(values, structure, weights)
        return True

    def _inputs(self, group: _Group, batch: dict[str, Tensor | Ragged]) -> tuple[list[tuple[str, int]], list[Ragged]]:
        present = [(f, t) for f, t in zip(group.features, group.tags, strict=True) if f in batch]
        missing = [f for f in group.features if f not in batch]
        if missing:
            raise KeyError(f"EmbeddingEngine: features {missing} are missing from the batch (keys: {sorted(batch)})")
        inputs = [self._prepare(f, batch[f]) for f, _ in present]
        if isinstance(group.table, DeviceTable):  # keys, bags and outputs live where the table does
            inputs = [r.to(group.table.device) for r in inputs]
        return present, inputs

    def _forward_sharded(self, batch: dict[str, Tensor | Ragged], out: dict[str, object]) -> None:
        """All physical tables' lookups through their owners (recis.embedding.distributed): pooled
        tables pool on the owners, others gather rows from them."""
        pg, wire = self.process_group, self.wire_dtype
        grad, record = self.training and torch.is_grad_enabled(), self._recording()
        prepared = [self._inputs(group, batch) for group in self.groups]
        if self._routes is None:
            self._routes = self._choose_routes(prepared)
        routed: list[distributed.Routed | distributed.Bags] = []
        for g, (present, inputs), pooled_route in zip(self.groups, prepared, self._routes, strict=True):
            ids: list[Tensor] = [r.values for r in inputs]  # type: ignore[misc]
            tags = [t for _, t in present]
            table = g.table
            if pooled_route:
                assert isinstance(table, HashTable)  # device tables gather (_choose_routes)
                offsets, weights, codes, runs = self._bags([f for f, _ in present], inputs)
                combiners = [ops.COMBINERS[c] for c in codes]
                tag = len(routed)
                routed.append(
                    distributed.route_pooled(table, ids, tags, offsets, weights, combiners, runs, tag, wire, pg)
                )
            else:
                routed.append(distributed.route(table, ids, tags, wire, pg))
        distributed.exchange_keys(routed, pg)
        served = [
            distributed.serve_pooled(r, self.step, self.training, pg)
            if isinstance(r, distributed.Bags)
            else distributed.serve(r, self.step, self.training, pg)
            for r in routed
        ]
        for r, done, (present, inputs) in zip(routed, served, prepared, strict=True):
            if isinstance(done, distributed.Served):
                assert isinstance(r, distributed.Bags)
                runs = [ids.num_rows for ids in inputs]
                side = _side_by_side(runs)
                layout = runs if side else None  # batch-major (B, F * D) when the features sit side by side
                pooled = done.pooled(layout)
                if grad:
                    pooled.requires_grad_()
                if record:
                    self._remote.append(done.recorded(r, pooled, layout))
                _split_pooled([f for f, _ in present], runs, r.table.dim, pooled, side, out)
                continue
            assert isinstance(r, distributed.Routed)
            rows, inverse, emb, work = done
            work.wait()
            emb = emb.float()
            if grad:
                emb.requires_grad_()
            if record:
                self._remote.append(distributed.RemoteLookup(r.table, emb, r.send, r.recv, rows, inverse, wire))
            self._embed_group(present, inputs, emb, r.inverse, out)

    def _all_pooled(self, present: list[tuple[str, int]]) -> bool:
        return bool(present) and all(self.specs[f].combiner in ("sum", "mean", "sqrtn") for f, _ in present)

    def _choose_routes(self, prepared: list[tuple[list[tuple[str, int]], list[Ragged]]]) -> list[bool]:
        """Per group, whether it pools on the owners (`pool_on_owner`, or agreed by all ranks);
        tables on a device gather rows."""
        pooled = [
            self._all_pooled(present) and not isinstance(g.table, DeviceTable)
            for g, (present, _) in zip(self.groups, prepared, strict=True)
        ]
        if self.pool_on_owner is not None:
            return [p and self.pool_on_owner for p in pooled]
        candidates: list[tuple[list[Tensor], list[int], int] | None] = []
        for (present, inputs), p in zip(prepared, pooled, strict=True):
            ids: list[Tensor] = [r.values for r in inputs]  # type: ignore[misc]
            candidates.append((ids, [t for _, t in present], sum(r.num_rows for r in inputs)) if p else None)
        return distributed.agree_pool_on_owner(candidates, self.process_group)

    def _embed_group(
        self, present: list[tuple[str, int]], inputs: list[Ragged], emb: Tensor, inverse: Tensor, out: dict[str, object]
    ) -> None:
        """Each feature's output from the group's (U, D) rows and the inverse of its IDs into them."""
        at = 0
        for (name, _), ids in zip(present, inputs, strict=True):
            device = ids.values.device
            part = inverse[at : at + ids.num_values]
            at += ids.num_values
            try:
                out[name] = self._embed(self.specs[name], emb.to(device), ids, part.to(device))
            except ValueError as e:
                raise ValueError(f"EmbeddingEngine: feature {name!r}: {e}") from e

    def _pool_group(
        self,
        group: _Group,
        present: list[tuple[str, int]],
        inputs: list[Ragged],
        rows: Tensor,
        inverse: Tensor,
        anchor: Tensor,
        out: dict[str, object],
    ) -> None:
        """Pools every feature of a group in one op: their bags concatenated, one combiner run each."""
        names = [name for name, _ in present]
        offsets, weights, codes, runs = self._bags(names, inputs)
        side_by_side = _side_by_side(runs)
        try:
            pooled = ops.table_pooled(
                anchor, rows, inverse, offsets, weights, codes, runs, group.table.handle, side_by_side
            )
        except ValueError as e:
            raise ValueError(f"EmbeddingEngine: features {names}: {e}") from e
        _split_pooled(names, runs, group.table.dim, pooled, side_by_side, out)

    def _pool_keys(
        self, group: _Group, present: list[tuple[str, int]], inputs: list[Ragged], out: dict[str, object]
    ) -> None:
        """Eval-mode pooling of a group's features, one read-only pass over their keys."""
        names = [name for name, _ in present]
        offsets, weights, codes, runs = self._bags(names, inputs)
        side_by_side = _side_by_side(runs)
        ids: list[Tensor] = [r.values for r in inputs]  # type: ignore[misc]
        tags = [t for _, t in present]
        combiners = [ops.COMBINERS[c] for c in codes]
        try:
            pooled = group.table.pool_keys(ids, tags, offsets, weights, combiners, runs, side_by_side)
        except ValueError as e:
            raise ValueError(f"EmbeddingEngine: features {names}: {e}") from e
        device = inputs[0].device if inputs else torch.device("cpu")
        _split_pooled(names, runs, group.table.dim, pooled.to(device), side_by_side, out)

    def _bags(self, names: list[str], inputs: list[Ragged]) -> tuple[Tensor, Tensor | None, list[int], list[int]]:
        """The features' bags as one pooling call: (offsets, weights or None, combiner codes, runs)."""
        runs = [ids.num_rows for ids in inputs]
        offsets, at = [torch.zeros(1, dtype=torch.int64)], 0
        for ids in inputs:
            offsets.append(ids.offsets[1:].cpu() + at)
            at += ids.num_values
        weights = None
        if any(ids.weights is not None for ids in inputs):
            weights = torch.cat(
                [torch.ones(ids.num_values) if ids.weights is None else ids.weights.cpu() for ids in inputs]
            )
        codes = [ops.COMBINERS.index(str(self.specs[name].combiner)) for name in names]
        return torch.cat(offsets), weights, codes, runs

    def _recording(self) -> bool:
        """Whether this forward records its lookups for the sparse gradients; counts the forwards
        that store them, up to `max_recorded_steps` (then warns once and stops: the rows still
        take part in autograd, their gradients are just not kept)."""
        if not (self.training and torch.is_grad_enabled()):
            return False
        if self.grad_hook is not None and not self.sharded:
            return True  # a fused optimizer takes each gradient in backward: nothing is kept here
        if self._recorded_steps >= self.max_recorded_steps:
            if not self._warned_unread:
                self._warned_unread = True
                warnings.warn(
                    f"EmbeddingEngine: {self._recorded_steps} training forwards without sparse_grads(); is a sparse "
                    "optimizer stepping? Further lookups are not recorded (their rows get no gradient) until "
                    "sparse_grads() or clear_sparse_grads() is called",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return False
        self._recorded_steps += 1
        return True

    def _record(self, table: Table, rows: Tensor, emb: Tensor) -> None:
        hook = self.grad_hook
        if hook is None:
            self._pending.append(SparseGrad(table, rows, emb))
            return

        def apply(leaf: Tensor) -> None:  # runs once the leaf's gradient is complete; keeps none stored
            if leaf.grad is None:  # a fused pooled backward already applied it
                return
            hook(SparseGrad(table, rows, leaf.grad))
            leaf.grad = None

        emb.register_post_accumulate_grad_hook(apply)

    def _prepare(self, name: str, x: Tensor | Ragged) -> Ragged:
        spec = self.specs[name]
        batch_value = x
        if isinstance(x, Tensor):
            if x.dim() not in (1, 2):
                raise ValueError(
                    f"EmbeddingEngine: feature {name!r} must be (B,), (B, k) or a Ragged, got {tuple(x.shape)}"
                )
            k = 1 if x.dim() == 1 else x.shape[1]  # IDs per row
            offsets = torch.arange(len(x) + 1, device=x.device) * k
            x = Ragged(x.reshape(-1), offsets, validate=False)
        elif not isinstance(x, Ragged):
            raise TypeError(f"EmbeddingEngine: feature {name!r} must be a Tensor or a Ragged, got {type(x).__name__}")
        if isinstance(x.values, Ragged):
            raise TypeError(f"EmbeddingEngine: feature {name!r} is a nested Ragged; embed its inner lists instead")
        if x.values.dtype.is_floating_point or x.values.dtype == torch.bool:
            raise TypeError(f"EmbeddingEngine: feature {name!r} has {x.values.dtype} IDs; expected integers (int64)")
        if x.values.dtype == torch.uint8 and isinstance(batch_value, Ragged):
            raise TypeError(
                f"EmbeddingEngine: feature {name!r} is a Ragged of uint8: the bytes of a string column "
                "(recis.io reads strings so), not IDs; hash it first, e.g. Feature(name, ops=[Hash(buckets)]) "
                "in recis.features or ColumnReader(..., string_hash=...), or pass int64 IDs"
            )
        if x.weights is not None and x.weights.shape != (x.num_values,):
            raise ValueError(
                f"EmbeddingEngine: feature {name!r} has {x.num_values} IDs "
                f"but weights of shape {tuple(x.weights.shape)}"
            )
        if spec.max_len is not None:
            x = x.truncate(spec.max_len, side=spec.side)
        return x

    def _embed(self, spec: EmbeddingSpec, emb: Tensor, ids: Ragged, inverse: Tensor) -> Tensor | Padded | Ragged:
        if spec.combiner in ("sum", "mean", "sqrtn"):
            weights = ids.weights
            needs_grad = torch.is_grad_enabled() and (
                emb.requires_grad or (weights is not None and weights.requires_grad)
            )
            pool = ops.pooled_embedding if needs_grad else ops.pooled_embedding_eager
            return pool(emb, inverse, ids.offsets, weights, spec.combiner)  # (B, D)
        rows = Ragged(emb.index_select(0, inverse), ids.offsets, ids.weights, validate=False)  # (N, D) per position
        if spec.combiner == "tile":
            assert spec.max_len is not None
            return rows.to_dense(0.0, spec.max_len).values.reshape(ids.num_rows, spec.max_len * spec.dim)
        if spec.ragged:
            return rows
        return rows.to_dense(0.0, spec.max_len)

    def sparse_grads(self, strict: bool = True) -> list[SparseGrad]:
        """The (table, rows, grads) of every training lookup since the last call, after backward.

        Rows are distinct within an entry and may repeat across entries (gradient accumulation over
        micro-batches); an optimizer sums them. With `strict`, recorded lookups none of which got a
        gradient raise (backward was forgotten); otherwise they are dropped.

        Sharded engines exchange here: every rank must call it (once per step, as `step()` of a
        sparse optimizer does); each rank gets the gradients of the rows it owns.
        """
        return [g.reduce() if isinstance(g, PooledGrad) else g for g in self.raw_sparse_grads(strict)]

    def raw_sparse_grads(self, strict: bool = True) -> list[SparseGrad | PooledGrad]:
        """`sparse_grads`, except that lookups pooled on their owners (sharded pooled tables) come as
        `PooledGrad`s, not yet summed per row: sparse optimizers sum and update in one pass."""
        grads = [p.grad.grad for p in self._pending]
        got = grads + [r.emb.grad for r in self._remote]
        remote, self._remote = self._remote, []
        owned = distributed.exchange_grads(remote, self.process_group) if remote else []
        if strict and got and all(g is None for g in got):
            raise RuntimeError("EmbeddingEngine.sparse_grads: call backward() before reading the sparse gradients")
        pending, self._pending, self._recorded_steps = self._pending, [], 0
        # A lookup whose output took no part in the loss has no gradient: nothing to update.
        mine: list[SparseGrad | PooledGrad] = [
            SparseGrad(p.table, p.rows, g) for p, g in zip(pending, grads, strict=True) if g is not None
        ]
        return mine + owned

    def get_extra_state(self) -> dict[str, Any]:
        """The step counter, and each physical table's logical tables (checked by a load), travel
        with `state_dict()`."""
        return {"step": self.step, "tables": [list(g.table.tag_names) for g in self.groups]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    # state_dict() holds every physical table's live rows as `tables.<i>.<field>` (ids, tags,
    # steps, freqs, embeddings; table i as in `tables()`), so `torch.save(model.state_dict())` and
    # `load_state_dict` round-trip the embeddings; optimizer slots travel in the sparse optimizer's
    # `state_dict()`.
    # Checkpoint savers, which store tables themselves, leave them out (`without_tables`).
    _TABLE_FIELDS = ("ids", "tags", "steps", "freqs", "embeddings")
    _tables_in_state = True

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self._tables_in_state:
            return
        if self.sharded:
            raise RuntimeError(
                "EmbeddingEngine.state_dict: a sharded engine's rows are spread over the ranks; save them with "
                "recis.optim.Saver (or take the dense state alone inside recis.embedding.without_tables(model))"
            )
        for i, g in enumerate(self.groups):
            rows = g.table.state_dict()
            for name in self._TABLE_FIELDS:
                destination[f"{prefix}tables.{i}.{name}"] = rows[name]

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        mine = prefix + "tables."
        rest = {k: v for k, v in state_dict.items() if not k.startswith(mine)}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if not self._tables_in_state:
            return
        if self.sharded:
            error_msgs.append(f"{mine}*: a sharded engine loads its rows through recis.optim.Saver")
            return
        extra = state_dict.get(prefix + "_extra_state")
        saved = extra.get("tables") if isinstance(extra, dict) else None
        here = [list(g.table.tag_names) for g in self.groups]
        if saved is not None and saved != here:
            error_msgs.append(
                f"{mine}*: the state's physical tables hold the logical tables {saved}, this engine's {here}"
            )
            return
        known = {f"{mine}{i}.{name}" for i in range(len(self.groups)) for name in self._TABLE_FIELDS}
        unexpected_keys.extend(k for k in state_dict if k.startswith(mine) and k not in known)
        for i, g in enumerate(self.groups):
            keys = {name: f"{mine}{i}.{name}" for name in self._TABLE_FIELDS}
            absent = [k for k in keys.values() if k not in state_dict]
            if absent:
                missing_keys.extend(absent)
                continue
            if len(g.table):
                error_msgs.append(
                    f"{mine}{i}: table {i} ({'+'.join(g.features)}) already holds {len(g.table)} rows; "
                    "load a state_dict's tables into a fresh model"
                )
                continue
            try:
                g.table.load_state_dict({name: state_dict[k] for name, k in keys.items()})
            except (ValueError, TypeError, RuntimeError) as e:
                error_msgs.append(f"{mine}{i}: {e}")

    def use_frozen(self, tables: Sequence[FrozenTable]) -> EmbeddingEngine:
        """Serving: every physical table becomes the `FrozenTable` with its logical tables (in tag
        order); the engine is put in eval mode, where lookups are read-only. Returns the engine."""
        by_logical = {tuple(t.tag_names): t for t in tables}
        for g in self.groups:
            logical = tuple(g.table.tag_names)
            if logical not in by_logical:
                have = sorted(by_logical)
                raise ValueError(f"EmbeddingEngine.use_frozen: no frozen table holds {list(logical)} (given {have})")
            g.table = by_logical[logical]  # type: ignore[assignment]  # read-only: eval forwards only
        return self.eval()

    def tables(self) -> dict[str, Table]:
        """The physical tables by name (`table<i>:<features>`, as in `stats()`)."""
        return {f"table{i}:{'+'.join(g.features)}": g.table for i, g in enumerate(self.groups)}

    def zero_sparse_grads(self) -> None:
        """Clears the recorded lookups' gradients but keeps the lookups (as `zero_grad` does for
        parameters: a forward before `zero_grad()` still trains once backward runs)."""
        for p in self._pending:
            p.grad.grad = None
        for r in self._remote:
            r.emb.grad = None

    def clear_sparse_grads(self) -> None:
        """Drops recorded lookups (e.g. after a skipped step; on sharded engines every rank must)."""
        self._pending, self._remote, self._recorded_steps = [], [], 0

    def evict(self) -> dict[str, int]:
        """Applies every table's eviction policy as of the last training step; rows dropped per physical table."""
        last = self.step - 1
        return {name: table.evict(last) for name, table in self.tables().items()}

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters, rows and memory per physical table."""
        return {name: table.stats() for name, table in self.tables().items()}


@contextlib.contextmanager
def without_tables(model: nn.Module) -> Iterator[None]:
    """Within it, the `state_dict()` of every `EmbeddingEngine` in `model` holds no table rows and
    `load_state_dict` expects none: what checkpoint savers that store the tables themselves use.

    Examples:
        >>> engine = EmbeddingEngine({"item": EmbeddingSpec(4)})
        >>> _ = engine({"item": torch.tensor([1, 2])})
        >>> sorted(engine.state_dict())
        ['_extra_state', 'tables.0.embeddings', 'tables.0.freqs', 'tables.0.ids', 'tables.0.steps', 'tables.0.tags']
        >>> with without_tables(engine):
        ...     sorted(engine.state_dict())
        ['_extra_state']
    """
    engines = [m for m in model.modules() if isinstance(m, EmbeddingEngine)]
    before = [e._tables_in_state for e in engines]
    for e in engines:
        e._tables_in_state = False
    try:
        yield
    finally:
        for e, was in zip(engines, before, strict=True):
            e._tables_in_state = was


def _refuse_tracing(batch: dict[str, Tensor | Ragged]) -> None:
    """torch.jit.trace would record the lookups' results as constants, and torch.export cannot
    run them on fake tensors: both get a clear error rather than a wrong program."""
    tracer = None
    if torch.jit.is_tracing():
        tracer = "torch.jit.trace"
    elif torch.compiler.is_exporting() or any(
        is_fake(t)
        for x in batch.values()
        for t in ((x.values, x.offsets) if isinstance(x, Ragged) else (x,))
        if isinstance(t, Tensor)
    ):
        tracer = "torch.export (or another tracer with fake tensors)"
    if tracer is not None:
        raise RuntimeError(
            f"EmbeddingEngine cannot be traced by {tracer}: its lookups read and insert rows of hash tables "
            "outside the graph. To compile training use torch.compile (the engine runs eagerly, the dense part "
            "compiles); to serve, export a bundle (recis.train.export.export_bundle or recis-export), which "
            "exports the dense part and freezes the tables."
        )


def _side_by_side(runs: list[int]) -> bool:
    """Whether a group's pooled features come out side by side in one (B, F * D) tensor, as a
    model concatenates them (`concat` then returns it without copying): same batch size for all."""
    return len(runs) > 1 and len(set(runs)) == 1


def _split_pooled(
    names: list[str], runs: list[int], dim: int, pooled: Tensor, side_by_side: bool, out: dict[str, object]
) -> None:
    """Each feature's (B, D) part of a group's pooled output: (B, F * D) side by side, else (sum of B, D)."""
    parts = pooled.split(dim, dim=1) if side_by_side else pooled.split(runs)
    out.update(zip(names, parts, strict=True))


def concat(tensors: list[Tensor]) -> Tensor:
    """`torch.cat(tensors, dim=1)`, without a copy when the tensors are the side-by-side column
    blocks of one tensor, in order: the pooled outputs of one physical table's features are (the
    engine computes them as one (B, F * D) tensor), so concatenating them costs nothing forward
    and backward. May then return that tensor itself rather than a new one.

    Examples:
        >>> engine = EmbeddingEngine({"a": EmbeddingSpec(4), "b": EmbeddingSpec(4)})
        >>> out = engine({"a": torch.tensor([1, 2]), "b": torch.tensor([3, 4])})
        >>> x = concat([out["a"], out["b"]])  # (2, 8), shares memory with out["a"]
        >>> x.data_ptr() == out["a"].data_ptr()
        True
    """
    base = tensors[0]._base if tensors else None
    if base is not None and base.dim() == 2 and all(t.dim() == 2 for t in tensors):
        col, ok = 0, True
        for t in tensors:
            ok = ok and t._base is base and t.shape[0] == base.shape[0] and t.stride() == base.stride()
            ok = ok and t.storage_offset() == base.storage_offset() + col * base.stride(1)
            col += t.shape[1]
        if ok and col == base.shape[1]:
            return base
    return torch.cat(tensors, dim=1)


def _check_spec(name: str, spec: EmbeddingSpec) -> None:
    if spec.dim < 1:
        raise ValueError(f"EmbeddingSpec for {name!r}: dim must be >= 1, got {spec.dim}")
    if spec.combiner not in ("sum", "mean", "sqrtn", "tile", None):
        raise ValueError(f"EmbeddingSpec for {name!r}: unknown combiner {spec.combiner!r}")
    if spec.combiner == "tile" and spec.max_len is None:
        raise ValueError(f"EmbeddingSpec for {name!r}: combiner 'tile' needs max_len")
    if spec.max_len is not None and spec.max_len < 0:
        raise ValueError(f"EmbeddingSpec for {name!r}: max_len must be >= 0, got {spec.max_len}")
    if spec.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"EmbeddingSpec for {name!r}: dtype must be float32, bfloat16 or float16, got {spec.dtype}")
    if spec.device is not None and spec.dtype != torch.float32:
        raise ValueError(
            f"EmbeddingSpec for {name!r}: tables on a device store float32 rows; {spec.dtype} is for host tables"
        )
    stochastic_ok = spec.rounding == "nearest" or (spec.rounding == "stochastic" and spec.dtype == torch.bfloat16)
    if not stochastic_ok:
        raise ValueError(f"EmbeddingSpec for {name!r}: rounding must be 'nearest', or 'stochastic' with bfloat16 rows")
    if spec.min_count < 1:
        raise ValueError(f"EmbeddingSpec for {name!r}: min_count must be >= 1, got {spec.min_count}")
