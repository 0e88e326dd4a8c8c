"""FrozenTable: read-only tables for inference, in float32, float16, bfloat16 and row-wise int8, read by
an eval-mode EmbeddingEngine exactly as it reads the training tables."""

import pytest
import torch

from recis.core import Ragged, reference
from recis.embedding import EmbeddingEngine, EmbeddingSpec, FrozenTable, Initializer
from recis.embedding.frozen import FrozenBags, dequantize_rows, frozen_embed_reference, quantize_rows

SPECS = {
    "user": EmbeddingSpec(8, initializer=Initializer.uniform(-1, 1)),
    "item": EmbeddingSpec(8, table="items", combiner="mean", initializer=Initializer.uniform(-1, 1)),
    "tags": EmbeddingSpec(8, combiner="sqrtn", initializer=Initializer.uniform(-1, 1), seed=1),  # all pooled: pool_keys
    "hist": EmbeddingSpec(8, table="items", combiner=None, max_len=4, initializer=Initializer.uniform(-1, 1)),
    "tile": EmbeddingSpec(8, table="items", combiner="tile", max_len=2, initializer=Initializer.uniform(-1, 1)),
    "recent": EmbeddingSpec(
        8, table="items", combiner=None, max_len=3, ragged=True, initializer=Initializer.uniform(-1, 1)
    ),
}


def batch(seed: int, rows: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 6, (rows,), generator=g)
    ids = lambda n, hi: torch.randint(-hi, hi, (n,), generator=g) * 7919
    n = int(lengths.sum())
    return {
        "user": ids(rows, 30),
        "item": Ragged.from_lengths(ids(n, 40), lengths),
        "tags": Ragged.from_lengths(ids(n, 10), lengths, torch.rand(n, generator=g) + 0.1),
        "hist": Ragged.from_lengths(ids(n, 40), lengths),
        "tile": Ragged.from_lengths(ids(n, 40), lengths),
        "recent": Ragged.from_lengths(ids(n, 40), lengths, torch.rand(n, generator=g)),
    }


def trained() -> EmbeddingEngine:
    engine = EmbeddingEngine(SPECS)
    for step in range(3):
        engine(batch(step))
    return engine.eval()


def frozen(engine: EmbeddingEngine, dtype: str) -> EmbeddingEngine:
    return EmbeddingEngine(SPECS).use_frozen([FrozenTable.from_table(t, dtype) for t in engine.tables().values()])


def assert_same(got: dict, want: dict, atol: float = 0.0) -> None:
    for name in SPECS:
        a, b = got[name], want[name]
        if isinstance(a, Ragged):
            assert torch.equal(a.offsets, b.offsets) and torch.equal(a.weights, b.weights), name
        if hasattr(a, "mask"):
            assert torch.equal(a.mask, b.mask), name
        a, b = (a.values, b.values) if isinstance(a, (Ragged, tuple)) else (a, b)
        torch.testing.assert_close(a, b, atol=atol, rtol=0.0, msg=name)


def test_float32_serving_reads_exactly_what_the_training_tables_read():
    engine = trained()
    serving = frozen(engine, "fp32")
    for seed in (0, 7):  # 0: all IDs known; 7: many unknown, reading zeros
        x = batch(seed)
        with torch.no_grad():
            assert_same(serving(x), engine(x))
    stats = next(iter(serving.tables().values())).stats()
    assert stats["lookups"] > stats["unknown"] > 0


@pytest.mark.parametrize("dtype, atol", [("fp16", 1e-3), ("bf16", 8e-3), ("int8", 2e-2)])
def test_narrow_rows_stay_close(dtype, atol):
    engine = trained()
    x = batch(0)
    with torch.no_grad():
        assert_same(frozen(engine, dtype)(x), engine(x), atol=atol * 6)  # pooled sums of up to 5 rows


