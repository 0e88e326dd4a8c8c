"""Metrics against brute-force references: pairwise AUC with ties, per-group AUC, log loss; merging."""

import math

import pytest
import torch

from recis.train.metrics import AUC, GAUC, Calibration, LogLoss, auc_score, gauc_score


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
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(1 - 1e-15)) / 4
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
