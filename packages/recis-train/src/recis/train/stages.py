"""Stages (data + length + learning-rate schedule + which parameters train), online data, and the step timer.

A run is a list of stages executed in order (warm up on old data, then fine-tune); an `OnlineData`
stage walks the windows of a stream instead, evaluating on each window before training on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hooks import Hook
    from .objectives import Objective

Schedule = Callable[[int, int | None], float]
"""(step within the stage, total steps of the stage or None) -> factor on the optimizers' base lr."""


def make_schedule(spec: str | Schedule) -> Schedule:
    """A schedule from a name: "constant", "linear" (to 0), "cosine" (to 0), "warmup:<n>" (linear
    ramp over n steps, then constant), "warmup:<n>,cosine"; or a callable as it is.

    Examples:
        >>> s = make_schedule("warmup:10,cosine")
        >>> round(s(4, 100), 2), round(s(55, 100), 2), s(0, None)
        (0.5, 0.5, 0.1)
    """
    if callable(spec):
        return spec
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    warmup, decay = 0, "constant"
    for p in parts:
        if p.startswith("warmup:"):
            try:
                warmup = int(p.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"lr schedule {spec!r}: warmup needs a step count, e.g. 'warmup:100'") from None
        elif p in ("constant", "linear", "cosine"):
            decay = p
        else:
            raise ValueError(f"lr schedule {spec!r}: unknown part {p!r}; expected constant, linear, cosine, warmup:<n>")

    def schedule(step: int, total: int | None) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if decay == "constant":
            return 1.0
        if total is None:
            raise ValueError(f"lr schedule {spec!r} needs the stage's length: give the stage `steps`")
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - frac if decay == "linear" else 0.5 * (1 + math.cos(math.pi * frac))

    return schedule


@dataclass
class OnlineData:
    """An online stream: `windows` (e.g. `recis.io.Windows`) in order, `reader(window)` its batches.

    The Trainer evaluates on each window before training on it (progressive validation), then
    checkpoints and evicts. On resume the windows already trained are skipped (`windows.last`).
    """

    windows: Iterable[Any]
    reader: Callable[[Any], Iterable[dict[str, Any]]]
    evaluate_first: bool = True


@dataclass
class Stage:
    """One phase of training.

    Args:
        name: shown in logs and the progress bar.
        data: the stage's batches (default: the Trainer's train_data), or an `OnlineData`.
        epochs: passes over `data` (default 1 when `steps` is None too).
        steps: stop after this many optimizer steps in the stage (also the schedule's length).
        lr_schedule: a `make_schedule` name or callable.
        train: parameter-name prefixes that train in this stage (None: all). The embedding tables
            train when the prefix of their engine module (e.g. "embedding") is listed.

    Examples:
        >>> Stage("finetune", steps=100, lr_schedule="cosine", train=["top", "heads"]).train
        ['top', 'heads']
    """

    name: str = "train"
    data: Iterable[dict[str, Any]] | OnlineData | None = None
    epochs: int | None = None
    steps: int | None = None
    lr_schedule: str | Schedule = "constant"
    train: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for key in ("epochs", "steps"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Stage {self.name!r}: {key} must be a positive int or None, got {value!r}")
        if self.train is not None:
            self.train = list(self.train)
        make_schedule(self.lr_schedule)

    def trains(self, name: str) -> bool:
        return self.train is None or any(name == p or name.startswith(p + ".") for p in self.train)


def batches_per_pass(data: Any) -> int | None:
    """Batches in one pass over `data` when it can tell (len(), or a ColumnReader's rows and batch size)."""
    try:
        return len(data)
    except TypeError:
        pass
    rows, size = getattr(data, "shard_rows", None), getattr(data, "batch_size", None)
    if isinstance(rows, int) and isinstance(size, int):
        return rows // size if getattr(data, "drop_last", False) else -(-rows // size)
    return None


class StepTimer:
    """Seconds spent per part of the step: data_wait, sparse_forward, forward (dense), backward,
    sparse_update, dense_update. `fractions()` splits the total among them."""

    PARTS = ("data_wait", "sparse_forward", "dense_forward", "backward", "sparse_update", "dense_update")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.start = time.perf_counter()

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] += seconds

    def data_wait_fraction(self) -> float:
        total = time.perf_counter() - self.start
        return self.seconds["data_wait"] / total if total > 0 else math.nan

    def fractions(self) -> dict[str, float]:
        total = sum(self.seconds.values())
        return {k: v / total for k, v in self.seconds.items()} if total > 0 else {}


