"""C++ Ragged kernels against the pure-torch reference on random inputs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recis.core import reference
from recis.core._C import common as _C

ZERO = torch.zeros(1, dtype=torch.int64)
INT64_EDGES = torch.tensor([0, -1, 1, 2**63 - 1, -(2**63), 2**32, -(2**31)], dtype=torch.int64)


@st.composite
def raggeds(draw):
    """(offsets, values, weights): empty batches, empty rows, one huge row, 64-bit and negative IDs."""
    lengths = draw(st.lists(st.integers(0, 8), max_size=24))
    if lengths and draw(st.booleans()):
        lengths[draw(st.integers(0, len(lengths) - 1))] = draw(st.sampled_from([300, 5000]))
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0, out=offsets[1:])
    n = int(offsets[-1])
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    width = draw(st.sampled_from([None, 3]))  # 1-D IDs, or [N, 3] rows
    if width is None:
        values = torch.randint(-(2**63), 2**63 - 1, (n,), generator=gen, dtype=torch.int64)
        k = min(n, len(INT64_EDGES))
        values[:k] = INT64_EDGES[:k]
    else:
        values = torch.randn(n, width, generator=gen)
    weights = torch.rand(n, generator=gen) if draw(st.booleans()) else None
    return offsets, values, weights


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            assert g.dtype == w.dtype and g.shape == w.shape
            assert torch.equal(g, w)


@given(raggeds(), st.integers(0, 10), st.booleans())
def test_truncate_matches_reference(r, max_len, keep_last):
    offsets, values, weights = r
    assert_same(
        _C.ragged_truncate(offsets, values, weights, max_len, keep_last),
        reference.ragged_truncate(offsets, values, weights, max_len, keep_last),
    )


@given(raggeds(), st.data())
def test_select_matches_reference(r, data):
    offsets, values, weights = r
    num_rows = len(offsets) - 1
    rows = data.draw(st.lists(st.integers(-num_rows, num_rows - 1), max_size=30)) if num_rows else []
    rows = torch.tensor(rows, dtype=torch.int64)
    assert_same(
        _C.ragged_select(offsets, values, weights, rows),
        reference.ragged_select(offsets, values, weights, rows),
    )


@given(raggeds(), st.one_of(st.none(), st.integers(0, 10)), st.booleans(), st.sampled_from([0, -7]))
def test_to_dense_matches_reference(r, max_len, keep_last, pad_value):
    offsets, values, weights = r
    pad = torch.full(values.shape[1:], pad_value, dtype=values.dtype)
    length = -1 if max_len is None else max_len
    assert_same(
        _C.ragged_to_dense(offsets, values, weights, pad.reshape(-1), length, keep_last),
        reference.ragged_to_dense(offsets, values, weights, pad, length, keep_last),
    )


@given(raggeds(), st.integers(0, 10), st.booleans())
def test_dense_to_ragged_matches_reference(r, max_len, keep_last):
    offsets, values, _ = r
    shape = (len(offsets) - 1, max_len, *values.shape[1:])
    gen = torch.Generator().manual_seed(max_len)
    dense = torch.randint(-(2**63), 2**63 - 1, shape, generator=gen) if values.dim() == 1 else torch.randn(shape)
    got = _C.dense_to_ragged(offsets, dense.flatten(0, 1), max_len, keep_last)
    want = reference.dense_to_ragged(offsets, dense, keep_last)
    assert got.dtype == want.dtype and got.shape == want.shape == values.shape
    assert torch.equal(got, want)


def test_dense_to_ragged_reads_kept_cells_and_zeros_cut_values():
    offsets = torch.tensor([0, 3, 3, 4])  # rows of 3, 0 and 1 values; max_len 2 cuts one of row 0
    dense = torch.tensor([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]])
    assert _C.dense_to_ragged(offsets, dense.flatten(), 2, False).tolist() == [10.0, 11.0, 0.0, 30.0]
    assert _C.dense_to_ragged(offsets, dense.flatten(), 2, True).tolist() == [0.0, 10.0, 11.0, 30.0]
    with pytest.raises(ValueError, match="dense_to_ragged: dense must hold 3 rows x max_len 2 cells, got 5"):
        _C.dense_to_ragged(offsets, torch.zeros(5), 2, False)
    with pytest.raises(ValueError, match="dense_to_ragged: offsets"):
        _C.dense_to_ragged(torch.tensor([0, 3, 2]), torch.zeros(4), 2, False)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float64, torch.bool])
def test_kernels_are_dtype_agnostic(dtype):
    offsets = torch.tensor([0, 2, 2, 5])
    values = (torch.arange(5) % 2).to(dtype)
    for got, want in [
        (_C.ragged_truncate(offsets, values, None, 1, True), reference.ragged_truncate(offsets, values, None, 1, True)),
        (
            _C.ragged_select(offsets, values, None, torch.tensor([2, 0])),
            reference.ragged_select(offsets, values, None, torch.tensor([2, 0])),
        ),
    ]:
        assert_same(got, want)
    pad = torch.ones(1, dtype=dtype)
    assert_same(
        _C.ragged_to_dense(offsets, values, None, pad, -1, False),
        reference.ragged_to_dense(offsets, values, None, pad.reshape(()), -1, False),
    )


def test_parallel_path_matches_reference():
    """Big enough that the thread pool splits the work; the result must not depend on threads."""
    lengths = torch.randint(0, 50, (20000,))
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    values = torch.randint(-(2**40), 2**40, (int(offsets[-1]), 4))
    rows = torch.randint(0, len(lengths), (30000,))
    assert _C.num_threads() >= 1
    for threads in (1, 2, 3):
        _C.set_num_threads(threads)
        assert_same(_C.ragged_select(offsets, values, None, rows), reference.ragged_select(offsets, values, None, rows))
        assert_same(
            _C.ragged_to_dense(offsets, values, None, torch.zeros(4, dtype=torch.int64), 30, True),
            reference.ragged_to_dense(offsets, values, None, torch.zeros(4, dtype=torch.int64), 30, True),
        )
    _C.set_num_threads(torch.get_num_threads())


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda o, v: _C.ragged_select(o, v, None, torch.tensor([0, 3])),
            r"row index 3 \(at position 1\) is out of range for 2 rows",
        ),
        (lambda o, v: _C.ragged_select(o, v, None, torch.tensor([-3])), r"row index -3 \(at position 0\)"),
        (lambda o, v: _C.ragged_truncate(o, v, None, -1, False), "max_len must be >= 0, got -1"),
        (lambda o, v: _C.ragged_truncate(o, v, torch.ones(2), 1, False), "weights must be 1-D with 3 entries"),
        (lambda o, v: _C.ragged_to_dense(o, v, None, torch.zeros(1, dtype=torch.int32), -1, False), "pad must hold"),
        (
            lambda o, v: _C.validate_offsets(torch.tensor([0, 2, 1]), 1),
            r"non-decreasing, got offsets\[1\]=2 > offsets\[2\]=1",
        ),
        (lambda o, v: _C.validate_offsets(torch.tensor([1, 3]), 3), r"offsets\[0\] must be 0, got 1"),
        (lambda o, v: _C.validate_offsets(torch.tensor([0, 2]), 3), r"number of values 3, got offsets\[1\]=2"),
        # kernels check offsets themselves: a Ragged built with validate=False must not crash them
        (lambda o, v: _C.ragged_truncate(torch.tensor([0, 10**12, 3]), v, None, 1, False), "non-decreasing"),
        (lambda o, v: _C.ragged_select(torch.tensor([0, 1, 4]), v, None, torch.tensor([1])), "last offset"),
        (
            lambda o, v: _C.ragged_to_dense(
                torch.tensor([2, 3]), v, None, torch.zeros(1, dtype=torch.int64), -1, False
            ),
            "must be 0",
        ),
        (lambda o, v: _C.ragged_to_dense(o, v, None, torch.zeros(1, dtype=torch.int64), 2**62, False), "too large"),
        (lambda o, v: _C.ragged_select(o, v, torch.ones(3, 2), torch.tensor([0])), "weights must be 1-D with 3"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.tensor([0, 1, 3]), torch.arange(3))
