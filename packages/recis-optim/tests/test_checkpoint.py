"""Checkpoints: round trip, resume in a new process, kill -9 mid-save, resharding, deltas,
damaged files and reading the shards with bare safetensors."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import random
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from recis.embedding import HashTable, Initializer, owner
from recis.optim import Saver, SparseAdagrad, complete_checkpoints, latest

WORKER = Path(__file__).with_name("checkpoint_worker.py")
_spec = importlib.util.spec_from_file_location("checkpoint_worker", WORKER)
assert _spec is not None and _spec.loader is not None
w = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(w)


def start(*argv: str) -> multiprocessing.process.BaseProcess:
    """Runs the worker in a new process, forked from a server that has imported torch and RecIS
    once (a cold `python` start costs seconds on a shared machine)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "recis.optim"])  # optimizers import dynamo
    code = f"import runpy, sys; sys.argv = {[str(WORKER), *argv]!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    proc = ctx.Process(target=exec, args=(code,))
    proc.start()
    return proc


def assert_rows_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)


def trained(steps: int = 4, **kw):
    model, sparse, dense = w.build(**kw)
    w.train(model, sparse, dense, range(steps))
    return model, sparse, dense


def test_round_trip_reproduces_next_losses(tmp_path):
    model, sparse, dense = trained()
    Saver(tmp_path, model, optimizers=[sparse, dense], shards=2, chunk_rows=100).save(4, extra={"trainer": {"a": 1}})
    model2, sparse2, dense2 = w.build()
    extra = Saver(tmp_path, model2, optimizers=[sparse2, dense2]).load()
    assert extra == {"trainer": {"a": 1}}
    assert_rows_equal(w.all_rows(model), w.all_rows(model2))
    assert model2.emb.step == 4 and sparse2.state_dict()["sparse_step"] == 4
    assert w.train(model, sparse, dense, range(4, 7)) == w.train(model2, sparse2, dense2, range(4, 7))


@pytest.mark.slow  # a fresh process
def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    n = 3
    model, sparse, dense = trained(n)
    Saver(tmp_path, model, optimizers=[sparse, dense]).save(n, extra={"trainer": {"step": n}})
    straight = w.train(model, sparse, dense, range(n, 2 * n))
    out = tmp_path / "resumed.pt"
    proc = start("resume", str(tmp_path), str(n), str(out))
    proc.join(120)
    assert proc.exitcode == 0
    resumed = torch.load(out, weights_only=True)
    assert resumed["losses"] == straight
    assert_rows_equal(resumed["rows"], w.all_rows(model))
    for k, v in model.mlp.state_dict().items():
        assert torch.equal(resumed["mlp"][k], v)


@pytest.mark.slow  # writer processes killed with SIGKILL
def test_kill_9_at_random_points_leaves_a_loadable_latest(tmp_path):
    rng = random.Random(5)
    for _ in range(4):
        before = latest(tmp_path)
        proc = start("crash", str(tmp_path))
        while latest(tmp_path) == before:  # saving has begun
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()  # SIGKILL
        proc.join()
        path = latest(tmp_path)
        assert path is not None, sorted(p.name for p in tmp_path.iterdir())
        model, sparse, dense = w.build()
        step = Saver(tmp_path, model, optimizers=[sparse, dense]).load()["trainer"]["step"]
        assert path.name == f"step-{step:010d}"
        expect, sparse_e, dense_e = w.build()
        w.train(expect, sparse_e, dense_e, range(step), spread=20 * w.IDS)
        assert_rows_equal(w.all_rows(model), w.all_rows(expect))


