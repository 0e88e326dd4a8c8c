"""Small datasets written into tmp_path: an `id` column numbers every row, so exactly-once is checkable."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest


def table(ids: Sequence[int]) -> pa.Table:
    """Rows with an int64 `id`, a float, a bool, a string, list<int64> and list<list<int64>> derived from it."""
    ids = list(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "x": pa.array([i / 2 for i in ids], pa.float32()),
            "flag": pa.array([i % 2 == 0 for i in ids]),
            "name": pa.array([f"n{i}" for i in ids]),
            "ids": pa.array([list(range(i % 4)) for i in ids], pa.list_(pa.int64())),
            "nested": pa.array([[[i], [i, i]] if i % 3 else [] for i in ids], pa.list_(pa.list_(pa.int64()))),
        }
    )


def write(path: Path, t: pa.Table, group_rows: int) -> Path:
    """Parquet (row groups of `group_rows`) or ORC (stripes of about that many rows) by extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".orc":
        with orc.ORCWriter(path, stripe_size=1) as w:  # tiny stripes: one per write call
            for start in range(0, max(t.num_rows, 1), group_rows):
                w.write(t.slice(start, group_rows))
    else:
        pq.write_table(t, path, row_group_size=group_rows)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[..., Path]:
    """dataset(sizes, group_rows=..., ext=...): a directory with one file per size, ids numbered across files."""

    def make(sizes: Sequence[int], group_rows: int = 7, ext: str = ".parquet") -> Path:
        root = Path(tempfile.mkdtemp(dir=tmp_path))  # fresh per call: hypothesis calls it once per example
        start = 0
        for k, n in enumerate(sizes):
            write(root / f"part-{k:04d}{ext}", table(np.arange(start, start + n)), group_rows)
            start += n
        return root

    return make


@pytest.fixture
def table_of() -> Callable[[Sequence[int]], pa.Table]:
    """The table `dataset` writes, for given ids."""
    return table
