"""The demo generator: realistic shape (power-law IDs, histories) and a planted, learnable signal."""

import json

import pyarrow.parquet as pq
import torch

from recis.train.config import build
from recis.train.demo import config, generate
from recis.train.metrics import auc_score


def test_generator_plants_a_signal(tmp_path):
    meta = generate(tmp_path, rows=4000, test_rows=2000, users=300, items=1000, categories=20, files=2)
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    train = pq.read_table(tmp_path / "train")
    assert train.num_rows == 4000 and len(list((tmp_path / "train").iterdir())) == 2
    counts = torch.bincount(torch.from_numpy(train["item_id"].to_numpy() % 1_000_003)).sort(descending=True).values
    assert counts[:10].sum() > 5 * counts[-500:].sum()  # popular items dominate (power law)
    lengths = train["hist_item_ids"].combine_chunks().value_lengths().to_numpy()
    assert lengths.max() <= 30 and (lengths == 0).any() and lengths.mean() > 3
    test = pq.read_table(tmp_path / "test")
    prob, label = torch.tensor(test["click_prob"].to_numpy()), torch.tensor(test["label"].to_numpy())
    assert 0.7 < meta["oracle_auc"] == auc_score(prob, label) < 0.95


def test_the_seed_sets_the_runs_randomness(tmp_path):
    generate(tmp_path / "data", rows=500, test_rows=100, users=50, items=100, files=1)

    def weights(seed: int) -> torch.Tensor:
        run = build(config(str(tmp_path / "data"), str(tmp_path / "run"), seed=seed))
        return torch.cat([p.detach().flatten() for p in run.model.parameters()])

    torch.testing.assert_close(weights(1), weights(1), rtol=0, atol=0)
    assert not torch.equal(weights(0), weights(1))
    seeded = config("d", "r", seed=3)
    assert seeded["train"]["seed"] == seeded["data"]["seed"] == seeded["embeddings"]["user_id"]["seed"] == 3
    assert "seed" not in config("d", "r")["embeddings"]["user_id"]  # seed 0: every default as it was


def test_dense_adam_is_fused_unless_told_otherwise(tmp_path):
    """The config's dense Adam/AdamW take torch's fused kernel by default; `fused` or `foreach`
    given in the config wins, and other optimizers keep torch's default."""
    generate(tmp_path / "data", rows=200, test_rows=100, users=20, items=50, files=1)

    def dense(**options: object) -> torch.optim.Optimizer:
        cfg = config(str(tmp_path / "data"), str(tmp_path / "run"))
        cfg["optim"]["dense"] |= options
        return build(cfg).dense_optimizer

    assert dense().defaults["fused"] is True
    assert dense(type="adamw").defaults["fused"] is True
    assert not dense(fused=False).defaults["fused"] and dense(foreach=True).defaults["foreach"] is True
    assert not dense(foreach=True).defaults["fused"]
    assert not dense(type="sgd", lr=0.1).defaults.get("fused")


def test_dense_adam_falls_back_when_fused_is_refused(tmp_path, monkeypatch, caplog):
    generate(tmp_path / "data", rows=200, test_rows=100, users=20, items=50, files=1)

    class Picky(torch.optim.Adam):  # as torch answers parameters its fused kernel cannot take
        def __init__(self, params, fused: bool | None = None, **kwargs: object) -> None:
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", Picky)
    with caplog.at_level("INFO", logger="recis.train"):
        opt = build(config(str(tmp_path / "data"), str(tmp_path / "run"))).dense_optimizer
    assert isinstance(opt, Picky) and not opt.defaults["fused"]
    assert "optim.dense: torch's default adam, not the fused one (`fused=True` requires" in caplog.text
