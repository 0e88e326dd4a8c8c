"""Row-wise sharding of hash tables over `torch.distributed` (gloo on CPU, NCCL on GPU).

Every key (ID, tag) of a physical table lives on one rank, `owner(id, world_size)`. A table's
lookups for all the features that read it travel together, by one of two routes (the engine
picks per table with `agree_pool_on_owner`):

Pooled on the owners (every feature sum/mean/sqrtn, long bags), as TorchRec's row-wise sharding:

1. `route_pooled` (C++ `route_bags`) splits every bag by the owners of its keys: each owner gets
   the keys it owns with how many fall in each bag; mean/sqrtn scales become per-key weights.
2. One `all_to_all_single` carries every table's block sizes; then each table's keys (and weights)
   travel asynchronously, all tables in flight at once (`exchange_keys`).
3. Owners look the keys up (inserting in training) and pool each requester's bags into partial
   sums, sent point to point as soon as they are pooled (`serve_pooled`).
4. The requester adds the partial sums of all owners: its (bags, D) pooled rows (`Served.pooled`).

Backward sends each requester's (bags, D) output gradient to every owner, who keeps it with the
forward's pooling structure (`PooledGrad`) for the optimizer to sum per row and apply in one pass.
Per step a rank moves its keys once and (bags, D) floats per other rank each way, instead of a
row per unique key each way.

Gathered rows (sequences, "tile", short bags):

1. `route` (C++ `route_keys`) de-duplicates this rank's keys and orders them by owner rank.
2. Keys travel as in the pooled route.
3. Owners look their received keys up and send each key's row back (`serve`).
4. The requester gets a (U, D) row per unique key, which pools or pads exactly as in one process.

Tables on a device (`DeviceTable`) always take this route, routed with torch ops on their device;
their keys, rows and gradients travel as tensors on that device (NCCL for CUDA: a process group
with `backend="cpu:gloo,cuda:nccl"` serves host and device tables alike).

Backward sends each requester's (U, D) gradient back along the same routes. On both routes owners
divide gradients by the world size, so sparse gradients are averaged over ranks as DDP averages
dense ones: with a per-rank mean loss both equal the gradient of the global mean. Partial sums,
rows and gradients cross ranks in the engine's `wire_dtype` (float32 or, to halve the bytes, bf16).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from recis.core import kernels

from . import ops
from .device_table import DeviceTable, Table
from .ops import PooledGrad, SparseGrad
from .sharding import owner
from .table import HashTable, _as_ids

ProcessGroup = dist.ProcessGroup


def world(group: ProcessGroup | None) -> int:
    return dist.get_world_size(group)


def _others(group: ProcessGroup | None) -> list[int]:
    """The other ranks of `group`, starting after this one (so every rank serves a different peer first)."""
    w, me = world(group), dist.get_rank(group)
    return [(me + i) % w for i in range(1, w)]


def _device(table: Table) -> torch.device:
    """Where a table's keys, rows and gradients live and travel."""
    return table.device if isinstance(table, DeviceTable) else torch.device("cpu")


def _send(t: Tensor, r: int, group: ProcessGroup | None, tag: int) -> dist.Work:
    """Starts sending `t` to group rank `r`."""
    work = dist.isend(t, r if group is None else dist.get_global_rank(group, r), group=group, tag=tag)
    assert work is not None  # this rank is in the group
    return work


def _recv(t: Tensor, r: int, group: ProcessGroup | None, tag: int) -> dist.Work:
    """Starts receiving `t` from group rank `r`."""
    work = dist.irecv(t, r if group is None else dist.get_global_rank(group, r), group=group, tag=tag)
    assert work is not None
    return work


@dataclass
class Routed:
    """One gathered table's keys on their way: what this rank sends and receives."""

    table: Table
    keys: Tensor  # (U, 2) int64: this rank's unique (ID, tag) keys, ordered by owner
    inverse: Tensor  # (N,) index into `keys` for each input ID
    send: list[int]  # keys sent to each rank
    wire: torch.dtype  # of rows and gradients between ranks
    recv: list[int] = field(default_factory=list)  # keys received from each rank
    received: Tensor | None = None  # (R, 2) keys this rank owns, from every rank
    work: dist.Work | None = None

    def sizes(self) -> list[tuple[int, int]]:
        return [(n, 0) for n in self.send]

    def start(self, got: list[tuple[int, int]], group: ProcessGroup | None) -> None:
        self.recv = [n for n, _ in got]
        self.received = torch.empty(sum(self.recv), 2, dtype=torch.int64, device=_device(self.table))
        self.work = dist.all_to_all_single(self.received, self.keys, self.recv, self.send, group=group, async_op=True)


