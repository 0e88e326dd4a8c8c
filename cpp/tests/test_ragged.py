"""The Ragged type: construction, validation, row operations, nesting, pytree and compile."""

import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st

from recis.core import Ragged, reference

rows_strategy = st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6), max_size=12)


def test_constructors_agree():
    values = torch.tensor([5, 6, 7])
    a = Ragged(values, torch.tensor([0, 2, 2, 3]))
    b = Ragged.from_lengths(values, [2, 0, 1])
    c = Ragged.from_list([[5, 6], [], [7]])
    for r in (a, b, c):
        assert r.tolist() == [[5, 6], [], [7]]
        assert r.lengths().tolist() == [2, 0, 1]
        assert r.num_rows == len(r) == 3 and r.num_values == 3
        assert r.offsets.dtype == torch.int64


def test_int32_offsets_are_widened():
    r = Ragged(torch.arange(3), torch.tensor([0, 1, 3], dtype=torch.int32))
    assert r.offsets.dtype == torch.int64 and r.tolist() == [[0], [1, 2]]


def test_empty_batch_and_empty_rows():
    empty = Ragged.from_list([])
    assert empty.num_rows == 0 and empty.values.dtype == torch.int64
    assert empty.to_dense().values.shape == (0, 0)
    assert empty.truncate(3).num_rows == 0
    assert empty.select(torch.tensor([], dtype=torch.int64)).num_rows == 0
    blank = Ragged.from_list([[], []])
    assert blank.to_dense(max_len=2).mask.tolist() == [[False, False], [False, False]]


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: Ragged(torch.arange(3), torch.tensor([0, 2, 1, 3])), ValueError, "non-decreasing"),
        (
            lambda: Ragged(torch.arange(3), torch.tensor([0, 2])),
            ValueError,
            "last offset must equal the number of values 3",
        ),
        (lambda: Ragged(torch.arange(3), torch.tensor([1, 3])), ValueError, r"offsets\[0\] must be 0"),
        (lambda: Ragged(torch.arange(3), torch.tensor([0.0, 3.0])), TypeError, "offsets must be a 1-D int64 tensor"),
        (lambda: Ragged(torch.arange(3), torch.tensor([], dtype=torch.int64)), ValueError, "at least one element"),
        (lambda: Ragged(torch.tensor(1), torch.tensor([0, 1])), ValueError, "at least one dimension"),
        (lambda: Ragged([1, 2], torch.tensor([0, 2])), TypeError, "values must be a tensor or a Ragged, got list"),
        (
            lambda: Ragged(torch.arange(3), torch.tensor([0, 3]), torch.ones(2)),
            ValueError,
            "one entry per value \\(3\\), got 2",
        ),
        (
            lambda: Ragged(torch.arange(3), torch.tensor([0, 3]), torch.ones(3, dtype=torch.int64)),
            TypeError,
            "floating",
        ),
        (lambda: Ragged.from_lengths(torch.arange(3), [4, -1]), ValueError, "lengths must be >= 0, got -1"),
        (lambda: Ragged.from_lengths(torch.arange(3), [1, 1]), ValueError, "lengths sum to 2 but there are 3"),
        (lambda: Ragged.from_list([[1]], weights=[[1.0, 2.0]]), ValueError, "same row lengths"),
    ],
)
def test_bad_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


@given(rows_strategy, st.integers(0, 7))
def test_truncate_both_sides(rows, max_len):
    r = Ragged.from_list(rows, dtype=torch.int64)
    assert r.truncate(max_len, side="right").tolist() == [row[:max_len] for row in rows]
    assert r.truncate(max_len, side="left").tolist() == [row[len(row) - min(len(row), max_len) :] for row in rows]


@given(rows_strategy, st.one_of(st.none(), st.integers(0, 7)), st.sampled_from(["left", "right"]))
def test_to_dense_pads_and_masks(rows, max_len, side):
    r = Ragged.from_list(rows, dtype=torch.int64)
    out = r.to_dense(pad_value=-9, max_len=max_len, side=side)
    width = max((len(row) for row in rows), default=0) if max_len is None else max_len
    kept = r.truncate(width, side=side).tolist()
    assert out.values.shape == out.mask.shape == (len(rows), width)
    assert out.values.tolist() == [row + [-9] * (width - len(row)) for row in kept]
    assert out.mask.tolist() == [[True] * len(row) + [False] * (width - len(row)) for row in kept]


@given(rows_strategy, st.data())
def test_select_and_indexing(rows, data):
    r = Ragged.from_list(rows, dtype=torch.int64)
    n = len(rows)
    idx = data.draw(st.lists(st.integers(-n, n - 1), max_size=10)) if n else []
    assert r.select(torch.tensor(idx, dtype=torch.int64)).tolist() == [rows[i] for i in idx]
    assert r[idx].tolist() == [rows[i] for i in idx]
    mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    assert r[torch.tensor(mask, dtype=torch.bool)].tolist() == [row for row, m in zip(rows, mask, strict=True) if m]
    a, b = sorted(data.draw(st.lists(st.integers(-n - 2, n + 2), min_size=2, max_size=2)))
    assert r[a:b].tolist() == rows[a:b]
    assert r[::2].tolist() == rows[::2]
    for i in range(-n, n):
        assert r[i].tolist() == rows[i]


