"""Converts public recommendation datasets (as in ../shared/data) to Parquet or ORC for recis.io.

    D=../shared/data
    python tools/data/convert.py criteo    $D/ctr_samples/deepctr_criteo_sample.txt build/data/criteo.parquet
    python tools/data/convert.py avazu     $D/ctr_samples/deepctr_avazu_sample.txt  build/data/avazu.orc
    python tools/data/convert.py libfm     $D/frappe_ctr/frappe.test.libfm          build/data/frappe.parquet
    python tools/data/convert.py movielens $D/ml-latest-small                       build/data/movielens.parquet
    python tools/data/convert.py taobao    $D/taobao_userbehavior_head/UserBehavior_head.csv build/data/taobao.orc

MovieLens and Taobao rows come sorted by (user, time) with behaviour-sequence columns `hist_*`: the
user's last `--max-history` events with a strictly earlier timestamp, oldest first. Events at the
same second are not each other's history, so no row ever sees its own or a later event.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pyarrow.orc as orc
import pyarrow.parquet as pq
from tqdm.auto import tqdm


def criteo(src: Path) -> pa.Table:
    """Criteo CSV with header `label,I1..I13,C1..C26`: int32 label, float32 I*, raw string C* (empty -> null)."""
    types = {"label": pa.int32()} | {f"I{i}": pa.float32() for i in range(1, 14)}
    types |= {f"C{i}": pa.string() for i in range(1, 27)}
    opts = csv.ConvertOptions(column_types=types, strings_can_be_null=True)
    return csv.read_csv(src, convert_options=opts)


def avazu(src: Path) -> pa.Table:
    """Avazu CSV: `id` as string (it exceeds int64), int32 `click`, int64 `hour` (YYMMDDHH), other columns as read."""
    opts = csv.ConvertOptions(column_types={"id": pa.string(), "click": pa.int32(), "hour": pa.int64()})
    return csv.read_csv(src, convert_options=opts)


def libfm(src: Path) -> pa.Table:
    """libFM lines `label idx:value ...`: int32 label (1 if > 0), list<int64> `features`, list<float32> `values`."""
    labels, lengths, features, values = [], [], [], []
    for line in src.read_text().splitlines():
        if not line.strip():
            continue
        label, *pairs = line.split()
        labels.append(1 if float(label) > 0 else 0)
        lengths.append(len(pairs))
        for pair in pairs:
            index, value = pair.split(":")
            features.append(int(index))
            values.append(float(value))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))
    return pa.table(
        {
            "label": pa.array(labels, pa.int32()),
            "features": pa.ListArray.from_arrays(offsets, pa.array(features, pa.int64())),
            "values": pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32())),
        }
    )


def history(users: np.ndarray, times: np.ndarray, max_len: int) -> tuple[pa.Array, pa.Array]:
    """For rows sorted by (user, time): list offsets and the row indices of each row's history.

    Row i's history is the last `max_len` rows of the same user with a strictly smaller time,
    oldest first: rows [max(user start, tie start - max_len), tie start), where the tie start is the
    first row of i's (user, time) group.
    """
    n = len(users)
    rows = np.arange(n)
    new_user = np.r_[True, users[1:] != users[:-1]]
    new_time = new_user | np.r_[True, times[1:] != times[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, rows, 0))
    end = np.maximum.accumulate(np.where(new_time, rows, 0))
    start = np.maximum(user_start, end - max_len)
    lengths = end - start
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    take = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.array(offsets.astype(np.int32)), pa.array(take)


def with_history(table: pa.Table, user: str, time: str, columns: dict[str, str], max_len: int) -> pa.Table:
    """Sorts by (user, time), keeping file order among ties, and adds `hist_<name>` list columns."""
    order = np.lexsort((table[time].to_numpy(), table[user].to_numpy()))
    table = table.take(pa.array(order))
    offsets, take = history(table[user].to_numpy(), table[time].to_numpy(), max_len)
    for name, source in columns.items():
        values = table[source].combine_chunks().take(take)
        table = table.append_column(f"hist_{name}", pa.ListArray.from_arrays(offsets, values))
    return table


def movielens(src: Path, max_len: int = 50) -> pa.Table:
    """ratings.csv joined with movies.csv genres: one row per rating, label = rating >= 4, with histories."""
    ratings = csv.read_csv(src / "ratings.csv")
    movies = csv.read_csv(src / "movies.csv", convert_options=csv.ConvertOptions(include_columns=["movieId", "genres"]))
    genres_of = dict(zip(movies["movieId"].to_pylist(), movies["genres"].to_pylist(), strict=True))
    genres = [genres_of.get(m, "").split("|") for m in ratings["movieId"].to_pylist()]
    table = pa.table(
        {
            "user_id": ratings["userId"].cast(pa.int64()),
            "movie_id": ratings["movieId"].cast(pa.int64()),
            "rating": ratings["rating"].cast(pa.float32()),
            "timestamp": ratings["timestamp"].cast(pa.int64()),
            "label": pc.greater_equal(ratings["rating"], 4.0).cast(pa.int32()),
            "genres": pa.array(genres, pa.list_(pa.string())),
        }
    )
    hist = {"movie_ids": "movie_id", "ratings": "rating", "genres": "genres", "timestamps": "timestamp"}
    return with_history(table, "user_id", "timestamp", hist, max_len)


def taobao(src: Path, max_len: int = 50) -> pa.Table:
    """UserBehavior.csv (no header): one row per event, label = buy, with item/category/behaviour histories."""
    names = ["user_id", "item_id", "category_id", "behavior", "timestamp"]
    types = {n: pa.int64() for n in names} | {"behavior": pa.string()}
    table = csv.read_csv(
        src,
        read_options=csv.ReadOptions(column_names=names),
        convert_options=csv.ConvertOptions(column_types=types),
    )
    table = table.append_column("label", pc.equal(table["behavior"], "buy").cast(pa.int32()))
    hist = {"item_ids": "item_id", "category_ids": "category_id", "behaviors": "behavior", "timestamps": "timestamp"}
    return with_history(table, "user_id", "timestamp", hist, max_len)


def write(table: pa.Table, out: Path, fmt: str, group_rows: int = 65536, progress: bool = False) -> None:
    """Writes one Parquet or ORC file (row groups / stripes of about `group_rows` rows); with
    `progress`, a bar over the rows written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=table.num_rows, desc=f"writing {out.name}", unit="row", unit_scale=True, disable=not progress)
    if fmt == "parquet":
        with pq.ParquetWriter(out, table.schema, write_page_checksum=True) as writer:
            for start in range(0, table.num_rows, group_rows):
                part = table.slice(start, group_rows)
                writer.write_table(part, row_group_size=group_rows)
                bar.update(part.num_rows)
    else:
        with orc.ORCWriter(out) as writer:
            for batch in table.to_batches(group_rows):
                writer.write(pa.Table.from_batches([batch]))
                bar.update(batch.num_rows)
    bar.close()


