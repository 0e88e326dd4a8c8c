"""HashTable against a Python model: inserts, admission, eviction, reuse, export, initializers."""

import random

import pytest
import torch

import recis.core
from recis.embedding import Eviction, HashTable, Initializer
from recis.embedding.sharding import mix64

EDGE_IDS = [0, -1, 1, 2**63 - 1, -(2**63), 2**32, -(2**31)]


def rows_of(table: HashTable, ids, tags=None, step: int = 0) -> torch.Tensor:
    """Each key's row (-1: none); inserts only when a step is given."""
    found = table.lookup(ids, step=step, insert=step > 0, tags=tags)
    return found.rows[found.inverse]


def rows_by_id(table: HashTable) -> dict[int, list[float]]:
    state = table.state_dict()
    return dict(zip(state["ids"].tolist(), state["embeddings"].tolist(), strict=True))


def test_lookup_dedups_and_is_stable_across_calls():
    t = HashTable(dim=4)
    ids = torch.tensor([5, *EDGE_IDS, 5, -1])
    a = t.lookup(ids, step=1)
    assert len(t) == len(set(ids.tolist())) == a.embeddings.shape[0]
    assert torch.equal(a.embeddings[a.inverse], t.lookup(ids, step=2).embeddings[a.inverse])
    uniq = torch.tensor(sorted(set(ids.tolist())))
    assert set(t.ids().tolist()) == set(uniq.tolist())
    # inverse maps every input to its own row
    assert [a.rows[i].item() for i in a.inverse.tolist()] == [
        t.lookup(torch.tensor([x])).rows.item() for x in ids.tolist()
    ]


def test_against_python_model_with_growth_and_eviction():
    """Random inserts, read-only lookups and evictions; the table must agree with a dict model."""
    rnd = random.Random(0)
    t = HashTable(dim=2, eviction=Eviction(max_age=5), block_rows=64)
    last_seen: dict[int, int] = {}
    for step in range(1, 60):
        ids = [rnd.choice([rnd.randrange(-(2**63), 2**63), rnd.randrange(300)]) for _ in range(rnd.randrange(0, 400))]
        insert = step % 7 != 0
        got = t.lookup(torch.tensor(ids, dtype=torch.int64), step=step, insert=insert)
        found = {x: int(got.rows[got.inverse[i]]) >= 0 for i, x in enumerate(ids)}
        for x in ids:
            assert found[x] == (insert or x in last_seen), (step, x)
            if found[x] and insert:  # read-only lookups leave the metadata alone
                last_seen[x] = step
        if step % 4 == 0:
            dropped = t.evict(step)
            old = {x for x, s in last_seen.items() if s < step - 5 + 1}
            assert dropped == len(old)
            for x in old:
                del last_seen[x]
        assert len(t) == len(last_seen)
        assert set(t.ids().tolist()) == set(last_seen)
    assert t.stats()["evicted"] > 0


@pytest.mark.parametrize(
    "init, dim", [(Initializer.normal(0, 1), 8), (Initializer.uniform(-1, 1), 13), (Initializer.xavier_uniform(), 64)]
)
def test_new_rows_depend_only_on_seed_and_id(init, dim):
    ids = torch.randint(-(2**62), 2**62, (5000,))
    a = HashTable(dim=dim, initializer=init, seed=3)
    b = HashTable(dim=dim, initializer=init, seed=3)
    recis.core.set_num_threads(1)
    a.lookup(ids)
    recis.core.set_num_threads(2)
    for chunk in reversed(ids.split(777)):
        b.lookup(chunk)
    recis.core.set_num_threads(None)
    assert rows_by_id(a) == rows_by_id(b)
    c = HashTable(dim=dim, initializer=init, seed=4)
    c.lookup(ids[:10])
    assert rows_by_id(c)[ids[0].item()] != rows_by_id(a)[ids[0].item()]
    rows = a.lookup(ids).embeddings
    assert len(torch.unique(rows, dim=0)) == len(ids)  # no two IDs share a row's values
    assert len(torch.unique(rows[0])) == dim  # nor two positions of one row


