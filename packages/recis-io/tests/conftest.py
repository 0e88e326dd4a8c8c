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
        pq.write_table(t, path, row_group_size=group_rows, write_page_checksum=True)  # read back verified
    return path


def page_checksums(path: Path) -> bool:
    """Whether the first page of every column chunk of a Parquet file carries a CRC."""
    meta = pq.ParquetFile(path).metadata
    data = path.read_bytes()
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            at = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
            # A PageHeader in Thrift's compact protocol: fields 1-3 (type, two sizes) are i32s, each a
            # byte 0x15 (field delta 1, type i32) and a varint; the optional crc (field 4) is the next.
            for _ in range(3):
                assert data[at] == 0x15, f"{path}: no page header at byte {at}"
                at += 1
                while data[at] & 0x80:
                    at += 1
                at += 1
            if data[at] != 0x15:
                return False
    return True


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


@pytest.fixture
def has_page_checksums() -> Callable[[Path], bool]:
    """has_page_checksums(path): whether a Parquet file's pages carry CRCs (checks each column chunk's first)."""
    return page_checksums
