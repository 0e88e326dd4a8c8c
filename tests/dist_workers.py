"""Worker functions for tests/test_distributed.py, run in spawned processes (one per rank).

Each worker gets (rank, world, directory, **kwargs), runs with gloo over a file:// rendezvous in
`directory`, and returns a picklable result that `run_ranks` collects per rank.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec
from recis.optim import Saver, SparseAdagrad, SparseAdam, clip_grad_norm_

OPTIMIZERS = {"adam": lambda e: SparseAdam(e, lr=0.05), "adagrad": lambda e: SparseAdagrad(e, lr=0.1)}


def _entry(
    rank: int, fn: Callable[..., Any], world: int, directory: str, timeout_s: float, backend: str | None, kwargs: dict
) -> None:
    torch.set_num_threads(1)
    out = Path(directory) / f"result-{rank}.pt"
    try:
        if world > 1 or backend:
            dist.init_process_group(
                backend or "gloo",
                init_method=f"file://{directory}/rendezvous",
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(seconds=timeout_s),
            )
        torch.save(("ok", fn(rank, world, directory, **kwargs)), out)
    except BaseException as e:
        torch.save(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"), out)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(
    fn: Callable[..., Any],
    world: int,
    directory: Path,
    timeout_s: float = 60.0,
    backend: str | None = None,
    **kwargs: Any,
) -> list:
    """Runs `fn` on `world` spawned ranks; returns each rank's ("ok", result) or ("error", text).
    The ranks join a process group of `backend` (default gloo) when there are several, or when
    `backend` is given."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("result-*.pt"):
        f.unlink()
    (directory / "rendezvous").unlink(missing_ok=True)
    ctx = mp.start_processes(
        _entry,
        args=(fn, world, str(directory), timeout_s, backend, kwargs),
        nprocs=world,
        start_method="spawn",
        join=False,
    )
    deadline = time.monotonic() + timeout_s + 90
    for p in ctx.processes:  # not ctx.join(): it kills the other ranks once one dies
        p.join(max(0.0, deadline - time.monotonic()))
    if any(p.is_alive() for p in ctx.processes):
        for p in ctx.processes:
            p.kill()
        raise TimeoutError(f"ranks did not finish within {timeout_s + 90:.0f} s")
    results = []
    for r in range(world):
        path = directory / f"result-{r}.pt"
        results.append(torch.load(path, weights_only=False) if path.exists() else ("died", None))
    return results


# ---- a small model: pooled features, a sequence, a dense layer ---------------------------------------
# "a", "u" and the sequence "s" merge into one physical table, which gathers rows from the owners;
# "p" (weighted sqrtn) and "q" (mean) merge into another, all pooled: it pools on the owners.