def test_int8_error_is_about_half_a_step_per_value():
    rows = torch.cat([torch.randn(500, 16) * torch.rand(500, 1) * 10, torch.full((1, 16), 0.25), torch.zeros(1, 16)])
    q = quantize_rows(rows, "int8")
    assert q["rows"].dtype == torch.int8 and q["scale"].dtype == q["bias"].dtype == torch.float16
    err = (dequantize_rows(**q) - rows).abs()
    scale, bias = q["scale"].float()[:, None], q["bias"].float()[:, None]
    # half a step, plus float16's rounding of scale and bias (relative 2^-11) carried to q = +-128
    assert bool((err <= scale * (0.5 + 128 / 2048) + bias.abs() / 2048 + 1e-6).all())
    assert torch.equal(dequantize_rows(**q)[-2:], rows[-2:])  # constant rows come back exactly
    assert quantize_rows(torch.zeros(0, 4), "int8")["rows"].shape == (0, 4)
    wide = torch.tensor([[-1e9, 0.0, 1e9]])  # beyond float16: scale and bias stay float32
    q = quantize_rows(wide, "int8")
    assert q["scale"].dtype == torch.float32
    assert float((dequantize_rows(**q) - wide).abs().max()) <= float(q["scale"]) / 2 + 1e3


def test_bad_tables_and_uses_fail_clearly():
    t = FrozenTable.from_rows(torch.tensor([3, 1]), torch.tensor([0, 0]), torch.ones(2, 4), ["items"])
    with pytest.raises(ValueError, match="read-only"):
        t.lookup(torch.tensor([1]), insert=True)
    with pytest.raises(ValueError, match="ascend without repeats"):
        FrozenTable(torch.tensor([3, 1]), torch.tensor([0, 2]), torch.ones(2, 4), ["items"])
    with pytest.raises(ValueError, match="tag_offsets must run from 0 to 2"):
        FrozenTable(torch.tensor([1, 3]), torch.tensor([0, 1]), torch.ones(2, 4), ["items"])
    with pytest.raises(ValueError, match="int8 rows need a scale and a bias"):
        FrozenTable(torch.tensor([1, 3]), torch.tensor([0, 2]), torch.ones(2, 4, dtype=torch.int8), ["items"])
    with pytest.raises(ValueError, match="dtype must be one of"):
        quantize_rows(torch.ones(1, 2), "fp8")
    with pytest.raises(ValueError, match=r"no frozen table holds \['user'\]"):
        EmbeddingEngine({"user": EmbeddingSpec(4)}).use_frozen([t])
    engine = EmbeddingEngine({"item": EmbeddingSpec(4, table="items")}).use_frozen([t])
    with pytest.raises(ValueError, match="read-only"):
        engine.train()({"item": torch.tensor([1, 2])})


