"""Dynamic hash-table embeddings: an ID map plus row blocks that grow, forget and stay fast.

`HashTable` is one table (C++ in recis-core), `DeviceTable` the same kept on a device (a GPU) in
tensor ops, `FrozenTable` a read-only one for inference (rows in float32, float16, bfloat16 or
int8); `EmbeddingEngine` maps a batch of ID features to embeddings through merged tables; `concat`
joins pooled outputs (without a copy when they share a table); `ops.pooled_embedding` is the
differentiable pooled lookup; `owner` says which rank owns an ID.
"""

from .device_table import DeviceTable, Table
from .engine import EmbeddingEngine, EmbeddingSpec, concat, without_tables
from .frozen import FrozenTable
from .ops import PooledGrad, SparseGrad, pooled_embedding, pooled_embedding_reference
from .sharding import owner
from .table import Eviction, HashTable, Initializer, Lookup

__version__ = "0.1.0"
__all__ = [
    "DeviceTable",
    "EmbeddingEngine",
    "EmbeddingSpec",
    "Eviction",
    "FrozenTable",
    "HashTable",
    "Initializer",
    "Lookup",
    "PooledGrad",
    "SparseGrad",
    "Table",
    "concat",
    "owner",
    "pooled_embedding",
    "pooled_embedding_reference",
    "without_tables",
]
