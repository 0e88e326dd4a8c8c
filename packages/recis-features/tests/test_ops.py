"""Every op against its reference on random dense and ragged inputs (empty rows and batches, 64-bit IDs)."""

import math

import farmhash
import mmh3
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recis.core import Ragged
from recis.core import reference as core_reference
from recis.features import (
    Clip,
    FillMissing,
    Hash,
    Log1p,
    MultiHash,
    Standardize,
    Truncate,
    clip,
    cross,
    encode_strings,
    fill_missing,
    hash_ids,
    hash_strings,
    log1p,
    mod,
    multi_hash,
    standardize,
    string_column,
    truncate,
)
from recis.features import reference as ref

INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63)]))
TEXT = st.one_of(st.text(max_size=20), st.just(""), st.binary(max_size=40).map(lambda b: b.decode("latin-1")))


@st.composite
def id_lists(draw, rows=None, weighted=None, max_len=6):  # type: ignore[no-untyped-def]
    """A flat Ragged of int64 IDs: any number of rows (0 included), empty rows, optional weights."""
    n = draw(st.integers(0, 12)) if rows is None else rows
    data = [draw(st.lists(INT64, max_size=max_len)) for _ in range(n)]
    w = draw(st.booleans()) if weighted is None else weighted
    weights = [[draw(st.floats(-4, 4, width=32)) for _ in r] for r in data] if w else None
    return Ragged.from_list(data, dtype=torch.int64, weights=weights)


@st.composite
def id_columns(draw, rows):  # type: ignore[no-untyped-def]
    """A dense (rows,) int64 tensor or a flat Ragged with `rows` rows."""
    if draw(st.booleans()):
        return torch.tensor(draw(st.lists(INT64, min_size=rows, max_size=rows)), dtype=torch.int64)
    return draw(id_lists(rows=rows))


def unsigned(values: list[int]) -> list[int]:
    return [v % 2**64 for v in values]


def id_bytes(*ids: int) -> bytes:
    return b"".join(i.to_bytes(8, "little", signed=True) for i in ids)


def same_structure(a: Ragged, b: Ragged) -> None:
    assert torch.equal(a.offsets, b.offsets)
    assert (a.weights is None) == (b.weights is None)
    if a.weights is not None:
        assert torch.equal(a.weights, b.weights)


@given(st.lists(st.lists(INT64, max_size=3), max_size=30), st.integers(0, 2**64 - 1), st.integers(0, 2**63 - 1))
def test_murmur_reference_matches_mmh3(rows, seed, buckets):
    k = 1 + len(rows) % 4
    ids = [(r + [7] * k)[:k] for r in rows]
    got = ref.unsigned_mod(ref.murmur3_ids(torch.tensor(ids, dtype=torch.int64).reshape(-1, k), seed), buckets)
    want = [mmh3.hash64(id_bytes(*r), seed=seed % 2**32, signed=False)[0] for r in ids] if seed < 2**32 else None
    if want is not None:
        assert unsigned(got.tolist()) == ([w % buckets for w in want] if buckets else want)


@given(id_lists(), st.integers(0, 2**64 - 1), st.integers(0, 10**6))
def test_hash_ids_on_ragged_matches_reference(r, seed, buckets):
    out = hash_ids(r, seed=seed, buckets=buckets)
    same_structure(out, r)
    assert torch.equal(out.values, ref.hash_ids(r.values, seed, buckets))


@given(id_lists(), st.lists(st.integers(0, 2**40), min_size=1, max_size=4), st.integers(0, 2**64 - 5))
def test_multi_hash_matches_reference(r, buckets, seed):
    out = multi_hash(r, buckets, seed=seed)
    same_structure(out, r)
    assert out.values.shape == (r.num_values, len(buckets))
    assert torch.equal(out.values, ref.multi_hash(r.values, buckets, seed))
    dense = multi_hash(r.values, buckets, seed=seed)
    assert torch.equal(dense, out.values)
    if r.num_values and buckets[0]:
        first = mmh3.hash64(id_bytes(int(r.values[0])), seed=seed % 2**32, signed=False)[0] % buckets[0]
        assert seed >= 2**32 or int(out.values[0, 0]) == first


@settings(max_examples=60)
@given(st.data(), st.integers(0, 12), st.integers(2, 4), st.integers(0, 2**64 - 1), st.integers(0, 2**62))
def test_cross_matches_reference(data, rows, k, seed, buckets):
    cols = [data.draw(id_columns(rows)) for _ in range(k)]
    out = cross(cols, buckets=buckets, seed=seed)
    inputs = []
    for c in cols:
        if isinstance(c, torch.Tensor):
            inputs.append((torch.arange(rows + 1), c, None))
        else:
            inputs.append((c.offsets, c.values, c.weights))
    offsets, values, weights = ref.cross(inputs, seed, buckets)
    if all(isinstance(c, torch.Tensor) for c in cols):
        assert isinstance(out, torch.Tensor) and torch.equal(out, values)
        return
    assert torch.equal(out.offsets, offsets) and torch.equal(out.values, values)
    assert (out.weights is None) == (weights is None)
    if weights is not None:
        assert torch.equal(out.weights, weights)


