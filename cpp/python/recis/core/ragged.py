"""`Ragged`: the CSR batch type every RecIS layer passes around.

A Ragged is `values` (a tensor whose first dimension is split into rows, or a nested Ragged for
list-of-list columns), `offsets` (int64, rows + 1, starting at 0) and optional per-value `weights`.
The heavy operations run as C++ kernels on CPU tensors and fall back to the pure-torch reference
(`recis.core.reference`) on other devices, inside `torch.compile`, and under autograd where a
kernel has no C++ backward (`to_dense`, `softmax_pool` and `broadcast_rows` have one).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Union

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

from . import kernels, reference

Values = Union[Tensor, "Ragged"]


class Padded(NamedTuple):
    """Result of `Ragged.to_dense`: `values` (B, L, ...), `mask` (B, L) bool, `weights` (B, L) or None."""

    values: Tensor
    mask: Tensor
    weights: Tensor | None


def _use_kernel(*tensors: Tensor | None, differentiable: bool = False) -> bool:
    """True when the C++ core can serve these tensors: CPU tensors, not being compiled or exported
    (no fake tensors), and no autograd unless the kernel has its backward (`differentiable`)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    grad = torch.is_grad_enabled() and not differentiable
    return all(
        t is None or (t.device.type == "cpu" and not is_fake(t) and not (grad and t.requires_grad)) for t in tensors
    )


class _ToDense(torch.autograd.Function):
    """The C++ ragged_to_dense; its backward reads each value's gradient back from its cell
    (`dense_to_ragged`), zeros for values cut by max_len."""

    @staticmethod
    def forward(
        ctx: Any, offsets: Tensor, values: Tensor, weights: Tensor | None, pad: Tensor, max_len: int, keep_last: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        dense, mask, dense_weights = kernels.common.ragged_to_dense(
            offsets, values.contiguous(), _contig(weights), pad.reshape(-1), max_len, keep_last
        )
        ctx.save_for_backward(offsets)
        ctx.keep_last = keep_last
        ctx.mark_non_differentiable(mask)
        return dense, mask, dense_weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor | None, _mask: None, grad_weights: Tensor | None) -> tuple[Tensor | None, ...]:
        (offsets,) = ctx.saved_tensors

        def back(g: Tensor | None, wanted: bool) -> Tensor | None:
            if g is None or not wanted:
                return None
            return kernels.common.dense_to_ragged(offsets, g.contiguous().flatten(0, 1), g.shape[1], ctx.keep_last)

        return None, back(grad, ctx.needs_input_grad[1]), back(grad_weights, ctx.needs_input_grad[2]), None, None, None


