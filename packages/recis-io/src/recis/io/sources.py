"""Files: expanding paths, directories and globs; reading footers; decoding one row group or stripe.

Everything goes through a `pyarrow.fs.FileSystem`, so local paths, pyarrow's URLs (s3://, gs://,
hdfs://) and, when fsspec is installed, any fsspec URL read the same way.
"""

from __future__ import annotations

import fnmatch
import importlib
import threading
from dataclasses import dataclass
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.fs as pafs  # type: ignore[import-untyped]
import pyarrow.orc as orc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

FORMATS = ("parquet", "orc")
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".parq": "parquet", ".orc": "orc"}
_GLOB = set("*?[")


@dataclass(frozen=True)
class Source:
    """One file: its format, schema and the rows of each row group (Parquet) or stripe (ORC)."""

    path: str
    format: str
    schema: pa.Schema
    piece_rows: tuple[int, ...]

    @property
    def piece_name(self) -> str:
        return "row group" if self.format == "parquet" else "stripe"


def filesystem_for(path: str, filesystem: Any = None) -> tuple[pafs.FileSystem, str]:
    """Resolves a path or URL to (pyarrow filesystem, path inside it).

    `filesystem` may be a pyarrow or fsspec filesystem; URLs pyarrow does not know go to fsspec.
    """
    if filesystem is not None:
        if not isinstance(filesystem, pafs.FileSystem):  # an fsspec filesystem: pyarrow wraps it
            filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        return filesystem, path
    if "://" not in path:
        return pafs.LocalFileSystem(), path
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as arrow_error:
        try:
            # Optional: fsspec is not a dependency of recis-io, so it is looked up only for such URLs.
            fsspec = importlib.import_module("fsspec")
        except ImportError:
            raise ValueError(
                f"[recis.io] pyarrow cannot open {path!r} ({arrow_error}) and fsspec is not installed; "
                "pip install fsspec (and its plugin for this scheme)"
            ) from None
        fs, inner = fsspec.core.url_to_fs(path)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def _hidden(name: str) -> bool:
    # Hive/Spark convention (and pyarrow.dataset's): _SUCCESS, _metadata, .crc files are not data.
    return name.startswith(("_", "."))


def list_files(fs: pafs.FileSystem, path: str) -> list[str]:
    """A file, every data file under a directory (recursively, sorted), or the matches of a glob."""
    if _GLOB & set(path):
        cut = min(path.index(c) for c in _GLOB if c in path)
        base = path[:cut].rsplit("/", 1)[0] if "/" in path[:cut] else "."
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        names = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path))
        matched = [n for n in names if not _hidden(n.rsplit("/", 1)[-1])]
        if not matched:
            raise FileNotFoundError(f"[recis.io] no file matches {path!r}")
        return matched
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"[recis.io] no such file or directory: {path!r}")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    relative = lambda i: i.path[len(path.rstrip("/")) + 1 :]
    files = [i for i in infos if i.type == pafs.FileType.File]
    return sorted(i.path for i in files if not any(_hidden(part) for part in relative(i).split("/")))


def detect_format(fs: pafs.FileSystem, path: str) -> str:
    """By extension, else by magic bytes (Parquet starts with PAR1, ORC with ORC)."""
    for ext, fmt in _EXTENSIONS.items():
        if path.lower().endswith(ext):
            return fmt
    with fs.open_input_file(path) as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:3] == b"ORC":
        return "orc"
    raise ValueError(f"[recis.io] {path}: neither Parquet nor ORC (pass format='parquet' or 'orc')")


def inspect(fs: pafs.FileSystem, path: str, fmt: str | None) -> Source:
    """Reads a file's footer; raises ValueError naming the file when it is empty or not readable."""
    fmt = fmt or detect_format(fs, path)
    if fs.get_file_info(path).size == 0:
        raise ValueError(f"[recis.io] {path}: empty file (0 bytes)")
    try:
        with fs.open_input_file(path) as f:
            if fmt == "parquet":
                meta = pq.ParquetFile(f).metadata
                rows = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
                schema = meta.schema.to_arrow_schema()
            else:
                of = orc.ORCFile(f)
                schema, rows = of.schema, _stripe_rows(of)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"[recis.io] {path}: cannot read the {fmt} footer (corrupt or truncated?): {e}") from e
    return Source(path, fmt, schema, rows)


_local = threading.local()


def read_piece(fs: pafs.FileSystem, source: Source, piece: int, columns: list[str]) -> pa.Table:
    """Decodes one row group or stripe (verifying Parquet page checksums); each thread keeps its last file open."""
    cached = getattr(_local, "file", None)
    if cached is None or cached[0] is not fs or cached[1] != source.path:
        handle = fs.open_input_file(source.path)
        # Pages written with a CRC are checked (pages without one are read as before): a flipped bit
        # in plain-encoded values otherwise decodes to a wrong number without any error.
        parquet = source.format == "parquet"
        reader = pq.ParquetFile(handle, page_checksum_verification=True) if parquet else orc.ORCFile(handle)
        _local.file = cached = (fs, source.path, reader)
    reader = cached[2]
    if source.format == "parquet":
        return reader.read_row_group(piece, columns=columns)
    return pa.Table.from_batches([reader.read_stripe(piece, columns=columns)])


def _stripe_rows(of: orc.ORCFile) -> tuple[int, ...]:
    # pyarrow exposes no per-stripe row count, but it does expose the ORC file tail (protobuf):
    # FileTail.footer (2) -> Footer.stripes (3) -> StripeInformation.numberOfRows (5).
    try:
        footer = next(v for k, v in _proto_fields(of.reader.serialized_file_tail()) if k == 2)
        rows = tuple(dict(_proto_fields(s)).get(5, 0) for k, s in _proto_fields(footer) if k == 3)
        if len(rows) == of.nstripes and sum(rows) == of.nrows:
            return rows
    except (AttributeError, StopIteration, IndexError, ValueError, TypeError):  # a damaged tail: count rows instead
        pass
    first = of.schema.names[:1]  # fallback: decode one column per stripe
    return tuple(of.read_stripe(i, columns=first).num_rows for i in range(of.nstripes))


def _proto_fields(buf: bytes) -> list[tuple[int, Any]]:
    """The (field number, value) pairs of a protobuf message: varints as int, length-delimited as bytes."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if byte < 0x80:
                return value, i

    out: list[tuple[int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = varint(i)
        wire = key & 7
        value: int | bytes
        if wire == 0:
            value, i = varint(i)
        elif wire == 2:
            size, i = varint(i)
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        out.append((key >> 3, value))
    return out
