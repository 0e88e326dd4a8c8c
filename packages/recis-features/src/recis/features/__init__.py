"""Feature engine: hash, bucketize, mod, cross and truncate features, fused across features per call.

So far: string hashing (`hash_strings`, FarmHash Fingerprint64 as in TensorFlow, or MurmurHash3) and
ID re-hashing (`hash_ids`), `bucketize` and `mod`;
the other ops and the engine arrive with their issue. Depends only on recis-core.
"""

from .hashing import encode_strings, hash_ids, hash_strings
from .transforms import bucketize, mod

__version__ = "0.1.0"
__all__ = ["bucketize", "encode_strings", "hash_ids", "hash_strings", "mod"]
