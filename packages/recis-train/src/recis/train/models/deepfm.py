"""DeepFM / DLRM-style ranking for Criteo-like data: many pooled categorical fields plus numeric columns.

Numeric columns go through a bottom MLP to one more D-wide field (DLRM); the fields meet in a
factorization machine (first-order weights plus pairwise dot products, O(F * D)) and a deep MLP,
whose outputs are summed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine, EmbeddingSpec

from .base import MLP, Batch, RankingModel


class DeepFM(RankingModel):
    """FM (first-order weights + pairwise interactions) + deep MLP over pooled fields of one width.

    Logit = sum of the fields' first-order weights + a linear layer over the dense columns
    + the FM's pairwise dot products + the deep MLP's head. Each ID's first-order weight is one
    more coordinate of its embedding row (one lookup gives both), so with `first_order` every
    field has dim D + 1: `DeepFM.first_order_specs(specs)` adds it to specs written for D (the
    `deepfm` config type does).

    Args:
        embedding: every feature pooled (sum/mean/sqrtn) with the same dim: D + 1 with
            `first_order` (the last coordinate is the weight; the first D are the factors), else D.
        first_order: include the first-order term (default); without it the logit is FM + deep only.
        dense_width: total width of the `dense` columns (0 without them); they become a field via `bottom`.
        hidden: the deep MLP; bottom: the dense columns' MLP (its last size is forced to D).

    Examples:
        >>> specs = DeepFM.first_order_specs({f"C{i}": EmbeddingSpec(4, table="cat") for i in range(3)})
        >>> emb = EmbeddingEngine(specs)  # rows of 5: 4 factors and the first-order weight
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
        first_order: bool = True,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = self.pooled_specs()
        if len(specs) != len(embedding.specs) or any(s.combiner == "tile" for s in specs.values()):
            raise ValueError("DeepFM: every feature must be pooled (combiner sum/mean/sqrtn)")
        dims = {s.dim for s in specs.values()}
        if len(dims) != 1:
            raise ValueError(f"DeepFM: every feature needs the same dim, got {sorted(dims)}")
        self.fields = list(specs)
        self.first_order = first_order
        self.dim = dims.pop() - first_order  # the factors' width D
        if self.dim < 1:
            raise ValueError(
                f"DeepFM: with first_order the embeddings need dim >= 2 (D factors + the weight), got {self.dim + 1}"
            )
        if self.dense_columns and dense_width < 1:
            raise ValueError("DeepFM: dense columns given, so dense_width must be their total width (>= 1)")
        self.bottom = MLP(dense_width, [*bottom[:-1], self.dim], last_activation=True) if dense_width else None
        self.linear = nn.Linear(dense_width, 1) if first_order and dense_width else None
        num_fields = len(self.fields) + (1 if self.bottom is not None else 0)
        self.deep = MLP(num_fields * self.dim, hidden, dropout, last_activation=True)
        self.heads = self.make_heads(hidden[-1])

    @staticmethod
    def first_order_specs(specs: Mapping[str, EmbeddingSpec]) -> dict[str, EmbeddingSpec]:
        """`specs` with one more coordinate per row, for the first-order weight."""
        return {n: dataclasses.replace(s, dim=s.dim + 1) for n, s in specs.items()}

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        e = torch.stack([emb[n] for n in self.fields], 1)  # (B, F, D [+ 1])
        v = e[..., : self.dim]  # the factors
        logit = e[..., self.dim :].sum((1, 2)) if self.first_order else None  # (B,) the fields' weights
        dense = self.dense_input(batch)
        if dense is not None:
            if self.bottom is not None:
                v = torch.cat([v, self.bottom(dense).unsqueeze(1)], 1)
            if self.linear is not None and logit is not None:
                logit = logit + self.linear(dense).squeeze(-1)
        fm = 0.5 * (v.sum(1).square() - v.square().sum(1)).sum(1)  # (B,) pairwise interactions
        x = self.deep(v.flatten(1))  # (B, hidden[-1])
        return self.apply_heads(x, fm if logit is None else fm + logit)
