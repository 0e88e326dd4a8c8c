"""Sparse optimizers (Adam/AdamW, Adagrad, FTRL, ...) over hash-table rows, and the checkpoint saver.

They arrive with their issues; this package sits on recis-embedding.
"""

__version__ = "0.1.0"
