"""`ColumnReader`: Parquet and ORC files to fixed-size batches of tensors and `Ragged`s.

Files are checked once, from their footers, when the reader is built (columns, types, schema
agreement, row counts); each epoch is then a deterministic plan over those row counts (see `plan`),
which is what makes sharding exact and resuming a matter of one integer per shard.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal

import pyarrow as pa  # type: ignore[import-untyped]
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from .convert import StringHash, check_type, default_fill, describe, innermost
from .pipeline import Batch, Job, Prefetcher, produce
from .plan import epoch_order, shard_bounds, shard_slices
from .sources import FORMATS, Source, filesystem_for, inspect, list_files


class ColumnReader(IterableDataset[Batch]):
    """Reads columns of Parquet/ORC files as batches `{column: Tensor | Ragged}` of `batch_size` rows.

    Scalars become 1-D tensors; `list<T>` a `Ragged` over Arrow's buffers, `list<list<T>>` a nested
    one; strings a `Ragged` of their uint8 bytes (Arrow's offsets + data), or int64 IDs when
    `string_hash` is given. Batches span row groups and files. Iterating runs one epoch; the next
    iteration runs the next epoch (reshuffled), or resumes where `state_dict()` says.

    Args:
        paths: files, directories (all files below, except names starting with `_` or `.`), globs,
            or URLs (pyarrow's: s3://, gs://, hdfs://; others through fsspec when it is installed).
        columns: names to read, or {name: expected type} (a pyarrow type or a string such as
            "list<int64>"; None accepts any supported type). All columns when None.
        batch_size: rows per batch; only the last batch of an epoch may be shorter.
        drop_last: drop that shorter last batch.
        shuffle: shuffle the file order, the row groups within each file, and rows within windows
            of `shuffle_window` rows, all from (`seed`, epoch).
        shuffle_window: rows permuted together when shuffling (memory: one window of decoded rows).
        seed: the shuffle seed.
        rank: this process's shard (default: torch.distributed's rank when initialized). Inside
            a DataLoader worker, each worker further takes its own shard.
        world_size: the number of shards (default: torch.distributed's world size).
        num_threads: decode threads.
        prefetch: ready batches kept ahead of the consumer.
        pin_memory: return batches in page-locked memory (needs CUDA).
        nulls: "error" (default) raises on a null, naming column, file and row group; "fill" replaces
            it with `fill_values[column]`, else 0 / False / "" (a null list becomes []).
        fill_values: per-column fill for nulls (the value of the innermost type for lists).
        missing_indicators: columns that also get a `<column>_missing` int8 column in each batch:
            1 where the value was null (before any fill), else 0. Models see the gap as a feature.
        string_hash: `(offsets int64, bytes uint8) -> int64 IDs` applied to string columns at read
            time (e.g. `recis.features.hash_strings`), or {column: function} for some of them.
            It runs in the decode threads, so it must be thread-safe.
        on_error: "raise" (default), or "skip": unreadable files and row groups, missing columns and
            nulls under nulls="error" are skipped with a warning and listed in `skipped`.
        format: "parquet" or "orc"; by default from the extension, else from the magic bytes.
        filesystem: a pyarrow or fsspec filesystem for the paths.

    Examples:
        >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
        >>> path = tempfile.mkdtemp() + "/part-0.parquet"
        >>> pq.write_table(pa.table({"label": [1, 0, 1], "ids": [[7, 8], [], [9]], "tag": ["a", "bc", ""]}), path)
        >>> reader = ColumnReader(path, ["label", "ids"], batch_size=2)
        >>> [(b["label"].tolist(), b["ids"].tolist()) for b in reader]
        [([1, 0], [[7, 8], []]), ([1], [[9]])]
        >>> batch = next(iter(ColumnReader(path, ["tag"], batch_size=3)))
        >>> batch["tag"].offsets.tolist(), bytes(batch["tag"].values.tolist())
        ([0, 1, 3, 3], b'abc')
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        columns: Sequence[str] | Mapping[str, pa.DataType | str | None] | None = None,
        batch_size: int = 1024,
        *,
        drop_last: bool = False,
        shuffle: bool = False,
        shuffle_window: int = 65536,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_threads: int = 2,
        prefetch: int = 4,
        pin_memory: bool = False,
        nulls: Literal["error", "fill"] = "error",
        fill_values: Mapping[str, Any] | None = None,
        missing_indicators: Sequence[str] = (),
        string_hash: StringHash | Mapping[str, StringHash] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        format: str | None = None,
        filesystem: Any = None,
    ):
        super().__init__()
        _check_options(batch_size, shuffle_window, num_threads, prefetch, nulls, on_error, format)
        if pin_memory and not torch.cuda.is_available():
            raise ValueError("[recis.io] pin_memory=True needs CUDA, which torch reports as unavailable")
        if rank is None and world_size is None and dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        self.rank, self.world_size = rank or 0, world_size or 1
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"[recis.io] need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed
        self.shuffle_window = shuffle_window if shuffle else 0
        self.num_threads, self.prefetch, self.pin_memory = num_threads, prefetch, pin_memory
        self.skip_errors = on_error == "skip"
        self.skipped: list[str] = []
        """What on_error="skip" skipped: one message per file or row group, naming it and why."""

        paths = [paths] if isinstance(paths, str) else list(paths)
        self._fs, self.sources = self._find_sources(paths, format, filesystem)
        self.types = self._resolve_columns(columns)
        self._fills = None if nulls == "error" else _fills(self.types, fill_values or {})
        self.missing_indicators = list(missing_indicators)
        """Columns that get a `<column>_missing` indicator column in each batch."""
        unknown = [c for c in self.missing_indicators if c not in self.types]
        clash = [f"{c}_missing" for c in self.missing_indicators if f"{c}_missing" in self.types]
        if unknown or clash:
            raise ValueError(
                f"[recis.io] missing_indicators: {unknown or clash} "
                + ("are not read columns" if unknown else "would replace read columns")
            )
        self._hashes = _string_hashes(self.types, string_hash)
        self.num_rows = sum(sum(s.piece_rows) for s in self.sources)
        """Rows in all files (all shards)."""
        listing = "\n".join(f"{s.path}:{','.join(map(str, s.piece_rows))}" for s in self.sources)
        self._fingerprint = hashlib.sha1(listing.encode()).hexdigest()
        self._epoch = self._cursor = 0
        self._shard = (self.rank, self.world_size)

    # ---- construction --------------------------------------------------------------------------

    def _find_sources(self, paths: list[str], fmt: str | None, filesystem: Any) -> tuple[Any, list[Source]]:
        if not paths:
            raise ValueError("[recis.io] ColumnReader needs at least one path")
        fs, files = None, []
        for path in paths:
            path_fs, inner = filesystem_for(path, filesystem)
            if fs is not None and path_fs.type_name != fs.type_name:
                raise ValueError(f"[recis.io] {path!r} is on {path_fs.type_name}, the first path on {fs.type_name}")
            fs = path_fs
            files.extend(list_files(fs, inner))
        if not files:
            raise FileNotFoundError(f"[recis.io] no data files in {paths}")
        with ThreadPoolExecutor(min(8, len(files))) as pool:
            attempts = list(pool.map(lambda f: self._try(lambda: inspect(fs, f, fmt)), files))
        sources = [s for s in attempts if s is not None]
        if not sources:
            raise ValueError(f"[recis.io] no readable file in {paths} ({len(self.skipped)} skipped)")
        return fs, sources

    def _try(self, fn: Callable[[], Source]) -> Source | None:
        try:
            return fn()
        except (ValueError, TypeError) as e:
            if not self.skip_errors:
                raise
            self.skipped.append(str(e))
            warnings.warn(f"{e} (skipped; on_error='skip')", RuntimeWarning, stacklevel=3)
            return None

    def _resolve_columns(self, columns: Sequence[str] | Mapping[str, Any] | None) -> dict[str, pa.DataType]:
        first = self.sources[0]
        names = list(first.schema.names if columns is None else columns)
        if isinstance(columns, str) or not names or len(set(names)) != len(names):
            raise ValueError(f"[recis.io] columns must be one or more distinct names, got {columns!r}")
        expected = {n: _type_name(columns[n]) for n in names} if isinstance(columns, Mapping) else {}
        types: dict[str, pa.DataType] = {}
        kept = []
        for src in self.sources:
            if self._try(partial(self._check_source, src, names, expected, types)) is not None:
                kept.append(src)
        if not kept:
            raise ValueError(f"[recis.io] no file has the columns {names} ({len(self.skipped)} skipped)")
        self.sources = kept
        return types

    def _check_source(
        self, src: Source, names: list[str], expected: dict[str, str | None], types: dict[str, pa.DataType]
    ) -> Source:
        for name in names:
            if name not in src.schema.names:
                raise ValueError(f"[recis.io] column {name!r} is missing from {src.path} (it has {src.schema.names})")
            t = src.schema.field(name).type
            reason = check_type(t)
            if reason:
                raise TypeError(f"[recis.io] column {name!r} in {src.path}: {reason}")
            if expected.get(name) not in (None, describe(t)):
                got = describe(t)
                raise TypeError(f"[recis.io] column {name!r} in {src.path}: expected {expected[name]}, got {got}")
            if name in types and describe(types[name]) != describe(t):
                first = self.sources[0].path
                raise TypeError(
                    f"[recis.io] column {name!r} in {src.path} is {describe(t)}, but {describe(types[name])} in "
                    f"{first}: the schema changed between files"
                )
        for name in names:
            types.setdefault(name, src.schema.field(name).type)
        return src

    # ---- iteration -----------------------------------------------------------------------------

    def _current_shard(self) -> tuple[int, int]:
        worker = get_worker_info()
        if worker is None:
            return self.rank, self.world_size
        return self.rank * worker.num_workers + worker.id, self.world_size * worker.num_workers

    def __iter__(self) -> Iterator[Batch]:
        self._shard = shard, num_shards = self._current_shard()
        order = epoch_order([s.piece_rows for s in self.sources], bool(self.shuffle_window), self.seed, self._epoch)
        lo, hi = shard_bounds(self.num_rows, shard, num_shards)
        window = self.shuffle_window
        skip = (self._cursor // window) * window if window else self._cursor
        job = Job(
            fs=self._fs,
            sources=self.sources,
            types=self.types,
            fills=self._fills,
            indicators=frozenset(self.missing_indicators),
            string_hashes=self._hashes,
            slices=shard_slices(order, lo, hi, skip),
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            window=window,
            key=(self.seed, self._epoch, shard),
            drop=self._cursor - skip,
            skip_errors=self.skip_errors,
            skipped=self.skipped,
            num_threads=self.num_threads,
            pin_memory=self.pin_memory,
        )
        prefetcher = Prefetcher(lambda: produce(job), self.prefetch)
        try:
            for batch, cursor in prefetcher:
                self._cursor = cursor  # before the yield: a state taken while the batch is used excludes it
                yield batch
            self._epoch, self._cursor = self._epoch + 1, 0
        finally:
            prefetcher.close()

    @property
    def shard_rows(self) -> int:
        """Rows of this process's shard (before DataLoader workers split it further)."""
        lo, hi = shard_bounds(self.num_rows, self.rank, self.world_size)
        return hi - lo

    # ---- state ---------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Starts the next iteration at the beginning of `epoch` (which picks the shuffle order)."""
        self._epoch, self._cursor = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        """The exact position: epoch and rows of this shard's stream already handed out.

        Examples:
            >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
            >>> path = tempfile.mkdtemp() + "/part-0.parquet"
            >>> pq.write_table(pa.table({"x": list(range(10))}), path)
            >>> reader = ColumnReader(path, batch_size=4, shuffle=True, shuffle_window=8)
            >>> it = iter(reader); first = next(it)["x"].tolist(); state = reader.state_dict(); del it
            >>> again = ColumnReader(path, batch_size=4, shuffle=True, shuffle_window=8)
            >>> again.load_state_dict(state)
            >>> sorted(first + [x for b in again for x in b["x"].tolist()])
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        """
        shard, num_shards = self._shard
        return {
            "epoch": self._epoch,
            "cursor": self._cursor,
            "shard": shard,
            "num_shards": num_shards,
            "seed": self.seed,
            "shuffle_window": self.shuffle_window,
            "files": self._fingerprint,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resumes at `state` (from `state_dict()` of a reader over the same files, shard and shuffle)."""
        mine = self.state_dict() | {"shard": self._current_shard()[0], "num_shards": self._current_shard()[1]}
        differ = [k for k in ("files", "shard", "num_shards", "seed", "shuffle_window") if state.get(k) != mine[k]]
        if differ:
            details = ", ".join(f"{k}: saved {state.get(k)!r}, here {mine[k]!r}" for k in differ)
            raise ValueError(f"[recis.io] cannot resume: the state is from another reader setup ({details})")
        self._epoch, self._cursor = int(state["epoch"]), int(state["cursor"])


def _check_options(
    batch_size: int, window: int, num_threads: int, prefetch: int, nulls: str, on_error: str, fmt: str | None
) -> None:
    for name, value in (("batch_size", batch_size), ("shuffle_window", window), ("num_threads", num_threads)):
        if value < 1:
            raise ValueError(f"[recis.io] {name} must be >= 1, got {value}")
    if prefetch < 0:
        raise ValueError(f"[recis.io] prefetch must be >= 0, got {prefetch}")
    if nulls not in ("error", "fill"):
        raise ValueError(f"[recis.io] nulls must be 'error' or 'fill', got {nulls!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"[recis.io] on_error must be 'raise' or 'skip', got {on_error!r}")
    if fmt not in (None, *FORMATS):
        raise ValueError(f"[recis.io] format must be one of {FORMATS} or None, got {fmt!r}")


def _type_name(t: pa.DataType | str | None) -> str | None:
    if t is None or isinstance(t, str):
        return None if t is None else t.replace(" ", "")
    return describe(t)


def _fills(types: dict[str, pa.DataType], values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(types)
    if unknown:
        raise ValueError(f"[recis.io] fill_values names columns that are not read: {sorted(unknown)}")
    return {n: values[n] if n in values else default_fill(innermost(t)) for n, t in types.items()}


def _string_hashes(
    types: dict[str, pa.DataType], string_hash: StringHash | Mapping[str, StringHash] | None
) -> dict[str, StringHash]:
    strings = [n for n in types if "string" in describe(types[n]) or "binary" in describe(types[n])]
    if string_hash is None:
        return {}
    if callable(string_hash):
        return dict.fromkeys(strings, string_hash)
    wrong = set(string_hash) - set(strings)
    if wrong:
        raise ValueError(f"[recis.io] string_hash names columns that are not string columns read: {sorted(wrong)}")
    return dict(string_hash)
