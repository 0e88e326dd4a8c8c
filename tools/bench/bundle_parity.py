"""Serving bundles against the trainer: prediction parity and size per row dtype.

    python tools/bench/bundle_parity.py [--demo-rows 60000] [--movielens ../shared/data/ml-latest-small] [--dim D]

Trains the demo's DIN on `--demo-rows` synthetic rows and, when the MovieLens directory exists, DIN
on MovieLens (examples/movielens.toml, split by time); exports each as fp32, fp16, bf16 and int8
bundles and scores the eval set with `recis.serve.Predictor`. Prints, per workload and dtype: the
largest |bundle - trainer| prediction difference, test AUC and its change from fp32, and the
bundle's and its tables' bytes relative to fp32. `--dim` sets every embedding's dimension (default:
each config's own, 16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from recis.serve import Predictor
from recis.train import config as cfgmod
from recis.train import demo
from recis.train.cli import run_config
from recis.train.export import eval_predictions, export_bundle, load_trained
from recis.train.metrics import auc_score

ROOT = Path(__file__).resolve().parents[2]
DTYPES = ("fp32", "fp16", "bf16", "int8")


def train(config: dict, dim: int | None) -> Path:
    config["train"] |= {"progress": False, "checkpoint_every": 10**9}
    for spec in config["embeddings"].values():
        spec["dim"] = dim or spec["dim"]
    config["train"].pop("eval_every", None)
    run_config(config)
    return sorted((Path(config["output_dir"]) / "checkpoints").glob("step-*"))[-1]


def report(name: str, checkpoint: Path, root: Path) -> None:
    batches, want, labels = eval_predictions(load_trained(checkpoint))
    print(f"\n{name}: {len(labels)} eval rows, trainer AUC {auc_score(want, labels):.4f}")
    print("| dtype | max abs diff | AUC | AUC - fp32 | bundle bytes | x fp32 | table bytes | x fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for dtype in DTYPES:
        path = export_bundle(checkpoint, root / f"{name}-{dtype}", dtype).parent
        got = torch.cat([Predictor(path).predict(b)["label"] for b in batches])
        files = json.loads((path / "manifest.json").read_text())["files"]
        size = sum(f["bytes"] for f in files.values())
        tables = sum(f["bytes"] for n, f in files.items() if n.startswith("tables/"))
        auc = auc_score(got, labels)
        base = base or {"auc": auc, "size": size, "tables": tables}
        print(f"| {dtype} | {float((got - want).abs().max()):.1e} | {auc:.4f} | {auc - base['auc']:+.4f} | "
              f"{size:,} | {size / base['size']:.2f} | {tables:,} | {tables / base['tables']:.2f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-rows", type=int, default=60_000)
    p.add_argument("--movielens", default=str(ROOT.parent / "shared" / "data" / "ml-latest-small"))
    p.add_argument("--dim", type=int, help="every embedding's dimension (default: the configs' own)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo.generate(root / "demo-data", rows=args.demo_rows)
        report("demo", train(demo.config(str(root / "demo-data"), str(root / "demo-run")), args.dim), root)
        ml = Path(args.movielens)
        if not ml.is_dir():
            print(f"\nno MovieLens data at {ml}: skipped")
            return
        tools = ROOT / "tools" / "data"
        subprocess.run([sys.executable, tools / "convert.py", "movielens", ml, root / "ml.parquet"], check=True)
        subprocess.run([sys.executable, tools / "split_by_time.py", root / "ml.parquet", root], check=True)
        config = cfgmod.load(str(ROOT / "examples" / "movielens.toml"), [])
        config["data"] |= {"train": str(root / "train.parquet"), "eval": str(root / "test.parquet")}
        config["output_dir"] = str(root / "ml-run")
        config.pop("baseline", None)
        report("movielens", train(config, args.dim), root)


if __name__ == "__main__":
    main()
