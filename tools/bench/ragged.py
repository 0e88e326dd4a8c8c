"""Ragged kernels (C++) vs the pure-torch reference on recommendation-shaped batches.

    python tools/bench/ragged.py [--json PATH] [--repeat N]

Workloads: behaviour sequences (B=4096 rows of 0-400 int64 item IDs, cut to the last 50 or
padded to 100) and multi-hot ID lists (B=4096 rows of 1-5 IDs, row selection).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import compare, parser, print_table, write_json

from recis.core import Ragged, reference


def batch(rows: int, min_len: int, max_len: int, seed: int = 0) -> Ragged:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (rows,), generator=g)
    ids = torch.randint(-(2**62), 2**62, (int(lengths.sum()),), generator=g)
    return Ragged.from_lengths(ids, lengths)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seq = batch(4096, 0, 400)
    multi = batch(4096, 1, 5, seed=1)
    perm = torch.randperm(4096, generator=torch.Generator().manual_seed(2))
    pad = torch.zeros((), dtype=torch.int64)
    o, v = seq.offsets, seq.values
    assert isinstance(v, torch.Tensor)
    mv = multi.values
    assert isinstance(mv, torch.Tensor)
    run = dict(warmup=args.warmup, repeat=args.repeat)
    results = []
    results += compare(
        "truncate(50, left) B=4096",
        ("torch reference", lambda: reference.ragged_truncate(o, v, None, 50, True)),
        [("recis C++", lambda: seq.truncate(50, side="left"))],
        items=seq.num_values,
        unit="values",
        **run,
    )
    results += compare(
        "to_dense(100) B=4096",
        ("torch reference", lambda: reference.ragged_to_dense(o, v, None, pad, 100, True)),
        [("recis C++", lambda: seq.to_dense(max_len=100, side="left"))],
        items=4096 * 100,
        unit="cells",
        **run,
    )
    results += compare(
        "select(perm) multi-hot",
        ("torch reference", lambda: reference.ragged_select(multi.offsets, mv, None, perm)),
        [("recis C++", lambda: multi.select(perm))],
        items=multi.num_values,
        unit="values",
        **run,
    )
    print_table(results)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
