"""Logistic regression over the same hashed features: the baseline a deep model must beat.

Every feature gets a 1-wide embedding (pooled; sequences mean-pooled), so the logit is a bias plus
one learned weight per ID present; dense columns enter linearly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .base import Batch, RankingModel


class LogisticRegression(RankingModel):
    """Logit = bias + sum of the features' 1-wide embeddings (+ a linear layer over dense columns).

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> model = LogisticRegression(EmbeddingEngine({"user": EmbeddingSpec(1), "item": EmbeddingSpec(1)}))
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
    ):
        super().__init__(embedding, features, dense, heads)
        bad = [n for n, s in embedding.specs.items() if s.dim != 1 or s.combiner not in ("sum", "mean", "sqrtn")]
        if bad:
            raise ValueError(f"LogisticRegression: features {bad} need pooled EmbeddingSpecs of dim 1")
        if any(w != 1 for w in self.head_widths.values()):
            raise ValueError("LogisticRegression: every head must have width 1")
        self.bias = nn.ParameterDict({h: nn.Parameter(torch.zeros(1)) for h in self.head_widths})
        self.linear = nn.Linear(dense_width, len(self.head_widths)) if dense_width else None

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        logit = torch.stack([emb[n] for n in self.embedding.specs], 0).sum(0).squeeze(-1)  # (B,)
        dense = self.dense_input(batch)
        extra = self.linear(dense) if self.linear is not None and dense is not None else None  # (B, H)
        out = {}
        for i, (name, bias) in enumerate(self.bias.items()):
            out[name] = logit + bias + (extra[:, i] if extra is not None else 0.0)
        return out
