"""Feature engine: hash, bucketize, mod, cross and truncate features, fused across features per call.

The ops arrive with their issue; this package depends only on recis-core.
"""

__version__ = "0.1.0"
