"""One epoch of one shard: decode pieces on a thread pool, shuffle in windows, cut batches, convert.

A background thread runs the whole chain and hands ready batches over through a bounded queue, so
memory is bounded by (threads + 1) decoded pieces, one shuffle window and `prefetch` batches. Every
batch carries the shard-stream cursor after its last row; that cursor is the reader's exact state.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.fs as pafs  # type: ignore[import-untyped]
from torch import Tensor

from recis.core import Ragged

from .convert import Column, StringHash, count_nulls, fill_nulls, join, to_columns
from .plan import Slice, rng
from .sources import Source, read_piece

Batch = dict[str, Tensor | Ragged]
Chunk = dict[str, Column]


@dataclass
class Job:
    """Everything one epoch of one shard needs; built by `ColumnReader.__iter__`."""

    fs: pafs.FileSystem
    sources: list[Source]
    types: dict[str, pa.DataType]  # the columns to read, in order, with their expected types
    fills: dict[str, Any] | None  # None: nulls are an error
    indicators: frozenset[str]  # columns that get a `<name>_missing` int8 column
    string_hashes: dict[str, StringHash]
    slices: list[Slice]
    batch_size: int
    drop_last: bool
    window: int  # shuffle window in rows; 0: no shuffle
    key: tuple[int, int, int]  # (seed, epoch, shard) for the window permutations
    drop: int  # rows of the first window already consumed before a resume
    skip_errors: bool
    skipped: list[str]  # where skip mode records what it skipped
    num_threads: int
    pin_memory: bool
    columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.columns = list(self.types)

    def fail(self, error: Exception) -> None:
        """Raises `error`, or in skip mode records it with a warning."""
        if not self.skip_errors:
            raise error
        self.skipped.append(str(error))
        warnings.warn(f"{error} (skipped; on_error='skip')", RuntimeWarning, stacklevel=2)


def decode(job: Job, s: Slice) -> pa.Table | None:
    """Reads one slice of a piece and resolves nulls; None when it failed and skip mode is on."""
    src = job.sources[s.file]
    where = f"{src.path}, {src.piece_name} {s.piece}"
    try:
        table = read_piece(job.fs, src, s.piece, job.columns)
    except (OSError, pa.ArrowException) as e:
        column = _failing_column(job, src, s.piece)
        where = f"column {column!r} in {where}" if column else where
        what = "page checksum mismatch, the file is corrupt" if "checksum" in str(e).lower() else "cannot decode"
        job.fail(ValueError(f"[recis.io] {where}: {what} ({type(e).__name__}: {e})"))
        return None
    if table.num_rows != src.piece_rows[s.piece]:
        got, expected = table.num_rows, src.piece_rows[s.piece]
        job.fail(ValueError(f"[recis.io] {where}: decoded {got} rows, the footer promises {expected} (truncated?)"))
        return None
    table = table.slice(s.start, s.rows)
    columns = {}
    for name, expected_type in job.types.items():
        col = table.column(name)
        if not col.type.equals(expected_type):  # same logical type, other list field names
            col = col.cast(expected_type)
        nulls = count_nulls(col)
        missing = None
        if name in job.indicators:  # taken before any fill
            missing = pc.cast(pc.is_null(col) if nulls else pa.repeat(pa.scalar(False), len(col)), pa.int8())
        if nulls and job.fills is None:
            job.fail(
                ValueError(
                    f"[recis.io] column {name!r} in {where}: {nulls} null values "
                    f"(pass nulls='fill' to replace them with a default)"
                )
            )
            return None
        if nulls:
            assert job.fills is not None
            col = pa.chunked_array([fill_nulls(c, job.fills[name]) for c in col.chunks], expected_type)
        columns[name] = col
        if missing is not None:
            columns[f"{name}_missing"] = missing
    return pa.table(columns)


def _failing_column(job: Job, src: Source, piece: int) -> str | None:
    """The first column that fails to decode on its own (only called after a failure, to name it)."""
    for name in job.columns:
        try:
            read_piece(job.fs, src, piece, [name])
        except (OSError, pa.ArrowException):
            return name
    return None


def prepare(job: Job, s: Slice) -> pa.Table | Chunk | None:
    """The decode threads' task: decode, and convert too unless the rows still have to be shuffled."""
    table = decode(job, s)
    return table if table is None or job.window else to_columns(table, job.string_hashes)


