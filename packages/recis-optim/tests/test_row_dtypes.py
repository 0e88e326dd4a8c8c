"""bfloat16 / float16 rows: every path (lookup, pooling, sequences, each optimizer two-phase and
fused, checkpoints, state_dict) against the float32 table whose rows are rounded the same way in
torch after each change: the same arithmetic in float32, then torch's round to nearest even."""

from __future__ import annotations

import pytest
import torch

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec, HashTable, Initializer, SparseGrad
from recis.optim import (
    Saver,
    SparseAdagrad,
    SparseAdam,
    SparseAdamTF,
    SparseAdamW,
    SparseFtrl,
    SparseRowWiseAdagrad,
    SparseSGD,
)

DTYPES = [torch.bfloat16, torch.float16]
OPTIMIZERS = {
    "sgd": lambda e, f: SparseSGD(e, lr=0.1),
    "adagrad": lambda e, f: SparseAdagrad(e, lr=0.1),
    "rowwise_adagrad": lambda e, f: SparseRowWiseAdagrad(e, lr=0.1, fused=f),
    "adam": lambda e, f: SparseAdam(e, lr=0.05, fused=f),
    "adamw": lambda e, f: SparseAdamW(e, lr=0.05, weight_decay=0.1),
    "adam_tf": lambda e, f: SparseAdamTF(e, lr=0.05),
    "ftrl": lambda e, f: SparseFtrl(e, lr=0.1, l1=0.01, fused=f),
}
FUSED = {"rowwise_adagrad", "adam", "ftrl"}


def engine(dtype: torch.dtype) -> EmbeddingEngine:
    init = Initializer.uniform(-1, 1)
    return EmbeddingEngine(
        {
            "bag": EmbeddingSpec(8, dtype=dtype, initializer=init),
            "user": EmbeddingSpec(8, dtype=dtype, initializer=init, combiner="mean"),
            "seq": EmbeddingSpec(8, dtype=dtype, initializer=init, combiner=None, table="bag"),
        }
    )


