"""ColumnReader: types end to end, path forms, formats, filesystems, threads and shutdown."""

from __future__ import annotations

import shutil
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recis.core import Ragged
from recis.io import ColumnReader


def rows(reader):
    return [dict(zip(b, vals, strict=True)) for b in reader for vals in zip(*(_py(v) for v in b.values()), strict=True)]


def _py(v):
    return v.tolist()


def test_every_type_arrives_as_the_data_contract_says(dataset, table_of):
    root = dataset([9, 4], group_rows=5)
    batches = list(ColumnReader(str(root), batch_size=6))
    b = batches[0]
    assert b["id"].dtype == torch.int64 and b["x"].dtype == torch.float32 and b["flag"].dtype == torch.bool
    assert isinstance(b["ids"], Ragged) and b["ids"].offsets.dtype == torch.int64
    assert isinstance(b["nested"].values, Ragged)
    assert b["name"].values.dtype == torch.uint8
    expected = table_of(range(13)).to_pylist()
    got = rows(ColumnReader(str(root), batch_size=6))
    for want, have in zip(expected, got, strict=True):
        assert have["id"] == want["id"] and have["x"] == want["x"] and have["flag"] == want["flag"]
        assert bytes(have["name"]).decode() == want["name"]
        assert have["ids"] == want["ids"] and have["nested"] == want["nested"]


def test_orc_reads_the_same_batches_as_parquet(dataset):
    parquet = rows(ColumnReader(str(dataset([11, 6], group_rows=4)), batch_size=5))
    orc = rows(ColumnReader(str(dataset([11, 6], group_rows=4, ext=".orc")), batch_size=5))
    assert orc == parquet


def test_orc_stripes_are_planned_from_the_footer(dataset):
    reader = ColumnReader(str(dataset([10], group_rows=4, ext=".orc")))
    assert reader.sources[0].piece_rows == (4, 4, 2)


def test_paths_directories_globs_and_hidden_files(dataset):
    root = dataset([3, 4, 5])
    (root / "_SUCCESS").touch()
    (root / ".part-0000.parquet.crc").write_bytes(b"not data")
    assert ColumnReader(str(root)).num_rows == 12
    assert ColumnReader(str(root / "part-000[12]*")).num_rows == 9
    files = sorted(str(p) for p in root.glob("part-*"))
    assert ColumnReader(files[:2]).num_rows == 7
    with pytest.raises(FileNotFoundError, match="no file matches"):
        ColumnReader(str(root / "nope-*"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        ColumnReader(str(root / "missing"))
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no data files"):
        ColumnReader(str(root / "empty"))


def test_format_from_magic_bytes_or_argument(dataset, tmp_path):
    src = next(dataset([5]).iterdir())
    shutil.copy(src, tmp_path / "part-a")
    assert ColumnReader(str(tmp_path / "part-a")).sources[0].format == "parquet"
    assert ColumnReader(str(tmp_path / "part-a"), format="parquet").num_rows == 5
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither Parquet nor ORC"):
        ColumnReader(str(tmp_path / "notes.txt"))


def test_fsspec_urls_and_filesystems(table_of):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    with fs.open("/recis-io-test/part-0.parquet", "wb") as f:
        pq.write_table(table_of(range(8)), f)
    assert [b["id"].tolist() for b in ColumnReader("memory://recis-io-test", ["id"], batch_size=5)] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7],
    ]
    assert ColumnReader("/recis-io-test", filesystem=fs).num_rows == 8


def test_columns_with_expected_types(dataset):
    root = str(dataset([4]))
    reader = ColumnReader(root, {"id": pa.int64(), "ids": "list<int64>", "nested": None})
    assert list(next(iter(reader))) == ["id", "ids", "nested"]


def test_string_hash_per_column(dataset):
    root = str(dataset([4]))
    batch = next(iter(ColumnReader(root, ["name"], string_hash={"name": lambda offsets, data: offsets.diff()})))
    assert batch["name"].tolist() == [2, 2, 2, 2]  # "n0".."n3"


def test_prefetch_zero_and_one_thread(dataset):
    root = str(dataset([20, 3], group_rows=4))
    got = [b["id"].tolist() for b in ColumnReader(root, ["id"], batch_size=7, num_threads=1, prefetch=0)]
    assert got == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21)), [21, 22]]


def test_dropping_the_iterator_stops_its_threads(dataset):
    root = str(dataset([200] * 4, group_rows=10))
    before = threading.active_count()
    for _ in range(3):
        it = iter(ColumnReader(root, batch_size=3, prefetch=2))
        next(it)
        del it
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_an_error_in_a_reader_thread_reaches_the_consumer(dataset):
    root = str(dataset([30], group_rows=4))

    def broken(offsets, data):
        raise RuntimeError("hash failed")

    with pytest.raises(RuntimeError, match="hash failed"):
        list(ColumnReader(root, ["name"], batch_size=4, string_hash=broken))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_pin_memory_needs_cuda(dataset):
    with pytest.raises(ValueError, match="needs CUDA"):
        ColumnReader(str(dataset([3])), pin_memory=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pin_memory_pins_every_tensor(dataset):
    batch = next(iter(ColumnReader(str(dataset([5])), ["id", "ids"], pin_memory=True)))
    assert batch["id"].is_pinned() and batch["ids"].values.is_pinned() and batch["ids"].offsets.is_pinned()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"shuffle_window": 0}, "shuffle_window must be >= 1"),
        ({"nulls": "drop"}, "nulls must be"),
        ({"on_error": "ignore"}, "on_error must be"),
        ({"format": "csv"}, "format must be"),
        ({"rank": 2, "world_size": 2}, "rank < world_size"),
        ({"fill_values": {"other": 1}, "nulls": "fill"}, "not read"),
        ({"columns": []}, "one or more distinct names"),
        ({"columns": ["id", "id"]}, "one or more distinct names"),
    ],
)
def test_bad_arguments(dataset, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ColumnReader(str(dataset([3])), **kwargs)
