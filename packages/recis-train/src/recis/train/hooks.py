"""Hooks: small callbacks the Trainer calls at fixed points, so logging, checkpoints, eviction and
early stopping are plug-ins rather than branches in the training loop.

Interface (every method optional): `on_fit_start(trainer)`, `on_step_end(trainer, logs)` after each
optimizer step, `on_eval_end(trainer, metrics)`, `on_window_end(trainer, window_key)`,
`on_fit_end(trainer, summary)`. A hook stops training by setting `trainer.should_stop = True`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .trainer import Trainer


class Hook:
    """Base class with no-op methods; override the ones you need.

    Examples:
        >>> class PrintLoss(Hook):
        ...     def on_step_end(self, trainer, logs):
        ...         if logs["step"] % 100 == 0:
        ...             print(logs["step"], logs["loss"])
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (after a resume has been applied)."""

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """After an optimizer step; `logs` has step, loss, per-objective losses, samples."""

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After an evaluation; `metrics` are "<objective>.<metric>" -> value."""

    def on_window_end(self, trainer: Trainer, window: str) -> None:
        """After training on an online window (key as in `recis.io.Window`)."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After training (also after an early stop)."""


class CheckpointEvery(Hook):
    """Saves a checkpoint every `steps` optimizer steps, and a delta checkpoint after each online window."""

    def __init__(self, steps: int | None):
        if steps is not None and steps < 1:
            raise ValueError(f"CheckpointEvery: steps must be >= 1 or None, got {steps}")
        self.steps = steps

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.steps and trainer.step % self.steps == 0:
            trainer.save_checkpoint()

    def on_window_end(self, trainer: Trainer, window: str) -> None:
        trainer.save_checkpoint(delta=True)


class EvictEvery(Hook):
    """Runs the embedding tables' eviction policies every `steps` steps and after each online window."""

    def __init__(self, steps: int | None = None):
        self.steps = steps
        self.evicted = 0

    def _evict(self, trainer: Trainer) -> None:
        for engine in trainer.engines:
            self.evicted += sum(engine.evict().values())

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.steps and trainer.step % self.steps == 0:
            self._evict(trainer)

    def on_window_end(self, trainer: Trainer, window: str) -> None:
        self._evict(trainer)


class EarlyStopping(Hook):
    """Stops when evaluation `metric` has not improved for `patience` evaluations.

    Examples:
        >>> EarlyStopping("label.auc", patience=2, mode="max").metric
        'label.auc'
    """

    def __init__(self, metric: str, patience: int = 3, mode: Literal["max", "min"] = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, min_delta
        self.best = -math.inf if mode == "max" else math.inf
        self.bad = 0

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise KeyError(f"EarlyStopping: no metric {self.metric!r} in the evaluation (has {sorted(metrics)})")
        value = metrics[self.metric]
        better = value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        if better:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            trainer.should_stop = True
            trainer.stop_reason = f"early stop: {self.metric} did not improve for {self.patience} evaluations"