def positions_reference(table: FrozenTable, parts: list, tags: list) -> torch.Tensor:
    """Each key's position in the table's IDs, or -1: a binary search per logical table in torch."""
    out = []
    for ids, tag in zip(parts, tags, strict=True):
        lo, hi = int(table.tag_offsets[tag]), int(table.tag_offsets[tag + 1])
        mine = table.ids[lo:hi]
        at = torch.searchsorted(mine, ids).clamp(max=max(len(mine) - 1, 0))
        hit = (mine[at] == ids) if len(mine) else torch.zeros(len(ids), dtype=torch.bool)
        out.append(torch.where(hit, at + lo, -1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


@pytest.mark.parametrize("seed", range(6))
def test_find_matches_a_binary_search_reference(seed):
    """The hash index finds what a binary search finds: per-tag equal IDs told apart, negative and
    64-bit IDs, unknown keys, empty tags, empty and one-key runs, crowded tables."""
    g = torch.Generator().manual_seed(seed)
    sizes = [0, 1, int(torch.randint(1, 3000, (1,), generator=g)), int(torch.randint(1, 300, (1,), generator=g))]
    pool = torch.cat([torch.randint(-(2**62), 2**62, (2000,), generator=g), torch.arange(-50, 50)])
    tables = [pool[torch.randperm(len(pool), generator=g)[:n]].unique() for n in sizes]  # ascending, distinct
    ids = torch.cat(tables)
    offsets = torch.tensor([0, *torch.tensor([len(t) for t in tables]).cumsum(0).tolist()])
    table = FrozenTable(ids, offsets, torch.randn(len(ids), 4, generator=g), tag_names=list("abcd"))
    parts, tags = [], []
    for k in range(7):
        tag = k % 4
        n = [0, 1, 500][k % 3]
        known = table.ids[int(offsets[tag]) : int(offsets[tag + 1])]
        pick = (
            known[torch.randint(0, max(len(known), 1), (n,), generator=g)]
            if len(known)
            else torch.zeros(n, dtype=torch.int64)
        )
        keys = torch.where(
            torch.rand(n, generator=g) < 0.7, pick.to(torch.int64), pool[torch.randint(0, len(pool), (n,), generator=g)]
        )
        parts.append(keys)
        tags.append(tag)
    unique, inverse = table.find(parts, tags)
    want = positions_reference(table, parts, tags)
    assert torch.equal(unique[inverse], want)
    assert len(unique) == len(set(want.tolist()))
    assert table.stats()["unknown"] == int((want < 0).sum())


def test_an_empty_table_reads_zeros_for_every_key():
    table = FrozenTable(torch.zeros(0, dtype=torch.int64), torch.tensor([0, 0]), torch.zeros(0, 4), tag_names=["a"])
    unique, inverse = table.find([torch.tensor([3, -(2**63)]), torch.zeros(0, dtype=torch.int64)], [0, 0])
    assert unique.tolist() == [-1] and inverse.tolist() == [0, 0]
    assert torch.equal(table.gather(unique), torch.zeros(1, 4)) and table.stats() == {"lookups": 2, "unknown": 2}


def test_index_kernels_refuse_bad_input():
    from recis.core import kernels

    ids, offsets = torch.tensor([1, 5, 9]), torch.tensor([0, 3])
    with pytest.raises(ValueError, match="repeats in logical table 0"):
        kernels.embedding.frozen_index(torch.tensor([4, 4]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="start at 0 and never decrease"):
        kernels.embedding.frozen_index(ids, torch.tensor([0, 2, 1, 3]))
    keys = [torch.tensor([5, 6])]
    for slots in (torch.full((8,), 7), torch.zeros(8, dtype=torch.int64)):  # a position past the IDs; no empty slot
        with pytest.raises(ValueError, match="not an index of these 3 IDs"):
            kernels.embedding.frozen_lookup(ids, offsets, slots, keys, [0])
    with pytest.raises(ValueError, match="power-of-two"):
        kernels.embedding.frozen_lookup(ids, offsets, torch.full((6,), -1), keys, [0])
    embed = lambda slots, rows=None: kernels.embedding.frozen_embed(
        ids, offsets, slots, torch.ones(3, 2) if rows is None else rows, None, None, keys, [None], [2], [None], [0],
        ["sum"], [-1], [False],
    )  # fmt: skip
    with pytest.raises(ValueError, match="not an index of these 3 IDs"):
        embed(torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match="int8 rows need a scale and a bias of 3"):
        embed(kernels.embedding.frozen_index(ids, offsets), torch.ones(3, 2, dtype=torch.int8))
    with pytest.raises(ValueError, match="rows must be float32, bfloat16, float16 or int8"):
        embed(kernels.embedding.frozen_index(ids, offsets), torch.ones(3, 2, dtype=torch.float64))


def random_bags(g: torch.Generator, table: FrozenTable, pool: torch.Tensor, bags: int, spec: tuple) -> FrozenBags:
    """One feature's bags for `FrozenTable.embed`: 70% known keys, the rest drawn from `pool`."""
    tag, combiner, max_len, keep_last, weighted, fixed = spec
    if fixed:  # a (B, k) tensor: no offsets
        k = int(torch.randint(0, 4, (1,), generator=g))
        lengths = torch.full((bags,), k)
    else:
        lengths = torch.randint(0, 9, (bags,), generator=g)
    n = int(lengths.sum())
    known = table.ids[int(table.tag_offsets[tag]) : int(table.tag_offsets[tag + 1])]
    pick = known[torch.randint(0, len(known), (n,), generator=g)] if len(known) else torch.zeros(n, dtype=torch.int64)
    keys = torch.where(
        (torch.rand(n, generator=g) < 0.7) & (len(known) > 0),
        pick,
        pool[torch.randint(0, len(pool), (n,), generator=g)],
    )
    offsets = None if fixed else torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    weights = torch.rand(n, generator=g) * 2 - 0.5 if weighted else None
    return FrozenBags(keys, offsets, bags, weights, tag, combiner, max_len, keep_last)


def kept_ids(b: FrozenBags) -> torch.Tensor:
    if b.max_len < 0:
        return b.values
    offsets = b.offsets if b.offsets is not None else torch.arange(b.bags + 1) * (len(b.values) // max(b.bags, 1))
    return reference.ragged_truncate(offsets, b.values, None, b.max_len, b.keep_last)[1]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "int8"])
@pytest.mark.parametrize("seed", range(3))
def test_embed_kernel_matches_its_torch_twin(dtype, seed):
    """frozen_embed (find + widen + pool or pad in one pass) against frozen_embed_reference: every
    combiner, dense with and without max_len from either side, weights, fixed-length bags without
    offsets, empty and one-row batches, empty bags, negative, 64-bit and unknown IDs."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.cat([torch.randint(-(2**62), 2**62, (3000,), generator=g), torch.arange(-20, 20)])
    tables = [pool[torch.randperm(len(pool), generator=g)[:n]].unique() for n in (1500, 0, 40)]
    ids = torch.cat(tables)
    offsets = torch.tensor([0, *torch.tensor([len(t) for t in tables]).cumsum(0).tolist()])
    rows = torch.randn(len(ids), 8, generator=g)
    table = FrozenTable(ids, offsets, **quantize_rows(rows, dtype), tag_names=["a", "b", "c"])
    specs = [
        (0, "sum", -1, False, False, False),
        (0, "mean", 3, True, True, False),
        (2, "sqrtn", -1, False, True, True),
        (1, "sum", -1, False, False, False),  # a logical table without rows: zeros
        (0, "dense", -1, False, False, False),
        (2, "dense", 4, True, True, False),
        (0, "dense", 2, False, False, True),
        (0, "mean", -1, False, False, True),
        (0, "rows", -1, False, False, False),
        (2, "rows", 2, True, True, False),
        (0, "rows", 1, False, True, True),
    ]
    for batch in (0, 1, 37):
        wanted = [random_bags(g, table, pool, batch, spec) for spec in specs]
        before = table.stats()
        got = table.embed(wanted)
        want = frozen_embed_reference(table, wanted)
        for spec, (out, mask, w), (ref_out, ref_mask, ref_w) in zip(specs, got, want, strict=True):
            torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5, msg=str(spec))
            assert (mask is None) == (ref_mask is None) and (w is None) == (ref_w is None), spec
            if mask is not None:
                assert torch.equal(mask, ref_mask)
            if w is not None:
                assert torch.equal(w, ref_w)
        kept = [kept_ids(b) for b in wanted]  # IDs cut by max_len are not looked up
        known = [table.ids[int(table.tag_offsets[b.tag]) : int(table.tag_offsets[b.tag + 1])] for b in wanted]
        after = table.stats()
        assert after["lookups"] - before["lookups"] == sum(len(k) for k in kept)
        unknown = sum(int((~torch.isin(k, t)).sum()) for k, t in zip(kept, known, strict=True))
        assert after["unknown"] - before["unknown"] == unknown


def test_serving_path_takes_any_id_dtype_and_refuses_bad_bags():
    """The engine's one-call path serves int64 IDs; other inputs take the general path, same result;
    the kernel refuses bags that do not fit its IDs."""
    engine = trained()
    serving = frozen(engine, "fp32")
    x = batch(3)
    table = next(iter(serving.tables().values()))
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(FrozenTable, "lookup", None)  # int64 IDs never take the general path
        assert_same(serving(x), engine(x))
    with torch.no_grad():
        narrow = {  # int32 IDs everywhere: every layout (pooled, dense, tile, ragged) through the general path
            k: v.to(torch.int32) if isinstance(v, torch.Tensor) else Ragged(v.values.int(), v.offsets, v.weights)
            for k, v in x.items()
        }
        assert_same(serving(narrow), serving(x))
    assert isinstance(table, FrozenTable)
    ids = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="do not split into 2 bags"):
        table.embed([FrozenBags(ids, None, 2, None, 0, "sum")])
    with pytest.raises(ValueError, match="frozen_embed"):
        table.embed([FrozenBags(ids, torch.tensor([0, 2, 1, 3]), 3, None, 0, "sum")])
    with pytest.raises(ValueError, match="weights must have 3 entries"):
        table.embed([FrozenBags(ids, None, 3, torch.ones(2), 0, "sum")])
    with pytest.raises(ValueError, match="tag 9 is not one of"):
        table.embed([FrozenBags(ids, None, 3, None, 9, "sum")])
    with pytest.raises(ValueError, match="unknown combiner 'max'"):
        table.embed([FrozenBags(ids, None, 3, None, 0, "max")])