def batches(steps: int, rows: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        a_len = torch.randint(0, 5, (rows,), generator=g)
        s_len = torch.randint(0, 4, (rows,), generator=g)
        p_len = torch.randint(0, 6, (rows,), generator=g)
        q_len = torch.randint(0, 3, (rows,), generator=g)
        p_weights = torch.rand(int(p_len.sum()), generator=g) + 0.5
        out.append(
            {
                "a": Ragged.from_lengths(
                    torch.randint(-(2**40), 2**40, (int(a_len.sum()),), generator=g) % 97 - 48, a_len
                ),
                "u": torch.randint(0, 40, (rows,), generator=g) + 2**35,
                "s": Ragged.from_lengths(torch.randint(0, 30, (int(s_len.sum()),), generator=g), s_len),
                "p": Ragged.from_lengths(torch.randint(-50, 50, (int(p_len.sum()),), generator=g), p_len, p_weights),
                "q": Ragged.from_lengths(torch.randint(0, 20, (int(q_len.sum()),), generator=g), q_len),
                "y": torch.rand(rows, generator=g),
            }
        )
    return out


def rows_of(batch: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
    keep = torch.arange(lo, hi)
    return {k: v[lo:hi] if isinstance(v, torch.Tensor) else v.select(keep) for k, v in batch.items()}


class Model(torch.nn.Module):
    def __init__(self, device: str | None = None, row_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(0)
        kw: dict[str, Any] = {"device": device, "dtype": row_dtype}
        self.emb = EmbeddingEngine(
            {
                "a": EmbeddingSpec(4, combiner="mean", **kw),
                "u": EmbeddingSpec(4, table="a", **kw),
                "s": EmbeddingSpec(4, combiner=None, max_len=3, **kw),
                "p": EmbeddingSpec(4, combiner="sqrtn", seed=1, **kw),
                "q": EmbeddingSpec(4, combiner="mean", seed=1, **kw),
            }
        )
        self.dense = torch.nn.Linear(20, 1)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self.emb(batch)
        seq = out["s"].values.sum(1)  # (B, L, D) padded with zeros
        return self.dense(torch.cat([out["a"], out["u"], seq, out["p"], out["q"]], 1)).squeeze(1)


def table_rows(model: Model) -> dict[tuple[str, int, int], torch.Tensor]:
    """(physical table, ID, tag) -> embedding row, for comparing across world sizes."""
    rows = {}
    for name, table in model.emb.tables().items():
        s = table.state_dict()
        for i, t, e in zip(s["ids"].tolist(), s["tags"].tolist(), s["embeddings"], strict=True):
            rows[(name, i, t)] = e.float()
    return rows


def train(
    rank: int,
    world: int,
    directory: str,
    opt: str,
    steps: int,
    rows: int,
    split: list[int] | None = None,
    micro: int = 1,
    clip: float | None = None,
    pool_on_owner: bool | None = None,
    wire_dtype: torch.dtype = torch.float32,
    device: str | None = None,
    row_dtype: torch.dtype = torch.float32,
):
    """K steps on global batches of `rows`; rank r takes rows [split[r], split[r+1]). Each rank's
    loss is its rows' sum; DDP and the sparse exchange average over the 2 ranks, which equals one
    process minimizing sum / 2 over the global batch (what world == 1 runs). `micro`: gradients of
    that many micro-batches per step; `clip`: global gradient-norm limit; `pool_on_owner`: as in
    `EmbeddingEngine.shard` (on these short bags None picks the gathered route), as `wire_dtype`;
    `device`: the tables' (`EmbeddingSpec.device`; None: host tables); `row_dtype`: their rows'."""
    model = Model(device, row_dtype)
    if dist.is_initialized():
        model.emb.shard(pool_on_owner=pool_on_owner, wire_dtype=wire_dtype)
        dense = torch.nn.parallel.DistributedDataParallel(model.dense)
        model.dense = dense  # type: ignore[assignment]
    sparse = OPTIMIZERS[opt](model.emb)
    dense_opt = torch.optim.SGD(model.dense.parameters(), lr=0.05)
    split = split or [rows * r // world for r in range(world + 1)]
    losses = []
    for batch in batches(steps, rows):
        mine = rows_of(batch, split[rank], split[rank + 1]) if world > 1 else batch
        n, total = len(mine["y"]), torch.zeros(())
        for m in range(micro):
            part = rows_of(mine, n * m // micro, n * (m + 1) // micro)
            loss = ((model(part) - part["y"]) ** 2).sum() / (2 if world == 1 else 1)
            loss.backward()
            total += loss.detach()
        if world > 1:
            dist.all_reduce(total)
        losses.append(float(total) / world)
        if clip is not None:
            clip_grad_norm_(model.dense.parameters(), sparse, clip)
        sparse.step()
        dense_opt.step()
        sparse.zero_grad()
        dense_opt.zero_grad()
    return losses, table_rows(model)


def route_choice(rank: int, world: int, directory: str):
    """The routes a sharded engine picks: long bags pool on the owners, one-ID bags and sequences
    gather rows; every rank agrees although only rank 0 sees long bags. Also: a wire dtype that
    cannot carry embeddings is refused."""
    engine = EmbeddingEngine(
        {"long": EmbeddingSpec(4), "short": EmbeddingSpec(8), "seq": EmbeddingSpec(16, combiner=None)}
    ).shard()
    rows = 4
    long = Ragged.from_lengths(torch.arange(rows * 10 * (1 - rank)), torch.full((rows,), 10 * (1 - rank)))
    engine({"long": long, "short": torch.arange(rows), "seq": Ragged.from_list([[1, 2]] * rows)})
    try:
        EmbeddingEngine({"x": EmbeddingSpec(4)}).shard(wire_dtype=torch.int8)
    except ValueError as e:
        return engine._routes, str(e)
    return engine._routes, None


def train_with_empty_rank(rank: int, world: int, directory: str):
    """Rank 1 has no rows at all for feature "a" and an empty batch for the one-rank table "solo"."""
    engine = EmbeddingEngine({"a": EmbeddingSpec(4), "solo": EmbeddingSpec(8, combiner="mean")})
    engine.shard()
    opt = SparseAdam(engine, lr=0.1)
    sizes = [5, 2]
    for step in range(3):
        b = sizes[rank]
        a = (
            Ragged.from_lengths(torch.arange(7 * b) + step, torch.full((b,), 7))
            if rank == 0
            else Ragged.from_lengths(torch.zeros(0, dtype=torch.int64), torch.zeros(b, dtype=torch.int64))
        )
        none = torch.zeros(0, dtype=torch.int64)
        solo = Ragged.from_list([[1, 2, 3]] * b) if rank == 0 else Ragged.from_lengths(none, none)
        out = engine({"a": a, "solo": solo})
        assert out["a"].shape == (b, 4) and out["solo"].shape == (len(solo.offsets) - 1, 8)
        (out["a"].sum() + out["solo"].sum()).backward()
        opt.step()
        opt.zero_grad()
    return {name: t.state_dict()["ids"].tolist() for name, t in engine.tables().items()}


def checkpoint_hop(rank: int, world: int, directory: str, source: str | None, target: str):
    """Loads `source` (if any) into a fresh model on this world size, else trains one; saves to `target`."""
    model = Model()
    if world > 1:
        model.emb.shard()
    sparse = SparseAdam(model.emb, lr=0.05)
    dense = torch.optim.Adam(model.dense.parameters(), lr=0.01)
    if source is None:
        for batch in batches(3, 16):
            ((model(batch) - batch["y"]) ** 2).mean().backward()
            sparse.step()
            dense.step()
            sparse.zero_grad()
            dense.zero_grad()
    else:
        Saver(source, model, optimizers=[sparse, dense]).load()
    Saver(target, model, optimizers=[sparse, dense], shards=2).save(3)
    states = {name: t.state_dict() for name, t in model.emb.tables().items()}
    opt_state = sparse.state_dict()  # sharded: hyper-parameters and step, the slots stay with the Saver
    assert ("sparse_slots" in opt_state) == (not model.emb.sharded)
    if model.emb.sharded:
        try:
            sparse.state_dict(slots=True)
            raise AssertionError("state_dict(slots=True) of a sharded engine's optimizer must refuse")
        except RuntimeError as e:
            assert "spread over the ranks" in str(e)
    return states, {k: v.clone() for k, v in model.dense.state_dict().items()}, opt_state["sparse_step"]


def trainer_run(
    rank: int, world: int, directory: str, die_at: int | None = None, dense_adam: bool = False, **config: Any
):
    """The Trainer, unchanged, on this world size (`config`: more TrainerConfig fields): returns
    per-step losses, the final eval and the dense parameters and optimizer state, gathered."""
    from recis.optim import dense_state
    from recis.train import Trainer, TrainerConfig
    from recis.train.hooks import Hook

    class Record(Hook):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
            self.losses.append(logs["loss"])
            if die_at is not None and rank == 1 and logs["step"] == die_at:
                os.kill(os.getpid(), signal.SIGKILL)

    model = _ClickModel()
    if rank:  # ranks start from different dense weights: DDP and FSDP both take rank 0's
        torch.nn.init.normal_(model.mlp[0].weight)
    data = []
    for b in batches(6, 16, seed=1):
        b["label"] = (b["y"] > 0.5).float()
        data.append(b if world == 1 else rows_of(b, 16 * rank // world, 16 * (rank + 1) // world))
    record = Record()
    config = {"output_dir": f"{directory}/out", "checkpoint_every": 3, **config}
    cfg = TrainerConfig(progress=False, hooks=[record], **config)
    params = model.parameters()
    dense = torch.optim.Adam(params, 0.02) if dense_adam else torch.optim.SGD(params, 0.1)
    trainer = Trainer(model, data, data, SparseAdam(model, lr=0.05), dense, cfg)
    t0 = time.monotonic()
    try:
        summary = trainer.fit()
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - t0}
    return {
        "losses": record.losses,
        "eval": summary["eval"],
        "checkpoint": summary["checkpoint"],
        "fsdp": dense_state.has_sharded(model),
        "dense": dense_state.full_model_state(model.mlp),
        "dense_optimizer": dense_state.full_optimizer_state(dense),
    }


class _ClickModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = EmbeddingEngine({"a": EmbeddingSpec(4, combiner="sum"), "u": EmbeddingSpec(4)})
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.emb(batch)
        return {"label": self.mlp(torch.cat([out["a"], out["u"]], 1)).squeeze(1)}


def owner_of(ids: torch.Tensor, world: int) -> torch.Tensor:
    from recis.embedding import owner

    return owner(ids, world)


def saver_with_unsharded_engine(rank: int, world: int, directory: str) -> str:
    """FSDP dense layers beside an unsharded engine: the Saver refuses (every rank would write its rows)."""
    from torch.distributed.fsdp import fully_shard

    model = torch.nn.ModuleDict({"emb": EmbeddingEngine({"a": EmbeddingSpec(4)}), "mlp": torch.nn.Linear(4, 1)})
    fully_shard(model["mlp"])
    try:
        Saver(directory, model)
    except ValueError as e:
        return str(e)
    return "no error"