@dataclass
class Bags:
    """One pooled table's bags on their way to the owners of their keys (owner-side pooling)."""

    table: HashTable
    tags: list[int]  # logical table of each feature
    bags: int  # this rank's bags, all features
    packed: Tensor  # per owner: [bags per feature, keys per bag, IDs] (route_bags)
    send: list[int]  # packed block size per owner
    weights: Tensor | None  # per packed ID: weight times its bag's combiner scale
    send_w: list[int]  # weights per owner (0 when unweighted)
    tag: int  # this table's position in the step: tells its point-to-point messages apart
    wire: torch.dtype  # of partial sums and gradients between ranks
    recv: list[int] = field(default_factory=list)
    recv_w: list[int] = field(default_factory=list)
    received: Tensor | None = None
    received_w: Tensor | None = None
    works: list[dist.Work] = field(default_factory=list)
    partial: Tensor | None = None  # (W, bags, D): each owner's partial sums of this rank's bags
    partial_works: list[dist.Work] = field(default_factory=list)

    def sizes(self) -> list[tuple[int, int]]:
        return list(zip(self.send, self.send_w, strict=True))

    def start(self, got: list[tuple[int, int]], group: ProcessGroup | None) -> None:
        self.recv, self.recv_w = [n for n, _ in got], [n for _, n in got]
        self.received = torch.empty(sum(self.recv), dtype=torch.int64)
        self.works = [
            dist.all_to_all_single(self.received, self.packed, self.recv, self.send, group=group, async_op=True)
        ]
        if sum(self.send_w) or sum(self.recv_w):
            self.received_w = torch.empty(sum(self.recv_w))
            w = torch.empty(0) if self.weights is None else self.weights
            self.works.append(
                dist.all_to_all_single(self.received_w, w, self.recv_w, self.send_w, group=group, async_op=True)
            )
        # Partial sums arrive from each other owner as soon as it has pooled them (posted now).
        self.partial = torch.empty(len(self.send), self.bags, self.table.dim, dtype=self.wire)
        self.partial_works = [_recv(self.partial[q], q, group, self.tag) for q in _others(group) if self.bags]


@dataclass
class RemoteLookup:
    """A sharded training lookup of gathered rows, kept until its gradient is exchanged: the
    requester's (U, D) leaf and the routes, plus the owner's rows for the keys it received."""

    table: Table
    emb: Tensor  # requester: (U, D), requires grad
    send: list[int]
    recv: list[int]
    rows: Tensor  # owner: unique rows (Uo,) of the received keys
    inverse: Tensor  # owner: (R,) index into `rows` for each received key
    wire: torch.dtype

    def exchange(self, grad: Tensor, group: ProcessGroup | None) -> tuple[Tensor, list[dist.Work]]:
        """Starts sending the requester's (U, D) gradient to the owners of its keys and receiving
        the gradients of this rank's rows: (receive buffer, works)."""
        got = torch.empty(sum(self.recv), self.table.dim, dtype=self.wire, device=_device(self.table))
        send = grad.to(self.wire)
        return got, [dist.all_to_all_single(got, send, self.recv, self.send, group=group, async_op=True)]

    def owner_grad(self, got: Tensor, scale: float) -> SparseGrad:
        grad = got.new_zeros(len(self.rows), self.table.dim, dtype=torch.float32)
        grad.index_add_(0, self.inverse, got.float(), alpha=scale)
        return SparseGrad(self.table, self.rows, grad)


