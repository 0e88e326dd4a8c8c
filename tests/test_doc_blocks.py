"""The Python blocks of README.md and the cross-package docs run as written (each file's blocks
in order, sharing one namespace)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md"] + [ROOT / "docs" / f for f in ("optim.md", "checkpoints.md", "gpu.md", "from-torchrec.md")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path):
    found = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    assert found, f"{path} has no python blocks"
    namespace: dict = {}
    for code in found:
        exec(compile(code, str(path), "exec"), namespace)
