"""Columnar reader: Parquet and ORC (via pyarrow) to batches of tensors and `Ragged` lists.

`ColumnReader` reads files into fixed-size, shardable, resumable batches; `Windows` walks the
time-partitioned directories of an online stream in order. recis-io depends only on recis-core.
"""

from .convert import StringHash, to_torch
from .reader import ColumnReader

__version__ = "0.1.0"

__all__ = ["ColumnReader", "StringHash", "to_torch"]