def test_reshard_one_to_three_and_back_and_load_by_rank(tmp_path):
    model, sparse, dense = trained()
    Saver(tmp_path / "one", model, optimizers=[sparse, dense], shards=1).save(4)
    three, s3, d3 = w.build()
    Saver(tmp_path / "one", three, optimizers=[s3, d3]).load()
    Saver(tmp_path / "three", three, optimizers=[s3, d3], shards=3, threads=2, chunk_rows=50).save(4)
    assert len(list((tmp_path / "three" / "step-0000000004").glob("*.safetensors"))) == 3
    back, sb, db = w.build()
    Saver(tmp_path / "three", back, optimizers=[sb, db]).load()
    assert_rows_equal(w.all_rows(model), w.all_rows(back))
    full = w.all_rows(model)
    seen = {name: 0 for name in full}
    for rank in range(3):
        part, sp, dp = w.build()
        Saver(tmp_path / "three", part, optimizers=[sp, dp]).load(rank=rank, world_size=3)
        for name, rows in w.all_rows(part).items():
            assert bool((owner(rows["ids"], 3) == rank).all())
            seen[name] += len(rows["ids"])
    assert seen == {name: len(rows["ids"]) for name, rows in full.items()}


def test_delta_chain_of_three_equals_a_full_save(tmp_path):
    model, sparse, dense = w.build(max_age=2)  # evictions between saves
    saver = Saver(tmp_path / "chain", model, optimizers=[sparse, dense], keep=10, chunk_rows=64)
    w.train(model, sparse, dense, range(3))
    saver.save(3)
    for step in (5, 7, 9):
        w.train(model, sparse, dense, range(step - 2, step))
        path = saver.save(step, delta=True)
    index = json.loads((path / "index.json").read_text())
    assert index["kind"] == "delta" and index["base"] == "step-0000000007"
    assert any(t.get("evicted", {}).get("rows", 0) > 0 for t in index["tables"].values())
    Saver(tmp_path / "full", model, optimizers=[sparse, dense]).save(9)
    from_chain, sc, dc = w.build(max_age=2)
    Saver(tmp_path / "chain", from_chain, optimizers=[sc, dc]).load()
    from_full, sf, df = w.build(max_age=2)
    Saver(tmp_path / "full", from_full, optimizers=[sf, df]).load()
    assert_rows_equal(w.all_rows(from_chain), w.all_rows(model))
    assert_rows_equal(w.all_rows(from_full), w.all_rows(model))
    delta_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    full_bytes = sum(f.stat().st_size for f in (tmp_path / "full" / "step-0000000009").glob("*.safetensors"))
    assert delta_bytes < full_bytes


def test_keep_last_k_keeps_bases_latest_skips_unfinished_and_names_damaged(tmp_path):
    model, sparse, dense = trained()
    saver = Saver(tmp_path, model, optimizers=[sparse, dense], keep=2)
    for step, delta in ((1, False), (2, False), (3, True), (4, True)):
        saver.save(step, delta=delta)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-0000000002", "step-0000000003", "step-0000000004"]
    (tmp_path / ".tmp-step-0000000010-1-x").mkdir()  # an unfinished save: never a candidate
    assert latest(tmp_path) == tmp_path / "step-0000000004"
    (tmp_path / "step-0000000009").mkdir()  # published, then its index.json was lost: damaged
    with pytest.raises(ValueError, match=r"step-0000000009: index\.json is missing"):
        latest(tmp_path)
    with pytest.warns(RuntimeWarning, match="step-0000000009"):
        assert latest(tmp_path, fallback=True) == tmp_path / "step-0000000004"
    with pytest.raises(ValueError, match="delta=True"):
        Saver(tmp_path, model).save(5, delta=True)


def test_subset_rename_and_warm_start(tmp_path):
    model, sparse, dense = trained()
    Saver(tmp_path, model, optimizers=[sparse, dense]).save(4)
    bare = HashTable(8, Initializer.constant(0.0))
    Saver(tmp_path, tables={"users": bare}).load(tables=["user"], rename={"user": "users"}, optimizer=False)
    saved = w.rows(next(iter(model.emb.tables().values())))
    mine = saved["tags"] == 0  # "user" is tag 0 of the merged table
    got = w.rows(bare)
    assert torch.equal(got["ids"], saved["ids"][mine]) and torch.equal(got["embeddings"], saved["embeddings"][mine])
    assert bare.slot_names() == []
    warm = HashTable(8)
    SparseAdagrad(warm)  # other slots than the checkpoint's Adam: fine without optimizer state
    with pytest.raises(ValueError, match=r"slot 'adam\.m'"):
        Saver(tmp_path, tables={"users": warm}).load(tables=["user"], rename={"user": "users"})
    assert len(warm) == 0
    with pytest.raises(ValueError, match=r"has no logical tables \['nope'\]"):
        Saver(tmp_path, tables={"users": warm}).load(tables=["nope"])


