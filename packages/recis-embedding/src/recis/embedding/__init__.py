"""Dynamic hash-table embeddings: an ID map plus row blocks that grow, forget and stay fast.

The engine arrives with its issue; this package depends only on recis-core.
"""

__version__ = "0.1.0"
