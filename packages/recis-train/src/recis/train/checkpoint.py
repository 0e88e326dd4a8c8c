"""Checkpoints the Trainer writes and resumes from, through `recis.optim.Saver`.

`Checkpointer` is the small interface the Trainer needs (save / latest / load / steps). It keeps
one `Saver` per model and optimizer set, so online windows can write delta checkpoints (rows touched
since the previous save, plus evictions) on top of a full one. The trainer state (reader position,
step, RNG) travels as the checkpoint's JSON `extra`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recis.optim import Saver, complete_checkpoints, latest


class Checkpointer:
    """Saves and restores model, hash tables, optimizers and trainer state under `directory`.

    Args:
        directory: where `step-<n>/` directories go.
        keep: how many of the newest checkpoints to keep (with the bases their deltas need).
        fsync: flush to disk before publishing (power-loss safety).

    Examples:
        >>> import tempfile
        >>> from recis.embedding import EmbeddingEngine, EmbeddingSpec
        >>> model = nn.ModuleDict({"emb": EmbeddingEngine({"item": EmbeddingSpec(4)}), "mlp": nn.Linear(4, 1)})
        >>> _ = model.train()["emb"]({"item": torch.tensor([1, 2, 3])})
        >>> ckpt = Checkpointer(tempfile.mkdtemp())
        >>> ckpt.save(7, model, {}, {"note": "hi"}).name
        'step-0000000007'
        >>> fresh = nn.ModuleDict({"emb": EmbeddingEngine({"item": EmbeddingSpec(4)}), "mlp": nn.Linear(4, 1)})
        >>> ckpt.load(ckpt.latest(), fresh, {})["note"], len(fresh["emb"].groups[0].table), ckpt.steps()
        ('hi', 3, [7])
    """

    def __init__(self, directory: str | Path, keep: int = 3, fsync: bool = True):
        if keep < 1:
            raise ValueError(f"Checkpointer: keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep, self.fsync = keep, fsync
        self._saver: Saver | None = None
        self._key: tuple[int, ...] = ()
        self._has_base = False

    def _saver_for(self, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer]) -> Saver:
        key = (id(model), *(id(o) for o in optimizers.values()))
        if self._saver is None or key != self._key:
            if self._saver is not None:
                self._saver.close()  # hands the directory's writer lock to the new Saver
            opts = list(optimizers.values())
            self._saver = Saver(self.directory, model, optimizers=opts, keep=self.keep, fsync=self.fsync)
            self._key, self._has_base = key, False
        return self._saver

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return [int(p.name.split("-")[1]) for p in complete_checkpoints(self.directory)]

    def latest(self) -> Path | None:
        """The newest checkpoint, or None; ValueError naming it when it is damaged."""
        return latest(self.directory)

    def close(self) -> None:
        """Releases the checkpoint directory's writer lock (taken by the first save)."""
        if self._saver is not None:
            self._saver.close()

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        trainer_state: dict[str, Any],
        delta: bool = False,
    ) -> Path:
        """Writes checkpoint `step` (a delta over the previous one when `delta` and there is one); returns its path."""
        saver = self._saver_for(model, optimizers)
        extra = dict(trainer_state)
        if isinstance(extra.get("rng"), torch.Tensor):
            extra["rng"] = extra["rng"].tolist()  # JSON: the RNG state as a list of bytes
        path = saver.save(step, extra=extra, delta=delta and self._has_base)
        self._has_base = True
        return path

    def load(
        self, path: str | Path, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer]
    ) -> dict[str, Any]:
        """Restores `model` and `optimizers` from checkpoint `path`; returns the trainer state saved with it.

        Sparse optimizers must be built before loading: their slots must exist in the tables.
        """
        saver = self._saver_for(model, optimizers)
        state = saver.load(path)
        self._has_base = True
        if isinstance(state.get("rng"), list):
            state["rng"] = torch.tensor(state["rng"], dtype=torch.uint8)
        return state
