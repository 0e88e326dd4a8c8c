"""`Windows`: the time-partitioned directories of an online stream, in order, optionally waiting for new ones.

A window is a directory matching a pattern under the root (`dt=*/hour=*`); it is complete once its
marker file exists. Windows go strictly in order: an incomplete window holds back every later one,
because training on hour 10 before hour 9 is finished would be training on the future.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs  # type: ignore[import-untyped]

from .sources import filesystem_for


@dataclass(frozen=True)
class Window:
    """One partition: `key` is its path relative to the root (e.g. "dt=2024-05-01/hour=07"), `path` its full path."""

    key: str
    path: str


def natural_key(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: hour=9 before hour=10."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", key) if part)


class Windows:
    """Iterates the complete windows under `root` in natural order of their keys.

    Args:
        root: directory (or URL) holding the partitions.
        pattern: the partition directories relative to `root`, one glob component per level.
        marker: file whose presence marks a window complete; None treats every matching directory as complete.
        wait: after the last complete window, poll for new ones instead of stopping.
        poll_interval: seconds between polls while waiting.
        timeout: stop waiting after this many seconds without a new window (None: wait forever).
        start_after: key of the last window already consumed (to resume); later keys only.
        filesystem: a pyarrow or fsspec filesystem for `root`.

    Examples:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for hour in ("9", "10", "11"):
        ...     (root / "dt=2024-05-01" / f"hour={hour}").mkdir(parents=True)
        >>> for hour in ("9", "10"):
        ...     (root / "dt=2024-05-01" / f"hour={hour}" / "_SUCCESS").touch()
        >>> [w.key for w in Windows(str(root), "dt=*/hour=*")]
        ['dt=2024-05-01/hour=9', 'dt=2024-05-01/hour=10']
    """

    def __init__(
        self,
        root: str,
        pattern: str = "*",
        *,
        marker: str | None = "_SUCCESS",
        wait: bool = False,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        start_after: str | None = None,
        filesystem: Any = None,
    ):
        if poll_interval <= 0:
            raise ValueError(f"[recis.io] poll_interval must be > 0, got {poll_interval}")
        self._fs, self._root = filesystem_for(root, filesystem)
        self._root = self._root.rstrip("/")
        self.pattern = pattern.strip("/")
        self.marker, self.wait, self.poll_interval, self.timeout = marker, wait, poll_interval, timeout
        self.last = start_after
        """Key of the last window handed out (what to pass as `start_after` when resuming)."""

    def pending(self) -> list[tuple[Window, bool]]:
        """Windows after `last`, in order, each with whether it is complete."""
        level = [self._root]
        for component in self.pattern.split("/"):  # one listing per level, never the files inside windows
            selectors = [pafs.FileSelector(d, allow_not_found=True) for d in level]
            infos = [i for sel in selectors for i in self._fs.get_file_info(sel)]
            level = [
                i.path
                for i in infos
                if i.type == pafs.FileType.Directory and fnmatch.fnmatchcase(i.base_name, component)
            ]
        windows = []
        for path in level:
            key = path[len(self._root) + 1 :]
            if self.last is None or natural_key(key) > natural_key(self.last):
                windows.append(Window(key, path))
        windows.sort(key=lambda w: natural_key(w.key))
        return [(w, self._complete(w)) for w in windows]

    def _complete(self, window: Window) -> bool:
        if self.marker is None:
            return True
        return self._fs.get_file_info(f"{window.path}/{self.marker}").type == pafs.FileType.File

    def __iter__(self) -> Iterator[Window]:
        waited_since = time.monotonic()
        while True:
            progressed = False
            for window, complete in self.pending():
                if not complete:
                    break  # strict order: later windows wait for this one
                self.last = window.key
                progressed = True
                yield window
            if progressed:
                waited_since = time.monotonic()
                continue  # new windows may have appeared meanwhile
            if not self.wait or (self.timeout is not None and time.monotonic() - waited_since >= self.timeout):
                return
            time.sleep(self.poll_interval)
