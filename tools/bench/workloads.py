"""Benchmark workloads shared by tools/bench scripts, the TorchRec side in tools/bench/torchrec and
the per-package pytest benchmarks.

The sparse workload: per table, bags of U[L/2, 3L/2] IDs drawn Zipf(1.05) over `rows` and scattered
by a random permutation. `zipf_arrays` needs only torch (the TorchRec venv has no recis);
`zipf_batches` wraps the same draws in `Ragged`s, so batch k is the same on both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from recis.core import Ragged


def zipf_arrays(
    n: int = 1,
    tables: int = 8,
    rows: int = 1_000_000,
    batch: int = 4096,
    ids: int = 20,
    zipf: float = 1.05,
    seed: int = 1234,
    perm_seed: int | None = None,
) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """`n` batches of (lengths (tables, batch), one 1-D int64 ID tensor per table).

    The permutations that scatter hot IDs come from the batches' generator, drawn first, unless
    `perm_seed` gives them a generator of their own (the same on every rank while `seed` differs).
    """
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, rows + 1, dtype=torch.float64)
    cdf = torch.cumsum(ranks.pow(-zipf), 0)
    cdf /= cdf[-1].clone()
    gp = g if perm_seed is None else torch.Generator().manual_seed(perm_seed)
    perms = [torch.randperm(rows, generator=gp) for _ in range(tables)]
    out = []
    for _ in range(n):
        lengths = torch.randint(ids // 2, ids + ids // 2 + 1, (tables, batch), generator=g)
        values = []
        for t in range(tables):
            u = torch.rand(int(lengths[t].sum()), generator=g, dtype=torch.float64)
            values.append(perms[t][torch.searchsorted(cdf, u).clamp_(max=rows - 1)])
        out.append((lengths, values))
    return out


def zipf_batches(n: int = 1, **kwargs: int | float) -> list[dict[str, Ragged]]:
    """`n` batches of {"f0": Ragged, ...}: the draws of `zipf_arrays` with the same arguments."""
    from recis.core import Ragged  # imported here: the TorchRec venv, which has no recis, imports this module

    return [
        {f"f{t}": Ragged.from_lengths(v, lengths[t]) for t, v in enumerate(values)}
        for lengths, values in zipf_arrays(n, **kwargs)  # type: ignore[arg-type]
    ]


def zipf_batch(**kwargs: int | float) -> dict[str, Ragged]:
    """The first of `zipf_batches`."""
    return zipf_batches(1, **kwargs)[0]
