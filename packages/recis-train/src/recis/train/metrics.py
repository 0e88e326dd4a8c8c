"""Streaming evaluation metrics: exact AUC and GAUC, log loss, calibration, MSE, accuracy.

Every metric accumulates batches with `update`, answers with `compute`, and is mergeable across
ranks (`state_dict` -> gather -> `merge`). AUC and GAUC are exact, so they keep the scores seen
(8-20 bytes per example, see `AUC`); `AUC(max_samples=n)` keeps only the latest n, for a running value.
`update` refuses what would silently shift a value: NaN or infinite predictions, and labels outside
{0, 1} for the binary metrics (ValueError naming the metric, the count and the first offender).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def _flat(x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    return x.detach().reshape(-1).to(device="cpu", dtype=dtype)


def _refuse(metric: Metric, expected: str, values: Tensor, bad: Tensor) -> None:
    """ValueError if the mask `bad` over the flat `values` is set: what was expected, how many broke it, the first."""
    count = int(bad.sum())
    if count:
        i = int(bad.nonzero()[0, 0])
        v = values[i].item()
        shown = f"{v:.9g}" if isinstance(v, float) else str(v)
        raise ValueError(
            f"[recis.train] {type(metric).__name__}.update: expected {expected}, got {count} of {len(values)} "
            f"that are not (first: {shown} at index {i})"
        )


def _check_finite(metric: Metric, preds: Tensor) -> None:
    p = _flat(preds)
    _refuse(metric, "finite predictions", p, ~torch.isfinite(p))


def _check_binary(metric: Metric, preds: Tensor, labels: Tensor) -> None:
    """Labels must be 0 or 1 (any dtype) and predictions finite: a NaN would shift AUC or log loss silently."""
    y = labels.detach().reshape(-1).cpu()
    _refuse(metric, "labels in {0, 1}", y, (y != 0) & (y != 1))
    _check_finite(metric, preds)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    """How AUC stores scores: float32 and narrower as float32 (exact), float64 and integers as float64."""
    return torch.float32 if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float64


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype LogLoss clips in: the predictions' own float dtype, else float64 (as sklearn's check_array)."""
    return dtype if dtype in (torch.float16, torch.float32, torch.float64) else torch.float64


def _average_ranks(sorted_scores: Tensor, starts: Tensor | None = None) -> Tensor:
    """1-based ranks of sorted scores with ties sharing their mean rank (ranks restart at `starts`)."""
    n = len(sorted_scores)
    pos = torch.arange(1, n + 1, dtype=torch.float64)
    new_run = torch.ones(n, dtype=torch.bool)
    new_run[1:] = sorted_scores[1:] != sorted_scores[:-1]
    if starts is not None:
        new_run |= starts
    run_id = torch.cumsum(new_run.long(), 0) - 1
    counts = torch.bincount(run_id)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, run_id, pos)
    return (sums / counts)[run_id]


def auc_score(preds: Tensor, labels: Tensor) -> float:
    """ROC AUC of `preds` against binary `labels` (> 0.5 is positive), ties counted half, as
    `sklearn.metrics.roc_auc_score`; NaN when only one class is present.

    Examples:
        >>> auc_score(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.75
    """
    p, y = _flat(preds), _flat(labels) > 0.5
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return math.nan
    order = torch.argsort(p, stable=True)
    ranks = _average_ranks(p[order])
    rank_sum = float(ranks[y[order]].sum())
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def gauc_score(preds: Tensor, labels: Tensor, groups: Tensor) -> float:
    """Impression-weighted mean of per-group AUC; groups with a single class are skipped (NaN if all are).

    Examples:
        >>> preds, labels = torch.tensor([0.9, 0.1, 0.2, 0.7, 0.5]), torch.tensor([1, 0, 1, 0, 1])
        >>> gauc_score(preds, labels, groups=torch.tensor([1, 1, 2, 2, 3]))
        0.5
    """
    p, y, g = _flat(preds), _flat(labels) > 0.5, _flat(groups, torch.int64)
    if len(p) == 0:
        return math.nan
    order = torch.argsort(p, stable=True)
    order = order[torch.argsort(g[order], stable=True)]  # by group, then score
    p, y, g = p[order], y[order], g[order]
    starts = torch.ones(len(g), dtype=torch.bool)
    starts[1:] = g[1:] != g[:-1]
    gid = torch.cumsum(starts.long(), 0) - 1
    first = torch.nonzero(starts).squeeze(1)
    ranks = _average_ranks(p, starts) - first[gid].double()  # within-group ranks
    size = torch.bincount(gid).double()
    pos = torch.zeros(len(size), dtype=torch.float64).index_add_(0, gid, y.double())
    neg = size - pos
    rank_sum = torch.zeros(len(size), dtype=torch.float64).index_add_(0, gid, torch.where(y, ranks, 0.0))
    valid = (pos > 0) & (neg > 0)
    if not bool(valid.any()):
        return math.nan
    auc = (rank_sum[valid] - pos[valid] * (pos[valid] + 1) / 2) / (pos[valid] * neg[valid])
    return float((auc * size[valid]).sum() / size[valid].sum())


