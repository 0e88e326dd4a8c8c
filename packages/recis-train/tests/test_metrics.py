"""Metrics against brute-force references: pairwise AUC with ties, per-group AUC, log loss; merging; bad input."""

import math

import numpy as np
import pytest
import torch

from recis.embedding import EmbeddingEngine, EmbeddingSpec
from recis.train import Objective
from recis.train.evaluation import score
from recis.train.metrics import AUC, GAUC, Accuracy, Calibration, LogLoss, MeanSquaredError, auc_score, gauc_score
from recis.train.models import LogisticRegression


def pairwise_auc(p, y):
    pos = [a for a, b in zip(p, y, strict=True) if b == 1]
    neg = [a for a, b in zip(p, y, strict=True) if b == 0]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def pairwise_gauc(p, y, g):
    num = den = 0.0
    for user in set(g):
        idx = [i for i, u in enumerate(g) if u == user]
        auc = pairwise_auc([p[i] for i in idx], [y[i] for i in idx])
        if not math.isnan(auc):
            num, den = num + auc * len(idx), den + len(idx)
    return num / den if den else math.nan


@pytest.mark.parametrize("seed", range(8))
def test_auc_matches_pairwise_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 200, (1,), generator=gen))
    p = (torch.randint(0, 7, (n,), generator=gen) / 7).tolist()  # few distinct scores: many ties
    y = torch.randint(0, 2, (n,), generator=gen).tolist()
    expected = pairwise_auc(p, y)
    got = auc_score(torch.tensor(p), torch.tensor(y))
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_auc_known_values():
    assert auc_score(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75  # sklearn's doc example
    assert auc_score(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5
    assert math.isnan(auc_score(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))
    assert math.isnan(auc_score(torch.zeros(0), torch.zeros(0)))


@pytest.mark.parametrize("seed", range(6))
def test_gauc_matches_per_group_pairwise(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 150
    p = (torch.randint(0, 5, (n,), generator=gen) / 5).tolist()
    y = torch.randint(0, 2, (n,), generator=gen).tolist()
    g = torch.randint(-3, 12, (n,), generator=gen).tolist()
    assert gauc_score(torch.tensor(p), torch.tensor(y), torch.tensor(g)) == pytest.approx(pairwise_gauc(p, y, g))


def test_gauc_skips_single_class_groups():
    got = gauc_score(torch.tensor([0.9, 0.1, 0.3, 0.2]), torch.tensor([1, 0, 1, 1]), torch.tensor([1, 1, 2, 2]))
    assert got == 1.0  # group 2 (all positive) is skipped, not counted as 0.5
    assert math.isnan(gauc_score(torch.tensor([0.1]), torch.tensor([1]), torch.tensor([5])))


def test_streaming_equals_one_shot_and_merges_across_ranks():
    gen = torch.Generator().manual_seed(0)
    p, y, g = (
        torch.rand(300, generator=gen),
        torch.randint(0, 2, (300,), generator=gen),
        torch.randint(0, 20, (300,), generator=gen),
    )
    for cls, args in ((AUC, ()), (GAUC, (g,)), (LogLoss, ()), (Calibration, ())):
        whole = cls()
        whole.update(p, y, *args)
        ranks = [cls(), cls(), cls()]
        for i, chunk in enumerate(torch.arange(300).chunk(3)):
            ranks[i].update(p[chunk], y[chunk], *(a[chunk] for a in args))
        merged = cls()
        for r in ranks:
            merged.merge(r.state_dict())
        assert merged.compute() == pytest.approx(whole.compute())
        restored = cls()
        restored.load_state_dict(whole.state_dict())
        assert restored.compute() == pytest.approx(whole.compute())


def test_logloss_and_calibration_reference():
    p, y = torch.tensor([0.9, 0.2, 0.6, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0, 1.0])
    m = LogLoss()
    m.update(p, y)
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(1 - np.finfo(np.float64).eps)) / 4
    assert m.compute() == pytest.approx(expected, rel=1e-9)
    c = Calibration()
    c.update(p, y)
    assert c.compute() == pytest.approx(2.7 / 2.0)


def test_running_auc_keeps_latest():
    m = AUC(max_samples=4)
    m.update(torch.tensor([0.9, 0.1]), torch.tensor([0, 1]))  # dropped once 4 newer samples arrived
    m.update(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]))
    m.update(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    assert m.compute() == 1.0


def sklearn_log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """scikit-learn's current `log_loss` for 1-D probabilities, by hand: [1 - p, p] in p's dtype,
    clipped to [eps, 1 - eps] with eps = np.finfo(p.dtype).eps; `xlogy` of int labels runs in float64."""
    eps = np.finfo(p.dtype).eps
    both = np.clip(np.stack([1 - p, p], axis=1), eps, 1 - eps).astype(np.float64)
    onehot = np.stack([1 - y, y], axis=1)
    return float(-(onehot * np.log(both)).sum(axis=1).mean())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logloss_clips_at_the_prediction_dtype_eps_like_sklearn(dtype):
    p = torch.tensor([1.0, 0.0, 0.5, 0.1, 0.999, 1e-20], dtype=dtype)  # exact 0 and 1: where eps matters
    y = torch.tensor([0, 1, 1, 0, 1, 1])
    m = LogLoss()
    m.update(p, y)
    assert m.compute() == pytest.approx(sklearn_log_loss(p.numpy(), y.numpy()), rel=1e-12)


def test_logloss_of_trainer_predictions_uses_float32_eps():
    preds = Objective("click").predictions(torch.tensor([200.0, -200.0]))  # what evaluation hands the metric
    assert preds.dtype == torch.float32 and preds.tolist() == [1.0, 0.0]
    m = LogLoss()
    m.update(preds, torch.tensor([0, 1]))
    assert m.compute() == pytest.approx(-math.log(np.finfo(np.float32).eps), rel=1e-12)


def numpy_auc(p: np.ndarray, y: np.ndarray) -> float:
    """Rank-sum AUC in float64 with average ranks for ties (the reference for the streaming metric)."""
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = int(y.sum())
    neg = len(y) - pos
    return (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)


def test_streaming_auc_and_gauc_keep_float64_precision():
    p = torch.tensor([0.5, 0.5 + 1e-9, 0.25, 0.25 + 1e-12], dtype=torch.float64)  # equal in float32
    y = torch.tensor([0, 1, 0, 1])
    auc, gauc = AUC(), GAUC()
    auc.update(p, y)
    gauc.update(p, y, groups=torch.tensor([1, 1, 2, 2]))
    assert auc.compute() == numpy_auc(p.numpy(), y.numpy()) == 0.75
    assert gauc.compute() == 1.0
    merged = AUC()
    merged.merge(auc.state_dict())
    assert merged.compute() == 0.75


BINARY_METRICS = [(AUC, {}), (GAUC, {"groups": torch.tensor([1, 1, 2, 2])}), (LogLoss, {}), (Calibration, {})]


@pytest.mark.parametrize("cls, kw", BINARY_METRICS, ids=[c.__name__ for c, _ in BINARY_METRICS])
@pytest.mark.parametrize(
    "labels, first",
    [
        ([1.0, math.nan, 0.0, math.nan], "nan at index 1"),
        ([0, 1, 2, 1], "2 at index 2"),
        ([0.0, 0.7, 1, 0], "0.699999988"),
    ],
)
def test_binary_metrics_refuse_labels_outside_0_1(cls, kw, labels, first):
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*labels in \{{0, 1\}}.*{first}") as err:
        cls().update(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor(labels), **kw)
    assert "of 4" in str(err.value)


@pytest.mark.parametrize("cls, kw", BINARY_METRICS, ids=[c.__name__ for c, _ in BINARY_METRICS])
def test_binary_metrics_refuse_non_finite_predictions(cls, kw):
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*finite predictions.*2 of 4.*nan at index 1"):
        cls().update(torch.tensor([0.1, math.nan, 0.3, math.nan]), torch.tensor([0, 1, 0, 1]), **kw)


def test_regression_and_class_metrics_refuse_bad_values():
    with pytest.raises(ValueError, match=r"MeanSquaredError.*finite labels.*1 of 2.*nan at index 0"):
        MeanSquaredError().update(torch.tensor([0.5, 1.0]), torch.tensor([math.nan, 1.0]))
    with pytest.raises(ValueError, match=r"MeanSquaredError.*finite predictions.*inf at index 1"):
        MeanSquaredError().update(torch.tensor([0.5, math.inf]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"Accuracy.*class indices in \[0, 3\).*nan at index 1"):
        Accuracy().update(torch.rand(2, 3), torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match=r"Accuracy.*class indices in \[0, 3\).*3 at index 0"):
        Accuracy().update(torch.rand(2, 3), torch.tensor([3, 1]))
    with pytest.raises(ValueError, match=r"Accuracy.*finite predictions"):
        Accuracy().update(torch.tensor([[0.1, math.nan]]), torch.tensor([1]))


def test_evaluation_with_nan_labels_fails_instead_of_reporting():
    model = LogisticRegression(EmbeddingEngine({"item": EmbeddingSpec(1)}))
    batch = {"item": torch.tensor([1, 2, 3]), "label": torch.tensor([1.0, math.nan, 0.0])}
    with pytest.raises(ValueError, match=r"AUC.*labels in \{0, 1\}.*nan at index 1"):
        score(model, [batch], [Objective("label")])
