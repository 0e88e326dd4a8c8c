"""Sharded embeddings over torch.distributed: 2 and 3 ranks on gloo, spawned by the tests."""

import sys
import time
from pathlib import Path

import pytest
import torch

from recis.train import Stage

sys.path.insert(0, str(Path(__file__).parent))  # spawned ranks import the workers by name
import dist_workers as w

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable"),
    pytest.mark.slow,  # every test spawns 2-3 ranks
]


def ok(results):
    for status, value in results:
        assert status == "ok", value
    return [value for _, value in results]


def by_key(state):
    """Row order sorting a table's state by (ID, tag)."""
    order = state["tags"].argsort(stable=True)
    return order[state["ids"][order].argsort(stable=True)]


def assert_same_rows(expected, got, atol=1e-6):
    assert set(got) == set(expected)
    for key, row in expected.items():
        torch.testing.assert_close(got[key], row, atol=atol, rtol=1e-5)


@pytest.mark.parametrize(("opt", "pool_on_owner"), [("adam", True), ("adagrad", True), ("adam", False)])
def test_two_ranks_equal_one_rank(tmp_path, opt, pool_on_owner):
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "one", opt=opt, steps=4, rows=12))
    two = ok(w.run_ranks(w.train, 2, tmp_path / "two", opt=opt, steps=4, rows=12, pool_on_owner=pool_on_owner))
    torch.testing.assert_close(two[0][0], single_losses, rtol=1e-5, atol=1e-6)
    assert two[0][0] == two[1][0]  # every rank logs the global loss
    rank0, rank1 = two[0][1], two[1][1]
    assert rank0 and rank1 and not set(rank0) & set(rank1)  # each row lives on exactly one rank
    assert_same_rows(single_rows, rank0 | rank1)


@pytest.mark.parametrize("pool_on_owner", [True, False])
def test_bf16_rows_shard_as_one_rank(tmp_path, pool_on_owner):
    """bfloat16 tables over 2 ranks against one process: the same updates, rounded to bf16 (rows
    may differ by one bf16 step where the ranks' float32 gradient sums round differently)."""
    kw = dict(opt="adam", steps=4, rows=12, row_dtype=torch.bfloat16)
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "one", **kw))
    two = ok(w.run_ranks(w.train, 2, tmp_path / "two", **kw, pool_on_owner=pool_on_owner))
    torch.testing.assert_close(two[0][0], single_losses, rtol=1e-2, atol=1e-3)
    rank0, rank1 = two[0][1], two[1][1]
    assert rank0 and rank1 and not set(rank0) & set(rank1)
    assert_same_rows(single_rows, rank0 | rank1, atol=1e-2)


@pytest.mark.parametrize("pool_on_owner", [None, True])
def test_device_tables_shard_as_host_tables(tmp_path, pool_on_owner):
    """Tables on a device ("cpu" here: the torch twin a GPU runs without kernels) sharded over 2
    ranks: the same losses and rows as host tables in one process (device tables always gather
    rows from their owners, even where host tables would pool there)."""
    kw = dict(opt="adam", steps=3, rows=12, clip=0.05)  # clipped: the sparse norms cross ranks too
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "one", **kw))
    two = ok(w.run_ranks(w.train, 2, tmp_path / "two", **kw, pool_on_owner=pool_on_owner, device="cpu"))
    torch.testing.assert_close(two[0][0], single_losses, rtol=1e-5, atol=1e-6)
    rank0, rank1 = two[0][1], two[1][1]
    assert rank0 and rank1 and not set(rank0) & set(rank1)
    assert_same_rows(single_rows, rank0 | rank1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_device_tables_shard_over_nccl(tmp_path):
    """A sharded engine of CUDA tables in a process group of gloo and NCCL (one rank: one GPU is
    enough to route, exchange over NCCL and serve): the same as host tables in one process."""
    kw = dict(opt="adam", steps=3, rows=12, clip=0.05)
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "host", **kw))
    ((losses, rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "gpu", backend="cpu:gloo,cuda:nccl", device="cuda", **kw))
    torch.testing.assert_close(losses, single_losses, rtol=1e-4, atol=1e-6)
    assert_same_rows(single_rows, rows, atol=1e-5)


