"""`RunState`: where a training run stands, what a checkpoint keeps of the Trainer and a resume restores.

Model, optimizers and tables are saved by the checkpoint saver; this is the rest: counters, the
stage and epoch, the input position inside the current pass, and the online window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class RunState:
    """The Trainer's progress (`Trainer.run`).

    Examples:
        >>> state = RunState(step=10, samples=320)
        >>> RunState.from_dict(state.to_dict()) == state
        True
    """

    step: int = 0  # optimizer steps taken
    samples: int = 0  # training rows consumed
    stage_index: int = 0  # the stage being trained
    stage_step: int = 0  # steps into it
    epoch: int = 0  # passes over its data finished
    position: dict[str, Any] | None = None  # the input's position after the last consumed batch (None: a pass's start)
    window: str | None = None  # online: the window being trained
    window_done: str | None = None  # online: the last window finished
    window_evaluated: bool = False  # online: `window` was scored before training on it
    finished_epochs: int | None = None  # the last finished stage's passes and steps (a resume with
    finished_steps: int | None = None  # more epochs or steps continues it; None: not recorded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunState:
        """The fields of a saved state (keys beyond them, e.g. the RNG state, are ignored; fields
        it lacks keep their defaults)."""
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})