class _SoftmaxPool(torch.autograd.Function):
    """The C++ segment_softmax_pool and its backward kernel (float32 CPU tensors)."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, values: Tensor, offsets: Tensor) -> Tensor:
        out, weights = kernels.common.segment_softmax_pool(offsets, scores, values)
        ctx.save_for_backward(offsets, weights, values)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:
        offsets, weights, values = ctx.saved_tensors
        grad_scores, grad_values = kernels.common.segment_softmax_pool_backward(
            offsets, grad_out.contiguous(), weights, values
        )
        return grad_scores, grad_values, None


def softmax_pool(values: Ragged, scores: Tensor) -> Tensor:
    """Attention pooling of each row's values: the softmax of the row's `scores` (N,), one per value,
    weights the sum of its values (N, D). Returns (rows, D); rows without values give zeros.

    Differentiable in `scores` and `values`. Float32 CPU tensors take one C++ pass per row forward
    and backward (no per-value index arrays); other dtypes and devices, torch.compile and
    torch.export take the pure-torch twin (`reference.segment_softmax_pool`).

    Examples:
        >>> r = Ragged.from_lengths(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]), [2, 0, 1])
        >>> softmax_pool(r, torch.tensor([0.0, 0.0, 3.0])).tolist()
        [[0.5, 0.5], [0.0, 0.0], [5.0, 5.0]]
    """
    v = values.values
    if not isinstance(v, Tensor) or v.dim() != 2 or scores.shape != v.shape[:1]:
        got = f"{_describe(v)} and {_describe(scores)}"
        raise ValueError(f"softmax_pool: expected (N, D) values and (N,) scores, got {got}")
    if values.weights is not None:
        raise ValueError("softmax_pool: the values carry weights; the scores are the weights here")
    if v.dtype == scores.dtype == torch.float32 and _use_kernel(v, scores, values.offsets, differentiable=True):
        return _SoftmaxPool.apply(scores.contiguous(), v.contiguous(), values.offsets.contiguous())
    return reference.segment_softmax_pool(values.offsets, scores, v)[0]


class _BroadcastRows(torch.autograd.Function):
    """The C++ segment_expand, with segment_sum (each row's gradients summed) as its backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, offsets: Tensor, num_values: int) -> Tensor:
        ctx.save_for_backward(offsets)
        return kernels.common.segment_expand(offsets, x, num_values)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (offsets,) = ctx.saved_tensors
        return kernels.common.segment_sum(offsets, grad.contiguous()), None, None


def broadcast_rows(x: Tensor, like: Ragged) -> Tensor:
    """Row b of `x` (rows, D) repeated for each value of row b of `like`: (N, D), aligned with
    `like.values`, e.g. a per-user vector next to each of the user's events.

    Differentiable; the gradient sums each row's events. Float32 CPU tensors take C++ copies forward
    and a per-row sum backward (no `index_add`); other dtypes and devices, torch.compile and
    torch.export take `reference.segment_expand` (an `index_select`).

    Examples:
        >>> events = Ragged.from_lengths(torch.zeros(3), [2, 0, 1])
        >>> broadcast_rows(torch.tensor([[1.0], [2.0], [3.0]]), events).tolist()
        [[1.0], [1.0], [3.0]]
    """
    # shape[0], not len(): torch.export keeps the number of events dynamic then
    n = like.values.shape[0] if isinstance(like.values, Tensor) else like.num_values
    if x.dim() != 2 or x.shape[0] != like.offsets.shape[0] - 1:
        raise ValueError(f"broadcast_rows: expected ({like.offsets.shape[0] - 1}, D) rows, got {_describe(x)}")
    if x.dtype == torch.float32 and _use_kernel(x, like.offsets, differentiable=True):
        return _BroadcastRows.apply(x.contiguous(), like.offsets.contiguous(), n)
    return reference.segment_expand(like.offsets, x, n)


def _side_keeps_last(side: str, op: str) -> bool:
    if side not in ("left", "right"):
        raise ValueError(f"Ragged.{op}: side must be 'left' or 'right', got {side!r}")
    return side == "left"


class Ragged:
    """A batch of variable-length rows in CSR layout.

    Row `i` holds `values[offsets[i]:offsets[i + 1]]` (and the same slice of `weights`).

    Args:
        values: 1-D (or N-D, rows of the first dimension) tensor, or a nested Ragged whose rows
            are the values here (list-of-list columns).
        offsets: int64 tensor of length rows + 1; starts at 0, never decreases, ends at len(values).
            int32 offsets (Arrow's) are widened.
        weights: optional floating tensor with one weight per value.
        validate: check the invariants above (default); pass False only for offsets you built.

    Examples:
        >>> import torch
        >>> from recis.core import Ragged
        >>> r = Ragged(torch.tensor([1, 2, 3, 4]), torch.tensor([0, 3, 3, 4]))
        >>> r.lengths().tolist(), r[0].tolist(), r[1].tolist()
        ([3, 0, 1], [1, 2, 3], [])
        >>> r.truncate(2, side="left").tolist()
        [[2, 3], [], [4]]
        >>> r.to_dense(pad_value=-1).values.tolist()
        [[1, 2, 3], [-1, -1, -1], [4, -1, -1]]
    """

    __slots__ = ("offsets", "values", "weights")

    def __init__(self, values: Values, offsets: Tensor, weights: Tensor | None = None, *, validate: bool = True):
        if validate:
            values, offsets, weights = _checked(values, offsets, weights)
        self.values = values
        self.offsets = offsets
        self.weights = weights

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_lengths(cls, values: Values, lengths: Tensor | Sequence[int], weights: Tensor | None = None) -> Ragged:
        """Builds a Ragged from per-row lengths (non-negative, summing to len(values)).

        Examples:
            >>> Ragged.from_lengths(torch.arange(3), [2, 0, 1]).tolist()
            [[0, 1], [], [2]]
        """
        device = values.device
        if not isinstance(lengths, Tensor):
            lengths = torch.tensor(list(lengths), dtype=torch.int64)
        lengths = lengths.to(device)
        if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"Ragged.from_lengths: lengths must be a 1-D integer tensor, got {_describe(lengths)}")
        if len(lengths) and bool((lengths < 0).any()):
            raise ValueError(f"Ragged.from_lengths: lengths must be >= 0, got {lengths.min().item()}")
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=device)
        torch.cumsum(lengths, 0, out=offsets[1:])
        if int(offsets[-1]) != len(values):
            raise ValueError(
                f"Ragged.from_lengths: lengths sum to {int(offsets[-1])} but there are {len(values)} values"
            )
        return cls(values, offsets, weights)

    @classmethod
    def from_list(
        cls, rows: Sequence[Any], dtype: torch.dtype | None = None, weights: Sequence[Sequence[float]] | None = None
    ) -> Ragged:
        """Builds a Ragged from Python lists; lists of lists of lists give a nested Ragged.

        Args:
            rows: one list per row (of scalars, or of lists for a nested Ragged).
            dtype: values dtype; inferred by `torch.tensor` when None (int64 for empty input).
            weights: optional, same shape as `rows` (outer level only).

        Examples:
            >>> Ragged.from_list([[1, 2], [3]]).lengths().tolist()
            [2, 1]
            >>> Ragged.from_list([[[1], [2, 3]], []]).values.tolist()
            [[1], [2, 3]]
        """
        try:
            rows = [list(r) for r in rows]
        except TypeError as e:
            raise TypeError(f"Ragged.from_list: every row must be a list, got {rows!r:.80}") from e
        lengths = [len(r) for r in rows]
        flat = [v for r in rows for v in r]
        values: Values
        nested = [isinstance(v, (list, tuple)) for v in flat]
        if any(nested) and not all(nested):
            raise TypeError("Ragged.from_list: rows mix lists and scalars at the same depth")
        if any(nested):
            values = cls.from_list(flat, dtype=dtype)
        else:
            values = torch.tensor(flat, dtype=dtype if dtype is not None or flat else torch.int64)
        w = None
        if weights is not None:
            if [len(r) for r in weights] != lengths:
                raise ValueError("Ragged.from_list: weights must have the same row lengths as rows")
            w = torch.tensor([x for r in weights for x in r], dtype=torch.float32)
        return cls.from_lengths(values, lengths, w)

    def with_values(self, values: Values) -> Ragged:
        """Same rows, new values (e.g. hashed IDs); values must have the same length."""
        return Ragged(values, self.offsets, self.weights)

    # ---- shape ---------------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_values(self) -> int:
        return len(self.values)

    def __len__(self) -> int:
        return self.num_rows

    def lengths(self) -> Tensor:
        """Values per row, int64 (B,)."""
        return self.offsets.diff()

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the innermost values."""
        return self.values.dtype

    def tolist(self) -> list[Any]:
        values = self.values.tolist()
        bounds = self.offsets.tolist()
        return [values[bounds[i] : bounds[i + 1]] for i in range(self.num_rows)]

    def __repr__(self) -> str:
        w = "" if self.weights is None else ", weighted"
        return f"Ragged(rows={self.num_rows}, values={self.num_values}, dtype={self.dtype}, device={self.device}{w})"

    # ---- row operations ------------------------------------------------------------------------

    def __getitem__(self, index: int | slice | Tensor | Sequence[int]) -> Values:
        """`r[i]` is row i's values; `r[a:b]` a zero-copy Ragged; `r[index_tensor or bool_mask]` a copy."""
        if not isinstance(index, (slice, list, tuple)) and (not isinstance(index, Tensor) or index.dim() == 0):
            index = operator.index(index)  # type: ignore[arg-type]  # ints, numpy ints, 0-d integer tensors
            i = index + self.num_rows if index < 0 else index
            if not 0 <= i < self.num_rows:
                raise IndexError(f"Ragged: row {index} is out of range for {self.num_rows} rows")
            lo, hi = self.offsets[i : i + 2].tolist()
            return self.values[lo:hi]
        if isinstance(index, slice):
            start, stop, step = index.indices(self.num_rows)
            if step == 1:
                return self._slice(start, max(start, stop))
            index = torch.arange(start, stop, step)
        if not isinstance(index, Tensor):
            index = list(index)
            dtype = torch.bool if index and all(isinstance(i, bool) for i in index) else torch.int64
            index = torch.tensor(index, dtype=dtype)
        return self.select(index)

    def _slice(self, start: int, stop: int) -> Ragged:
        lo, hi = self.offsets[[start, stop]].tolist()
        offsets = self.offsets[start : stop + 1] - lo
        w = None if self.weights is None else self.weights[lo:hi]
        return Ragged(self.values[lo:hi], offsets, w, validate=False)

    def select(self, rows: Tensor) -> Ragged:
        """Gathers rows by int64 index (negative from the end) or by a bool mask over rows.

        Examples:
            >>> Ragged.from_list([[1], [2, 3], [4]]).select(torch.tensor([2, 0])).tolist()
            [[4], [1]]
        """
        if rows.dtype == torch.bool:
            if rows.shape != (self.num_rows,):
                raise ValueError(
                    f"Ragged.select: bool mask must have shape ({self.num_rows},), got {tuple(rows.shape)}"
                )
            rows = rows.nonzero().flatten()
        if rows.dim() != 1 or rows.dtype.is_floating_point:
            raise TypeError(f"Ragged.select: rows must be a 1-D integer tensor, got {_describe(rows)}")
        rows = rows.to(device=self.device, dtype=torch.int64)
        return self._restructure("select", rows)

    def truncate(self, max_len: int, side: str = "right") -> Ragged:
        """Keeps at most `max_len` values per row, dropping the excess from `side`.

        `side="right"` keeps each row's first values; `side="left"` keeps its last ones (the most
        recent events of a behaviour sequence stored oldest first), as in Hugging Face's
        `truncation_side`.
        """
        keep_last = _side_keeps_last(side, "truncate")
        if max_len < 0:
            raise ValueError(f"Ragged.truncate: max_len must be >= 0, got {max_len}")
        return self._restructure("truncate", max_len, keep_last)

    def _restructure(self, op: str, *args: Any) -> Ragged:
        if isinstance(self.values, Ragged):
            # Restructure the row indices of the inner level, then gather those inner rows.
            index = Ragged(
                torch.arange(self.num_values, device=self.device), self.offsets, self.weights, validate=False
            )
            index = index._restructure(op, *args)
            rows = index.values
            assert isinstance(rows, Tensor)
            return Ragged(self.values.select(rows), index.offsets, index.weights, validate=False)
        if _use_kernel(self.values, self.offsets, self.weights):
            kernel = kernels.common.ragged_select if op == "select" else kernels.common.ragged_truncate
            offsets, values, weights = kernel(self.offsets, self.values.contiguous(), _contig(self.weights), *args)
        else:
            ref = reference.ragged_select if op == "select" else reference.ragged_truncate
            offsets, values, weights = ref(self.offsets, self.values, self.weights, *args)
        return Ragged(values, offsets, weights, validate=False)

    def to_dense(self, pad_value: float | int | bool = 0, max_len: int | None = None, side: str = "right") -> Padded:
        """Pads rows into a dense tensor.

        Args:
            pad_value: fill for missing positions (weights are padded with 0).
            max_len: width L; the longest row when None. Longer rows are cut from `side`.
            side: "right" keeps each row's first values, "left" its last ones.

        Returns:
            `Padded(values (B, L, ...), mask (B, L) bool, weights (B, L) or None)`; kept values are
            left-aligned. A nested Ragged gives values (B, L1, L2) and a mask of the same shape.

        Differentiable in values and weights; on CPU forward and backward are C++ passes (each
        value's gradient read back from its cell, 0 for values cut off).
        """
        keep_last = _side_keeps_last(side, "to_dense")
        if max_len is not None and max_len < 0:
            raise ValueError(f"Ragged.to_dense: max_len must be >= 0 or None, got {max_len}")
        if isinstance(self.values, Ragged):
            # Inner weights are not densified; the outer ones are, as (B, L1).
            inner = self.values.to_dense(pad_value)
            outer = Ragged(
                torch.arange(self.num_values, device=self.device), self.offsets, self.weights, validate=False
            )
            idx = outer.to_dense(0, max_len, side)
            if self.num_values == 0:  # no inner rows to index: all padding
                shape = (*idx.values.shape, *inner.values.shape[1:])
                values = torch.full(shape, pad_value, dtype=inner.values.dtype, device=self.device)
                return Padded(values, torch.zeros(shape[:3], dtype=torch.bool, device=self.device), idx.weights)
            values = inner.values[idx.values]  # (B, L1, L2, ...)
            mask = inner.mask[idx.values] & idx.mask[..., None]  # (B, L1, L2)
            fill = mask.reshape(*mask.shape, *([1] * (values.dim() - mask.dim())))
            return Padded(values.masked_fill(~fill, pad_value), mask, idx.weights)
        length = -1 if max_len is None else max_len
        pad = torch.full(self.values.shape[1:], pad_value, dtype=self.values.dtype, device=self.device)
        if _use_kernel(self.values, self.offsets, self.weights, differentiable=True):
            return Padded(*_ToDense.apply(self.offsets, self.values, self.weights, pad, length, keep_last))
        return Padded(*reference.ragged_to_dense(self.offsets, self.values, self.weights, pad, length, keep_last))

    @staticmethod
    def cat(raggeds: Iterable[Ragged]) -> Ragged:
        """Stacks the rows of several Raggeds (same dtype, device and weightedness).

        Examples:
            >>> Ragged.cat([Ragged.from_list([[1]]), Ragged.from_list([[2, 3]])]).tolist()
            [[1], [2, 3]]
        """
        parts = list(raggeds)
        if not parts:
            raise ValueError("Ragged.cat: expected at least one Ragged")
        if len({p.weights is None for p in parts}) > 1:
            raise ValueError("Ragged.cat: either all parts have weights or none")
        kinds = {(p.dtype, p.device) for p in parts}
        if len(kinds) > 1:
            raise ValueError(f"Ragged.cat: parts must share dtype and device, got {sorted(map(str, kinds))}")
        shifts = torch.tensor([0] + [p.num_values for p in parts[:-1]], device=parts[0].device).cumsum(0)
        offsets = torch.cat([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)])
        nested = [p.values for p in parts if isinstance(p.values, Ragged)]
        flat = [p.values for p in parts if isinstance(p.values, Tensor)]
        if nested and flat:
            raise ValueError("Ragged.cat: cannot mix nested and flat Raggeds")
        values = Ragged.cat(nested) if nested else torch.cat(flat)
        weights = [p.weights for p in parts if p.weights is not None]
        return Ragged(values, offsets, torch.cat(weights) if weights else None, validate=False)

    # ---- devices -------------------------------------------------------------------------------

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Ragged:
        """Moves values, offsets and weights to `device` (dtypes never change)."""
        device = torch.device(device)  # refuses dtypes and other non-devices
        move = lambda t: t.to(device, non_blocking=non_blocking)
        w = None if self.weights is None else move(self.weights)
        return Ragged(move(self.values), move(self.offsets), w, validate=False)

    def pin_memory(self) -> Ragged:
        """Copies into page-locked memory so a later `.to("cuda", non_blocking=True)` is asynchronous."""
        w = None if self.weights is None else self.weights.pin_memory()
        return Ragged(self.values.pin_memory(), self.offsets.pin_memory(), w, validate=False)