def test_parallel_inserts_assign_the_same_rows_as_one_thread():
    """Misses are inserted with map slots claimed in parallel: with 1 or 2 threads every key gets the
    same row index (rows in key order, freed rows first), the map finds them all, and it grows
    (rehashes in parallel) on the way."""
    ids = torch.randint(-(2**63), 2**63 - 1, (30_000,))
    ids[:3] = torch.tensor([0, -1, 2**63 - 1])
    states = []
    for threads in (1, 2):
        recis.core.set_num_threads(threads)
        t = HashTable(dim=4, eviction=Eviction(max_age=1), block_rows=1024)
        for chunk in ids[:20_000].split(6_000):
            t.lookup(chunk, step=0)
        assert t.evict(2) == 20_000  # everything freed: the next inserts reuse rows
        first = t.lookup(ids[20_000:], step=3).rows
        t.lookup(ids[:5_000], step=3)
        found = t.lookup(ids[20_000:], step=3, insert=False)
        assert torch.equal(found.rows, first)
        assert len(t) == 15_000 and t.stats()["inserts"] == 35_000
        states.append(t.state_dict())
    recis.core.set_num_threads(None)
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def uniform_rows_reference(ids: list[int], seed: int, low: float, high: float, dim: int) -> torch.Tensor:
    """The uniform initializer in int64 and float32 torch ops, one rounding per float operation:
    a row stream mix64(seed ^ mix64(id)), then per position k the lowbias32 hash of
    (stream low half + k * golden ratio) mixed with the high half, on a 2^-24 grid."""
    m32 = 2**32 - 1

    def mix32(x: torch.Tensor) -> torch.Tensor:  # 32-bit values held in int64 (products wrap)
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D & m32
        x = x ^ (x >> 15)
        x = x * 0x846CA68B & m32
        return x ^ (x >> 16)

    stream = mix64(seed ^ mix64(torch.tensor(ids)))
    lo, hi = (stream & m32)[:, None], (stream >> 32 & m32)[:, None]
    grid = mix32(mix32(lo + torch.arange(dim) * 0x9E3779B9 & m32) ^ hi) >> 8
    lo_f, width = torch.tensor(low, dtype=torch.float32), torch.tensor(high - low, dtype=torch.float32)
    top = torch.nextafter(lo_f + width, lo_f)
    return torch.minimum(lo_f + width * (grid.to(torch.float32) * 2.0**-24), top)


@pytest.mark.parametrize("dim", [1, 13, 64, 100])
def test_uniform_rows_are_the_same_bits_on_every_machine(dim):
    """Pins the initializer bit for bit against a reference of its own arithmetic: the vector
    clones (AVX-512, AVX2, baseline) must round alike, so no machine fuses a multiply-add."""
    ids = [*EDGE_IDS, *torch.randint(-(2**63), 2**63 - 1, (50,)).tolist()]
    bound = float(torch.tensor((6 / (1 + dim)) ** 0.5, dtype=torch.float32))  # xavier: rounded once
    for init, low, high in [
        (Initializer.uniform(-0.05, 0.05), -0.05, 0.05),
        (Initializer.xavier_uniform(), -bound, bound),
    ]:
        got = HashTable(dim=dim, initializer=init, seed=12345).lookup(torch.tensor(ids))
        want = uniform_rows_reference(ids, 12345, low, high, dim)
        assert torch.equal(got.embeddings[got.inverse], want), (init, dim)


