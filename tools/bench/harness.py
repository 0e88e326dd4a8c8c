"""Side-by-side benchmark harness: every case is timed against a baseline measured in the same run.

Each case runs `warmup` times untimed, then `repeat` times timed; we report the median, the
interquartile range and the ratio of the baseline's median to the case's (> 1 means faster than
the baseline). Results go to stdout as a table and, with `--json PATH`, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    group: str
    name: str
    baseline: bool
    items: int  # units of work per call (rows, lookups, ...)
    unit: str
    seconds: list[float] = field(repr=False)
    median_s: float = 0.0
    iqr_s: float = 0.0
    ratio: float = 1.0  # baseline median / this median

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s if self.median_s else float("inf")


def measure(fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
    """Wall-clock seconds of `repeat` calls of fn after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def compare(
    group: str,
    baseline: tuple[str, Callable[[], Any]],
    cases: list[tuple[str, Callable[[], Any]]],
    items: int,
    unit: str,
    warmup: int = 3,
    repeat: int = 15,
) -> list[Result]:
    """Times the baseline and each case (interleaved per round, so drift hits all alike)."""
    entries = [(baseline[0], baseline[1], True)] + [(n, f, False) for n, f in cases]
    times: dict[str, list[float]] = {n: [] for n, _, _ in entries}
    for _, f, _ in entries:
        measure(f, warmup, 0)
    for _ in range(repeat):
        for n, f, _ in entries:
            times[n] += measure(f, 0, 1)
    results = []
    for n, _, is_base in entries:
        t = times[n]
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        results.append(Result(group, n, is_base, items, unit, t, statistics.median(t), q[2] - q[0]))
    base = results[0].median_s
    for r in results:
        r.ratio = base / r.median_s if r.median_s else float("inf")
    return results


def print_table(results: list[Result]) -> None:
    w = max([22, *(len(r.name) for r in results)])
    print(f"{'group':<26} {'case':<{w}} {'median':>10} {'IQR':>9} {'throughput':>18} {'vs baseline':>12}")
    for r in results:
        tag = "(baseline)" if r.baseline else f"{r.ratio:.2f}x"
        rate = f"{r.items_per_s / 1e6:,.2f} M{r.unit}/s"
        print(f"{r.group:<26} {r.name:<{w}} {r.median_s * 1e3:>8.2f}ms {r.iqr_s * 1e3:>7.2f}ms {rate:>18} {tag:>12}")


def environment() -> dict[str, Any]:
    import torch

    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def worker_result(cmd: list[str], stdout: str, stderr: str = "", returncode: int | None = None) -> dict[str, Any]:
    """The JSON of the last `RESULT {...}` line a benchmark worker printed, or an error naming the
    command, its exit code and the tail of its output when it printed none."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(
            f"{' '.join(cmd)} printed no RESULT line (exit {returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


def run_worker(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs a benchmark worker to the end and returns its `RESULT` (see `worker_result`)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return worker_result(cmd, proc.stdout, proc.stderr, proc.returncode)


def write_json(path: str | Path, results: list[Result], extra: dict[str, Any] | None = None) -> None:
    """The results, the environment and `extra` (other figures, by name) as JSON at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) | {"items_per_s": r.items_per_s} for r in results]
    out = {"environment": environment(), "results": rows} | ({"extra": extra} if extra else {})
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


def parser(description: str) -> argparse.ArgumentParser:
    """The common command line of every benchmark script: --json, --warmup, --repeat."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per case (default 3)")
    p.add_argument("--repeat", type=int, default=15, help="timed calls per case (default 15)")
    return p
