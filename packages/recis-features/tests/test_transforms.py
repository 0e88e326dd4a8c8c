"""Bucketize and Mod against torch (and Bucketize's TensorFlow mode against a numpy reference) on
random dense and ragged inputs."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from recis.core import Ragged
from recis.features import Bucketize, Feature, FeatureEngine, bucketize, mod

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
        (lambda: mod(torch.tensor([1]), 0), ValueError, r"modulus must be an int in \[1, 2\*\*63 - 1\], got 0"),
        (lambda: mod(torch.tensor([1.5]), 3), TypeError, "IDs must be integers"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def tf_bucketize(values: np.ndarray, boundaries: list[float]) -> np.ndarray:
    """TensorFlow's Bucketize by hand: the `boundaries` attr is list(float), i.e. float32, and the CPU
    kernel's std::upper_bound tests `value < boundary` in C++, so float64 values meet the float32
    boundaries widened, float32 values compare in float32 and int32/int64 values convert to float32."""
    b = np.asarray(boundaries, dtype=np.float32)
    v = values.astype(np.float32) if values.dtype.kind in "iu" else values
    return np.searchsorted(b, v, side="right")


def test_bucketize_default_and_tensorflow_semantics_differ_on_float32_rounding():
    b = [0.1, 0.7, 0.9, 3.3]  # float32(0.1) > 0.1; float32(0.7), (0.9), (3.3) < their float64
    x32 = torch.tensor([0.1, 0.7, 0.9, 3.3], dtype=torch.float32)
    x64 = torch.tensor([0.1, 0.69999999, 0.7, 3.2999999999], dtype=torch.float64)
    ids = torch.tensor([16777219, 3], dtype=torch.int64)  # 16777219 rounds to float32 16777220
    assert bucketize(x32, b).tolist() == [1, 1, 2, 3]  # default: float64 boundaries
    assert bucketize(x32, b, semantics="tensorflow").tolist() == [1, 2, 3, 4]
    assert bucketize(x64, b).tolist() == [1, 1, 2, 3]
    assert bucketize(x64, b, semantics="tensorflow").tolist() == [0, 2, 2, 4]
    assert bucketize(ids, [16777220.0]).tolist() == [0, 0]
    assert bucketize(ids, [16777220.0], semantics="tensorflow").tolist() == [1, 0]
    for x in (x32, x64):
        assert bucketize(x, b, semantics="tensorflow").tolist() == tf_bucketize(x.numpy(), b).tolist()
    assert (
        bucketize(ids, [16777220.0], semantics="tensorflow").tolist()
        == tf_bucketize(ids.numpy(), [16777220.0]).tolist()
    )


float32_boundaries = st.lists(st.floats(-1e6, 1e6, width=32), min_size=0, max_size=12, unique=True).map(sorted)


@given(
    float32_boundaries,
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=40),
    st.sampled_from([torch.float32, torch.float64, torch.int32, torch.int64]),
    st.floats(-1e-6, 1e-6),
)
def test_bucketize_tensorflow_semantics_matches_reference(boundaries, values, dtype, shift):
    b = [x + shift for x in boundaries]  # float64 boundaries off the float32 grid
    near = [float(np.nextafter(np.float32(x), np.float32(d))) for x in boundaries for d in (-np.inf, np.inf)]
    v = torch.tensor(values + near + boundaries + b, dtype=torch.float64)
    if not dtype.is_floating_point:
        v = v.round()
    x = v.to(dtype)
    b32 = np.asarray(b, dtype=np.float32)
    assume(len(np.unique(b32)) == len(b32) and bool((np.diff(np.asarray(b)) > 0).all()))
    got = bucketize(x, b, semantics="tensorflow")
    assert got.tolist() == tf_bucketize(x.numpy(), b).tolist()
    ragged = Ragged.from_lengths(x, [len(x)])
    assert bucketize(ragged, b, semantics="tensorflow").values.tolist() == got.tolist()


def test_bucketize_op_semantics_fused_beside_the_default():
    engine = FeatureEngine(
        [Feature("f64", "x", [Bucketize([0.7])]), Feature("tf", "x", [Bucketize([0.7], semantics="tensorflow")])]
    )
    out = engine({"x": torch.tensor([0.7, 0.6999999, 0.71], dtype=torch.float32)})
    assert out["f64"].tolist() == [0, 0, 1] and out["tf"].tolist() == [1, 0, 1]
    assert Bucketize([0.7], semantics="tensorflow")(torch.tensor([0.7])).tolist() == [1]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Bucketize([0.5], semantics="tf").check(), r"semantics must be 'float64' or 'tensorflow', got 'tf'"),
        (
            lambda: bucketize(torch.tensor([1.0]), [0.1, 0.1 + 1e-12], semantics="tensorflow"),
            r"boundaries\[0\]=0.1 and boundaries\[1\]=0.10000000000100001 are the same float32 \(0.100000001\)",
        ),
        (
            lambda: bucketize(torch.tensor([1.0]), [0.0, 1e39], semantics="tensorflow"),
            r"boundaries\[1\]=1e\+39 overflows float32",
        ),
        (lambda: bucketize(torch.tensor([1.0]), [0.5], semantics="TF"), "semantics must be"),
    ],
)
def test_bucketize_semantics_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