def _contig(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _describe(t: Any) -> str:
    if isinstance(t, Tensor):
        return f"tensor of dtype {t.dtype} and shape {tuple(t.shape)}"
    return type(t).__name__


def _checked(values: Values, offsets: Tensor, weights: Tensor | None) -> tuple[Values, Tensor, Tensor | None]:
    if not isinstance(values, (Tensor, Ragged)):
        raise TypeError(f"Ragged: values must be a tensor or a Ragged, got {_describe(values)}")
    if isinstance(values, Tensor) and values.dim() == 0:
        raise ValueError("Ragged: values must have at least one dimension, got a scalar tensor")
    if not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"Ragged: offsets must be a 1-D int64 tensor, got {_describe(offsets)}")
    offsets = offsets.to(torch.int64)
    if values.device != offsets.device:
        raise ValueError(f"Ragged: values are on {values.device} but offsets on {offsets.device}")
    if len(offsets) == 0:
        raise ValueError("Ragged: offsets must have at least one element (rows + 1)")
    if weights is not None:
        if not isinstance(weights, Tensor) or weights.dim() != 1 or not weights.dtype.is_floating_point:
            raise TypeError(f"Ragged: weights must be a 1-D floating tensor, got {_describe(weights)}")
        if len(weights) != len(values):
            raise ValueError(f"Ragged: weights must have one entry per value ({len(values)}), got {len(weights)}")
        if weights.device != offsets.device:
            raise ValueError(f"Ragged: weights are on {weights.device} but offsets on {offsets.device}")
    if offsets.device.type == "cpu" and not torch.compiler.is_compiling():
        kernels.common.validate_offsets(offsets.contiguous(), len(values))
    else:
        _validate_offsets_torch(offsets, len(values))
    return values, offsets, weights


