"""Bad input fails with errors naming file, column and row group, or is skipped and counted on request."""

from __future__ import annotations

import struct
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recis.io import ColumnReader


def corrupt_row_group(path, group: int) -> None:
    """Overwrites the first page header of a row group's first column with garbage."""
    start = pq.ParquetFile(path).metadata.row_group(group).column(0).data_page_offset
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * 16)


def test_missing_column_names_it_and_the_file(dataset):
    root = dataset([3])
    with pytest.raises(ValueError, match=r"column 'price' is missing from .*part-0000.parquet"):
        ColumnReader(str(root), ["id", "price"])


def test_unexpected_type_says_expected_and_got(dataset):
    with pytest.raises(TypeError, match=r"column 'name' in .*part-0000.parquet: expected list<int64>, got string"):
        ColumnReader(str(dataset([3])), {"name": "list<int64>"})


def test_unsupported_type(tmp_path):
    pq.write_table(pa.table({"t": pa.array([1, 2], pa.timestamp("s"))}), tmp_path / "a.parquet")
    with pytest.raises(TypeError, match=r"column 't' in .*a.parquet: timestamp\[ms\] is not supported"):
        ColumnReader(str(tmp_path))


def test_schema_change_between_files_names_both(tmp_path):
    pq.write_table(pa.table({"v": pa.array([1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"v": pa.array(["x"])}), tmp_path / "b.parquet")
    with pytest.raises(TypeError, match=r"column 'v' in .*b.parquet is string, but int64 in .*a.parquet"):
        ColumnReader(str(tmp_path))


def nulls_file(tmp_path):
    t = pa.table({"v": pa.array([1, None, 3, 4]), "l": pa.array([[1], [2], [None, 2], None], pa.list_(pa.int64()))})
    pq.write_table(t, tmp_path / "n.parquet", row_group_size=2)
    return str(tmp_path / "n.parquet")


def test_nulls_are_an_error_naming_column_file_and_row_group(tmp_path):
    path = nulls_file(tmp_path)
    with pytest.raises(ValueError, match=r"column 'v' in .*n.parquet, row group 0: 1 null values"):
        list(ColumnReader(path, ["v"]))
    with pytest.raises(ValueError, match=r"column 'l' in .*n.parquet, row group 1: 2 null values"):
        list(ColumnReader(path, ["l"], batch_size=1))


def test_nulls_filled_with_defaults_or_given_values(tmp_path):
    path = nulls_file(tmp_path)
    batch = next(iter(ColumnReader(path, nulls="fill")))
    assert batch["v"].tolist() == [1, 0, 3, 4]
    assert batch["l"].tolist() == [[1], [2], [0, 2], []]
    batch = next(iter(ColumnReader(path, nulls="fill", fill_values={"v": -1, "l": 7})))
    assert batch["v"].tolist() == [1, -1, 3, 4] and batch["l"].tolist() == [[1], [2], [7, 2], []]


def test_missing_indicators_mark_the_nulls_before_the_fill(tmp_path):
    path = nulls_file(tmp_path)
    batch = next(iter(ColumnReader(path, nulls="fill", fill_values={"v": -1}, missing_indicators=["v"])))
    assert list(batch) == ["v", "v_missing", "l"]
    assert batch["v"].tolist() == [1, -1, 3, 4] and batch["v_missing"].tolist() == [0, 1, 0, 0]
    assert batch["v_missing"].dtype == torch.int8
    shuffled = ColumnReader(path, nulls="fill", missing_indicators=["v"], shuffle=True, shuffle_window=4, batch_size=4)
    batch = next(iter(shuffled))  # the indicator moves with its row
    assert [m for v, m in zip(batch["v"].tolist(), batch["v_missing"].tolist(), strict=True) if v == 0] == [1]
    with pytest.raises(ValueError, match=r"missing_indicators: \['w'\] are not read columns"):
        ColumnReader(path, missing_indicators=["w"])


def test_empty_files(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.parquet: empty file"):
        ColumnReader(str(tmp_path / "empty.parquet"))
    pq.write_table(pa.table({"v": pa.array([], pa.int64())}), tmp_path / "zero-rows.parquet")
    assert list(ColumnReader(str(tmp_path / "zero-rows.parquet"))) == []


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file(dataset, keep):
    path = next(dataset([50]).iterdir())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"part-0000.parquet: cannot read the parquet footer"):
        ColumnReader(str(path))


def test_corrupt_row_group_names_file_and_row_group(dataset):
    path = next(dataset([30], group_rows=10).iterdir())
    corrupt_row_group(path, 1)
    reader = ColumnReader(str(path), ["id"], batch_size=4)
    with pytest.raises(ValueError, match=r"part-0000.parquet, row group 1: cannot decode"):
        list(reader)


def test_skip_mode_skips_and_counts_with_warnings(dataset):
    root = dataset([10, 10, 10, 10], group_rows=5)
    corrupt_row_group(root / "part-0001.parquet", 1)  # ids 15..19
    (root / "part-0002.parquet").write_bytes(b"PAR1 truncated")  # ids 20..29
    pq.write_table(pa.table({"other": [1]}), root / "part-0004.parquet")  # no 'id' column
    with pytest.warns(RuntimeWarning, match="skipped"):
        reader = ColumnReader(str(root), ["id"], batch_size=4, on_error="skip")
    with pytest.warns(RuntimeWarning, match=r"row group 1: cannot decode"):
        got = [x for b in reader for x in b["id"].tolist()]
    assert got == list(range(15)) + list(range(30, 40))
    assert len(reader.skipped) == 3
    assert any("part-0002" in m for m in reader.skipped) and any("'id' is missing" in m for m in reader.skipped)


def test_skip_mode_resumes_exactly_past_a_bad_row_group(dataset):
    root = dataset([40], group_rows=8)
    corrupt_row_group(root / "part-0000.parquet", 2)  # ids 16..23
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for shuffle in (False, True):
            opts = dict(batch_size=5, on_error="skip", shuffle=shuffle, shuffle_window=12, seed=1)
            full = [x for b in ColumnReader(str(root), ["id"], **opts) for x in b["id"].tolist()]
            assert sorted(full) == [i for i in range(40) if not 16 <= i < 24]
            for stop in range(len(full) // 5 + 1):
                reader = ColumnReader(str(root), ["id"], **opts)
                it = iter(reader)
                head = [x for _, b in zip(range(stop), it, strict=False) for x in b["id"].tolist()]
                del it
                rest = ColumnReader(str(root), ["id"], **opts)
                rest.load_state_dict(reader.state_dict())
                assert head + [x for b in rest for x in b["id"].tolist()] == full


def test_resuming_another_setup_is_refused(dataset):
    root = str(dataset([10]))
    state = ColumnReader(root, shuffle=True, seed=1).state_dict()
    with pytest.raises(ValueError, match=r"cannot resume.*seed: saved 1, here 2"):
        ColumnReader(root, shuffle=True, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"num_shards: saved 1, here 2"):
        ColumnReader(root, shuffle=True, seed=1, rank=0, world_size=2).load_state_dict(state)


def test_page_checksum_mismatch_names_file_row_group_and_column(tmp_path):
    # Uncompressed, plain-encoded float64: a value's 8 bytes lie in the file as they are, so one
    # flipped bit changes that value and nothing else (the page header stays valid).
    path = tmp_path / "crc.parquet"
    x = pa.array([i + 0.5 for i in range(100)], pa.float64())
    t = pa.table({"id": pa.array(range(100), pa.int64()), "x": x})
    pq.write_table(t, path, row_group_size=50, compression="none", use_dictionary=False, write_page_checksum=True)
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<d", 77.5))  # row 77: row group 1
    data[at + 7] ^= 0x01  # an exponent bit: 77.5 becomes 77.5 * 2**16
    path.write_bytes(bytes(data))
    assert pq.read_table(path)["x"][77].as_py() == 77.5 * 2**16  # unverified: silently wrong
    reader = ColumnReader(str(path), ["id", "x"], batch_size=40)
    with pytest.raises(ValueError, match=r"column 'x' in .*crc.parquet, row group 1: page checksum mismatch"):
        list(reader)
    assert [len(b["id"]) for b in ColumnReader(str(path), ["id"], batch_size=40)] == [40, 40, 20]  # 'id' is intact
