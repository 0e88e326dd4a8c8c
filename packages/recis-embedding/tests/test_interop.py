"""KeyedJaggedTensor <-> dict[str, Ragged] against TorchRec's own KJT (the test needs torchrec)."""

import pytest
import torch

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec
from recis.embedding.interop import from_kjt, to_kjt

torchrec = pytest.importorskip("torchrec")
KJT = pytest.importorskip("torchrec.sparse.jagged_tensor").KeyedJaggedTensor

EDGE_IDS = [0, -1, 2**63 - 1, -(2**63), 2**40]


def random_batch(rows: int, seed: int, weighted: bool = False) -> dict[str, Ragged]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, top in (("user", 1), ("items", 5), ("tags", 3)):
        lengths = torch.randint(0, top + 1, (rows,), generator=g)  # empty rows included
        ids = torch.randint(-(2**63), 2**63 - 1, (int(lengths.sum()),), generator=g)
        ids[: min(len(ids), len(EDGE_IDS))] = torch.tensor(EDGE_IDS[: len(ids)])
        w = torch.rand(len(ids), generator=g) if weighted and k != "user" else None
        out[k] = Ragged.from_lengths(ids, lengths, w)
    return out


def same(a: Ragged, b: Ragged) -> bool:
    wa, wb = a.weights, b.weights
    weights = (wa is None and wb is None) or (wa is not None and wb is not None and torch.equal(wa, wb))
    return torch.equal(a.values, b.values) and torch.equal(a.offsets, b.offsets) and weights


@pytest.mark.parametrize("rows", [0, 1, 17])
def test_round_trip_and_torchrec_reads_the_same_ids(rows):
    batch = random_batch(rows, seed=rows)
    kjt = to_kjt(batch)
    assert kjt.keys() == ["user", "items", "tags"] and kjt.weights_or_none() is None
    for k, r in batch.items():  # TorchRec's own view of each key
        assert torch.equal(kjt[k].values(), r.values) and torch.equal(kjt[k].offsets(), r.offsets)
    back = from_kjt(kjt)
    assert back.keys() == batch.keys() and all(same(back[k], batch[k]) for k in batch)


def test_weights_and_plain_id_columns():
    batch = random_batch(9, seed=1, weighted=True) | {"label": torch.rand(9), "day": torch.arange(9)}
    kjt = to_kjt(batch)
    assert kjt.keys() == ["user", "items", "tags", "day"]  # the float label is not an ID feature
    back = from_kjt(kjt)
    assert torch.equal(back["user"].weights, torch.ones(len(batch["user"].values)))  # unweighted: 1.0
    assert same(back["items"], batch["items"]) and same(back["tags"], batch["tags"])
    assert back["day"].values.tolist() == list(range(9)) and back["day"].offsets.tolist() == list(range(10))
    assert to_kjt(batch, keys=["tags"]).keys() == ["tags"]


def test_a_kjt_built_by_torchrec_feeds_the_engine_as_the_dict_does():
    kjt = KJT.from_lengths_sync(
        keys=["user", "items"],
        values=torch.tensor([5, -9, 2**62, 3, 3], dtype=torch.int64),
        lengths=torch.tensor([1, 1, 0, 2, 1, 0], dtype=torch.int32),  # int32, as TorchRec often has
    )
    batch = from_kjt(kjt)
    assert batch["items"].values.dtype == torch.int64 and batch["items"].offsets.tolist() == [0, 2, 3, 3]
    specs = {"user": EmbeddingSpec(4, table="ids"), "items": EmbeddingSpec(4, table="ids")}
    a, b = EmbeddingEngine(specs), EmbeddingEngine(specs)  # rows start from the ID and seed alone
    out_a = a(batch)
    user = Ragged.from_lengths(torch.tensor([5, -9]), [1, 1, 0])
    out_b = b({"user": user, "items": Ragged.from_lengths(torch.tensor([2**62, 3, 3]), [2, 1, 0])})
    for k in specs:
        assert torch.equal(out_a[k], out_b[k])


def test_bad_input_is_named():
    batch = random_batch(4, seed=2)
    with pytest.raises(ValueError, match="different numbers of rows"):
        to_kjt(batch | {"user": Ragged.from_lengths(torch.tensor([1]), [1])})
    with pytest.raises(KeyError, match="'missing' is not in the batch"):
        to_kjt(batch, keys=["missing"])
    with pytest.raises(TypeError, match=r"'score' holds torch\.float32 values"):
        to_kjt({"score": Ragged.from_lengths(torch.tensor([0.5]), [1])})
    nested = Ragged(Ragged.from_list([[1], [2, 3]]), torch.tensor([0, 2]))  # list<list<int>>
    with pytest.raises(TypeError, match=r"'s' must be a Ragged of IDs .*, got a Ragged with a Ragged of lists"):
        to_kjt({"s": nested})
    with pytest.raises(ValueError, match="no ID features"):
        to_kjt({"label": torch.rand(3)})
    with pytest.raises(TypeError, match="expected a KeyedJaggedTensor, got dict"):
        from_kjt(batch)
