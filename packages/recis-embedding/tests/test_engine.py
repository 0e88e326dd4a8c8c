"""EmbeddingEngine: outputs, table sharing and merging, sequences, modes, gradients, bad input."""

import pytest
import torch

from recis.core import Padded, Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec, Eviction, Initializer, pooled_embedding_reference


def batch():
    return {
        "user": torch.tensor([3, -(2**63), 3]),
        "tags": Ragged.from_list([[1, 2], [], [2, 2, 5]], weights=[[0.5, 1.0], [], [1.0, 2.0, 1.0]]),
        "clicks": Ragged.from_list([[10, 11, 12], [13], []]),
        "label": torch.tensor([1.0, 0.0, 1.0]),
    }


def test_pooled_output_equals_reference_over_table_rows():
    engine = EmbeddingEngine({"tags": EmbeddingSpec(4, combiner="mean")})
    b = batch()
    out = engine(b)["tags"]
    table = engine.groups[0].table
    ids = b["tags"].values
    rows = table.lookup(ids, insert=False)
    emb = rows.embeddings[rows.inverse]  # (N, D)
    ref = pooled_embedding_reference(emb, torch.arange(len(ids)), b["tags"].offsets, b["tags"].weights, "mean")
    torch.testing.assert_close(out, ref)
    assert out[1].abs().sum() == 0  # empty row


def test_unconfigured_keys_pass_through_and_shapes():
    engine = EmbeddingEngine(
        {
            "user": EmbeddingSpec(8),
            "clicks": EmbeddingSpec(8, combiner=None, max_len=2),
            "tags": EmbeddingSpec(8, combiner="tile", max_len=2),
        }
    )
    out = engine(batch())
    assert out["label"] is batch()["label"] or torch.equal(out["label"], batch()["label"])
    assert out["user"].shape == (3, 8) and out["tags"].shape == (3, 16)
    seq = out["clicks"]
    assert isinstance(seq, Padded) and seq.values.shape == (3, 2, 8)
    assert seq.mask.tolist() == [[True, True], [True, False], [False, False]]
    # side="left" keeps the latest clicks: row 0 holds IDs 11, 12
    table = engine.groups[0].table
    tag = engine.groups[0].tags[engine.groups[0].features.index("clicks")]
    want = table.lookup([torch.tensor([11, 12])], insert=False, tags=[tag])
    torch.testing.assert_close(seq.values[0], want.embeddings[want.inverse])


def test_ragged_sequence_output():
    engine = EmbeddingEngine({"clicks": EmbeddingSpec(4, combiner=None, ragged=True)})
    out = engine(batch())["clicks"]
    assert isinstance(out, Ragged) and out.values.shape == (4, 4) and out.lengths().tolist() == [3, 1, 0]


def test_tables_are_shared_by_name_and_merged_by_settings():
    engine = EmbeddingEngine(
        {
            "user": EmbeddingSpec(4),
            "tags": EmbeddingSpec(4, table="shared"),
            "clicks": EmbeddingSpec(4, table="shared"),
            "wide": EmbeddingSpec(6),
        }
    )
    assert len(engine.groups) == 2  # dim 4 merged, dim 6 apart
    group = engine.groups[0]
    assert group.features == ["user", "tags", "clicks"] and group.tags == [0, 1, 1]
    b = {"user": torch.tensor([5]), "tags": torch.tensor([5]), "clicks": torch.tensor([5]), "wide": torch.tensor([5])}
    out = engine(b)
    assert torch.equal(out["tags"], out["clicks"])  # same table, same ID, same row
    assert not torch.equal(out["user"], out["tags"])  # same ID in another logical table: another row
    assert len(group.table) == 2


def test_conflicting_table_settings_are_rejected():
    with pytest.raises(ValueError, match="feature 'b' uses table 't' with settings"):
        EmbeddingEngine({"a": EmbeddingSpec(4, table="t"), "b": EmbeddingSpec(8, table="t")})


def test_eval_mode_is_read_only_and_records_nothing():
    engine = EmbeddingEngine({"user": EmbeddingSpec(4, initializer=Initializer.constant(1.0))})
    engine(batch())
    engine.clear_sparse_grads()
    engine.eval()
    out = engine({"user": torch.tensor([3, 777])})["user"]
    assert out[0].tolist() == [1.0] * 4 and out[1].tolist() == [0.0] * 4
    assert len(engine.groups[0].table) == 2 and engine.sparse_grads() == []
    assert engine.groups[0].table.state_dict()["freqs"].tolist() == [1, 1]  # eval lookups not counted