@dataclass
class TrainerConfig:
    """Everything about a run except the model, data and optimizers.

    Args:
        objectives: the labels, heads, losses and weights (empty: one BCE objective on "label").
        epochs: passes of the default single stage (when `stages` is empty).
        max_steps: steps of the default single stage (None: the epochs decide).
        stages: run these in order instead.
        grad_accum: micro-batches per optimizer step.
        clip_grad_norm: global gradient-norm limit over dense and sparse gradients (None: off).
        bf16: bf16 autocast for the dense part (embeddings stay float32).
        compile: `torch.compile` the model's forward (in place, `nn.Module.compile`): the dense part
            compiles with dynamic batch sizes; the `EmbeddingEngine` runs eagerly (one graph break).
        prefetch: batches read and transformed ahead in a background thread (0: inline, no overlap).
        eval_every: evaluate every this many steps (always at the end of each stage).
        eval_every_epoch: also evaluate after every pass over a stage's data (what an
            `EarlyStopping` hook needs to stop a run between epochs).
        eval_batches: evaluate on at most this many batches.
        group_column: batch column naming the group (user) for GAUC.
        output_dir: metrics.jsonl, plots, summary and checkpoints/ go here (None: nothing written).
        checkpoint_every: save every this many steps (and after each window; at the end if `checkpoint_at_end`).
        keep_checkpoints: newest checkpoints kept.
        resume: "latest" (newest checkpoint in output_dir, if any) or a checkpoint path.
        evict_every: run table eviction every this many steps (always after a window).
        log_every: steps between log records (and bar updates).
        progress: show a tqdm bar.
        tensorboard: also write TensorBoard event files to `output_dir/tensorboard` (losses, eval
            metrics, learning rates, samples/s, table rows, hit rate, inserts, evictions; needs
            `pip install 'recis-train[tensorboard]'`).
        seed: torch seed at the start of a fresh run (None: leave the RNG alone).
        dense_sharding: how several ranks hold the dense layers: "ddp" (replicated, gradients
            all-reduced) or "fsdp" (each rank keeps a shard of every parameter and its optimizer
            state, gathered per layer for forward and backward). Ignored on one rank.
        device: where the dense layers run and batches go ("cpu", "cuda", "cuda:1", ...). Tables
            stay where their `EmbeddingSpec.device` puts them.
        keep_freed_memory: `fit` has glibc's malloc keep up to 1 GiB of freed memory for the next
            steps (`recis.core.keep_freed_memory`, process-wide) instead of handing it back and
            faulting it in again; False leaves the allocator as it is.
    """

    objectives: Sequence[Objective] = ()
    epochs: int = 1
    max_steps: int | None = None
    stages: Sequence[Stage] = ()
    grad_accum: int = 1
    clip_grad_norm: float | None = None
    bf16: bool = False
    compile: bool = False
    prefetch: int = 4
    eval_every: int | None = None
    eval_every_epoch: bool = False
    eval_batches: int | None = None
    group_column: str | None = None
    output_dir: str | None = None
    checkpoint_every: int | None = None
    checkpoint_at_end: bool = True
    keep_checkpoints: int = 3
    resume: str | None = None
    evict_every: int | None = None
    log_every: int = 50
    progress: bool = True
    tensorboard: bool = False
    seed: int | None = 0
    device: str = "cpu"
    dense_sharding: str = "ddp"
    keep_freed_memory: bool = True
    hooks: list[Hook] = field(default_factory=list)