def test_accumulation_and_clipping_match_one_rank(tmp_path):
    """Two micro-batches per step (two pooled gradients per table to sum) and a clipped global norm
    (sparse gradients summed per row before the step) give the same rows on 2 ranks as on 1."""
    kw = dict(opt="adam", steps=3, rows=12, micro=2, clip=0.05)
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "one", **kw))
    two = ok(w.run_ranks(w.train, 2, tmp_path / "two", **kw, pool_on_owner=True))
    torch.testing.assert_close(two[0][0], single_losses, rtol=1e-5, atol=1e-6)
    assert_same_rows(single_rows, two[0][1] | two[1][1])


@pytest.mark.parametrize("pool_on_owner", [True, False])
def test_bf16_on_the_wire_stays_close_to_one_rank(tmp_path, pool_on_owner):
    """bf16 partial sums, rows and gradients between ranks: losses and rows within bf16 rounding."""
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "one", opt="adam", steps=3, rows=12))
    kw = dict(opt="adam", steps=3, rows=12, pool_on_owner=pool_on_owner, wire_dtype=torch.bfloat16)
    two = ok(w.run_ranks(w.train, 2, tmp_path / "two", **kw))
    torch.testing.assert_close(two[0][0], single_losses, rtol=1e-3, atol=1e-5)  # measured: <= 1e-4 relative
    assert two[0][0] != single_losses  # it did round
    assert_same_rows(single_rows, two[0][1] | two[1][1], atol=1e-3)  # measured: <= 1.5e-4, rows up to 0.16


def test_ranks_agree_on_each_tables_route(tmp_path):
    for routes, error in ok(w.run_ranks(w.route_choice, 2, tmp_path)):
        assert routes == [True, False, False]
        assert "wire_dtype must be float32, bfloat16 or float16, got torch.int8" in error


def test_uneven_batches_match_one_rank(tmp_path):
    ((single_losses, single_rows),) = ok(w.run_ranks(w.train, 1, tmp_path / "one", opt="adam", steps=3, rows=10))
    two = ok(w.run_ranks(w.train, 2, tmp_path / "two", opt="adam", steps=3, rows=10, split=[0, 9, 10]))
    torch.testing.assert_close(two[0][0], single_losses, rtol=1e-5, atol=1e-6)
    assert_same_rows(single_rows, two[0][1] | two[1][1])


def test_rank_without_ids_and_a_table_one_rank_touches(tmp_path):
    ids = ok(w.run_ranks(w.train_with_empty_rank, 2, tmp_path))
    solo = sorted(i for r in ids for i in next(v for k, v in r.items() if "solo" in k))
    assert solo == [1, 2, 3]  # rows of the table only rank 0 reads, spread over their owners
    a = sorted(i for r in ids for i in next(v for k, v in r.items() if k.endswith(":a")))
    assert a == sorted(set(range(37)))  # steps 0-2 of 35 consecutive IDs each, all from rank 0


def test_checkpoint_moves_between_world_sizes(tmp_path):
    hops = [(1, None), (2, "w1"), (3, "w2"), (1, "w3")]
    results = []
    for i, (world, source) in enumerate(hops):
        target = str(tmp_path / f"w{i + 1}")
        results.append(
            ok(
                w.run_ranks(
                    w.checkpoint_hop,
                    world,
                    tmp_path / f"run{i}",
                    source=source and str(tmp_path / source),
                    target=target,
                )
            )
        )
    (first,) = results[0]
    (last,) = results[-1]
    for name, state in first[0].items():  # 1 -> 2 -> 3 -> 1 gives back every row, slot and metadata
        back = last[0][name]
        order, order_back = by_key(state), by_key(back)
        for key in state:
            assert torch.equal(state[key][order], back[key][order_back]), key
        for middle in results[1:-1]:  # in between, the ranks split the rows by owner
            counts = [len(rank[0][name]["ids"]) for rank in middle]
            assert sum(counts) == len(state["ids"]) and all(c > 0 for c in counts)
            owners = [
                torch.equal(w.owner_of(rank[0][name]["ids"], len(middle)), torch.full_like(rank[0][name]["ids"], r))
                for r, rank in enumerate(middle)
            ]
            assert all(owners)
    for key, value in first[1].items():
        assert torch.equal(value, last[1][key])
    assert first[2] == last[2] == 3  # sparse optimizer step count


