"""Every example model learns a planted signal through the CLI's config path, and a model of the
user's own loads from `model.type = "package.module:Class"`."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recis.core import Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec
from recis.train import config as cfgmod
from recis.train.cli import run_config
from recis.train.models import SIM

pytestmark = pytest.mark.slow  # trains nine small models


def write(path, n, seed):
    """item % 3 == 0 and "the item's category is in the user's history" each raise the click odds."""
    g = np.random.default_rng(seed)
    item = g.integers(0, 300, n)
    hist = [g.integers(0, 300, g.integers(0, 80)) for _ in range(n)]
    seen = np.array([(i % 20) in set(h % 20) for i, h in zip(item, hist, strict=True)])
    logit = 2.5 * (item % 3 == 0) + 2.5 * seen - 2.5
    click = (g.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    table = pa.table({
        "user": g.integers(0, 500, n), "item": item, "cat": item % 20,
        "hist": pa.array([h.tolist() for h in hist], pa.list_(pa.int64())),
        "hist_cat": pa.array([(h % 20).tolist() for h in hist], pa.list_(pa.int64())),
        "price": g.random(n), "click": click, "like": click * (item % 2),
    })  # fmt: skip
    pq.write_table(table, path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return write(root / "train.parquet", 12_000, 0), write(root / "test.parquet", 3000, 1)


POOLED = {"user": {"dim": 8}, "item": {"dim": 8, "table": "items"}, "cat": {"dim": 8}}
HISTORY = {"hist": {"dim": 8, "table": "items", "combiner": "none", "max_len": 80}}
# click AUC floors, a little under what each reaches (seeded runs; logistic regression: 0.58). Only
# the searched history sees "category in history" whole, so SIM by category beats DIN (0.79 vs 0.71).
MODELS = {
    "din": ({**POOLED, **HISTORY}, {"sequences": {"hist": "item"}, "hidden": [32]}, 0.68),
    "din-ragged": (
        {**POOLED, "hist": HISTORY["hist"] | {"ragged": True}},
        {"sequences": {"hist": "item"}, "hidden": [32]},
        0.68,
    ),
    "sim-category": (
        {**POOLED, **HISTORY},
        {"type": "sim", "history": "hist", "target": "item", "category": ["hist_cat", "cat"], "top_k": 8},
        0.76,
    ),
    "sim-similarity": (
        {**POOLED, **HISTORY},
        {"type": "sim", "history": "hist", "target": "item", "top_k": 16, "search": "similarity"},
        0.68,
    ),
    "deepfm": (POOLED, {"hidden": [32]}, 0.67),
    "dcn": (POOLED, {"cross_layers": 2, "hidden": [32]}, 0.67),
    "wide_deep": ({**POOLED, "user_item": {"dim": 1}}, {"wide": ["user_item"], "hidden": [32]}, 0.67),
    "mmoe": ({**POOLED, **HISTORY}, {"experts": 3, "expert_hidden": [32], "tower": [8]}, 0.66),
    "transformer": ({**POOLED, **HISTORY}, {"sequence": "hist", "target": "item", "hidden": [32]}, 0.70),
    "logistic": (
        {n: {**v, "dim": 1} for n, v in POOLED.items()} | {"hist": {"dim": 1, "table": "items", "combiner": "mean"}},
        {},
        0.55,
    ),
}


def config(data, out, embeddings, model, objectives=({"label": "click"},)):
    train, test = data
    columns = ["user", "item", "cat", "hist", "hist_cat", "price", "click", "like"]
    cfg = {
        "output_dir": str(out),
        "data": {"train": train, "eval": test, "batch_size": 256, "shuffle": True, "columns": columns},
        "embeddings": embeddings,
        "model": {
            "type": model.get("type", "din"),
            "dense": ["price"],
            **{k: v for k, v in model.items() if k != "type"},
        },
        "objectives": list(objectives),
        "optim": {"sparse": {"type": "adagrad", "lr": 0.05}, "dense": {"type": "adam", "lr": 0.003}},
        "train": {"epochs": 3, "progress": False, "checkpoint_every": 10**6, "seed": 0},
    }
    if "user_item" in embeddings:  # the wide part's cross feature
        cross = {"op": "Cross", "features": ["user", "item"], "buckets": 100_000}
        cfg["features"] = {"keep_sources": True, "features": [{"name": "user_item", "ops": [cross]}]}
    return cfg


@pytest.mark.parametrize("name", MODELS)
def test_model_learns_the_planted_signal(data, tmp_path, name):
    embeddings, model, floor = MODELS[name]
    kind = name.split("-")[0]
    model = {"type": kind} | model if "type" not in model else model
    objectives = [{"label": "click"}, {"label": "like"}] if kind == "mmoe" else [{"label": "click"}]
    result = run_config(config(data, tmp_path, embeddings, model, objectives))["model"]
    print(f"{name}: click AUC {result['eval']['click.auc']:.4f}")  # pytest -s shows the figures
    assert result["eval"]["click.auc"] >= floor, result["eval"]


def test_sim_keeps_the_latest_events_of_the_candidates_category():
    emb = EmbeddingEngine({"item": EmbeddingSpec(2, table="t"), "hist": EmbeddingSpec(2, table="t", combiner=None,
                                                                                     max_len=5)})  # fmt: skip
    model = SIM(emb, "hist", "item", category=("hist_cat", "cat"), top_k=2, hidden=(4,))
    batch = {"cat": torch.tensor([7, 9]), "hist_cat": Ragged.from_list([[7, 1, 7, 7, 2, 7], [1, 2]])}
    # row 0's history is cut to its last 5 events [1, 7, 7, 2, 7] (max_len, side "left"), positions 0-4
    values = torch.arange(20.0).reshape(2, 5, 2)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    kept, keep = model.searched(batch, torch.zeros(2, 2), values, mask)
    assert kept[0].tolist() == [values[0, 4].tolist(), values[0, 2].tolist()]  # the two latest 7s
    assert keep.tolist() == [[True, True], [False, False]]  # row 1 has no event of category 9


def test_a_model_of_ones_own_from_its_import_path(data, tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent('''
        import torch
        from recis.train.models import MLP, RankingModel

        class TwoTower(RankingModel):
            def __init__(self, embedding, width, features=None, dense=(), heads=("label",), dense_width=0):
                super().__init__(embedding, features, dense, heads)
                self.user, self.item = MLP(8, [width]), MLP(8, [width])

            def forward(self, batch):
                emb = self.embedding(batch)
                score = (self.user(emb["user"]) * self.item(emb["item"])).sum(1)
                return {name: score for name in self.head_widths}
    '''))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    embeddings = {"user": {"dim": 8}, "item": {"dim": 8}}
    result = run_config(config(data, tmp_path / "run", embeddings, {"type": "mymodels:TwoTower", "width": 16}))
    assert result["model"]["eval"]["click.auc"] > 0.6
    bad = config(data, tmp_path / "run2", embeddings, {"type": "mymodels:TwoTower", "width": 16, "depth": 3})
    with pytest.raises(cfgmod.ConfigError, match=r"config key 'model' \(type 'mymodels:TwoTower'\).*depth"):
        run_config(bad)
    with pytest.raises(cfgmod.ConfigError, match=r"cannot load 'nowhere:Model' \(ModuleNotFoundError"):
        run_config(config(data, tmp_path / "run3", embeddings, {"type": "nowhere:Model"}))
    with pytest.raises(cfgmod.ConfigError, match=r"expected one of 'din'.*or 'package.module:Class'"):
        run_config(config(data, tmp_path / "run4", embeddings, {"type": "dinn"}))
    sys.modules.pop("mymodels", None)


def test_the_sim_example_config_trains_on_demo_data(tmp_path):
    from pathlib import Path

    from recis.train import demo

    demo.generate(tmp_path / "data", rows=6000, test_rows=2000, files=1)
    cfg = cfgmod.load(str(Path(__file__).parents[3] / "examples" / "demo_sim.toml"), [])
    cfg["data"] |= {"train": str(tmp_path / "data" / "train"), "eval": str(tmp_path / "data" / "test")}
    cfg["output_dir"] = str(tmp_path / "run")
    assert run_config(cfg)["model"]["eval"]["label.auc"] > 0.55


def test_ragged_target_attention_equals_the_padded_one():
    from recis.train.models import TargetAttention

    torch.manual_seed(0)
    att = TargetAttention(8, (16,))
    lengths = [3, 0, 1, 7, 2]
    keys = Ragged.from_lengths(torch.randn(sum(lengths), 8, requires_grad=True), lengths)
    query = torch.randn(5, 8, requires_grad=True)
    padded = keys.to_dense(0.0)
    a, b = att(query, keys), att(query, padded.values, padded.mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(a[1], torch.zeros(8))  # an empty history pools to zeros
    ga = torch.autograd.grad(a.square().sum(), [query, keys.values, *att.parameters()])
    gb = torch.autograd.grad(b.square().sum(), [query, keys.values, *att.parameters()])
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_target_attention_scores_as_the_mlp_over_the_concatenation():
    """The factored first layer computes exactly the scorer MLP over [q, k, q - k, q * k]."""
    from recis.train.models import TargetAttention

    torch.manual_seed(1)
    att = TargetAttention(8, (16, 4))
    query, keys = torch.randn(3, 8, requires_grad=True), torch.randn(3, 5, 8, requires_grad=True)
    q = query.unsqueeze(1).expand_as(keys)
    want = att.score(torch.cat([q, keys, q - keys, q * keys], -1)).squeeze(-1)
    got = att._scores(query, keys)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # and the same gradients, into the inputs and every parameter
    upstream = torch.randn(3, 5)
    inputs = [query, keys, *att.parameters()]
    for a, b in zip(
        torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(want, inputs, upstream), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # one row, and no events at all
        one = att._scores(query[:1], keys[:1])
        torch.testing.assert_close(one, want[:1], rtol=1e-5, atol=1e-6)
        assert att._scores(query, keys[:, :0]).shape == (3, 0)
    rows = torch.tensor([0, 0, 2, 2])  # ragged: two events each for rows 0 and 2, none for row 1
    flat = torch.randn(4, 8, requires_grad=True)
    want = att.score(torch.cat([query[rows], flat, query[rows] - flat, query[rows] * flat], -1)).squeeze(-1)
    got = att._scores(query, Ragged.from_lengths(flat, [2, 0, 2]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    upstream, inputs = torch.randn(4), [query, flat, *att.parameters()]
    for a, b in zip(
        torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(want, inputs, upstream), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hidden", [(16,), (16, 4), ()], ids=["one-layer", "two-layers", "linear"])
def test_target_attention_traced_form_equals_the_eager_one(hidden):
    """Traced (torch.compile, torch.export), the scorer is written for Inductor to fuse: bmm then the
    row part added, the last ReLU and layer as a multiply and a sum. Same outputs and gradients."""
    from recis.train.models import TargetAttention

    torch.manual_seed(2)
    att = TargetAttention(8, hidden)
    query = torch.randn(5, 8, requires_grad=True)
    ragged = Ragged.from_lengths(torch.randn(13, 8, requires_grad=True), [3, 0, 1, 7, 2])
    padded = ragged.to_dense(0.0)
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    traced = torch.compile(att, backend=backend, dynamic=False)
    for args in ((query, padded.values, padded.mask), (query, ragged)):
        want, got = att(*args), traced(*args)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        inputs = [query, ragged.values, *att.parameters()]
        upstream = torch.randn_like(want)
        for a, b in zip(
            torch.autograd.grad(got, inputs, upstream, retain_graph=True),
            torch.autograd.grad(want, inputs, upstream, retain_graph=True),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ops = [getattr(n.target, "__name__", str(n.target)) for g in graphs for n in g.graph.nodes]
    assert "bmm" in ops and "baddbmm" not in ops and "addmm" not in ops  # the traced form ran
    # the first layer's row part and the hidden layers are linear; the last one (after a ReLU) is not
    assert ops.count("linear") == len(graphs) * max(len(hidden), 1)


def test_models_name_what_does_not_fit():
    from recis.train.models import DCNv2, WideDeep

    seq = {"item": EmbeddingSpec(2, table="t"), "hist": EmbeddingSpec(2, table="t", combiner=None, max_len=5)}
    with pytest.raises(ValueError, match=r"DCNv2: every feature must be pooled .*\['hist'\] are sequences"):
        DCNv2(EmbeddingEngine(seq))
    with pytest.raises(ValueError, match=r"WideDeep: needs at least one deep feature besides the wide ones \['w'\]"):
        WideDeep(EmbeddingEngine({"w": EmbeddingSpec(1)}), wide=["w"])
    model = SIM(EmbeddingEngine(seq), "hist", "item", category=("hist_cat", "cat"), top_k=2, hidden=(4,))
    batch = {"item": torch.tensor([5, 6]), "cat": torch.tensor([1, 2]), "hist": Ragged.from_list([[5, 7], [8]]),
             "hist_cat": Ragged.from_list([[1, 2], [1, 2]])}  # fmt: skip
    with pytest.raises(ValueError, match=r"SIM: row 1 has 1 events in 'hist' but 2 categories in 'hist_cat'"):
        model(batch)


def test_deepfm_first_order_weights_enter_the_logit_once_and_linearly():
    """Each ID's first-order weight is the last coordinate of its row: raising every weight by 0.5
    raises a logit by 0.5 per ID in its (sum-pooled) bags and leaves the FM and the deep part
    alone; the dense columns' linear term moves it too. Without first_order the coordinate is a
    factor."""
    from recis.train.models import DeepFM

    specs = DeepFM.first_order_specs({f: EmbeddingSpec(4, table="t") for f in ("a", "b", "c")})
    assert {s.dim for s in specs.values()} == {5}
    torch.manual_seed(0)
    model = DeepFM(EmbeddingEngine(specs), dense=["x"], dense_width=1, hidden=(8,))
    batch = {"a": torch.tensor([1, 2]), "b": torch.tensor([3, 4]), "c": Ragged.from_list([[5, 6], []])}
    model.train()
    model({**batch, "x": torch.zeros(2)})  # inserts the rows
    model.eval()
    (table,) = model.embedding.tables().values()
    before = model({**batch, "x": torch.zeros(2)})["label"]
    rows = table.state_dict()
    rows["embeddings"][:, -1] += 0.5
    table.load_state_dict(rows)
    after = model({**batch, "x": torch.zeros(2)})["label"]
    # row 0 holds 4 IDs (c has two), row 1 holds 2 (c's bag is empty)
    torch.testing.assert_close(after - before, torch.tensor([2.0, 1.0]))
    shifted = model({**batch, "x": torch.ones(2)})["label"]
    assert model.linear is not None and not torch.equal(shifted, after)

    plain = DeepFM(EmbeddingEngine(specs), first_order=False, hidden=(8,))
    assert plain.dim == 5 and plain.linear is None
    with pytest.raises(ValueError, match="dim >= 2"):
        DeepFM(EmbeddingEngine({"a": EmbeddingSpec(1)}))
