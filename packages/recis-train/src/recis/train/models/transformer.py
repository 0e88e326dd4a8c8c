"""A Transformer sequence ranker: causal self-attention over the history with the candidate as last token.

The candidate sits after the history, so under a causal mask it attends to every event while
events never see the candidate; long histories cost O(L^2) in `scaled_dot_product_attention`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine

from .base import MLP, Batch, RankingModel, pooled_width, sequence_of


class CausalBlock(nn.Module):
    """Pre-norm Transformer block: causal multi-head self-attention (with a key padding mask) and an MLP.

    Examples:
        >>> CausalBlock(8, 2)(torch.zeros(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CausalBlock: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = MLP(dim, [4 * dim, dim])

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, -1)  # (B, T, D) each
        q, k, v = (
            z.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2) for z in (q, k, v)
        )  # (B, H, T, Dh)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # (T, T)
        mask = causal & valid[:, None, None, :]  # (B, 1, T, T): earlier, non-padded keys
        mask = mask | torch.eye(t, dtype=torch.bool, device=x.device)  # every query sees itself: no empty rows
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))  # (B, T, D)
        return x + self.mlp(self.norm2(x))


class TransformerRanker(RankingModel):
    """History (+ positions) and the candidate as the last token -> causal blocks -> the candidate's
    output, with the other pooled features, -> MLP -> heads.

    Args:
        embedding: embeds `sequence` with combiner=None and `max_len` set, `target` pooled with the same dim.
        sequence: the history feature.
        target: the candidate feature.
        num_layers: Transformer blocks.
        num_heads: attention heads per block.

    Examples:
        >>> from recis.core import Ragged
        >>> from recis.embedding import EmbeddingSpec
        >>> emb = EmbeddingEngine({"item": EmbeddingSpec(8, table="items"),
        ...                        "hist": EmbeddingSpec(8, table="items", combiner=None, max_len=4)})
        >>> model = TransformerRanker(emb, "hist", "item", hidden=(16,))
        >>> model({"item": torch.tensor([5, 6]), "hist": Ragged.from_list([[5, 7, 8], []])})["label"].shape
        torch.Size([2])
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        sequence: str,
        target: str,
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
        num_layers: int = 2,
        num_heads: int = 2,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        dense_width: int = 0,
    ):
        super().__init__(embedding, features, dense, heads)
        specs = embedding.specs
        seq = specs.get(sequence)
        if seq is None or seq.combiner is not None or seq.max_len is None:
            raise ValueError(
                f"TransformerRanker: sequence {sequence!r} needs an EmbeddingSpec with combiner=None and max_len"
            )
        if target not in specs or specs[target].combiner is None or specs[target].dim != seq.dim:
            raise ValueError(f"TransformerRanker: target {target!r} needs a pooled EmbeddingSpec of dim {seq.dim}")
        self.sequence, self.target, self.max_len = sequence, target, seq.max_len
        self.pooled = list(self.pooled_specs(exclude=[sequence]))
        self.position = nn.Parameter(torch.zeros(seq.max_len + 1, seq.dim))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(seq.dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(seq.dim)
        width = seq.dim + sum(pooled_width(specs[n]) for n in self.pooled) + dense_width
        self.top = MLP(width, hidden, dropout, last_activation=True)
        self.heads = self.make_heads(hidden[-1])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embedding(batch)
        hist = sequence_of(emb[self.sequence], self.sequence)  # values (B, L, D), mask (B, L)
        target = emb[self.target]  # (B, D)
        x = torch.cat([hist.values, target.unsqueeze(1)], 1)  # (B, L + 1, D)
        valid = torch.cat([hist.mask, torch.ones_like(hist.mask[:, :1])], 1)  # (B, L + 1)
        x = x + self.position[: x.shape[1]]
        for block in self.blocks:
            x = block(x, valid)
        parts = [self.norm(x[:, -1]), *(emb[n] for n in self.pooled)]  # candidate token (B, D), pooled (B, D_i)
        dense = self.dense_input(batch)
        if dense is not None:
            parts.append(dense)
        h = self.top(torch.cat(parts, 1))  # (B, hidden[-1])
        return self.apply_heads(h)
