"""Which rows a reader reads in an epoch, and in what order: a pure function of the files and the seed.

All pieces (row groups, stripes) of all files, in the epoch's order, form one global row stream;
shard s of n takes the contiguous rows [s * total // n, (s + 1) * total // n). Shards therefore
differ by at most one row, every row belongs to exactly one shard, and a shard decodes at most two
pieces it only partly needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slice:
    """Rows [start, stop) of piece `piece` of file `file`, at position `position` of the shard's stream."""

    file: int
    piece: int
    start: int
    stop: int
    position: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (epoch, shard, window, ...)."""
    return np.random.default_rng([seed & (2**63 - 1), *keys])


def epoch_order(
    piece_rows: Sequence[Sequence[int]], shuffle: bool, seed: int, epoch: int
) -> list[tuple[int, int, int]]:
    """(file, piece, rows) in reading order: files shuffled, then the pieces within each file."""
    files = list(range(len(piece_rows)))
    if shuffle:
        files = [int(i) for i in rng(seed, epoch).permutation(len(files))]
    order: list[tuple[int, int, int]] = []
    for f in files:
        pieces = list(range(len(piece_rows[f])))
        if shuffle:
            pieces = [int(i) for i in rng(seed, epoch, f + 1).permutation(len(pieces))]
        order.extend((f, p, piece_rows[f][p]) for p in pieces)
    return order


def shard_bounds(total: int, shard: int, num_shards: int) -> tuple[int, int]:
    """The global rows [lo, hi) of one shard."""
    return shard * total // num_shards, (shard + 1) * total // num_shards


def shard_slices(order: Sequence[tuple[int, int, int]], lo: int, hi: int, skip: int = 0) -> list[Slice]:
    """The piece slices covering global rows [lo + skip, hi), positioned within the shard's stream [0, hi - lo)."""
    slices = []
    first = lo + skip
    at = 0  # global row where the current piece starts
    for file, piece, rows in order:
        start, stop = max(first, at), min(hi, at + rows)
        if start < stop:
            slices.append(Slice(file, piece, start - at, stop - at, start - lo))
        at += rows
        if at >= hi:
            break
    return slices
