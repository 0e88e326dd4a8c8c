"""The core's thread pool: exact coverage, error propagation, resizing, following torch; each on
torch's OpenMP team and on the pool's own threads."""

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys

import pytest
import torch

import recis.core
from recis.core._C import common as _C


@pytest.fixture(params=["openmp", "pool"])
def backend(request):
    """Runs the test on both backends and restores OpenMP (the default) afterwards."""
    if request.param == "pool":
        _C.detach_openmp()
    elif not _C.attach_openmp():
        pytest.skip("torch loaded no OpenMP runtime")
    assert recis.core.threads.backend() == request.param
    yield request.param
    _C.attach_openmp()


def test_openmp_is_the_default_and_can_be_turned_off():
    code = "import torch, recis.core.threads as t; print(t.backend())"
    env = {k: v for k, v in os.environ.items() if k != "RECIS_OPENMP"}
    run = lambda env: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run(env).stdout.strip() == "openmp"  # the Linux torch wheels load libgomp
    assert run({**env, "RECIS_OPENMP": "0"}).stdout.strip() == "pool"


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("n, grain", [(0, 1), (1, 1), (7, 1), (1000, 3), (100000, 64)])
def test_parallel_for_visits_every_index_once(threads, n, grain, backend):
    _C.set_num_threads(threads)
    try:
        assert _C.num_threads() == threads
        assert _C._parallel_for_hits(n, grain)[0] == [1] * n
    finally:
        recis.core.set_num_threads(None)


def test_parallel_for_rethrows_the_first_error_and_stays_usable(backend):
    _C.set_num_threads(3)
    try:
        with pytest.raises(ValueError, match="failed at 5000"):
            _C._parallel_for_hits(100000, 10, 5000)
        assert _C._parallel_for_hits(1000, 1)[0] == [1] * 1000
    finally:
        recis.core.set_num_threads(None)


def test_pool_follows_torch_until_pinned(backend):
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


def test_work_really_spreads_over_threads(backend):
    recis.core.set_num_threads(2)
    try:
        hits, threads = _C._parallel_for_hits(64, 1, -1, 2000)  # 64 chunks of 2 ms
        assert hits == [1] * 64 and threads == 2
    finally:
        recis.core.set_num_threads(None)


def test_openmp_loops_run_on_torchs_threads():
    """On OpenMP the core keeps no threads of its own: a 2-thread loop uses torch's team."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    recis.core.set_num_threads(2)
    try:
        torch.randn(1 << 20).exp_()  # torch's team of 2 exists now
        tasks = lambda: len(os.listdir("/proc/self/task"))
        assert _C.attach_openmp()
        on_openmp = tasks()
        assert _C._parallel_for_hits(64, 1, -1, 2000) == ([1] * 64, 2)
        assert tasks() == on_openmp
        _C.detach_openmp()  # the pool starts its own worker
        assert _C._parallel_for_hits(64, 1, -1, 2000) == ([1] * 64, 2)
        assert tasks() == on_openmp + 1
    finally:
        _C.attach_openmp()
        torch.set_num_threads(before)
        recis.core.set_num_threads(None)


def _child_runs_a_loop(queue):
    queue.put(_C._parallel_for_hits(10000, 10)[0] == [1] * 10000)


def test_pool_works_in_a_forked_child(backend):
    recis.core.set_num_threads(2)
    try:
        _C._parallel_for_hits(10000, 10)  # the parent's workers exist and have run
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_runs_a_loop, args=(queue,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0, "the forked child hung or crashed"
        assert queue.get(timeout=5) is True
    finally:
        recis.core.set_num_threads(None)


def test_kernels_from_several_python_threads(backend):
    from recis.core import Ragged

    r = Ragged.from_lengths(torch.arange(200000), torch.full((1000,), 200))
    want = r.truncate(7, side="left").values
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: r.truncate(7, side="left").values, range(16)))
    assert all(torch.equal(x, want) for x in results)
