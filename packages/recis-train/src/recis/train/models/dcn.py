"""DCN-v2 (Wang et al. 2021): explicit feature crosses of bounded degree beside a deep MLP.

Each cross layer computes x_{l+1} = x0 * (W_l x_l + b_l) + x_l over the concatenated input x0
(pooled embeddings and dense columns), so L layers model every feature interaction up to degree
L + 1 with O(L * d^2) parameters (or O(L * d * r) with a low-rank W = U V^T). The cross stack and
the deep MLP run in parallel; their outputs are concatenated before the heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .base import MLP, Batch, RankingModel, pooled_width


class CrossLayer(nn.Module):
    """x0 * (W x + b) + x, W full (d x d) or low rank (U V^T, rank r).

    Examples:
        >>> CrossLayer(6, rank=2)(torch.ones(3, 6), torch.ones(3, 6)).shape
        torch.Size([3, 6])
    """

    def __init__(self, dim: int, rank: int | None = None):
        super().__init__()
        out = nn.Linear(dim if rank is None else rank, dim)
        nn.init.zeros_(out.bias)
        self.w = out if rank is None else nn.Sequential(nn.Linear(dim, rank, bias=False), out)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        return x0 * self.w(x) + x


class DCNv2(RankingModel):
    """Cross network + deep MLP over every pooled feature and the dense columns.

    Args:
        cross_layers: how many `CrossLayer`s; rank: their W's rank (None: full).
        hidden: the deep MLP; dropout: in it. features, dense, heads, dense_width: as in `RankingModel`.

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> model = DCNv2(EmbeddingEngine({"user": EmbeddingSpec(4), "item": EmbeddingSpec(4)}), hidden=(8,))
        >>> model({"user": torch.tensor([1, 2]), "item": torch.tensor([3, 4])})["label"].shape
        torch.Size([2])
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
        dense_width: int = 0,
        cross_layers: int = 3,
        rank: int | None = None,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = self.pooled_specs()
        if len(specs) != len(embedding.specs):
            sequences = sorted(set(embedding.specs) - set(specs))
            raise ValueError(f"DCNv2: every feature must be pooled (sum/mean/sqrtn/tile); {sequences} are sequences")
        self.fields = list(specs)
        width = sum(pooled_width(s) for s in specs.values()) + dense_width
        self.cross = nn.ModuleList(CrossLayer(width, rank) for _ in range(cross_layers))
        self.deep = MLP(width, hidden, dropout, last_activation=True)
        self.heads = self.make_heads(width + hidden[-1])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        parts = [emb[n] for n in self.fields]
        dense = self.dense_input(batch)
        if dense is not None:
            parts.append(dense)
        x0 = torch.cat(parts, 1)  # (B, d)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        h = torch.cat([x, self.deep(x0)], 1)
        return self.apply_heads(h)
