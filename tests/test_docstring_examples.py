"""The `Example:` blocks in public docstrings run and print what they claim."""

import doctest
import importlib

import pytest
import torch

from recis.core import Ragged

MODULES = [
    "recis.core.ragged",
    "recis.core.threads",
    "recis.embedding.engine",
    "recis.embedding.table",
    "recis.features.hashing",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch, "Ragged": Ragged}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
