"""The sparse training step sharded over ranks: ours as 2 processes x 1 thread vs ours as 1 process x
2 threads vs TorchRec DistributedModelParallel with 2 processes, same run.

    python tools/bench/sparse_step_dist.py [--iters 20] [--rounds 2] [--torchrec-venv VENV] [--json PATH]

Workload of tools/bench/workloads.py (8 features, Zipf(1.05) over 1M IDs each, bags of 10-30, global
batch 4096, dim 64); with 2 ranks each takes half of every batch. Ours shards every hash table
row-wise (recis.embedding.distributed, gloo): the 8 features share one physical table, which pools
on the owners (its route as the engine picks it); the owners sum gradients per row inside the
optimizer's update, after backward. TorchRec runs tools/bench/torchrec/sparse_step_dmp.py where
sparse_step.py finds TorchRec (table-wise sharding by its planner, fused RowWiseAdagrad); without
one it is skipped with a note on how to get one. Besides times, each of our runs
reports the bytes one step moves between ranks on either route, for docs/scaling.md. The bf16
configuration sends partial sums and gradients as bfloat16 (`shard(wire_dtype=torch.bfloat16)`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import environment, run_worker
from sparse_step import missing_venv, torchrec_python

HERE = Path(__file__).resolve().parent
BASELINE_DMP = HERE / "torchrec" / "sparse_step_dmp.py"
GLOBAL_BATCH = 4096


def rank_main(
    rank: int, world: int, opt_name: str, iters: int, warmup: int, rendezvous: str, out: str, wire: str = "float32"
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300)
    )
    sys.path.insert(0, str(HERE))
    from workloads import zipf_batches

    from recis.core import kernels
    from recis.embedding import EmbeddingEngine, EmbeddingSpec, Initializer, concat
    from recis.optim import SparseAdam, SparseRowWiseAdagrad

    lo, hi = GLOBAL_BATCH * rank // world, GLOBAL_BATCH * (rank + 1) // world
    keep = torch.arange(lo, hi)
    batches = [{f: r.select(keep) for f, r in b.items()} for b in zipf_batches(4)]
    names = list(batches[0])
    engine = EmbeddingEngine({f: EmbeddingSpec(64, initializer=Initializer.uniform(-0.001, 0.001)) for f in names})
    engine.shard(wire_dtype=getattr(torch, wire))
    opt = {"adam": SparseAdam, "rowwise_adagrad": SparseRowWiseAdagrad}[opt_name](engine, lr=0.01)
    w_out = torch.randn(hi - lo, 64 * len(names), generator=torch.Generator().manual_seed(7))

    def step(batch: dict) -> None:
        out = engine(batch)
        (concat([out[f] for f in names]) * w_out).sum().backward()
        opt.step()

    for i in range(warmup):
        step(batches[i % 4])
    times = []
    for i in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        step(batches[i % 4])
        times.append(time.perf_counter() - t0)
    # What this rank sends to the others per step on batch 0, on either route: gathered (its unique
    # keys owned elsewhere, their rows back, their gradients) or pooled on the owners (every key
    # owned elsewhere with per-bag counts; partial sums of the other ranks' bags; its gradients).
    ids = [batches[0][f].values for f in names]
    _, _, counts, _ = kernels.embedding.route_keys(ids, list(range(len(names))), world)
    remote = int(counts.sum() - counts[rank])
    bags = len(names) * (hi - lo)
    lengths = torch.cat([batches[0][f].offsets.diff() for f in names])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    _, sizes, _ = kernels.embedding.route_bags(ids, offsets, world, [hi - lo] * len(names))
    other_bags = len(names) * (GLOBAL_BATCH - (hi - lo))
    res = {
        "times_ms": [round(1000 * t, 2) for t in times],
        "unique_keys": int(counts.sum()),
        "remote_keys": remote,
        "lookups": sum(batches[0][f].num_values for f in names),
        "rows": sum(len(t) for t in engine.tables().values()),
        "pooled_on_owner": engine._routes,
        "gathered_mb": {"keys": remote * 16 / 1e6, "rows": remote * 256 / 1e6, "grads": remote * 256 / 1e6},
        "pooled_mb": {
            "keys": 8 * int(sizes.sum() - sizes[rank]) / 1e6,
            "partial_sums": 256 * other_bags / 1e6,
            "grads": 256 * bags * (world - 1) / 1e6,
        },
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def run_ours(world: int, opt_name: str, args: argparse.Namespace, wire: str = "float32") -> dict:
    """Ours on `world` ranks (1 thread each), or in one process with 2 threads when world == 1."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1" if world > 1 else str(args.threads))
    if world == 1:
        cmd = [sys.executable, str(HERE / "sparse_step.py"), "--worker", "recis", opt_name]  # fused: our fastest
        cmd += ["--iters", str(args.iters), "--warmup", str(args.warmup)]
        return {"times_ms": run_worker(cmd, env)["times_ms"]}
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); import torch.multiprocessing as mp; "
            f"from sparse_step_dist import rank_main; "
            f"mp.start_processes(rank_main, args=({world}, {opt_name!r}, {args.iters}, {args.warmup}, "
            f"{tmp + '/rendezvous'!r}, {tmp!r}, {wire!r}), nprocs={world}, start_method='spawn')"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            raise RuntimeError(f"ranks failed:\n{proc.stderr[-3000:]}")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    return ranks[0] | {"per_rank": ranks}


