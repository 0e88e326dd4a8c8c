"""Very long behaviour sequences: target attention over user histories of up to 1k, 10k and 100k
events, ragged end to end against plain PyTorch padded to the batch's longest history.

    python tools/bench/long_sequence.py [--lengths 1000 10000 100000] [--batch 64] [--steps 3] [--rounds 3]

Each batch holds `--batch` users; history lengths are log-uniform in [1, L] (most users are short,
a few reach L: mean L / ln L), item IDs Zipf over 1M items, D=32. One training step: embed the
history and the candidate, DIN target attention (an MLP over [q, k, q-k, q*k], softmax per user),
a 2-layer MLP head, BCE, backward, sparse + dense Adam.

- ours: `EmbeddingEngine` with `ragged=True` histories and `SparseAdam`; `TargetAttention` over the
  Ragged rows scores only the real events.
- plain PyTorch: `nn.Embedding(1M, 32, sparse=True)` + `torch.optim.SparseAdam`; histories padded
  to the batch's longest (B, L_max, D) with a mask, the same attention on the padded tensor.

Every (case, L) runs in its own process (peak RSS is that process's), rounds interleaved; a process
that exceeds `--memory-gb` of address space fails and is reported as such. samples/s is the median
over rounds of batch * steps / seconds after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

D, ITEMS = 32, 1_000_000


def batches(length: int, batch: int, steps: int, seed: int = 0):
    import numpy as np
    import torch

    g = np.random.default_rng(seed)
    out = []
    for _ in range(steps + 1):
        lengths = np.exp(g.uniform(0, np.log(length), batch)).astype(np.int64).clip(1, length)
        ids = (g.zipf(1.2, int(lengths.sum())) % ITEMS).astype(np.int64)
        target = (g.zipf(1.2, batch) % ITEMS).astype(np.int64)
        label = torch.from_numpy(g.integers(0, 2, batch)).float()
        out.append((torch.from_numpy(lengths), torch.from_numpy(ids), torch.from_numpy(target), label))
    return out


def run(case: str, length: int, batch: int, steps: int) -> dict:
    import torch
    from torch import nn

    from recis.core import Ragged
    from recis.embedding import EmbeddingEngine, EmbeddingSpec
    from recis.optim import SparseAdam
    from recis.train.models import MLP, TargetAttention

    torch.manual_seed(0)
    attention, head = TargetAttention(D, (64, 32)), MLP(2 * D, [64, 1])
    dense = list(attention.parameters()) + list(head.parameters())
    if case == "ours":
        engine = EmbeddingEngine({"item": EmbeddingSpec(D, table="items"),
                                  "hist": EmbeddingSpec(D, table="items", combiner=None, ragged=True)})  # fmt: skip
        sparse = SparseAdam(engine, lr=0.01)

        def forward(lengths, ids, target):
            out = engine({"item": target, "hist": Ragged.from_lengths(ids, lengths)})
            return out["item"], attention(out["item"], out["hist"])
    else:
        table = nn.Embedding(ITEMS, D, sparse=True)
        sparse = torch.optim.SparseAdam(table.parameters(), lr=0.01)

        def forward(lengths, ids, target):
            padded = Ragged.from_lengths(ids, lengths).to_dense(0)  # (B, L_max) ids, mask
            return table(target), attention(table(target), table(padded.values), padded.mask)

    dense_opt = torch.optim.Adam(dense, lr=0.001)
    data = batches(length, batch, steps)
    times = []
    for lengths, ids, target, label in data:
        start = time.perf_counter()
        query, pooled = forward(lengths, ids, target)
        loss = nn.functional.binary_cross_entropy_with_logits(head(torch.cat([query, pooled], 1)).squeeze(1), label)
        loss.backward()
        sparse.step()
        dense_opt.step()
        sparse.zero_grad()
        dense_opt.zero_grad()
        times.append(time.perf_counter() - start)
    events = sum(int(b[0].sum()) for b in data[1:])
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB
    return {"seconds": sum(times[1:]), "events": events, "rss_gb": rss_gb}


def child(args: argparse.Namespace) -> None:
    gb = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (gb, gb))
    try:
        print(json.dumps(run(args.case, args.length, args.batch, args.steps)))
    except (MemoryError, RuntimeError) as e:  # torch reports a failed allocation as RuntimeError
        oom = isinstance(e, MemoryError) or "can't allocate memory" in str(e)
        why = f"out of memory within {args.memory_gb:g} GB" if oom else f"{type(e).__name__}: {str(e)[:120]}"
        print(json.dumps({"error": why}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit of each process")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        return child(args)
    results: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for length in args.lengths:
            for case in ("plain PyTorch (padded)", "ours (ragged)"):
                cmd = [sys.executable, __file__, "--case", "ours" if case.startswith("ours") else "padded",
                       "--length", str(length), "--batch", str(args.batch), "--steps", str(args.steps),
                       "--memory-gb", str(args.memory_gb)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
                lines = out.stdout.strip().splitlines()
                got = json.loads(lines[-1]) if lines else {"error": f"exit {out.returncode}: {out.stderr[-200:]}"}
                results.setdefault((case, length), []).append(got)
                print(f"round {r + 1} L={length} {case}: {got}", flush=True)
    print("\n| L (max history) | case | samples/s | peak RSS | vs padded |")
    print("|---|---|---|---|---|")
    rows = []
    for length in args.lengths:
        base = None
        for case in ("plain PyTorch (padded)", "ours (ragged)"):
            runs = [x for x in results[(case, length)] if "error" not in x]
            if not runs:
                print(f"| {length:,} | {case} | failed: {results[(case, length)][0]['error']} | | |")
                rows.append({"length": length, "case": case, "error": results[(case, length)][0]["error"]})
                continue
            rate = statistics.median(args.batch * args.steps / x["seconds"] for x in runs)
            rss = statistics.median(x["rss_gb"] for x in runs)
            ratio = "" if base is None else f"{rate / base[0]:.2f}x samples/s, {rss / base[1]:.2f}x RSS"
            base = base or (rate, rss)
            print(f"| {length:,} | {case} | {rate:,.0f} | {rss:.2f} GB | {ratio} |")
            rows.append({"length": length, "case": case, "samples_per_s": rate, "rss_gb": rss})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
