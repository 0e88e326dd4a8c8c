"""Training with tables kept on a device (`EmbeddingSpec(device=...)`: `DeviceTable` and the torch
twins of the sparse updates) against the core's host tables: the same model, batches and
optimizers give the same losses and the same table rows, for every sparse optimizer, pooled and
sequence features, fused and two-phase updates; checkpoints move between the two."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec, Eviction, Initializer
from recis.optim import (
    Saver,
    SparseAdagrad,
    SparseAdam,
    SparseAdamTF,
    SparseAdamW,
    SparseFtrl,
    SparseRowWiseAdagrad,
    SparseSGD,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
OPTIMIZERS = {
    "sgd": lambda e, f: SparseSGD(e, lr=0.1, weight_decay=0.01, fused=f),
    "adagrad": lambda e, f: SparseAdagrad(e, lr=0.1, lr_decay=0.01, fused=f),
    "rowwise_adagrad": lambda e, f: SparseRowWiseAdagrad(e, lr=0.1, fused=f),
    "adam": lambda e, f: SparseAdam(e, lr=0.05, fused=f),
    "adamw": lambda e, f: SparseAdamW(e, lr=0.05, weight_decay=0.1, fused=f),
    "adam_tf": lambda e, f: SparseAdamTF(e, lr=0.05, fused=f),
    "ftrl": lambda e, f: SparseFtrl(e, lr=0.1, l1=0.001, l2=0.01, fused=f),
}


class Model(nn.Module):
    def __init__(self, device: str | None):
        super().__init__()
        common = {"initializer": Initializer.uniform(-0.1, 0.1), "device": device}
        self.emb = EmbeddingEngine(
            {
                "user": EmbeddingSpec(8, eviction=Eviction(max_age=3), **common),
                "item": EmbeddingSpec(8, combiner="mean", min_count=2, **common),
                "hist": EmbeddingSpec(8, table="item", combiner=None, max_len=3, min_count=2, **common),
            }
        )
        torch.manual_seed(0)
        self.mlp = nn.Linear(3 * 8, 1)

    def forward(self, batch: dict) -> torch.Tensor:
        out = self.emb(batch)
        hist = out["hist"].values.sum(1).to(out["user"].device)  # (B, D)
        x = torch.cat([out["user"], out["item"], hist], 1)
        return self.mlp.to(x.device)(x).squeeze(1)


def batch(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    lengths = torch.randint(0, 5, (32,), generator=g)
    return {
        "user": torch.randint(0, 60, (32,), generator=g) + 20 * step,
        "item": Ragged.from_lengths(torch.randint(-40, 40, (int(lengths.sum()),), generator=g), lengths),
        "hist": Ragged.from_lengths(torch.randint(-40, 40, (int(lengths.sum()),), generator=g), lengths),
    }


def train(device: str | None, kind: str, fused: bool, steps: int = 6) -> tuple[list[float], Model]:
    model = Model(device)
    sparse = OPTIMIZERS[kind](model.emb, fused)
    dense = torch.optim.SGD(model.mlp.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        b = batch(step)
        pred = model(b)
        loss = nn.functional.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
        loss.backward()
        sparse.step()
        dense.step()
        dense.zero_grad()
        model.emb.evict()
        losses.append(loss.item())
    return losses, model


def rows(model: Model) -> dict:
    out = {}
    for name, table in model.emb.tables().items():
        state = table.state_dict()
        order = torch.argsort(state["ids"], stable=True)
        order = order[torch.argsort(state["tags"][order].long(), stable=True)]
        out |= {f"{name}/{k}": v[order].cpu() for k, v in state.items()}
    return out


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_device_tables_train_as_the_host_tables(kind, fused, device="cpu"):
    host_losses, host = train(None, kind, fused)
    device_losses, on_device = train(device, kind, fused)
    assert device_losses == pytest.approx(host_losses, rel=1e-5, abs=1e-6)
    want, got = rows(host), rows(on_device)
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k].to(want[k].dtype), want[k], rtol=1e-5, atol=1e-6, msg=k)


def test_checkpoints_move_between_host_and_device_tables(tmp_path):
    _, host = train(None, "adam", False, steps=3)
    Saver(tmp_path, host, optimizers=[]).save(3)
    on_device = Model("cpu")
    SparseAdam(on_device.emb)  # the slots must exist to load them
    Saver(tmp_path, on_device, optimizers=[]).load(optimizer=False)
    want, got = rows(host), rows(on_device)
    for k in want:
        if "slot." not in k:
            assert torch.equal(got[k].to(want[k].dtype), want[k]), k


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("kind", ["adam", "rowwise_adagrad"])
def test_on_a_gpu_device_tables_train_as_the_host_tables(kind):
    test_device_tables_train_as_the_host_tables(kind, fused=False, device="cuda")
