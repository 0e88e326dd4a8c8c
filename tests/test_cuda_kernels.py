"""Each CUDA kernel of recis-core against its torch twin (or the CPU kernel), on random inputs with
the edge cases: empty batches, empty bags and lists, one row, negative and 64-bit IDs.

Every test here is marked `cuda`: without a CUDA device, or with a core built without CUDA, they
are skipped (reported as not run). `RECIS_REQUIRE_CUDA=1` (set by tools/device/check.sh) turns
those skips into failures, so a GPU run cannot pass by running nothing.
"""

from __future__ import annotations

import os
import types

import pytest
import torch

from recis import features as F
from recis.core import Ragged, kernels
from recis.embedding import DeviceTable, Initializer, ops
from recis.embedding.keymap import KeyMap
from recis.optim import row_updates

pytestmark = pytest.mark.cuda

EDGE_IDS = [0, 1, -1, 2**63 - 1, -(2**63), 2**32, -(2**31)]


@pytest.fixture(autouse=True)
def _gpu() -> None:
    missing = (
        "needs a CUDA device"
        if not torch.cuda.is_available()
        else "needs recis-core built with CUDA"
        if kernels.gpu is None
        else None
    )
    if missing and os.environ.get("RECIS_REQUIRE_CUDA") == "1":
        pytest.fail(f"RECIS_REQUIRE_CUDA=1: {missing}")
    if missing:
        pytest.skip(missing)


