"""Feature engine: hash, bucketize, mod, cross, truncate and numeric transforms, fused across features.

`FeatureEngine([Feature(name, source_column, ops=[...])])` maps a batch dict to a batch dict and
runs each op kind once per round for all features (one C++ call). The functions below are the
same ops on single columns. Depends only on recis-core.
"""

from .columns import Column, encode_strings, string_column
from .config import from_json, from_toml, to_json, to_toml
from .cross import cross
from .engine import Feature, FeatureEngine
from .hashing import hash_ids, hash_strings, multi_hash
from .numeric import clip, fill_missing, log1p, standardize
from .ops import Bucketize, Clip, Cross, FillMissing, Hash, Log1p, Mod, MultiHash, Op, Standardize, Truncate
from .transforms import bucketize, mod, truncate

__version__ = "0.1.0"
__all__ = [
    "Bucketize",
    "Clip",
    "Column",
    "Cross",
    "Feature",
    "FeatureEngine",
    "FillMissing",
    "Hash",
    "Log1p",
    "Mod",
    "MultiHash",
    "Op",
    "Standardize",
    "Truncate",
    "bucketize",
    "clip",
    "cross",
    "encode_strings",
    "fill_missing",
    "from_json",
    "from_toml",
    "hash_ids",
    "hash_strings",
    "log1p",
    "mod",
    "multi_hash",
    "standardize",
    "string_column",
    "to_json",
    "to_toml",
    "truncate",
]
