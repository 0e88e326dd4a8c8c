"""A small model trained deterministically, shared by test_checkpoint.py and the processes it starts.

`python checkpoint_worker.py resume DIR N OUT`: loads the latest checkpoint in DIR, trains N more
steps and writes the losses and table rows to OUT. `python checkpoint_worker.py crash DIR`: trains
and saves (full and delta) forever, until it is killed.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec, Eviction, HashTable, Initializer
from recis.optim import Saver, SparseAdam

IDS = 400  # distinct IDs per feature


class Model(nn.Module):
    def __init__(self, dim: int = 8, max_age: int | None = None):
        super().__init__()
        init = Initializer.uniform(-0.1, 0.1)
        evict = Eviction(max_age=max_age) if max_age else None
        self.emb = EmbeddingEngine(
            {
                "user": EmbeddingSpec(dim, initializer=init, eviction=evict),
                "item": EmbeddingSpec(dim, initializer=init, eviction=evict),  # merged with "user"
                "hist": EmbeddingSpec(4, initializer=init),
            }
        )
        self.mlp = nn.Sequential(nn.Linear(2 * dim + 4, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, batch: dict[str, object]) -> Tensor:
        out = self.emb(batch)
        x = torch.cat([out["user"], out["item"], out["hist"]], dim=1)  # type: ignore[list-item]
        return self.mlp(x).squeeze(1)  # (B,)


def build(dim: int = 8, max_age: int | None = None) -> tuple[Model, SparseAdam, torch.optim.Adam]:
    torch.manual_seed(0)
    model = Model(dim, max_age)
    return model, SparseAdam(model.emb, lr=0.05), torch.optim.Adam(model.mlp.parameters(), lr=0.01)


def batch(step: int, spread: int = IDS) -> dict[str, object]:
    g = torch.Generator().manual_seed(1000 + step)
    lengths = torch.randint(0, 4, (16,), generator=g)
    return {
        "user": torch.randint(0, spread, (16,), generator=g),
        "item": torch.randint(0, spread, (16,), generator=g) * 7919,
        "hist": Ragged.from_lengths(torch.randint(-spread, spread, (int(lengths.sum()),), generator=g), lengths),
        "label": torch.randint(0, 2, (16,), generator=g).float(),
    }


def train(model: Model, sparse: SparseAdam, dense: torch.optim.Adam, steps: range, spread: int = IDS) -> list[float]:
    """One optimizer step per batch; returns the losses (bit-exact on CPU for the same steps)."""
    losses = []
    for step in steps:
        b = batch(step, spread)
        loss = nn.functional.binary_cross_entropy_with_logits(model(b), b["label"])  # type: ignore[arg-type]
        loss.backward()
        sparse.step()
        dense.step()
        dense.zero_grad()
        if model.emb.specs["user"].eviction is not None:
            model.emb.evict()
        losses.append(loss.item())
    return losses


def rows(table: HashTable) -> dict[str, Tensor]:
    """The table's rows sorted by (tag, ID): equal tables give equal dicts whatever their row order."""
    state = table.state_dict()
    order = torch.argsort(state["ids"], stable=True)
    order = order[torch.argsort(state["tags"][order], stable=True)]
    return {k: v[order] for k, v in state.items()}


def all_rows(model: Model) -> dict[str, dict[str, Tensor]]:
    return {name: rows(t) for name, t in model.emb.tables().items()}


def main() -> None:
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "resume":
        steps, out = int(sys.argv[3]), sys.argv[4]
        model, sparse, dense = build()
        extra = Saver(directory, model, optimizers=[sparse, dense]).load()
        done = extra["trainer"]["step"]
        losses = train(model, sparse, dense, range(done, done + steps))
        torch.save({"losses": losses, "rows": all_rows(model), "mlp": model.mlp.state_dict()}, out)
    elif mode == "crash":
        model, sparse, dense = build()
        saver = Saver(directory, model, optimizers=[sparse, dense], keep=2, shards=3, threads=2, chunk_rows=64)
        for step in range(1, 10**6):
            train(model, sparse, dense, range(step - 1, step), spread=20 * IDS)
            saver.save(step, extra={"trainer": {"step": step}}, delta=step % 3 != 1)


if __name__ == "__main__":
    main()
