"""Row-wise sharding of hash tables over `torch.distributed` (gloo on CPU, NCCL on GPU).

Every key (ID, tag) of a physical table lives on one rank, `owner(id, world_size)`. One sharded
lookup of a physical table, for all the features that read it:

1. `route_keys` (C++) de-duplicates this rank's keys and orders them by owner rank.
2. Keys per (table, rank) travel in one `all_to_all_single` for all tables; then each table's
   keys travel by one `all_to_all_single`, every table's exchange in flight at once.
3. Owners look their received keys up (inserting in training) and send each key's row back,
   again asynchronously: the next table's lookup overlaps this table's transfer.
4. The requester gets a (U, D) row per unique key, which pools or pads exactly as in one process.

Backward sends each requester's (U, D) gradient back along the same routes (`exchange_grads`);
owners sum it per row and divide by the world size, so sparse gradients are averaged over ranks
as DDP averages dense ones: with a per-rank mean loss both equal the gradient of the global mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from recis.core import _C, threads

from .table import HashTable

ProcessGroup = dist.ProcessGroup


def world(group: ProcessGroup | None) -> int:
    return dist.get_world_size(group)


@dataclass
class Routed:
    """One physical table's keys on their way: what this rank sends and receives."""

    table: HashTable
    keys: Tensor  # (U, 2) int64: this rank's unique (ID, tag) keys, ordered by owner
    inverse: Tensor  # (N,) index into `keys` for each input ID
    send: list[int]  # keys sent to each rank
    recv: list[int] = field(default_factory=list)  # keys received from each rank
    received: Tensor | None = None  # (R, 2) keys this rank owns, from every rank
    work: dist.Work | None = None


@dataclass
class RemoteLookup:
    """A sharded training lookup, kept until its gradient is exchanged: the requester's (U, D)
    leaf and the routes, plus the owner's rows for the keys it received."""

    table: HashTable
    emb: Tensor  # requester: (U, D), requires grad
    send: list[int]
    recv: list[int]
    rows: Tensor  # owner: unique rows (Uo,) of the received keys
    inverse: Tensor  # owner: (R,) index into `rows` for each received key


def route(table: HashTable, ids: list[Tensor], tags: list[int], group: ProcessGroup | None) -> Routed:
    """Step 1: local de-duplication and ordering by owner (no communication)."""
    parts = [t.reshape(-1).to(device="cpu", dtype=torch.int64).contiguous() for t in ids]
    threads.sync()
    keys, key_tags, counts, inverse = _C.route_keys(parts, list(tags), world(group))
    return Routed(table, torch.stack([keys, key_tags.to(torch.int64)], 1), inverse, counts.tolist())


def exchange_keys(routed: list[Routed], group: ProcessGroup | None) -> None:
    """Step 2: the counts of every table in one collective, then each table's keys (async)."""
    w = world(group)
    send = torch.tensor([r.send for r in routed], dtype=torch.int64).reshape(len(routed), w).t().contiguous()
    recv = torch.empty_like(send)  # (W, T): row q = what rank q sends me, per table
    dist.all_to_all_single(recv, send, group=group)
    for i, r in enumerate(routed):
        r.recv = recv[:, i].tolist()
        r.received = torch.empty(sum(r.recv), 2, dtype=torch.int64)
        r.work = dist.all_to_all_single(r.received, r.keys, r.recv, r.send, group=group, async_op=True)


def serve(r: Routed, step: int, insert: bool, group: ProcessGroup | None) -> tuple[Tensor, Tensor, Tensor, dist.Work]:
    """Step 3 on the owner: looks the received keys up and starts sending their rows back.

    Returns (owner rows (Uo,), inverse (R,), rows for this rank's own keys (U, D) once the
    returned work completes, the work).
    """
    assert r.work is not None and r.received is not None
    r.work.wait()
    found = r.table.lookup_tagged(r.received[:, 0], r.received[:, 1], step, insert)
    assert found.embeddings is not None
    out = torch.empty(len(r.keys), r.table.dim)
    work = dist.all_to_all_single(
        out, found.embeddings.index_select(0, found.inverse), r.send, r.recv, group=group, async_op=True
    )
    return found.rows, found.inverse, out, work


def exchange_grads(lookups: list[RemoteLookup], group: ProcessGroup | None) -> list[tuple[HashTable, Tensor, Tensor]]:
    """Backward routes: each requester gradient (zeros where none) goes to the owners, all tables in
    flight at once; returns (table, rows, grad averaged over ranks) per lookup, rows distinct."""
    w = world(group)
    pending = []
    for lk in lookups:
        g = lk.emb.grad
        g = torch.zeros_like(lk.emb) if g is None else g.to(device="cpu", dtype=torch.float32).contiguous()
        got = torch.empty(sum(lk.recv), lk.table.dim)
        pending.append((got, dist.all_to_all_single(got, g, lk.recv, lk.send, group=group, async_op=True)))
    out = []
    for lk, (got, work) in zip(lookups, pending, strict=True):
        work.wait()
        grad = torch.zeros(len(lk.rows), lk.table.dim).index_add_(0, lk.inverse, got, alpha=1.0 / w)
        out.append((lk.table, lk.rows, grad))
    return out