class Metric:
    """Base class: `update(preds, labels, groups=None)`, `compute()`, `reset()`, `state_dict()`,
    `load_state_dict()`, `merge(other_state)`."""

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self.merge(state)

    def merge(self, state: dict[str, Any]) -> None:
        """Adds another instance's `state_dict()` (e.g. gathered from another rank)."""
        raise NotImplementedError


class _Sums(Metric):
    """Metrics that are functions of a few running sums."""

    keys: tuple[str, ...] = ()

    def reset(self) -> None:
        self.sums = dict.fromkeys(self.keys, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.sums)

    def merge(self, state: dict[str, Any]) -> None:
        for k in self.keys:
            self.sums[k] += float(state[k])


class LogLoss(_Sums):
    """Mean binary cross-entropy of probabilities, as scikit-learn's `log_loss`: p and 1 - p are
    computed in the predictions' dtype and clipped to [eps, 1 - eps] with eps = `torch.finfo(dtype).eps`
    (2**-23 for the float32 predictions the Trainer evaluates, 2**-52 for float64), then logged in float64.

    Examples:
        >>> m = LogLoss(); m.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])); round(m.compute(), 4)
        0.6931
        >>> m = LogLoss(); m.update(torch.tensor([1.0]), torch.tensor([0])); round(m.compute(), 4)  # -log(2**-23)
        15.9424
    """

    name, keys = "logloss", ("loss", "count")

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        _check_binary(self, preds, labels)
        dtype = _loss_dtype(preds.dtype)
        p, y = _flat(preds, dtype), _flat(labels)
        eps = torch.finfo(dtype).eps
        log_p, log_q = p.clamp(eps, 1 - eps).double().log(), (1 - p).clamp(eps, 1 - eps).double().log()
        self.sums["loss"] += float(-(y * log_p + (1 - y) * log_q).sum())
        self.sums["count"] += len(p)

    def compute(self) -> float:
        return self.sums["loss"] / self.sums["count"] if self.sums["count"] else math.nan


class Calibration(_Sums):
    """Mean prediction over mean label (predicted CTR / actual CTR); 1.0 is calibrated.

    Examples:
        >>> m = Calibration(); m.update(torch.tensor([0.2, 0.4]), torch.tensor([0, 1])); round(m.compute(), 6)
        0.6
    """

    name, keys = "calibration", ("pred", "label")

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        _check_binary(self, preds, labels)
        self.sums["pred"] += float(_flat(preds).sum())
        self.sums["label"] += float(_flat(labels).sum())

    def compute(self) -> float:
        return self.sums["pred"] / self.sums["label"] if self.sums["label"] else math.nan


class MeanSquaredError(_Sums):
    """Mean squared error of regression outputs."""

    name, keys = "mse", ("se", "count")

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        y = _flat(labels)
        _refuse(self, "finite labels", y, ~torch.isfinite(y))
        _check_finite(self, preds)
        self.sums["se"] += float((_flat(preds) - y).square().sum())
        self.sums["count"] += preds.numel()

    def compute(self) -> float:
        return self.sums["se"] / self.sums["count"] if self.sums["count"] else math.nan


