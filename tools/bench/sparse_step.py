"""Full sparse training step (pooled forward + backward + optimizer) vs TorchRec and plain PyTorch.

    python tools/bench/sparse_step.py [--iters 20] [--rounds 2] [--torchrec-venv VENV] [--json PATH]

The workload of tools/bench/workloads.py: 8 features, IDs Zipf(1.05) over 1M per feature, bags of
10-30, batch 4096, dim 64, 4 batches cycled, loss = sum(pooled * w). Ours runs on the dynamic hash
table (rows created on first sight, during warm-up). The baselines run
tools/bench/torchrec/sparse_step.py: plain PyTorch in this interpreter, TorchRec in this one too
when it has torchrec (`make install` puts it in .venv), else in the venv of
tools/bench/torchrec/install.sh; without either the TorchRec configuration is skipped with a note
on how to get one. Every configuration runs in its own process (so peak RSS is its own),
`--rounds` times, interleaved; the figure per configuration is the median step time over all its
timed steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from harness import environment, run_worker

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "torchrec" / "sparse_step.py"

# name -> (how it runs, optimizer)
CONFIGS = {
    "recis SparseAdam": ("recis", "adam"),
    "recis SparseAdam two-phase": ("recis-2phase", "adam"),
    "recis SparseRowWiseAdagrad": ("recis", "rowwise_adagrad"),
    "torch EmbeddingBag + SparseAdam": ("torch:torch_sparse", "adam"),
    "TorchRec FusedEBC + RowWiseAdagrad": ("torchrec:trec_fused_ebc", "rowwise_adagrad"),
}
# (ours, baseline): the ratios printed, in samples/s
RATIOS = [
    ("recis SparseAdam", "TorchRec FusedEBC + RowWiseAdagrad"),
    ("recis SparseRowWiseAdagrad", "TorchRec FusedEBC + RowWiseAdagrad"),
    ("recis SparseAdam", "torch EmbeddingBag + SparseAdam"),
]


def worker(how: str, opt_name: str, iters: int, warmup: int) -> None:
    """Runs our step in this process and prints a RESULT line like the baseline script's."""
    import torch

    sys.path.insert(0, str(HERE))
    from workloads import zipf_batches

    from recis.embedding import EmbeddingEngine, EmbeddingSpec, Initializer, concat
    from recis.optim import SparseAdam, SparseRowWiseAdagrad

    batches = zipf_batches(4)
    names = list(batches[0])
    engine = EmbeddingEngine({f: EmbeddingSpec(64, initializer=Initializer.uniform(-0.001, 0.001)) for f in names})
    fused = how == "recis"
    make = {"adam": SparseAdam, "rowwise_adagrad": SparseRowWiseAdagrad}[opt_name]
    opt = make(engine, lr=0.01, fused=fused)
    w_out = torch.randn(4096, 64 * len(names), generator=torch.Generator().manual_seed(7))
    phases = {"forward": [], "backward": [], "step": []}

    def step(batch: dict) -> None:
        t0 = time.perf_counter()
        out = engine(batch)
        pooled = concat([out[f] for f in names])  # (B, T * D)
        t1 = time.perf_counter()
        (pooled * w_out).sum().backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        for k, a, b in (("forward", t0, t1), ("backward", t1, t2), ("step", t2, t3)):
            phases[k].append(b - a)

    for i in range(warmup):
        step(batches[i % 4])
    for v in phases.values():
        v.clear()
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        step(batches[i % 4])
        times.append(time.perf_counter() - t0)
    (table,) = engine.tables().values()
    res = {
        "components_ms": components(engine, table, opt, batches[0], names),
        "median_ms": 1000 * statistics.median(times),
        "times_ms": [round(1000 * t, 1) for t in times],
        "phases_ms": {k: round(1000 * statistics.median(v), 1) for k, v in phases.items()},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rows": len(table),
        "threads": torch.get_num_threads(),
    }
    print("RESULT " + json.dumps(res), flush=True)


def components(engine, table, opt, batch: dict, names: list[str]) -> dict[str, float]:
    """Where a step's sparse time goes: each C++ piece timed alone on batch 0 (median of 5)."""
    import torch

    from recis.core import kernels

    ids = [batch[f].values for f in names]
    tags = list(range(len(names)))
    found = table.lookup(ids, engine.step, True, tags, gather=False)
    offsets = [torch.zeros(1, dtype=torch.int64)]
    for f in names:
        offsets.append(batch[f].offsets[1:] + offsets[-1][-1])
    offsets, bags = torch.cat(offsets), [batch[f].num_rows for f in names]
    grad_out = torch.randn(sum(bags), table.dim)
    grad_rows = torch.empty(len(found.rows), table.dim)
    config = opt._config(0, max(opt._step, 1))
    pieces = {
        "dedup+probe": lambda: table.lookup(ids, engine.step, True, tags, gather=False),
        "pool": lambda: table.pool(found.rows, found.inverse, offsets, None, ["sum"] * len(bags), bags),
        "backward reduce": lambda: kernels.embedding.pooled_backward(
            grad_out, found.inverse, offsets, None, ["sum"] * len(bags), bags, grad_rows
        ),
        "update": lambda: kernels.optim.sparse_update(table._c, config, opt._slots[0], found.rows, grad_rows),
        "reduce+update fused": lambda: kernels.optim.pooled_backward_update(
            table._c,
            config,
            opt._slots[0],
            found.rows,
            found.inverse,
            offsets,
            None,
            ["sum"] * len(bags),
            bags,
            grad_out,
        ),
    }
    out = {}
    for name, fn in pieces.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = round(1000 * statistics.median(times), 1)
    return out


