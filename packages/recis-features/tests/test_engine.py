"""FeatureEngine: fused results equal per-feature ops, grouping, de-duplication, pass-through, errors, fit."""

import csv
import math
from pathlib import Path

import farmhash
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recis.core import Ragged
from recis.features import (
    Bucketize,
    Clip,
    Cross,
    Feature,
    FeatureEngine,
    FillMissing,
    Hash,
    Log1p,
    Mod,
    MultiHash,
    Standardize,
    Truncate,
    string_column,
)

CRITEO = Path(__file__).parents[3] / ".." / "shared" / "data" / "ctr_samples" / "deepctr_criteo_sample.txt"


def features() -> list[Feature]:
    return [
        Feature("s1", ops=[Hash(buckets=1000)]),
        Feature("s2", "s1", [Hash(buckets=1000)]),  # same definition as s1: computed once
        Feature("s3", ops=[Hash("murmur", seed=5)]),
        Feature("tags", ops=[FillMissing("none"), Truncate(2, "left"), Hash(buckets=50)]),
        Feature("x", ops=[FillMissing(0.0), Clip(0.0, 1e6), Log1p(), Bucketize([0.5, 1.0, 2.0])]),
        Feature("y", "x", [FillMissing(-1.0), Bucketize([0.0, 10.0])]),
        Feature("ids", ops=[Mod(7), MultiHash(2, buckets=[10, 20])]),
        Feature("seq", ops=[Truncate(3), Hash("murmur", buckets=100)]),
        Feature("s1_x_seq", ops=[Cross(["s1", "seq"], buckets=10_000)]),
        Feature("s1_x_raw", ops=[Cross(["s1", "raw_ids", "s3"], seed=1)]),
    ]


@st.composite
def batches(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(0, 10))
    text = st.one_of(st.text(max_size=6), st.just(""))
    tags = [draw(st.lists(text, max_size=4)) for _ in range(n)]
    num = st.one_of(st.floats(-5, 50, width=32), st.just(float("nan")))
    ids = st.integers(-(2**63), 2**63 - 1)
    return {
        "s1": string_column(draw(st.lists(text, min_size=n, max_size=n))),
        "s3": draw(st.lists(text, min_size=n, max_size=n)),  # plain Python strings
        "tags": Ragged.from_lengths(string_column([t for row in tags for t in row]), [len(row) for row in tags]),
        "x": torch.tensor(draw(st.lists(num, min_size=n, max_size=n)), dtype=torch.float32),
        "ids": torch.tensor(draw(st.lists(ids, min_size=n, max_size=n)), dtype=torch.int64),
        "seq": Ragged.from_list([draw(st.lists(ids, max_size=5)) for _ in range(n)], dtype=torch.int64),
        "raw_ids": torch.tensor(draw(st.lists(ids, min_size=n, max_size=n)), dtype=torch.int64),
        "label": torch.arange(n),
    }


def unfused(feats: list[Feature], batch: dict) -> dict:
    """Each feature's ops one at a time, the way a user would chain the single-column functions."""
    out: dict = {}
    for f in feats:
        if f.is_cross:
            x = f.ops[0]([out[d] if d in out else batch[d] for d in f.ops[0].features])
            ops = f.ops[1:]
        else:
            x, ops = batch[f.source], f.ops
        for op in ops:
            x = op(x)
        out[f.name] = x
    return out


def equal(a, b) -> bool:
    if isinstance(a, Ragged):
        return (
            isinstance(b, Ragged)
            and torch.equal(a.offsets, b.offsets)
            and equal(a.values, b.values)
            and ((a.weights is None and b.weights is None) or torch.equal(a.weights, b.weights))
        )
    return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)


@settings(max_examples=40)
@given(batches())
def test_fused_engine_equals_ops_one_by_one(batch):
    feats = features()
    out = FeatureEngine(feats)(batch)
    want = unfused(feats, batch)
    for f in feats:
        assert equal(out[f.name], want[f.name]), f.name
    assert out["label"] is batch["label"]  # unused columns pass through
    assert "raw_ids" not in out  # consumed sources are dropped


def test_plan_groups_each_op_kind_into_one_call_per_round():
    engine = FeatureEngine(features())
    kinds = [[(k.__name__, [n for n, _ in m]) for k, m in groups] for groups in engine._plan]
    flat = [k for groups in kinds for k, _ in groups]
    assert len(engine._computed) == len(features()) - 1  # s2 is s1
    # Hash waits for tags and seq (FillMissing, Truncate first), so each kind is one call.
    assert sorted(flat) == sorted(set(flat)) and len(kinds) == 4
    assert ("Hash", ["s1", "s3", "tags", "seq"]) in kinds[2]
    assert engine.num_calls == len(flat)


