"""The baselines of tools/bench/sparse_step.py: one sparse training step (pooled forward, backward of
sum(pooled * w), optimizer) on the Zipf workload of tools/bench/workloads.py, timed in this process.

    python tools/bench/torchrec/sparse_step.py MODE OPT [--iters 20] [--warmup 4] [--rows 1000000] ...

MODE `torch_sparse`: 8 x `nn.EmbeddingBag(sparse=True)` and a torch optimizer (OPT adam, adagrad or
sgd); runs wherever torch does. MODE `trec_fused_ebc`: TorchRec's `FusedEmbeddingBagCollection`,
the optimizer fused into backward (OPT rowwise_adagrad, adagrad or sgd; FBGEMM has no Adam on CPU);
needs TorchRec (.venv after `make install`, or the venv of install.sh). Prints one `RESULT {json}` line (median_ms,
times_ms, samples_per_s, lookups_per_s, peak_rss_gb), as our side in tools/bench/sparse_step.py does.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # appended: tools/bench/torchrec must not shadow torchrec
from workloads import zipf_arrays

Batch = tuple[torch.Tensor, list[torch.Tensor]]  # lengths (T, B), one ID tensor per table


def torch_sparse(args: argparse.Namespace, loss: Callable[[torch.Tensor], torch.Tensor]) -> tuple[Callable, Callable]:
    """Plain PyTorch: one `nn.EmbeddingBag(sparse=True)` per table and a sparse-capable optimizer."""
    bags = torch.nn.ModuleList(
        [torch.nn.EmbeddingBag(args.rows, args.dim, mode="sum", sparse=True) for _ in range(args.tables)]
    )
    make = {"adam": torch.optim.SparseAdam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
    if args.opt not in make:
        raise SystemExit(f"torch_sparse: OPT must be one of {sorted(make)}, got {args.opt!r}")
    opt = make[args.opt](list(bags.parameters()), lr=args.lr)

    def prepare(batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        lengths, values = batch
        zero = torch.zeros(1, dtype=torch.int64)
        return [(v, torch.cat([zero, lengths[t].cumsum(0)])) for t, v in enumerate(values)]

    def step(inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        pooled = [
            torch.nn.functional.embedding_bag(v, bags[t].weight, o, mode="sum", sparse=True, include_last_offset=True)
            for t, (v, o) in enumerate(inputs)
        ]
        opt.zero_grad(set_to_none=True)
        loss(torch.cat(pooled, dim=1)).backward()  # (B, T * D)
        opt.step()

    return prepare, step


def trec_fused_ebc(args: argparse.Namespace, loss: Callable[[torch.Tensor], torch.Tensor]) -> tuple[Callable, Callable]:
    """TorchRec: one `FusedEmbeddingBagCollection` of static tables, the optimizer fused into backward."""
    try:
        import torchrec.optim
        from torchrec import EmbeddingBagConfig
        from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    except ImportError as e:
        raise SystemExit(
            f"trec_fused_ebc needs TorchRec ({e}): run `make install` or use the venv of install.sh"
        ) from e

    make = {"rowwise_adagrad": torchrec.optim.RowWiseAdagrad, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
    if args.opt not in make:
        raise SystemExit(f"trec_fused_ebc: OPT must be one of {sorted(make)}, got {args.opt!r}")
    tables = [
        EmbeddingBagConfig(name=f"t{t}", embedding_dim=args.dim, num_embeddings=args.rows, feature_names=[f"f{t}"])
        for t in range(args.tables)
    ]
    ebc = FusedEmbeddingBagCollection(
        tables=tables, optimizer_type=make[args.opt], optimizer_kwargs={"lr": args.lr}, device=torch.device("cpu")
    )

    def prepare(batch: Batch) -> KeyedJaggedTensor:
        lengths, values = batch
        keys = [f"f{t}" for t in range(args.tables)]
        return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=lengths.reshape(-1))

    def step(kjt: KeyedJaggedTensor) -> None:
        loss(ebc(kjt).values()).backward()  # values(): (B, T * D); the update runs inside backward

    return prepare, step


MODES = {"torch_sparse": torch_sparse, "trec_fused_ebc": trec_fused_ebc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("opt", help="adam | adagrad | rowwise_adagrad | sgd (which ones depends on MODE)")
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--rows", type=int, default=1_000_000, help="IDs per table")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--ids", type=int, default=20, help="mean bag length (bags of ids/2 to 3*ids/2)")
    p.add_argument("--iters", type=int, default=20, help="timed steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--nbatches", type=int, default=4, help="batches cycled")
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args()

    torch.manual_seed(0)
    batches = zipf_arrays(args.nbatches, tables=args.tables, rows=args.rows, batch=args.batch, ids=args.ids)
    w_out = torch.randn(args.batch, args.dim * args.tables, generator=torch.Generator().manual_seed(7))
    prepare, step = MODES[args.mode](args, lambda pooled: (pooled * w_out).sum())
    inputs = [prepare(b) for b in batches]
    lookups = [int(lengths.sum()) for lengths, _ in batches]

    for i in range(args.warmup):
        step(inputs[i % len(inputs)])
    times, total = [], 0
    for i in range(args.iters):
        t0 = time.perf_counter()
        step(inputs[i % len(inputs)])
        times.append(time.perf_counter() - t0)
        total += lookups[i % len(inputs)]
    res = {
        "mode": args.mode,
        "opt": args.opt,
        "median_ms": 1000 * statistics.median(times),
        "times_ms": [round(1000 * t, 1) for t in times],
        "samples_per_s": args.batch * args.iters / sum(times),
        "lookups_per_s": total / sum(times),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
