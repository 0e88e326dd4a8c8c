"""A synthetic Criteo-shaped dataset for benchmarks: label, 13 float columns, 26 list<int64> of 1-5 IDs.

Written one row group (stripe) at a time, so any size fits in memory. IDs of column Ck come from
a vocabulary of 10**(1 + k % 6) values, as Criteo's categorical columns range from tiny to huge.

    python tools/data/criteo_like.py OUT.parquet --rows 2000000 [--format orc]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]


def chunk(rows: int, rng: np.random.Generator) -> pa.Table:
    """`rows` rows of the Criteo-like schema."""
    columns: dict[str, pa.Array] = {"label": pa.array(rng.integers(0, 2, rows, dtype=np.int32))}
    for name in DENSE:
        columns[name] = pa.array(rng.exponential(10.0, rows).astype(np.float32))
    for k, name in enumerate(SPARSE):
        lengths = rng.integers(1, 6, rows)
        offsets = np.zeros(rows + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        ids = rng.integers(0, 10 ** (1 + k % 6), int(offsets[-1]), dtype=np.int64)
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))
    return pa.table(columns)


def write(path: str | Path, rows: int, fmt: str = "parquet", group_rows: int = 65536, seed: int = 0) -> Path:
    """Writes `rows` rows to `path` in row groups / stripes of `group_rows` rows; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    schema = chunk(1, rng).schema
    if fmt == "parquet":
        writer = pq.ParquetWriter(tmp, schema, write_page_checksum=True)
    else:
        writer = orc.ORCWriter(tmp, stripe_size=64 << 20)
    try:
        for start in range(0, rows, group_rows):
            table = chunk(min(group_rows, rows - start), rng)
            if fmt == "parquet":
                writer.write_table(table, row_group_size=group_rows)
            else:
                writer.write(table)
    finally:
        writer.close()
    tmp.rename(path)  # a complete file or none: an interrupted run never leaves a cached half file
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--format", choices=["parquet", "orc"], default="parquet")
    parser.add_argument("--group-rows", type=int, default=65536)
    args = parser.parse_args()
    print(write(args.out, args.rows, args.format, args.group_rows))


if __name__ == "__main__":
    main()
