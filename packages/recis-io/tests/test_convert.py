"""Arrow -> torch: every supported type, sliced arrays, zero-copy views, nulls, unsupported types."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recis.core import Ragged
from recis.io.convert import check_type, count_nulls, fill_nulls, to_torch

NUMERIC = [
    (pa.int8(), torch.int8),
    (pa.int16(), torch.int16),
    (pa.int32(), torch.int32),
    (pa.int64(), torch.int64),
    (pa.uint8(), torch.uint8),
    (pa.float32(), torch.float32),
    (pa.float64(), torch.float64),
]


@pytest.mark.parametrize(("arrow", "dtype"), NUMERIC)
def test_scalars_are_1d_tensors(arrow, dtype):
    out = to_torch(pa.array([1, 2, 3, 4], arrow).slice(1, 2))
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.tolist() == [2, 3]


def test_bools_are_copied_to_torch_bool():
    assert to_torch(pa.array([True, False, True]).slice(1)).tolist() == [False, True]


def test_numeric_values_are_views_of_arrow_buffers():
    arr = pa.array(range(100), pa.int64())
    out = to_torch(arr.slice(10, 5))
    assert out.data_ptr() == arr.buffers()[1].address + 10 * 8
    lists = pa.array([[1, 2], [3], [4, 5, 6]])
    ragged = to_torch(lists.slice(1))
    assert isinstance(ragged, Ragged) and ragged.values.data_ptr() == lists.values.buffers()[1].address + 2 * 8


@given(st.lists(st.one_of(st.none(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)), max_size=20), st.data())
def test_lists_match_python_on_any_slice(rows, data):
    arr = pa.array(rows, pa.list_(pa.int64()))
    start = data.draw(st.integers(0, len(rows)))
    stop = data.draw(st.integers(start, len(rows)))
    filled = fill_nulls(arr, 0).slice(start, stop - start)
    out = to_torch(filled)
    assert out.offsets.dtype == torch.int64
    assert out.tolist() == [r or [] for r in rows[start:stop]]


def test_large_lists_and_strings():
    arr = pa.array([[1], [2, 3]], pa.large_list(pa.int32()))
    assert to_torch(arr.slice(1)).tolist() == [[2, 3]]
    strings = pa.array(["ab", "", "cde"], pa.large_string()).slice(1)
    out = to_torch(strings)
    assert out.offsets.tolist() == [0, 0, 3] and bytes(out.values.tolist()) == b"cde"


def test_list_of_lists_is_a_nested_ragged():
    arr = pa.array([[[1], [2, 3]], [], [[4, 5, 6]]]).slice(1)
    out = to_torch(arr)
    assert isinstance(out.values, Ragged)
    assert out.offsets.tolist() == [0, 0, 1] and out.values.tolist() == [[4, 5, 6]]


def test_strings_are_arrow_layout_or_hashed():
    arr = pa.array(["x", "yz", ""]).slice(1)
    out = to_torch(arr)
    assert out.offsets.tolist() == [0, 2, 2] and out.values.dtype == torch.uint8
    lengths = lambda offsets, data: offsets.diff() * 10  # any (offsets, bytes) -> int64 function
    assert to_torch(arr, string_hash=lengths).tolist() == [20, 0]
    nested = to_torch(pa.array([["a", "bb"], ["ccc"]]), string_hash=lengths)
    assert nested.tolist() == [[10, 20], [30]]


def test_fill_nulls_at_every_depth():
    arr = pa.array([[[1, None]], None, [None, [2]]], pa.list_(pa.list_(pa.int64())))
    assert count_nulls(arr) == 3
    out = to_torch(fill_nulls(arr, -1))
    assert out.offsets.tolist() == [0, 1, 1, 3]
    assert out.values.tolist() == [[1, -1], [], [2]]
    assert to_torch(fill_nulls(pa.array(["a", None]), "?")).tolist() == [[97], [63]]


@pytest.mark.parametrize(
    "t", [pa.timestamp("s"), pa.uint64(), pa.struct([("a", pa.int64())]), pa.list_(pa.list_(pa.list_(pa.int64())))]
)
def test_unsupported_types_say_what_is_supported(t):
    reason = check_type(t)
    assert reason is not None and ("not supported" in reason or "at most two" in reason)
