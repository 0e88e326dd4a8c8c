"""Input: checking the data's columns against what a run reads, and overlapping reading with the step.

The columns are checked once from the files' footers (which `ColumnReader` has already read), so a
missing or mistyped column fails before the first step. Then a background thread reads and
transforms the next batches while the step runs. Each queued batch carries the data source's
position right after it was read, so a checkpoint taken after step k resumes at batch k + 1 however
far the thread had read ahead. Reading and feature transforms release the GIL in their C++/Arrow
parts, which is where the overlap comes from.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from recis.core import Ragged

from .objectives import Objective

Batch = dict[str, Any]
_END = object()
Needs = dict[str, tuple[str, str]]
"""{column: (kind, who reads it)}; kind "ids" (integer or list<integer>), "number" (one per row) or "any"."""


class SchemaError(ValueError):
    """The data's columns do not fit what the run reads; found from the files' footers, before training."""


def check_columns(data: Any, needs: Needs, where: str) -> Any:
    """Returns `data` when it has the needed columns, else raises `SchemaError` naming the column, who
    reads it, the file and `where`.

    Args:
        data: a `ColumnReader` (checked from the footers it has read; other iterables pass unchecked).
        needs: {column: (kind, who reads it)}, see `Needs`.
        where: where the data comes from, for the message (e.g. the config key "data.train").
    """
    types, sources = getattr(data, "types", None), getattr(data, "sources", None)
    if not isinstance(types, dict) or not sources:
        return data
    from recis.io.convert import describe

    first = sources[0]  # the reader has checked that every file agrees with it
    made = {f"{c}_missing" for c in getattr(data, "missing_indicators", [])}  # the reader adds these
    for column, (kind, who) in needs.items():
        if column in made:
            continue
        if column in types:
            expected = _expected(types[column], kind)
            if expected:
                got = describe(types[column])
                raise SchemaError(
                    f"column {column!r} ({who}) in {first.path} ({where}): expected {expected}, got {got}"
                )
        elif column in first.schema.names:
            raise SchemaError(f"column {column!r} ({who}) is not among the columns {where} reads: {list(types)}")
        else:
            has = first.schema.names
            raise SchemaError(f"column {column!r} ({who}) is missing from {first.path} ({where}); it has {has}")
    return data


def _expected(t: Any, kind: str) -> str | None:
    """What a column of `kind` must be, when the Arrow type `t` is not that; else None."""
    import pyarrow as pa  # type: ignore[import-untyped]

    inner = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t
    if kind == "number" and not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return "one number per row (an integer, float or bool column)"
    if kind == "ids" and not pa.types.is_integer(inner):
        text = pa.types.is_string(inner) or pa.types.is_large_string(inner) or pa.types.is_binary(inner)
        hint = "; hash strings with a Hash op in [[features.features]]" if text else ""
        return f"integer IDs (an integer or list<integer> column{hint})"
    return None


def check_labels(objectives: Iterable[Objective], batch: Batch) -> None:
    """Raises TypeError naming the label column when it holds anything but one number per row.

    Examples:
        >>> import torch
        >>> check_labels([Objective("click")], {"click": torch.tensor([1, 0])})  # one number per row: fine
        >>> check_labels([Objective("click")], {"click": Ragged(torch.tensor([1.0, 0.0]), torch.tensor([0, 1, 2]))})
        Traceback (most recent call last):
        ...
        TypeError: label column 'click' (objective 'click'): expected one number per row (...), got a list per row ...
    """
    for obj in objectives:
        label = batch.get(obj.label)
        if label is None or isinstance(label, Tensor):
            continue  # a missing label is reported by the loss, naming the batch's columns
        got = (
            "a list per row (a Ragged, read from a list or string column)"
            if isinstance(label, Ragged)
            else type(label).__name__
        )
        raise TypeError(
            f"label column {obj.label!r} (objective {obj.key!r}): expected one number per row "
            f"(an integer, float or bool column), got {got}"
        )


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


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch with its tensors and Raggeds on `device` (other values as they are); host data
    bound for CUDA goes through page-locked memory, so the copy runs asynchronously.

    Examples:
        >>> to_device({"x": torch.ones(2), "name": "a"}, torch.device("cpu"))["x"].device.type
        'cpu'
    """

    def move(v: Any) -> Any:
        if not isinstance(v, Tensor | Ragged) or v.device == device:
            return v
        if device.type == "cuda" and v.device.type == "cpu":
            v = v.pin_memory()
        return v.to(device, non_blocking=True)

    return {k: move(v) for k, v in batch.items()}


class InputPipeline:
    """Iterates `(batch, position)` pairs of one pass over `data`, `transform` applied, `depth` batches ahead.

    Args:
        data: any iterable of batch dicts (a `ColumnReader`, a list, ...).
        transform: applied to each raw batch in the same thread that reads it (e.g. `model.transform`).
        depth: batches kept ready; 0 reads and transforms inline (no overlap).
        skip: batches to drop at the start (to resume sources that have no state_dict).
        consumed: batches of this pass consumed before `data`'s current position (for the positions
            it reports; a source restored by its state_dict starts there).
        device: moves each batch's tensors and Raggeds there after `transform`, in the reading
            thread (from page-locked memory on CUDA, so the copy overlaps the step); None: leave them.

    `wait_s` accumulates the time the consumer spent waiting for a batch.

    Examples:
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
        device: str | torch.device | None = None,
    ):
        if depth < 0:
            raise ValueError(f"InputPipeline: depth must be >= 0, got {depth}")
        self.data, self.transform, self.depth = data, transform or (lambda b: b), depth
        self.device = None if device is None else torch.device(device)
        self.skip, self.consumed = skip, consumed
        self.wait_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _produce(self) -> Generator[tuple[Batch, dict[str, Any]], None, None]:
        for i, raw in enumerate(self.data):
            if i >= self.skip:
                batch = self.transform(raw)
                yield (
                    batch if self.device is None else to_device(batch, self.device),
                    source_state(self.data, self.consumed + i + 1),
                )

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
