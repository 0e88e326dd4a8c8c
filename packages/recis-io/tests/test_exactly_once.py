"""Every row exactly once per epoch across shards, in a deterministic order, and exact resumes."""

from __future__ import annotations

import itertools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recis.io import ColumnReader

examples = settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])


def ids(reader: ColumnReader, limit: int | None = None) -> list[int]:
    out: list[int] = []
    for batch in itertools.islice(reader, limit):
        out.extend(batch["id"].tolist())
    return out


@st.composite
def setups(draw):
    sizes = draw(st.lists(st.integers(0, 40), min_size=1, max_size=4).filter(lambda s: sum(s) > 0))
    return {
        "sizes": sizes,
        "group_rows": draw(st.integers(1, 16)),
        "batch_size": draw(st.integers(1, 13)),
        "world_size": draw(st.integers(1, 4)),
        "shuffle": draw(st.booleans()),
        "window": draw(st.integers(1, 20)),
        "seed": draw(st.integers(0, 2**32)),
    }


def make(root, s, rank=0, **kw) -> ColumnReader:
    opts = dict(batch_size=s["batch_size"], shuffle=s["shuffle"], shuffle_window=s["window"], seed=s["seed"])
    return ColumnReader(str(root), ["id"], rank=rank, world_size=s["world_size"], **(opts | kw))


@examples
@given(setups())
def test_shards_cover_every_row_once(dataset, s):
    root = dataset(s["sizes"], s["group_rows"])
    seen = [ids(make(root, s, rank)) for rank in range(s["world_size"])]
    assert sorted(x for shard in seen for x in shard) == list(range(sum(s["sizes"])))
    assert max(map(len, seen)) - min(map(len, seen)) <= 1  # balanced shards


@examples
@given(setups(), st.data())
def test_resume_yields_exactly_the_rest(dataset, s, data):
    root = dataset(s["sizes"], s["group_rows"])
    rank = data.draw(st.integers(0, s["world_size"] - 1))
    full = ids(make(root, s, rank))
    reader = make(root, s, rank)
    stop = data.draw(st.integers(0, -(-len(full) // s["batch_size"])))  # up to the last batch
    head = ids(reader, stop)
    state = reader.state_dict()
    resumed = make(root, s, rank)
    resumed.load_state_dict(state)
    assert head + ids(resumed) == full


@examples
@given(setups())
def test_a_finished_epoch_resumes_at_the_next(dataset, s):
    """Once an epoch ran to its end, the saved position is the start of the next epoch."""
    root = dataset(s["sizes"], s["group_rows"])
    reader = make(root, s)
    ids(reader)
    state = reader.state_dict()
    assert (state["epoch"], state["cursor"]) == (1, 0)
    resumed = make(root, s)
    resumed.load_state_dict(state)
    again = make(root, s)
    again.set_epoch(1)
    assert ids(resumed) == ids(again)


@examples
@given(setups())
def test_resume_can_change_batch_size(dataset, s):
    root = dataset(s["sizes"], s["group_rows"])
    full = ids(make(root, s))
    reader = make(root, s)
    head = ids(reader, 1)
    resumed = make(root, s, batch_size=s["batch_size"] + 2)
    resumed.load_state_dict(reader.state_dict())
    assert head + ids(resumed) == full


def test_order_is_deterministic_per_seed_and_epoch(dataset):
    root = dataset([30, 20], group_rows=5)
    reader = ColumnReader(str(root), ["id"], batch_size=8, shuffle=True, shuffle_window=16, seed=3)
    first, second = ids(reader), ids(reader)  # two epochs
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second and first != list(range(50))
    again = ColumnReader(str(root), ["id"], batch_size=8, shuffle=True, shuffle_window=16, seed=3)
    assert ids(again) == first
    again.set_epoch(1)
    assert ids(again) == second


def test_drop_last_keeps_full_batches_only(dataset):
    root = dataset([10, 7], group_rows=3)
    sizes = [len(b["id"]) for b in ColumnReader(str(root), batch_size=4, drop_last=True)]
    assert sizes == [4, 4, 4, 4]
    sizes = [len(b["id"]) for b in ColumnReader(str(root), batch_size=4)]
    assert sizes == [4, 4, 4, 4, 1]


def test_state_after_the_epoch_moves_to_the_next(dataset):
    root = dataset([5])
    reader = ColumnReader(str(root), ["id"], batch_size=2)
    assert ids(reader) == [0, 1, 2, 3, 4]
    assert reader.state_dict()["epoch"] == 1 and reader.state_dict()["cursor"] == 0


def test_dataloader_workers_split_the_shard(dataset):
    root = dataset([23, 17], group_rows=4)
    reader = ColumnReader(str(root), ["id"], batch_size=5, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=2)
    seen = sorted(x for b in loader for x in b["id"].tolist())
    assert seen == list(range(20, 40))