def decoded(job: Job) -> Iterator[tuple[Slice, Any]]:
    """Slices in plan order with `prepare`'s result, up to `num_threads + 1` ahead on a thread pool."""
    pool = ThreadPoolExecutor(job.num_threads, thread_name_prefix="recis-io-decode")
    pending: deque[tuple[Slice, Future[Any]]] = deque()
    todo = iter(job.slices)
    try:
        while True:
            while len(pending) <= job.num_threads and (s := next(todo, None)) is not None:
                pending.append((s, pool.submit(prepare, job, s)))
            if not pending:
                return
            s, future = pending.popleft()
            yield s, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def chunks(job: Job) -> Iterator[tuple[Chunk, int, int]]:
    """(columns, base, rows): the shard stream in output order; the cursor after r of its rows is base + r.

    Without shuffle these are the decoded slices. With shuffle, window k holds stream rows
    [k * window, (k + 1) * window) in an order drawn from (seed, epoch, shard, k); rows of skipped
    slices simply leave the window shorter, so a cursor never points past rows not yet seen.
    """
    if not job.window:
        for s, columns in decoded(job):
            if columns is not None:
                yield columns, s.position, s.rows
        return
    if not job.slices:
        return
    start = job.slices[0].position  # a multiple of the window: resumes start at a window
    parts: list[pa.Table] = []
    drop = job.drop

    def emit() -> tuple[Chunk, int, int]:
        nonlocal drop
        rows = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], t) for c, t in job.types.items()})
        order = rng(job.key[0], *job.key[1:], start // job.window).permutation(rows.num_rows)[drop:]
        out = (to_columns(rows.take(order), job.string_hashes), start + drop, len(order))
        drop = 0
        return out

    for s, table in decoded(job):
        at, used = s.position, 0
        while used < s.rows:
            take = min(s.rows - used, start + job.window - at)
            if table is not None:
                parts.append(table.slice(used, take))
            at, used = at + take, used + take
            if at == start + job.window:
                yield emit()
                start, parts = at, []
    if parts:
        yield emit()


def batches(job: Job) -> Iterator[tuple[Batch, int]]:
    """(batch of batch_size rows, cursor after its last row); the last one shorter unless drop_last.

    A batch inside one chunk is a set of zero-copy cuts; only one spanning two chunks is copied.
    """
    parts: list[tuple[Chunk, int, int]] = []
    have = cursor = 0
    for chunk, base, rows in chunks(job):
        used = 0
        while used < rows:
            take = min(job.batch_size - have, rows - used)
            parts.append((chunk, used, used + take))
            have, used, cursor = have + take, used + take, base + used + take
            if have == job.batch_size:
                yield _assemble(parts), cursor
                parts, have = [], 0
    if have and not job.drop_last:
        yield _assemble(parts), cursor


def _assemble(parts: list[tuple[Chunk, int, int]]) -> Batch:
    return {name: join([chunk[name].cut(lo, hi) for chunk, lo, hi in parts]) for name in parts[0][0]}


def produce(job: Job) -> Iterator[tuple[Batch, int]]:
    """Ready batches: tensors and Raggeds viewing Arrow's buffers (pinned if asked), with their cursors."""
    for batch, cursor in batches(job):
        if job.pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        yield batch, cursor


class Prefetcher:
    """Runs an iterator on a daemon thread into a bounded queue; its errors re-raise in the consumer.

    `close()` (called when the consumer stops early) makes the thread stop at its next hand-over and
    closes the iterator, which shuts the decode pool down.
    """

    def __init__(self, make: Callable[[], Iterator[Any]], depth: int):
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), name="recis-io-prefetch", daemon=True)
        self._thread.start()

    def _run(self, make: Callable[[], Iterator[Any]]) -> None:
        items = None
        try:
            items = make()
            for item in items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:
            self._put(("error", e))
        finally:
            if items is not None and hasattr(items, "close"):
                items.close()

    def _put(self, message: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()
