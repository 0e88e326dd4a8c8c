"""Columnar reader: Parquet and ORC (via pyarrow) to batches of tensors and `Ragged` lists.

The reader itself arrives with its issue; this package already declares its place in the stack:
it depends only on recis-core.
"""

__version__ = "0.1.0"
