"""What every example model shares: an optional `FeatureEngine`, an `EmbeddingEngine`, dense inputs and heads.

The Trainer sees only `transform(batch)` (CPU feature transforms, run in the input thread) and
`forward(batch) -> {head: logits}`; everything between is the model's own business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from recis.core import Padded, Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec

Batch = dict[str, Any]


class MLP(nn.Sequential):
    """Linear layers with ReLU (and optional dropout) between them; no activation after the last.

    Examples:
        >>> MLP(8, [16, 4])(torch.zeros(2, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_dim: int, sizes: Sequence[int], dropout: float = 0.0, last_activation: bool = False):
        layers: list[nn.Module] = []
        for i, size in enumerate(sizes):
            layers.append(nn.Linear(in_dim, size))
            if i < len(sizes) - 1 or last_activation:
                layers.append(nn.ReLU())
                if dropout:
                    layers.append(nn.Dropout(dropout))
            in_dim = size
        super().__init__(*layers)


def _heads(heads: Mapping[str, int] | Sequence[str]) -> dict[str, int]:
    found = dict(heads) if isinstance(heads, Mapping) else dict.fromkeys(heads, 1)
    if not found:
        raise ValueError("a model needs at least one head")
    for name, width in found.items():
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"head {name!r}: width must be a positive int, got {width!r}")
    return found


def pooled_width(spec: EmbeddingSpec) -> int:
    """Width of a pooled feature's output: dim, or max_len * dim for "tile"."""
    if spec.combiner == "tile":
        assert spec.max_len is not None
        return spec.max_len * spec.dim
    return spec.dim


class RankingModel(nn.Module):
    """Base class of the example models.

    Args:
        embedding: the sparse part; its specs say which batch columns are embedded and how.
        features: optional feature transforms applied to raw batches before embedding.
        dense: numeric batch columns fed to the dense part as they are ((B,) or (B, k) floats).
        heads: output names, or {name: width} (1 for BCE/MSE, C classes for softmax CE).
    """

    def __init__(
        self,
        embedding: EmbeddingEngine,
        features: nn.Module | None = None,
        dense: Sequence[str] = (),
        heads: Mapping[str, int] | Sequence[str] = ("label",),
    ):
        super().__init__()
        self.features = features
        self.embedding = embedding
        self.dense_columns = list(dense)
        self.head_widths = _heads(heads)

    def transform(self, batch: Batch) -> Batch:
        """Raw batch -> model inputs (feature transforms on the CPU); thread-safe, no autograd."""
        with torch.no_grad():
            return self.features(batch) if self.features is not None else dict(batch)

    def pooled_specs(self, exclude: Sequence[str] = ()) -> dict[str, EmbeddingSpec]:
        """Specs of the features that come out as (B, width) tensors."""
        return {n: s for n, s in self.embedding.specs.items() if s.combiner is not None and n not in exclude}

    def dense_input(self, batch: Batch) -> Tensor | None:
        """The dense columns side by side, (B, sum of widths) float32, or None without dense columns."""
        if not self.dense_columns:
            return None
        parts = []
        for name in self.dense_columns:
            x = batch.get(name)
            if not isinstance(x, Tensor):
                raise KeyError(f"{type(self).__name__}: dense column {name!r} is missing or not a tensor")
            parts.append(x.float().reshape(len(x), -1))  # (B, k)
        return torch.cat(parts, 1)

    def make_heads(self, in_dim: int) -> nn.ModuleDict:
        return nn.ModuleDict({name: nn.Linear(in_dim, width) for name, width in self.head_widths.items()})

    def apply_heads(self, x: Tensor, offset: Tensor | None = None) -> dict[str, Tensor]:
        """{head: logits} from `self.heads` (made by `make_heads`) over x (B, in_dim): (B,) for
        1-wide heads, (B, width) otherwise; `offset` (B,) is added to every logit (an FM or wide term)."""
        heads: nn.ModuleDict = self.heads  # type: ignore[assignment]  # set by the subclass
        out = {}
        for name, head in heads.items():
            y = head(x)
            y = y.squeeze(-1) if y.shape[-1] == 1 else y
            out[name] = y if offset is None else y + (offset if y.dim() == 1 else offset.unsqueeze(-1))
        return out


def sequence_of(x: object, name: str) -> Padded:
    """A sequence feature's embedding output as `Padded` ((B, L, D) values, (B, L) mask)."""
    if isinstance(x, Ragged):
        x = x.to_dense(0.0)
    if not isinstance(x, Padded):
        raise TypeError(f"feature {name!r} must be embedded as a sequence (combiner=None), got {type(x).__name__}")
    return x