def random_ids(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wide = torch.randint(-(2**63), 2**63 - 1, (n // 2,), generator=g)
    narrow = torch.randint(-1000, 1000, (n - n // 2,), generator=g)
    return torch.cat([wide, narrow, torch.tensor(EDGE_IDS)])


# -- the ID map ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_map_find_and_claim_match_the_twin(n):
    maps = [KeyMap(torch.device("cuda"), capacity=16, use_kernels=k) for k in (True, False)]
    ids = random_ids(n, seed=n).unique().cuda()
    tags = (ids.abs() % 3).to(torch.int64)
    for lo in range(0, len(ids), 1500):  # batches that make the map grow
        for m in maps:
            m.insert(ids[lo : lo + 1500], tags[lo : lo + 1500], torch.arange(lo, lo + len(ids[lo : lo + 1500])).cuda())
    probe = torch.cat([ids, ids + 1, ids[:0]])
    probe_tags = torch.cat([tags, tags, tags[:0]])
    found = [m.find(probe, probe_tags) for m in maps]
    assert torch.equal(found[0], found[1])
    assert torch.equal(found[0][: len(ids)].cpu(), torch.arange(len(ids)))
    assert maps[0].size == maps[1].size == len(ids)


def test_map_kernels_run_on_the_callers_stream():
    m = KeyMap(torch.device("cuda"), use_kernels=True)
    ids = random_ids(3000, seed=1).unique().cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        m.insert(ids, torch.zeros_like(ids), torch.arange(len(ids), device="cuda"))
        found = m.find(ids, torch.zeros_like(ids))
    side.synchronize()
    assert torch.equal(found.cpu(), torch.arange(len(ids)))


# -- the table: lookups, pooling --------------------------------------------------------------------


def tables(**kw) -> list[DeviceTable]:
    kw = {"dim": 16, "initializer": Initializer.uniform(-1, 1), "seed": 3, "device": "cuda"} | kw
    return [DeviceTable(**kw, use_kernels=k) for k in (True, False)]


def canon(state: dict) -> dict:
    """A table's state with rows sorted by (tag, ID), on the CPU: equal tables give equal dicts."""
    order = torch.argsort(state["ids"], stable=True)
    order = order[torch.argsort(state["tags"][order].long(), stable=True)]
    return {k: v[order].cpu() for k, v in state.items()}


@pytest.mark.parametrize("min_count", [1, 2])  # 2: rejected keys, a -1 row among the distinct ones
def test_lookups_match_the_twin(min_count):
    pair = tables(min_count=min_count)
    for step in range(4):
        ids = random_ids(4000, seed=step).cuda()
        found = [t.lookup([ids, ids[:100]], step=step, tags=[0, 1]) for t in pair]
        assert torch.equal(found[0].rows, found[1].rows) and torch.equal(found[0].inverse, found[1].inverse)
        got, want = (f.embeddings[f.inverse] for f in found)
        assert torch.equal(got, want)
    want = canon(pair[1].state_dict())
    for name, got in canon(pair[0].state_dict()).items():
        assert torch.equal(got, want[name]), name


@pytest.mark.parametrize("n, capacity", [(0, 0), (3, 0), (1, 1), (5000, 32), (5000, 33), (20_000, 100_000)])
def test_row_dedup_matches_the_twin(n, capacity):
    pair = tables()
    for t in pair:
        t.lookup(torch.arange(capacity, device="cuda"))  # rows 0 .. capacity - 1
    rows = torch.randint(-1, capacity, (n,), generator=torch.Generator().manual_seed(n)).cuda()
    (unique, inverse), (want_unique, want_inverse) = (t._unique_rows(rows) for t in pair)
    assert torch.equal(unique, want_unique) and torch.equal(inverse, want_inverse)
    assert torch.equal(unique[inverse], rows)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [False, True])
def test_pool_forward_matches_the_twin(combiner, weighted):
    pair = tables()
    g = torch.Generator().manual_seed(7)
    lengths = torch.randint(0, 6, (300,), generator=g)
    lengths[:3] = torch.tensor([0, 1, 0])  # empty bags and a one-row bag
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).cuda()
    ids = random_ids(int(lengths.sum()) - 7, seed=2).cuda()
    weights = torch.rand(len(ids), generator=g).cuda() if weighted else None
    found = [t.lookup(ids, step=1) for t in pair]
    got, want = (t.pool(f.rows, f.inverse, offsets, weights, combiner) for t, f in zip(pair, found, strict=True))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    unknown = ids + 1  # mostly absent: zeros
    got, want = (t.pool_keys([unknown], [0], offsets, weights, [combiner, "sum"], [150, 150], True) for t in pair)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    empty = torch.zeros(1, dtype=torch.int64, device="cuda")
    got = pair[0].pool(found[0].rows, found[0].inverse[:0], empty, None, combiner)
    assert got.shape == (0, 16)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_pool_backward_matches_the_cpu(combiner):
    g = torch.Generator().manual_seed(11)
    lengths = torch.randint(0, 5, (500,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    n, unique = int(offsets[-1]), 97
    inverse = torch.randint(0, unique, (n,), generator=g)
    weights = torch.rand(n, generator=g)
    grad = torch.randn(250, 2 * 8, generator=g)  # two runs of 250 bags side by side (batch-major)
    runs = [250, 250]
    code = ops.COMBINERS.index(combiner)
    args = (inverse, offsets, weights, [code, 0], runs, unique, True)
    want = ops.pooled_embedding_backward(grad, *args)
    got = ops.pooled_embedding_backward(grad.cuda(), *(a.cuda() if isinstance(a, torch.Tensor) else a for a in args))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)


# -- the sparse optimizers' updates ----------------------------------------------------------------

KINDS = [(k, False) for k in sorted(row_updates._SLOTS)] + [("adam", True), ("adam_tf", True)]


@pytest.mark.parametrize("kind, decoupled", KINDS)
def test_sparse_update_matches_the_twin(kind, decoupled):
    config = types.SimpleNamespace(
        lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0 if kind == "ftrl" else 0.01, l1=0.001,
        l2=0.01, ftrl_beta=1.0, grad_scale=0.5, decoupled=decoupled, lr_decay=0.01, step=1,
    )  # fmt: skip
    pair = tables()
    ids = random_ids(2000, seed=5).cuda()
    rows = [t.lookup(ids, step=1).rows for t in pair]
    for t in pair:
        for slot in row_updates._SLOTS[kind]:
            t.add_slot(slot, 1 if slot == "rowwise_adagrad.sum" else 16, 0.1)
    g = torch.Generator().manual_seed(9)
    skipped = torch.tensor([-1], device="cuda")  # a -1 row is left alone
    for step in (1, 2, 3):
        config.step = step
        grad = torch.randn(len(rows[0]) + 1, 16, generator=g).cuda()
        for t, r in zip(pair, rows, strict=True):
            row_updates.sparse_update(t, kind, config, torch.cat([r, skipped]), grad)
    want = canon(pair[1].state_dict())
    for name, got in canon(pair[0].state_dict()).items():
        torch.testing.assert_close(got, want[name], rtol=2e-5, atol=1e-6, msg=name)


# -- feature ops -----------------------------------------------------------------------------------


def strings(n: int, seed: int) -> Ragged:
    g = torch.Generator().manual_seed(seed)
    words = ["", "a", "user_42", "ünïcödé", "x" * 100, "y" * 17, "z" * 33, "w" * 70]
    return F.string_column([words[p] for p in torch.randint(0, len(words), (n,), generator=g).tolist()])


@pytest.mark.parametrize("algo, seed", [("farm", 0), ("murmur", 0), ("murmur", 12345)])
@pytest.mark.parametrize("buckets", [None, 1000])
def test_string_hashing_matches_the_cpu(algo, seed, buckets):
    op = F.Hash(algo=algo, seed=seed, buckets=buckets)
    for n in (0, 1, 3000):
        column = strings(n, seed=n)
        assert torch.equal(op(column.to("cuda")).cpu(), op(column))
        lists = Ragged.from_lengths(column, [n])  # list<string>: one row holding them all
        got, want = op(lists.to("cuda")), op(lists)
        assert torch.equal(got.values.cpu(), want.values) and torch.equal(got.offsets.cpu(), want.offsets)
        got = F.hash_strings(column.offsets.cuda(), column.values.cuda(), algo, buckets or 0, seed)
        assert got.is_cuda and torch.equal(got.cpu(), op(column))


def test_bucketize_and_mod_match_the_cpu():
    g = torch.Generator().manual_seed(4)
    values = torch.cat([torch.randn(5000, generator=g, dtype=torch.float64) * 10, torch.tensor([0.0, 1.0, -1.0])])
    edges = [-5.0, -1.0, 0.0, 1.0, 2.5, 7.0]
    for semantics in ("float64", "tensorflow"):
        for x in (values, values.float(), torch.randint(-20, 20, (300,), generator=g), values[:0]):
            assert torch.equal(F.bucketize(x.cuda(), edges, semantics).cpu(), F.bucketize(x, edges, semantics))
    with pytest.raises(ValueError, match="position 2 is NaN"):
        F.bucketize(torch.tensor([0.0, 1.0, float("nan")], device="cuda"), edges)
    ids = random_ids(5000, seed=8)
    ragged = Ragged.from_lengths(ids[:12], [0, 5, 7, 0])
    for n in (1, 7, 2**40 + 3, 2**63 - 1):
        assert torch.equal(F.mod(ids.cuda(), n).cpu(), F.mod(ids, n))
        assert torch.equal(F.mod(ragged.to("cuda"), n).values.cpu(), F.mod(ragged, n).values)


@pytest.mark.parametrize("k", [2, 3, 17])  # 17 inputs: above the kernel's bound, the torch twin
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_matches_the_cpu(k, weighted):
    g = torch.Generator().manual_seed(k)
    rows = 400 if k < 17 else 8
    columns = []
    for f in range(k):
        lengths = torch.randint(0, 4 if k < 17 else 2, (rows,), generator=g)
        lengths[0] = 0 if f == 0 else lengths[0]  # a row that crosses to nothing
        total = int(lengths.sum())
        ids = random_ids(total, seed=f)[-total:] if total else torch.zeros(0, dtype=torch.int64)
        w = torch.rand(total, generator=g) if weighted and f % 2 == 0 else None
        columns.append(Ragged.from_lengths(ids, lengths, w))
    want = F.cross(columns, buckets=10_000, seed=3)
    got = F.cross([c.to("cuda") for c in columns], buckets=10_000, seed=3)
    assert torch.equal(got.values.cpu(), want.values) and torch.equal(got.offsets.cpu(), want.offsets)
    assert (got.weights is None) == (want.weights is None)
    if want.weights is not None:
        assert torch.equal(got.weights.cpu(), want.weights)
    dense = [torch.randint(-(2**62), 2**62, (50,), generator=g) for _ in range(2)]
    assert torch.equal(F.cross([d.cuda() for d in dense]).cpu(), F.cross(dense))
