"""Online learning: the windows of a stream in order, each evaluated before it is trained on.

Progressive validation scores the model on data it has never seen, the way it will be served; after
each window the trainer's `on_window_end` hooks checkpoint and evict, so a resume restarts at the
first window not finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .stages import OnlineData, Stage, make_schedule

if TYPE_CHECKING:
    from .trainer import Trainer


def run_online(trainer: Trainer, stage: Stage) -> None:
    """Trains `stage` over an online stream: per window, progressive evaluation, training, then
    `on_window_end` hooks (checkpoint, eviction); resumes after `trainer.run.window_done`."""
    online = stage.data if isinstance(stage.data, OnlineData) else trainer.train_data
    assert isinstance(online, OnlineData)
    run, windows = trainer.run, online.windows
    if run.window_done is not None and hasattr(windows, "last"):
        windows.last = run.window_done
    trainer.prepare_stage(stage)
    schedule = make_schedule(stage.lr_schedule)
    trainer.reporter.start_bar(stage.name, stage.steps, run.stage_step)
    for window in resume_windows(windows, run.window_done):
        key = str(getattr(window, "key", window))
        if key != run.window:
            run.window, run.window_evaluated, run.position = key, False, None
        data = online.reader(window)
        if online.evaluate_first and not run.window_evaluated and run.step > 0:
            metrics = trainer.evaluate(data)
            trainer.reporter.write({"kind": "window_eval", "step": run.step, "window": key, **metrics})
        run.window_evaluated = True
        trainer.train_pass(stage, data, schedule, stage.steps)
        if trainer.stage_done(stage):
            return
        trainer.end_window(key)
        trainer.prepare_stage(stage)


def resume_windows(windows: Iterable[Any], done: str | None) -> Iterator[Any]:
    """The windows after `done` (for iterables that cannot skip by themselves, e.g. lists)."""
    skipping = done is not None and not hasattr(windows, "last")
    for w in windows:
        key = str(getattr(w, "key", w))
        if skipping:
            skipping = key != done
            continue
        yield w
