"""pytest-benchmark: string hashing, recis C++ vs a Python loop over pyfarmhash (same hash values).

Workload: one Criteo-like batch column set, 26 columns x 4096 rows of 8-hex-digit strings.
"""

import random

import farmhash
import pytest
import torch

from recis.features import encode_strings, hash_strings

ROWS, COLUMNS = 4096, 26
_rnd = random.Random(0)
STRINGS = [f"{_rnd.getrandbits(32):08x}" for _ in range(ROWS * COLUMNS)]
RAW = [s.encode() for s in STRINGS]
OFFSETS, DATA = encode_strings(STRINGS)


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_hash_criteo_strings(benchmark, impl):
    benchmark.group = f"FarmHash {COLUMNS} x {ROWS} Criteo-like strings, mod 2^20 buckets"
    benchmark.extra_info["role"] = impl
    if impl == "baseline":
        out = benchmark(lambda: torch.tensor([farmhash.fingerprint64(r) % 2**20 for r in RAW]))
    else:
        out = benchmark(hash_strings, OFFSETS, DATA, "farm", 2**20)
    assert out.shape == (ROWS * COLUMNS,)
