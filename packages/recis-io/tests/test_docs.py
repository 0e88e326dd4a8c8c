"""The `Examples:` blocks of recis.io's docstrings run and print what they claim."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["recis.io.convert", "recis.io.reader", "recis.io.windows"])
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
