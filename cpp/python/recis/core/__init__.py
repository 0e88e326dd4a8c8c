"""RecIS core: the compiled kernels and the `Ragged` batch type.

The extension (`_C`) links no libtorch: tensors cross as DLPack arrays, so the same build serves
any torch >= 2.4. Importing checks that torch is new enough and that `_C` matches this package.
Other packages call the kernels through `recis.core.kernels`, never `_C` itself.
"""

from __future__ import annotations

from importlib import metadata

import torch

if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 4):
    raise ImportError(f"recis.core needs torch >= 2.4, found {torch.__version__}")

from . import _C

__version__: str = _C.version

try:
    _dist_version = metadata.version("recis-core")
except metadata.PackageNotFoundError:  # running from a build tree
    _dist_version = __version__
if _dist_version != __version__:
    raise ImportError(
        f"recis.core: the compiled extension is version {__version__} but the installed package is "
        f"{_dist_version}; rebuild it (make install)"
    )

from . import kernels
from .memory import keep_freed_memory
from .ragged import Padded, Ragged, broadcast_rows, softmax_pool
from .threads import num_threads, set_num_threads


def version_line(dist: str) -> str:
    """What a command's `--version` prints: the version of the wheel `dist` that holds it, of
    recis-core and of torch.

    Examples:
        >>> version_line("recis-core") == f"recis-core {__version__}, torch {torch.__version__}"
        True
    """
    try:
        own = metadata.version(dist)
    except metadata.PackageNotFoundError:
        own = "unknown"
    core = "" if dist == "recis-core" else f", recis-core {__version__}"
    return f"{dist} {own}{core}, torch {torch.__version__}"


__all__ = [
    "Padded",
    "Ragged",
    "__version__",
    "broadcast_rows",
    "keep_freed_memory",
    "kernels",
    "num_threads",
    "set_num_threads",
    "softmax_pool",
    "version_line",
]
