"""Benchmark workloads shared by tools/bench scripts and the per-package pytest benchmarks.

`zipf_batches` reproduces the sparse workload of ../shared/peers/torchrec/sparse_step.py: per
table, bags of U[L/2, 3L/2] IDs drawn Zipf(1.05) over `rows` and scattered by a random permutation.
"""

from __future__ import annotations

import torch

from recis.core import Ragged


def zipf_batches(
    n: int = 1,
    tables: int = 8,
    rows: int = 1_000_000,
    batch: int = 4096,
    ids: int = 20,
    zipf: float = 1.05,
    seed: int = 1234,
) -> list[dict[str, Ragged]]:
    """`n` batches of {"f0": Ragged, ...}, about tables * batch * ids IDs each, drawn in the same
    order as the peer script's `make_batches`, so batch k is the peer's batch k."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, rows + 1, dtype=torch.float64)
    cdf = torch.cumsum(ranks.pow(-zipf), 0)
    cdf /= cdf[-1].clone()
    perms = [torch.randperm(rows, generator=g) for _ in range(tables)]
    out = []
    for _ in range(n):
        lengths = torch.randint(ids // 2, ids + ids // 2 + 1, (tables, batch), generator=g)
        features = {}
        for t in range(tables):
            u = torch.rand(int(lengths[t].sum()), generator=g, dtype=torch.float64)
            r = torch.searchsorted(cdf, u).clamp_(max=rows - 1)
            features[f"f{t}"] = Ragged.from_lengths(perms[t][r], lengths[t])
        out.append(features)
    return out


def zipf_batch(**kwargs: int | float) -> dict[str, Ragged]:
    """The first of `zipf_batches` (the peer's batch 0)."""
    return zipf_batches(1, **kwargs)[0]  # type: ignore[arg-type]
