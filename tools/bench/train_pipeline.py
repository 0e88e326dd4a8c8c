"""End-to-end training throughput of the demo DIN with and without input-pipeline overlap, and the step's time split.

    .venv/bin/python tools/bench/train_pipeline.py --rows 60000 --json build/bench/train_pipeline.json

Both runs train the same model on the same synthetic data (`recis.train.demo`) for one epoch;
"overlap" reads and transforms batches in a background thread (prefetch 4), "inline" does it in the
training thread (prefetch 0; the reader's own decode thread still runs). The ratio is measured in
the same process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from recis.train import Trainer
from recis.train.config import build
from recis.train.demo import config, generate


def run(data: Path, prefetch: int, batch_size: int) -> dict:
    cfg = config(str(data), "", batch_size=batch_size)
    cfg.pop("output_dir")
    cfg["train"] = {"epochs": 1, "progress": False, "log_every": 10**9}
    r = build(cfg)
    r.trainer = replace(r.trainer, prefetch=prefetch)
    trainer = Trainer(r.model, r.train_data, None, r.sparse_optimizer, r.dense_optimizer, r.trainer)
    t = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t
    return {"prefetch": prefetch, "samples_per_s": summary["samples"] / seconds,
            "data_wait": summary["data_wait_fraction"], "split": summary["time_split"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = Path("build/bench/train_data")
    shutil.rmtree(data, ignore_errors=True)
    generate(data, rows=args.rows, test_rows=1000)
    results = [run(data, p, args.batch_size) for p in (4, 0)]
    overlap, inline = results
    print(f"torch threads {torch.get_num_threads()}, {args.rows} rows, batch {args.batch_size}")
    for r in results:
        split = ", ".join(f"{k} {v:.1%}" for k, v in r["split"].items())
        rate, wait = r["samples_per_s"], r["data_wait"]
        print(f"prefetch={r['prefetch']}: {rate:.0f} samples/s, waiting on data {wait:.1%}; {split}")
    print(f"overlap / inline: {overlap['samples_per_s'] / inline['samples_per_s']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
