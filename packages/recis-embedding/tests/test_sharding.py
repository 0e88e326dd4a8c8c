"""`owner`: a pure-Python splitmix64 oracle, balance on sequential IDs, bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recis.embedding import owner
from recis.embedding.sharding import mix64

M = 2**64


def mix_reference(i: int) -> int:
    z = i % M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M
    return z ^ (z >> 31)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50), st.integers(1, 1000))
def test_matches_unsigned_reference(ids, world_size):
    t = torch.tensor(ids, dtype=torch.int64)
    assert [v % M for v in mix64(t).tolist()] == [mix_reference(i) for i in ids]
    assert owner(t, world_size).tolist() == [mix_reference(i) % world_size for i in ids]


@pytest.mark.parametrize("world_size", [2, 3, 8])
def test_sequential_and_strided_ids_spread_evenly(world_size):
    for ids in (torch.arange(60_000), torch.arange(60_000) * 1024):
        counts = torch.bincount(owner(ids, world_size), minlength=world_size)
        assert (counts - 60_000 / world_size).abs().max() < 0.03 * 60_000 / world_size


def test_shape_and_bad_input():
    assert owner(torch.zeros(2, 3, dtype=torch.int32), 1).shape == (2, 3)
    with pytest.raises(ValueError, match="world_size"):
        owner(torch.arange(3), 0)
    with pytest.raises(TypeError, match="integers"):
        owner(torch.zeros(3), 2)
