"""Pure-torch reference implementations of the core's Ragged kernels.

They are the test oracle for the C++ kernels and the path taken wherever the core has no kernel:
CUDA tensors, tensors that require grad (these ops are differentiable), and `torch.compile`.
Each function mirrors the C++ binding of the same name: (offsets, values, weights, ...) in,
plain tensors out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _value_rows(lengths: Tensor, num_values: int) -> Tensor:
    """The row of each value: row i repeated lengths[i] times, (num_values,). Sizes as shape[0], not
    len(): torch.export keeps them dynamic."""
    rows = torch.arange(lengths.shape[0], device=lengths.device)
    return torch.repeat_interleave(rows, lengths, output_size=num_values)


def _gather_segments(values: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
    """Concatenates values[starts[i] : starts[i] + lengths[i]] over i."""
    out_offsets = torch.cumsum(lengths, 0) - lengths  # exclusive prefix sum
    total = int(lengths.sum()) if lengths.numel() else 0
    row = _value_rows(lengths, total)
    index = starts[row] + torch.arange(total, device=values.device) - out_offsets[row]
    return values.index_select(0, index)


def _offsets_from_lengths(lengths: Tensor) -> Tensor:
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return offsets


def _maybe(weights: Tensor | None, fn):  # type: ignore[no-untyped-def]
    return None if weights is None else fn(weights)


def ragged_truncate(
    offsets: Tensor, values: Tensor, weights: Tensor | None, max_len: int, keep_last: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Keeps at most `max_len` values per row: the first ones, or the last when `keep_last`."""
    if max_len < 0:
        raise ValueError(f"ragged_truncate: max_len must be >= 0, got {max_len}")
    lengths = offsets.diff()
    kept = lengths.clamp(max=max_len)
    starts = offsets[:-1] + (lengths - kept if keep_last else 0)
    gather = lambda t: _gather_segments(t, starts, kept)
    return _offsets_from_lengths(kept), gather(values), _maybe(weights, gather)


def ragged_select(
    offsets: Tensor, values: Tensor, weights: Tensor | None, rows: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gathers rows by index; negative indices count from the end."""
    num_rows = len(offsets) - 1
    bad = (rows < -num_rows) | (rows >= num_rows)
    if bool(bad.any()):
        pos = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"ragged_select: row index {int(rows[pos])} (at position {pos}) is out of range for {num_rows} rows"
        )
    rows = torch.where(rows < 0, rows + num_rows, rows)
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    gather = lambda t: _gather_segments(t, starts, lengths)
    return _offsets_from_lengths(lengths), gather(values), _maybe(weights, gather)


def _dense_slots(offsets: Tensor, num_values: int, max_len: int, keep_last: bool) -> tuple[Tensor, Tensor]:
    """Each value's cell in ragged_to_dense's (rows * max_len) layout, rows * max_len (a spare
    cell) for values cut by max_len; and each row's kept length."""
    lengths = offsets.diff()
    kept = lengths.clamp(max=max_len)
    starts = offsets[:-1] + (lengths - kept if keep_last else 0)
    row = _value_rows(lengths, num_values)
    col = torch.arange(num_values, device=offsets.device) - starts[row]
    return torch.where((col >= 0) & (col < max_len), row * max_len + col, len(kept) * max_len), kept


def ragged_to_dense(
    offsets: Tensor, values: Tensor, weights: Tensor | None, pad: Tensor, max_len: int, keep_last: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pads rows into a `[rows, max_len, *values.shape[1:]]` tensor plus a `[rows, max_len]` mask.

    `max_len < 0` means the longest row. Longer rows keep their first `max_len` values, or their
    last when `keep_last`; kept values are left-aligned.
    """
    if max_len < 0:
        lengths = offsets.diff()
        max_len = int(lengths.max()) if lengths.numel() else 0
    # Each value is copied to its cell (a spare last cell takes the values cut off), rather than
    # scattered through the mask: no data-dependent sizes, so torch.compile traces it as one graph.
    slot, kept = _dense_slots(offsets, values.shape[0], max_len, keep_last)
    mask = torch.arange(max_len, device=offsets.device) < kept[:, None]  # (B, L)
    rows = len(kept)

    def dense(t: Tensor, fill: Tensor) -> Tensor:
        out = fill.to(t.dtype).expand(rows * max_len + 1, *t.shape[1:]).index_copy(0, slot, t)
        return out[:-1].view(rows, max_len, *t.shape[1:])

    zero = torch.zeros((), device=offsets.device)
    return dense(values, pad.reshape(values.shape[1:])), mask, _maybe(weights, lambda w: dense(w, zero))


def dense_to_ragged(offsets: Tensor, dense: Tensor, keep_last: bool) -> Tensor:
    """`ragged_to_dense`'s gradient with respect to the values: each value read back from its cell
    of `dense` (rows, max_len, ...); values cut by max_len read zeros."""
    rows, max_len = dense.shape[:2]
    cells = torch.cat([dense.reshape(rows * max_len, *dense.shape[2:]), dense.new_zeros(1, *dense.shape[2:])])
    return cells[_dense_slots(offsets, int(offsets[-1]), max_len, keep_last)[0]]


def segment_softmax_pool(offsets: Tensor, scores: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax of each row's scores (N,), then the weighted sum of its values (N, D): (out (B, D),
    weights (N,)); rows without events pool to zeros. The max of each row is subtracted first (a
    constant for the gradient). Differentiable; the weights are in the scores' dtype, the sums in
    the values'."""
    b = offsets.shape[0] - 1  # shape[0], not len(): torch.export keeps it dynamic
    rows = _value_rows(offsets.diff(), values.shape[0])
    top = torch.full((b,), float("-inf"), dtype=scores.dtype, device=values.device)
    top = top.scatter_reduce(0, rows, scores.detach(), "amax")
    e = (scores - top.index_select(0, rows)).exp()
    total = torch.zeros(b, dtype=e.dtype, device=values.device).index_add(0, rows, e)
    weights = e / total.index_select(0, rows)
    pooled = weights.to(values.dtype).unsqueeze(-1) * values
    return values.new_zeros((b, *values.shape[1:])).index_add(0, rows, pooled), weights


def segment_expand(offsets: Tensor, x: Tensor, num_values: int) -> Tensor:
    """Row b of `x` (rows, ...) repeated over row b's `num_values`-long run of events: (N, ...)."""
    return x.index_select(0, _value_rows(offsets.diff(), num_values))
