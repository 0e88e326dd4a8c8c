"""GPU benchmark: device-resident hash tables against torch's dense baselines, on one GPU.

    python tools/bench/gpu.py [--json PATH] [--dims 64 128] [--small] [--device cuda]

The workload of tools/bench/workloads.py scaled up and drawn on the device: 8 tables, IDs Zipf(1.05)
over 10M per table, batch 65,536, bags of 4-12 IDs, 4 batches cycled (rows created on first sight,
during warm-up). Groups, each with its baseline first; every case is built, warmed up, timed
(`--repeat` calls, each ending in a device synchronization; the median is reported) and freed in
turn, so a case's peak device memory (`peak_gb`: the most allocated during its warm-up and calls,
its own state included) is its own:

- `lookup D=..`: gathering one row per key. Baseline `index_select` of random rows of a dense
  (rows, D) tensor; ours `DeviceTable.pool_keys` with one key per bag (ID map probe + row read, all
  hits), `DeviceTable.lookup` (de-duplication, probe, metadata, gather of the unique rows) and
  insert-on-miss (`lookup` of keys never seen, into a table with room reserved).
- `sparse step D=..`: pooled forward, backward of sum(pooled * w) and Adam. Baseline
  `nn.EmbeddingBag(sparse=True)` (10M dense rows per table) + `torch.optim.SparseAdam`; ours an
  `EmbeddingEngine` of device tables with fused `SparseAdam`, and the same engine with host tables
  (the core's C++ `HashTable`) feeding a model on the GPU.
- `DIN end to end`: `python -m recis.train.demo` on `--demo-rows` rows, tables and model on the GPU
  against all of it on the CPU (samples/s over the run, the trainer's own figure).

`--small` shrinks everything (100k IDs, batch 2048) to dry-run the script on a CPU (`--device cpu`).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Result, parser, print_table, write_json

from recis.core import Ragged
from recis.embedding import DeviceTable, EmbeddingEngine, EmbeddingSpec, Initializer, concat
from recis.optim import SparseAdam

INIT = Initializer.uniform(-0.01, 0.01)


def draw(n: int, tables: int, rows: int, batch: int, ids: int, device: torch.device, seed: int = 1234) -> list[Any]:
    """`n` batches of (lengths (tables, batch), a 1-D int64 ID tensor per table), drawn on `device`
    as tools/bench/workloads.py draws them (Zipf(1.05) ranks scattered by a random permutation)."""
    g = torch.Generator(device=device).manual_seed(seed)
    cdf = torch.arange(1, rows + 1, dtype=torch.float64, device=device).pow_(-1.05).cumsum_(0)
    cdf /= cdf[-1].clone()
    perms = [torch.randperm(rows, generator=g, device=device) for _ in range(tables)]
    out = []
    for _ in range(n):
        lengths = torch.randint(ids // 2, ids + ids // 2 + 1, (tables, batch), generator=g, device=device)
        values = []
        for t in range(tables):
            u = torch.rand(int(lengths[t].sum()), generator=g, dtype=torch.float64, device=device)
            values.append(perms[t][torch.searchsorted(cdf, u).clamp_(max=rows - 1)])
        out.append((lengths, values))
    del cdf, perms
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(device: torch.device, reset: bool = False) -> float:
    """The most device memory allocated since the last reset, in GB (0 off CUDA)."""
    if device.type != "cuda":
        return 0.0
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.max_memory_allocated(device) / 1e9


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Bench:
    def __init__(self, args: Any, device: torch.device):
        self.args, self.device, self.results = args, device, []
        self.extra: dict[str, dict[str, Any]] = {}

    def case(self, group: str, name: str, build: Callable[[], Callable[[], Any]], items: int, unit: str) -> None:
        """Builds the case (its state), warms it up, times it, records it, frees it. The first case
        of a group is its baseline; an out-of-memory case is reported and skipped."""
        baseline = not any(r.group == group for r in self.results)
        free(self.device)
        memory(self.device, reset=True)
        try:
            fn = build()
            for _ in range(self.args.warmup):
                fn()
            synchronize(self.device)
            times = []
            for _ in range(self.args.repeat):
                start = time.perf_counter()
                fn()
                synchronize(self.device)
                times.append(time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError as e:
            print(f"{group} / {name}: out of device memory ({str(e).splitlines()[0]})", flush=True)
            self.extra[f"{group} / {name}"] = {"error": "out of device memory"}
            return
        peak = memory(self.device)
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        r = Result(group, name, baseline, items, unit, times, statistics.median(times), q[2] - q[0])
        base = next((b for b in self.results if b.group == group and b.baseline), r)
        r.ratio = r.items_per_s / base.items_per_s  # throughputs: cases may differ in work per call
        self.results.append(r)
        self.extra[f"{group} / {name}"] = {"peak_gb": round(peak, 3)}
        print(f"{group:<22} {name:<34} {r.median_s * 1e3:9.2f} ms  {r.ratio:6.2f}x  peak {peak:6.2f} GB", flush=True)
        del fn
        free(self.device)


def lookup_group(b: Bench, dim: int) -> None:
    a, dev = b.args, b.device
    (_, values), *_ = draw(1, a.tables, a.rows, a.batch, a.ids, dev)
    keys = sum(len(v) for v in values)
    group = f"lookup D={dim}"

    def index_select() -> Callable[[], Any]:
        dense = torch.rand(a.rows, dim, device=dev)
        idx = [torch.randint(0, a.rows, (len(v),), device=dev) for v in values]
        return lambda: [dense.index_select(0, i) for i in idx]

    def filled() -> list[DeviceTable]:
        tables = [DeviceTable(dim, INIT, device=dev) for _ in values]
        for t, v in zip(tables, values, strict=True):
            t.lookup(v, step=0)
        return tables

    def probe_and_read() -> Callable[[], Any]:
        tables = filled()
        bags = [torch.arange(len(v) + 1, device=dev) for v in values]
        return lambda: [t.pool_keys([v], [0], o, None, "sum") for t, v, o in zip(tables, values, bags, strict=True)]

    def lookup() -> Callable[[], Any]:
        tables = filled()
        return lambda: [t.lookup(v, step=1) for t, v in zip(tables, values, strict=True)]

    def insert() -> Callable[[], Any]:
        v = values[0]
        t = DeviceTable(dim, INIT, device=dev)
        t.reserve(len(v) * (a.warmup + a.repeat))
        fresh = iter(range(1, 1 << 20))
        return lambda: t.lookup(v + next(fresh) * (1 << 40), step=0)

    b.case(group, "index_select (dense rows)", index_select, keys, "keys")
    b.case(group, "probe + read (pool_keys)", probe_and_read, keys, "keys")
    b.case(group, "lookup (dedup + probe + gather)", lookup, keys, "keys")
    b.case(group, "insert on miss (1 table)", insert, len(values[0]), "keys")


def step_group(b: Bench, dim: int) -> None:
    a, dev = b.args, b.device
    raw = draw(4, a.tables, a.rows, a.batch, a.ids, dev)
    names = [f"f{t}" for t in range(a.tables)]
    ragged = [
        {f: Ragged.from_lengths(v, lengths[t]) for t, (f, v) in enumerate(zip(names, values, strict=True))}
        for lengths, values in raw
    ]
    w = torch.randn(a.batch, dim * a.tables, device=dev)
    group, count = f"sparse step D={dim}", iter(range(1 << 30))

    def embedding_bag() -> Callable[[], Any]:
        bags = nn.ModuleList(nn.EmbeddingBag(a.rows, dim, mode="sum", sparse=True) for _ in names).to(dev)
        for bag in bags:
            nn.init.uniform_(bag.weight, -0.01, 0.01)
        opt = torch.optim.SparseAdam(bags.parameters(), lr=0.01)
        flat = [[(v, torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), lengths[t].cumsum(0)[:-1]]))
                 for t, v in enumerate(values)] for lengths, values in raw]  # fmt: skip

        def step() -> None:
            batch = flat[next(count) % len(flat)]
            pooled = torch.cat([bag(v, o) for bag, (v, o) in zip(bags, batch, strict=True)], 1)
            (pooled * w).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def engine_step(where: torch.device | None) -> Callable[[], Callable[[], Any]]:
        def build() -> Callable[[], Any]:
            engine = EmbeddingEngine({f: EmbeddingSpec(dim, initializer=INIT, device=where) for f in names})
            opt = SparseAdam(engine, lr=0.01, fused=True)
            batches = ragged if where is not None else [{f: r.to("cpu") for f, r in x.items()} for x in ragged]

            def step() -> None:
                out = engine(batches[next(count) % len(batches)])
                pooled = concat([out[f] for f in names]).to(dev)
                (pooled * w).sum().backward()
                opt.step()

            return step

        return build

    samples = a.batch
    b.case(group, "nn.EmbeddingBag + SparseAdam", embedding_bag, samples, "samples")
    b.case(group, "recis device tables, SparseAdam", engine_step(dev), samples, "samples")
    b.case(group, "recis host tables -> model on GPU", engine_step(None), samples, "samples")


def din_group(b: Bench) -> None:
    from recis.train import demo
    from recis.train.cli import run_config

    a, dev = b.args, b.device
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        demo.generate(data, rows=a.demo_rows, test_rows=2000, files=2)
        rates = {}
        for where in ("cpu", str(dev)):
            free(dev)
            memory(dev, reset=True)
            config = demo.config(str(data), f"{tmp}/run-{where}", device=where)
            for key in ("eval_every", "checkpoint_every"):  # training alone
                del config["train"][key]
            start = time.perf_counter()
            result = run_config(config)["model"]
            took = time.perf_counter() - start
            rates[where] = result["samples_per_s"]
            peak = memory(dev)
            b.extra[f"DIN end to end / {where}"] = {"samples_per_s": round(rates[where]), "seconds": round(took, 1)}
            b.extra[f"DIN end to end / {where}"]["peak_gb"] = round(peak, 3)
            print(f"DIN end to end on {where}: {rates[where]:,.0f} samples/s, {took:.1f} s, peak {peak:.2f} GB")
        b.extra["DIN end to end / ratio"] = {"device_over_cpu": round(rates[str(dev)] / rates["cpu"], 2)}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.set_defaults(warmup=4, repeat=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--rows", type=int, default=10_000_000, help="IDs per table (and dense baseline rows)")
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--ids", type=int, default=8, help="mean bag length (bags of ids/2 to 3*ids/2)")
    p.add_argument("--demo-rows", type=int, default=100_000)
    p.add_argument("--only", nargs="*", choices=["lookup", "step", "din"], help="groups to run (default: all)")
    p.add_argument("--small", action="store_true", help="a CPU-sized dry run of every case")
    args = p.parse_args()
    if args.small:
        args.rows, args.batch, args.demo_rows, args.warmup, args.repeat = 100_000, 2048, 5000, 2, 3
    device = torch.device(args.device)
    if device.type == "cuda":
        from recis.core import kernels

        if not torch.cuda.is_available() or kernels.gpu is None:
            raise SystemExit("gpu.py: needs a CUDA device and recis-core built with CUDA (docs/gpu.md)")
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    b = Bench(args, device)
    groups = args.only or ["lookup", "step", "din"]
    for dim in args.dims:
        if "lookup" in groups:
            lookup_group(b, dim)
        if "step" in groups:
            step_group(b, dim)
    if "din" in groups:
        din_group(b)
    print()
    print_table(b.results)
    for name, info in b.extra.items():
        print(f"{name}: {info}")
    if args.json:
        write_json(args.json, b.results, b.extra)


if __name__ == "__main__":
    main()
