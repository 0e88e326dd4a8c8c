"""The TorchRec baseline of tools/bench/sparse_step_dist.py: the sparse training step of
tools/bench/torchrec/sparse_step.py under `DistributedModelParallel`, 2 processes x 1 thread on gloo.

    python tools/bench/torchrec/sparse_step_dmp.py [OPT] [--iters 20] [--warmup 3] [--world 2]

The planner picks the sharding (table-wise on this workload: each rank owns whole tables); the
optimizer (OPT rowwise_adagrad or sgd) is fused into backward. Each rank draws its own batches of
global_batch / world rows from the Zipf workload (its own seed, the same ID permutation on every
rank). Needs TorchRec (.venv or the venv of install.sh). Rank 0 prints one `RESULT {json}` line
(ms_per_iter over the slowest rank, times_ms_rank0, samples_per_s, lookups_per_s, plan).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.append(str(Path(__file__).resolve().parents[1]))  # appended: tools/bench/torchrec must not shadow torchrec
from workloads import zipf_arrays

TABLES, DIM, IDS = 8, 64, 20


def rank_main(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(args.world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(args.world),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=args.world, timeout=datetime.timedelta(seconds=120))
    import torchrec.optim
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    batch = args.global_batch // args.world
    tables = [
        EmbeddingBagConfig(name=f"t{t}", embedding_dim=DIM, num_embeddings=args.rows, feature_names=[f"f{t}"])
        for t in range(TABLES)
    ]
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    make = {"rowwise_adagrad": torchrec.optim.RowWiseAdagrad, "sgd": torch.optim.SGD}[args.opt]
    apply_optimizer_in_backward(make, ebc.parameters(), {"lr": 0.01})
    topology = Topology(world_size=args.world, compute_device="cpu", local_world_size=args.world)
    plan = EmbeddingShardingPlanner(topology=topology).plan(ebc, get_default_sharders())
    model = DistributedModelParallel(ebc, device=torch.device("cpu"), plan=plan)

    batches = zipf_arrays(4, tables=TABLES, rows=args.rows, batch=batch, ids=IDS, seed=1234 + rank, perm_seed=99)
    keys = [f"f{t}" for t in range(TABLES)]
    kjts = [
        KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=lengths.reshape(-1))
        for lengths, values in batches
    ]
    lookups = [int(lengths.sum()) for lengths, _ in batches]
    w_out = torch.randn(batch, TABLES * DIM, generator=torch.Generator().manual_seed(7 + rank))

    def step(i: int) -> None:
        (model(kjts[i % len(kjts)]).values() * w_out).sum().backward()  # values(): (B, T * D)

    for i in range(args.warmup):
        step(i)
    dist.barrier()
    times, total = [], 0
    for i in range(args.iters):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
        total += lookups[i % len(kjts)]
    dist.barrier()
    mine = torch.tensor([sum(times), total], dtype=torch.float64)
    every = [torch.zeros_like(mine) for _ in range(args.world)]
    dist.all_gather(every, mine)
    if rank == 0:
        slowest = max(float(r[0]) for r in every)
        shards = plan.plan.get("", {})
        res = {
            "mode": f"trec_dmp{args.world}_gloo",
            "opt": args.opt,
            "world": args.world,
            "global_batch": args.global_batch,
            "ms_per_iter": 1000 * slowest / args.iters,
            "times_ms_rank0": [round(1000 * t, 1) for t in times],
            "samples_per_s": args.global_batch * args.iters / slowest,
            "lookups_per_s": sum(float(r[1]) for r in every) / slowest,
            "plan": {name: f"{s.sharding_type}{s.ranks}" for name, s in shards.items()},
        }
        print("RESULT " + json.dumps(res), flush=True)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("opt", nargs="?", default="rowwise_adagrad", choices=["rowwise_adagrad", "sgd"])
    p.add_argument("--iters", type=int, default=20, help="timed steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--world", type=int, default=2, help="processes, 1 thread each")
    p.add_argument("--global-batch", type=int, default=4096)
    p.add_argument("--rows", type=int, default=1_000_000, help="IDs per table")
    args = p.parse_args()
    try:
        import torchrec.distributed  # noqa: F401 (fail here, not in every rank)
    except ImportError as e:
        raise SystemExit(f"needs TorchRec ({e}): run `make install` or use the venv of install.sh") from e
    mp.spawn(rank_main, args=(args, free_port()), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
