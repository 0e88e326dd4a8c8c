"""The core's threads: how many (`torch.get_num_threads()` until set explicitly) and which.

The core's loops run on torch's OpenMP team when torch loaded an OpenMP runtime (the usual Linux
build): torch's ops and ours then share the same warm threads instead of two pools competing for
the cores (OpenMP's idle workers spin for milliseconds after each op). `RECIS_OPENMP=0` in the
environment keeps the core on its own threads.
"""

from __future__ import annotations

import os

import torch

from ._C import common as _C

_pinned: int | None = None


def backend() -> str:
    """`"openmp"` when the core's loops run on torch's OpenMP team, else `"pool"` (its own threads)."""
    return "openmp" if _C.on_openmp() else "pool"


def set_num_threads(n: int | None) -> None:
    """Pins the number of threads the core's kernels use; `None` follows torch again.

    Args:
        n: threads including the caller (>= 1), or None to follow `torch.get_num_threads()`.

    Examples:
        >>> import recis.core
        >>> recis.core.set_num_threads(2)
        >>> recis.core.num_threads()
        2
    """
    global _pinned
    if n is not None and n < 1:
        raise ValueError(f"set_num_threads: expected n >= 1 or None, got {n}")
    _pinned = n
    apply_thread_count()


def num_threads() -> int:
    """Threads the core's kernels use now (the calling thread included)."""
    apply_thread_count()
    return int(_C.num_threads())


def apply_thread_count() -> None:
    """Resizes the core's pool to the wanted count if that changed (`recis.core.kernels` calls it
    before every kernel; cheap)."""
    wanted = _pinned if _pinned is not None else torch.get_num_threads()
    if wanted != _C.num_threads():
        _C.set_num_threads(wanted)


if os.environ.get("RECIS_OPENMP", "1") != "0":
    _C.attach_openmp()
