"""Serving latency: `recis.serve.Predictor` against the eager training model, in the same run.

    python tools/bench/serving.py [--rows 60000] [--calls 300] [--rounds 5] [--json PATH]

Trains the demo's DIN on `--rows` synthetic rows (python -m recis.train.demo's data and config),
exports it twice (fp32 with an AOTInductor build of the dense part, and int8 without), and times,
at batch 1, 64 and 512 (rows of the demo's test set): the eager model in eval mode
(`model(model.transform(batch))` + sigmoid, under no_grad) and each bundle's `Predictor.predict`
on the same raw batch. Each round times `--calls` calls of every case back to back, cases
interleaved round by round; p50 and p99 are over all timed calls, the ratio is the eager p50 over
the case's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment

from recis.serve import Predictor
from recis.train import demo
from recis.train.cli import run_config
from recis.train.export import export_bundle, load_trained


def rows_of(batch: dict[str, Any], n: int) -> dict[str, Any]:
    keep = torch.arange(n)
    return {k: v[keep] if isinstance(v, torch.Tensor) else v.select(keep) for k, v in batch.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=60_000, help="training rows of the demo data")
    p.add_argument("--calls", type=int, default=300, help="timed calls per case per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo.generate(root / "data", rows=args.rows, test_rows=5000, files=1)
        config = demo.config(str(root / "data"), str(root / "run"), batch_size=512)
        config["train"] |= {"progress": False}
        config["train"].pop("eval_every")
        run_config(config)
        checkpoint = sorted((root / "run" / "checkpoints").glob("step-*"))[-1]
        start = time.perf_counter()
        export_bundle(checkpoint, root / "fp32", "fp32", aot=True)
        print(f"exported with AOTInductor in {time.perf_counter() - start:.1f} s", flush=True)
        export_bundle(checkpoint, root / "int8", "int8")
        run = load_trained(checkpoint)
        model = run.model
        batch512 = next(iter(run.eval_data))
        predictors = {
            "Predictor fp32, AOTInductor": Predictor(root / "fp32"),
            "Predictor fp32, portable program": Predictor(root / "fp32", compiled=False),
            "Predictor int8, portable program": Predictor(root / "int8"),
        }
        results = []
        for size in (1, 64, 512):
            batch = rows_of(batch512, size)

            @torch.no_grad()
            def eager(b: dict[str, Any] = batch) -> torch.Tensor:
                return torch.sigmoid(model(model.transform(b))["label"])

            cases: dict[str, Callable[[], Any]] = {"eager model (baseline)": eager}
            cases |= {name: (lambda p=pr, b=batch: p.predict(b)) for name, pr in predictors.items()}
            want = eager()
            for name, pr in predictors.items():
                diff = float((pr.predict(batch)["label"] - want).abs().max())
                print(f"batch {size}: {name}: max |prediction - eager| = {diff:.1e}", flush=True)
            times: dict[str, list[float]] = {name: [] for name in cases}
            for fn in cases.values():
                for _ in range(20):
                    fn()
            for _ in range(args.rounds):
                for name, fn in cases.items():
                    for _ in range(args.calls):
                        t = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - t)
            base = statistics.median(times["eager model (baseline)"])
            for name, t in times.items():
                q = statistics.quantiles(t, n=100)
                row = {"batch": size, "case": name, "p50_ms": statistics.median(t) * 1e3, "p99_ms": q[98] * 1e3}
                row["speedup_p50"] = base / statistics.median(t)
                results.append(row)
                print(f"batch {size:>3}  {name:<34} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  "
                      f"{row['speedup_p50']:5.2f}x", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"environment": environment(), "results": results}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
