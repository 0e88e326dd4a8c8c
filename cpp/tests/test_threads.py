"""The core's thread pool: exact coverage, error propagation, resizing, following torch."""

import pytest
import torch

import recis.core
from recis.core import _C


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("n, grain", [(0, 1), (1, 1), (7, 1), (1000, 3), (100000, 64)])
def test_parallel_for_visits_every_index_once(threads, n, grain):
    _C.set_num_threads(threads)
    try:
        assert _C.num_threads() == threads
        assert _C._parallel_for_hits(n, grain) == [1] * n
    finally:
        recis.core.set_num_threads(None)


def test_parallel_for_rethrows_the_first_error_and_stays_usable():
    _C.set_num_threads(3)
    try:
        with pytest.raises(ValueError, match="failed at 5000"):
            _C._parallel_for_hits(100000, 10, 5000)
        assert _C._parallel_for_hits(1000, 1) == [1] * 1000
    finally:
        recis.core.set_num_threads(None)


def test_pool_follows_torch_until_pinned():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert recis.core.num_threads() == 3
        recis.core.set_num_threads(2)
        torch.set_num_threads(1)
        assert recis.core.num_threads() == 2
        recis.core.set_num_threads(None)
        assert recis.core.num_threads() == 1
    finally:
        torch.set_num_threads(before)
        recis.core.set_num_threads(None)


def test_bad_thread_counts():
    with pytest.raises(ValueError, match="expected n >= 1"):
        recis.core.set_num_threads(0)
    with pytest.raises(ValueError, match="expected n >= 1, got -2"):
        _C.set_num_threads(-2)
