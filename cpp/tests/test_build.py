"""Properties of the built extension: no libtorch link, generated stubs, version agreement."""

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

import recis.core
from recis.core import _C
from recis.core._C import common


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ldd") is None, reason="needs ldd")
def test_extension_links_no_libtorch():
    out = subprocess.run(["ldd", _C.__file__], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]  # not the load addresses
    assert any(n.startswith("libstdc++") for n in names), out  # ldd really listed the dependencies
    assert not [n for n in names if "torch" in n or n.startswith("libc10")], out


def test_stubs_are_generated_and_installed():
    stubs = Path(_C.__file__).with_name("_C")
    common, embedding = (stubs / "common.pyi").read_text(), (stubs / "embedding.pyi").read_text()
    for name in ("def ragged_select", "def ragged_truncate", "def ragged_to_dense", "def validate_offsets"):
        assert name in common
    assert "class HashTable" in embedding and "def route_keys" in embedding
    assert {p.name for p in stubs.glob("*.pyi")} == {"__init__.pyi", "common.pyi", "embedding.pyi", "features.pyi",
                                                    "optim.pyi"}  # fmt: skip


def test_versions_agree():
    assert recis.core.__version__ == _C.version == metadata.version("recis-core")
    assert _C.with_cuda is False


def test_output_block_cache_keeps_and_releases_blocks():
    from recis.core import Ragged

    r = Ragged.from_lengths(torch.arange(1_000_000), torch.full((1000,), 1000))
    common.set_buffer_cache_limit(0)  # start empty: a cached block of the same size would be reused
    common.set_buffer_cache_limit(1 << 30)
    before = common.buffer_cache_bytes()
    out = r.select(torch.arange(1000))  # an 8 MB output ...
    del out  # ... freed at once
    assert common.buffer_cache_bytes() > before  # the freed block is kept for reuse
    common.set_buffer_cache_limit(0)
    assert common.buffer_cache_bytes() == 0
    common.set_buffer_cache_limit(1 << 30)
