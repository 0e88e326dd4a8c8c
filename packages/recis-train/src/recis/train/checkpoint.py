"""Checkpoints the Trainer writes and resumes from: one directory per step, complete or absent.

`Checkpointer` is the small interface the Trainer needs (save / latest / load). This
implementation writes the model's dense `state_dict`, every hash table's rows with their optimizer
slots, the optimizers' states and the trainer state (reader position, step, RNG) with `torch.save`
into `step-<n>.tmp` and renames it when complete, so a crash never leaves a half checkpoint as
"latest". The SafeTensors saver of recis-optim (issue 5) can replace it behind the same interface.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recis.embedding import EmbeddingEngine

_STEP_DIR = re.compile(r"^step-(\d+)$")


def _tables(model: nn.Module) -> dict[str, Any]:
    engines = [m for m in model.modules() if isinstance(m, EmbeddingEngine)]
    return {f"engine{i}.{name}": table for i, e in enumerate(engines) for name, table in e.tables().items()}


class Checkpointer:
    """Saves and restores model, hash tables, optimizers and trainer state under `directory`.

    Args:
        directory: where `step-<n>/` directories go.
        keep: how many of the newest checkpoints to keep (None: all).

    Example:
        >>> import tempfile
        >>> from recis.embedding import EmbeddingSpec
        >>> model = nn.ModuleDict({"emb": EmbeddingEngine({"item": EmbeddingSpec(4)}), "mlp": nn.Linear(4, 1)})
        >>> _ = model.train()["emb"]({"item": torch.tensor([1, 2, 3])})
        >>> ckpt = Checkpointer(tempfile.mkdtemp())
        >>> path = ckpt.save(7, model, {}, {"note": "hi"})
        >>> fresh = nn.ModuleDict({"emb": EmbeddingEngine({"item": EmbeddingSpec(4)}), "mlp": nn.Linear(4, 1)})
        >>> ckpt.load(ckpt.latest(), fresh, {})["note"], len(fresh["emb"].groups[0].table)
        ('hi', 3)
    """

    def __init__(self, directory: str | Path, keep: int | None = 3):
        if keep is not None and keep < 1:
            raise ValueError(f"Checkpointer: keep must be >= 1 or None, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [_STEP_DIR.match(p.name) for p in self.directory.iterdir() if p.is_dir()]
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        steps = self.steps()
        return self.directory / f"step-{steps[-1]}" if steps else None

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        trainer_state: dict[str, Any],
    ) -> Path:
        """Writes checkpoint `step` (replacing one of the same step) and prunes old ones; returns its path."""
        final = self.directory / f"step-{step}"
        tmp = self.directory / f"step-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(model.state_dict(), tmp / "dense.pt")
        torch.save({name: t.state_dict() for name, t in _tables(model).items()}, tmp / "tables.pt")
        torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, tmp / "optimizers.pt")
        torch.save(trainer_state, tmp / "trainer.pt")
        rows = {name: len(t) for name, t in _tables(model).items()}
        (tmp / "index.json").write_text(json.dumps({"step": step, "rows": rows, "optimizers": sorted(optimizers)}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if self.keep is not None:
            for old in self.steps()[: -self.keep]:
                shutil.rmtree(self.directory / f"step-{old}", ignore_errors=True)
        return final

    def load(
        self, path: str | Path, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer]
    ) -> dict[str, Any]:
        """Restores `model` and `optimizers` from checkpoint `path`; returns the trainer state saved with it.

        Sparse optimizers must be built before loading: their slots must exist in the tables.
        """
        path = Path(path)
        if not (path / "index.json").is_file():
            raise FileNotFoundError(f"Checkpointer.load: {path} is not a complete checkpoint (no index.json)")
        model.load_state_dict(torch.load(path / "dense.pt", weights_only=True))
        saved_tables = torch.load(path / "tables.pt", weights_only=True)
        tables = _tables(model)
        if set(saved_tables) != set(tables):
            raise ValueError(
                f"Checkpointer.load: {path} holds tables {sorted(saved_tables)}, the model has {sorted(tables)}"
            )
        for name, state in saved_tables.items():
            tables[name].load_state_dict(state)
        saved_opts = torch.load(path / "optimizers.pt", weights_only=True)
        for name, opt in optimizers.items():
            if name not in saved_opts:
                raise ValueError(
                    f"Checkpointer.load: {path} has no state for optimizer {name!r} (has {sorted(saved_opts)})"
                )
            opt.load_state_dict(saved_opts[name])
        trainer_state: dict[str, Any] = torch.load(path / "trainer.pt", weights_only=False)
        return trainer_state
