"""TensorBoard event files of a run (`TrainerConfig.tensorboard`, the `tensorboard` extra).

Every record the Reporter logs becomes scalars: training records under `train/` (loss per
objective, samples/s, running AUC, the input's wait fraction), evaluations under `eval/`, each
optimizer's learning rate under `lr/`, and at each evaluation every embedding table's rows, hit
rate, inserts and evictions under `tables/<table>/`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .hooks import Hook

if TYPE_CHECKING:
    from .trainer import Trainer


class TensorBoardWriter(Hook):
    """Writes a run's scalars to `directory` with `torch.utils.tensorboard.SummaryWriter`."""

    def __init__(self, directory: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's module needs the tensorboard package
            raise ImportError(
                "TrainerConfig.tensorboard needs the tensorboard package: pip install 'recis-train[tensorboard]'"
            ) from e
        self.writer = SummaryWriter(str(directory))

    def record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """One Reporter record as scalars at its step (called by the Reporter for every record)."""
        kind, step = record.get("kind"), int(record.get("step", trainer.step))
        prefix = {"train": "train", "eval": "eval", "window_eval": "window_eval"}.get(str(kind))
        if prefix is None:
            return
        for key, value in record.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and key not in ("step", "epoch") and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        if kind == "train":
            for name, opt in trainer.optimizers.items():
                self.writer.add_scalar(f"lr/{name}", float(opt.param_groups[0]["lr"]), step)
        else:
            for i, engine in enumerate(trainer.engines):
                for table, stats in engine.stats().items():
                    tag = f"tables/{i}.{table}"
                    lookups = stats.get("lookups", 0)
                    self.writer.add_scalar(f"{tag}/rows", stats.get("rows", 0), step)
                    self.writer.add_scalar(f"{tag}/hit_rate", stats.get("hits", 0) / lookups if lookups else 0.0, step)
                    self.writer.add_scalar(f"{tag}/inserts", stats.get("inserts", 0), step)
                    self.writer.add_scalar(f"{tag}/evicted", stats.get("evicted", 0), step)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.writer.close()  # a later record reopens a file
