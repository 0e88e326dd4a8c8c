"""End to end: the demo's DIN trained for one epoch by the recis Trainer, by the same model on TorchRec
and on plain PyTorch, each in its own process, interleaved over rounds.

    .venv/bin/python tools/bench/train_e2e.py [--rows 300000] [--rounds 3] [--json build/bench/train_e2e.json]

The data is the demo generator's (`recis.train.demo.generate`: power-law users and items, histories
of 0-30 events, a planted signal), written once under build/bench/e2e_data. The three sides train
the same network (DIN: user, item and category embeddings of dim 16, target attention over the item
and category histories, MLP 128-64, one logit) with the same batch size, the same sparse optimizer
(row-wise Adagrad) and the same dense one (Adam):

- `recis`: the demo's config through `recis.train.build` and `Trainer.fit` (the recis reader,
  dynamic hash tables, its own prefetching thread).
- `torchrec`: `EmbeddingBagCollection` (users) and `EmbeddingCollection` (items and categories,
  each table shared by the candidate and its history) under `DistributedModelParallel` (one
  process, gloo; the dense part left unwrapped, as one process needs no DDP), RowWiseAdagrad fused
  into backward, `KeyedJaggedTensor` batches from a `DataLoader` (one worker process) that reads
  the Parquet files with pyarrow. Static tables of `--hash-rows` rows take `id % hash_rows`, as
  usual with TorchRec.
- `torch`: `nn.EmbeddingBag`/`nn.Embedding(sparse=True)` with `torch.optim.Adagrad` (torch has no
  row-wise Adagrad), histories padded to 30, the same `DataLoader`.

Each side reports samples/s from the first batch read to the last step, its peak memory (PSS of the
process and its children, sampled every 50 ms from outside) and the test AUC after the epoch. The
last line is the median over rounds of recis samples/s / TorchRec samples/s, each ratio taken
within one round. Without TorchRec in this interpreter the TorchRec side is skipped with a note
(an error when `--modes` names it); the JSON (`--json`) holds every round and the environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from harness import environment, worker_result

from recis.train.demo import config as demo_config

# The network's sizes, from the demo's config (what the recis side trains), so the sides cannot drift.
_DEMO = demo_config("", "")
DIM, MAX_LEN = _DEMO["embeddings"]["hist_item_ids"]["dim"], _DEMO["embeddings"]["hist_item_ids"]["max_len"]
HIDDEN, ATTENTION = tuple(_DEMO["model"]["hidden"]), tuple(_DEMO["model"]["attention_hidden"])
MODES = ("recis", "torchrec", "torch")


# ----------------------------------------------------------------------------- the baselines' side


class DenseDIN(torch.nn.Module):
    """The dense part of the demo's DIN (the layers `recis.train.models.DIN` builds for its config)."""

    def __init__(self) -> None:
        from recis.train.models.base import MLP
        from recis.train.models.din import TargetAttention

        super().__init__()
        self.attention = torch.nn.ModuleList([TargetAttention(DIM, ATTENTION) for _ in range(2)])
        self.top = MLP(5 * DIM, HIDDEN, last_activation=True)
        self.head = torch.nn.Linear(HIDDEN[-1], 1)

    def forward(self, pooled: list[torch.Tensor], queries: list[torch.Tensor], histories: list[torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """pooled: (B, D) user, item, category; histories: (B, L, D) items, categories; mask (B, L)."""
        parts = [*pooled] + [att(q, h, mask) for att, q, h in zip(self.attention, queries, histories, strict=True)]
        return self.head(self.top(torch.cat(parts, 1))).squeeze(-1)


class ParquetBatches(torch.utils.data.IterableDataset):
    """Batches of `batch_size` rows from Parquet files read with pyarrow: row groups in a random order,
    rows shuffled within each; `form` "kjt" (TorchRec) or "padded" (plain torch)."""

    def __init__(self, files: list[Path], batch_size: int, hash_rows: int, form: str, shuffle: bool, seed: int):
        self.files, self.batch_size, self.hash_rows, self.form = files, batch_size, hash_rows, form
        self.shuffle, self.seed = shuffle, seed

    def __iter__(self):  # type: ignore[no-untyped-def]
        import numpy as np
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        rng = np.random.default_rng(self.seed)
        opened = [pq.ParquetFile(f) for f in self.files]  # each file's footer read once
        groups = [(f, g) for f in opened for g in range(f.num_row_groups)]
        if self.shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        columns = ["user_id", "item_id", "category_id", "hist_item_ids", "hist_category_ids", "label"]
        for f, g in groups:
            table = f.read_row_group(g, columns=columns)
            if self.shuffle:
                table = table.take(rng.permutation(len(table)))
            for lo in range(0, len(table), self.batch_size):
                yield self.convert(table.slice(lo, self.batch_size))

    def convert(self, t: Any) -> dict[str, Any]:
        def ids(name: str) -> torch.Tensor:
            return torch.tensor(t.column(name).to_numpy()) % self.hash_rows

        def history(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            col = t.column(name).combine_chunks()
            offsets = torch.from_numpy(col.offsets.to_numpy().astype("int64"))
            values = torch.tensor(col.flatten().to_numpy()) % self.hash_rows
            return values, offsets[1:] - offsets[:-1]

        label = torch.from_numpy(t.column("label").to_numpy().astype("float32"))
        user, item, cat = ids("user_id"), ids("item_id"), ids("category_id")
        (hist_items, lengths), (hist_cats, _) = history("hist_item_ids"), history("hist_category_ids")
        if self.form == "kjt":
            from torchrec import KeyedJaggedTensor

            ones = torch.ones(len(t), dtype=torch.int64)
            seq = KeyedJaggedTensor.from_lengths_sync(
                keys=["item_id", "category_id", "hist_item_ids", "hist_category_ids"],
                values=torch.cat([item, cat, hist_items, hist_cats]),
                lengths=torch.cat([ones, ones, lengths, lengths]),
            )
            users = KeyedJaggedTensor.from_lengths_sync(keys=["user_id"], values=user, lengths=ones)
            return {"users": users, "sequences": seq, "label": label}
        mask = torch.arange(MAX_LEN) < lengths.unsqueeze(1)  # (B, L)
        padded = []
        for values in (hist_items, hist_cats):
            p = torch.zeros(len(t), MAX_LEN, dtype=torch.int64)
            p[mask] = values
            padded.append(p)
        return {"user": user, "item": item, "category": cat, "histories": padded, "mask": mask, "label": label}


class TorchRecDIN(torch.nn.Module):
    def __init__(self, hash_rows: int):
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingCollection, EmbeddingConfig

        super().__init__()
        meta, bound = torch.device("meta"), 0.01 * 3**0.5  # uniform init of std 0.01, as the recis tables'
        init = {"embedding_dim": DIM, "num_embeddings": hash_rows, "weight_init_min": -bound, "weight_init_max": bound}
        self.users = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name="user", feature_names=["user_id"], **init)], device=meta
        )
        self.sequences = EmbeddingCollection(
            tables=[
                EmbeddingConfig(name="item", feature_names=["item_id", "hist_item_ids"], **init),
                EmbeddingConfig(name="category", feature_names=["category_id", "hist_category_ids"], **init),
            ],
            device=meta,
        )
        self.dense = DenseDIN()

    def forward(self, users: Any, sequences: Any) -> torch.Tensor:
        seq = self.sequences(sequences)
        lengths = seq["hist_item_ids"].lengths()
        mask = torch.arange(MAX_LEN) < lengths.unsqueeze(1)
        item, cat = seq["item_id"].values(), seq["category_id"].values()  # one ID per row: (B, D)
        hist = [seq[n].to_padded_dense(MAX_LEN) for n in ("hist_item_ids", "hist_category_ids")]
        return self.dense([self.users(users).values(), item, cat], [item, cat], hist, mask)


