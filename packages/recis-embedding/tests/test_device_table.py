"""DeviceTable (the table in torch tensor ops, for GPUs) against the core's CPU HashTable: after the
same batches both hold the same keys, rows, slots, metadata and counters, whatever the admission
and eviction settings; the row initializer twin is bit-exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recis.embedding import Eviction, HashTable, Initializer
from recis.embedding.device_table import DeviceTable
from recis.embedding.row_init import init_rows

EDGE_IDS = [0, 1, -1, 2**63 - 1, -(2**63), 2**32, -(2**31)]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def canon(state: dict) -> dict:
    """Rows sorted by (tag, ID): equal tables give equal dicts whatever their row indices."""
    order = torch.argsort(state["ids"], stable=True)
    order = order[torch.argsort(state["tags"][order].long(), stable=True)]
    return {k: v[order].cpu() for k, v in state.items()}


def assert_same_rows(a, b) -> None:
    sa, sb = canon(a.state_dict()), canon(b.state_dict())
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].to(sb[k].dtype), sb[k]), k


def assert_same_tables(a, b) -> None:
    assert_same_rows(a, b)
    counters = ("lookups", "hits", "inserts", "admitted", "rejected", "evicted", "rows")
    assert {k: a.stats()[k] for k in counters} == {k: b.stats()[k] for k in counters}


def pair(device: str = "cpu", **kw):
    kw = {"dim": 8, "initializer": Initializer.uniform(-1, 1), "seed": 5} | kw
    tables = HashTable(**kw), DeviceTable(**kw, device=device)
    for t in tables:
        t.add_logical_table("a")
        t.add_logical_table("b")
        t.add_slot("m", kw["dim"], 0.5)
        t.add_slot("s", 1, 0.0)
        t.track_evictions()
    return tables


def drive(tables, steps: int, seed: int) -> None:
    """The same batches into both tables, checking every result on the way."""
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        a = torch.randint(0, 400, (300,), generator=g) * 7919 - 2**40
        b = torch.cat([torch.randint(-50, 50, (100,), generator=g), torch.tensor(EDGE_IDS)])
        found = [t.lookup([a, b], step=step, tags=[0, 1]) for t in tables]
        assert torch.equal(found[0].embeddings[found[0].inverse], found[1].embeddings[found[1].inverse].cpu())
        assert torch.equal(found[0].rows[-1:] < 0, found[1].rows[-1:].cpu() < 0)  # a -1 comes last
        read = [t.lookup(a[:50] + 1, step=step, insert=False) for t in tables]
        assert torch.equal(read[0].embeddings[read[0].inverse], read[1].embeddings[read[1].inverse].cpu())
        assert tables[0].evict(step) == tables[1].evict(step)
        logs = [t.take_evicted() for t in tables]
        keys = [sorted(zip(ids.tolist(), tags.tolist(), strict=True)) for ids, tags in logs]
        assert keys[0] == keys[1]
        assert_same_tables(*tables)


@pytest.mark.parametrize(
    "min_count, eviction",
    [
        (1, None),
        (2, Eviction(max_age=3)),
        (1, Eviction(capacity=300, policy="lfu")),
        (3, Eviction(max_age=4, capacity=250)),
    ],
)
def test_same_batches_give_the_same_table(min_count, eviction):
    drive(pair(min_count=min_count, eviction=eviction), steps=10, seed=1)


@settings(max_examples=15)
@given(st.integers(1, 4), st.integers(0, 400), st.sampled_from(["lru", "lfu"]), st.integers(0, 2**31))
def test_same_table_on_random_settings(min_count, capacity, policy, seed):
    drive(pair(min_count=min_count, eviction=Eviction(max_age=5, capacity=capacity, policy=policy)), 6, seed)


@pytest.mark.parametrize(
    "init",
    [
        Initializer.uniform(-0.05, 0.05),
        Initializer.xavier_uniform(),
        Initializer.constant(0.25),
        Initializer.normal(0.1, 0.02),
        Initializer.truncated_normal(0.0, 0.01),
    ],
)
@pytest.mark.parametrize("dim", [1, 13, 64])
def test_row_initializer_twin_is_bit_exact(init, dim):
    ids = torch.cat([torch.tensor(EDGE_IDS), torch.randint(-(2**63), 2**63 - 1, (500,))]).unique()
    found = HashTable(dim, init, seed=77).lookup(ids)
    seeds = torch.full((len(ids),), 77, dtype=torch.int64)
    assert torch.equal(init_rows(init, seeds, ids, dim), found.embeddings[found.inverse])


def test_unregistered_tags_initialize_as_in_the_core():
    tables = HashTable(4, seed=9), DeviceTable(4, seed=9, device="cpu")
    found = [t.lookup([torch.tensor([1, 2]), torch.tensor([1, 3])], tags=[0, 7]) for t in tables]
    assert torch.equal(found[0].embeddings[found[0].inverse], found[1].embeddings[found[1].inverse])


def test_pooling_and_gathering_match_the_core():
    tables = pair()
    ids = torch.randint(0, 30, (40,))
    found = [t.lookup(ids, step=1) for t in tables]
    offsets, weights = torch.tensor([0, 5, 5, 17, 40]), torch.rand(40)
    for combiner in ("sum", "mean", "sqrtn"):
        want = tables[0].pool(found[0].rows, found[0].inverse, offsets, weights, combiner)
        got = tables[1].pool(found[1].rows, found[1].inverse, offsets, weights, combiner)
        torch.testing.assert_close(got.cpu(), want)
        keys = [ids[:25], ids[25:] + 1000]  # the second part partly unknown: zeros
        want = tables[0].pool_keys(keys, [0, 1], offsets, None, [combiner, "sum"], [3, 1], batch_major=False)
        got = tables[1].pool_keys(keys, [0, 1], offsets, None, [combiner, "sum"], [3, 1], batch_major=False)
        torch.testing.assert_close(got.cpu(), want)
    gathered = [t.gather(f.rows)[f.inverse].cpu() for t, f in zip(tables, found, strict=True)]  # per key
    assert torch.equal(gathered[0], gathered[1])
    for t in tables:
        with pytest.raises(ValueError, match=r"rows\[1\]=999 is not a live row"):
            t.gather(torch.tensor([0, 999]))


def test_export_and_load_round_trip_and_validate_first():
    source, target = pair()[1], pair()[1]
    source.lookup(torch.arange(5000), step=2)
    chunks = [source.export(b, b + 700) for b in range(0, source.row_capacity, 700)]
    for chunk in chunks:
        target.load_state_dict(chunk)
    assert_same_rows(source, target)
    bad = chunks[0] | {"embeddings": chunks[0]["embeddings"][:, :4]}
    with pytest.raises(ValueError, match=r"embeddings must be \(\d+, 8\)"):
        target.load_state_dict(bad)
    with pytest.raises(ValueError, match="no slot 'nope'"):
        target.load_state_dict(chunks[0] | {"slot.nope": chunks[0]["slot.m"]})
    assert_same_rows(source, target)  # nothing written by the failed loads


def test_storage_grows_without_losing_rows():
    t = DeviceTable(4, Initializer.uniform(-1, 1), block_rows=16, device="cpu")
    first = t.lookup(torch.arange(10), step=0)
    t.lookup(torch.arange(10, 100_000), step=1)
    again = t.lookup(torch.arange(10), step=2)
    assert torch.equal(first.embeddings, again.embeddings) and len(t) == 100_000


def test_bad_input_fails_clearly():
    t = DeviceTable(4, device="cpu")
    with pytest.raises(TypeError, match="IDs must be integers"):
        t.lookup(torch.tensor([1.5]))
    with pytest.raises(ValueError, match=r"dim must be an int in \[1, 1048576\]"):
        DeviceTable(0, device="cpu")
    with pytest.raises(ValueError, match="unknown initializer 'gaussian'"):
        DeviceTable(4, Initializer("gaussian"), device="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows must be in"):
        t.reserve(2**63 - 1)
    with pytest.raises(ValueError, match=r"tags must be in \[0, 65535\], got 65536"):
        t.lookup(torch.tensor([1]), tags=[65536])
    with pytest.raises(ValueError, match=r"tags must be in \[0, 65535\]"):
        t.lookup_tagged(torch.tensor([1, 2]), torch.tensor([0, -1]))


@pytest.mark.cuda
@CUDA
def test_on_a_gpu_the_table_matches_the_core():
    drive(pair(device="cuda", min_count=2, eviction=Eviction(max_age=4, capacity=250)), steps=8, seed=3)