def run_config(how: str, opt_name: str, args: argparse.Namespace) -> dict | None:
    # Same OpenMP settings for every configuration: passive waiting unless --omp-default (see
    # docs/benchmarks.md: spinning OpenMP workers starve other threads on 2 cores).
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
    if args.omp_default:
        del env["OMP_WAIT_POLICY"]
    if how.startswith(("torch:", "torchrec:")):
        side, mode = how.split(":")
        python = torchrec_python(args.torchrec_venv) if side == "torchrec" else Path(sys.executable)
        if not python.exists():
            return None
        cmd = [str(python), str(BASELINE), mode, opt_name, "--iters", str(args.iters), "--warmup", str(args.warmup)]
    else:
        cmd = [sys.executable, __file__, "--worker", how, opt_name, "--iters", str(args.iters)]
        cmd += ["--warmup", str(args.warmup)]
    return run_worker(cmd, env)


def torchrec_python(venv: str | None) -> Path:
    """The TorchRec side's interpreter (shared with sparse_step_dist.py): VENV's when given, else this
    one when it imports torchrec (`make install` puts torchrec in .venv), else /tmp/torchrec-venv's."""
    if venv:
        return Path(venv) / "bin" / "python"
    if importlib.util.find_spec("torchrec") is not None:
        return Path(sys.executable)
    return Path("/tmp/torchrec-venv/bin/python")


def missing_venv(venv: str | None) -> str:
    """What to do when there is no TorchRec to run (shared with sparse_step_dist.py)."""
    return (
        f"no TorchRec at {torchrec_python(venv)}; run `make install` (torchrec in .venv), create a venv with "
        "`tools/bench/torchrec/install.sh VENV` or point --torchrec-venv / RECIS_TORCHREC_VENV at one"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=20, help="timed steps per process (after warm-up)")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="processes per configuration, interleaved")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--omp-default", action="store_true", help="leave OMP_WAIT_POLICY unset in every process")
    p.add_argument(
        "--torchrec-venv",
        default=os.environ.get("RECIS_TORCHREC_VENV"),
        help="a venv with TorchRec (default: $RECIS_TORCHREC_VENV, else this interpreter when it has torchrec)",
    )
    p.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", nargs=2, metavar=("HOW", "OPT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(*args.worker, args.iters, args.warmup)

    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    times: dict[str, list[float]] = {k: [] for k in configs}
    info: dict[str, dict] = {}
    for r in range(args.rounds):
        for name, (how, opt_name) in configs.items():
            print(f"round {r + 1}/{args.rounds}: {name} ...", flush=True)
            res = run_config(how, opt_name, args)
            if res is None:
                print(f"  skipped: {missing_venv(args.torchrec_venv)}")
                continue
            times[name] += res["times_ms"]
            peak = max(info.get(name, {}).get("peak_rss_gb", 0.0), res["peak_rss_gb"])
            info[name] = res | {"peak_rss_gb": peak}
    print(f"\nsparse training step, batch 4096, {args.threads} threads, median of {args.iters} x {args.rounds} steps")
    print(f"{'configuration':38s} {'ms/step':>8s} {'samples/s':>10s} {'peak RSS':>9s}  phases (ms)")
    summary = {}
    for name, t in times.items():
        if not t:
            continue
        ms = statistics.median(t)
        summary[name] = {"ms": ms, "samples_per_s": 4096e3 / ms, "peak_rss_gb": info[name]["peak_rss_gb"]}
        phases = info[name].get("phases_ms", "")
        print(f"{name:38s} {ms:8.1f} {4096e3 / ms:10.0f} {info[name]['peak_rss_gb']:8.2f}G  {phases}")
        if "components_ms" in info[name]:
            print(f"{'':38s} components alone (ms): {info[name]['components_ms']}")
    print()
    for ours, base in RATIOS:
        if ours in summary and base in summary:
            print(f"{ours} vs {base}: {summary[base]['ms'] / summary[ours]['ms']:.2f}x samples/s")
        elif ours in summary:
            print(f"{ours} vs {base}: baseline not run")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"environment": environment(), "summary": summary, "runs": info}, indent=1)
        )


if __name__ == "__main__":
    main()