def test_slice_is_zero_copy():
    r = Ragged.from_list([[1, 2], [3], [4, 5, 6]])
    s = r[1:]
    assert s.values.data_ptr() == r.values[2:].data_ptr()
    assert s.tolist() == [[3], [4, 5, 6]] and s.offsets.tolist() == [0, 1, 4]


def test_index_errors():
    r = Ragged.from_list([[1], [2]])
    with pytest.raises(IndexError, match="row 2 is out of range for 2 rows"):
        r[2]
    with pytest.raises(ValueError, match="row index 5"):
        r.select(torch.tensor([5]))
    with pytest.raises(ValueError, match=r"bool mask must have shape \(2,\)"):
        r.select(torch.tensor([True]))
    with pytest.raises(TypeError, match="1-D integer tensor"):
        r.select(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="side must be 'left' or 'right', got 'up'"):
        r.truncate(1, side="up")
    with pytest.raises(ValueError, match="max_len must be >= 0 or None, got -1"):
        r.to_dense(max_len=-1)


def test_weights_follow_values():
    r = Ragged.from_list([[1, 2, 3], [4]], weights=[[0.1, 0.2, 0.3], [0.4]])
    t = r.truncate(2, side="left")
    assert t.weights.tolist() == pytest.approx([0.2, 0.3, 0.4])
    s = r.select(torch.tensor([1, 0]))
    assert s.weights.tolist() == pytest.approx([0.4, 0.1, 0.2, 0.3])
    d = r.to_dense(max_len=2)
    assert torch.allclose(d.weights, torch.tensor([[0.1, 0.2], [0.4, 0.0]]))
    assert r[1:].weights.tolist() == pytest.approx([0.4])


def test_nested_ragged():
    rows = [[[1], [2, 3]], [], [[4, 5, 6], [], [7]]]
    r = Ragged.from_list(rows)
    assert isinstance(r.values, Ragged) and r.num_values == 5
    assert r.select(torch.tensor([2, 0])).values.tolist() == [[4, 5, 6], [], [7], [1], [2, 3]]
    t = r.truncate(1, side="left")
    assert t.lengths().tolist() == [1, 0, 1] and t.values.tolist() == [[2, 3], [7]]
    d = r.to_dense(pad_value=0, max_len=2)
    assert d.values.shape == (3, 2, 3)
    assert d.values[2].tolist() == [[4, 5, 6], [0, 0, 0]]
    assert d.mask[0].tolist() == [[True, False, False], [True, True, False]]
    c = Ragged.cat([r, r[:1]])
    assert c.num_rows == 4 and c.values.tolist() == [[1], [2, 3], [4, 5, 6], [], [7], [1], [2, 3]]


def test_multidimensional_values_densify_per_row():
    """[N, D] rows (e.g. per-position embeddings) pad into [B, L, D]."""
    emb = torch.arange(12.0).reshape(6, 2)
    r = Ragged.from_lengths(emb, [1, 0, 5])
    d = r.to_dense(max_len=3, side="left")
    assert d.values.shape == (3, 3, 2)
    assert d.values[2].tolist() == emb[3:6].tolist() and d.values[1].abs().sum() == 0


def test_cat():
    a = Ragged.from_list([[1], [2, 3]], weights=[[1.0], [2.0, 3.0]])
    b = Ragged.from_list([[], [4]], weights=[[], [4.0]])
    c = Ragged.cat([a, b])
    assert c.tolist() == [[1], [2, 3], [], [4]] and c.weights.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="all parts have weights or none"):
        Ragged.cat([a, Ragged.from_list([[1]])])
    with pytest.raises(ValueError, match="at least one"):
        Ragged.cat([])


def test_to_device_and_meta():
    r = Ragged.from_list([[1, 2], [3]])
    m = r.to("meta")
    assert m.values.device.type == "meta" and m.offsets.device.type == "meta"
    assert r.to("cpu").tolist() == r.tolist()


