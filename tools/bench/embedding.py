"""Embedding engine benchmarks, each against a plain-PyTorch baseline in the same run.

    python tools/bench/embedding.py [--rows 10000000] [--batch-keys 65536] [--json PATH]

1. Hit lookup + gather, D=64, distinct random keys from a `--rows` table, vs `index_select` of
   random rows from a plain tensor of the same size (the memory-bound ceiling).
2. Insert-on-miss with initialization, D=64, vs the same in plain PyTorch (a Python dict of IDs
   and `torch.randn` rows).
3. Forward pooled lookup on the Zipf workload of tools/bench/workloads.py (8 features, bags of
   10-30 IDs, batch 4096, 1M IDs per feature) vs 8 `nn.EmbeddingBag` forwards on static tables.
Also prints memory per row against the raw embedding bytes, and per row dtype: a `--rows` table
of D=64 rows with a RowWiseAdagrad slot stored as float32, bfloat16 and float16 (`memory_bytes()`:
rows, slot, metadata, ID map), with the hit lookup of a bfloat16 table beside the float32 one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import compare, parser, print_table, write_json
from workloads import zipf_batch

from recis.embedding import EmbeddingEngine, EmbeddingSpec, HashTable, Initializer

D = 64


def filled(keys: torch.Tensor, dtype: torch.dtype = torch.float32) -> HashTable:
    table = HashTable(D, Initializer.uniform(-0.05, 0.05), block_rows=65536, dtype=dtype)
    for chunk in keys.split(1 << 20):
        table.lookup(chunk, step=0)
    return table


def row_memory(keys: torch.Tensor) -> None:
    """memory_bytes() per row of a RowWiseAdagrad table (D=64, one float of slot) per row dtype."""
    per_row = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        table = filled(keys, dtype)
        table.add_slot("rowwise_adagrad.sum", 1)
        per_row[dtype] = table.memory_bytes() / len(table)
        del table
    base = per_row[torch.float32]
    print(f"\nmemory per row, {len(keys):,} rows, D=64, RowWiseAdagrad (rows + slot + metadata + ID map):")
    for dtype, b in per_row.items():
        print(f"  {str(dtype).removeprefix('torch.'):9s} {b:6.1f} bytes  {b / base:.3f}x float32")


def hit_lookup(rows: int, batch_keys: int, run: dict) -> list:
    print(f"building a {rows:,}-row table ...", flush=True)
    keys = torch.randint(-(2**63), 2**63 - 1, (rows,))
    row_memory(keys)
    table = filled(keys)
    half = filled(keys, torch.bfloat16)
    dense = torch.empty(rows, D).uniform_(-0.05, 0.05)
    g = torch.Generator().manual_seed(0)
    queries = [keys[torch.randint(0, rows, (batch_keys,), generator=g)].unique() for _ in range(8)]
    positions = [torch.randint(0, rows, (batch_keys,), generator=g) for _ in range(8)]
    state = {"i": 0}

    def ours() -> None:
        state["i"] = (state["i"] + 1) % 8
        table.lookup(queries[state["i"]], step=1)

    def ours_bf16() -> None:
        half.lookup(queries[state["i"]], step=1)

    def ceiling() -> None:
        dense.index_select(0, positions[state["i"]])

    results = compare(
        f"hit lookup+gather D=64, {rows // 10**6}M rows",
        ("index_select ceiling", ceiling),
        [("recis lookup", ours), ("recis lookup, bfloat16 rows", ours_bf16)],
        items=batch_keys,
        unit="keys",
        **run,
    )
    print(f"memory per row: {table.memory_bytes() / len(table):.0f} bytes (raw embedding {D * 4} bytes)")
    return results


def insert_on_miss(batch_keys: int, run: dict) -> list:
    g = torch.Generator().manual_seed(1)
    table = HashTable(D, Initializer.uniform(-0.05, 0.05), block_rows=65536)
    index: dict[int, int] = {}
    rows: list[torch.Tensor] = []

    def ours() -> None:
        table.lookup(torch.randint(-(2**63), 2**63 - 1, (batch_keys,), generator=g), step=0)

    def torch_dict() -> None:
        ids = torch.randint(-(2**63), 2**63 - 1, (batch_keys,), generator=g).tolist()
        new = [i for i in ids if i not in index]
        for i in new:
            index[i] = len(index)
        rows.append(torch.empty(len(new), D).uniform_(-0.05, 0.05))

    return compare(
        "insert-on-miss D=64",
        ("dict + torch init", torch_dict),
        [("recis insert", ours)],
        items=batch_keys,
        unit="keys",
        **run,
    )


def pooled_forward(run: dict) -> list:
    batch = zipf_batch()
    specs = {name: EmbeddingSpec(D, combiner="sum") for name in batch}
    engine = EmbeddingEngine(specs).eval()
    engine.train()
    engine(batch)  # inserts this batch's IDs; the timed forwards are all hits
    engine.clear_sparse_grads()
    engine.eval()
    bags = [torch.nn.EmbeddingBag(1_000_000, D, mode="sum") for _ in batch]
    inputs = [(r.values, r.offsets[:-1]) for r in batch.values()]
    lookups = sum(r.num_values for r in batch.values())

    def ours() -> None:
        with torch.no_grad():
            engine(batch)

    def baseline() -> None:
        with torch.no_grad():
            for bag, (v, o) in zip(bags, inputs, strict=True):
                bag(v, o)

    return compare(
        "pooled forward, Zipf 8x4096",
        ("nn.EmbeddingBag x8", baseline),
        [("recis engine", ours)],
        items=lookups,
        unit="lookups",
        **run,
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="rows in the hit-lookup table (default 10M)")
    p.add_argument("--batch-keys", type=int, default=65536, help="keys per lookup call (default 65536)")
    args = p.parse_args()
    run = {"warmup": args.warmup, "repeat": args.repeat}
    results = hit_lookup(args.rows, args.batch_keys, run)
    results += insert_on_miss(args.batch_keys, run)
    results += pooled_forward(run)
    print_table(results)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
