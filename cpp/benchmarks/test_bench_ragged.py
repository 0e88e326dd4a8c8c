"""pytest-benchmark: Ragged kernels vs the pure-torch reference, one group per op (`make bench`)."""

import pytest
import torch

from recis.core import Ragged, broadcast_rows, reference, softmax_pool


def _batch(rows: int, min_len: int, max_len: int, seed: int) -> Ragged:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (rows,), generator=g)
    return Ragged.from_lengths(torch.randint(-(2**62), 2**62, (int(lengths.sum()),), generator=g), lengths)


SEQ = _batch(4096, 0, 400, seed=0)  # behaviour sequences
MULTI = _batch(4096, 1, 5, seed=1)  # multi-hot ID lists
PERM = torch.randperm(4096, generator=torch.Generator().manual_seed(2))
PAD = torch.zeros((), dtype=torch.int64)
IMPLS = pytest.mark.parametrize("impl", ["baseline", "ours"])  # one benchmark group per op and shape


@IMPLS
def test_truncate(benchmark, impl):
    benchmark.group = "ragged truncate(50, left), B=4096, 0-400 IDs/row"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(reference.ragged_truncate, SEQ.offsets, SEQ.values, None, 50, True)[1]
    else:
        out = benchmark(SEQ.truncate, 50, "left").values
    assert len(out) == int(SEQ.lengths().clamp(max=50).sum())


@IMPLS
def test_to_dense(benchmark, impl):
    benchmark.group = "ragged to_dense(100), B=4096, 0-400 IDs/row"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(reference.ragged_to_dense, SEQ.offsets, SEQ.values, None, PAD, 100, True)[0]
    else:
        out = benchmark(SEQ.to_dense, 0, 100, "left").values
    assert out.shape == (4096, 100)


@IMPLS
def test_select(benchmark, impl):
    benchmark.group = "ragged select(permutation), B=4096, 1-5 IDs/row"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(reference.ragged_select, MULTI.offsets, MULTI.values, None, PERM)[1]
    else:
        out = benchmark(MULTI.select, PERM).values
    assert len(out) == MULTI.num_values


def _attention_batch(rows: int, max_len: int, seed: int) -> tuple[Ragged, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (rows,), generator=g)
    n = int(lengths.sum())
    values = torch.randn(n, 16, generator=g).requires_grad_()
    return Ragged.from_lengths(values, lengths), torch.randn(n, generator=g).requires_grad_()


ATTENTION = {
    "B=512, 0-21 events/row": _attention_batch(512, 21, 3),
    "B=16, 0-2000 events/row": _attention_batch(16, 2000, 4),
}
ON_ATTENTION = pytest.mark.parametrize("shape", list(ATTENTION))


@ON_ATTENTION
@IMPLS
def test_softmax_pool(benchmark, impl, shape):
    benchmark.group = f"softmax_pool forward + backward, D=16, {shape}"
    benchmark.extra_info["role"] = impl
    values, scores = ATTENTION[shape]
    inputs = (scores, values.values)

    def step() -> tuple[torch.Tensor, ...]:
        if impl == "baseline":
            out = reference.segment_softmax_pool(values.offsets, scores, values.values)[0]
        else:
            out = softmax_pool(values, scores)
        return torch.autograd.grad(out.sum(), inputs)

    grad_scores, grad_values = benchmark(step)
    assert grad_values.shape == values.values.shape and grad_scores.shape == scores.shape


@ON_ATTENTION
@IMPLS
def test_broadcast_rows(benchmark, impl, shape):
    benchmark.group = f"broadcast_rows forward + backward, (B, 32) rows onto events, {shape}"
    benchmark.extra_info["role"] = impl
    events, _ = ATTENTION[shape]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(events.num_rows, 32, generator=g).requires_grad_()
    upstream = torch.randn(events.num_values, 32, generator=g)  # as a scorer's first layer hands back

    def step() -> torch.Tensor:
        if impl == "baseline":
            out = reference.segment_expand(events.offsets, x, events.num_values)
        else:
            out = broadcast_rows(x, events)
        (grad,) = torch.autograd.grad(out, x, upstream)
        return grad

    assert benchmark(step).shape == x.shape


@IMPLS
def test_to_dense_backward(benchmark, impl):
    """A padded history's rows in training: (N, 16) float rows padded to 30, forward and backward."""
    benchmark.group = "ragged to_dense(30) forward + backward, (N, 16) rows, B=512, 0-21 events/row"
    benchmark.extra_info["role"] = impl
    events, _ = ATTENTION["B=512, 0-21 events/row"]
    pad = torch.zeros(16)
    upstream = torch.randn(512, 30, 16, generator=torch.Generator().manual_seed(6))

    def step() -> torch.Tensor:
        if impl == "baseline":
            out = reference.ragged_to_dense(events.offsets, events.values, None, pad, 30, False)[0]
        else:
            out = events.to_dense(0.0, 30).values
        (grad,) = torch.autograd.grad(out, events.values, upstream)
        return grad

    assert benchmark(step).shape == events.values.shape