@pytest.mark.parametrize(
    "init, check",
    [
        (Initializer.constant(0.25), lambda e: bool((e == 0.25).all())),
        (Initializer.uniform(-0.5, 0.5), lambda e: e.min() >= -0.5 and e.max() < 0.5 and abs(e.mean()) < 0.01),
        (Initializer.uniform(0.0, 1.0), lambda e: abs(e.std() - 12**-0.5) < 0.005 and len(e.unique()) > 60000),
        (Initializer.normal(1.0, 2.0), lambda e: abs(e.mean() - 1) < 0.05 and abs(e.std() - 2) < 0.05),
        (Initializer.truncated_normal(0.0, 1.0), lambda e: e.abs().max() <= 2.0 and abs(e.std() - 0.88) < 0.03),
        (Initializer.xavier_uniform(), lambda e: e.abs().max() <= (6 / 17) ** 0.5 and e.std() > 0.3),
    ],
)
def test_initializer_distributions(init, check):
    t = HashTable(dim=16, initializer=init)
    emb = t.lookup(torch.arange(4000)).embeddings
    assert check(emb)


def test_frequency_admission_allocates_no_row_until_count():
    t = HashTable(dim=4, min_count=3)
    for seen in (1, 2):
        got = t.lookup(torch.tensor([42, 42]), step=seen)
        assert got.rows.tolist() == [-1] and len(t) == 0 and bool((got.embeddings == 0).all())
    got = t.lookup(torch.tensor([42]), step=3)
    assert got.rows.item() >= 0 and len(t) == 1
    assert t.stats()["rejected"] == 2 and t.stats()["inserts"] == 1


def test_read_only_lookup_inserts_nothing():
    t = HashTable(dim=4)
    t.lookup(torch.tensor([1]))
    got = t.lookup(torch.tensor([1, 2]), insert=False)
    assert len(t) == 1 and got.rows[got.inverse[1]].item() == -1
    assert bool((got.embeddings[got.inverse[1]] == 0).all())


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_capacity_eviction(policy):
    t = HashTable(dim=2, eviction=Eviction(capacity=3, policy=policy))
    t.lookup(torch.tensor([1, 2, 3, 4, 5]), step=1)
    t.lookup(torch.tensor([1, 1, 2]), step=2)  # frequencies: 1 -> 2, 2 -> 2 (deduped per call)
    t.lookup(torch.tensor([5]), step=3)
    assert t.evict(step=3) == 2
    kept = set(t.ids().tolist())
    # lru keeps the 3 most recent {5, 1, 2}; lfu keeps the most frequent {1, 2, 5} (5: freq 2 too)
    assert kept == {1, 2, 5}
    t.lookup(torch.tensor([6, 7]), step=4)
    t.lookup(torch.tensor([6]), step=5)
    t.evict(step=5)
    # lfu drops 7 (seen once) then 1 (tied with 2 on count and step; the older row goes first);
    # lru drops 1 and 2 (last seen at step 2)
    assert set(t.ids().tolist()) == ({2, 5, 6} if policy == "lfu" else {5, 6, 7})


def test_evicted_rows_are_reused_and_their_slots_reset():
    t = HashTable(dim=4, eviction=Eviction(max_age=1), block_rows=16)
    t.add_slot("m", 4, init=0.5)
    t.lookup(torch.arange(16), step=1)
    state = t.state_dict()
    assert bool((state["slot.m"] == 0.5).all())
    t.load_state_dict(state | {"slot.m": torch.full((16, 4), 7.0)})  # optimizer state written
    assert bool((t.state_dict()["slot.m"] == 7.0).all())
    t._c.evict_older_than(2)
    before = t.memory_bytes()
    t.lookup(torch.arange(100, 116), step=3)
    assert t.memory_bytes() == before  # the 16 freed rows were reused, no new block
    assert bool((t.state_dict()["slot.m"] == 0.5).all())  # and their optimizer state reset


