"""Peak memory of recis.io's ColumnReader on a dataset larger than 4 GB.

Generates Criteo-like Parquet (or ORC) files into build/bench-data/memory (once; about 4.3 GB for
the default 16M rows), then reads them all in a fresh process, with shuffling, and prints rows,
on-disk size, wall time and the reading process's peak RSS. Not part of CI: it needs minutes and disk.

    .venv/bin/python tools/bench/io_memory.py [--rows 16000000] [--files 8] [--format parquet]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def read(directory: str, batch_size: int, shuffle: bool) -> None:
    """Child process: read everything, print a JSON line with rows, seconds and peak RSS."""
    from recis.io import ColumnReader

    start = time.perf_counter()
    rows = 0
    for batch in ColumnReader(directory, batch_size=batch_size, shuffle=shuffle, num_threads=2, prefetch=4):
        rows += len(batch["label"])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start, "peak_rss_gib": peak_kb / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--format", choices=["parquet", "orc"], default="parquet")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--no-shuffle", action="store_true")
    parser.add_argument("--read", help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args()
    if args.read:
        read(args.read, args.batch_size, not args.no_shuffle)
        return
    sys.path.insert(0, str(ROOT / "tools" / "data"))
    from criteo_like import write

    directory = ROOT / "build" / "bench-data" / "memory" / f"{args.rows}-{args.files}-{args.format}"
    per_file = args.rows // args.files
    for k in range(args.files):
        path = directory / f"part-{k:04d}.{args.format}"
        if not path.exists():
            print(f"writing {path}", flush=True)
            write(path, per_file, args.format, seed=k)
    size = sum(p.stat().st_size for p in directory.iterdir()) / 2**30
    child = [sys.executable, __file__, "--read", str(directory), "--batch-size", str(args.batch_size)]
    out = subprocess.run(child + ["--no-shuffle"] * args.no_shuffle, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1]) | {"on_disk_gib": size, "format": args.format}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