def test_sparse_grads_match_dense_autograd():
    engine = EmbeddingEngine({"tags": EmbeddingSpec(3, combiner="sqrtn"), "user": EmbeddingSpec(3, combiner="sum")})
    b = batch()
    out = engine(b)
    w = torch.randn(3, 3)
    ((out["tags"] * w).sum() + (out["user"] * w).sum()).backward()
    (grad,) = engine.sparse_grads()
    # Dense twin: the same rows as a parameter, the same pooling in plain torch.
    table = grad.table
    dense = table.gather(grad.rows).requires_grad_()
    tags, user = b["tags"], b["user"]
    tag_rows = table.lookup([tags.values], insert=False, tags=[0])
    user_rows = table.lookup([user], insert=False, tags=[1])
    index = {r: i for i, r in enumerate(grad.rows.tolist())}
    t_idx = torch.tensor([index[int(tag_rows.rows[i])] for i in tag_rows.inverse])
    u_idx = torch.tensor([index[int(user_rows.rows[i])] for i in user_rows.inverse])
    ref_t = pooled_embedding_reference(dense, t_idx, tags.offsets, tags.weights, "sqrtn")
    ref_u = dense[u_idx]
    ((ref_t * w).sum() + (ref_u * w).sum()).backward()
    torch.testing.assert_close(grad.grad, dense.grad)


def test_step_advances_and_eviction_by_age():
    engine = EmbeddingEngine({"user": EmbeddingSpec(2, eviction=Eviction(max_age=2))})
    engine({"user": torch.tensor([1])})
    engine({"user": torch.tensor([2])})
    engine({"user": torch.tensor([3])})
    assert engine.step == 3
    (dropped,) = engine.evict().values()
    assert dropped == 1 and set(engine.groups[0].table.ids().tolist()) == {2, 3}


def test_empty_batch_and_int32_ids():
    engine = EmbeddingEngine({"user": EmbeddingSpec(4), "tags": EmbeddingSpec(4, combiner="mean")})
    out = engine({"user": torch.tensor([], dtype=torch.int64), "tags": Ragged.from_list([])})
    assert out["user"].shape == (0, 4) and out["tags"].shape == (0, 4)
    out = engine({"user": torch.tensor([7], dtype=torch.int32), "tags": Ragged.from_list([[]])})
    assert out["user"].shape == (1, 4) and out["tags"].abs().sum() == 0


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda e: e({"user": torch.tensor([1.0])}), TypeError, "feature 'user' has torch.float32 IDs"),
        (lambda e: e({}), KeyError, r"features \['user'\] are missing"),
        (lambda e: e({"user": torch.zeros(1, 1, 1, dtype=torch.int64)}), ValueError, "feature 'user' must be"),
        (lambda e: e({"user": [1, 2]}), TypeError, "must be a Tensor or a Ragged, got list"),
    ],
)
def test_bad_batches(make, error, message):
    with pytest.raises(error, match=message):
        make(EmbeddingEngine({"user": EmbeddingSpec(4)}))