def test_state_dict_round_trip():
    t = HashTable(dim=3, seed=1)
    t.add_slot("acc", 1)
    t.lookup(torch.tensor(EDGE_IDS), step=7)
    state = t.state_dict()
    state["slot.acc"] = torch.arange(len(EDGE_IDS), dtype=torch.float32)[:, None]
    u = HashTable(dim=3, seed=99)
    u.add_slot("acc", 1, init=-1.0)
    u.load_state_dict(state)
    assert rows_by_id(u) == rows_by_id(t)
    s = u.state_dict()
    assert set(s["steps"].tolist()) == {7} and set(s["freqs"].tolist()) == {1}
    assert dict(zip(s["ids"].tolist(), s["slot.acc"].flatten().tolist(), strict=True)) == {
        i: float(k) for k, i in enumerate(state["ids"].tolist())
    }
    # Loading without slots resets them; unknown slots and bad frequencies are refused.
    u.load_state_dict({k: v for k, v in state.items() if k != "slot.acc"})
    assert bool((u.state_dict()["slot.acc"] == -1.0).all())
    with pytest.raises(ValueError, match="no slot 'acc'"):
        HashTable(dim=3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"freqs\[0\]=-1 is outside"):
        u.load_state_dict(state | {"freqs": -torch.ones(len(EDGE_IDS), dtype=torch.int64)})
    with pytest.raises(ValueError, match=r"embeddings must be \(n, 5\), got \(7, 3\)"):
        HashTable(dim=5).load_state_dict(t.state_dict())


def test_many_keys_survive_growth_and_deletions():
    t = HashTable(dim=1, block_rows=1024)
    keys = torch.randint(-(2**63), 2**63 - 1, (100_000,)).unique()
    t.lookup(keys, step=1)
    half = keys[::2]
    t.lookup(half, step=2)
    t._c.evict_older_than(2)  # drops the odd half: backward-shift deletions all over the map
    hit = t.lookup(keys, insert=False)
    found = hit.rows[hit.inverse] >= 0
    assert bool(found[::2].all()) and not bool(found[1::2].any())