class Accuracy(_Sums):
    """Share of rows whose argmax over the last dim of `preds` (B, C) equals the class label."""

    name, keys = "accuracy", ("correct", "count")

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        classes, y = preds.shape[-1], _flat(labels)
        _refuse(
            self, f"labels that are class indices in [0, {classes})", y, ~((y >= 0) & (y < classes) & (y == y.trunc()))
        )
        _check_finite(self, preds)
        hit = preds.detach().argmax(-1).cpu() == y.long()
        self.sums["correct"] += float(hit.sum())
        self.sums["count"] += len(hit)

    def compute(self) -> float:
        return self.sums["correct"] / self.sums["count"] if self.sums["count"] else math.nan


class AUC(Metric):
    """Exact streaming ROC AUC (ties like sklearn). `max_samples` keeps only the latest examples.

    Scores are kept at their input precision (float32 and narrower as float32, float64 and integers
    as float64), so float64 scores 1e-9 apart do not tie; with float32 labels (and int64 groups for
    GAUC) that is 8 bytes per example for the float32 predictions the Trainer evaluates, 12 for
    float64 ones, plus 8 for GAUC's group.

    Examples:
        >>> m = AUC()
        >>> m.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 0]))
        >>> m.update(torch.tensor([0.35, 0.8]), torch.tensor([1, 1]))
        >>> m.compute()
        0.75
    """

    name = "auc"

    def __init__(self, max_samples: int | None = None):
        self.max_samples = max_samples
        super().__init__()

    def reset(self) -> None:
        self._preds: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._groups: list[Tensor] = []
        self._count = 0

    def _append(self, preds: Tensor, labels: Tensor, groups: Tensor | None) -> None:
        self._preds.append(_flat(preds, _score_dtype(preds.dtype)))
        self._labels.append(_flat(labels, torch.float32))
        if groups is not None:
            self._groups.append(_flat(groups, torch.int64))
        self._count += self._preds[-1].numel()
        while self.max_samples is not None and self._count - len(self._preds[0]) >= self.max_samples:
            self._count -= len(self._preds.pop(0))
            self._labels.pop(0)
            if self._groups:
                self._groups.pop(0)

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        _check_binary(self, preds, labels)
        self._append(preds, labels, None)

    def _cat(self, parts: list[Tensor], dtype: torch.dtype) -> Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)

    def compute(self) -> float:
        return auc_score(self._cat(self._preds, torch.float64), self._cat(self._labels, torch.float32))

    def state_dict(self) -> dict[str, Any]:
        state = {"preds": self._cat(self._preds, torch.float64), "labels": self._cat(self._labels, torch.float32)}
        if self._groups:
            state["groups"] = self._cat(self._groups, torch.int64)
        return state

    def merge(self, state: dict[str, Any]) -> None:
        self._append(state["preds"], state["labels"], state.get("groups"))


class GAUC(AUC):
    """Group AUC: impression-weighted mean of per-group (usually per-user) AUC, single-class groups skipped.

    Examples:
        >>> m = GAUC()
        >>> m.update(torch.tensor([0.9, 0.1, 0.2, 0.7]), torch.tensor([1, 0, 1, 0]), groups=torch.tensor([1, 1, 2, 2]))
        >>> m.compute()
        0.5
    """

    name = "gauc"

    def update(self, preds: Tensor, labels: Tensor, groups: Tensor | None = None) -> None:
        if groups is None:
            raise ValueError("GAUC.update: needs groups (e.g. the user ID column), got None")
        _check_binary(self, preds, labels)
        self._append(preds, labels, groups)

    def compute(self) -> float:
        return gauc_score(
            self._cat(self._preds, torch.float64),
            self._cat(self._labels, torch.float32),
            self._cat(self._groups, torch.int64),
        )


def merge_states(metric: Metric, states: list[dict[str, Any]]) -> float:
    """Computes `metric` over several ranks' `state_dict()`s (e.g. from `torch.distributed.all_gather_object`)."""
    metric.reset()
    for s in states:
        metric.merge(s)
    return metric.compute()
