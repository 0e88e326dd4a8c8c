"""`DeviceTable`: a `HashTable` whose ID map, rows, optimizer slots and metadata are torch tensors
on one device (a GPU, typically), with the same API and the same rules as the core's table.

A batch probes all its keys in the ID map (`KeyMap`), inserts its distinct misses (admission counts
first when `min_count` > 1; rows from the free list, last freed first, then fresh ones; storage
doubles as it fills, keeping every row), initializes them from (seed, ID) (`row_init`), and
de-duplicates the rows, ascending with a -1 last. Eviction drops rows by age or beyond a capacity
(ties by key) and rebuilds the map. It runs in tensor ops on any device, so it is also the
reference the CUDA kernels are checked against; after the same batches it holds the same keys,
rows, slots and metadata as the core's CPU table (row indices may differ).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from recis.core import kernels

from . import ops
from .keymap import KeyMap
from .row_init import init_rows
from .table import (
    DEFAULT_INITIALIZER,
    MAX_ROWS,
    Eviction,
    HashTable,
    Initializer,
    Lookup,
    check_sizes,
    register_table,
    stable_seed,
)

_TAG_MAX = 0xFFFF
_FREQ_MAX = 2**32 - 1  # frequencies saturate as the core's uint32 counters do


class DeviceTable:
    """A dynamic embedding table of `dim`-wide float32 rows keyed by int64 ID, kept on `device`.

    Takes `HashTable`'s arguments (`block_rows`: the initial row storage; rows are float32), plus
    the two below.

    Args:
        device: the torch device that holds the ID map, rows, slots and metadata.
        use_kernels: False runs the tensor-op twin even where the core's CUDA kernels exist (tests
            compare the two).

    Examples:
        >>> t = DeviceTable(dim=4, initializer=Initializer.uniform(-1, 1), device="cpu")
        >>> hit = t.lookup(torch.tensor([7, -3, 7]), step=1)
        >>> hit.embeddings.shape, hit.inverse.tolist(), len(t)
        (torch.Size([2, 4]), [0, 1, 0], 2)
    """

    def __init__(
        self,
        dim: int,
        initializer: Initializer = DEFAULT_INITIALIZER,
        min_count: int = 1,
        eviction: Eviction | None = None,
        seed: int = 0,
        block_rows: int = 8192,
        device: str | torch.device = "cuda",
        use_kernels: bool = True,
    ):
        check_sizes("DeviceTable", dim, min_count, block_rows)
        initializer.native()  # an unknown kind fails here, as in HashTable
        self.dim, self.initializer, self.min_count, self.eviction = dim, initializer, min_count, eviction
        self.seed = seed
        self.device = torch.device(device)
        self.tag_names: list[str] = []
        self._tag_seeds = torch.tensor([_as_int64(seed % 2**64)], dtype=torch.int64, device=self.device)
        self.use_kernels = use_kernels  # False: the tensor-op twin even where CUDA kernels exist
        self._map = KeyMap(self.device, use_kernels=use_kernels)
        self._pending = KeyMap(self.device, use_kernels=use_kernels)  # admission counts: key -> index below
        self._pending_count = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._pending_step = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._rows = 0  # storage rows
        self.embeddings = torch.empty(0, dim, device=self.device)
        self.slots: dict[str, Tensor] = {}
        self._slot_init: dict[str, float] = {}
        self._meta = {
            k: torch.empty(0, dtype=torch.int64, device=self.device) for k in ("ids", "tags", "steps", "freqs")
        }
        self._live = torch.zeros(0, dtype=torch.bool, device=self.device)
        self._grow(block_rows)
        self._allocated, self._size = 0, 0
        self._free = torch.zeros(0, dtype=torch.int64, device=self.device)
        self.counters = dict.fromkeys(("lookups", "hits", "inserts", "admitted", "rejected", "evicted"), 0)
        self._log: list[tuple[Tensor, Tensor]] | None = None
        self.fused_backward: Callable[..., None] | None = None  # as HashTable's: set by a fused optimizer
        self.version = torch.zeros((), dtype=torch.int64)  # as HashTable's: stands for the rows in op schemas
        self.handle = 0
        register_table(self)

    # -- storage ---------------------------------------------------------------------------------

    def _grow(self, rows: int) -> None:
        """Row storage for at least `rows` rows (doubling; existing rows are copied, never lost)."""
        if rows <= self._rows:
            return
        new = max(rows, 2 * self._rows)

        def grown(t: Tensor, fill: float | bool = 0) -> Tensor:
            out = torch.full((new, *t.shape[1:]), fill, dtype=t.dtype, device=self.device)
            out[: len(t)] = t
            return out

        self.embeddings = grown(self.embeddings)
        self.slots = {k: grown(v, self._slot_init[k]) for k, v in self.slots.items()}
        self._meta = {k: grown(v) for k, v in self._meta.items()}
        self._live = grown(self._live, False)
        self._rows = new

    def _allocate(self, n: int) -> Tensor:
        """Rows for n new keys: freed ones first (the last freed first), then fresh ones."""
        if self._size + n > MAX_ROWS:
            raise ValueError(f"DeviceTable: more than {MAX_ROWS} rows in one table")
        reuse = min(n, len(self._free))
        taken = self._free[len(self._free) - reuse :].flip(0)
        self._free = self._free[: len(self._free) - reuse]
        fresh = torch.arange(self._allocated, self._allocated + n - reuse, device=self.device)
        self._allocated += n - reuse
        self._grow(self._allocated)
        return torch.cat([taken, fresh])

    def _create(self, ids: Tensor, tags: Tensor) -> Tensor:
        """Maps n distinct absent keys to new rows, initialized, slots reset; returns the rows."""
        rows = self._allocate(len(ids))
        self._map.insert(ids, tags, rows)
        self._meta["ids"][rows], self._meta["tags"][rows] = ids, tags
        self._meta["steps"][rows], self._meta["freqs"][rows] = 0, 0
        self._live[rows] = True
        self._size += len(ids)
        n = len(self._tag_seeds)  # a tag never registered initializes with seed 0, as in the core
        seeds = torch.where(tags < n, self._tag_seeds[tags.clamp(max=n - 1)], 0)
        self.embeddings[rows] = init_rows(self.initializer, seeds, ids, self.dim)
        for name, slot in self.slots.items():
            slot[rows] = self._slot_init[name]
        self.counters["inserts"] += len(ids)
        return rows

    # -- the HashTable API -----------------------------------------------------------------------

    def add_logical_table(self, name: str) -> int:
        """Registers a logical table in this physical one; returns its tag (stable per name)."""
        if name in self.tag_names:
            return self.tag_names.index(name)
        if len(self.tag_names) >= 2**16:
            raise ValueError(f"DeviceTable: at most 65536 logical tables per physical table, adding {name!r}")
        self.tag_names.append(name)
        tag = len(self.tag_names) - 1
        seed = torch.tensor([_as_int64(stable_seed(self.seed, name))], dtype=torch.int64, device=self.device)
        self._tag_seeds = torch.cat([self._tag_seeds[:tag], seed, self._tag_seeds[tag + 1 :]])
        return tag

    def lookup(
        self,
        ids: Tensor | Sequence[Tensor],
        step: int = 0,
        insert: bool = True,
        tags: Sequence[int] | None = None,
        gather: bool = True,
    ) -> Lookup:
        """As `HashTable.lookup`; rows, inverse and embeddings are on the table's device."""
        parts = [ids] if isinstance(ids, Tensor) else list(ids)
        tag_list = [0] * len(parts) if tags is None else list(tags)
        keys, key_tags = self._keys(parts, tag_list, "DeviceTable.lookup")
        return self._lookup(keys, key_tags, step, insert, gather)

    def lookup_tagged(self, ids: Tensor, tags: Tensor, step: int = 0, insert: bool = True) -> Lookup:
        """`lookup` of keys that carry one tag each (`tags`: one per ID), rows gathered."""
        keys = self._ids(ids, "DeviceTable.lookup_tagged")
        tags = tags.to(device=self.device, dtype=torch.int64).reshape(-1)
        if bool(((tags < 0) | (tags > _TAG_MAX)).any()):
            raise ValueError("DeviceTable.lookup: tags must be in [0, 65535]")
        return self._lookup(keys, tags, step, insert, True)

    def _lookup(self, ids: Tensor, tags: Tensor, step: int, insert: bool, gather: bool) -> Lookup:
        key_rows = self._map.find(ids, tags)
        created = 0
        missed = key_rows < 0
        if bool(missed.any()):
            pairs, where = torch.unique(torch.stack([ids[missed], tags[missed]]), dim=1, return_inverse=True)
            rows, created = self._insert_missing(pairs[0], pairs[1], step, insert)
            key_rows[missed] = rows[where]
        unique, inverse = self._unique_rows(key_rows)
        none = len(unique) > 0 and int(unique[-1]) < 0
        found = len(unique) - int(none) - created
        self.counters["lookups"] += found
        self.counters["hits"] += found
        live = unique[unique >= 0]
        if insert:  # read-only lookups leave the metadata alone: eval traffic must not keep rows alive
            self._meta["steps"][live] = step
            self._meta["freqs"][live] = (self._meta["freqs"][live] + 1).clamp_(max=_FREQ_MAX)
        return Lookup(unique, inverse, self._gather(unique) if gather else None)

    def _unique_rows(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The distinct rows of `rows` (in [-1, allocated)) ascending, a -1 last as the core lists
        it, and each key's index into them: the CUDA kernels rank rows in a bitmap, as the core's
        `unique_rows` does; the twin sorts (`torch.unique`), with the same result."""
        if self.use_kernels and kernels.on_gpu(rows):
            words, stream = self._allocated // 32 + 1, kernels.stream(self.device)
            bits = torch.zeros(words, dtype=torch.int32, device=self.device)
            counts = torch.empty(words, dtype=torch.int32, device=self.device)
            kernels.gpu.dedup_mark(rows, self._allocated, bits, counts, stream)
            ends = counts.cumsum(0)
            unique = torch.empty(int(ends[-1]), dtype=torch.int64, device=self.device)
            inverse = torch.empty_like(rows)
            kernels.gpu.dedup_rank(rows, self._allocated, bits, ends - counts, inverse, unique, stream)
            return unique, inverse
        unique, inverse = torch.unique(rows, sorted=True, return_inverse=True)
        if len(unique) and int(unique[0]) < 0:  # the -1 goes last
            unique = torch.cat([unique[1:], unique[:1]])
            inverse = torch.where(inverse == 0, len(unique) - 1, inverse - 1)
        return unique, inverse

    def _insert_missing(self, ids: Tensor, tags: Tensor, step: int, insert: bool) -> tuple[Tensor, int]:
        """Rows of n distinct absent keys (-1 where none is made) and how many were created."""
        n = len(ids)
        self.counters["lookups"] += n
        rows = torch.full((n,), -1, dtype=torch.int64, device=self.device)
        if not insert:
            self.counters["rejected"] += n
            return rows, 0
        admit = torch.ones(n, dtype=torch.bool, device=self.device)
        if self.min_count > 1:
            admit = self._count_sightings(ids, tags, step)
            self.counters["admitted"] += int(admit.sum())
            self.counters["rejected"] += n - int(admit.sum())
        rows[admit] = self._create(ids[admit], tags[admit])
        return rows, int(admit.sum())

    def _count_sightings(self, ids: Tensor, tags: Tensor, step: int) -> Tensor:
        """Counts one more sighting of each key; those reaching `min_count` leave the counts and are admitted."""
        index = self._pending.find(ids, tags)
        new = index < 0
        if bool(new.any()):
            first = len(self._pending_count)
            fresh = torch.arange(first, first + int(new.sum()), device=self.device)
            self._pending.insert(ids[new], tags[new], fresh)
            self._pending_count = torch.cat([self._pending_count, torch.zeros_like(fresh)])
            self._pending_step = torch.cat([self._pending_step, torch.zeros_like(fresh)])
            index[new] = fresh
        self._pending_count[index] += 1
        self._pending_step[index] = step
        admit = self._pending_count[index] >= self.min_count
        if bool(admit.any()):
            keep = torch.ones(len(self._pending_count), dtype=torch.bool, device=self.device)
            keep[index[admit]] = False
            self._keep_pending(keep)
        return admit

    def _keep_pending(self, keep: Tensor) -> None:
        """Keeps the admission counts marked in `keep` (compacted; their map rebuilt)."""
        ids, tags = self._pending_keys()
        self._pending_count, self._pending_step = self._pending_count[keep], self._pending_step[keep]
        self._pending.rebuild(ids[keep], tags[keep], torch.arange(int(keep.sum()), device=self.device))

    def _pending_keys(self) -> tuple[Tensor, Tensor]:
        """The counted keys in index order."""
        used = self._pending.values >= 0
        order = self._pending.values[used].argsort()
        return self._pending.ids[used][order], self._pending.tags[used][order]

    def pool(
        self,
        rows: Tensor,
        inverse: Tensor,
        offsets: Tensor,
        weights: Tensor | None,
        combiner: str | list[str],
        runs: list[int] | None = None,
        batch_major: bool = False,
    ) -> Tensor:
        """As `HashTable.pool`: the rows `rows[inverse[j]]` pooled per bag, on the table's device."""
        rows = rows.to(self.device)
        bad = (rows < -1) | (rows >= self._allocated)
        if bool(bad.any()):
            u = int(bad.nonzero()[0, 0])
            raise ValueError(f"DeviceTable.pool: rows[{u}]={int(rows[u])} is not a row of this table")
        return self._pool(rows, inverse, offsets, weights, combiner, runs, batch_major)

    def pool_keys(
        self,
        ids: Sequence[Tensor],
        tags: Sequence[int],
        offsets: Tensor,
        weights: Tensor | None,
        combiner: str | list[str],
        runs: list[int] | None = None,
        batch_major: bool = False,
    ) -> Tensor:
        """As `HashTable.pool_keys`: read-only, no de-duplication, missing keys read zeros."""
        rows = self._map.find(*self._keys(list(ids), list(tags), "DeviceTable.pool_keys"))
        missed = int((rows < 0).sum())
        self.counters["lookups"] += len(rows)
        self.counters["hits"] += len(rows) - missed
        self.counters["rejected"] += missed
        index = torch.arange(len(rows), device=self.device)
        return self._pool(rows, index, offsets, weights, combiner, runs, batch_major)

    def _pool(
        self,
        rows: Tensor,
        inverse: Tensor,
        offsets: Tensor,
        weights: Tensor | None,
        combiner: str | list[str],
        runs: list[int] | None,
        batch_major: bool,
    ) -> Tensor:
        """Bags of rows `rows[inverse[j]]` (-1: zeros) pooled: the CUDA kernel reads them in place
        from the storage; the twin gathers them first."""
        offsets, inverse = offsets.to(self.device), inverse.to(self.device)
        w = None if weights is None else weights.to(device=self.device, dtype=torch.float32).contiguous()
        combiners, runs = ops._runs(combiner, runs, offsets)
        if self.use_kernels and kernels.on_gpu(self.embeddings):
            scales = ops._bag_scale(offsets, w, combiners, runs, torch.float32)
            pooled = torch.empty(len(offsets) - 1, self.dim, device=self.device)
            kernels.gpu.pool_forward(self.embeddings, rows.contiguous(), inverse.contiguous(), offsets.contiguous(), w,
                                     scales, pooled, kernels.stream(self.device))  # fmt: skip
        else:
            pooled = ops.pooled_embedding_reference(self._gather(rows), inverse, offsets, w, combiners, runs)
        return ops.batch_major(pooled, runs) if batch_major else pooled

    def gather(self, rows: Tensor) -> Tensor:
        """Embeddings of live table rows (n, D); row -1 reads zeros, any other row raises ValueError."""
        rows = rows.to(device=self.device, dtype=torch.int64).reshape(-1)
        self.check_rows(rows, "DeviceTable.gather")
        return self._gather(rows)

    def check_rows(self, rows: Tensor, op: str) -> None:
        """ValueError naming `op` unless every row is -1 or a live row."""
        ok = rows == -1
        if self._allocated:  # one host read in all: no boolean indexing
            inside = (rows >= 0) & (rows < self._allocated)
            ok |= inside & self._live[rows.clamp(0, self._allocated - 1)]
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            raise ValueError(f"{op}: rows[{i}]={int(rows[i])} is not a live row of this table (or -1)")

    def _gather(self, rows: Tensor) -> Tensor:
        out = self.embeddings[rows.clamp(min=0)]
        return out.masked_fill_((rows < 0)[:, None], 0.0)

    def evict(self, step: int) -> int:
        """As `HashTable.evict`: rows not seen in the last `max_age` steps, then rows beyond `capacity`."""
        if self.eviction is None:
            return 0
        live = self._live[: self._allocated]
        doomed = torch.zeros_like(live)
        if self.eviction.max_age is not None:
            min_step = step - self.eviction.max_age + 1
            self._keep_pending(self._pending_step >= min_step)
            doomed |= live & (self._meta["steps"][: self._allocated] < min_step)
        if self.eviction.capacity is not None:
            self._prune_pending(self.eviction.capacity)
            rows = (live & ~doomed).nonzero().flatten()
            excess = len(rows) - self.eviction.capacity
            if excess > 0:
                order = self._eviction_order(rows)
                doomed[rows[order[:excess]]] = True
        return self._remove(doomed.nonzero().flatten())

    def _eviction_order(self, rows: Tensor) -> Tensor:
        """Positions of `rows`, first to drop first: (frequency for LFU,) step, then key (ID, tag)."""
        keys = [self._meta["tags"][rows], self._meta["ids"][rows], self._meta["steps"][rows]]
        if self.eviction is not None and self.eviction.policy == "lfu":
            keys.append(self._meta["freqs"][rows])
        return _lexsort(keys)

    def _prune_pending(self, capacity: int) -> None:
        excess = len(self._pending_count) - capacity
        if excess <= 0:
            return
        ids, tags = self._pending_keys()
        keys = [tags, ids, self._pending_step]
        if self.eviction is not None and self.eviction.policy == "lfu":
            keys.append(self._pending_count)
        keep = torch.ones(len(ids), dtype=torch.bool, device=self.device)
        keep[_lexsort(keys)[:excess]] = False
        self._keep_pending(keep)

    def _remove(self, rows: Tensor) -> int:
        if not len(rows):
            return 0
        if self._log is not None:
            self._log.append((self._meta["ids"][rows].cpu(), self._meta["tags"][rows].cpu()))
        self._live[rows] = False
        self._free = torch.cat([self._free, rows])
        self._size -= len(rows)
        self.counters["evicted"] += len(rows)
        live = self._live[: self._allocated].nonzero().flatten()
        self._map.rebuild(self._meta["ids"][live], self._meta["tags"][live], live)
        return len(rows)

    def __len__(self) -> int:
        return self._size

    def ids(self) -> Tensor:
        """IDs of the live rows, int64, in row order (on the table's device)."""
        return self._meta["ids"][: self._allocated][self._live[: self._allocated]]

    def memory_bytes(self) -> int:
        """Bytes held by rows, slots, metadata, the ID map, admission counts and the eviction log."""
        tensors = [self.embeddings, *self.slots.values(), *self._meta.values(), self._live, self._free]
        tensors += [self._pending_count, self._pending_step]
        logged = sum(i.nbytes + t.nbytes for i, t in self._log or [])
        return sum(t.nbytes for t in tensors) + self._map.nbytes() + self._pending.nbytes() + logged

    def stats(self) -> dict[str, int]:
        """Counters: lookups, hits, inserts, admitted, rejected, evicted; plus rows and memory_bytes."""
        return dict(self.counters) | {"rows": len(self), "memory_bytes": self.memory_bytes()}

    def add_slot(self, name: str, width: int, init: float = 0.0) -> int:
        """Adds an optimizer state slot (width floats per row, reset to `init` for new rows)."""
        if name in self.slots:
            raise ValueError(f"DeviceTable.add_slot: slot '{name}' exists already")
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 2**20:
            raise ValueError(f"DeviceTable.add_slot: width must be in [1, 2^20], got {width}")
        self._slot_init[name] = float(init)
        self.slots[name] = torch.full((self._rows, width), float(init), device=self.device)
        return len(self.slots) - 1

    def slot_names(self) -> list[str]:
        """Names of the optimizer slots, in index order."""
        return list(self.slots)

    @property
    def row_capacity(self) -> int:
        """Rows ever allocated; every live row index is below it."""
        return self._allocated

    def reserve(self, rows: int) -> None:
        """Sizes the ID map for `rows` live rows at once (a bulk load does not rehash step by step)."""
        if not 0 <= rows <= MAX_ROWS:
            raise ValueError(
                f"DeviceTable.reserve: rows must be in [0, {MAX_ROWS}] (the rows of one table), got {rows}"
            )
        self._map.reserve(rows)

    def track_evictions(self, on: bool = True) -> None:
        """Record the keys of evicted rows until `take_evicted()` (delta checkpoints need them)."""
        self._log = [] if on else None

    def take_evicted(self) -> tuple[Tensor, Tensor]:
        """(ids, tags) of the rows evicted since the last call (CPU tensors; tags int32)."""
        log, self._log = self._log or [], [] if self._log is not None else None
        ids = torch.cat([i for i, _ in log]) if log else torch.zeros(0, dtype=torch.int64)
        tags = torch.cat([t for _, t in log]) if log else torch.zeros(0, dtype=torch.int64)
        return ids, tags.to(torch.int32)

    def export(self, begin: int = 0, end: int | None = None, min_step: int | None = None) -> dict[str, Tensor]:
        """As `HashTable.export`, copied to the host (page-locked memory when the table is on CUDA)."""
        stop = self._allocated if end is None else min(end, self._allocated)
        begin = max(begin, 0)
        rows = torch.arange(begin, max(stop, begin), device=self.device)
        keep = self._live[rows]
        if min_step is not None:
            keep &= self._meta["steps"][rows] >= min_step
        rows = rows[keep]
        out = {k: self._meta[k][rows] for k in ("ids", "tags", "steps", "freqs")}
        out["tags"] = out["tags"].to(torch.int32)
        out["embeddings"] = self.embeddings[rows]
        out |= {f"slot.{name}": slot[rows] for name, slot in self.slots.items()}
        return {k: _to_host(v) for k, v in out.items()}

    def state_dict(self) -> dict[str, Tensor]:
        """Live rows as host tensors: ids, tags, steps, freqs, embeddings and `slot.<name>` per slot."""
        return self.export()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inserts or overwrites the rows in `state`, as `HashTable.load_state_dict` (validated first)."""
        n = len(state["ids"])
        emb = state["embeddings"]
        if emb.dim() != 2 or emb.shape[1] != self.dim or len(emb) != n:
            raise ValueError(
                f"DeviceTable.load_state_dict: embeddings must be ({n}, {self.dim}), got {tuple(emb.shape)}"
            )
        slots = {k.removeprefix("slot."): v for k, v in state.items() if k.startswith("slot.")}
        for name, values in slots.items():
            if name not in self.slots:
                raise ValueError(f"DeviceTable.load_state_dict: this table has no slot '{name}'")
            if tuple(values.shape) != (n, self.slots[name].shape[1]):
                raise ValueError(
                    f"DeviceTable.load_state_dict: slot '{name}' must be {n} x {self.slots[name].shape[1]}"
                )
        ids = self._ids(state["ids"], "DeviceTable.load_state_dict")
        tags, steps, freqs = (state[k].to(device=self.device, dtype=torch.int64) for k in ("tags", "steps", "freqs"))
        if bool(((tags < 0) | (tags > 0xFFFF)).any()):
            raise ValueError("DeviceTable.load_state_dict: tags must be in [0, 65535]")
        if bool(((freqs < 0) | (freqs > _FREQ_MAX)).any()):
            raise ValueError("DeviceTable.load_state_dict: freqs must be in [0, 2^32 - 1]")
        rows = self._map.find(ids, tags)
        new = rows < 0
        if bool(new.any()):  # a key listed twice takes its last values, as the core's sequential load
            pairs, where = torch.unique(torch.stack([ids[new], tags[new]]), dim=1, return_inverse=True)
            rows[new] = self._create(pairs[0], pairs[1])[where]
        self._meta["steps"][rows], self._meta["freqs"][rows] = steps, freqs
        self.embeddings[rows] = emb.to(device=self.device, dtype=torch.float32)
        for name, slot in self.slots.items():
            slot[rows] = slots[name].to(self.device, torch.float32) if name in slots else self._slot_init[name]

    def _keys(self, parts: list[Tensor], tags: list[int], where: str) -> tuple[Tensor, Tensor]:
        """The parts' IDs laid end to end, with each part's tag per key (int64, on the device)."""
        for t in tags:
            if not 0 <= t <= _TAG_MAX:
                raise ValueError(f"{where}: tags must be in [0, 65535], got {t}")
        ids = [self._ids(p, where) for p in parts]
        key_tags = [
            torch.full((len(i),), t, dtype=torch.int64, device=self.device) for i, t in zip(ids, tags, strict=True)
        ]
        return torch.cat([self._ints(0), *ids]), torch.cat([self._ints(0), *key_tags])

    def _ints(self, n: int) -> Tensor:
        return torch.zeros(n, dtype=torch.int64, device=self.device)

    def _ids(self, t: Tensor, where: str = "DeviceTable") -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: expected an int64 tensor of IDs, got {type(t).__name__}")
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"{where}: IDs must be integers (int64), got {t.dtype}")
        return t.reshape(-1).to(device=self.device, dtype=torch.int64)

    def __repr__(self) -> str:
        return (
            f"DeviceTable(dim={self.dim}, rows={len(self)}, device={self.device}, initializer={self.initializer.kind})"
        )


def _as_int64(u: int) -> int:
    """A 64-bit unsigned value as the int64 with the same bits."""
    return u - 2**64 if u >= 2**63 else u


def _lexsort(keys: list[Tensor]) -> Tensor:
    """The order sorting by keys[-1] first, then keys[-2], ... (stable sorts, last key applied last)."""
    order = torch.arange(len(keys[0]), device=keys[0].device)
    for k in keys:
        order = order[k[order].argsort(stable=True)]
    return order


def _to_host(t: Tensor) -> Tensor:
    if t.device.type != "cuda":
        return t.cpu() if t.device.type != "cpu" else t.clone()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    torch.cuda.current_stream(t.device).synchronize()
    return out


Table = HashTable | DeviceTable  # what an engine's physical tables, and their gradients, may be