def _validate_offsets_torch(offsets: Tensor, num_values: int) -> None:
    if int(offsets[0]) != 0:
        raise ValueError(f"Ragged: offsets[0] must be 0, got {int(offsets[0])}")
    steps = offsets.diff()
    if len(steps) and bool((steps < 0).any()):
        i = int((steps < 0).nonzero()[0, 0])
        raise ValueError(
            f"Ragged: offsets must be non-decreasing, got offsets[{i}]={int(offsets[i])} > "
            f"offsets[{i + 1}]={int(offsets[i + 1])}"
        )
    if int(offsets[-1]) != num_values:
        raise ValueError(
            f"Ragged: last offset must equal the number of values {num_values}, got offsets[{len(offsets) - 1}]="
            f"{int(offsets[-1])}"
        )


def _flatten(r: Ragged) -> tuple[list[Any], None]:
    return [r.values, r.offsets, r.weights], None


def _flatten_with_keys(r: Ragged) -> tuple[list[tuple[Any, Any]], None]:
    keys = (pytree.GetAttrKey("values"), pytree.GetAttrKey("offsets"), pytree.GetAttrKey("weights"))
    return list(zip(keys, [r.values, r.offsets, r.weights], strict=True)), None


def _unflatten(children: Iterable[Any], context: None) -> Ragged:
    values, offsets, weights = children
    return Ragged(values, offsets, weights, validate=False)


pytree.register_pytree_node(
    Ragged,
    _flatten,
    _unflatten,
    serialized_type_name="recis.core.Ragged",
    flatten_with_keys_fn=_flatten_with_keys,
)
