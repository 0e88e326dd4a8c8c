"""pytest-benchmark: sparse optimizer steps against torch.optim on the same rows (`make bench`).

One Adam step over 210k distinct rows of D=64 (the unique rows of one step of the Zipf workload in
tools/bench/sparse_step.py): ours on a hash table vs `torch.optim.SparseAdam` on an `nn.Embedding`
with a sparse gradient of the same rows. The full training step is tools/bench/sparse_step.py.
"""

import pytest
import torch
from torch import nn

from recis.embedding import HashTable, Initializer, SparseGrad
from recis.optim import SparseAdam

ROWS, TOUCHED, D = 1_000_000, 210_000, 64


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(-(2**63), 2**63 - 1, (ROWS,), generator=g)
    table = HashTable(D, Initializer.uniform(-0.05, 0.05))
    for chunk in ids.split(1 << 20):
        table.lookup(chunk)
    pick = torch.randperm(ROWS, generator=g)[:TOUCHED]
    rows = table.lookup(ids[pick], insert=False).rows
    grad = torch.randn(TOUCHED, D, generator=g)
    emb = nn.Embedding(ROWS, D, sparse=True)
    return table, rows, emb, pick, grad


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_adam_step(benchmark, setup, impl):
    table, rows, emb, pick, grad = setup
    benchmark.group = f"sparse Adam step, {TOUCHED // 1000}k of {ROWS // 10**6}M rows, D={D}"
    benchmark.extra_info["role"] = impl
    before = emb.weight[pick[:1]].clone() if impl == "baseline" else table.gather(rows[:1])
    if impl == "baseline":
        opt = torch.optim.SparseAdam(emb.parameters(), lr=1e-3)
        # Indices valid by construction: the invariant checks are opted out of explicitly (torch warns otherwise).
        sparse = torch.sparse_coo_tensor(pick[None], grad, (ROWS, D), check_invariants=False).coalesce()

        def step():
            emb.weight.grad = sparse
            opt.step()

    else:
        opt = SparseAdam(table, lr=1e-3)

        def step():
            opt.accumulate([SparseGrad(table, rows, grad)])
            opt.step()

    benchmark(step)
    after = emb.weight[pick[:1]] if impl == "baseline" else table.gather(rows[:1])
    assert not torch.equal(before, after)  # the step really updated the rows
