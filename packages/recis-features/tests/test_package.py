"""recis-features installs as its own wheel: importable, with the version its pyproject declares."""

import tomllib
from importlib import metadata
from pathlib import Path

import recis.features


def test_version_matches_pyproject():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert recis.features.__version__ == pyproject["project"]["version"] == metadata.version("recis-features")
