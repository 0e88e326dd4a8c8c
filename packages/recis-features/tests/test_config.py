"""Configs round-trip through dicts, JSON and TOML (tomllib reads what our writer wrote)."""

import json
import math
import tomllib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

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
    from_json,
    from_toml,
    to_json,
    to_toml,
)
from recis.features.config import dumps_toml, engine_from_dict


def every_op() -> FeatureEngine:
    return FeatureEngine(
        [
            Feature("C1", ops=[FillMissing('∅ "quoted" \\ \t'), Hash("farm", buckets=2**20)]),
            Feature("C 2 é", "raw col", [Hash("murmur", seed=2**64 - 1)]),
            Feature("I1", ops=[FillMissing(0.0), Clip(-math.inf, 1e300), Log1p(), Standardize(0.5, 2.25)]),
            Feature("I2", ops=[Clip(min=1), Bucketize([-1.5, 0, 1e-7, 3])]),
            Feature("ids", ops=[Mod(97), MultiHash(3, buckets=[10, 20, 30], seed=4)]),
            Feature("ids2", "ids", [MultiHash(2, buckets=7)]),
            Feature("seq", ops=[Truncate(50, "left"), FillMissing(-1)]),
            Feature("cross", ops=[Cross(["C1", "ids2", "seq"], buckets=1000, seed=3)]),
            Feature("x", ops=[Standardize()]),
        ],
        keep_sources=True,
    )


def test_json_and_toml_round_trip_every_op():
    engine = every_op()
    for text, load in ((to_json(engine), from_json), (to_toml(engine), from_toml)):
        back = load(text)
        assert back.features == engine.features and back.keep_sources
        assert back.num_calls == engine.num_calls
    assert tomllib.loads(to_toml(engine)) == json.loads(to_json(engine))


def test_round_tripped_engine_computes_the_same():
    engine = FeatureEngine([Feature("s", ops=[Hash(buckets=100)]), Feature("n", ops=[Bucketize([1, 2])])])
    batch = {"s": ["a", "b"], "n": torch.tensor([0.5, 3.0])}
    for back in (from_json(to_json(engine)), from_toml(to_toml(engine))):
        out, want = back(batch), engine(batch)
        assert all(torch.equal(out[k], want[k]) for k in want)


scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(), st.booleans(), st.lists(st.integers())
)


@given(st.dictionaries(st.text(min_size=1), scalars, max_size=5))
def test_toml_writer_round_trips_scalars(d):
    assert tomllib.loads(dumps_toml({"t": [d]})) == {"t": [d]}


def test_bad_configs():
    with pytest.raises(ValueError, match="unknown op 'Hashh'"):
        engine_from_dict({"features": [{"name": "a", "ops": [{"op": "Hashh"}]}]})
    with pytest.raises(ValueError, match=r"feature 'a': op Hash: unknown settings \['bucket'\]"):
        engine_from_dict({"features": [{"name": "a", "ops": [{"op": "Hash", "bucket": 3}]}]})
    with pytest.raises(ValueError, match=r"feature 'a', op Hash\(.*buckets"):
        from_toml('[[features]]\nname = "a"\n[[features.ops]]\nop = "Hash"\nbuckets = 0\n')
    with pytest.raises(ValueError, match="config version 2"):
        engine_from_dict({"version": 2})


def test_bucketize_semantics_in_configs():
    engine = FeatureEngine(
        [Feature("tf", "x", [Bucketize([0.7], semantics="tensorflow")]), Feature("f64", "x", [Bucketize([0.7])])]
    )
    text = to_toml(engine)
    assert 'semantics = "tensorflow"' in text and text.count("semantics") == 1  # the default is not written
    loaded = from_toml(
        '[[features]]\nname = "x"\n[[features.ops]]\nop = "Bucketize"\nboundaries = [0.7]\nsemantics = "tensorflow"\n'
    )
    assert loaded({"x": torch.tensor([0.7])})["x"].tolist() == [1]
    for back in (from_toml(text), from_json(to_json(engine))):
        assert back.features == engine.features
    with pytest.raises(
        ValueError, match=r"feature 'x', op Bucketize\(.*semantics must be 'float64' or 'tensorflow', got 'tf'"
    ):
        from_toml(
            '[[features]]\nname = "x"\n[[features.ops]]\nop = "Bucketize"\nboundaries = [0.7]\nsemantics = "tf"\n'
        )
