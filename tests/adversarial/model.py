"""A small model whose checkpoints the adversarial cases save, damage and load, and the state
that says whether a load restored it exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec, Eviction, Initializer
from recis.optim import Saver, SparseAdam


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        init = Initializer.uniform(-0.1, 0.1)
        self.emb = EmbeddingEngine(
            {
                "user": EmbeddingSpec(8, initializer=init, eviction=Eviction(max_age=2)),
                "hist": EmbeddingSpec(4, initializer=init, combiner="mean"),
            }
        )
        self.mlp = nn.Linear(12, 1)

    def forward(self, batch: dict[str, Any]) -> Tensor:
        out = self.emb(batch)
        return self.mlp(torch.cat([out["user"], out["hist"]], 1)).squeeze(1)  # (B,)


def build() -> tuple[Model, SparseAdam, torch.optim.Adam]:
    torch.manual_seed(0)
    model = Model()
    return model, SparseAdam(model.emb, lr=0.05), torch.optim.Adam(model.mlp.parameters(), lr=0.01)


def train(model: Model, sparse: SparseAdam, dense: torch.optim.Adam, steps: range) -> None:
    """Deterministic steps: batch k is a function of k (users drift, so old rows get evicted)."""
    for step in steps:
        g = torch.Generator().manual_seed(step)
        lengths = torch.randint(0, 4, (32,), generator=g)
        batch = {
            "user": torch.randint(0, 300, (32,), generator=g) + 150 * step,
            "hist": Ragged.from_lengths(torch.randint(-(2**62), 2**62, (int(lengths.sum()),), generator=g), lengths),
        }
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), torch.ones(32))
        loss.backward()
        sparse.step()
        dense.step()
        dense.zero_grad()
        model.emb.evict()


def saver(directory: Path, model: Model, sparse: SparseAdam, dense: torch.optim.Adam, **kw: Any) -> Saver:
    return Saver(directory, model, optimizers=[sparse, dense], **({"shards": 2, "chunk_rows": 128} | kw))


def state(model: Model) -> dict[str, Tensor]:
    """Every table row (sorted by tag and ID, so row order does not matter) and every dense tensor."""
    out = {f"mlp.{k}": v.clone() for k, v in model.mlp.state_dict().items()}
    for name, table in model.emb.tables().items():
        rows = table.state_dict()
        order = torch.argsort(rows["ids"], stable=True)
        order = order[torch.argsort(rows["tags"][order], stable=True)]
        out |= {f"{name}.{k}": v[order] for k, v in rows.items()}
    return out


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def load(directory: Path, path: Path | None = None, verify: bool = True) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Loads into a fresh model: (extra, state)."""
    model, sparse, dense = build()
    extra = saver(directory, model, sparse, dense).load(path, verify=verify)
    return extra, state(model)