class TorchDIN(torch.nn.Module):
    def __init__(self, hash_rows: int):
        super().__init__()
        self.user = torch.nn.EmbeddingBag(hash_rows, DIM, mode="sum", sparse=True)
        self.item = torch.nn.Embedding(hash_rows, DIM, sparse=True)
        self.category = torch.nn.Embedding(hash_rows, DIM, sparse=True)
        for table in (self.user, self.item, self.category):  # the recis tables' initializer
            torch.nn.init.trunc_normal_(table.weight, std=0.01, a=-0.02, b=0.02)
        self.dense = DenseDIN()

    def forward(self, b: dict[str, Any]) -> torch.Tensor:
        user = self.user(b["user"].unsqueeze(1))
        item, cat = self.item(b["item"]), self.category(b["category"])
        hist = [self.item(b["histories"][0]), self.category(b["histories"][1])]
        return self.dense([user, item, cat], [item, cat], hist, b["mask"])


def baseline(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from recis.train.metrics import auc_score

    data = Path(args.data)
    files = sorted((data / "train").glob("*.parquet"))
    form = "kjt" if mode == "torchrec" else "padded"
    torch.manual_seed(0)
    if mode == "torchrec":
        import torch.distributed as dist
        import torchrec.optim
        from torchrec.distributed.model_parallel import DataParallelWrapper, DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
        from torchrec.distributed.sharding_plan import get_default_sharders
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), RANK="0", WORLD_SIZE="1")
        os.environ.update(LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        dist.init_process_group("gloo", rank=0, world_size=1)
        net = TorchRecDIN(args.hash_rows)
        tables = [*net.users.parameters(), *net.sequences.parameters()]
        apply_optimizer_in_backward(torchrec.optim.RowWiseAdagrad, tables, {"lr": args.sparse_lr})
        sharders = get_default_sharders()
        topology = Topology(world_size=1, compute_device="cpu", local_world_size=1)
        plan = EmbeddingShardingPlanner(topology=topology).collective_plan(net, sharders, dist.GroupMember.WORLD)

        class Unwrapped(DataParallelWrapper):  # one process: the dense part needs no DDP
            def wrap(self, dmp: Any, env: Any, device: torch.device) -> None:
                pass

        model = DistributedModelParallel(
            net, device=torch.device("cpu"), plan=plan, sharders=sharders, data_parallel_wrapper=Unwrapped()
        )
        dense = torch.optim.Adam(net.dense.parameters(), lr=args.dense_lr, fused=True)  # as recis.train builds it
        sparse = None

        def forward(b: dict[str, Any]) -> torch.Tensor:
            return model(b["users"], b["sequences"])
    else:
        model = TorchDIN(args.hash_rows)
        dense = torch.optim.Adam(model.dense.parameters(), lr=args.dense_lr, fused=True)
        tables = [*model.user.parameters(), *model.item.parameters(), *model.category.parameters()]
        sparse = torch.optim.Adagrad(tables, lr=args.sparse_lr)
        forward = model

    def loader(files: list[Path], shuffle: bool) -> torch.utils.data.DataLoader:
        batches = ParquetBatches(files, args.batch_size, args.hash_rows, form, shuffle, seed=0)
        return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=1, prefetch_factor=4)

    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    samples, t0 = 0, time.perf_counter()
    for b in loader(files, shuffle=True):
        loss = loss_fn(forward(b), b["label"])
        dense.zero_grad(set_to_none=True)
        if sparse is not None:
            sparse.zero_grad(set_to_none=True)
        loss.backward()
        dense.step()
        if sparse is not None:
            sparse.step()
        samples += len(b["label"])
    seconds = time.perf_counter() - t0
    scores, labels = [], []
    with torch.no_grad():
        for b in loader(sorted((data / "test").glob("*.parquet")), shuffle=False):
            scores.append(forward(b))
            labels.append(b["label"])
    auc = auc_score(torch.cat(scores), torch.cat(labels))
    return {"samples": samples, "seconds": seconds, "auc": auc}