def run_torchrec(opt_name: str, args: argparse.Namespace) -> dict | None:
    """TorchRec DMP on 2 ranks, or None when there is no TorchRec to run."""
    python = torchrec_python(args.torchrec_venv)
    if not python.exists():
        return None
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    cmd = [str(python), str(BASELINE_DMP), opt_name, "--iters", str(args.iters), "--warmup", str(args.warmup)]
    res = run_worker(cmd, env)
    return {"times_ms": res["times_ms_rank0"], "torchrec": res}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of the 1-process configuration")
    p.add_argument(
        "--torchrec-venv",
        default=os.environ.get("RECIS_TORCHREC_VENV"),
        help="a venv with TorchRec (default: $RECIS_TORCHREC_VENV, else this interpreter when it has torchrec)",
    )
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    configs = {
        "recis RowWiseAdagrad, 2 procs x 1 thread": lambda: run_ours(2, "rowwise_adagrad", args),
        "recis Adam, 2 procs x 1 thread": lambda: run_ours(2, "adam", args),
        "recis RowWiseAdagrad, 2 procs x 1 thread, bf16 wire": lambda: run_ours(2, "rowwise_adagrad", args, "bfloat16"),
        "recis RowWiseAdagrad, 1 proc x 2 threads": lambda: run_ours(1, "rowwise_adagrad", args),
        "TorchRec DMP RowWiseAdagrad, 2 procs x 1 thread": lambda: run_torchrec("rowwise_adagrad", args),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    rounds: dict[str, list[float]] = {k: [] for k in configs}  # each round's median
    info: dict[str, dict] = {}
    for r in range(args.rounds):
        for name, run in configs.items():
            print(f"round {r + 1}/{args.rounds}: {name} ...", flush=True)
            res = run()
            if res is None:
                print(f"  skipped: {missing_venv(args.torchrec_venv)}")
                continue
            times[name] += res["times_ms"]
            rounds[name].append(statistics.median(res["times_ms"]))
            info[name] = res
    print(f"\nsparse training step, global batch {GLOBAL_BATCH}, median of {args.iters} x {args.rounds} steps")
    summary = {}
    for name, t in times.items():
        if t:
            ms = statistics.median(t)
            summary[name] = {"ms": ms, "samples_per_s": GLOBAL_BATCH * 1e3 / ms}
            print(f"{name:54s} {ms:8.1f} ms {GLOBAL_BATCH * 1e3 / ms:9.0f} samples/s")
    trec = summary.get("TorchRec DMP RowWiseAdagrad, 2 procs x 1 thread")
    print()
    for name, s in summary.items():
        if trec and name.startswith("recis"):
            # Per round, against that round's TorchRec run: how much the machine's noise moves the ratio.
            per_round = sorted(
                t / o
                for t, o in zip(rounds["TorchRec DMP RowWiseAdagrad, 2 procs x 1 thread"], rounds[name], strict=False)
            )
            spread = f" (rounds: {per_round[0]:.2f}x-{per_round[-1]:.2f}x)" if len(per_round) > 1 else ""
            print(f"{name} vs TorchRec DMP: {trec['ms'] / s['ms']:.2f}x samples/s{spread}")
    two = info.get("recis RowWiseAdagrad, 2 procs x 1 thread")
    if two:
        for r, rank in enumerate(two["per_rank"]):
            print(
                f"rank {r}: {rank['lookups']} lookups, {rank['unique_keys']} unique keys, "
                f"{rank['remote_keys']} owned elsewhere; pooled on the owners: {rank['pooled_on_owner']}"
            )
            for route in ("pooled", "gathered"):
                mb = rank[f"{route}_mb"]
                parts = " + ".join(f"{v:.2f} MB {k}" for k, v in mb.items())
                print(f"  {route} route sends per step {parts} = {sum(mb.values()):.2f} MB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {"environment": environment(), "summary": summary, "round_medians_ms": rounds, "runs": info}, indent=1
            )
        )


if __name__ == "__main__":
    main()
