"""pytest-benchmark: Criteo-style featurization, FeatureEngine vs per-row Python + torch, same run.

Workload (one batch of ROWS rows): 26 categorical columns of 8-hex-digit strings (about 4% empty,
as in the Criteo sample) hashed to 2^20 buckets, 13 integer columns (about 20% missing as NaN)
filled and bucketized at powers of two, and 2 crosses of hashed columns. Ours gets the batch as
the reader delivers it (Arrow-layout string Raggeds, float32 tensors). The baseline does the same
with per-row Python on Python strings, the fastest form for it (`hashlib` blake2b, the fastest
hashlib digest here; string concatenation for crosses, as pandas code would) and torch ops for
the numeric columns. Rows/s = ROWS / median.
"""

from __future__ import annotations

import hashlib
import random

import pytest
import torch

from recis.core import Ragged
from recis.features import Bucketize, Cross, Feature, FeatureEngine, FillMissing, Hash, string_column

ROWS = 16384
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
NUMERIC = [f"I{i}" for i in range(1, 14)]
CROSSES = [("C1", "C2"), ("C3", "C4")]
BUCKETS = 2**20
BOUNDARIES = [0.0] + [float(2**i) for i in range(20)]


def make_batch(rows: int, seed: int = 0) -> tuple[dict[str, Ragged | torch.Tensor], dict[str, list[str]]]:
    """(batch as the reader delivers it: Arrow-layout strings and float32 numbers, the strings as Python lists)."""
    rnd = random.Random(seed)
    strings = {
        c: [f"{rnd.getrandbits(32):08x}" if rnd.random() > 0.04 else "" for _ in range(rows)] for c in CATEGORICAL
    }
    batch: dict[str, Ragged | torch.Tensor] = {c: string_column(v) for c, v in strings.items()}
    gen = torch.Generator().manual_seed(seed)
    for c in NUMERIC:
        v = torch.randint(0, 2**16, (rows,), generator=gen).float()
        v[torch.rand(rows, generator=gen) < 0.2] = float("nan")
        batch[c] = v
    batch["label"] = torch.randint(0, 2, (rows,), generator=gen)
    return batch, strings


def make_engine() -> FeatureEngine:
    features = [Feature(c, ops=[Hash("farm", buckets=BUCKETS)]) for c in CATEGORICAL]
    features += [Feature(c, ops=[FillMissing(0.0), Bucketize(BOUNDARIES)]) for c in NUMERIC]
    features += [Feature(f"{a}_x_{b}", ops=[Cross([a, b], buckets=BUCKETS)]) for a, b in CROSSES]
    return FeatureEngine(features)


def _hash(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % BUCKETS


def baseline(batch: dict[str, Ragged | torch.Tensor], strings: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """The same featurization in per-row Python (hashlib) and torch ops."""
    out: dict[str, torch.Tensor] = {c: torch.tensor([_hash(s) for s in strings[c]]) for c in CATEGORICAL}
    bounds = torch.tensor(BOUNDARIES)
    for c in NUMERIC:
        x = batch[c]
        assert isinstance(x, torch.Tensor)
        out[c] = torch.bucketize(torch.nan_to_num(x, nan=0.0), bounds, right=True)
    for a, b in CROSSES:
        out[f"{a}_x_{b}"] = torch.tensor([_hash(f"{x}_{y}") for x, y in zip(strings[a], strings[b], strict=True)])
    out["label"] = batch["label"]  # type: ignore[assignment]
    return out


BATCH, STRINGS = make_batch(ROWS)


@pytest.mark.parametrize("impl", ["baseline", "ours"])
def test_featurize_criteo_batch(benchmark, impl):
    benchmark.group = f"Criteo featurization, {ROWS} rows: 26 hashed strings, 13 bucketized numbers, 2 crosses"
    benchmark.extra_info["role"] = impl
    benchmark.extra_info["rows"] = ROWS
    if impl == "baseline":
        out = benchmark(baseline, BATCH, STRINGS)
    else:
        engine = make_engine()
        out = benchmark(engine, BATCH)
    assert len(out) == len(CATEGORICAL) + len(NUMERIC) + len(CROSSES) + 1
    assert all(out[c].shape == (ROWS,) for c in CATEGORICAL + NUMERIC)
