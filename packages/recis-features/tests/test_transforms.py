"""Bucketize and Mod against torch on random dense and ragged inputs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recis.core import Ragged
from recis.features import bucketize, mod

finite = st.floats(-1e9, 1e9, allow_nan=False)


@given(st.lists(finite, max_size=60), st.lists(finite, max_size=12, unique=True))
def test_bucketize_matches_torch_right_true(values, boundaries):
    b = sorted(boundaries)
    v = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(bucketize(v, b), torch.bucketize(v, torch.tensor(b, dtype=torch.float64), right=True))


def test_bucketize_edges_dtypes_and_ragged():
    b = [0.0, 1.0, 2.0]
    assert bucketize(torch.tensor([-1.0, 0.0, 1.0, 1.5, 2.0, float("inf"), -float("inf")]), b).tolist() == [
        0,
        1,
        2,
        2,
        3,
        3,
        0,
    ]
    assert bucketize(torch.tensor([[0, 5], [1, -3]]), b).tolist() == [[1, 3], [2, 0]]  # int input, shape kept
    r = Ragged.from_list([[0.5, 3.0], [], [-1.0]], dtype=torch.float32, weights=[[1.0, 2.0], [], [3.0]])
    out = bucketize(r, b)
    assert out.tolist() == [[1, 3], [], [0]] and out.weights.tolist() == [1.0, 2.0, 3.0]
    assert bucketize(torch.tensor([]), b).shape == (0,)
    assert bucketize(torch.tensor([1.0, -5.0]), []).tolist() == [0, 0]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=60), st.integers(1, 2**63 - 1))
def test_mod_matches_torch_remainder(ids, modulus):
    t = torch.tensor(ids, dtype=torch.int64)
    assert torch.equal(mod(t, modulus), torch.remainder(t, modulus))


def test_mod_on_ragged_and_nested():
    r = Ragged.from_list([[[-7, 7]], [[12], []]])
    out = mod(r, 5)
    assert out.values.tolist() == [[3, 2], [2], []] and out.lengths().tolist() == [1, 2]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: bucketize(torch.tensor([1.0]), [1.0, 0.0]), ValueError, "strictly increasing, got boundaries\\[0\\]"),
        (lambda: bucketize(torch.tensor([1.0]), [0.0, float("nan")]), ValueError, r"boundaries\[1\] is not finite"),
        (lambda: bucketize(torch.tensor([1.0, float("nan")]), [0.0]), ValueError, "position 1 is NaN"),
        (lambda: bucketize([1.0], [0.0]), TypeError, "expected a Tensor or a Ragged, got list"),
        (lambda: mod(torch.tensor([1]), 0), ValueError, "modulus must be > 0, got 0"),
        (lambda: mod(torch.tensor([1.5]), 3), TypeError, "IDs must be integers"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
