"""Wide & Deep (Cheng et al. 2016): a linear model over sparse (often crossed) features, which
memorizes, beside an MLP over dense embeddings, which generalizes; their logits are summed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .base import MLP, Batch, RankingModel, pooled_width


class WideDeep(RankingModel):
    """Logit = sum of the `wide` features' 1-wide embeddings (a weight per ID, e.g. of a
    `recis.features.Cross` of two columns) + a linear layer over dense columns + MLP(deep features).

    Args:
        wide: features whose EmbeddingSpec is pooled with dim 1 (the wide part); every other
            feature is pooled and feeds the deep MLP.
        hidden: the deep MLP; dropout: in it. features, dense, heads, dense_width: as in `RankingModel`.

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> emb = EmbeddingEngine({"user": EmbeddingSpec(4), "user_x_item": EmbeddingSpec(1)})
        >>> model = WideDeep(emb, wide=["user_x_item"], hidden=(8,))
        >>> model({"user": torch.tensor([1, 2]), "user_x_item": torch.tensor([7, 9])})["label"].shape
        torch.Size([2])
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        wide: Sequence[str],
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
        dense_width: int = 0,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = embedding.specs
        bad = [
            n for n in wide if n not in specs or specs[n].dim != 1 or specs[n].combiner not in ("sum", "mean", "sqrtn")
        ]
        if bad or not wide:
            raise ValueError(f"WideDeep: wide features {bad or '(none)'} need pooled EmbeddingSpecs of dim 1")
        self.wide = list(wide)
        self.deep_fields = list(self.pooled_specs(exclude=self.wide))
        sequences = sorted(set(specs) - set(self.wide) - set(self.deep_fields))
        if sequences:
            raise ValueError(f"WideDeep: deep features must be pooled; {sequences} are sequences")
        if not self.deep_fields:
            raise ValueError(f"WideDeep: needs at least one deep feature besides the wide ones {self.wide}")
        width = sum(pooled_width(specs[n]) for n in self.deep_fields) + dense_width
        self.deep = MLP(width, hidden, dropout, last_activation=True)
        self.heads = self.make_heads(hidden[-1])
        self.wide_dense = nn.Linear(dense_width, 1) if dense_width else None

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        wide = torch.cat([emb[n] for n in self.wide], 1).sum(1)  # (B,)
        parts = [emb[n] for n in self.deep_fields]
        dense = self.dense_input(batch)
        if dense is not None:
            parts.append(dense)
            if self.wide_dense is not None:
                wide = wide + self.wide_dense(dense).squeeze(-1)
        h = self.deep(torch.cat(parts, 1))
        return self.apply_heads(h, wide)
