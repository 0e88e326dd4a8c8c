"""Objectives: one label, one model head, one loss and its metrics each; the training loss is their weighted sum.

A model returns `{head: logits}`; an `Objective` names the head and the batch label it is scored
against, so adding a task is a config line, not a new training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import AUC, GAUC, Accuracy, Calibration, LogLoss, MeanSquaredError, Metric

Loss = Literal["bce", "mse", "softmax"]
LOSSES = ("bce", "mse", "softmax")


@dataclass(frozen=True)
class Objective:
    """One training target.

    Args:
        label: batch column holding the target (0/1 for "bce", a float for "mse", a class index for "softmax").
        loss: "bce" (logits (B,) or (B, 1)), "mse" (predictions (B,)), "softmax" (logits (B, C)).
        head: the model output it reads (default: `label`).
        weight: its share of the total loss.
        name: how logs and metrics call it (default: `label`).

    Examples:
        >>> ctr = Objective("click", weight=1.0)
        >>> loss = ctr.loss_fn(torch.zeros(4), torch.tensor([1, 0, 1, 0]))
        >>> round(float(loss), 4)
        0.6931
    """

    label: str
    loss: Loss = "bce"
    head: str | None = None
    weight: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"Objective {self.label!r}: loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.weight >= 0:
            raise ValueError(f"Objective {self.label!r}: weight must be >= 0, got {self.weight}")

    @property
    def key(self) -> str:
        return self.name or self.label

    @property
    def head_name(self) -> str:
        return self.head or self.label

    def loss_fn(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss of one head's output (cast to float32, also under bf16 autocast) against its labels."""
        out = output.float()
        if self.loss == "softmax":
            return F.cross_entropy(out.reshape(len(target), -1), target.long().reshape(-1))
        out = out.reshape(-1)
        if out.shape != target.reshape(-1).shape:
            raise ValueError(
                f"Objective {self.key!r}: head {self.head_name!r} gave {tuple(output.shape)} for "
                f"{len(target)} labels; a {self.loss} head must give one value per row"
            )
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(out, target.reshape(-1).float())
        return F.mse_loss(out, target.reshape(-1).float())

    def predictions(self, output: Tensor) -> Tensor:
        """What the metrics see: probabilities for "bce", values for "mse", class probabilities for "softmax"."""
        out = output.detach().float()
        if self.loss == "bce":
            return torch.sigmoid(out.reshape(-1))
        if self.loss == "softmax":
            return torch.softmax(out.reshape(out.shape[0], -1), -1)
        return out.reshape(-1)

    def metrics(self, with_groups: bool) -> dict[str, Metric]:
        """Fresh evaluation metrics for this objective (GAUC only when a group column is known)."""
        if self.loss == "bce":
            found: dict[str, Metric] = {"auc": AUC(), "logloss": LogLoss(), "calibration": Calibration()}
            if with_groups:
                found["gauc"] = GAUC()
            return found
        if self.loss == "mse":
            return {"mse": MeanSquaredError()}
        return {"accuracy": Accuracy()}


def total_loss(
    objectives: list[Objective], outputs: dict[str, Tensor], batch: dict[str, object]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the objectives' losses, and each one (detached) by objective name."""
    parts: dict[str, Tensor] = {}
    total: Tensor | None = None
    for obj in objectives:
        if obj.head_name not in outputs:
            raise KeyError(f"Objective {obj.key!r}: the model has no head {obj.head_name!r} (heads: {sorted(outputs)})")
        target = batch.get(obj.label)
        if not isinstance(target, Tensor):
            raise KeyError(
                f"Objective {obj.key!r}: the batch has no label column {obj.label!r} (keys: {sorted(batch)})"
            )
        loss = obj.loss_fn(outputs[obj.head_name], target)
        parts[obj.key] = loss.detach()
        total = loss * obj.weight if total is None else total + loss * obj.weight
    if total is None:
        raise ValueError("total_loss: no objectives")
    return total, parts
