"""Sparse optimizers over hash-table rows (SGD, Adagrad, row-wise Adagrad, Adam/AdamW in torch and
TF flavours, FTRL), fused per row in C++, plus the helpers that pair them with dense optimizers.
"""

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
    "split_parameters",
]