@dataclass
class RemotePooled:
    """A sharded training lookup pooled on the owners: the requester's (bags, D) leaf, plus the
    owner's pooling structure over the bags it received from every rank."""

    table: HashTable
    emb: Tensor  # requester: (bags, D) pooled rows, requires grad
    tag: int
    recv_bags: list[int]  # owner: bags received from each rank
    rows: Tensor  # owner: unique rows of the received keys
    inverse: Tensor
    offsets: Tensor
    weights: Tensor | None
    wire: torch.dtype
    runs: list[int] | None = None  # set when `emb` is batch-major (B, runs * D)
    own: Tensor | None = None  # this rank's own (bags, D) gradient, kept in float32 when the wire is narrower
    me: int = 0

    def exchange(self, grad: Tensor, group: ProcessGroup | None) -> tuple[Tensor, list[dist.Work]]:
        """Every other owner gets the whole (bags, D) gradient (feature-major, as owners pool);
        the other requesters' arrive in their slices of the receive buffer (requesters in rank order)."""
        got = torch.empty(sum(self.recv_bags), self.table.dim, dtype=self.wire)
        parts = got.split(self.recv_bags)
        self.me = dist.get_rank(group)
        if self.wire == torch.float32:  # this rank's own gradient goes straight into its slice, sent from there
            send, self.own = parts[self.me], None
            if self.runs is None:
                send.copy_(grad)
            else:
                send.view(len(self.runs), self.runs[0], self.table.dim).copy_(ops.feature_major_view(grad, self.runs))
        else:  # kept in float32 for this rank's own share
            self.own = grad if self.runs is None else ops.feature_major(grad, self.runs)
            send = self.own.to(self.wire)
        works = [_recv(parts[r], r, group, self.tag) for r in _others(group) if self.recv_bags[r]]
        return got, works + [_send(send, r, group, self.tag) for r in _others(group) if len(grad)]

    def owner_grad(self, got: Tensor, scale: float) -> PooledGrad:
        if self.own is not None:  # the other requesters' gradients, then this rank's own in its slice
            got = got.float()
            got.split(self.recv_bags)[self.me].copy_(self.own)
        return PooledGrad(self.table, self.rows, self.inverse, self.offsets, self.weights, got, scale)


def agree_pool_on_owner(
    candidates: list[tuple[list[Tensor], list[int], int] | None], group: ProcessGroup | None
) -> list[bool]:
    """Which tables pool on their owners, the same answer on every rank (one all-reduce).

    `candidates[i]` is table i's (IDs per feature, tags, bags), or None where it cannot pool. Per step
    the pooled route moves (bags, D) floats per other rank each way, the gathered one (unique keys,
    D) rows over all other ranks: the pooled route is chosen when the unique keys per bag, summed
    over ranks, exceed the world size.
    """
    stats = torch.zeros(len(candidates), 2, dtype=torch.float64)  # (unique keys, bags) per table
    for i, c in enumerate(candidates):
        if c is not None:
            parts = [_as_ids(t, "agree_pool_on_owner") for t in c[0]]
            counts = kernels.embedding.route_keys(parts, c[1], 1)[2]
            stats[i, 0] = float(counts.sum())
            stats[i, 1] = float(c[2])
    dist.all_reduce(stats, group=group)
    w = world(group)
    return [c is not None and keys > w * bags for c, (keys, bags) in zip(candidates, stats.tolist(), strict=True)]


def route(table: Table, ids: list[Tensor], tags: list[int], wire: torch.dtype, group: ProcessGroup | None) -> Routed:
    """Gathered route, step 1: local de-duplication and ordering by owner (no communication)."""
    if isinstance(table, DeviceTable):
        keys, inverse, counts = route_keys_torch([table._ids(t, "route") for t in ids], tags, world(group))
        return Routed(table, keys, inverse, counts, wire)
    parts = [_as_ids(t, "route") for t in ids]
    keys, key_tags, counts, inverse = kernels.embedding.route_keys(parts, list(tags), world(group))
    return Routed(table, torch.stack([keys, key_tags.to(torch.int64)], 1), inverse, counts.tolist(), wire)


def route_keys_torch(ids: list[Tensor], tags: list[int], world_size: int) -> tuple[Tensor, Tensor, list[int]]:
    """The core's `route_keys` in torch ops, on the IDs' device: the distinct (ID, tag) keys as
    (U, 2) ordered by owner rank, each input key's index into them, and the keys per rank."""
    all_ids = torch.cat([t.reshape(-1) for t in ids])
    key_tags = torch.cat([torch.full_like(t.reshape(-1), g) for t, g in zip(ids, tags, strict=True)])
    keys, inverse = torch.unique(torch.stack([all_ids, key_tags]), dim=1, return_inverse=True)
    ranks = owner(keys[0], world_size)
    order = torch.argsort(ranks, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=order.device)
    counts = torch.bincount(ranks, minlength=world_size).tolist()
    return keys[:, order].t().contiguous(), position[inverse], counts


