"""The demo's training with and without `train.keep_freed_memory`, in fresh processes, alternating.

    python tools/bench/freed_memory.py [--rows 100000] [--pairs 5] [--ragged] [--json PATH]

Generates the demo's data once, then trains one epoch per run (python -m recis.train.demo's
config, batch 512), `keep_freed_memory = false` then `true`, `--pairs` times. Prints each run's
samples/s (the Trainer's), the child's system CPU seconds and minor page faults (getrusage), and
the median of the paired samples/s ratios (kept over not kept).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment

CHILD = """
import json, sys
from recis.train import demo
from recis.train.cli import run_config
data, run, keep, ragged = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
cfg = demo.config(data, run, batch_size=512)
cfg["train"] |= {"progress": False, "keep_freed_memory": keep}
cfg["train"].pop("eval_every")
for history in ("hist_item_ids", "hist_category_ids"):
    cfg["embeddings"][history]["ragged"] = ragged
print(json.dumps(run_config(cfg)["model"]["samples_per_s"]))
"""


def train(data: Path, run: Path, keep: bool, ragged: bool) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    args = [sys.executable, "-c", CHILD, str(data), str(run), str(int(keep)), str(int(ragged))]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "samples_per_s": float(out.stdout.strip().splitlines()[-1]),
        "sys_s": after.ru_stime - before.ru_stime,
        "page_faults": float(after.ru_minflt - before.ru_minflt),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="training rows of the demo data")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--ragged", action="store_true", help="histories as ragged sequences (the demo pads them)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args()
    from recis.train import demo

    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo.generate(root / "data", rows=args.rows, test_rows=2000, files=1)
        for pair in range(args.pairs):
            for keep in (False, True):
                r = train(root / "data", root / f"run{pair}{keep}", keep, args.ragged)
                runs[keep].append(r)
                print(f"pair {pair + 1}  keep_freed_memory={str(keep).lower():<5}  {r['samples_per_s']:8.0f} samples/s"
                      f"  sys {r['sys_s']:5.2f} s  {r['page_faults']:9.0f} page faults", flush=True)  # fmt: skip
    ratios = [k["samples_per_s"] / o["samples_per_s"] for o, k in zip(runs[False], runs[True], strict=True)]
    med = {keep: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for keep, rs in runs.items()}
    print(f"page faults {med[False]['page_faults']:.0f} -> {med[True]['page_faults']:.0f}, "
          f"sys {med[False]['sys_s']:.2f} -> {med[True]['sys_s']:.2f} s (medians)")  # fmt: skip
    print(f"keep_freed_memory: {statistics.median(ratios):.2f}x samples/s (median of {len(ratios)} pairs)")
    if args.json:
        result = {"environment": environment(), "runs": {str(k).lower(): v for k, v in runs.items()}, "ratios": ratios}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
