"""pytest-benchmark: ColumnReader against (a) pyarrow's read_table of the same columns, the decode upper
bound, and (b) a typical torch Dataset + DataLoader, on a Criteo-like dataset in Parquet and ORC.

The dataset (label, 13 float columns, 26 list<int64> columns of 1-5 IDs) is generated once into
build/bench-data. RECIS_IO_BENCH_ROWS sets its size (default 2,000,000; use fewer
for a quick run); group (b) reads a 20,000-row file, as the baseline is a per-row Python loop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from recis.io import ColumnReader

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "data"))
from criteo_like import DENSE, SPARSE, write

ROOT = Path(__file__).resolve().parents[3]
ROWS = int(os.environ.get("RECIS_IO_BENCH_ROWS", "2000000"))
SMALL = min(ROWS, 20_000)
BATCH = 4096
COLUMNS = ["label", *DENSE, *SPARSE]
READ_TABLE = {"parquet": pq.read_table, "orc": orc.read_table}


def dataset(rows: int, fmt: str) -> Path:
    path = ROOT / "build" / "bench-data" / f"criteo-like-{rows}.{fmt}"
    return path if path.exists() else write(path, rows, fmt)


def read_all(path: Path) -> int:
    rows = 0
    for batch in ColumnReader(str(path), COLUMNS, batch_size=BATCH, num_threads=2, prefetch=4):
        rows += len(batch["label"])
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_vs_read_table(benchmark, impl, fmt):
    path = dataset(ROWS, fmt)
    benchmark.group = f"{fmt}: ready batches vs pyarrow read_table, {ROWS:,} rows"
    benchmark.extra_info |= {"role": impl, "rows": ROWS, "batch_size": BATCH}
    if impl == "baseline":
        rows = benchmark.pedantic(lambda: READ_TABLE[fmt](path, columns=COLUMNS).num_rows, rounds=5, warmup_rounds=1)
    else:
        rows = benchmark.pedantic(read_all, args=(path,), rounds=5, warmup_rounds=1)
    assert rows == ROWS


class RowDataset(Dataset):
    """The typical hand-written reader: rows as Python dicts, lists padded to 5 so default collate can stack them."""

    def __init__(self, path: Path, fmt: str):
        self.rows = READ_TABLE[fmt](path, columns=COLUMNS).to_pylist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | float | int]:
        row = self.rows[i]
        item: dict[str, torch.Tensor | float | int] = {name: row[name] for name in ("label", *DENSE)}
        for name in SPARSE:
            ids = row[name]
            item[name] = torch.tensor(ids + [0] * (5 - len(ids)))
        return item


def dataloader_baseline(path: Path, fmt: str) -> int:
    return sum(len(b["label"]) for b in DataLoader(RowDataset(path, fmt), batch_size=BATCH))


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_vs_dataloader(benchmark, impl, fmt):
    path = dataset(SMALL, fmt)
    benchmark.group = f"{fmt}: ready batches vs torch Dataset + DataLoader, {SMALL:,} rows"
    benchmark.extra_info |= {"role": impl, "rows": SMALL, "batch_size": BATCH}
    fn = (lambda: dataloader_baseline(path, fmt)) if impl == "baseline" else (lambda: read_all(path))
    assert benchmark.pedantic(fn, rounds=3) == SMALL
