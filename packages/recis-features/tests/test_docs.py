"""The Python blocks of docs/features.md and the package README run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
DOCS = [ROOT / "docs" / "features.md", ROOT / "packages" / "recis-features" / "README.md"]


def blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, capsys):
    found = blocks(path)
    assert found, f"{path} has no python blocks"
    for code in found:
        exec(compile(code, str(path), "exec"), {})
