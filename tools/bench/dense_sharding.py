"""Dense layers on 2 ranks, DDP against FSDP (`TrainerConfig.dense_sharding`): per-rank dense
state and step time, same run.

    python tools/bench/dense_sharding.py [--hidden 2048] [--steps 20] [--ranks 2]

A tower of Linear(16, H) -> Linear(H, H) -> Linear(H, 1) over one pooled embedding, Adam, batch 64
per rank, trained by the Trainer on gloo ranks. Reported per rank: parameters and Adam state held
(floats, this rank's shard under FSDP) and the median step time.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path


def rank_main(rank: int, world: int, mode: str, hidden: int, steps: int, rendezvous: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300)
    )
    from recis.embedding import EmbeddingEngine, EmbeddingSpec
    from recis.optim import SparseAdam
    from recis.optim.dense_state import is_sharded
    from recis.train import Hook, Trainer, TrainerConfig

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = EmbeddingEngine({"a": EmbeddingSpec(16)})
            layers = [torch.nn.Linear(16, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
            self.tower = torch.nn.Sequential(*layers, torch.nn.Linear(hidden, 1))

        def forward(self, batch: dict) -> dict:
            return {"label": self.tower(self.emb(batch)["a"]).squeeze(1)}

    class Clock(Hook):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.last = time.perf_counter()

        def on_step_end(self, trainer: object, logs: dict) -> None:
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    model = Tower()
    g = torch.Generator().manual_seed(rank)
    data = [
        {"a": torch.randint(0, 1000, (64,), generator=g), "label": torch.randint(0, 2, (64,), generator=g).float()}
        for _ in range(steps)
    ]
    dense = torch.optim.Adam(model.tower.parameters(), 1e-3)
    clock = Clock()
    cfg = TrainerConfig(progress=False, dense_sharding=mode, checkpoint_at_end=False, hooks=[clock])
    Trainer(model, data, None, SparseAdam(model, lr=0.01), dense, cfg).fit()

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if is_sharded(t) else t

    params = sum(local(p).numel() for p in model.tower.parameters())
    state = sum(local(v).numel() for s in dense.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    step_ms = 1000 * statistics.median(clock.times[2:])
    Path(out, f"{mode}-{rank}.txt").write_text(f"{params} {state} {step_ms}")
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args()
    import torch.multiprocessing as mp

    print(f"tower of hidden width {args.hidden} (DDP's row: all its parameters), Adam, {args.ranks} ranks x 1 thread")
    print(f"{'dense_sharding':<16}{'params/rank':>14}{'Adam state/rank':>18}{'ms/step':>10}")
    for mode in ("ddp", "fsdp"):
        with tempfile.TemporaryDirectory() as tmp:
            spawn_args = (args.ranks, mode, args.hidden, args.steps, f"{tmp}/rendezvous", tmp)
            mp.start_processes(rank_main, args=spawn_args, nprocs=args.ranks, start_method="spawn")
            params, state, ms = Path(tmp, f"{mode}-0.txt").read_text().split()
        print(f"{mode:<16}{int(params):>14,}{int(state):>18,}{float(ms):>10.1f}")


if __name__ == "__main__":
    main()