def test_autograd_through_to_dense_and_select():
    """Float values that require grad: to_dense takes its C++ kernel with a C++ backward, select the
    differentiable reference path; results equal the no-grad kernel's."""
    emb = torch.randn(6, 4)
    r = Ragged.from_lengths(emb, [2, 0, 4])
    leaf = emb.clone().requires_grad_()
    rg = Ragged.from_lengths(leaf, [2, 0, 4])
    dense = rg.to_dense(max_len=3, side="left").values
    assert type(dense.grad_fn).__name__ == "_ToDenseBackward"
    assert torch.equal(dense.detach(), r.to_dense(max_len=3, side="left").values)
    dense.sum().backward()
    assert leaf.grad.tolist() == [[1.0] * 4] * 2 + [[0.0] * 4] + [[1.0] * 4] * 3
    picked = rg.select(torch.tensor([2, 2])).values
    assert torch.equal(picked.detach(), r.select(torch.tensor([2, 2])).values)


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.integers(0, 9), max_size=12),
    st.one_of(st.none(), st.integers(0, 6)),
    st.sampled_from(["left", "right"]),
)
def test_to_dense_gradients_equal_the_twins(lengths, max_len, side):
    """Values and weights get the gradients the pure-torch twin's autograd gives (cut values: 0)."""
    n = sum(lengths)
    values, weights = torch.randn(n, 3, requires_grad=True), torch.rand(n, requires_grad=True)
    r = Ragged.from_lengths(values, lengths, weights=weights)
    got = r.to_dense(-1.0, max_len, side)
    assert type(got.values.grad_fn).__name__ == "_ToDenseBackward"
    length = -1 if max_len is None else max_len
    want = reference.ragged_to_dense(r.offsets, values, weights, torch.full((3,), -1.0), length, side == "left")
    assert torch.equal(got.values, want[0]) and torch.equal(got.mask, want[1]) and torch.equal(got.weights, want[2])
    up, up_w = torch.randn_like(got.values), torch.randn_like(got.weights)
    for g, w in zip(
        torch.autograd.grad((got.values, got.weights), (values, weights), (up, up_w)),
        torch.autograd.grad((want[0], want[2]), (values, weights), (up, up_w)),
        strict=True,
    ):
        assert torch.equal(g, w)


def test_pytree_round_trip():
    batch = {"ids": Ragged.from_list([[1, 2], [3]], weights=[[0.5, 0.5], [1.0]]), "label": torch.ones(2)}
    leaves, spec = pytree.tree_flatten(batch)
    assert len(leaves) == 4  # values, offsets, weights, label
    again = pytree.tree_unflatten(leaves, spec)
    assert again["ids"].tolist() == [[1, 2], [3]]
    doubled = pytree.tree_map(lambda t: t * 2 if t.dtype == torch.float32 else t, batch)
    assert doubled["ids"].weights.tolist() == [1.0, 1.0, 2.0]
    nested = pytree.tree_leaves(Ragged.from_list([[[1], [2]]]))
    assert len(nested) == 5  # inner values, inner offsets, inner weights (None is a node), outer offsets


def test_torch_compile_traces_ragged():
    def pooled(r: Ragged) -> torch.Tensor:
        d = r.truncate(2, side="left").to_dense(max_len=2)
        return (d.values * d.mask).sum(1)

    r = Ragged.from_lengths(torch.arange(10.0), [3, 0, 7])
    compiled = torch.compile(pooled, backend="eager", fullgraph=True)
    assert torch.equal(compiled(r), pooled(r))
    assert pooled(r).tolist() == [3.0, 0.0, 17.0]


def test_more_index_kinds_and_conversions():
    import numpy as np

    r = Ragged.from_list([[1, 2], [3]])
    assert r[np.int64(1)].tolist() == [3] and r[torch.tensor(0)].tolist() == [1, 2]
    assert r[(1, 0)].tolist() == [[3], [1, 2]]
    t = r.values[::2]  # non-contiguous values are fine
    assert Ragged.from_lengths(t, [1, 1]).truncate(1).tolist() == [[1], [3]]
    with pytest.raises((TypeError, RuntimeError)):
        r.to(torch.float16)  # a dtype is not a device
    with pytest.raises(ValueError, match="share dtype and device"):
        Ragged.cat([r, Ragged.from_list([[1.5]])])
    with pytest.raises(TypeError, match="mix lists and scalars"):
        Ragged.from_list([[1, [2]]])
    with pytest.raises(ValueError, match="lengths sum to 2 but there are 3 values"):
        Ragged.from_lengths(torch.arange(3), [1, 1])


def test_nested_with_no_inner_rows_and_wide_inner_values():
    r = Ragged(Ragged.from_list([]), torch.tensor([0, 0, 0]))
    d = r.to_dense(max_len=2)
    assert d.values.shape == (2, 2, 0) and d.mask.shape == (2, 2, 0)
    wide = Ragged(Ragged.from_lengths(torch.arange(6.0).reshape(3, 2), [2, 1]), torch.tensor([0, 2]))
    dw = wide.to_dense(pad_value=-1)
    assert dw.values.shape == (1, 2, 2, 2) and dw.values[0, 1].tolist() == [[4.0, 5.0], [-1.0, -1.0]]


def test_no_grad_uses_the_kernel_path_with_equal_results():
    emb = torch.randn(6, 3, requires_grad=True)
    r = Ragged.from_lengths(emb, [2, 4])
    with torch.no_grad():
        fast = r.to_dense(max_len=3).values
    assert not fast.requires_grad and torch.equal(fast, r.to_dense(max_len=3).values.detach())
