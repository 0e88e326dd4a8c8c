"""Scoring a model on a dataset: every objective's metrics plus the weighted loss, in eval mode.

Eval-mode embedding lookups are read-only (unknown IDs read zeros and get no row), so evaluation
never grows the tables or moves their eviction clocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .distributed import Ranks
from .objectives import Objective, total_loss
from .pipeline import InputPipeline, check_labels

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
    ranks: Ranks | None = None,
    device: str | torch.device = "cpu",
    on_batch: Callable[[], None] | None = None,
) -> dict[str, float]:
    """ "<objective>.<metric>" for each objective (AUC, GAUC with a group column, log loss and
    calibration for BCE; MSE; accuracy) and "loss" (the weighted total, per row). Leaves the model in eval mode.

    `on_batch` is called after each batch (a progress bar).

    With several `ranks`, each scores its own shard of the data (all ranks step together until one
    runs out) and the metrics are merged over ranks, so every rank returns the same result.

    Examples:
        >>> from recis.embedding import EmbeddingEngine, EmbeddingSpec
        >>> from recis.train.models import LogisticRegression
        >>> model = LogisticRegression(EmbeddingEngine({"item": EmbeddingSpec(1)}))
        >>> batch = {"item": torch.tensor([1, 2]), "label": torch.tensor([1, 0])}
        >>> sorted(score(model, [batch], [Objective("label")]))
        ['label.auc', 'label.calibration', 'label.logloss', 'loss']
    """
    metrics = {o.key: o.metrics(group_column is not None) for o in objectives}
    loss_sum, rows = 0.0, 0
    ranks = ranks or Ranks()
    model.eval()
    items = iter(InputPipeline(data, getattr(model, "transform", None), prefetch, device=device))
    for _ in range(max_batches if max_batches is not None else 2**62):
        item = next(items, None)
        if not ranks.all_have(item is not None):  # sharded lookups need every rank in each step
            break
        assert item is not None
        batch = item[0]
        check_labels(objectives, batch)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(batch)
        loss, _ = total_loss(list(objectives), outputs, batch)
        n = batch_rows(batch)
        loss_sum, rows = loss_sum + float(loss) * n, rows + n
        groups = batch.get(group_column) if group_column else None
        for obj in objectives:
            preds = obj.predictions(outputs[obj.head_name])
            for m in metrics[obj.key].values():
                m.update(preds, batch[obj.label], groups)
        if on_batch is not None:
            on_batch()
    if ranks.world > 1:
        states = ranks.gather(([[m.state_dict() for m in ms.values()] for ms in metrics.values()], loss_sum, rows))
        for r, (theirs, their_loss, their_rows) in enumerate(states):
            if r == ranks.rank:
                continue
            for ms, s in zip(metrics.values(), theirs, strict=True):
                for m, state in zip(ms.values(), s, strict=True):
                    m.merge(state)
            loss_sum, rows = loss_sum + their_loss, rows + their_rows
    result = {f"{k}.{name}": m.compute() for k, ms in metrics.items() for name, m in ms.items()}
    result["loss"] = loss_sum / rows if rows else math.nan
    return result
