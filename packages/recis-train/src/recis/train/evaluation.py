"""Scoring a model on a dataset: every objective's metrics plus the weighted loss, in eval mode.

Eval-mode embedding lookups are read-only (unknown IDs read zeros and get no row), so evaluation
never grows the tables or moves their eviction clocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .objectives import Objective, total_loss
from .pipeline import InputPipeline

Batch = dict[str, Any]


def batch_rows(batch: Batch) -> int:
    """Rows in a batch (the first tensor's length, or a Ragged's row count)."""
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return len(v)
        if hasattr(v, "num_rows"):
            return int(v.num_rows)
    return 0


@torch.no_grad()
def score(
    model: nn.Module,
    data: Iterable[Batch],
    objectives: Sequence[Objective],
    group_column: str | None = None,
    prefetch: int = 4,
    bf16: bool = False,
    max_batches: int | None = None,
) -> dict[str, float]:
    """ "<objective>.<metric>" for each objective (AUC, GAUC with a group column, log loss and
    calibration for BCE; MSE; accuracy) and "loss" (the weighted total, per row). Leaves the model in eval mode.

    Example:
        >>> from recis.embedding import EmbeddingEngine, EmbeddingSpec
        >>> from recis.train.models import LogisticRegression
        >>> model = LogisticRegression(EmbeddingEngine({"item": EmbeddingSpec(1)}))
        >>> batch = {"item": torch.tensor([1, 2]), "label": torch.tensor([1, 0])}
        >>> sorted(score(model, [batch], [Objective("label")]))
        ['label.auc', 'label.calibration', 'label.logloss', 'loss']
    """
    metrics = {o.key: o.metrics(group_column is not None) for o in objectives}
    loss_sum, rows = 0.0, 0
    model.eval()
    for i, (batch, _) in enumerate(InputPipeline(data, getattr(model, "transform", None), prefetch)):
        if max_batches is not None and i >= max_batches:
            break
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(batch)
        loss, _ = total_loss(list(objectives), outputs, batch)
        n = batch_rows(batch)
        loss_sum, rows = loss_sum + float(loss) * n, rows + n
        groups = batch.get(group_column) if group_column else None
        for obj in objectives:
            preds = obj.predictions(outputs[obj.head_name])
            for m in metrics[obj.key].values():
                m.update(preds, batch[obj.label], groups)
    result = {f"{k}.{name}": m.compute() for k, ms in metrics.items() for name, m in ms.items()}
    result["loss"] = loss_sum / rows if rows else math.nan
    return result