def test_trainer_runs_unchanged_on_two_ranks(tmp_path):
    (single,) = ok(w.run_ranks(w.trainer_run, 1, tmp_path / "one"))
    two = ok(w.run_ranks(w.trainer_run, 2, tmp_path / "two"))
    assert "error" not in two[0], two[0]
    torch.testing.assert_close(two[0]["losses"], single["losses"], rtol=1e-5, atol=1e-6)
    assert two[0]["eval"] == two[1]["eval"]  # metrics merged over ranks
    torch.testing.assert_close(two[0]["eval"]["label.auc"], single["eval"]["label.auc"])
    assert Path(two[0]["checkpoint"]).is_dir() and two[0]["checkpoint"] == two[1]["checkpoint"]


def test_killed_rank_stops_the_other_with_an_error(tmp_path):
    t0 = time.monotonic()
    results = w.run_ranks(w.trainer_run, 2, tmp_path, timeout_s=20, die_at=2)
    assert results[1][0] == "died"
    status, survivor = results[0]
    assert status == "ok" and "error" in survivor, survivor
    assert "DistributedError" in survivor["error"] and "rank 0 of 2" in survivor["error"]
    assert survivor["seconds"] < 30 and time.monotonic() - t0 < 120


def test_fsdp_dense_layers_match_one_rank_and_checkpoint_to_any_world(tmp_path):
    """dense_sharding="fsdp" on 2 ranks: the same losses, eval and dense state as 1 rank, with two
    micro-batches a step, an active norm clip and a stage that freezes part of the MLP; its
    checkpoint (full tensors) resumes on 1 rank, and a 1-rank checkpoint on 2 FSDP ranks."""
    stages = [Stage("all", steps=2), Stage("top", steps=2, train=["emb", "mlp.2"])]
    kw = dict(dense_adam=True, grad_accum=2, clip_grad_norm=0.05, stages=stages)
    (single,) = ok(w.run_ranks(w.trainer_run, 1, tmp_path / "one", **kw))
    two = ok(w.run_ranks(w.trainer_run, 2, tmp_path / "two", dense_sharding="fsdp", **kw))
    assert "error" not in two[0], two[0]
    assert two[0]["fsdp"] and not single["fsdp"]
    torch.testing.assert_close(two[0]["losses"], single["losses"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two[0]["eval"]["label.auc"], single["eval"]["label.auc"])
    for rank in two:
        torch.testing.assert_close(rank["dense"], single["dense"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rank["dense_optimizer"]["state"], single["dense_optimizer"]["state"])
    first = single["dense_optimizer"]["state"][0]["step"]  # mlp.0.weight froze in stage "top"
    assert float(first) == 2 and float(single["dense_optimizer"]["state"][2]["step"]) == 4

    # 2 FSDP ranks -> 1 rank, and 1 rank -> 2 FSDP ranks: resumed runs train on from the same state
    more = [*stages, Stage("more", steps=1)]
    (back,) = ok(w.run_ranks(w.trainer_run, 1, tmp_path / "two", **kw | {"stages": more, "resume": "latest"}))
    fsdp = dict(kw, stages=more, resume="latest", dense_sharding="fsdp")
    (onward, _) = ok(w.run_ranks(w.trainer_run, 2, tmp_path / "one", **fsdp))
    assert len(back["losses"]) == len(onward["losses"]) == 1
    torch.testing.assert_close(back["losses"], onward["losses"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back["dense"], onward["dense"], rtol=1e-5, atol=1e-6)


def test_collective_saver_refuses_an_unsharded_engine(tmp_path):
    for message in ok(w.run_ranks(w.saver_with_unsharded_engine, 2, tmp_path)):
        assert "every EmbeddingEngine must be sharded" in message
