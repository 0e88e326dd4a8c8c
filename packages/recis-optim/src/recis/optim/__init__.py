"""Sparse optimizers over hash-table rows (SGD, Adagrad, row-wise Adagrad, Adam/AdamW in torch and
TF flavours, FTRL), fused per row in C++, the helpers that pair them with dense optimizers, and
`Saver`, the checkpoint writer and loader (parallel SafeTensors shards, deltas, crash-safe publish).
"""

from .checkpoint import Saver, complete_checkpoints, latest
from .params import clip_grad_norm_, split_parameters
from .sparse import (
    SparseAdagrad,
    SparseAdam,
    SparseAdamTF,
    SparseAdamW,
    SparseAdamWTF,
    SparseFtrl,
    SparseOptimizer,
    SparseRowWiseAdagrad,
    SparseSGD,
)

__version__ = "0.1.0"
__all__ = [
    "Saver",
    "SparseAdagrad",
    "SparseAdam",
    "SparseAdamTF",
    "SparseAdamW",
    "SparseAdamWTF",
    "SparseFtrl",
    "SparseOptimizer",
    "SparseRowWiseAdagrad",
    "SparseSGD",
    "clip_grad_norm_",
    "complete_checkpoints",
    "latest",
    "split_parameters",
]
