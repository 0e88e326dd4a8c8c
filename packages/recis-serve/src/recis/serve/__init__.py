"""Serving bundles of trained models: `Predictor` scores batches, rows or Parquet files; the
`recis-predict` and `recis-serve` commands wrap it. Bundles are written by `recis-export`
(recis-train); `bundle` holds their format.
"""

from . import bundle
from .bundle import BundleError
from .predictor import Predictor, RequestError

__version__ = "0.1.0"
__all__ = ["BundleError", "Predictor", "RequestError", "bundle"]
