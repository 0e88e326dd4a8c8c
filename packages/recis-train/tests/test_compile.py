"""torch.compile of models holding an EmbeddingEngine: the dense part compiles, the engine runs eagerly."""

import pytest
import torch

from recis.core import Ragged
from recis.io import ColumnReader
from recis.optim import SparseAdam, SparseRowWiseAdagrad
from recis.train import Objective, Trainer, TrainerConfig

from .conftest import make_din

pytestmark = pytest.mark.slow  # each test compiles the DIN forward and backward (5-20 s)


def fit(data_file, out_dir, sparse, compile, ragged=False):
    model = make_din(dropout=0.0)  # dropout draws differ between eager and compiled code
    if ragged:
        for name, spec in model.embedding.specs.items():
            if spec.combiner is None:
                model.embedding.specs[name] = type(spec)(**{**spec.__dict__, "ragged": True})
    # 256 rows in batches of 24: ten full batches and one of 16 per epoch; histories of 0-4 items.
    reader = ColumnReader(data_file, ["user", "item", "hist", "click"], batch_size=24, shuffle=True, seed=3)
    cfg = TrainerConfig(objectives=[Objective("click")], epochs=2, output_dir=str(out_dir), log_every=1,
                        progress=False, compile=compile)  # fmt: skip
    optimizers = sparse(model, lr=0.02), torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = Trainer(model, reader, reader, *optimizers, cfg)
    return trainer.fit(), trainer


def losses(out_dir):
    import json

    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.parametrize("sparse", [SparseAdam, SparseRowWiseAdagrad], ids=["adam", "rowwise-adagrad-fused"])
@pytest.mark.parametrize("ragged", [False, True], ids=["padded", "ragged"])
def test_compiled_training_matches_eager(data_file, tmp_path, sparse, ragged):
    torch._dynamo.reset()
    eager, _ = fit(data_file, tmp_path / "eager", sparse, False, ragged)
    compiled, trainer = fit(data_file, tmp_path / "compiled", sparse, True, ragged)
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(a) == len(b) == 22  # 2 epochs x 11 steps, the last of each epoch a smaller batch
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-6
    assert abs(eager["eval"]["click.auc"] - compiled["eval"]["click.auc"]) <= 1e-6
    assert trainer.model._compiled_call_impl is not None  # the run really was compiled


def test_dense_part_is_one_graph_over_batch_sizes():
    """The engine is the only graph break; batch and history lengths vary without a recompile
    after the first dynamic one."""
    torch._dynamo.reset()
    model = make_din(dropout=0.0)
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=backend)
    for b in range(2, 9):
        batch = {
            "user": torch.arange(b),
            "item": torch.arange(b) + 5,
            "hist": Ragged.from_list([list(range(b % 5))] * (b - 1) + [[]]),
        }
        compiled(batch)["click"].sum().backward()
        model.embedding.clear_sparse_grads()
    assert len(graphs) == 2  # static for the first shapes, then one dynamic graph for all
    ops = [n.target.__name__ for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert "linear" in ops and "softmax" in ops  # attention and top MLP in the graph


def test_trace_and_export_refuse_with_a_clear_error():
    model = make_din(dropout=0.0).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, user, item, values, offsets):
            return self.model({"user": user, "item": item, "hist": Ragged(values, offsets, validate=False)})["click"]

    args = (torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6, 7]), torch.tensor([0, 2, 3]))
    with pytest.raises(RuntimeError, match=r"cannot be traced by torch\.jit\.trace.*export a bundle"):
        torch.jit.trace(Wrapper(), args)
    with pytest.raises(RuntimeError, match=r"cannot be traced by torch\.export"):
        torch.export.export(Wrapper(), args)