def test_cross_by_hand():
    a = Ragged.from_list([[1, 2], [], [3]], weights=[[0.5, 2.0], [], [3.0]])
    b = Ragged.from_list([[10, 20, 30], [4], [-1]])
    out = cross([a, b])
    assert out.lengths().tolist() == [6, 0, 1]
    pairs = [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30), (3, -1)]
    assert unsigned(out.values.tolist()) == [mmh3.hash64(id_bytes(x, y), signed=False)[0] for x, y in pairs]
    assert out.weights.tolist() == [0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 3.0]
    three = cross([torch.tensor([1]), torch.tensor([2]), torch.tensor([3])], buckets=100, seed=9)
    assert three.tolist() == [mmh3.hash64(id_bytes(1, 2, 3), seed=9, signed=False)[0] % 100]


def test_cross_huge_rows_and_many_inputs():
    big = Ragged.from_list([list(range(3000)), [5]])
    small = Ragged.from_list([list(range(40)), []])
    out = cross([big, small], buckets=2**20)
    assert out.lengths().tolist() == [120_000, 0]
    inputs = [(big.offsets, big.values, None), (small.offsets, small.values, None)]
    assert torch.equal(out.values, ref.cross(inputs, 0, 2**20)[1])
    many = [Ragged.from_list([[i, i + 1]]) for i in range(20)]  # 20 inputs: the kernel's heap path
    wide = cross(many)
    assert wide.num_values == 2**20
    assert torch.equal(wide.values, ref.cross([(m.offsets, m.values, None) for m in many])[1])


@given(st.lists(st.one_of(TEXT, st.binary(max_size=70)), max_size=30), st.sampled_from(["farm", "murmur"]))
def test_hash_op_on_string_columns(strings, algo):
    raw = [s.encode() if isinstance(s, str) else s for s in strings]
    want = [farmhash.fingerprint64(r) if algo == "farm" else mmh3.hash64(r, signed=False)[0] for r in raw]
    out = Hash(algo)(string_column(strings))
    assert out.shape == (len(strings),) and unsigned(out.tolist()) == want
    assert unsigned(Hash(algo)(list(strings)).tolist()) == want  # Python lists are accepted too
    nested = string_column([raw[:2], [], raw[2:]])
    listed = Hash(algo, buckets=97)(nested)
    assert listed.lengths().tolist() == [len(raw[:2]), 0, len(raw[2:])]
    assert listed.values.tolist() == [w % 97 for w in want]


def test_hash_op_on_ids_and_arrow_layout():
    pa = pytest.importorskip("pyarrow")
    arr = pa.array(["05db9164", "", "é☃", None]).fill_null("")
    offsets = torch.frombuffer(bytearray(arr.buffers()[1]), dtype=torch.int32)[: len(arr) + 1].to(torch.int64)
    data = torch.frombuffer(bytearray(arr.buffers()[2]), dtype=torch.uint8)[: int(offsets[-1])]
    out = Hash(buckets=1000)(Ragged(data, offsets))
    assert out.tolist() == [farmhash.fingerprint64(s.encode()) % 1000 for s in ["05db9164", "", "é☃", ""]]
    ids = torch.tensor([-(2**63), 5])
    assert torch.equal(Hash("murmur", seed=3)(ids), ref.hash_ids(ids, 3))
    with pytest.raises(TypeError, match="integer IDs are re-hashed with algo='murmur'"):
        Hash()(ids)


@given(id_lists(), st.integers(0, 8), st.sampled_from(["left", "right"]))
def test_truncate_matches_reference(r, max_len, side):
    out = truncate(r, max_len, side)
    offsets, values, weights = core_reference.ragged_truncate(r.offsets, r.values, r.weights, max_len, side == "left")
    assert torch.equal(out.offsets, offsets) and torch.equal(out.values, values)
    assert torch.equal(Truncate(max_len, side)(r).values, values)
    if weights is not None:
        assert torch.equal(out.weights, weights)


def test_truncate_list_of_strings_and_refuses_a_string_column():
    col = string_column([["a", "bb", "c"], ["d"]])
    assert Hash(buckets=10)(truncate(col, 1, "left")).lengths().tolist() == [1, 1]
    with pytest.raises(TypeError, match="expected a list column"):
        truncate(string_column(["abc"]), 1)


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@given(st.lists(floats, max_size=40), st.floats(-100, 100, width=32))
def test_fill_missing_dense(values, fill):
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(values, dtype=dtype)
        want = torch.tensor([fill if math.isnan(v) else v for v in x.tolist()], dtype=dtype)
        assert torch.equal(fill_missing(x, fill), want)
        assert torch.equal(FillMissing(fill)(x), want)  # the fused kernel
        assert torch.equal(FillMissing(fill)(x.reshape(-1, 1)), want.reshape(-1, 1))


