"""DeepFM / DLRM-style ranking for Criteo-like data: many pooled categorical fields plus numeric columns.

Numeric columns go through a bottom MLP to one more D-wide field (DLRM); the fields meet in a
factorization machine (pairwise dot products, O(F * D)) and a deep MLP, whose outputs are summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .base import MLP, Batch, RankingModel


class DeepFM(RankingModel):
    """FM + deep MLP over pooled fields of one embedding width.

    Args:
        embedding: every feature pooled (sum/mean/sqrtn) with the same dim D.
        dense_width: total width of the `dense` columns (0 without them); they become a field via `bottom`.
        hidden: the deep MLP; bottom: the dense columns' MLP (its last size is forced to D).

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> emb = EmbeddingEngine({f"C{i}": EmbeddingSpec(4, table="cat") for i in range(3)})
        >>> model = DeepFM(emb, dense=["I1"], dense_width=1, hidden=(8,))
        >>> batch = {f"C{i}": torch.tensor([i, i + 3]) for i in range(3)} | {"I1": torch.ones(2)}
        >>> model(batch)["label"].shape
        torch.Size([2])
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
        dense_width: int = 0,
        hidden: Sequence[int] = (256, 128),
        bottom: Sequence[int] = (64,),
        dropout: float = 0.0,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = self.pooled_specs()
        if len(specs) != len(embedding.specs) or any(s.combiner == "tile" for s in specs.values()):
            raise ValueError("DeepFM: every feature must be pooled (combiner sum/mean/sqrtn)")
        dims = {s.dim for s in specs.values()}
        if len(dims) != 1:
            raise ValueError(f"DeepFM: every feature needs the same dim, got {sorted(dims)}")
        self.fields = list(specs)
        self.dim = dims.pop()
        if self.dense_columns and dense_width < 1:
            raise ValueError("DeepFM: dense columns given, so dense_width must be their total width (>= 1)")
        self.bottom = MLP(dense_width, [*bottom[:-1], self.dim], last_activation=True) if dense_width else None
        num_fields = len(self.fields) + (1 if self.bottom is not None else 0)
        self.deep = MLP(num_fields * self.dim, hidden, dropout, last_activation=True)
        self.heads = self.make_heads(hidden[-1])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        fields = [emb[n] for n in self.fields]  # (B, D) each
        dense = self.dense_input(batch)
        if self.bottom is not None and dense is not None:
            fields.append(self.bottom(dense))
        v = torch.stack(fields, 1)  # (B, F, D)
        fm = 0.5 * (v.sum(1).square() - v.square().sum(1)).sum(1)  # (B,) pairwise interactions
        x = self.deep(v.flatten(1))  # (B, hidden[-1])
        return self.apply_heads(x, fm)
