"""Hostile cases run in forked children under a timeout, and what happened to each, classified.

A case that crashes (a signal) or hangs (past its timeout) takes down only its child; the parent
records it. Outcomes: "correct" (worked, right result), "clear error" (refused with the error the
layer promises, naming what and where), "unclear error" (any other exception), "wrong" (worked,
wrong result: silent corruption), "crash", "hang", "data loss" (a checkpoint that was there is
gone or damaged). `RECIS_FUZZ=long` (`make fuzz`) multiplies the number of cases.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

LONG = os.environ.get("RECIS_FUZZ", "quick") == "long"
GOOD = ("correct", "clear error")
TALLY: dict[str, Counter[str]] = {}  # area -> outcome -> count, printed after the run
EXAMPLES: dict[tuple[str, str], str] = {}  # (area, bad outcome) -> the first case's description


def cases(quick: int, long: int) -> int:
    """How many cases an area runs: `quick` under `make test`, `long` under `make fuzz`."""
    return long if LONG else quick


def isolated(fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> tuple[str, Any]:
    """Runs fn(*args) in a forked child. Returns ("ok", its result), ("raised", (type name, message,
    traceback)), ("crash", how the child ended) or ("hang", seconds)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        code = 0
        try:
            torch.set_num_threads(1)  # no OpenMP pool inherited across fork
            out: Any = ("ok", fn(*args))
        except BaseException as e:  # everything goes to the parent
            out = ("raised", (type(e).__name__, str(e), traceback.format_exc()))
        try:
            data = pickle.dumps(out)
        except Exception as e:
            data, code = pickle.dumps(("raised", ("PicklingError", str(e), ""))), 0
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
        os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hang", timeout
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "crash", f"signal {os.WTERMSIG(status)}"
    if not chunks:
        return "crash", f"exit {os.WEXITSTATUS(status)} without a result"
    return pickle.loads(b"".join(chunks))


def record(area: str, outcome: str, case: str) -> None:
    TALLY.setdefault(area, Counter())[outcome] += 1
    EXAMPLES.setdefault((area, outcome), case)


def assert_all_good(area: str, also: tuple[str, ...] = ()) -> None:
    """Fails naming the first case of each outcome of `area` that is not good (or in `also`)."""
    bad = {k: v for k, v in TALLY.get(area, Counter()).items() if k not in GOOD + also}
    assert not bad, f"{area}: {dict(bad)}; e.g. " + "; ".join(
        f"{outcome}: {EXAMPLES[(area, outcome)]}" for outcome in bad
    )


def summary_lines() -> list[str]:
    order = ["correct", "clear error", "valid edit", "unclear error", "wrong", "crash", "hang", "data loss"]
    lines = []
    for area, counts in TALLY.items():
        parts = [f"{counts[k]} {k}" for k in order if counts[k]]
        lines.append(f"{area}: {sum(counts.values())} cases: {', '.join(parts)}")
    return lines


class KillAt:
    """In a child about to save: SIGKILL itself at the n-th I/O step (n = 0 only counts them).

    Steps: each file opened for writing, directory made, rename (or renameat2 exchange), delete,
    fsync, and each tensor appended to a shard.
    """

    EVENTS = frozenset(
        {"os.rename", "os.replace", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "ctypes.call_function"}
    )

    def __init__(self, n: int):
        self.n, self.seen, self.armed = n, 0, False
        import sys

        from recis.optim import checkpoint, safetensors_stream

        sys.addaudithook(self._audit)
        fsync, write = os.fsync, safetensors_stream.ShardWriter.write

        def counted_fsync(fd: int) -> None:
            self.step("fsync")
            fsync(fd)

        def counted_write(writer: Any, name: str, t: torch.Tensor) -> str:
            self.step("tensor")
            return write(writer, name, t)

        checkpoint.os.fsync = counted_fsync  # type: ignore[attr-defined]  # the child's own module copy
        safetensors_stream.ShardWriter.write = counted_write  # type: ignore[method-assign]

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        if event == "open":
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
            ):
                self.step(event)
        elif event in self.EVENTS:
            self.step(event)

    def step(self, what: str) -> None:
        if not self.armed:
            return
        self.seen += 1
        if self.seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)
