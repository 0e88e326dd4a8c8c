"""Input pipeline overlap: a background thread reads and transforms the next batches while the step runs.

Each queued batch carries the data source's position right after it was read, so a checkpoint
taken after step k resumes at batch k + 1 however far the thread had read ahead. Reading and
feature transforms release the GIL in their C++/Arrow parts, which is where the overlap comes from.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

Batch = dict[str, Any]
_END = object()


def source_state(data: Iterable[Batch], consumed: int) -> dict[str, Any]:
    """The position of `data` after `consumed` batches of the current pass: its own `state_dict()`
    when it has one (e.g. `ColumnReader`), else the count (replayed by skipping on resume)."""
    state_dict = getattr(data, "state_dict", None)
    if callable(state_dict):
        return {"source": state_dict(), "consumed": consumed}
    return {"source": None, "consumed": consumed}


def restore_source(data: Iterable[Batch], state: dict[str, Any] | None) -> int:
    """Puts `data` back at `state`; returns how many batches of the pass the caller must skip itself."""
    if state is None:
        return 0
    if state.get("source") is not None:
        load = getattr(data, "load_state_dict", None)
        if not callable(load):
            raise ValueError(
                f"cannot resume: the checkpoint holds a reader position, {type(data).__name__} has no load_state_dict"
            )
        load(state["source"])
        return 0
    return int(state["consumed"])


class InputPipeline:
    """Iterates `(batch, position)` pairs of one pass over `data`, `transform` applied, `depth` batches ahead.

    Args:
        data: any iterable of batch dicts (a `ColumnReader`, a list, ...).
        transform: applied to each raw batch in the same thread that reads it (e.g. `model.transform`).
        depth: batches kept ready; 0 reads and transforms inline (no overlap).
        skip: batches to drop at the start (to resume sources that have no state_dict).
        consumed: batches of this pass consumed before `data`'s current position (for the positions
            it reports; a source restored by its state_dict starts there).

    `wait_s` accumulates the time the consumer spent waiting for a batch.

    Example:
        >>> pipe = InputPipeline([{"x": 1}, {"x": 2}, {"x": 3}], lambda b: {"x": b["x"] * 10}, depth=2, skip=1)
        >>> [(b["x"], pos["consumed"]) for b, pos in pipe]
        [(20, 2), (30, 3)]
    """

    def __init__(
        self,
        data: Iterable[Batch],
        transform: Callable[[Batch], Batch] | None = None,
        depth: int = 4,
        skip: int = 0,
        consumed: int = 0,
    ):
        if depth < 0:
            raise ValueError(f"InputPipeline: depth must be >= 0, got {depth}")
        self.data, self.transform, self.depth = data, transform or (lambda b: b), depth
        self.skip, self.consumed = skip, consumed
        self.wait_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _produce(self) -> Generator[tuple[Batch, dict[str, Any]], None, None]:
        for i, raw in enumerate(self.data):
            if i >= self.skip:
                yield self.transform(raw), source_state(self.data, self.consumed + i + 1)

    def __iter__(self) -> Iterator[tuple[Batch, dict[str, Any]]]:
        if self.depth == 0:
            it = self._produce()
            while True:
                t0 = time.perf_counter()
                item = next(it, None)
                self.wait_s += time.perf_counter() - t0
                if item is None:
                    return
                yield item
        q: queue.Queue[Any] = queue.Queue(self.depth)

        def put(item: Any) -> bool:
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            items = self._produce()
            try:
                for item in items:
                    if not put(item):
                        return
                put(_END)
            except BaseException as e:  # handed to the consumer, raised there
                put(e)
            finally:
                items.close()  # stops the source's own threads (a ColumnReader's decode pool)

        self._thread = threading.Thread(target=run, name="recis-input", daemon=True)
        self._thread.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = q.get()
                self.wait_s += time.perf_counter() - t0
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stops the reading thread (batches read ahead are dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