def test_keys_that_share_a_home_slot_are_told_apart():
    """Crowded home slots (keys whose hashes agree on the low 20 bits, found by search) make long
    probe chains that eviction's backward shifts rewrite; keys of two tags with the very same
    hash must still get rows of their own. Every key must keep its row throughout."""
    from recis.embedding.keymap import key_hash

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(-(2**63), 2**63 - 1, (1 << 22,), generator=g).unique()
    home = key_hash(ids, torch.zeros_like(ids)) & 0xFFFFF  # the home slot in any map of <= 2^20 slots
    crowded = (torch.bincount(home, minlength=1 << 20) >= 6).nonzero().flatten()[:50]
    keys = ids[torch.isin(home, crowded)]
    assert len(keys) >= 300
    t = HashTable(dim=2, block_rows=64)
    old, new = keys[::2], keys[1::2]
    t.lookup(old, step=1)
    t.lookup(new, step=2)
    assert len(t) == len(keys)
    rows = rows_of(t, keys)
    assert bool((rows >= 0).all()) and len(set(rows.tolist())) == len(keys)
    assert t._c.evict_older_than(2) == len(old)  # deletions all along the crowded chains
    assert bool((rows_of(t, old) == -1).all())
    assert torch.equal(rows_of(t, new), rows[1::2])
    rows_of(t, old, step=3)  # back in, on the freed rows
    assert len(t) == len(keys) and t._c.row_capacity == len(keys)
    assert torch.equal(rows_of(t, new), rows[1::2])

    # id + C * tag is what is hashed, so (x, 0) and (x - C, 1) hash alike in all 64 bits.
    c = 0x632BE59BD9B4E019
    x = 12345
    twin = (x - c + 2**63) % 2**64 - 2**63
    a, b = torch.tensor([x]), torch.tensor([twin])
    assert torch.equal(key_hash(a, torch.tensor([0])), key_hash(b, torch.tensor([1])))
    t = HashTable(dim=2)
    ra, rb = rows_of(t, [a, b], tags=[0, 1], step=1).tolist()
    assert ra != rb and len(t) == 2
    assert rows_of(t, [a, b], tags=[1, 0]).tolist() == [-1, -1]
    assert rows_of(t, [b, a], tags=[1, 0]).tolist() == [rb, ra]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: HashTable(dim=4).lookup(torch.tensor([1.5])), TypeError, "IDs must be integers"),
        (lambda: HashTable(dim=0), ValueError, r"dim must be an int in \[1, 1048576\], got 0"),
        (lambda: HashTable(dim=2**64), ValueError, r"dim must be an int in \[1, 1048576\], got 18446744073709551616"),
        (lambda: HashTable(dim=4, min_count=0), ValueError, "min_count must be an int in .*, got 0"),
        (lambda: HashTable(dim=4, block_rows=100), ValueError, r"power of two in \[1, 2\^20\], got 100"),
        (lambda: HashTable(dim=4).reserve(2**63 - 1), ValueError, r"rows must be in \[0, 2147483647\]"),
        (lambda: HashTable(dim=4)._c.reserve(2**63 - 1), ValueError, r"rows must be in \[0, 2\^31 - 1\]"),
        (lambda: HashTable(dim=4)._c.reserve(2**31), ValueError, "the rows of one table"),
        (lambda: HashTable(dim=4, initializer=Initializer("gaussian")), ValueError, "unknown initializer 'gaussian'"),
        (lambda: Initializer.uniform(1, 0), ValueError, "low < high"),
        (lambda: Eviction(policy="fifo"), ValueError, "'lru' or 'lfu'"),
        (lambda: HashTable(dim=4).add_slot("m", 0), ValueError, r"width must be in \[1, 2\^20\], got 0"),
    ],
)
def test_bad_input(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_int32_ids_widen_and_empty_batches_work():
    t = HashTable(dim=2)
    got = t.lookup(torch.tensor([1, 2], dtype=torch.int32))
    assert len(t) == 2 and got.embeddings.shape == (2, 2)
    empty = t.lookup(torch.tensor([], dtype=torch.int64))
    assert empty.embeddings.shape == (0, 2) and empty.inverse.shape == (0,)


def test_unique_over_many_chunks_matches_torch_unique():
    """The radix-partitioned path (>= 65536 keys) with duplicates spread across chunks."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(-(2**63), 2**63 - 1, (30000,), generator=g)[torch.randint(0, 30000, (300000,), generator=g)]
    t = HashTable(dim=1)
    got = t.lookup(ids)
    keys = t.state_dict()
    row_to_id = dict(zip(t.lookup(keys["ids"], insert=False).rows.tolist(), keys["ids"].tolist(), strict=True))
    unique_ids = torch.tensor([row_to_id[r] for r in got.rows.tolist()])
    assert torch.equal(unique_ids.sort().values, ids.unique())
    assert torch.equal(unique_ids[got.inverse], ids)


def test_gather_refuses_rows_that_are_not_live():
    t = HashTable(dim=2, eviction=Eviction(max_age=1))
    rows = t.lookup(torch.tensor([1, 2]), step=1).rows
    assert t.gather(torch.tensor([-1])).abs().sum() == 0
    with pytest.raises(ValueError, match=r"rows\[0\]=1000000000 is not a live row"):
        t.gather(torch.tensor([10**9]))
    t.evict(step=5)
    with pytest.raises(ValueError, match="is not a live row"):
        t.gather(rows)
    # Both freed rows reused: every allocated row is live again (the check then reads no metadata).
    again = t.lookup(torch.tensor([7, 8]), step=6).rows
    assert sorted(again.tolist()) == sorted(rows.tolist())
    assert t.gather(rows).shape == (2, 2)
    with pytest.raises(ValueError, match=r"rows\[1\]=2 is not a live row"):
        t.gather(torch.tensor([0, 2]))


def test_read_only_lookups_leave_metadata_alone():
    t = HashTable(dim=2)
    t.lookup(torch.tensor([1]), step=3)
    t.lookup(torch.tensor([1]), step=9, insert=False)
    s = t.state_dict()
    assert s["steps"].tolist() == [3] and s["freqs"].tolist() == [1]


def test_admission_counts_are_forgotten_by_age():
    t = HashTable(dim=2, min_count=2, eviction=Eviction(max_age=2))
    t.lookup(torch.tensor([5]), step=1)  # seen once
    t.evict(step=10)  # the count is older than the window: forgotten
    t.lookup(torch.tensor([5]), step=11)
    assert len(t) == 0
    t.lookup(torch.tensor([5]), step=12)
    assert len(t) == 1 and t.stats()["admitted"] == 1


def test_tags_out_of_range():
    with pytest.raises(ValueError, match=r"tags must be in \[0, 65535\], got 65536"):
        HashTable(dim=2).lookup([torch.tensor([1])], tags=[65536])


def test_export_ranges_deltas_and_eviction_log():
    table = HashTable(4, Initializer.uniform(-1, 1), eviction=Eviction(max_age=2), block_rows=8)
    table.track_evictions()
    table.lookup(torch.arange(20), step=0)
    table.lookup(torch.arange(5, 10), step=3)
    whole = table.state_dict()
    parts = [table.export(b, b + 7) for b in range(0, table.row_capacity, 7)]
    for key, value in whole.items():
        assert torch.equal(torch.cat([p[key] for p in parts]), value), key
    assert sorted(table.export(min_step=3)["ids"].tolist()) == list(range(5, 10))
    assert table.evict(3) == 15
    ids, tags = table.take_evicted()
    assert sorted(ids.tolist()) == [*range(5), *range(10, 20)] and tags.tolist() == [0] * 15
    assert table.take_evicted()[0].numel() == 0  # drained


def test_reserve_grows_the_map_once_and_keeps_rows():
    table = HashTable(4, Initializer.uniform(-1, 1))
    table.lookup(torch.arange(10))
    before, values = table.memory_bytes(), table.gather(table.lookup(torch.arange(10), insert=False).rows)
    table.reserve(100_000)
    assert table.memory_bytes() >= before + 100_000 * 4 // 3 * 16  # 16-byte map slots at load <= 0.75
    assert torch.equal(table.gather(table.lookup(torch.arange(10), insert=False).rows), values)
    with pytest.raises(ValueError, match=r"rows must be in \[0, 2147483647\]"):
        table.reserve(-1)


def test_table_kernels_follow_torch_thread_count():
    """The core's pool starts at one thread; table calls size it to torch.get_num_threads() (a
    lookup that never synced ran single-threaded whatever torch was set to)."""
    from recis.core._C import common as _C

    before = torch.get_num_threads()
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            HashTable(4).lookup(torch.arange(10))
            assert _C.num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_admission_counts_are_bounded_by_capacity_and_counted_in_memory():
    """Fresh IDs below min_count used to pile up (pruned only by age): 10M of them grew RSS by 740 MB."""
    table = HashTable(4, min_count=2, eviction=Eviction(capacity=1000))
    empty = table.memory_bytes()
    table.lookup(torch.arange(100_000), step=0)  # 100k counts, no rows
    assert len(table) == 0 and table.memory_bytes() >= empty + 100_000 * 40
    sizes = []
    for step in range(1, 40):
        table.lookup(torch.arange(step * 100_000, step * 100_000 + 5000), step=step)
        table.evict(step)
        sizes.append(table.memory_bytes())
    assert max(sizes[5:]) <= sizes[4]  # counts keep to the capacity: memory stops growing
    # The newest counts survive the pruning: IDs seen at the last step are admitted when seen again.
    newest = torch.arange(-10, 0)
    table.lookup(newest, step=40)
    table.evict(40)
    assert int((table.lookup(newest, step=41).rows >= 0).sum()) == 10


def test_eviction_log_counts_in_memory():
    table = HashTable(4, eviction=Eviction(max_age=1))
    table.track_evictions()
    table.lookup(torch.arange(50_000), step=0)
    before = table.memory_bytes()
    assert table.evict(5) == 50_000
    assert table.memory_bytes() >= before + 50_000 * 16  # the log holds every evicted key
    table.take_evicted()
    assert table.memory_bytes() < before + 50_000 * 16
