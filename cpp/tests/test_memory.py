"""recis.core.keep_freed_memory: freed blocks come back without page faults."""

import subprocess
import sys

import pytest

import recis.core

# Four 4 MiB tensors made and freed together, twenty times: the page faults of one round after
# three warm-up rounds, in a fresh interpreter (the setting is process-wide).
ROUNDS = """
import resource, sys, torch
import recis.core
if sys.argv[1] == "keep":
    assert recis.core.keep_freed_memory()
def rounds(n):
    for _ in range(n):
        xs = [torch.ones(1 << 20) for _ in range(4)]
        del xs
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_blocks_are_reused_without_page_faults():
    default = faults_per_round("default")
    if default < 50:
        pytest.skip(f"this allocator keeps the blocks already ({default} faults a round)")
    kept = faults_per_round("keep")
    assert kept <= 2 < default  # 0 here, against ~4,000 (16 MiB a round)


def test_keep_freed_memory_checks_its_limit():
    with pytest.raises(ValueError, match=r"expected limit >= 131072 bytes \(128 KiB\), got 4096"):
        recis.core.keep_freed_memory(4096)
