"""`route_keys`, `route_bags` (C++) and `HashTable.lookup_tagged` against pure-torch references."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import recis.core
from recis.core import kernels
from recis.embedding import HashTable, owner


@st.composite
def id_arrays(draw):
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    arrays = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.sampled_from([0, 1, 7, 300]))
        wide = torch.randint(-(2**63), 2**63 - 1, (n,), generator=gen)
        few = torch.randint(-5, 5, (n,), generator=gen)  # many repeats, negative IDs
        arrays.append(torch.where(torch.rand(n, generator=gen) < 0.5, wide, few))
    return arrays, draw(st.sampled_from([1, 2, 3, 5, 7, 8, 100, 65535]))  # owner's modulo by multiplications


@settings(max_examples=60, deadline=None)
@given(id_arrays())
def test_route_keys_matches_reference(args):
    arrays, world = args
    tags = list(range(len(arrays)))
    keys, key_tags, counts, inverse = kernels.embedding.route_keys(arrays, tags, world)
    all_ids = torch.cat(arrays)
    all_tags = torch.cat([torch.full((len(a),), t) for a, t in zip(arrays, tags, strict=True)])
    # every input maps to its own key
    assert torch.equal(keys[inverse], all_ids) and torch.equal(key_tags[inverse].long(), all_tags)
    # keys are distinct (ID, tag) pairs covering exactly the inputs' pairs
    pairs = set(zip(keys.tolist(), key_tags.tolist(), strict=True))
    assert len(pairs) == len(keys) == len(set(zip(all_ids.tolist(), all_tags.tolist(), strict=True)))
    # grouped by owner rank, in rank order, with the counts given
    ranks = owner(keys, world)
    assert torch.equal(ranks, ranks.sort().values)
    assert counts.tolist() == torch.bincount(ranks, minlength=world).tolist()


def test_route_keys_large_batch_on_two_threads():
    """Past 65,536 keys the de-duplication partitions in chunks and each key reads its index back
    in parallel: the same invariants with two threads."""
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(-(2**63), 2**63 - 1, (100_000,), generator=gen)
    arrays = [ids, ids[torch.randint(0, 100_000, (80_000,), generator=gen)]]  # repeats across arrays
    recis.core.set_num_threads(2)
    try:
        keys, key_tags, counts, inverse = kernels.embedding.route_keys(arrays, [0, 0], 3)
    finally:
        recis.core.set_num_threads(None)
    all_ids = torch.cat(arrays)
    assert torch.equal(keys[inverse], all_ids) and (key_tags == 0).all()
    assert torch.equal(keys.sort().values, ids.unique())
    assert counts.tolist() == torch.bincount(owner(keys, 3), minlength=3).tolist()


def test_route_keys_empty_and_bad_world():
    keys, tags, counts, inverse = kernels.embedding.route_keys([torch.zeros(0, dtype=torch.int64)], [0], 3)
    assert len(keys) == len(tags) == len(inverse) == 0 and counts.tolist() == [0, 0, 0]
    for world in (0, 65536):
        with pytest.raises(ValueError, match=r"world must be in \[1, 65535\]"):
            kernels.embedding.route_keys([torch.zeros(1, dtype=torch.int64)], [0], world)


@settings(max_examples=60, deadline=None)
@given(id_arrays(), st.integers(0, 2**31))
def test_route_bags_matches_reference(args, seed):
    arrays, world = args
    ids = torch.cat(arrays)
    gen = torch.Generator().manual_seed(seed)
    cuts = torch.randint(0, len(ids) + 1, (int(torch.randint(0, 6, (1,), generator=gen)),), generator=gen)
    offsets = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([len(ids)])])  # empty bags too
    bags = len(offsets) - 1
    packed, sizes, order = kernels.embedding.route_bags(arrays, offsets, world, [7, bags])
    ranks = owner(ids, world)
    bag = torch.repeat_interleave(torch.arange(bags), offsets.diff())
    blocks = packed.split(sizes.tolist())
    assert len(blocks) == world and torch.equal(order.sort().values, torch.arange(len(ids)))
    sent = []
    for q, block in enumerate(blocks):
        mine = (ranks == q).nonzero().squeeze(1)  # input positions owned by q, in input order
        assert block[:2].tolist() == [7, bags]
        assert torch.equal(block[2 : 2 + bags], torch.bincount(bag[mine], minlength=bags))
        assert torch.equal(block[2 + bags :], ids[mine])
        sent.append(mine)
    assert torch.equal(order, torch.cat(sent))
    unordered = kernels.embedding.route_bags(arrays, offsets, world, [7, bags], False)  # without the weight order
    assert torch.equal(unordered[0], packed) and torch.equal(unordered[1], sizes) and len(unordered[2]) == 0


def test_route_bags_rejects_bad_offsets():
    ids = [torch.arange(5)]
    for offsets, match in [([0, 3], "run from 0 to the 5 IDs"), ([0, 4, 2, 5], "decrease at bag 1")]:
        with pytest.raises(ValueError, match=match):
            kernels.embedding.route_bags(ids, torch.tensor(offsets), 2)
    with pytest.raises(ValueError, match="world"):
        kernels.embedding.route_bags(ids, torch.tensor([0, 5]), 0)


def test_lookup_tagged_equals_per_tag_lookups():
    a, b = HashTable(4), HashTable(4)
    for t in (a, b):
        t.add_logical_table("x")
        t.add_logical_table("y")
    ids = torch.tensor([5, -1, 5, 2**62, 5, -1])
    tags = torch.tensor([0, 0, 1, 1, 0, 1], dtype=torch.int32)
    got = a.lookup_tagged(ids, tags, step=3)
    for tag in (0, 1):
        sel = tags == tag
        want = b.lookup(ids[sel], step=3, tags=[tag])
        torch.testing.assert_close(got.embeddings[got.inverse[sel]], want.embeddings[want.inverse])
    assert len(a) == len(b) == 5  # (5,x) (-1,x) (5,y) (2**62,y) (-1,y)
    empty = a.lookup_tagged(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32))
    assert empty.embeddings.shape == (0, 4)
    with pytest.raises(ValueError, match=r"tags must be in \[0, 65535\]"):
        a.lookup_tagged(ids, torch.full((6,), 70000, dtype=torch.int32))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31),
    st.sampled_from([0, 1, 9, 1000, 70_000]),
    st.sampled_from([1, 50, 4096, 2**22, 2**22 + 4097, 2**24, 2**27]),
)
@example(0, 70_000, 2**24)
def test_unique_rows_matches_reference(seed, n, capacity):
    """Row de-duplication of lookups, ascending with -1 last: one bitmap over the rows when the
    table has at most 64 rows per key or fewer than 2**22 rows (70,000 keys: two threads, each
    listing a range of the bitmap), else buckets of rows with a bitmap each (2**24 with 70,000
    keys: sorted into buckets by two threads); for a capacity far above the batch, the hash path
    (any order). All against torch.unique."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(-1, capacity, (n,), generator=gen)
    recis.core.set_num_threads(2)  # the key parts need more than one thread
    try:
        unique, inverse = kernels.embedding.unique_rows(rows, capacity)
    finally:
        recis.core.set_num_threads(None)
    assert torch.equal(unique[inverse], rows)
    assert sorted(unique.tolist()) == torch.unique(rows).tolist()
    if capacity <= 64 * (8 * n + 65536):
        present = unique[unique >= 0]
        assert torch.equal(present, torch.unique(rows[rows >= 0]))
        assert unique.tolist() == present.tolist() + ([-1] if (rows < 0).any() else [])