def route_pooled(
    table: HashTable,
    ids: list[Tensor],
    tags: list[int],
    offsets: Tensor,
    weights: Tensor | None,
    combiners: list[str],
    runs: list[int],
    tag: int,
    wire: torch.dtype,
    group: ProcessGroup | None,
) -> Bags:
    """Pooled route, step 1: splits the bags (`offsets` over the concatenated `ids`, `runs[i]` bags
    of feature i) by owner; owners sum, so mean/sqrtn scales travel as per-key weights."""
    parts = [_as_ids(t, "route_pooled") for t in ids]
    scale = ops._bag_scale(offsets, weights, combiners, runs, torch.float32)
    if scale is not None:
        per_key = scale.repeat_interleave(offsets.diff(), output_size=int(offsets[-1]))
        weights = per_key if weights is None else weights * per_key
    # The order of the packed IDs is only needed to send weights along.
    packed, sizes, order = kernels.embedding.route_bags(parts, offsets, world(group), list(runs), weights is not None)
    send = sizes.tolist()
    if weights is None:
        return Bags(table, tags, len(offsets) - 1, packed, send, None, [0] * len(send), tag, wire)
    send_w = [n - len(runs) - (len(offsets) - 1) for n in send]
    return Bags(table, tags, len(offsets) - 1, packed, send, weights.index_select(0, order), send_w, tag, wire)


def exchange_keys(routed: list[Routed | Bags], group: ProcessGroup | None) -> None:
    """Step 2: every table's sizes in one collective, then each table's keys (async)."""
    w = world(group)
    device = _device(routed[0].table) if routed else torch.device("cpu")
    send = torch.tensor([r.sizes() for r in routed], dtype=torch.int64, device=device).reshape(len(routed), w, 2)
    send = send.transpose(0, 1).contiguous()  # (W, T, 2): row q = what I send to rank q
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    got = recv.transpose(0, 1).tolist()  # (T, W, 2)
    for r, sizes in zip(routed, got, strict=True):
        r.start([tuple(s) for s in sizes], group)


def serve(r: Routed, step: int, insert: bool, group: ProcessGroup | None) -> tuple[Tensor, Tensor, Tensor, dist.Work]:
    """Gathered route, step 3 on the owner: looks the received keys up and starts sending their rows
    back. Returns (owner rows (Uo,), inverse (R,), rows for this rank's own keys (U, D) once the
    returned work completes, the work).
    """
    assert r.work is not None and r.received is not None
    r.work.wait()
    found = r.table.lookup_tagged(r.received[:, 0], r.received[:, 1], step, insert)
    assert found.embeddings is not None
    out = torch.empty(len(r.keys), r.table.dim, dtype=r.wire, device=_device(r.table))
    rows = found.embeddings.index_select(0, found.inverse).to(r.wire)
    work = dist.all_to_all_single(out, rows, r.send, r.recv, group=group, async_op=True)
    return found.rows, found.inverse, out, work


@dataclass
class Served:
    """What an owner keeps of a pooled lookup (for backward) and the partial sums on their way."""

    recv_bags: list[int]
    rows: Tensor | None  # None in eval (read-only pooling, no de-duplication)
    inverse: Tensor | None
    offsets: Tensor
    weights: Tensor | None
    partial: Tensor  # (W, bags, D): the other owners' partial sums of this rank's bags, once `works` complete
    own: Tensor  # (bags, D) float32: this rank's partial sums as owner
    me: int
    works: list[dist.Work]

    def recorded(self, b: Bags, pooled: Tensor, runs: list[int] | None) -> RemotePooled:
        """What a training lookup keeps for its gradient exchange: the requester's `pooled` leaf
        (batch-major when `runs` is given) and this rank's pooling structure as owner."""
        assert self.rows is not None and self.inverse is not None  # training lookups keep them
        return RemotePooled(
            b.table, pooled, b.tag, self.recv_bags, self.rows, self.inverse, self.offsets, self.weights, b.wire, runs
        )

    def pooled(self, runs: list[int] | None = None) -> Tensor:
        """The partial sums of all owners, added in rank order, float32: (bags, D), or with `runs`
        (features of B bags each) batch-major (B, runs * D), written in that layout by the sum itself."""
        for work in self.works:
            work.wait()
        parts = [self.own if q == self.me else self.partial[q] for q in range(len(self.partial))]
        bags, dim = self.own.shape
        out = torch.empty(runs[0], len(runs) * dim) if runs else torch.empty(bags, dim)
        target = ops.feature_major_view(out, runs) if runs else out  # the sums land transposed
        parts = [p.view(target.shape) for p in parts]
        if len(parts) == 1:
            target.copy_(parts[0])
        else:
            torch.add(parts[0], parts[1], out=target)
        for p in parts[2:]:
            target += p
        return out