# ----------------------------------------------------------------------------- our side


def recis(args: argparse.Namespace) -> dict[str, Any]:
    from recis.train import Trainer
    from recis.train.config import build

    cfg = demo_config(args.data, "", batch_size=args.batch_size)
    cfg.pop("output_dir")
    cfg["optim"]["sparse"] = {"type": "rowwise_adagrad", "lr": args.sparse_lr}
    cfg["optim"]["dense"] = {"type": "adam", "lr": args.dense_lr}
    for history in ("hist_item_ids", "hist_category_ids"):  # attend over the real events, no padding
        cfg["embeddings"][history]["ragged"] = not args.padded
    cfg["train"] = {"epochs": 1, "progress": False, "log_every": 10**9, "seed": 0}
    run = build(cfg)
    trainer = Trainer(run.model, run.train_data, None, run.sparse_optimizer, run.dense_optimizer, run.trainer)
    t0 = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    auc = trainer.evaluate(run.eval_data)["label.auc"]
    return {"samples": summary["samples"], "seconds": seconds, "auc": auc}


# ----------------------------------------------------------------------------- the driver


def pss_bytes(pid: int) -> int:
    """The proportional set size of `pid` and its descendants (shared pages split among sharers)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_worker(mode: str, args: argparse.Namespace, port: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", mode, "--data", str(args.data), "--batch-size", str(args.batch_size),
           "--sparse-lr", str(args.sparse_lr), "--dense-lr", str(args.dense_lr), "--hash-rows", str(args.hash_rows),
           "--port", str(port), *(["--padded"] if args.padded else [])]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, pss_bytes(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    result = worker_result(cmd, out, returncode=proc.returncode)
    return result | {"mode": mode, "samples_per_s": result["samples"] / result["seconds"], "peak_gb": peak / 2**30}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000, help="training rows of the demo data")
    p.add_argument("--test-rows", type=int, default=50_000, help="test rows of the demo data (the AUC's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", help=f"which sides, comma-separated (default: {','.join(MODES)})")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--sparse-lr", type=float, default=0.2)
    p.add_argument("--dense-lr", type=float, default=0.002)
    p.add_argument("--hash-rows", type=int, default=1_000_003, help="rows of the baselines' static tables")
    p.add_argument("--padded", action="store_true", help="recis pads histories to 30, as the baselines do")
    p.add_argument("--data", type=Path, default=Path("build/bench/e2e_data"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=29511, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        result = recis(args) if args.worker == "recis" else baseline(args.worker, args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    modes = args.modes.split(",") if args.modes else list(MODES)
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"train_e2e: unknown modes {sorted(unknown)}; choose from {MODES}")
    skipped = "torchrec" in modes and importlib.util.find_spec("torchrec") is None
    if skipped:
        note = f"no TorchRec in {sys.executable} (`make install` puts it in .venv)"
        if args.modes:  # asked for by name
            raise SystemExit(f"train_e2e: {note}")
        print(f"TorchRec side skipped: {note}", flush=True)
        modes.remove("torchrec")

    from recis.train.demo import generate

    meta = args.data / "meta.json"
    if not meta.is_file() or [json.loads(meta.read_text())[k] for k in ("rows", "test_rows")] != [
        args.rows,
        args.test_rows,
    ]:
        print(f"writing {args.rows} + {args.test_rows} demo rows to {args.data}", flush=True)
        generate(args.data, rows=args.rows, test_rows=args.test_rows)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        order = modes[r % len(modes) :] + modes[: r % len(modes)]  # rotate who goes first
        rounds.append({m: run_worker(m, args, args.port + r) for m in order})
        line = ", ".join(f"{m} {v['samples_per_s']:.0f}/s AUC {v['auc']:.4f}" for m, v in rounds[-1].items())
        print(f"round {r + 1}: {line}", flush=True)
    print(f"\n{'side':<10} {'samples/s (median, min-max)':>30} {'peak PSS':>10} {'test AUC':>9}")
    for m in modes:
        rates = [x[m]["samples_per_s"] for x in rounds]
        peak = statistics.median(x[m]["peak_gb"] for x in rounds)
        auc = statistics.median(x[m]["auc"] for x in rounds)
        spread = f"{statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f})"
        print(f"{m:<10} {spread:>30} {peak:>8.2f}GB {auc:>9.4f}")
    summary: dict[str, Any] = {
        "environment": environment(),
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "rows": args.rows,
    }
    for base in ("torchrec", "torch"):
        if "recis" in modes and base in modes:
            ratio = statistics.median(x["recis"]["samples_per_s"] / x[base]["samples_per_s"] for x in rounds)
            summary[f"recis_vs_{base}"] = ratio
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    if "recis_vs_torch" in summary:
        print(f"recis vs plain PyTorch end to end: {summary['recis_vs_torch']:.2f}x samples/s")
    if "recis_vs_torchrec" in summary:
        print(f"recis vs TorchRec end to end: {summary['recis_vs_torchrec']:.2f}x samples/s")
    elif skipped:
        print("recis vs TorchRec end to end: skipped (no TorchRec)")


if __name__ == "__main__":
    main()