@pytest.mark.slow  # a fresh interpreter with RECIS_NO_POPCNT
def test_unique_rows_without_the_popcnt_instruction():
    """The portable counting loops (taken on CPUs without POPCNT) give the same de-duplication."""
    code = (
        "import torch, recis.core; from recis.core import kernels\n"
        "recis.core.set_num_threads(2)\n"
        "g = torch.Generator().manual_seed(3)\n"
        "for n, cap in [(0, 5), (1, 1), (9, 50), (70000, 4096), (1000, 2**20), (70000, 2**24)]:\n"
        "    rows = torch.randint(-1, cap, (n,), generator=g)\n"
        "    unique, inverse = kernels.embedding.unique_rows(rows, cap)\n"
        "    assert torch.equal(unique[inverse], rows)\n"
        "    present = unique[unique >= 0]\n"
        "    assert torch.equal(present, torch.unique(rows[rows >= 0])), (n, cap)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, RECIS_NO_POPCNT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_unique_rows_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"rows\[1\]=-2 is outside \[-1, 10\)"):
        kernels.embedding.unique_rows(torch.tensor([3, -2]), 10)
    with pytest.raises(ValueError, match=r"rows\[0\]=10 is outside"):
        kernels.embedding.unique_rows(torch.tensor([10]), 10)


def test_lookup_rows_ascending_with_missing_last():
    table = HashTable(4)
    table.lookup(torch.tensor([30, 10, 20]))
    row = {i: table.lookup(torch.tensor([i]), insert=False).rows.item() for i in (10, 20, 30)}
    found = table.lookup(torch.tensor([20, 99, 30, 20, -7, 99]), insert=False)
    assert found.rows.tolist() == [*sorted([row[20], row[30]]), -1]
    assert found.rows[found.inverse].tolist() == [row[20], -1, row[30], row[20], -1, -1]
