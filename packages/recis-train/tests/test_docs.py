"""The `Examples:` blocks of recis.train's docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "recis.train.metrics",
    "recis.train.objectives",
    "recis.train.pipeline",
    "recis.train.checkpoint",
    "recis.train.stages",
    "recis.train.hooks",
    "recis.train.report",
    "recis.train.trainer",
    "recis.train.run_state",
    "recis.train.evaluation",
    "recis.train.demo",
    "recis.train.models.base",
    "recis.train.models.din",
    "recis.train.models.deepfm",
    "recis.train.models.transformer",
    "recis.train.models.logistic",
    "recis.train.models.dcn",
    "recis.train.models.wide_deep",
    "recis.train.models.mmoe",
    "recis.train.models.sim",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
