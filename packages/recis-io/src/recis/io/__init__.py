"""Columnar reader: Parquet and ORC (via pyarrow) to batches of tensors and `Ragged` lists.

`ColumnReader` reads files into fixed-size, shardable, resumable batches; `Windows` walks the
time-partitioned directories of an online stream in order. recis-io depends only on recis-core.
"""

from .convert import StringHash, to_torch
from .reader import ColumnReader
from .windows import Window, Windows

__version__ = "0.1.0"

__all__ = ["ColumnReader", "StringHash", "Window", "Windows", "to_torch"]
