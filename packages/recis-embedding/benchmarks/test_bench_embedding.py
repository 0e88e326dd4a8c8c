"""pytest-benchmark: the embedding engine against plain PyTorch, one group per workload (`make bench`).

Groups: hit lookup + gather vs `index_select` (the memory-bound ceiling) on a 2M-row D=64 table;
pooled forward on the Zipf workload of tools/bench/workloads.py vs `nn.EmbeddingBag`; a serving
lookup of a frozen table (3 pooled features and 2 padded histories, batch 512) vs the same in
torch ops (`frozen_embed_reference`: binary search over the sorted IDs, gather, pool, pad). The
10M-row figures of docs/benchmarks.md come from tools/bench/embedding.py.
"""

import sys
from pathlib import Path

import pytest
import torch

from recis.embedding import EmbeddingEngine, EmbeddingSpec, FrozenTable, HashTable, Initializer
from recis.embedding.frozen import FrozenBags, frozen_embed_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from workloads import zipf_batch

ROWS, D, KEYS = 2_000_000, 64, 65536


@pytest.fixture(scope="module")
def filled():
    table = HashTable(D, Initializer.uniform(-0.05, 0.05))
    keys = torch.randint(-(2**63), 2**63 - 1, (ROWS,), generator=torch.Generator().manual_seed(0))
    for chunk in keys.split(1 << 20):
        table.lookup(chunk)
    dense = torch.empty(ROWS, D).uniform_(-0.05, 0.05)
    pick = torch.randint(0, ROWS, (KEYS,), generator=torch.Generator().manual_seed(1))
    return table, keys[pick].unique(), dense, pick


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_hit_lookup(benchmark, filled, impl):
    table, queries, dense, pick = filled
    benchmark.group = f"hit lookup + gather, D={D}, {ROWS // 10**6}M rows, {KEYS} keys"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(dense.index_select, 0, pick)
    else:
        out = benchmark(table.lookup, queries, 1).embeddings
    assert out.shape[1] == D and out.shape[0] >= len(queries) * 0.99


@pytest.fixture(scope="module")
def zipf():
    batch = zipf_batch()
    engine = EmbeddingEngine({name: EmbeddingSpec(D) for name in batch})
    engine(batch)  # insert once: the timed forwards are all hits
    engine.clear_sparse_grads()
    engine.eval()
    bags = [torch.nn.EmbeddingBag(1_000_000, D, mode="sum") for _ in batch]
    return batch, engine, bags


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_pooled_forward(benchmark, zipf, impl):
    batch, engine, bags = zipf
    benchmark.group = "pooled forward, Zipf workload, 8 features x 4096 bags of 10-30 IDs"
    benchmark.extra_info["role"] = impl

    @torch.no_grad()
    def baseline():
        return [bag(r.values, r.offsets[:-1]) for bag, r in zip(bags, batch.values(), strict=True)]

    @torch.no_grad()
    def ours():
        out = engine(batch)
        return [out[name] for name in batch]

    outs = benchmark(baseline if impl == "baseline" else ours)
    assert all(o.shape == (4096, D) for o in outs)


@pytest.fixture(scope="module")
def serving():
    g = torch.Generator().manual_seed(2)
    ids = [torch.randint(-(2**40), 2**40, (100_000,), generator=g).unique() for _ in range(2)]
    table = FrozenTable(
        torch.cat(ids), torch.tensor([0, len(ids[0]), len(ids[0]) + len(ids[1])]),
        torch.randn(len(ids[0]) + len(ids[1]), 16, generator=g), ["items", "categories"],
    )  # fmt: skip
    pick = lambda t, n: ids[t][torch.randint(0, len(ids[t]), (n,), generator=g)]
    lengths = torch.randint(0, 31, (512,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    bags = [FrozenBags(pick(t, 512), None, 512, None, t, "sum") for t in (0, 1, 0)]
    bags += [FrozenBags(pick(t, int(offsets[-1])), offsets, 512, None, t, "dense", 30, True) for t in (0, 1)]
    return table, bags


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_frozen_serving_lookup(benchmark, serving, impl):
    table, bags = serving
    benchmark.group = "serving lookup, frozen 200k x 16 table, batch 512: 3 pooled, 2 histories of <= 30"
    benchmark.extra_info["role"] = impl
    outs = benchmark(*((frozen_embed_reference, table) if impl == "baseline" else (table.embed,)), bags)
    if impl == "ours":
        for (got, *_), (ref, *_) in zip(outs, frozen_embed_reference(table, bags), strict=True):
            torch.testing.assert_close(got, ref)
