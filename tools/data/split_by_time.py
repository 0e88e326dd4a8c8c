"""Splits a Parquet file by time: rows before the `--test-fraction` quantile of `--column` train, the rest test.

    python tools/data/split_by_time.py build/data/movielens.parquet build/movielens --test-fraction 0.2

Writes OUT/train.parquet and OUT/test.parquet (row order kept). Every test row is at or after every
training row's time, so no model sees the future it is scored on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--column", default="timestamp")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    table = pq.read_table(args.src)
    times = table[args.column].to_numpy()
    cut = np.quantile(times, 1 - args.test_fraction, method="higher")
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = (
        table.filter(pc.less(table[args.column], cut)),
        table.filter(pc.greater_equal(table[args.column], cut)),
    )
    pq.write_table(train, args.out / "train.parquet", row_group_size=16384, write_page_checksum=True)
    pq.write_table(test, args.out / "test.parquet", row_group_size=16384, write_page_checksum=True)
    print(f"{args.out}: {train.num_rows} train rows before {args.column}={cut}, {test.num_rows} test rows from it")


if __name__ == "__main__":
    main()