def _damage(path: Path, how: str) -> str:
    shard = sorted(path.glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    if how == "missing":
        shard.unlink()
    elif how == "truncated":
        shard.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        data[-3] ^= 0x10
        shard.write_bytes(data)
    elif how == "header":
        data[8:20] = b"not json at!"
        shard.write_bytes(data)
    elif how == "index":
        index = json.loads((path / "index.json").read_text())
        name = next(k for k in index["tensors"] if k.endswith("/embeddings"))
        index["tensors"][name]["shape"][0] += 1
        (path / "index.json").write_text(json.dumps(index))
    return shard.name


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped", "header", "index"])
def test_damaged_checkpoints_raise_before_writing(tmp_path, how):
    model, sparse, dense = trained()
    path = Saver(tmp_path, model, optimizers=[sparse, dense], shards=1).save(4)
    shard = _damage(path, how)
    fresh, s2, d2 = w.build()
    before = {k: v.clone() for k, v in fresh.mlp.state_dict().items()}
    with pytest.raises(ValueError, match=r"checkpoint .*step-0000000004") as e:
        Saver(tmp_path, fresh, optimizers=[s2, d2]).load(path)
    assert (shard if how != "index" else "index.json") in str(e.value) or "table" in str(e.value)
    assert all(len(t) == 0 for t in fresh.emb.tables().values())
    assert all(torch.equal(v, before[k]) for k, v in fresh.mlp.state_dict().items())


def test_dim_mismatch_names_the_table(tmp_path):
    model, sparse, dense = trained()
    Saver(tmp_path, model, optimizers=[sparse, dense]).save(4)
    other, s2, d2 = w.build(dim=16)
    with pytest.raises(ValueError, match=r"table 'table0:user\+item'.*dim 8.*dim 16"):
        Saver(tmp_path, other, optimizers=[s2, d2]).load()


def test_shards_read_with_bare_safetensors(tmp_path):
    model, sparse, dense = trained()
    path = Saver(tmp_path, model, optimizers=[sparse, dense], shards=2, chunk_rows=100).save(4)
    index = json.loads((path / "index.json").read_text())
    tensors = {}
    for file in index["files"]:
        with safe_open(str(path / file), framework="pt") as f:
            tensors |= {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    assert set(tensors) == set(index["tensors"])
    for name, table in model.emb.tables().items():
        chunks = index["tables"][name]["chunks"]
        ids = torch.cat([tensors[f"{name}/{c['begin']}/ids"] for c in chunks])
        emb = torch.cat([tensors[f"{name}/{c['begin']}/embeddings"] for c in chunks])
        m = torch.cat([tensors[f"{name}/{c['begin']}/slot.adam.m"] for c in chunks])
        state = table.state_dict()
        assert torch.equal(ids, state["ids"]) and torch.equal(emb, state["embeddings"])
        assert torch.equal(m, state["slot.adam.m"]) and index["tables"][name]["rows"] == len(ids)


def test_full_only_saver_keeps_no_eviction_log(tmp_path):
    model, sparse, dense = w.build(max_age=2)
    saver = Saver(tmp_path / "full", model, optimizers=[sparse, dense], deltas=False)
    w.train(model, sparse, dense, range(3))
    saver.save(3)
    w.train(model, sparse, dense, range(3, 8))  # evicts rows
    tables = model.emb.tables().values()
    assert sum(t.stats()["evicted"] for t in tables) > 0
    assert all(len(t.take_evicted()[0]) == 0 for t in tables)  # nothing was recorded
    with pytest.raises(ValueError, match="deltas=False"):
        saver.save(8, delta=True)
