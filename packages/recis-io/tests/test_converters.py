"""tools/data: every converter on the real samples in ../shared/data, read back through recis.io,
behaviour sequences without future leakage, and page checksums in every Parquet file written."""

from __future__ import annotations

import bisect
import importlib.util
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recis.core import Ragged
from recis.io import ColumnReader

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"


def tool(name: str):
    """A script of tools/data loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "data" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = tool("convert")

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the real datasets are not at {DATA}")


def test_every_parquet_writer_writes_page_checksums(tmp_path, has_page_checksums):
    table = pa.table({"timestamp": [3, 1, 2, 5], "ids": [[1], [], [2, 3], [4]], "tag": ["a", "b", "a", "c"]})
    convert.write(table, tmp_path / "converted.parquet", "parquet")
    tool("criteo_like").write(tmp_path / "criteo_like.parquet", 100, group_rows=40)
    pq.write_table(table, tmp_path / "events.parquet")
    tool("split_by_time").main([str(tmp_path / "events.parquet"), str(tmp_path / "split"), "--test-fraction", "0.5"])
    written = ["converted.parquet", "criteo_like.parquet", "split/train.parquet", "split/test.parquet"]
    assert all(has_page_checksums(tmp_path / name) for name in written)
    assert not has_page_checksums(tmp_path / "events.parquet")  # pyarrow's default: none


def oracle(users, times, max_len):
    """Row indices of each row's history, by definition: same user, strictly earlier time, last max_len."""
    by_user = defaultdict(list)
    for i, (u, t) in enumerate(zip(users, times, strict=True)):
        by_user[u].append((t, i))
    out = []
    for u, t in zip(users, times, strict=True):
        events = by_user[u]  # rows are sorted by (user, time), so this is in time order
        j = bisect.bisect_left(events, (t, -1))
        out.append([i for _, i in events[max(0, j - max_len) : j]])
    return out


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=40), st.integers(0, 4))
def test_history_is_strictly_earlier_events_of_the_same_user(events, max_len):
    events.sort()
    users = np.array([u for u, _ in events], dtype=np.int64)
    times = np.array([t for _, t in events], dtype=np.int64)
    offsets, take = convert.history(users, times, max_len)
    offsets, take = offsets.to_pylist(), take.to_pylist()
    got = [take[offsets[i] : offsets[i + 1]] for i in range(len(events))]
    assert got == oracle(users.tolist(), times.tolist(), max_len)


@needs_data
@pytest.mark.parametrize("fmt", ["parquet", "orc"])
@pytest.mark.parametrize(
    ("name", "src", "rows", "kinds"),
    [
        ("criteo", "ctr_samples/deepctr_criteo_sample.txt", 200, {"label": "int32", "I1": "float32", "C1": "bytes"}),
        ("avazu", "ctr_samples/deepctr_avazu_sample.txt", 100, {"click": "int32", "id": "bytes"}),
        ("libfm", "frappe_ctr/frappe.test.libfm", 28860, {"label": "int32", "features": "ragged"}),
    ],
)
def test_ctr_converters(tmp_path, fmt, name, src, rows, kinds):
    out = tmp_path / f"{name}.{fmt}"
    convert.main([name, str(DATA / src), str(out)])
    reader = ColumnReader(str(out), list(kinds), batch_size=4096, nulls="fill")
    assert reader.num_rows == rows
    batch = next(iter(reader))
    for column, kind in kinds.items():
        value = batch[column]
        if kind in ("bytes", "ragged"):
            assert value.offsets.dtype.is_signed and (kind != "bytes" or value.values.dtype.itemsize == 1)
        else:
            assert str(value.dtype) == f"torch.{kind}"


def check_sequences(path, user, time, item, raw, max_len):
    """Reads the converted file and checks its histories: none holds a row's own or a later event, and
    for every 10th user they equal the definition computed from the raw (user, item, time) events."""
    columns = [user, time, item, f"hist_{item}s", "hist_timestamps"]
    batches = list(ColumnReader(str(path), columns, batch_size=1 << 20))
    cat = lambda name: torch.cat([b[name] for b in batches])
    hist_t = Ragged.cat([b["hist_timestamps"] for b in batches])
    rows = cat(time).repeat_interleave(hist_t.lengths())
    assert bool((hist_t.values < rows).all())  # no leakage
    steps = hist_t.values.diff()
    inside = torch.ones_like(steps, dtype=torch.bool)
    inside[hist_t.offsets[1:-1][hist_t.offsets[1:-1] > 0] - 1] = False
    assert bool((steps[inside] >= 0).all())  # oldest first
    order = np.lexsort((raw[:, 2], raw[:, 0]))  # raw events in (user, time) order, file order among ties
    users, items, times = (raw[order, k].tolist() for k in range(3))
    assert (cat(user).tolist(), cat(item).tolist(), cat(time).tolist()) == (users, items, times)
    hist = Ragged.cat([b[f"hist_{item}s"] for b in batches])
    for row, want in enumerate(oracle(users, times, max_len)):
        if users[row] % 10 == 0:
            assert hist[row].tolist() == [items[i] for i in want]


@needs_data
def test_taobao_sequences_have_no_future_leakage(tmp_path):
    out = tmp_path / "taobao.orc"
    convert.main(
        ["taobao", str(DATA / "taobao_userbehavior_head/UserBehavior_head.csv"), str(out), "--max-history", "20"]
    )
    raw = np.loadtxt(
        DATA / "taobao_userbehavior_head/UserBehavior_head.csv", delimiter=",", usecols=(0, 1, 4), dtype=np.int64
    )
    check_sequences(out, "user_id", "timestamp", "item_id", raw, 20)


@needs_data
def test_movielens_sequences_have_no_future_leakage(tmp_path):
    out = tmp_path / "movielens.parquet"
    convert.main(["movielens", str(DATA / "ml-latest-small"), str(out), "--max-history", "10"])
    path = DATA / "ml-latest-small/ratings.csv"
    raw = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 3), dtype=np.int64)
    check_sequences(out, "user_id", "timestamp", "movie_id", raw, 10)
    batch = next(iter(ColumnReader(str(out), ["hist_genres"], batch_size=64)))
    assert batch["hist_genres"].values.values.dtype.itemsize == 1  # list<list<string>>: nested Ragged of bytes
