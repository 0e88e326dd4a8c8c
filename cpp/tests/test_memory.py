"""recis.core.keep_freed_memory: freed blocks come back without page faults."""

import ctypes
import subprocess
import sys

import pytest

import recis.core

# In a fresh interpreter (the setting is process-wide): where glibc put a 24 MiB tensor (MiB in
# mmapped blocks while it lives), the MiB its heap keeps free once it is freed, then the page faults
# of the median round of four 4 MiB tensors made and freed together (after three warm-up rounds).
SCRIPT = """
import ctypes, resource, sys, torch
import recis.core
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert recis.core.keep_freed_memory()
before = libc.mallinfo2().hblkhd
x = torch.ones(6 << 20)
mapped = libc.mallinfo2().hblkhd - before
del x
kept = libc.mallinfo2().fordblks
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def round_():
    xs = [torch.ones(1 << 20) for _ in range(4)]
    del xs
for _ in range(3):
    round_()
counts = []
for _ in range(21):
    start = faults()
    round_()
    counts.append(faults() - start)
print(mapped >> 20, kept >> 20, sorted(counts)[10])
"""


def run(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.split()[-3:]]


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc >= 2.33 only")
def test_freed_blocks_stay_in_the_heap_and_come_back_without_page_faults():
    mapped, kept, _ = run("default")
    if mapped < 24 or kept >= 1:
        pytest.skip(f"this glibc does not map and return a 24 MiB block by default ({mapped}, {kept} MiB)")
    mapped, kept, median_faults = run("keep")
    assert mapped == 0 and kept >= 24  # from the heap, and kept there once freed
    assert median_faults == 0  # rounds reuse the kept blocks


def test_keep_freed_memory_checks_its_limit():
    with pytest.raises(ValueError, match=r"expected limit >= 131072 bytes \(128 KiB\), got 4096"):
        recis.core.keep_freed_memory(4096)
