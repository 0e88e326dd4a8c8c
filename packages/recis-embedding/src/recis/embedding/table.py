"""`HashTable`: the Python face of the core's dynamic embedding table.

IDs are int64 (all 64 bits, negative allowed) plus a 16-bit tag naming the logical table inside
a merged physical table. Rows are created on first sight (or after `min_count` sightings), are
initialized from (seed, ID) alone, and are dropped by age or capacity on `evict`.
"""

from __future__ import annotations

import itertools
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import torch
from torch import Tensor

from recis.core import kernels

InitKind = Literal["constant", "uniform", "normal", "truncated_normal", "xavier_uniform"]


@dataclass(frozen=True)
class Initializer:
    """How a new row is filled; a pure function of (table seed, ID).

    Use the constructors: `Initializer.constant(0.0)`, `.uniform(-0.05, 0.05)`, `.normal(0, 0.01)`,
    `.truncated_normal(0, 0.01)` (redrawn beyond 2 stddev), `.xavier_uniform()` (bound
    sqrt(6 / (1 + dim)), a row seen as a (1, dim) matrix). Each kind reads its own fields:
    constant `value`, uniform `low` and `high`, the normals `mean` and `std`.
    """

    kind: InitKind = "truncated_normal"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.01

    @classmethod
    def constant(cls, value: float) -> Initializer:
        return cls("constant", value=value)

    @classmethod
    def uniform(cls, low: float, high: float) -> Initializer:
        if not low < high:
            raise ValueError(f"Initializer.uniform: expected low < high, got {low} and {high}")
        return cls("uniform", low=low, high=high)

    @classmethod
    def normal(cls, mean: float = 0.0, std: float = 0.01) -> Initializer:
        if std < 0:
            raise ValueError(f"Initializer.normal: std must be >= 0, got {std}")
        return cls("normal", mean=mean, std=std)

    @classmethod
    def truncated_normal(cls, mean: float = 0.0, std: float = 0.01) -> Initializer:
        if std < 0:
            raise ValueError(f"Initializer.truncated_normal: std must be >= 0, got {std}")
        return cls("truncated_normal", mean=mean, std=std)

    @classmethod
    def xavier_uniform(cls) -> Initializer:
        return cls("xavier_uniform")

    def native(self) -> kernels.embedding.Initializer:
        """The core's form (ValueError for an unknown kind)."""
        out = kernels.embedding.Initializer(self.kind)
        out.value, out.low, out.high, out.mean, out.stddev = self.value, self.low, self.high, self.mean, self.std
        return out


@dataclass(frozen=True)
class Eviction:
    """When `HashTable.evict(step)` drops rows.

    Args:
        max_age: drop rows not seen in the last `max_age` steps (None: no age limit).
        capacity: keep at most this many rows (None: unbounded), dropping by `policy`.
        policy: "lru" (least recently seen first) or "lfu" (least often seen first, then oldest);
            ties go to the smaller key (ID, then tag), so every table implementation drops the same rows.
    """

    max_age: int | None = None
    capacity: int | None = None
    policy: Literal["lru", "lfu"] = "lru"

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age < 1:
            raise ValueError(f"Eviction: max_age must be >= 1, got {self.max_age}")
        if self.capacity is not None and self.capacity < 0:
            raise ValueError(f"Eviction: capacity must be >= 0, got {self.capacity}")
        if self.policy not in ("lru", "lfu"):
            raise ValueError(f"Eviction: policy must be 'lru' or 'lfu', got {self.policy!r}")


class Lookup(NamedTuple):
    """Result of a batch lookup: `rows` (U,) table rows (-1: no row), `inverse` (N,) index into
    them for each input ID, `embeddings` (U, D) the rows' values (zeros for -1; None when the
    lookup was asked not to gather)."""

    rows: Tensor
    inverse: Tensor
    embeddings: Tensor | None


MAX_ROWS = 2**31 - 1  # rows of one table (the ID map stores 32-bit row indices)
DEFAULT_INITIALIZER = Initializer()
_handles = itertools.count()
_TABLES: weakref.WeakValueDictionary[int, HashTable] = weakref.WeakValueDictionary()


def check_sizes(what: str, dim: int, min_count: int, block_rows: int) -> None:
    """ValueError unless each size is an int in its range (the core's limits)."""
    for name, value, top in (("dim", dim, 2**20), ("min_count", min_count, 2**62), ("block_rows", block_rows, 2**20)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"{what}: {name} must be an int in [1, {top}], got {value!r}")


