"""pytest-benchmark: Ragged kernels vs the pure-torch reference, one group per op (`make bench`)."""

import pytest
import torch

from recis.core import Ragged, reference


def _batch(rows: int, min_len: int, max_len: int, seed: int) -> Ragged:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (rows,), generator=g)
    return Ragged.from_lengths(torch.randint(-(2**62), 2**62, (int(lengths.sum()),), generator=g), lengths)


SEQ = _batch(4096, 0, 400, seed=0)  # behaviour sequences
MULTI = _batch(4096, 1, 5, seed=1)  # multi-hot ID lists
PERM = torch.randperm(4096, generator=torch.Generator().manual_seed(2))
PAD = torch.zeros((), dtype=torch.int64)


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_truncate(benchmark, impl):
    benchmark.group = "ragged truncate(50, left), B=4096, 0-400 IDs/row"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(reference.ragged_truncate, SEQ.offsets, SEQ.values, None, 50, True)[1]
    else:
        out = benchmark(SEQ.truncate, 50, "left").values
    assert len(out) == int(SEQ.lengths().clamp(max=50).sum())


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_to_dense(benchmark, impl):
    benchmark.group = "ragged to_dense(100), B=4096, 0-400 IDs/row"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(reference.ragged_to_dense, SEQ.offsets, SEQ.values, None, PAD, 100, True)[0]
    else:
        out = benchmark(SEQ.to_dense, 0, 100, "left").values
    assert out.shape == (4096, 100)


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_select(benchmark, impl):
    benchmark.group = "ragged select(permutation), B=4096, 1-5 IDs/row"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(reference.ragged_select, MULTI.offsets, MULTI.values, None, PERM)[1]
    else:
        out = benchmark(MULTI.select, PERM).values
    assert len(out) == MULTI.num_values
