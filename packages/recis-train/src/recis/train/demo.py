"""`python -m recis.train.demo`: writes a synthetic click log as Parquet, then trains DIN on it end to end.

The data is realistic where it matters for the system (power-law item and user IDs, variable
length histories, categories) and has a planted signal: the click probability depends on how much
of the user's history shares the candidate's category, plus hidden item and user biases. The AUC of
the true probabilities (`oracle_auc` in meta.json) is the ceiling a model can reach.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from recis.core import version_line

from .metrics import auc_score


def _power_law(rng: np.random.Generator, n: int, size: int, skew: float) -> np.ndarray:
    """Ranks in [0, n) with P(rank) falling as a power law (rank 0 the most popular)."""
    return np.minimum((n * rng.random(size) ** skew).astype(np.int64), n - 1)


def generate(
    out: str | Path,
    rows: int = 300_000,
    test_rows: int = 50_000,
    users: int = 20_000,
    items: int = 20_000,
    categories: int = 100,
    max_history: int = 30,
    files: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes `out/train/part-*.parquet` and `out/test/part-0.parquet` and `out/meta.json`; returns the meta.

    Columns: user_id, item_id, category_id (int64), hist_item_ids, hist_category_ids (list<int64>,
    oldest first, 0 to `max_history` events), label (int32), click_prob (float32, the truth).

    Examples:
        >>> import tempfile
        >>> meta = generate(tempfile.mkdtemp(), rows=2000, test_rows=1000, users=100, items=300, files=1)
        >>> 0.7 < meta["oracle_auc"] < 1.0, meta["columns"][:3]
        (True, ['user_id', 'item_id', 'category_id'])
    """
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed)
    out = Path(out)
    item_category = _power_law(rng, categories, items, 2.0)  # popular categories hold more items
    by_category = [np.flatnonzero(item_category == c) for c in range(categories)]
    by_category = [c if len(c) else np.array([0]) for c in by_category]
    user_interests = rng.integers(0, categories, (users, 3))  # each user's three favourite categories
    item_bias = rng.normal(0.0, 0.6, items)
    user_bias = rng.normal(0.0, 0.4, users)
    item_ids = rng.permutation(items).astype(np.int64) * 7919 + 100_003  # sparse, non-contiguous IDs
    user_ids = rng.permutation(users).astype(np.int64) * 104_729 + 17

    def draw_items(user: np.ndarray, interested: np.ndarray) -> np.ndarray:
        cats = user_interests[user, rng.integers(0, 3, len(user))]
        sizes = np.array([len(by_category[c]) for c in range(categories)])
        within = _power_law(rng, 1 << 30, len(user), 2.5) % sizes[cats]
        from_interest = np.array([by_category[c][i] for c, i in zip(cats, within, strict=True)], dtype=np.int64)
        popular = _power_law(rng, items, len(user), 3.0)
        return np.where(interested, from_interest, popular)

    total = rows + test_rows
    user = _power_law(rng, users, total, 2.0)  # heavy users appear far more often
    lengths = np.minimum(rng.geometric(1 / 12, total) - 1, max_history)
    offsets = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    hist_user = np.repeat(user, lengths)
    hist = draw_items(hist_user, rng.random(len(hist_user)) < 0.8)
    cand = draw_items(user, rng.random(total) < 0.5)
    cand_cat = item_category[cand]
    same = (item_category[hist] == np.repeat(cand_cat, lengths)).astype(np.float64)
    same_count = np.bincount(np.repeat(np.arange(total), lengths), weights=same, minlength=total)
    share = same_count / np.maximum(lengths, 1)  # 0 for an empty history
    logit = -1.5 + 4.0 * share + item_bias[cand] + user_bias[user]
    prob = 1 / (1 + np.exp(-logit))
    label = (rng.random(total) < prob).astype(np.int32)

    def table(lo: int, hi: int) -> pa.Table:
        a, b = offsets[lo], offsets[hi]
        offs = pa.array((offsets[lo : hi + 1] - a).astype(np.int32))
        return pa.table(
            {
                "user_id": user_ids[user[lo:hi]],
                "item_id": item_ids[cand[lo:hi]],
                "category_id": cand_cat[lo:hi].astype(np.int64),
                "hist_item_ids": pa.ListArray.from_arrays(offs, pa.array(item_ids[hist[a:b]])),
                "hist_category_ids": pa.ListArray.from_arrays(
                    offs, pa.array(item_category[hist[a:b]].astype(np.int64))
                ),
                "label": label[lo:hi],
                "click_prob": prob[lo:hi].astype(np.float32),
            }
        )

    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    options = {"row_group_size": 16384, "write_page_checksum": True}
    for i in range(files):
        pq.write_table(table(bounds[i], bounds[i + 1]), out / "train" / f"part-{i}.parquet", **options)
    pq.write_table(table(rows, total), out / "test" / "part-0.parquet", **options)
    import torch

    oracle = auc_score(torch.from_numpy(prob[rows:]), torch.from_numpy(label[rows:]))
    meta = {
        "rows": rows, "test_rows": test_rows, "users": users, "items": items, "categories": categories,
        "ctr": float(label.mean()), "mean_history": float(lengths.mean()), "oracle_auc": oracle,
        "columns": table(0, 1).column_names, "seed": seed,
    }  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def config(
    data_dir: str,
    run_dir: str,
    epochs: int = 1,
    batch_size: int = 512,
    device: str = "cpu",
    compile: bool = False,
    row_dtype: str = "float32",
    seed: int = 0,
) -> dict[str, Any]:
    """The demo's run config (what an equivalent TOML file would hold); `device` holds the model
    and, off the CPU, the embedding tables too (`train.device`); `compile`: `train.compile`;
    `row_dtype`: how the tables store rows (`embeddings.<f>.dtype`); `seed`: the run's
    randomness (`train.seed`, `data.seed` and each table's `seed`: initial weights and rows, the
    shuffle); the data stays the same."""
    seq: dict[str, Any] = {"combiner": "none", "max_len": 30}
    tables: dict[str, dict[str, Any]] = {
        "user_id": {},
        "item_id": {"table": "item"},
        "category_id": {"table": "category"},
        "hist_item_ids": {"table": "item", **seq},
        "hist_category_ids": {"table": "category", **seq},
    }
    rows = ({"dtype": row_dtype} if row_dtype != "float32" else {}) | ({"seed": seed} if seed else {})
    return {
        "output_dir": run_dir,
        "data": {
            "train": f"{data_dir}/train", "eval": f"{data_dir}/test", "batch_size": batch_size,
            "shuffle": True, "seed": seed,
            "columns": ["user_id", "item_id", "category_id", "hist_item_ids", "hist_category_ids", "label"],
        },
        "embeddings": {name: {"dim": 16, **extra, **rows} for name, extra in tables.items()},
        "model": {"type": "din", "sequences": {"hist_item_ids": "item_id", "hist_category_ids": "category_id"},
                  "hidden": [128, 64], "attention_hidden": [32]},
        "objectives": [{"label": "label"}],
        "optim": {"sparse": {"type": "adam", "lr": 0.005}, "dense": {"type": "adam", "lr": 0.002}},
        "train": {"epochs": epochs, "device": device, "group_column": "user_id", "checkpoint_every": 500,
                  "log_every": 20, "eval_every": 200, "compile": compile, "seed": seed},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate synthetic click data and train DIN on it.")
    parser.add_argument("--version", action="version", version="%(prog)s: " + version_line("recis-train"))
    parser.add_argument("--out", default="build/demo", help="data in OUT/data, the run in OUT/run")
    parser.add_argument("--rows", type=int, default=300_000, help="training rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="regenerate the data and start the run over")
    parser.add_argument("--device", default="cpu", help="where the model and its tables train, e.g. cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the dense part (train.compile)")
    parser.add_argument("--row-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="how the embedding tables store rows")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (weights, rows, shuffle); same data")
    args = parser.parse_args(argv)
    from .cli import run_config

    out = Path(args.out)
    data, run = out / "data", out / "run"
    meta_path = data / "meta.json"
    if args.fresh or not meta_path.is_file() or json.loads(meta_path.read_text())["rows"] != args.rows:
        t = time.perf_counter()
        meta = generate(data, rows=args.rows)
        took = time.perf_counter() - t
        print(f"wrote {args.rows} + {meta['test_rows']} rows to {data} in {took:.1f}s (CTR {meta['ctr']:.3f}, "
              f"mean history {meta['mean_history']:.1f}, oracle AUC {meta['oracle_auc']:.4f})")  # fmt: skip
    meta = json.loads(meta_path.read_text())
    import shutil

    shutil.rmtree(run, ignore_errors=True)  # the demo always trains from scratch
    settings = {"device": args.device, "compile": args.compile, "row_dtype": args.row_dtype, "seed": args.seed}
    result = run_config(config(str(data), str(run), args.epochs, **settings))["model"]
    auc = result["eval"].get("label.auc", math.nan)
    gauc, oracle = result["eval"].get("label.gauc", math.nan), meta["oracle_auc"]
    print(f"\ntest AUC {auc:.4f} (GAUC {gauc:.4f}); the true click probabilities reach {oracle:.4f} "
          f"(AUC - 0.5 at {(auc - 0.5) / (oracle - 0.5):.0%} of the ceiling's)")  # fmt: skip
    print(
        f"{result['samples_per_s']:.0f} samples/s; outputs in {run}: metrics.jsonl, loss.png, eval.png, "
        "summary.txt, checkpoints/"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