CONVERTERS: dict[str, Callable[..., pa.Table]] = {
    "criteo": criteo,
    "avazu": avazu,
    "libfm": libfm,
    "movielens": movielens,
    "taobao": taobao,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(CONVERTERS))
    parser.add_argument("src", type=Path, help="source file (a directory for movielens)")
    parser.add_argument("out", type=Path, help="output file")
    parser.add_argument("--format", choices=["parquet", "orc"], default=None, help="default: from the extension")
    parser.add_argument("--max-history", type=int, default=50, help="movielens/taobao: events per history")
    parser.add_argument("--group-rows", type=int, default=65536, help="rows per row group / stripe")
    parser.add_argument("--quiet", action="store_true", help="no progress output, only the summary line")
    args = parser.parse_args(argv)
    fmt = args.format or ("orc" if args.out.suffix == ".orc" else "parquet")
    convert = CONVERTERS[args.dataset]
    start = time.perf_counter()
    if not args.quiet:
        print(f"reading {args.src} ({args.dataset}) ...", flush=True)
    table = convert(args.src, args.max_history) if args.dataset in ("movielens", "taobao") else convert(args.src)
    if not args.quiet:
        print(f"read {table.num_rows:,} rows in {time.perf_counter() - start:.1f} s", flush=True)
    write(table, args.out, fmt, args.group_rows, progress=not args.quiet)
    print(f"{args.out}: {table.num_rows} rows, {fmt}: {', '.join(table.column_names)}")


if __name__ == "__main__":
    main()
