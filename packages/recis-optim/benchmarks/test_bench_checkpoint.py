"""pytest-benchmark: checkpoint save and load of one D=64 table with Adam slots vs torch.save/torch.load
of the same rows (`table.state_dict()`), and a delta save after a step touching 1% of rows vs a full save.

Rows default to 200k (~160 MB) so `make bench` stays short; RECIS_BENCH_CKPT_ROWS=8000000 gives the
~6.4 GB table of docs/checkpoints.md (tools/bench/checkpoint.py measures its peak RSS, one process
per case, since a full-size baseline holds two copies of the table).
"""

import os
import sys
from pathlib import Path

import pytest
import torch

from recis.optim import Saver

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from checkpoint import ROW_BYTES, D, adam_table

ROWS = int(os.environ.get("RECIS_BENCH_CKPT_ROWS", 200_000))
GB = ROWS * ROW_BYTES / 1e9


@pytest.fixture(scope="module")
def table():
    return adam_table(ROWS)


def _gbps(benchmark) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GB/s"] = round(GB / benchmark.stats.stats.median, 2)


@pytest.mark.parametrize("impl", ["baseline", "ours", "ours_fsync"])
def test_save(benchmark, table, impl, tmp_path):
    t, opt = table
    benchmark.group = f"checkpoint save, {ROWS} rows x D={D} + Adam slots ({GB:.2f} GB)"
    benchmark.extra_info["role"] = "baseline" if impl == "baseline" else "ours"
    saver = Saver(tmp_path, tables={"t": t}, optimizers=[opt], keep=1, fsync=impl == "ours_fsync")
    steps = iter(range(10**6))
    if impl == "baseline":
        benchmark.pedantic(lambda: torch.save(t.state_dict(), tmp_path / "t.pt"), rounds=3)
    else:
        benchmark.pedantic(lambda: saver.save(next(steps)), rounds=3)
    _gbps(benchmark)


@pytest.mark.parametrize("impl", ["baseline", "ours", "ours_no_verify"])
def test_load(benchmark, table, impl, tmp_path):
    t, opt = table
    benchmark.group = f"checkpoint load, {ROWS} rows x D={D} + Adam slots ({GB:.2f} GB)"
    benchmark.extra_info["role"] = "baseline" if impl == "baseline" else "ours"
    torch.save(t.state_dict(), tmp_path / "t.pt")
    Saver(tmp_path, tables={"t": t}, optimizers=[opt], fsync=False).save(0)

    def baseline(fresh_table, _):
        fresh_table.load_state_dict(torch.load(tmp_path / "t.pt", weights_only=True))

    def ours(fresh_table, fresh_opt):
        Saver(tmp_path, tables={"t": fresh_table}, optimizers=[fresh_opt]).load(verify=impl == "ours")

    benchmark.pedantic(
        lambda args: (baseline if impl == "baseline" else ours)(*args), setup=lambda: ((adam_table(0),), {}), rounds=3
    )
    _gbps(benchmark)


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_delta_save(benchmark, table, impl, tmp_path):
    t, opt = table
    benchmark.group = f"delta save after a step touching 1% of {ROWS} rows, vs a full save"
    benchmark.extra_info["role"] = "baseline" if impl == "baseline" else "ours"
    saver = Saver(tmp_path, tables={"t": t}, optimizers=[opt], keep=2, fsync=False)
    ids = t.ids()
    touched = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))[: len(ids) // 100]]
    steps = iter(range(1, 10**6, 2))

    def setup():
        step = next(steps)
        saver.save(step)
        t.lookup(touched, step=step + 1)  # a training step's lookups (the rows it updates)
        return (step + 1,), {}

    benchmark.pedantic(lambda step: saver.save(step, delta=impl == "ours"), setup=setup, rounds=3)
