"""The compiled kernels by area (`common`, `embedding`, `features`, `optim`, and `gpu` when the
core was built with CUDA, else None): the one way in to `_C`.

Each function, and each method of each class, first sizes the core's thread pool to the wanted
count (`torch.get_num_threads()` unless pinned by `recis.core.set_num_threads`), so no caller can
forget it; the check costs about a microsecond a call. Contiguous CPU tensors go to the kernel as
DLPack capsules (`_capsule`); a call whose arguments nanobind must convert (another dtype, a
strided view) falls back to passing the tensors. Type checkers see the `_C` stubs.

Examples:
    >>> import torch
    >>> from recis.core import kernels
    >>> unique, index = kernels.embedding.unique_rows(torch.tensor([5, 2, 5, -1]), 8)
    >>> unique.tolist(), index.tolist()
    ([2, 5, -1], [1, 0, 1, 2])
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from . import _C
from .threads import apply_thread_count

_to_dlpack = torch._C._to_dlpack


def _capsule(arg: Any) -> Any:
    """A contiguous CPU tensor (or a list of them, Nones among them) as a DLPack capsule: nanobind reads a capsule
    directly, where a tensor costs a call of the Python-level `Tensor.__dlpack__` (about 2 us, as
    much as a small kernel). Anything else passes as it is."""
    if type(arg) is torch.Tensor:
        if arg.device.type == "cpu" and not arg.requires_grad and arg.is_contiguous():
            return _to_dlpack(arg)
        return arg
    if type(arg) is list and any(type(a) is torch.Tensor for a in arg):  # (None entries pass as they are)
        return [_capsule(a) for a in arg]
    return arg


def _with_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        apply_thread_count()
        packed = [_capsule(a) for a in args]
        packed_kw = {k: _capsule(v) for k, v in kwargs.items()}
        try:
            return fn(*packed, **packed_kw)
        except TypeError:
            # A capsule cannot be converted (dtype, layout) the way nanobind converts a tensor. The
            # kernels raise TypeError only from nanobind's argument conversion, before they run
            # (kernel authors: keep it so), so a call that sent capsules is made again with tensors.
            if all(p is a for p, a in zip(packed, args, strict=True)) and all(
                packed_kw[k] is v for k, v in kwargs.items()
            ):
                raise
            return fn(*args, **kwargs)

    return call


def _area(module: types.ModuleType) -> types.ModuleType:
    """`module` with every function wrapped, and every class subclassed with its methods wrapped."""
    area = types.ModuleType(f"{__name__}.{module.__name__.rsplit('.', 1)[-1]}", module.__doc__)
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if isinstance(value, type):
            methods = {k: _with_threads(v) for k, v in vars(value).items() if callable(v) and not k.startswith("__")}
            value = type(name, (value,), {"__module__": area.__name__, "__doc__": value.__doc__, **methods})
        elif callable(value):
            value = _with_threads(value)
        setattr(area, name, value)
    return area


if TYPE_CHECKING:
    from ._C import common, embedding, features, optim

    gpu: Any  # its stubs exist only in CUDA builds
else:
    common, embedding, features, optim = (_area(m) for m in (_C.common, _C.embedding, _C.features, _C.optim))
    gpu = _area(_C.gpu) if hasattr(_C, "gpu") else None


def stream(device: Any) -> int:
    """The current CUDA stream of `device` as the integer the `gpu` kernels take."""
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def on_gpu(*tensors: Any) -> bool:
    """Whether the `gpu` kernels exist and every tensor given is on a CUDA device."""
    return gpu is not None and all(t.is_cuda for t in tensors if t is not None)


__all__ = ["common", "embedding", "features", "gpu", "on_gpu", "optim", "stream"]
