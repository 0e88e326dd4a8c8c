"""softmax_pool and broadcast_rows: the C++ per-row kernels and their backward against the pure-torch
twins."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recis.core import Ragged, broadcast_rows, reference, softmax_pool


@st.composite
def cases(draw):
    """(Ragged values, scores): empty batches, empty rows, one row, one long row, large scores."""
    lengths = draw(st.lists(st.integers(0, 9), max_size=20))
    if lengths and draw(st.booleans()):
        lengths[draw(st.integers(0, len(lengths) - 1))] = draw(st.sampled_from([1, 300, 4000]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    n, dim = sum(lengths), draw(st.sampled_from([1, 4, 16]))
    scale = draw(st.sampled_from([1.0, 50.0, 1e4]))  # softmax must subtract each row's max
    values = torch.randn(n, dim, generator=gen, requires_grad=True)
    scores = (torch.randn(n, generator=gen) * scale).requires_grad_()
    return Ragged.from_lengths(values, torch.tensor(lengths, dtype=torch.int64)), scores


@settings(deadline=None, max_examples=60)
@given(cases())
def test_kernel_matches_the_twin_forward_and_backward(case):
    values, scores = case
    got = softmax_pool(values, scores)
    assert type(got.grad_fn).__name__ == "_SoftmaxPoolBackward"  # the C++ kernels ran
    want, _ = reference.segment_softmax_pool(values.offsets, scores, values.values)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    empty = values.lengths() == 0
    assert torch.equal(got[empty], torch.zeros_like(got[empty]))
    upstream = torch.randn_like(got)
    inputs = (scores, values.values)
    for g, w in zip(
        torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(want, inputs, upstream), strict=True
    ):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_scores_gradients_sum_to_zero_per_row():
    """Shifting a row's scores changes nothing, so their gradients sum to zero in every row."""
    values = Ragged.from_lengths(torch.randn(1000, 16), [1, 999])
    scores = torch.randn(1000, requires_grad=True)
    (grad,) = torch.autograd.grad(softmax_pool(values, scores), scores, torch.randn(2, 16))
    assert float(grad[:1].abs().sum()) == 0.0  # one event: weight 1 whatever its score
    assert abs(float(grad[1:].sum())) < 1e-6


def test_other_dtypes_and_tracing_take_the_twin():
    offsets = torch.tensor([0, 2, 5])
    values = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    scores = torch.randn(5, dtype=torch.float64, requires_grad=True)
    out = softmax_pool(Ragged(values, offsets), scores)
    assert type(out.grad_fn).__name__ != "_SoftmaxPoolBackward"
    assert torch.autograd.gradcheck(lambda s, v: softmax_pool(Ragged(v, offsets), s), (scores, values))
    # bfloat16 rows with float32 scores: the softmax in float32, the sums in bfloat16
    rows, s32 = torch.randn(5, 4).bfloat16(), torch.randn(5)
    got = softmax_pool(Ragged(rows, offsets), s32)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, reference.segment_softmax_pool(offsets, s32, rows)[0])
    # torch.compile traces the twin (the kernels cannot take fake tensors)
    compiled = torch.compile(lambda v, s: softmax_pool(Ragged(v, offsets, validate=False), s), backend="eager")
    v32 = torch.randn(5, 4)
    torch.testing.assert_close(compiled(v32, s32), softmax_pool(Ragged(v32, offsets), s32))


def test_bad_shapes_are_refused():
    values = Ragged.from_lengths(torch.randn(5, 4), [2, 3])
    with pytest.raises(ValueError, match=r"softmax_pool: expected \(N, D\) values and \(N,\) scores"):
        softmax_pool(values, torch.randn(4))
    with pytest.raises(ValueError, match="carry weights"):
        softmax_pool(Ragged.from_lengths(torch.randn(5, 4), [2, 3], torch.ones(5)), torch.randn(5))
    broken = Ragged(torch.randn(5, 4), torch.tensor([0, 3, 2]), validate=False)
    with pytest.raises(ValueError, match="segment_softmax_pool: offsets must be non-decreasing"):
        softmax_pool(broken, torch.randn(5))


@settings(deadline=None, max_examples=40)
@given(cases())
def test_broadcast_rows_matches_the_twin_forward_and_backward(case):
    events, _ = case
    rows = events.num_rows
    x = torch.randn(rows, 5, requires_grad=True)
    got = broadcast_rows(x, events)
    assert type(got.grad_fn).__name__ == "_BroadcastRowsBackward"  # the C++ kernels ran
    want = reference.segment_expand(events.offsets, x, events.num_values)
    assert torch.equal(got, want) and got.shape == (events.num_values, 5)
    upstream = torch.randn_like(got)
    (g,) = torch.autograd.grad(got, x, upstream)
    # per-row sums, against the twin in float64 (ours sums in double; float32 index_add drifts by
    # ~1e-5 over a 4000-event row); empty rows get zeros
    x64 = x.detach().double().requires_grad_()
    (w,) = torch.autograd.grad(reference.segment_expand(events.offsets, x64, events.num_values), x64, upstream.double())
    torch.testing.assert_close(g.double(), w, rtol=1e-6, atol=1e-6)
    assert torch.equal(g[events.lengths() == 0], torch.zeros_like(g[events.lengths() == 0]))


def test_broadcast_rows_twin_paths_and_bad_shapes():
    events = Ragged.from_lengths(torch.zeros(4), [1, 0, 3])
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: broadcast_rows(t, events), (x,))
    ids = torch.tensor([[7], [8], [9]])
    assert broadcast_rows(ids, events).tolist() == [[7], [9], [9], [9]]
    compiled = torch.compile(lambda t, o: broadcast_rows(t, Ragged(torch.zeros(4), o, validate=False)), backend="eager")
    x32 = torch.randn(3, 2)
    assert torch.equal(compiled(x32, events.offsets), broadcast_rows(x32, events))
    with pytest.raises(ValueError, match=r"broadcast_rows: expected \(3, D\) rows"):
        broadcast_rows(torch.randn(2, 2), events)