@pytest.mark.parametrize(
    "spec, message",
    [
        (EmbeddingSpec(0), "dim must be >= 1, got 0"),
        (EmbeddingSpec(4, combiner="tile"), "'tile' needs max_len"),
        (EmbeddingSpec(4, combiner="max"), "unknown combiner 'max'"),  # type: ignore[arg-type]
        (EmbeddingSpec(4, dtype=torch.float64), "dtype must be float32, bfloat16 or float16"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingEngine({"f": spec})


def test_capped_tables_are_not_merged():
    capped = Eviction(capacity=2)
    engine = EmbeddingEngine({"a": EmbeddingSpec(4, eviction=capped), "b": EmbeddingSpec(4, eviction=capped)})
    assert len(engine.groups) == 2
    engine({"a": torch.tensor([1, 2, 3]), "b": torch.tensor([1, 2, 3])})
    engine.evict()
    assert [len(g.table) for g in engine.groups] == [2, 2]


def test_sparse_grads_with_accumulation_and_an_unused_lookup():
    engine = EmbeddingEngine({"user": EmbeddingSpec(2, initializer=Initializer.constant(0.0))})
    for _ in range(2):  # two micro-batches, one backward each
        engine({"user": torch.tensor([1, 1, 2])})["user"].sum().backward()
    engine({"user": torch.tensor([3])})  # a forward whose output is never used
    grads = engine.sparse_grads()
    assert len(grads) == 2 and engine.sparse_grads() == []
    total: dict[int, float] = {}
    for g in grads:
        for r, v in zip(g.rows.tolist(), g.grad[:, 0].tolist(), strict=True):
            total[r] = total.get(r, 0.0) + v
    assert sorted(total.values()) == [2.0, 4.0]  # ID 2 once per batch, ID 1 twice per batch


def test_sparse_grads_before_backward_keeps_the_lookups():
    engine = EmbeddingEngine({"user": EmbeddingSpec(2)})
    out = engine({"user": torch.tensor([1])})["user"]
    with pytest.raises(RuntimeError, match="call backward"):
        engine.sparse_grads()
    out.sum().backward()
    assert len(engine.sparse_grads()) == 1


def test_step_is_saved_in_state_dict():
    engine = EmbeddingEngine({"user": EmbeddingSpec(2)})
    engine({"user": torch.tensor([1])})
    other = EmbeddingEngine({"user": EmbeddingSpec(2)})
    other.load_state_dict(engine.state_dict())
    assert other.step == engine.step == 1


def test_errors_name_the_feature():
    engine = EmbeddingEngine({"tags": EmbeddingSpec(2, combiner="mean")})
    bad = Ragged(torch.tensor([1, 2]), torch.tensor([0, 2]), validate=False)
    bad.weights = torch.ones(3)
    with pytest.raises(ValueError, match="feature 'tags'"):
        engine({"tags": bad})


def test_max_len_applies_to_pooled_features():
    engine = EmbeddingEngine({"t": EmbeddingSpec(2, combiner="sum", max_len=1, initializer=Initializer.constant(1.0))})
    out = engine({"t": Ragged.from_list([[1, 2, 3]])})["t"]
    assert out.tolist() == [[1.0, 1.0]]


def test_direct_and_copying_paths_agree():
    """All-pooled groups pool in place; a group with a sequence feature copies rows first."""
    b = batch()
    pooled_only = EmbeddingEngine({"tags": EmbeddingSpec(4, combiner="mean", table="t", seed=1)})
    mixed = EmbeddingEngine(
        {
            "tags": EmbeddingSpec(4, combiner="mean", table="t", seed=1),
            "clicks": EmbeddingSpec(4, combiner=None, table="t", seed=1),
        }
    )
    torch.testing.assert_close(pooled_only(b)["tags"], mixed(b)["tags"])


def test_concat_of_one_tables_pooled_features_is_free_and_differentiable():
    from recis.embedding import concat

    specs = {f: EmbeddingSpec(4, initializer=Initializer.uniform(-1, 1)) for f in ("a", "b", "c")}
    specs["d"] = EmbeddingSpec(2, combiner="mean")  # another width: another physical table
    b = {f: Ragged.from_list([[1, 2], [], [3]]) for f in specs}
    engine, twin = EmbeddingEngine(specs), EmbeddingEngine(specs)
    out, ref = engine(b), twin(b)
    x = concat([out["a"], out["b"], out["c"]])
    assert x.shape == (3, 12) and x.data_ptr() == out["a"].data_ptr()  # no copy
    torch.testing.assert_close(x, torch.cat([ref["a"], ref["b"], ref["c"]], dim=1))
    # Other orders, subsets and mixed tables are an ordinary torch.cat.
    for names in (["b", "a", "c"], ["a", "b"], ["a", "b", "c", "d"]):
        y = concat([out[n] for n in names])
        assert y.data_ptr() != out["a"].data_ptr()
        torch.testing.assert_close(y, torch.cat([ref[n] for n in names], dim=1))
    w = torch.randn(3, 12)
    ((x * w).sum() + out["b"].sum()).backward()
    ((torch.cat([ref["a"], ref["b"], ref["c"]], dim=1) * w).sum() + ref["b"].sum()).backward()
    (g,) = [s for s in engine.sparse_grads() if s.table.dim == 4]
    (want,) = [s for s in twin.sparse_grads() if s.table.dim == 4]
    assert torch.equal(g.rows, want.rows)
    torch.testing.assert_close(g.grad, want.grad)


def test_a_raw_string_column_is_refused_with_a_hint():
    import pyarrow as pa

    from recis.io.convert import to_torch

    engine = EmbeddingEngine({"site": EmbeddingSpec(4)})
    with pytest.raises(TypeError, match=r"feature 'site' is a Ragged of uint8: the bytes of a string column.*Hash"):
        engine({"site": to_torch(pa.array(["ab", "c"]))})
    assert engine({"site": torch.tensor([1, 2], dtype=torch.uint8)})["site"].shape == (2, 4)  # uint8 IDs: fine


def test_recorded_lookups_stop_growing_without_a_sparse_step():
    engine = EmbeddingEngine({"item": EmbeddingSpec(4)})
    engine.max_recorded_steps = 5
    with pytest.warns(RuntimeWarning, match="5 training forwards without sparse_grads"):
        for step in range(8):
            engine({"item": torch.arange(step * 10, step * 10 + 10)})["item"].sum().backward()
    assert len(engine._pending) == 5
    assert len(engine.sparse_grads()) == 5
    engine({"item": torch.arange(3)})["item"].sum().backward()  # recording again after the read
    assert len(engine.sparse_grads()) == 1


def test_state_dict_round_trips_the_tables_through_torch_save(tmp_path):
    from recis.embedding import without_tables

    def model():
        torch.manual_seed(0)
        specs = {"user": EmbeddingSpec(4), "item": EmbeddingSpec(4, table="items"),
                 "hist": EmbeddingSpec(4, table="items", combiner=None)}  # fmt: skip
        return torch.nn.ModuleDict({"emb": EmbeddingEngine(specs), "mlp": torch.nn.Linear(4, 1)})

    batch = {"user": torch.tensor([-3, 2**40]), "item": torch.tensor([5, 6]), "hist": Ragged.from_list([[5, 7], []])}
    trained = model()
    trained["emb"](batch)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    fresh = model()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    trained.eval(), fresh.eval()
    with torch.no_grad():
        want, got = trained["emb"](batch), fresh["emb"](batch)
    assert torch.equal(want["user"], got["user"]) and torch.equal(want["hist"].values, got["hist"].values)
    assert fresh["emb"].step == 1 and len(fresh["emb"].groups[0].table) == 5  # one merged table: 2 users, 3 items
    for a, b in zip(trained["emb"].groups, fresh["emb"].groups, strict=True):  # rows, ids and metadata alike
        sa, sb = a.table.state_dict(), b.table.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in ("ids", "tags", "steps", "freqs", "embeddings"))

    with pytest.raises(RuntimeError, match=r"already holds 5 rows; load a state_dict's tables into a fresh model"):
        fresh.load_state_dict(trained.state_dict())
    state = trained.state_dict()
    del state["emb.tables.0.ids"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*emb\.tables\.0\.ids"):
        model().load_state_dict(state)
    with without_tables(trained):
        dense = trained.state_dict()
    assert not [k for k in dense if ".tables." in k]
    fresh = model()
    with without_tables(fresh):
        fresh.load_state_dict(dense)  # no rows expected, none loaded
    assert len(fresh["emb"].groups[0].table) == 0


def test_state_dict_tables_refuse_other_layouts_and_sharded_engines():
    a = EmbeddingEngine({"user": EmbeddingSpec(4), "item": EmbeddingSpec(4, combiner="mean")})
    a({"user": torch.tensor([1]), "item": torch.tensor([2])})
    b = EmbeddingEngine({"item": EmbeddingSpec(4, combiner="mean"), "user": EmbeddingSpec(4)})  # tags swapped
    with pytest.raises(
        RuntimeError, match=r"the state's physical tables hold the logical tables \[\['user', 'item'\]\]"
    ):
        b.load_state_dict(a.state_dict())
    a.sharded = True  # as shard() leaves it (no process group needed to refuse)
    with pytest.raises(RuntimeError, match="a sharded engine's rows are spread over the ranks"):
        a.state_dict()
