"""String hashes against published values and independent implementations (pyfarmhash, mmh3)."""

import farmhash
import mmh3
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recis.features import encode_strings, hash_ids, hash_strings

strings = st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=80)), max_size=40)


def unsigned(t: torch.Tensor) -> list[int]:
    return [v % 2**64 for v in t.tolist()]


def test_tensorflow_documented_buckets():
    # tf.strings.to_hash_bucket_fast(["Hello", "TensorFlow", "2.x"], 3) == [0, 2, 2] (TensorFlow API docs)
    assert hash_strings(*encode_strings(["Hello", "TensorFlow", "2.x"]), buckets=3).tolist() == [0, 2, 2]


@given(strings)
def test_farm_matches_pyfarmhash(batch):
    offsets, data = encode_strings(batch)
    raw = [s.encode() if isinstance(s, str) else s for s in batch]
    assert unsigned(hash_strings(offsets, data)) == [farmhash.fingerprint64(r) for r in raw]
    assert unsigned(hash_strings(offsets.to(torch.int32), data)) == [farmhash.fingerprint64(r) for r in raw]


@given(strings, st.integers(0, 2**32 - 1))
def test_murmur_matches_mmh3(batch, seed):
    """mmh3 takes 32-bit seeds; ours takes 64-bit ones and agrees on the 32-bit range."""
    raw = [s.encode() if isinstance(s, str) else s for s in batch]
    got = unsigned(hash_strings(*encode_strings(batch), algo="murmur", seed=seed))
    assert got == [mmh3.hash64(r, seed=seed, signed=False)[0] for r in raw]


def test_murmur_uses_all_64_seed_bits():
    offsets, data = encode_strings(["user:42"])
    assert hash_strings(offsets, data, "murmur", seed=1) != hash_strings(offsets, data, "murmur", seed=1 + 2**40)


@given(strings, st.integers(1, 10**12))
def test_buckets_are_the_unsigned_hash_mod_buckets(batch, buckets):
    offsets, data = encode_strings(batch)
    full = unsigned(hash_strings(offsets, data))
    assert hash_strings(offsets, data, buckets=buckets).tolist() == [h % buckets for h in full]


def test_every_length_path_and_long_strings():
    raw = [bytes(range(256))[:n] * 1 for n in range(0, 256)] + [b"x" * 10_000, bytes(range(256)) * 40]
    offsets, data = encode_strings(raw)
    assert unsigned(hash_strings(offsets, data)) == [farmhash.fingerprint64(r) for r in raw]
    assert unsigned(hash_strings(offsets, data, "murmur", seed=5)) == [
        mmh3.hash64(r, seed=5, signed=False)[0] for r in raw
    ]


def test_empty_batch():
    assert hash_strings(*encode_strings([])).shape == (0,)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda o, d: hash_strings(o, d, algo="md5"), ValueError, "algo must be 'farm' or 'murmur', got 'md5'"),
        (
            lambda o, d: hash_strings(o, d, buckets=-1),
            ValueError,
            r"buckets must be an int in \[0, 2\*\*63 - 1\], got -1",
        ),
        (lambda o, d: hash_strings(o, d, seed=3), ValueError, "takes no seed"),
        (lambda o, d: hash_strings(o.float(), d), TypeError, "offsets must be"),
        (lambda o, d: hash_strings(o, d.to(torch.int8)), TypeError, "data must be a 1-D uint8"),
        (lambda o, d: hash_strings(torch.tensor([0, 9]), d), ValueError, r"offsets\[0..\] = 0, 9 do not fit 3 bytes"),
        (lambda o, d: hash_strings(torch.tensor([0, 2, 1]), d), ValueError, "do not fit"),
    ],
)
def test_bad_input(call, error, message):
    offsets, data = encode_strings(["ab", "c"])
    with pytest.raises(error, match=message):
        call(offsets, data)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50), st.integers(0, 2**32 - 1), st.integers(0, 1000))
def test_hash_ids_matches_mmh3_on_the_id_bytes(ids, seed, buckets):
    got = hash_ids(torch.tensor(ids, dtype=torch.int64), seed=seed, buckets=buckets)
    want = [mmh3.hash64(i.to_bytes(8, "little", signed=True), seed=seed, signed=False)[0] for i in ids]
    assert unsigned(got) == ([w % buckets for w in want] if buckets else want)


def test_hash_ids_keeps_shape_and_rejects_floats():
    ids = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    out = hash_ids(ids, seed=3)
    assert out.shape == (2, 2) and out.dtype == torch.int64
    assert out[0, 0] == hash_ids(torch.tensor([1]), seed=3)[0]
    with pytest.raises(TypeError, match="IDs must be integers"):
        hash_ids(torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"buckets must be an int in \[0, 2\*\*63 - 1\], got -2"):
        hash_ids(torch.tensor([1]), buckets=-2)
