"""The sparse optimizers' row updates in torch ops, for tables kept on a device (`DeviceTable`):
the twin of the core's fused per-row updates (cpp/src/optim/sparse_optim.cc), formula by formula.

Each update reads the touched rows, their slots and their reduced gradients, computes in float32
in the core's operation order, and writes the rows back; results match the core's to float
rounding (sums over a row may associate differently).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from recis.core import kernels
from recis.embedding import DeviceTable

_SLOTS = {  # per kind, the slots in the order the kernels take them
    "sgd": (),
    "adagrad": ("adagrad.sum",),
    "rowwise_adagrad": ("rowwise_adagrad.sum",),
    "adam": ("adam.m", "adam.v"),
    "adam_tf": ("adam.m", "adam.v"),
    "ftrl": ("ftrl.z", "ftrl.n"),
}


def sparse_update(table: DeviceTable, kind: str, config: Any, rows: Tensor, grad: Tensor) -> None:
    """Applies `kind`'s update to distinct `rows` (-1 skipped) with their gradients (n, D), in place.

    `config` carries the core's `OptConfig` fields (lr, betas, eps, weight decay, ..., step, grad_scale).
    """
    _check(kind, config)
    rows = rows.to(device=table.device, dtype=torch.int64)
    table.check_rows(rows, "sparse_update")
    g_in = grad.to(device=table.device, dtype=torch.float32)
    if not len(rows):
        return
    slots = [table.slots[name] for name in _SLOTS[kind]]
    if table.use_kernels and kernels.on_gpu(table.embeddings):  # the kernel skips the -1 rows itself
        config_dict = {k: getattr(config, k) for k in _CONFIG} | _constants(kind, config)
        kernels.gpu.sparse_update(kind, config_dict, table.embeddings, *slots, *[None] * (2 - len(slots)),
                                  rows.contiguous(), g_in.contiguous(), kernels.stream(table.device))  # fmt: skip
        return
    keep = rows >= 0
    rows, g_in = rows[keep], g_in[keep]
    w = table.embeddings[rows]
    state = [s[rows] for s in slots]
    _update(kind, config, w, state, g_in)
    table.embeddings[rows] = w
    for s, value in zip(slots, state, strict=True):
        s[rows] = value


_CONFIG = ("lr", "beta1", "beta2", "eps", "weight_decay", "l1", "l2", "ftrl_beta", "grad_scale", "decoupled")


def _constants(kind: str, c: Any) -> dict[str, float]:
    """The per-step constants the core's RowUpdater computes in double and stores as float."""
    step = float(c.step)
    out = {"step_size": 0.0, "sqrt_bias2": 1.0, "decay": _f32(1.0 - c.lr * c.weight_decay) if c.decoupled else 1.0}
    if kind == "adam":
        out["step_size"] = _f32(c.lr / (1.0 - math.pow(c.beta1, step)))
        out["sqrt_bias2"] = _f32(math.sqrt(1.0 - math.pow(c.beta2, step)))
    elif kind == "adam_tf":
        out["step_size"] = _f32(c.lr * math.sqrt(1.0 - math.pow(c.beta2, step)) / (1.0 - math.pow(c.beta1, step)))
    elif kind == "adagrad":
        out["step_size"] = _f32(c.lr / (1.0 + (step - 1.0) * c.lr_decay))
    return out


def _check(kind: str, c: Any) -> None:
    """The core's RowUpdater checks, with its messages."""
    if kind not in _SLOTS:
        raise ValueError(f"sparse_update: unknown optimizer '{kind}'")
    if c.step < 1:
        raise ValueError(f"sparse_update: step must be >= 1, got {c.step}")
    if c.decoupled and kind not in ("adam", "adam_tf"):
        raise ValueError("sparse_update: decoupled weight decay is for the Adam kinds only")
    if kind == "ftrl" and c.weight_decay != 0.0:
        raise ValueError("sparse_update: FTRL takes l1/l2, not weight_decay")


def _f32(x: float) -> float:
    """A double rounded to float32, as the core stores its per-step constants."""
    return float(torch.tensor(x, dtype=torch.float32))


def _update(kind: str, c: Any, w: Tensor, state: list[Tensor], gi: Tensor) -> None:
    """One update of rows w (n, D) in place, with their slots `state`; `gi` the raw gradients."""
    k = _constants(kind, c)
    l2 = 0.0 if c.decoupled else c.weight_decay
    if kind == "sgd":
        w -= c.lr * (gi * c.grad_scale + l2 * w)
    elif kind == "adagrad":
        s = state[0]
        g = gi * c.grad_scale + l2 * w
        s += g * g
        w -= k["step_size"] * (g / (s.sqrt() + c.eps))
    elif kind == "rowwise_adagrad":
        s = state[0]
        g = gi * c.grad_scale + l2 * w
        s += (g * g).sum(1, keepdim=True) / w.shape[1]
        w -= (c.lr / (s.sqrt() + c.eps)) * g
    elif kind == "adam":
        m, v = state
        g = gi * c.grad_scale + l2 * w
        m += (1.0 - c.beta1) * (g - m)
        v.mul_(c.beta2).add_((1.0 - c.beta2) * g * g)
        w.mul_(k["decay"]).sub_(k["step_size"] * (m / (v.sqrt() * (1.0 / k["sqrt_bias2"]) + c.eps)))
    elif kind == "adam_tf":
        m, v = state
        g = gi * c.grad_scale + l2 * w
        m += (g - m) * (1.0 - c.beta1)
        v += (g * g - v) * (1.0 - c.beta2)
        w.mul_(k["decay"]).sub_(k["step_size"] * m / (v.sqrt() + c.eps))
    else:  # ftrl
        z, n = state
        g = gi * c.grad_scale
        n_new = n + g * g
        sigma = (n_new.sqrt() - n.sqrt()) / c.lr
        z += g - sigma * w
        n.copy_(n_new)
        shrunk = z - torch.copysign(torch.full_like(z, c.l1), z)
        w.copy_(torch.where(z.abs() <= c.l1, 0.0, -shrunk / ((c.ftrl_beta + n_new.sqrt()) / c.lr + c.l2)))
