"""MMoE (Ma et al. 2018): several objectives share a pool of expert MLPs; each objective mixes the
experts with a softmax gate of its own and scores the mix with its own tower, so related tasks
share what helps them and conflicting ones can keep apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .base import MLP, Batch, RankingModel, pooled_width, sequence_of


class MMoE(RankingModel):
    """Experts over [pooled features, mean-pooled sequences, dense columns]; a gate and a tower per head.

    Args:
        experts: how many expert MLPs.
        expert_hidden: each expert's sizes.
        tower: each head's MLP (its last size is the head's width).
        features: as in `RankingModel`.
        dense: as in `RankingModel`.
        heads: as in `RankingModel`.
        dense_width: as in `RankingModel`.
        dropout: in the experts.

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> model = MMoE(EmbeddingEngine({"user": EmbeddingSpec(4), "item": EmbeddingSpec(4)}),
        ...              heads=["click", "like"], experts=3, expert_hidden=(8,), tower=(4,))
        >>> out = model({"user": torch.tensor([1, 2]), "item": torch.tensor([3, 4])})
        >>> sorted(out), out["like"].shape
        (['click', 'like'], torch.Size([2]))
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
        dense_width: int = 0,
        experts: int = 4,
        expert_hidden: Sequence[int] = (128, 64),
        tower: Sequence[int] = (32,),
        dropout: float = 0.0,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = embedding.specs
        self.pooled = list(self.pooled_specs())
        self.sequences = [n for n in specs if specs[n].combiner is None]
        width = sum(pooled_width(specs[n]) for n in self.pooled) + sum(specs[n].dim for n in self.sequences)
        width += dense_width
        if experts < 1:
            raise ValueError(f"MMoE: experts must be >= 1, got {experts}")
        self.experts = nn.ModuleList(MLP(width, expert_hidden, dropout, last_activation=True) for _ in range(experts))
        self.gates = nn.ModuleDict({h: nn.Linear(width, experts) for h in self.head_widths})
        self.towers = nn.ModuleDict({h: MLP(expert_hidden[-1], [*tower, w]) for h, w in self.head_widths.items()})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        parts = [emb[n] for n in self.pooled]
        for n in self.sequences:  # masked mean over the history
            seq = sequence_of(emb[n], n)
            count = seq.mask.sum(1, keepdim=True).clamp(min=1)
            parts.append((seq.values * seq.mask.unsqueeze(-1)).sum(1) / count)
        dense = self.dense_input(batch)
        if dense is not None:
            parts.append(dense)
        x = torch.cat(parts, 1)
        e = torch.stack([expert(x) for expert in self.experts], 1)  # (B, E, H)
        out = {}
        for name, gate in self.gates.items():
            mix = (torch.softmax(gate(x), -1).unsqueeze(-1) * e).sum(1)  # (B, H)
            y = self.towers[name](mix)
            out[name] = y.squeeze(-1) if y.shape[-1] == 1 else y
        return out
