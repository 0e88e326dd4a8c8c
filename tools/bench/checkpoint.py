"""Checkpoint save/load of a D=64 table with Adam slots vs torch.save/torch.load, with peak extra RSS.

    python tools/bench/checkpoint.py --rows 8000000 --dir /tmp/ckpt-bench [--json out.json]

Each case runs in its own process (a full-size torch.save baseline holds the table twice), and a
thread samples RSS every 2 ms; "extra" is the peak minus RSS before (a save) or after (a load, so
it is not charged for the rows it leaves in the table). Loads read files the save just wrote (page cache warm
for both). The delta case saves in full, touches 1% of rows as a training step would, and times
the delta save against that full save.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from recis.embedding import HashTable, Initializer
from recis.optim import Saver, SparseAdam

D = 64
ROW_BYTES = 8 + 4 + 8 + 8 + 4 * 3 * D  # ids, tags, steps, freqs, embedding, adam.m, adam.v
CASES = ["save_torch", "save_ours", "save_ours_fsync", "load_torch", "load_ours", "load_ours_no_verify", "delta"]


def adam_table(rows: int) -> tuple[HashTable, SparseAdam]:
    """A table of `rows` random 64-bit IDs with random embeddings and Adam slots (deterministic)."""
    table = HashTable(D, Initializer.uniform(-0.05, 0.05))
    opt = SparseAdam(table)
    g = torch.Generator().manual_seed(0)
    for begin in range(0, rows, 1 << 20):
        n = min(1 << 20, rows - begin)
        table.load_state_dict(
            {
                "ids": torch.randint(-(2**63), 2**63 - 1, (n,), generator=g),
                "tags": torch.zeros(n, dtype=torch.int32),
                "steps": torch.zeros(n, dtype=torch.int64),
                "freqs": torch.ones(n, dtype=torch.int64),
                "embeddings": torch.rand(n, D, generator=g),
                "slot.adam.m": torch.rand(n, D, generator=g),
                "slot.adam.v": torch.rand(n, D, generator=g),
            }
        )
    return table, opt


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def timed(fn: Any, load: bool = False) -> tuple[float, int]:
    """(seconds, peak extra RSS bytes) of one call; a load is not charged for the rows it leaves in the table."""
    before, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return seconds, max(0, max(peak[0], _rss()) - max(before, _rss() if load else 0))


def run_case(case: str, rows: int, root: Path) -> dict[str, Any]:
    if case.startswith("load"):
        table, opt = adam_table(0)
        if case == "load_torch":
            s, extra = timed(lambda: table.load_state_dict(torch.load(root / "t.pt", weights_only=True)), load=True)
        else:
            saver = Saver(root / "ours", tables={"t": table}, optimizers=[opt])
            s, extra = timed(lambda: saver.load(verify=case == "load_ours"), load=True)
        assert len(table) == rows
        return {"seconds": s, "extra_rss": extra}
    table, opt = adam_table(rows)
    if case == "save_torch":
        s, extra = timed(lambda: torch.save(table.state_dict(), root / "t.pt"))
        return {"seconds": s, "extra_rss": extra}
    saver = Saver(root / "ours", tables={"t": table}, optimizers=[opt], keep=1, fsync=case == "save_ours_fsync")
    if case != "delta":
        s, extra = timed(lambda: saver.save(1))
        return {"seconds": s, "extra_rss": extra}
    full, _ = timed(lambda: saver.save(2))
    ids = table.ids()
    table.lookup(ids[torch.randperm(len(ids))[: len(ids) // 100]], step=3)
    s, extra = timed(lambda: saver.save(3, delta=True))
    return {"seconds": s, "extra_rss": extra, "full_seconds": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("build/bench/checkpoint"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.rows, args.dir)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    size = args.rows * ROW_BYTES
    results = {}
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--rows", str(args.rows), "--dir", str(args.dir)]
        results[case] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        r = results[case]
        print(
            f"{case:20s} {r['seconds']:7.2f} s  {size / r['seconds'] / 1e9:6.2f} GB/s  "
            f"peak extra RSS {r['extra_rss'] / 1e9:5.2f} GB ({100 * r['extra_rss'] / size:4.1f}% of the table)"
        )
    for ours, base in (
        ("save_ours", "save_torch"),
        ("save_ours_fsync", "save_torch"),
        ("load_ours", "load_torch"),
        ("load_ours_no_verify", "load_torch"),
    ):
        print(f"{ours} is {results[base]['seconds'] / results[ours]['seconds']:.2f}x {base}")
    d = results["delta"]
    print(f"delta save (1% of rows touched): {100 * d['seconds'] / d['full_seconds']:.1f}% of a full save's time")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": args.rows, "table_bytes": size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
