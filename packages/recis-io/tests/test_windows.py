"""Windows: ordered partitions, markers, waiting for new windows, resuming after a key."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recis.io import ColumnReader, Windows
from recis.io.windows import natural_key


def add_window(root, key, rows=3, done=True):
    path = root / key
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"v": list(range(rows))}), path / "part-0.parquet")
    if done:
        (path / "_SUCCESS").touch()
    return path


def test_natural_order():
    keys = ["hour=10", "hour=9", "hour=100", "hour=09x"]
    assert sorted(keys, key=natural_key) == ["hour=9", "hour=09x", "hour=10", "hour=100"]


def test_windows_in_order_and_one_reader_each(tmp_path):
    for key in ("dt=2024-05-02/hour=0", "dt=2024-05-01/hour=23", "dt=2024-05-01/hour=3"):
        add_window(tmp_path, key)
    (tmp_path / "dt=2024-05-01" / "stray.txt").write_text("ignored: not a directory")
    windows = list(Windows(str(tmp_path), "dt=*/hour=*"))
    assert [w.key for w in windows] == ["dt=2024-05-01/hour=3", "dt=2024-05-01/hour=23", "dt=2024-05-02/hour=0"]
    assert all(ColumnReader(w.path).num_rows == 3 for w in windows)  # _SUCCESS is not read as data


def test_an_incomplete_window_holds_back_later_ones(tmp_path):
    add_window(tmp_path, "h=1")
    add_window(tmp_path, "h=2", done=False)
    add_window(tmp_path, "h=3")
    assert [w.key for w in Windows(str(tmp_path))] == ["h=1"]
    assert [w.key for w in Windows(str(tmp_path), marker=None)] == ["h=1", "h=2", "h=3"]


def test_start_after_resumes(tmp_path):
    for h in (1, 2, 3):
        add_window(tmp_path, f"h={h}")
    windows = Windows(str(tmp_path), start_after="h=1")
    assert [w.key for w in windows] == ["h=2", "h=3"] and windows.last == "h=3"


def test_waits_for_new_windows_then_times_out(tmp_path):
    add_window(tmp_path, "h=1")
    late = add_window(tmp_path, "h=2", done=False)

    def producer():
        time.sleep(0.15)
        (late / "_SUCCESS").touch()
        time.sleep(0.15)
        add_window(tmp_path, "h=3")

    thread = threading.Thread(target=producer)
    thread.start()
    start = time.monotonic()
    keys = [w.key for w in Windows(str(tmp_path), wait=True, poll_interval=0.02, timeout=0.5)]
    thread.join()
    assert keys == ["h=1", "h=2", "h=3"]
    assert 0.8 <= time.monotonic() - start < 5


def test_bad_poll_interval(tmp_path):
    with pytest.raises(ValueError, match="poll_interval"):
        Windows(str(tmp_path), poll_interval=0)