def test_criteo_shaped_engine_is_four_calls_and_matches_pyfarmhash():
    cats = [f"C{i}" for i in range(1, 27)]
    nums = [f"I{i}" for i in range(1, 14)]
    feats = [Feature(c, ops=[Hash(buckets=2**20)]) for c in cats]
    feats += [Feature(c, ops=[FillMissing(0.0), Bucketize([0, 1, 10, 100])]) for c in nums]
    feats += [Feature("C1xC2", ops=[Cross(["C1", "C2"], buckets=2**20)]), Feature("C3xC4", ops=[Cross(["C3", "C4"])])]
    engine = FeatureEngine(feats)
    assert engine.num_calls == 4  # Hash(26) + FillMissing(13), then Bucketize(13) + Cross(2)
    if not CRITEO.exists():
        pytest.skip(f"no Criteo sample at {CRITEO}")
    with CRITEO.open() as f:
        rows = list(csv.DictReader(f))
    batch = {c: string_column([r[c] for r in rows]) for c in cats}
    batch |= {c: torch.tensor([float(r[c]) if r[c] else math.nan for r in rows]) for c in nums}
    batch["label"] = torch.tensor([int(r["label"]) for r in rows])
    out = engine(batch)
    assert out["C5"].tolist() == [farmhash.fingerprint64(r["C5"].encode()) % 2**20 for r in rows]
    want = [next(i for i, b in enumerate([0, 1, 10, 100, math.inf]) if b > (float(r["I2"] or 0))) for r in rows]
    assert out["I2"].tolist() == want
    assert out["C1xC2"].shape == (len(rows),) and sorted(out) == sorted([*cats, *nums, "C1xC2", "C3xC4", "label"])


def test_duplicates_keep_sources_and_zero_op_features():
    f = Feature("a", ops=[Hash()])
    engine = FeatureEngine([f, f, Feature("b", "a"), Feature("c", "a", [Hash()])], keep_sources=True)
    out = engine({"a": ["x", "y"]})
    assert out["a"] is out["c"] and isinstance(out["b"], Ragged) and sorted(out) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="duplicate feature name 'a' with different definitions"):
        FeatureEngine([f, Feature("a", ops=[Hash(buckets=3)])])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Feature("I1", ops=[Bucketize([1.0, 0.5])]), r"feature 'I1', op Bucketize\(.*strictly increasing"),
        (lambda: Feature("C1", ops=[Hash(buckets=0)]), r"feature 'C1', op Hash\(.*buckets must be None or an int in"),
        (lambda: Feature("C1", ops=[Hash(buckets=-3)]), r"feature 'C1', op Hash\(.*got -3"),
        (lambda: Feature("x", ops=[Cross(["a", "b"], buckets=0)]), r"feature 'x', op Cross\(.*buckets"),
        (
            lambda: Feature("x", ops=[Mod(0)]),
            r"feature 'x', op Mod\(n=0\): Mod: n must be an int in \[1, 2\*\*63 - 1\]",
        ),
        (lambda: Feature("x", ops=[MultiHash(0)]), r"feature 'x', op MultiHash\(.*k must be"),
        (lambda: Feature("x", ops=[Hash(), Cross(["a", "b"])]), "a Cross must be the first op"),
        (lambda: Feature("x", "src", [Cross(["a", "b"])]), "reads its crossed features, not a source column"),
        (lambda: Feature("x", ops=[Truncate(2, "middle")]), "side must be 'left' or 'right'"),
        (lambda: Feature("x", ops=[Standardize(mean=1.0)]), "give both mean and std"),
        (lambda: Feature("x", ops=["hash"]), r"ops\[0\] must be an Op"),
        (
            lambda: FeatureEngine([Feature("a", ops=[Cross(["b", "c"])]), Feature("b", ops=[Cross(["a", "c"])])]),
            "crosses form a cycle",
        ),
    ],
)
def test_config_errors_name_the_feature_and_op(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "feature, batch, message",
    [
        (Feature("C1", ops=[Hash()]), {"C2": ["a"]}, r"feature 'C1', op Hash\(.*unknown source column 'C1'"),
        (Feature("I1", ops=[Hash()]), {"I1": torch.tensor([1.5])}, r"feature 'I1', op Hash\(.*integer IDs"),
        (Feature("C1", ops=[Bucketize([0])]), {"C1": ["a"]}, r"feature 'C1', op Bucketize.*expected numbers"),
        (Feature("I1", ops=[Bucketize([0])]), {"I1": torch.tensor([math.nan])}, r"feature 'I1'.*is NaN"),
        (Feature("I1", ops=[Truncate(1)]), {"I1": torch.tensor([1])}, r"feature 'I1', op Truncate.*list column"),
        (Feature("x", ops=[Cross(["a", "b"])]), {"a": torch.tensor([1])}, r"feature 'x', op Cross.*column 'b'"),
        (Feature("I1", ops=[Mod(3)]), {"I1": {"not": "a column"}}, r"feature 'I1', op Mod.*expected a Tensor"),
    ],
)
def test_batch_errors_name_the_feature_and_op(feature, batch, message):
    others = [Feature(f"ok{i}", "ok", [Bucketize([0])]) for i in range(3)]  # fused beside the bad one
    with pytest.raises(ValueError, match=message):
        FeatureEngine([*others, feature])({**batch, "ok": torch.tensor([1.0])})


