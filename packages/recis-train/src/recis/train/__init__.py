"""Trainer, metrics, example models and the `recis-train` command line.

They arrive with their issue; this package composes every lower layer.
"""

__version__ = "0.1.0"
