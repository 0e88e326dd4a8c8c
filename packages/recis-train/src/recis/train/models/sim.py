"""SIM-style ranking over very long behaviour sequences (Pi et al. 2020): search the user's long
history for the events relevant to the candidate, then run target attention over only those.

The search is "hard" by category (events whose category equals the candidate's: a raw ID
column beside the history, matched before any embedding) or "soft" by embedding similarity (the
events whose embeddings have the largest dot product with the candidate's). Either keeps the
latest/best `top_k` events, so the attention costs O(top_k) per row however long the history is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recis.core import Ragged
from recis.embedding import EmbeddingEngine

from .base import MLP, Batch, RankingModel, pooled_width, sequence_of
from .din import TargetAttention


class SIM(RankingModel):
    """Pooled features + target attention over the `top_k` searched events -> MLP -> heads.

    Args:
        embedding: embeds `history` as a sequence (combiner=None, with the `max_len` to search)
            and `target` pooled with the same dim (usually the same table).
        history: the history feature.
        target: the candidate feature.
        search: "category": keep events whose `category[0]` ID (a list column aligned with the
            history, not embedded) equals the row's `category[1]` ID; "similarity": keep the
            events with the largest dot product between their and the candidate's embeddings.
        category: (history category column, candidate category column) for search="category".
        top_k: events kept per row (the latest matches, or the best scores).
        hidden: the top MLP.
        attention_hidden: the attention scorer's MLP.
        dropout: in the top MLP.
        features: as in `RankingModel`.
        dense: as in `RankingModel`.
        heads: as in `RankingModel`.
        dense_width: as in `RankingModel`.

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> emb = EmbeddingEngine({"item": EmbeddingSpec(4, table="items"),
        ...                        "hist": EmbeddingSpec(4, table="items", combiner=None, max_len=100)})
        >>> model = SIM(emb, "hist", "item", search="category", category=("hist_cat", "cat"), top_k=2, hidden=(8,))
        >>> batch = {"item": torch.tensor([5, 6]), "cat": torch.tensor([1, 2]),
        ...          "hist": Ragged.from_list([[5, 7, 8], []]), "hist_cat": Ragged.from_list([[1, 2, 1], []])}
        >>> model(batch)["label"].shape
        torch.Size([2])
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        history: str,
        target: str,
        search: str = "category",
        category: Sequence[str] | None = None,
        top_k: int = 50,
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
        dense_width: int = 0,
        hidden: Sequence[int] = (200, 80),
        attention_hidden: Sequence[int] = (64, 32),
        dropout: float = 0.0,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = embedding.specs
        hist = specs.get(history)
        if hist is None or hist.combiner is not None or hist.max_len is None:
            raise ValueError(f"SIM: history {history!r} needs an EmbeddingSpec with combiner=None and max_len")
        if target not in specs or specs[target].combiner is None or specs[target].dim != hist.dim:
            raise ValueError(f"SIM: target {target!r} needs a pooled EmbeddingSpec of dim {hist.dim}")
        if search not in ("category", "similarity"):
            raise ValueError(f"SIM: search must be 'category' or 'similarity', got {search!r}")
        if search == "category" and (category is None or len(category) != 2):
            raise ValueError(
                "SIM: search='category' needs category=(history category column, candidate category column)"
            )
        if top_k < 1:
            raise ValueError(f"SIM: top_k must be >= 1, got {top_k}")
        self.history, self.target, self.search, self.top_k = history, target, search, top_k
        self.category = tuple(category) if category is not None else None
        self.max_len, self.side = hist.max_len, hist.side
        self.pooled = list(self.pooled_specs(exclude=[history]))
        self.attention = TargetAttention(hist.dim, attention_hidden)
        width = sum(pooled_width(specs[n]) for n in self.pooled) + hist.dim + dense_width
        self.top = MLP(width, hidden, dropout, last_activation=True)
        self.heads = self.make_heads(hidden[-1])

    def searched(self, batch: Batch, target: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The kept events: values (B, k, D) and mask (B, k), k = min(top_k, L)."""
        if self.search == "category":
            assert self.category is not None
            cats = batch[self.category[0]]
            if not isinstance(cats, Ragged):
                got = type(cats).__name__
                raise TypeError(
                    f"SIM: category column {self.category[0]!r} must be a list column (a Ragged), got {got}"
                )
            history = batch.get(self.history)
            if isinstance(history, Ragged) and not torch.equal(history.lengths(), cats.lengths()):
                row = int((history.lengths() != cats.lengths()).nonzero()[0, 0])
                raise ValueError(
                    f"SIM: row {row} has {int(history.lengths()[row])} events in {self.history!r} but "
                    f"{int(cats.lengths()[row])} categories in {self.category[0]!r}; the lists must align"
                )
            # cut and padded as the engine cut the history, so position j is the same event in both
            padded = cats.truncate(self.max_len, side=self.side).to_dense(-1, self.max_len)
            wanted = torch.as_tensor(batch[self.category[1]]).reshape(-1, 1)
            match = (padded.values[:, : mask.shape[1]] == wanted) & mask
            position = torch.arange(1, mask.shape[1] + 1, device=mask.device)
            score = torch.where(match, position.to(values.dtype), torch.zeros((), dtype=values.dtype))  # latest first
        else:
            match = mask
            sim = (values * target.unsqueeze(1)).sum(-1)
            score = torch.where(mask, sim, torch.full((), float("-inf"), dtype=values.dtype))
        k = min(self.top_k, mask.shape[1])
        best = score.topk(k, dim=1).indices  # (B, k)
        kept = values.gather(1, best.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        return kept, match.gather(1, best)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        hist = sequence_of(emb[self.history], self.history)  # (B, L, D), (B, L)
        target = emb[self.target]
        parts = [emb[n] for n in self.pooled]
        if hist.values.shape[1] == 0:
            parts.append(torch.zeros_like(target))
        else:
            values, mask = self.searched(batch, target, hist.values, hist.mask)
            parts.append(self.attention(target, values, mask))
        dense = self.dense_input(batch)
        if dense is not None:
            parts.append(dense)
        h = self.top(torch.cat(parts, 1))
        return self.apply_heads(h)