def batches(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    out = []
    for k in range(n):
        rows = 1 if k == 0 else 64  # one row, then a batch with empty bags and 64-bit/negative IDs
        lengths = torch.randint(0, 6, (rows,), generator=g)
        ids = torch.randint(-50, 50, (int(lengths.sum()),), generator=g) * (2**40 if k % 2 else 1)
        weights = torch.rand(len(ids), generator=g)
        out.append({
            "bag": Ragged.from_lengths(ids, lengths, weights),
            "user": torch.randint(-(2**62), 2**62, (rows,), generator=g),
            "seq": Ragged.from_lengths(ids.flip(0), lengths),
        })  # fmt: skip
    return out


def loss(out: dict) -> torch.Tensor:
    return out["bag"].sin().sum() + (out["user"] * 3).sum() + out["seq"].values.square().sum()


def round_rows(e: EmbeddingEngine, dtype: torch.dtype) -> None:
    """The float32 twin: every row rounded to `dtype`, as the 16-bit table stores it."""
    for t in e.tables().values():
        state = t.state_dict()
        t.load_state_dict(state | {"embeddings": state["embeddings"].to(dtype).float()})


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize(("kind", "fused"), [(k, False) for k in OPTIMIZERS] + [(k, True) for k in sorted(FUSED)])
def test_half_rows_train_as_float_rows_rounded(dtype, kind, fused):
    half, twin = engine(dtype), engine(torch.float32)
    opts = OPTIMIZERS[kind](half, fused), OPTIMIZERS[kind](twin, fused)
    for batch in batches():
        for e, opt in ((half, opts[0]), (twin, opts[1])):
            opt.zero_grad()
            if e is twin:
                e(batch)  # inserts the batch's new rows, which the 16-bit table stores rounded
                e.clear_sparse_grads()
                round_rows(e, dtype)
            out = e(batch)
            loss(out).backward()
            opt.step()
        round_rows(twin, dtype)
        with torch.no_grad():
            half.eval(), twin.eval()
            a, b = half(batch), twin(batch)
            half.train(), twin.train()
        assert torch.equal(a["bag"], b["bag"]) and torch.equal(a["user"], b["user"])
        assert torch.equal(a["seq"].values, b["seq"].values) and a["bag"].dtype == torch.float32
    for (name, t), u in zip(half.tables().items(), twin.tables().values(), strict=True):
        s, r = t.state_dict(), u.state_dict()
        assert s["embeddings"].dtype == dtype
        assert torch.equal(s["embeddings"].float(), r["embeddings"]), name
        same = [k for k in s if k in ("ids", "tags") or k.startswith("slot.")]  # the twin's extra forward moved steps
        assert all(torch.equal(s[k], r[k]) for k in same), name  # slots float32 alike


def test_stochastic_rounding_keeps_small_updates_and_repeats():
    def run(rounding: str) -> torch.Tensor:
        t = HashTable(4, Initializer.constant(1.0), dtype=torch.bfloat16, rounding=rounding)
        opt = SparseSGD(t, lr=1e-4)  # one step moves a row by 1e-4; bf16's spacing at 1.0 is 2^-7
        for _ in range(500):
            opt.accumulate([SparseGrad(t, t.lookup(torch.tensor([5]), step=1).rows, torch.ones(1, 4))])
            opt.step()
        return t.state_dict()["embeddings"].float()

    nearest, stochastic = run("nearest"), run("stochastic")
    assert torch.equal(nearest, torch.ones(1, 4))  # every update rounds away
    assert float((stochastic - (1 - 500 * 1e-4)).abs().max()) < 0.02  # 0.95 on average, kept
    assert torch.equal(stochastic, run("stochastic"))  # the rounding noise is a function of row and step


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_checkpoints_keep_the_dtype_and_load_across_dtypes(tmp_path, dtype):
    e = engine(dtype)
    opt = SparseAdam(e, lr=0.05)
    for batch in batches(2):
        loss(e(batch)).backward()
        opt.step()
        opt.zero_grad()
    Saver(tmp_path, e, optimizers=[opt]).save(1)
    import json

    index = json.loads((tmp_path / "step-0000000001" / "index.json").read_text())
    assert {t["dtype"] for t in index["tables"].values()} == {str(dtype).removeprefix("torch.")}
    want = {n: t.state_dict() for n, t in e.tables().items()}
    for into in (dtype, torch.float32):  # the same dtype exactly; float32 holds every 16-bit value
        f = engine(into)
        Saver(tmp_path, f, optimizers=[SparseAdam(f, lr=0.05)]).load()
        for name, t in f.tables().items():
            got = t.state_dict()
            assert got["embeddings"].dtype == into
            assert torch.equal(got["embeddings"].float(), want[name]["embeddings"].float())
            assert torch.equal(got["slot.adam.m"], want[name]["slot.adam.m"])


def test_memory_per_row_and_bad_settings():
    f32, bf16 = HashTable(64), HashTable(64, dtype=torch.bfloat16)
    for t in (f32, bf16):
        t.add_slot("rowwise_adagrad.sum", 1)
        t.lookup(torch.arange(100_000), step=1)
    blocks = -(-100_000 // 8192) * 8192  # rows allocated, in whole blocks
    assert f32.memory_bytes() - bf16.memory_bytes() == blocks * 64 * 2  # 2 bytes fewer per value; all else equal
    with pytest.raises(ValueError, match="dtype must be float32, bfloat16 or float16"):
        HashTable(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="'stochastic' for bfloat16"):
        HashTable(4, dtype=torch.float16, rounding="stochastic")
    with pytest.raises(ValueError, match="tables on a device store float32 rows"):
        EmbeddingEngine({"a": EmbeddingSpec(4, dtype=torch.bfloat16, device="cpu")})
    with pytest.raises(ValueError, match="rounding must be 'nearest', or 'stochastic' with bfloat16"):
        EmbeddingEngine({"a": EmbeddingSpec(4, rounding="stochastic")})


def rows_state(embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    n = len(embeddings)
    zeros = torch.zeros(n, dtype=torch.int64)
    return {"ids": torch.arange(n), "tags": zeros.int(), "steps": zeros, "freqs": zeros, "embeddings": embeddings}


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_rounding_matches_torch_on_every_kind_of_value(dtype):
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(-45, 38, 84, dtype=torch.float64).float()  # subnormals to near the float32 max
    values = torch.cat(
        [
            (torch.randn(84, 16, generator=g) * scales[:, None]).reshape(-1),
            torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3.4e38, -3.4e38, 65504.0, 65520.0, 1e-8, -1e-40]),
            torch.tensor([1.0 + k * 2**-9 for k in range(-8, 9)]),  # ties and near-ties at bf16 spacing
        ]
    )
    values = values[: len(values) // 4 * 4].reshape(-1, 4)
    t = HashTable(4, dtype=dtype)
    n = len(values)
    t.load_state_dict(rows_state(values))
    got, want = t.state_dict()["embeddings"], values.to(dtype)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))  # bit for bit: ties to even, infs, overflow
    nan = HashTable(4, dtype=dtype)
    nan.load_state_dict(rows_state(torch.full((1, 4), float("nan"))))
    assert bool(nan.state_dict()["embeddings"].isnan().all())
    assert torch.equal(t.lookup(torch.arange(n), insert=False).embeddings, want.float())  # widened exactly