def serve_pooled(b: Bags, step: int, insert: bool, group: ProcessGroup | None) -> Served:
    """Pooled route, step 3 on the owner: pools every requester's bags over the keys it owns and
    sends each its partial sums as soon as they are pooled (other ranks first, its own last, so
    the transfers overlap the pooling). `insert` (training) inserts unknown keys and keeps the
    pooling structure for backward; otherwise the lookup is read-only."""
    assert b.received is not None
    for work in b.works:
        work.wait()
    features = len(b.tags)
    parts, tags, lengths, recv_bags, at = [], [], [], [], 0
    for size in b.recv:  # one block per requester: [bags per feature, keys per bag, IDs]
        block = b.received[at : at + size]
        at += size
        runs = block[:features].tolist()
        bags = sum(runs)
        counts = block[features : features + bags]
        ids = block[features + bags :]
        ends = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # key offsets of the bags
        cut = ends[[0, *itertools.accumulate(runs)]].tolist()  # key offsets of the features
        parts += [ids[lo:hi] for lo, hi in itertools.pairwise(cut)]
        tags += b.tags
        lengths.append(counts)
        recv_bags.append(bags)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), *lengths]).cumsum(0)
    weights = None
    if b.received_w is not None:
        pieces, wat = [], 0
        for n, (size, nw) in enumerate(zip(b.recv, b.recv_w, strict=True)):
            keys = size - features - recv_bags[n]
            pieces.append(b.received_w[wat : wat + nw] if nw else torch.ones(keys))
            wat += nw
        weights = torch.cat(pieces)
    rows: Tensor | None = None
    inverse: Tensor | None = None
    if insert:
        found = b.table.lookup(parts, step, True, tags, gather=False)
        rows, inverse = found.rows, found.inverse
    assert b.partial is not None
    bag_at = [0, *itertools.accumulate(recv_bags)]
    key_at = offsets[bag_at].tolist()
    me = dist.get_rank(group)
    own, sends = torch.empty(b.bags, b.table.dim), []  # replaced below unless this rank has no bags
    for r in [*_others(group), me]:  # requester r's bags: bag_at[r]:bag_at[r + 1]
        if not recv_bags[r]:
            continue
        lo, hi = key_at[r], key_at[r + 1]
        bag_offsets = offsets[bag_at[r] : bag_at[r + 1] + 1] - lo
        w = None if weights is None else weights[lo:hi]
        if inverse is not None:
            pooled = b.table.pool(rows, inverse[lo:hi], bag_offsets, w, "sum")  # type: ignore[arg-type]
        else:  # read-only: straight from the keys
            pooled = b.table.pool_keys(parts[r * features : (r + 1) * features], b.tags, bag_offsets, w, "sum")
        if r == me:
            own = pooled
        else:
            sends.append(_send(pooled.to(b.wire), r, group, b.tag))
    return Served(recv_bags, rows, inverse, offsets, weights, b.partial, own, me, [*b.partial_works, *sends])


def exchange_grads(
    lookups: list[RemoteLookup | RemotePooled], group: ProcessGroup | None
) -> list[SparseGrad | PooledGrad]:
    """Backward routes: each requester gradient (zeros where none) goes to the owners, all tables in
    flight at once; returns the owner's gradient per lookup, averaged over ranks, rows distinct."""
    w = world(group)
    pending = []
    for lk in lookups:
        g = lk.emb.grad
        g = torch.zeros_like(lk.emb) if g is None else g.to(device=_device(lk.table), dtype=torch.float32).contiguous()
        pending.append(lk.exchange(g, group))
    out = []
    for lk, (got, works) in zip(lookups, pending, strict=True):
        for work in works:
            work.wait()
        out.append(lk.owner_grad(got, 1.0 / w))
    return out
