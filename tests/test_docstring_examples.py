"""The `Examples:` blocks in public docstrings run and print what they claim.

recis.io's and recis.train's examples run beside their packages (packages/*/tests/test_docs.py);
this list holds the rest, each module once.
"""

import doctest
import importlib

import pytest
import torch

import recis.core
from recis.core import Ragged

MODULES = [
    "recis.core.kernels",
    "recis.core.ragged",
    "recis.core.threads",
    "recis.embedding.engine",
    "recis.embedding.interop",
    "recis.embedding.sharding",
    "recis.embedding.table",
    "recis.features.columns",
    "recis.features.config",
    "recis.features.cross",
    "recis.features.engine",
    "recis.features.fused",
    "recis.features.hashing",
    "recis.features.numeric",
    "recis.features.ops",
    "recis.features.transforms",
    "recis.optim.checkpoint",
    "recis.optim.params",
    "recis.optim.sparse",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(name)
    try:
        result = doctest.testmod(module, extraglobs={"torch": torch, "Ragged": Ragged}, optionflags=doctest.ELLIPSIS)
    finally:
        recis.core.set_num_threads(None)  # the threads example pins the pool
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
