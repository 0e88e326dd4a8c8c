"""`FrozenTable`: a read-only table for inference, its rows stored as float32, float16, bfloat16 or
row-wise int8.

Keys are kept sorted per logical table (`tag_offsets[t]:tag_offsets[t + 1]` of `ids` are tag t's
IDs, ascending) and found through a hash index built at load; unknown IDs read zeros and are
counted (`stats()`). int8 rows hold `q` in [-128, 127] with a `scale` and `bias` per row:
`row = q * scale + bias`, the row's minimum and maximum mapped to -128 and 127 (an error of about
scale / 2 per value); scale and bias are float16, or float32 for rows whose values exceed
float16's range.

An `EmbeddingEngine` in eval mode serves a `FrozenTable`'s features in one C++ call (`embed`:
find, widen, pool or pad in one pass); inputs that call does not take (IDs other than int64) read
the table as a `HashTable` is read (`lookup` without inserts, `pool_keys`), with the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
from torch import Tensor

from recis.core import kernels

from . import ops
from .table import Lookup, _as_ids

if TYPE_CHECKING:
    from .device_table import Table

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}


class FrozenBags(NamedTuple):
    """One feature's IDs as `FrozenTable.embed` reads them.

    `values` (int64) of logical table `tag` in bags by `offsets` (None: `bags` bags of equal
    length); each bag keeps at most `max_len` IDs (-1: all), its last ones when `keep_last`, then
    pools with `combiner` ("sum", "mean", "sqrtn", `weights` per ID when given), or its rows are
    padded to `max_len` (-1: the longest bag) with "dense", or packed with "rows".
    """

    values: Tensor
    offsets: Tensor | None
    bags: int
    weights: Tensor | None
    tag: int
    combiner: str
    max_len: int = -1
    keep_last: bool = False


def quantize_rows(rows: Tensor, dtype: str) -> dict[str, Tensor]:
    """float32 rows (N, D) as stored for `dtype` ("fp32", "fp16", "bf16" or "int8"): {"rows": ...}
    plus, for int8, per-row "scale" and "bias" (float16 when every one fits it, else float32).

    Examples:
        >>> q = quantize_rows(torch.tensor([[0.0, 1.0, 0.5]]), "int8")
        >>> q["rows"].tolist(), round(float(dequantize_rows(**q)[0, 2]), 3)
        ([[-128, 127, -1]], 0.498)
    """
    if dtype not in DTYPES:
        raise ValueError(f"quantize_rows: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    rows = rows.float()
    if dtype != "int8":
        return {"rows": rows.to(DTYPES[dtype])}
    low = rows.amin(1) if len(rows) else torch.zeros(0)
    high = rows.amax(1) if len(rows) else torch.zeros(0)
    scale = (high - low) / 255.0
    bias = low + 128.0 * scale
    if bool(torch.isfinite(scale.half()).all() and torch.isfinite(bias.half()).all()):
        scale, bias = scale.half(), bias.half()  # 4 bytes a row instead of 8; q is rounded against these
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    q = torch.round((rows - bias.float()[:, None]) / safe[:, None]).clamp_(-128, 127).to(torch.int8)
    return {"rows": q, "scale": scale, "bias": bias}


def dequantize_rows(rows: Tensor, scale: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """Stored rows back to float32 (int8: `q * scale + bias` per row)."""
    if rows.dtype != torch.int8:
        return rows.float()
    if scale is None or bias is None:
        raise ValueError("dequantize_rows: int8 rows need their scale and bias")
    return rows.float() * scale[:, None] + bias[:, None]


class FrozenTable:
    """Rows of a trained table, read-only, for inference.

    Args:
        ids: (N,) int64 IDs, ascending within each logical table.
        tag_offsets: (T + 1,) int64: the IDs of logical table t are `ids[tag_offsets[t]:tag_offsets[t + 1]]`.
        rows: (N, D) float32, float16, bfloat16 or int8.
        tag_names: the logical tables' names, in tag order.
        scale: (N,) per-row scale of int8 rows (float16 or float32).
        bias: (N,) per-row bias of int8 rows (float16 or float32).

    Examples:
        >>> t = FrozenTable.from_rows(torch.tensor([5, 2]), torch.tensor([0, 0]), torch.eye(2), ["items"])
        >>> t.lookup(torch.tensor([2, 7]), insert=False).embeddings.tolist(), t.stats()["unknown"]
        ([[0.0, 1.0], [0.0, 0.0]], 1)
    """

    def __init__(
        self,
        ids: Tensor,
        tag_offsets: Tensor,
        rows: Tensor,
        tag_names: Sequence[str],
        scale: Tensor | None = None,
        bias: Tensor | None = None,
    ):
        n = len(ids)
        if rows.dim() != 2 or len(rows) != n or rows.dtype not in DTYPES.values():
            got = f"{rows.dtype} {tuple(rows.shape)}"
            raise ValueError(f"FrozenTable: rows must be ({n}, D) of float32, float16, bfloat16 or int8, got {got}")
        if len(tag_offsets) != len(tag_names) + 1 or int(tag_offsets[0]) != 0 or int(tag_offsets[-1]) != n:
            raise ValueError(f"FrozenTable: tag_offsets must run from 0 to {n} over {len(tag_names)} logical tables")
        if bool((tag_offsets.diff() < 0).any()):
            raise ValueError("FrozenTable: tag_offsets must not decrease")
        for t in range(len(tag_names)):
            part = ids[int(tag_offsets[t]) : int(tag_offsets[t + 1])]
            if len(part) > 1 and not bool((part.diff() > 0).all()):
                raise ValueError(f"FrozenTable: the IDs of logical table {tag_names[t]!r} must ascend without repeats")
        if rows.dtype == torch.int8 and (scale is None or bias is None or len(scale) != n or len(bias) != n):
            raise ValueError(f"FrozenTable: int8 rows need a scale and a bias of {n} entries")
        self.ids, self.tag_offsets = ids.to(torch.int64).contiguous(), tag_offsets.to(torch.int64)
        self.rows, self.scale, self.bias = rows, scale, bias
        self.tag_names = list(tag_names)
        self.counters = {"lookups": 0, "unknown": 0}
        self.index = cast(Tensor, kernels.embedding.frozen_index(self.ids, self.tag_offsets))  # slots -> positions

    @classmethod
    def from_rows(
        cls, ids: Tensor, tags: Tensor, embeddings: Tensor, tag_names: Sequence[str], dtype: str = "fp32"
    ) -> FrozenTable:
        """From a table's exported rows (`HashTable.state_dict()`'s ids, tags and embeddings), sorted
        and stored as `dtype`."""
        order = torch.argsort(ids, stable=True)
        order = order[torch.argsort(tags[order].to(torch.int64), stable=True)]
        counts = torch.bincount(tags.to(torch.int64), minlength=len(tag_names))[: len(tag_names)]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        return cls(ids[order], offsets, **quantize_rows(embeddings[order], dtype), tag_names=tag_names)

    @classmethod
    def from_table(cls, table: Table, dtype: str = "fp32") -> FrozenTable:
        """A frozen copy of a training table's live rows, stored as `dtype`."""
        state = table.state_dict()
        return cls.from_rows(state["ids"], state["tags"], state["embeddings"], table.tag_names, dtype)

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.rows.dtype

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        extra = 0 if self.scale is None or self.bias is None else self.scale.nbytes + self.bias.nbytes
        return self.ids.nbytes + self.rows.nbytes + extra

    def stats(self) -> dict[str, int]:
        """Keys looked up and keys not found (they read zeros) since the table was loaded."""
        return dict(self.counters)

    def add_logical_table(self, name: str) -> int:
        """The tag of logical table `name` (it must be one of this table's)."""
        if name not in self.tag_names:
            raise ValueError(f"FrozenTable: no logical table {name!r} (has {self.tag_names})")
        return self.tag_names.index(name)

    def find(self, ids: Sequence[Tensor], tags: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The keys (`ids[k]` of logical table `tags[k]`) found through the table's hash index, in one C++ call:
        (distinct rows, -1 for unknown keys; each key's index among them)."""
        parts = [_as_ids(t, "FrozenTable") for t in ids]
        for tag in tags:
            if not 0 <= tag < len(self.tag_names):
                raise ValueError(f"FrozenTable: tag {tag} is not one of the {len(self.tag_names)} logical tables")
        found = kernels.embedding.frozen_lookup(self.ids, self.tag_offsets, self.index, parts, list(tags))
        unique, inverse, unknown = found
        self.counters["lookups"] += len(inverse)
        self.counters["unknown"] += unknown
        return unique, inverse

    def gather(self, rows: Tensor) -> Tensor:
        """float32 rows (n, D); row -1 reads zeros."""
        if len(self.rows) == 0:  # every key is unknown
            return torch.zeros(len(rows), self.dim)
        at = rows.clamp(min=0)
        scale = None if self.scale is None else self.scale.index_select(0, at)
        bias = None if self.bias is None else self.bias.index_select(0, at)
        out = dequantize_rows(self.rows.index_select(0, at), scale, bias)
        missing = rows < 0
        return out.masked_fill_(missing[:, None], 0.0) if bool(missing.any()) else out

    def lookup(
        self,
        ids: Tensor | Sequence[Tensor],
        step: int = 0,
        insert: bool = False,
        tags: Sequence[int] | None = None,
        gather: bool = True,
    ) -> Lookup:
        """As `HashTable.lookup` with `insert=False` (a frozen table never inserts)."""
        if insert:
            raise ValueError("FrozenTable.lookup: the table is read-only (put the model in eval mode)")
        parts = [ids] if isinstance(ids, Tensor) else list(ids)
        unique, inverse = self.find(parts, [0] * len(parts) if tags is None else list(tags))
        return Lookup(unique, inverse, self.gather(unique) if gather else None)

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
        """As `HashTable.pool_keys`: bag b pools the rows of keys `offsets[b]:offsets[b + 1]`."""
        found = self.lookup(list(ids), tags=tags)
        assert found.embeddings is not None
        combiners, runs = ops._runs(combiner, runs, offsets)
        out = torch.empty(len(offsets) - 1, self.dim)
        w = None if weights is None else weights.to(torch.float32).contiguous()
        kernels.embedding.pooled_forward(found.embeddings, found.inverse, offsets.contiguous(), w, combiners, runs, out)
        return ops.batch_major(out, runs) if batch_major else out

    def embed(self, bags: Sequence[FrozenBags]) -> list[tuple[Tensor, Tensor | None, Tensor | None]]:
        """Serving's whole lookup of this table in one C++ call (`kernels.embedding.frozen_embed`):
        each feature's IDs found, their rows widened to float32 and pooled, or padded, with no
        de-duplication and no intermediate (U, D) rows. Per feature: (out, None, None) pooled,
        (values (B, L, D), mask (B, L), weights (B, L) or None) dense, or (rows (N, D), offsets
        (B + 1,), weights (N,) or None) packed; `frozen_embed_reference` is its pure-torch twin."""
        found = kernels.embedding.frozen_embed(
            self.ids,
            self.tag_offsets,
            self.index,
            self.rows,
            self.scale,
            self.bias,
            [b.values for b in bags],
            [b.offsets for b in bags],
            [b.bags for b in bags],
            [b.weights for b in bags],
            [b.tag for b in bags],
            [b.combiner for b in bags],
            [b.max_len for b in bags],
            [b.keep_last for b in bags],
        )
        outs, looked_up, unknown = cast(tuple[list[tuple[Tensor, Tensor | None, Tensor | None]], int, int], found)
        self.counters["lookups"] += looked_up
        self.counters["unknown"] += unknown
        return outs

    def __repr__(self) -> str:
        return f"FrozenTable(rows={len(self)}, dim={self.dim}, dtype={self.dtype}, logical={self.tag_names})"


def frozen_embed_reference(
    table: FrozenTable, bags: Sequence[FrozenBags]
) -> list[tuple[Tensor, Tensor | None, Tensor | None]]:
    """`FrozenTable.embed` in torch ops (keys found by binary search over each logical table's
    sorted IDs): the kernel's test oracle. Does not count lookups."""
    from recis.core import reference

    rows = dequantize_rows(table.rows, table.scale, table.bias)
    out: list[tuple[Tensor, Tensor | None, Tensor | None]] = []
    for b in bags:
        if not 0 <= b.tag < len(table.tag_names):
            raise ValueError(f"frozen_embed_reference: tag {b.tag} is not one of the table's logical tables")
        lo, hi = int(table.tag_offsets[b.tag]), int(table.tag_offsets[b.tag + 1])
        keys = table.ids[lo:hi]
        at = torch.searchsorted(keys, b.values).clamp(max=max(len(keys) - 1, 0))
        hit = keys[at] == b.values if len(keys) else torch.zeros(len(b.values), dtype=torch.bool)
        emb = torch.where(hit[:, None], rows[lo:hi][at] if len(keys) else 0.0, torch.zeros(1, table.dim))
        offsets = b.offsets
        if offsets is None:
            step = len(b.values) // b.bags if b.bags else 0
            offsets = torch.arange(b.bags + 1) * step
        weights = b.weights
        if b.max_len >= 0:
            offsets, cut, weights = reference.ragged_truncate(
                offsets, torch.arange(len(b.values)), weights, b.max_len, b.keep_last
            )
            emb = emb[cut]
        if b.combiner == "rows":
            out.append((emb, offsets, weights))
            continue
        if b.combiner != "dense":
            pooled = ops.pooled_embedding_reference(emb, torch.arange(len(emb)), offsets, weights, b.combiner)
            out.append((pooled, None, None))
            continue
        values, mask, dense_w = reference.ragged_to_dense(
            offsets, emb, weights, torch.zeros(table.dim), b.max_len, False
        )
        out.append((values, mask, dense_w))
    return out