def register_table(table: Any) -> None:
    """Gives a table (a `HashTable` or a `DeviceTable`) the integer handle custom ops name it by."""
    table.handle = next(_handles)
    _TABLES[table.handle] = table


def table_by_handle(handle: int) -> HashTable:
    """The live table with this handle (custom ops pass tables as integers)."""
    table = _TABLES.get(handle)
    if table is None:
        raise ValueError(f"HashTable handle {handle} names no live table")
    return table


def stable_seed(seed: int, name: str) -> int:
    """A 64-bit seed from (seed, table name), the same in every process."""
    return (seed * 0x9E3779B97F4A7C15 + zlib.crc32(name.encode())) % 2**64


ROW_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class HashTable:
    """A dynamic embedding table of `dim`-wide rows keyed by int64 ID.

    Args:
        dim: embedding width.
        initializer: how new rows are filled (default truncated normal, std 0.01).
        min_count: an ID gets a row once it was looked up this many times (frequency admission);
            counting allocates no row, and until then the ID reads zeros. Counts are dropped by
            `evict` as rows are (by age, and beyond `eviction.capacity` counts), so set an eviction
            policy to bound their memory.
        eviction: what `evict(step)` drops; None keeps every row.
        seed: base seed; logical table `name` uses `stable_seed(seed, name)`.
        block_rows: rows per memory block (a power of two).
        dtype: how rows are stored: torch.float32, or torch.bfloat16 / torch.float16 for half the
            bytes. Lookups and pooling return float32; optimizers update in float32 and round the
            row back to nearest even, or with `rounding="stochastic"` (bfloat16 only) up or down
            with the probability of the fraction cut off, so updates smaller than half a bf16 step
            are not lost on average. Optimizer slots stay float32.
        rounding: "nearest" or "stochastic" (see dtype).

    Examples:
        >>> t = HashTable(dim=4, initializer=Initializer.uniform(-1, 1))
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
        dtype: torch.dtype = torch.float32,
        rounding: str = "nearest",
    ):
        check_sizes("HashTable", dim, min_count, block_rows)
        if dtype not in ROW_DTYPES:
            raise ValueError(f"HashTable: dtype must be float32, bfloat16 or float16, got {dtype}")
        if not (rounding == "nearest" or (rounding == "stochastic" and dtype == torch.bfloat16)):
            raise ValueError(f"HashTable: rounding must be 'nearest', or 'stochastic' for bfloat16, got {rounding!r}")
        self.initializer = initializer
        self.eviction = eviction
        self.seed = seed
        self.min_count = min_count
        self.dtype, self.rounding = dtype, rounding
        self._c = kernels.embedding.HashTable(dim, initializer.native(), min_count, block_rows, ROW_DTYPES[dtype])
        self._c.stochastic_rounding = rounding == "stochastic"
        self._c.set_tag_seed(0, seed % 2**64)  # until logical tables are named
        self.tag_names: list[str] = []
        # Set by a fused sparse optimizer: takes the output gradient of a pooled lookup
        # (rows, inverse, offsets, weights, combiners, runs, grad) and updates the rows in place.
        self.fused_backward: Callable[..., None] | None = None
        # Stands for the rows in custom-op schemas (ops.table_update declares it mutated when it
        # writes them); counts those writes.
        self.version = torch.zeros((), dtype=torch.int64)
        self.handle = 0  # how custom ops name this table (set by register_table)
        register_table(self)

    @property
    def dim(self) -> int:
        return int(self._c.dim)

    def add_logical_table(self, name: str) -> int:
        """Registers a logical table in this physical one; returns its tag (stable per name)."""
        if name in self.tag_names:
            return self.tag_names.index(name)
        if len(self.tag_names) >= 2**16:
            raise ValueError(f"HashTable: at most 65536 logical tables per physical table, adding {name!r}")
        self.tag_names.append(name)
        tag = len(self.tag_names) - 1
        self._c.set_tag_seed(tag, stable_seed(self.seed, name))
        return tag

    def lookup(
        self,
        ids: Tensor | Sequence[Tensor],
        step: int = 0,
        insert: bool = True,
        tags: Sequence[int] | None = None,
        gather: bool = True,
    ) -> Lookup:
        """De-duplicates `ids`, finds or inserts their rows and gathers them, in one C++ call.

        Args:
            ids: int64 IDs, or one tensor per feature (their inverses are concatenated in order).
            step: the training step, recorded per row for age-based eviction and LRU.
            insert: False makes the lookup read-only: unknown IDs read zeros and get no row.
            tags: logical-table tag per tensor in `ids` (default 0 for all).
            gather: False skips copying the rows out (`embeddings` is None): for `pool`.
        """
        parts = [ids] if isinstance(ids, Tensor) else list(ids)
        tags = [0] * len(parts) if tags is None else list(tags)
        parts = [_as_ids(p, "HashTable.lookup") for p in parts]
        rows, inverse, emb = self._c.lookup(parts, tags, step, insert, gather)
        return Lookup(rows, inverse, emb)

    def lookup_tagged(self, ids: Tensor, tags: Tensor, step: int = 0, insert: bool = True) -> Lookup:
        """`lookup` of keys that carry one tag each (`tags`: int32, one per ID), rows gathered."""
        ids = _as_ids(ids, "HashTable.lookup_tagged")
        rows, inverse, emb = self._c.lookup_tagged(ids, tags.to(torch.int32).contiguous(), step, insert)
        return Lookup(rows, inverse, emb)

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
        """Pools rows `rows[inverse[j]]` per bag straight from the table's blocks: (bags, D).

        `combiner` may be a list, one per run of `runs[i]` consecutive bags (several features in
        one call). With `batch_major` (every run the same length B) the result is (B, runs * D),
        the runs side by side as a model concatenates features. The differentiable form is
        `ops.table_pooled`.
        """
        combiners, runs, w, out = self._pool_args(offsets, weights, combiner, runs, batch_major)
        self._c.pool(_cpu(rows), _cpu(inverse), _cpu(offsets), w, combiners, runs, out, batch_major)
        return out

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
        """Read-only pooled lookup straight from the keys: bag b pools the rows of the keys
        `offsets[b]:offsets[b + 1]` of the concatenated `ids` (tensor k of logical table `tags[k]`).

        No de-duplication, no inserts, no row metadata touched: missing keys read zeros. This is
        what an eval-mode `EmbeddingEngine` runs for pooled features. Layout as in `pool`.
        """
        parts = [_as_ids(p, "HashTable.pool_keys") for p in ids]
        combiners, runs, w, out = self._pool_args(offsets, weights, combiner, runs, batch_major)
        self._c.pool_keys(parts, list(tags), _cpu(offsets), w, combiners, runs, out, batch_major)
        return out

    def _pool_args(
        self,
        offsets: Tensor,
        weights: Tensor | None,
        combiner: str | list[str],
        runs: list[int] | None,
        batch_major: bool,
    ) -> tuple[list[str], list[int], Tensor | None, Tensor]:
        """What `pool` and `pool_keys` pass to C++: combiners, runs, float32 weights and the output
        ((bags, D), or (B, runs * D) batch-major); sizes the core's pool to torch's thread count."""
        bags = len(offsets) - 1
        combiners = [combiner] if isinstance(combiner, str) else list(combiner)
        runs = [bags] if runs is None else list(runs)
        out = torch.empty((runs[0], len(runs) * self.dim) if batch_major and runs else (bags, self.dim))
        w = None if weights is None else weights.to(device="cpu", dtype=torch.float32).contiguous()
        return combiners, runs, w, out

    def gather(self, rows: Tensor) -> Tensor:
        """Embeddings of live table rows (n, D); row -1 reads zeros, any other row raises ValueError."""
        return cast(Tensor, self._c.gather(_as_ids(rows, "HashTable.gather")))

    def evict(self, step: int) -> int:
        """Applies the eviction policy after training step `step`; returns how many rows were dropped.

        With `max_age=N`, rows last seen before step `step - N + 1` go (those seen in the last N steps stay).
        """
        if self.eviction is None:
            return 0
        dropped = 0
        if self.eviction.max_age is not None:
            dropped += self._c.evict_older_than(step - self.eviction.max_age + 1)
        if self.eviction.capacity is not None:
            dropped += self._c.evict_to_capacity(self.eviction.capacity, self.eviction.policy)
        return dropped

    def __len__(self) -> int:
        return len(self._c)

    def ids(self) -> Tensor:
        """IDs of the live rows, int64."""
        ids: Tensor = self._c.export()["ids"]
        return ids

    def memory_bytes(self) -> int:
        """Bytes held by row blocks, optimizer slots, metadata, the ID map, the admission counts
        (`min_count` > 1) and the eviction log (`track_evictions`)."""
        return int(self._c.memory_bytes())

    def stats(self) -> dict[str, int]:
        """Counters: lookups, hits, inserts, admitted, rejected, evicted; plus rows and memory_bytes."""
        return dict(self._c.counters()) | {"rows": len(self), "memory_bytes": self.memory_bytes()}

    def add_slot(self, name: str, width: int, init: float = 0.0) -> int:
        """Adds an optimizer state slot (width floats per row, reset to `init` for new rows)."""
        return int(self._c.add_slot(name, width, init))

    def export(self, begin: int = 0, end: int | None = None, min_step: int | None = None) -> dict[str, Tensor]:
        """Live rows with row index in [begin, end), optionally only those seen at step >= `min_step`,
        as `state_dict()` does: savers walk `range(0, row_capacity, chunk)` to stream a big table
        without copying it whole, and `min_step` selects the rows touched since a save (deltas)."""
        e = self._c.export(begin, 2**63 - 1 if end is None else end, -(2**63) if min_step is None else min_step)
        out = {k: e[k] for k in ("ids", "tags", "steps", "freqs")} | {"embeddings": e["embeddings"].to(self.dtype)}
        return out | {f"slot.{name}": t for name, t in e["slots"].items()}

    @property
    def row_capacity(self) -> int:
        """Rows ever allocated; every live row index is below it."""
        return int(self._c.row_capacity)

    def reserve(self, rows: int) -> None:
        """Sizes the ID map for `rows` live rows at once, so a bulk load does not rehash step by step.

        A table holds at most `MAX_ROWS` (2^31 - 1) rows; more raises ValueError.
        """
        if not 0 <= rows <= MAX_ROWS:
            raise ValueError(f"HashTable.reserve: rows must be in [0, {MAX_ROWS}] (the rows of one table), got {rows}")
        self._c.reserve(rows)

    def track_evictions(self, on: bool = True) -> None:
        """Record the keys of evicted rows until `take_evicted()` (delta checkpoints need them)."""
        self._c.set_eviction_log(on)

    def take_evicted(self) -> tuple[Tensor, Tensor]:
        """(ids, tags) of the rows evicted since the last call (with `track_evictions()` on)."""
        ids, tags = self._c.take_evicted()
        return ids, tags

    def slot_names(self) -> list[str]:
        """Names of the optimizer slots, in index order."""
        return list(self._c.slot_names())

    def state_dict(self) -> dict[str, Tensor]:
        """Live rows as tensors: ids, tags, steps, freqs, embeddings and `slot.<name>` per slot."""
        return self.export()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inserts or overwrites the rows in `state` (as produced by `state_dict`), slots included.

        Slots missing from `state` are reset to their initial value for the loaded rows; unknown
        slots raise. Everything is validated before the table changes.
        """
        emb = state["embeddings"]
        if emb.dim() != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"HashTable.load_state_dict: embeddings must be (n, {self.dim}), got {tuple(emb.shape)}")
        slots = {
            k.removeprefix("slot."): v.to(torch.float32).contiguous() for k, v in state.items() if k.startswith("slot.")
        }
        self._c.assign(
            _as_ids(state["ids"], "load_state_dict"),
            state["tags"].to(torch.int32).contiguous(),
            state["steps"].to(torch.int64).contiguous(),
            state["freqs"].to(torch.int64).contiguous(),
            emb.to(torch.float32).contiguous(),
            slots,
        )

    def __repr__(self) -> str:
        return f"HashTable(dim={self.dim}, rows={len(self)}, initializer={self.initializer.kind})"


def _cpu(t: Tensor) -> Tensor:
    """int64, contiguous, on the CPU (offsets, rows and inverses for the C++ kernels)."""
    return t.to(device="cpu", dtype=torch.int64).contiguous()


def _as_ids(t: Tensor, where: str) -> Tensor:
    """int64, contiguous, on the CPU; integer dtypes widen, others are refused."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: expected an int64 tensor of IDs, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{where}: IDs must be integers (int64), got {t.dtype}")
    return t.reshape(-1).to(device="cpu", dtype=torch.int64).contiguous()
