"""Every wheel carries the license and its metadata; every command answers --version."""

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PROJECTS = [ROOT / "cpp", *sorted((ROOT / "packages").glob("recis-*"))]
COMMANDS = {"recis-train": "recis-train", "recis-export": "recis-train", "recis-predict": "recis-serve",
            "recis-serve": "recis-serve"}  # fmt: skip


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_wheel_carries_the_license_and_metadata(project):
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    assert (project / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()  # copies must not drift
    installed = metadata.metadata(meta["name"])
    assert installed.get_all("License-File") == ["LICENSE"] and installed["License-Expression"] == "Apache-2.0"
    assert installed["Author"] and installed.get_all("Classifier")


@pytest.mark.slow  # starts five processes, each importing torch
@pytest.mark.parametrize("command", [*COMMANDS, "demo"])
def test_every_command_prints_its_version(command):
    args = [sys.executable, "-m", "recis.train.demo"] if command == "demo" else [Path(sys.executable).parent / command]
    out = subprocess.run([*args, "--version"], capture_output=True, text=True, check=True).stdout
    dist = COMMANDS.get(command, "recis-train")
    assert f"{dist} {metadata.version(dist)}, recis-core {metadata.version('recis-core')}, torch " in out