@given(id_lists(), INT64)
def test_fill_missing_ragged_ids(r, fill):
    out = FillMissing(fill)(r)
    rows = r.tolist()
    assert out.tolist() == [row if row else [fill] for row in rows]
    if r.weights is not None:
        want, w, pos = [], r.weights.tolist(), 0
        for row in rows:
            want += w[pos : pos + len(row)] if row else [1.0]
            pos += len(row)
        assert out.weights.tolist() == want


@given(st.lists(TEXT, max_size=20), TEXT.filter(bool))
def test_fill_missing_strings(strings, fill):
    out = fill_missing(string_column(strings), fill)
    want = string_column([s if s else fill for s in strings])
    assert torch.equal(out.offsets, want.offsets) and torch.equal(out.values, want.values)
    lists = fill_missing(string_column([[], strings]), fill)
    assert lists.lengths().tolist() == [1, len(strings) or 1]
    assert torch.equal(Hash()(lists).values[:1], Hash()([fill]))


@given(st.lists(st.floats(-1e6, 1e6, width=32), max_size=40), st.floats(-10, 0), st.floats(0, 10))
def test_numeric_transforms(values, lo, hi):
    x = torch.tensor(values, dtype=torch.float32)
    r = Ragged.from_lengths(x, [len(values)], weights=torch.ones(len(values)))
    assert torch.equal(log1p(x.abs()), torch.log1p(x.abs()))
    assert torch.equal(clip(r, lo, hi).values, x.clamp(lo, hi)) and clip(r, lo, hi).weights is not None
    assert torch.equal(Clip(max=hi)(x), x.clamp(max=hi))
    assert torch.allclose(standardize(x, 2.0, 4.0), (x - 2.0) / 4.0)
    assert torch.allclose(Standardize(1.0, 3.0)(r).values, (x - 1.0) / 3.0)
    assert Log1p()(torch.tensor([0, 3])).dtype == torch.float32


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: log1p(string_column(["a"])), TypeError, "log1p: expected numbers, got a string column"),
        (lambda: fill_missing(torch.tensor([1.0]), "x"), TypeError, "needs a number value"),
        (lambda: fill_missing(string_column(["a"]), 0), TypeError, "needs a str value"),
        (lambda: fill_missing(torch.tensor([1]), 0.5), TypeError, "does not fit"),
        (lambda: clip(torch.tensor([1.0]), 2, 1), ValueError, "min must be <= max"),
        (lambda: standardize(torch.tensor([1.0]), 0.0, 0.0), ValueError, "std > 0"),
        (lambda: Standardize()(torch.tensor([1.0])), ValueError, "not fitted"),
        (lambda: multi_hash(torch.tensor([1]), [1, 2], k=3), ValueError, "2 bucket counts for k=3"),
        (lambda: MultiHash(2, buckets=10)(torch.tensor([1.5])), TypeError, "expected integer IDs"),
        (lambda: cross([torch.tensor([1])]), ValueError, "at least 2 inputs"),
        (lambda: cross([torch.tensor([1]), torch.tensor([1, 2])]), ValueError, "same number of rows"),
        (lambda: cross([torch.tensor([1]), Ragged.from_list([[[1]]])]), TypeError, "flat ID lists"),
        (
            lambda: cross([torch.tensor([1]), torch.tensor([1])], buckets=-1),
            ValueError,
            r"buckets must be an int in \[0,",
        ),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: hash_strings(*encode_strings(["a"]), buckets=2**64),
            r"hash_strings: buckets must be an int in \[0, 2\*\*63 - 1\], got 18446744073709551616",
        ),
        (
            lambda: hash_ids(torch.tensor([1]), buckets=2**63),
            r"hash_ids: buckets must be an int in \[0, 2\*\*63 - 1\], got 9223372036854775808",
        ),
        (
            lambda: multi_hash(torch.tensor([1]), [3, 2**63]),
            r"multi_hash: buckets must be an int in \[0, 2\*\*63 - 1\], got 9223372036854775808",
        ),
        (
            lambda: cross([torch.tensor([1]), torch.tensor([1])], buckets=2**63),
            r"cross: buckets must be an int in \[0, 2\*\*63 - 1\], got 9223372036854775808",
        ),
        (
            lambda: mod(torch.tensor([1]), 2**63),
            r"mod: modulus must be an int in \[1, 2\*\*63 - 1\], got 9223372036854775808",
        ),
        (
            lambda: hash_ids(torch.tensor([1]), buckets=2.5),
            r"hash_ids: buckets must be an int in \[0, 2\*\*63 - 1\], got 2.5",
        ),
    ],
)
def test_functions_refuse_integers_outside_the_kernels_int64(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_functions_take_numpy_integers():
    assert hash_ids(torch.tensor([1]), buckets=np.int64(3)).tolist() == hash_ids(torch.tensor([1]), buckets=3).tolist()
    assert mod(torch.tensor([-1]), np.int64(2**63 - 1)).tolist() == [2**63 - 2]
