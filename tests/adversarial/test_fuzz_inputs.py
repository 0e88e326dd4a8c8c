"""Mutation fuzz of input files: damage a Parquet or ORC file and read it whole with ColumnReader.
A read either returns exactly the original batches or raises an error naming the file; never a
crash or a hang. Parquet files carry page checksums (as every writer of the project writes them),
so damage to their data is never read silently. ORC has no checksums in its format, and pyarrow's
ORC decoder (Apache ORC's C++ library) can crash on damaged stream data, which pyarrow alone
reproduces: for ORC, wrong values and crashes are counted, not refused (docs/reliability.md)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest

from recis.io import ColumnReader

from .harness import assert_all_good, cases, isolated, record
from .test_fuzz_checkpoints import mutate_bytes

pytestmark = pytest.mark.slow  # 80 forked cases per format (make fuzz: 2000)

COLUMNS = ["id", "score", "name", "hist"]


def table(rows: int = 300) -> pa.Table:
    rng = random.Random(0)
    return pa.table(
        {
            "id": pa.array([rng.randrange(-(2**62), 2**62) for _ in range(rows)], pa.int64()),
            "score": pa.array([rng.random() for _ in range(rows)], pa.float64()),
            "name": pa.array([f"user-{rng.randrange(10**6)}" for _ in range(rows)], pa.string()),
            "hist": pa.array([[rng.randrange(1000) for _ in range(rng.randrange(5))] for _ in range(rows)]),
        }
    )


def read_all(path: Path) -> list[dict[str, Any]]:
    """Every batch as plain lists (what a damaged file must reproduce or refuse)."""
    return [{k: v.tolist() for k, v in batch.items()} for batch in ColumnReader(str(path), COLUMNS, batch_size=64)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inputs")
    t = table()
    pq.write_table(t, directory / "part.parquet", row_group_size=100, write_page_checksum=True)
    orc.write_table(t, directory / "part.orc", stripe_size=4096)
    return {fmt: (directory / f"part.{fmt}", read_all(directory / f"part.{fmt}")) for fmt in ("parquet", "orc")}


def classify(run: tuple[str, Any], expected: list, name: str) -> tuple[str, str]:
    kind, result = run
    if kind in ("crash", "hang"):
        return kind, str(result)
    if kind == "raised":
        error, message, trace = result
        clear = error in ("ValueError", "OSError", "TypeError") and name in message
        return ("clear error", message) if clear else ("unclear error", trace)
    return ("correct", "") if result == expected else ("wrong", "different values, no error")


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
def test_damaged_input_files(files, tmp_path, fmt):
    original, expected = files[fmt]
    rng = random.Random(f"inputs-{fmt}")
    area = f"damaged {fmt} input" + (" (no checksums; pyarrow's decoder may crash)" if fmt == "orc" else "")
    for case in range(cases(80, 2000)):
        path = Path(shutil.copy(original, tmp_path / f"case-{case}.{fmt}"))
        data, what = mutate_bytes(path.read_bytes(), rng)
        path.write_bytes(data)
        outcome, detail = classify(isolated(read_all, path, timeout=30), expected, path.name)
        record(area, outcome, f"{what}: {detail}")
        path.unlink()
    assert_all_good(area, also=("wrong", "crash") if fmt == "orc" else ())