def test_fit_standardize_statistics():
    engine = FeatureEngine(
        [
            Feature("x", ops=[FillMissing(0.0), Standardize()]),
            Feature("z", "x", [Log1p(), Standardize(), Standardize()]),
        ]
    )
    data = [{"x": torch.tensor([1.0, math.nan, 3.0])}, {"x": torch.tensor([8.0])}]
    fitted = engine.fit(data)
    x = torch.tensor([1.0, 0.0, 3.0, 8.0], dtype=torch.float64)
    op = fitted.features[0].ops[1]
    assert op.mean == pytest.approx(float(x.mean())) and op.std == pytest.approx(float(x.std(unbiased=False)))
    second = fitted.features[1].ops[2]  # fitted on the output of the first Standardize: mean 0, std 1
    assert second.mean == pytest.approx(0.0, abs=1e-6) and second.std == pytest.approx(1.0, abs=1e-6)
    out = fitted({"x": torch.tensor([3.0])})
    assert out["x"].item() == pytest.approx((3.0 - op.mean) / op.std)
    with pytest.raises(
        ValueError, match=r"feature 'x', op Standardize\(mean=None, std=None\): Standardize is not fitted"
    ):
        engine({"x": torch.tensor([1.0])})


@pytest.mark.parametrize(
    "data",
    [[{"x": torch.tensor([math.nan, math.nan])}, {"x": torch.tensor([math.inf])}], [{"x": torch.zeros(0)}], []],
    ids=["all-nan", "empty", "no-batches"],
)
def test_fit_refuses_a_column_without_finite_values(data):
    engine = FeatureEngine([Feature("z", "x", [Log1p(), Standardize()])])
    with pytest.raises(ValueError, match=r"feature 'z', op Standardize\(mean=None, std=None\): .*no finite value.*'x'"):
        engine.fit(data)


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    "op, message",
    [
        (Hash(buckets=2**64), r"buckets must be None or an int in \[1, 2\*\*63 - 1\], got 18446744073709551616"),
        (
            Hash("murmur", buckets=2**63),
            r"buckets must be None or an int in \[1, 2\*\*63 - 1\], got 9223372036854775808",
        ),
        (MultiHash(2, buckets=2**63), r"buckets must be None or an int in \[1, 2\*\*63 - 1\], got 9223372036854775808"),
        (
            MultiHash(2, buckets=[5, 2**64]),
            r"buckets\[1\] must be an int in \[1, 2\*\*63 - 1\], got 18446744073709551616",
        ),
        (Mod(2**63), r"n must be an int in \[1, 2\*\*63 - 1\], got 9223372036854775808"),
        (
            Cross(["a", "b"], buckets=2**64),
            r"buckets must be None or an int in \[1, 2\*\*63 - 1\], got 18446744073709551616",
        ),
        (Truncate(2**63), r"max_len must be an int in \[0, 2\*\*63 - 1\], got 9223372036854775808"),
        (Mod(True), r"n must be an int in \[1, 2\*\*63 - 1\], got True"),
    ],
)
def test_integer_settings_outside_int64_fail_when_the_feature_is_built(op, message):
    with pytest.raises(ValueError, match=message):
        Feature("f", ops=[op])


def test_largest_int64_settings_run():
    ids = torch.tensor([-7, 2**62])
    engine = FeatureEngine(
        [
            Feature("h", "ids", [Hash("murmur", buckets=INT64_MAX)]),
            Feature("m", "ids", [Mod(INT64_MAX)]),
            Feature("c", ops=[Cross(["ids", "ids"], buckets=INT64_MAX)]),
        ]
    )
    out = engine({"ids": ids})
    assert out["m"].tolist() == [INT64_MAX - 7, 2**62]
    assert all(bool((out[k] >= 0).all()) for k in ("h", "c"))
