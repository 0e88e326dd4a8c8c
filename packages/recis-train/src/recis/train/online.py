"""Online learning: the windows of a stream in order, each evaluated before it is trained on.

Progressive validation scores the model on data it has never seen, the way it will be served; after
each window the trainer's `on_window_end` hooks checkpoint and evict, so a resume restarts at the
first window not finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .pipeline import restore_source
from .stages import OnlineData, Stage, make_schedule

if TYPE_CHECKING:
    from .trainer import Trainer


def run_online(trainer: Trainer, stage: Stage) -> None:
    """Trains `stage` over an online stream: per window, progressive evaluation, training, then
    `on_window_end` hooks (checkpoint, eviction); resumes after `trainer.window_done`."""
    online = stage.data if isinstance(stage.data, OnlineData) else trainer.train_data
    assert isinstance(online, OnlineData)
    windows = online.windows
    if trainer.window_done is not None and hasattr(windows, "last"):
        windows.last = trainer.window_done
    trainer._set_trainable(stage)
    schedule = make_schedule(stage.lr_schedule)
    trainer.reporter.start_bar(stage.name, stage.steps, trainer.stage_step)
    for window in resume_windows(windows, trainer.window_done):
        key = str(getattr(window, "key", window))
        if key != trainer.window:
            trainer.window, trainer.window_evaluated, trainer.position = key, False, None
        data = online.reader(window)
        if online.evaluate_first and not trainer.window_evaluated and trainer.step > 0:
            metrics = trainer.evaluate(data)
            trainer.reporter.write({"kind": "window_eval", "step": trainer.step, "window": key, **metrics})
        trainer.window_evaluated = True
        skip = restore_source(data, trainer.position)
        consumed = trainer.position["consumed"] if trainer.position and not skip else 0
        trainer._train_pass(stage, data, schedule, stage.steps, skip, consumed)
        if trainer.should_stop or trainer._stage_done(stage):
            return
        trainer.window_done, trainer.position = key, None
        for hook in trainer.hooks:
            hook.on_window_end(trainer, key)
        trainer._set_trainable(stage)


def resume_windows(windows: Iterable[Any], done: str | None) -> Iterator[Any]:
    """The windows after `done` (for iterables that cannot skip by themselves, e.g. lists)."""
    skipping = done is not None and not hasattr(windows, "last")
    for w in windows:
        key = str(getattr(w, "key", w))
        if skipping:
            skipping = key != done
            continue
        yield w
