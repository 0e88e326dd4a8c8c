"""Trainer behaviour: exact resume, NaN stop, multi-objective, stages, accumulation, online windows."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recis.io import ColumnReader
from recis.optim import SparseSGD
from recis.train import Hook, NonFiniteLossError, Objective, OnlineData, Stage, Trainer, TrainerConfig

from .conftest import make_din, optimizers, write_rows

COLUMNS = ["user", "item", "hist", "click", "rating"]


class StopAt(Hook):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, logs):
        if trainer.step == self.step:
            trainer.should_stop = True


def losses(out_dir):
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"}


def run(data_file, out_dir, hooks=(), resume=None, **kw):
    model = make_din()
    reader = ColumnReader(data_file, COLUMNS, batch_size=16, shuffle=True, shuffle_window=64, seed=3)
    cfg = TrainerConfig(
        objectives=[Objective("click")], epochs=2, output_dir=str(out_dir), log_every=1, progress=False,
        checkpoint_every=5, resume=resume, hooks=list(hooks), **kw,
    )  # fmt: skip
    return Trainer(model, reader, None, *optimizers(model), cfg).fit()


@pytest.mark.slow  # about 3 s: trains, resumes and trains again
def test_resume_continues_exactly(data_file, tmp_path):
    run(data_file, tmp_path / "full")
    run(data_file, tmp_path / "cut", hooks=[StopAt(11)], checkpoint_at_end=False)  # dies after step 11
    summary = run(data_file, tmp_path / "cut", resume="latest")  # restarts from step 10
    full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert len(full) == 32 and summary["steps"] == 32
    assert all(cut[s] == full[s] for s in full)  # steps 11.. recomputed from the checkpoint, bit for bit


def test_nan_loss_stops_naming_the_step(data_file, tmp_path):
    class Poison(Hook):
        def on_step_end(self, trainer, logs):
            if trainer.step == 6:
                with torch.no_grad():
                    next(trainer.model.top.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 7 .*last good checkpoint: .*step-0000000005"):
        run(data_file, tmp_path, hooks=[Poison()])
    assert (tmp_path / "checkpoints" / "step-0000000005" / "index.json").is_file()


def test_multi_objective_weighted_and_scored(data_file, tmp_path):
    model = make_din(heads={"click": 1, "rating": 1, "bucket": 3})
    reader = ColumnReader(data_file, COLUMNS, batch_size=32)
    bucket = lambda b: b | {"bucket": (b["rating"] * 3).long().clamp(max=2)}
    objectives = [
        Objective("click", weight=1.0),
        Objective("rating", loss="mse", weight=0.5),
        Objective("bucket", loss="softmax", weight=0.2),
    ]
    cfg = TrainerConfig(objectives=objectives, epochs=3, progress=False, group_column="user", log_every=1)
    model.transform = bucket  # the trainer calls it in the input thread
    trainer = Trainer(model, reader, reader, *optimizers(model, 0.05), cfg)
    result = trainer.fit()["eval"]
    assert set(result) == {"click.auc", "click.gauc", "click.logloss", "click.calibration", "rating.mse",
                           "bucket.accuracy", "loss"}  # fmt: skip
    assert result["click.auc"] > 0.8 and result["rating.mse"] < 0.2
    train = [r for r in trainer.reporter.history if r["kind"] == "train"]
    assert {"click.loss", "rating.loss", "bucket.loss"} <= set(train[-1])


def table_rows(model):
    rows = model.embedding.groups[0].table.export()
    return rows["embeddings"][torch.argsort(rows["ids"] * 4 + rows["tags"])]


def test_stages_freeze_and_schedule(data_file, tmp_path):
    model = make_din()
    reader = ColumnReader(data_file, COLUMNS, batch_size=32)
    stages = [
        Stage("warmup", epochs=1, lr_schedule="warmup:4"),
        Stage("heads-only", steps=5, lr_schedule="linear", train=["heads"]),
    ]
    trainer = Trainer(model, reader, None, *optimizers(model), TrainerConfig(objectives=[Objective("click")],
                      stages=stages, progress=False, log_every=1))  # fmt: skip
    top = [p.detach().clone() for p in model.top.parameters()]
    rows = len(model.embedding.groups[0].table)
    state = {}

    class Snap(Hook):
        def on_step_end(self, trainer, logs):
            if logs["stage"] == "warmup" and trainer.stage_step == 8:
                state["top"] = [p.detach().clone() for p in model.top.parameters()]
                state["rows"] = table_rows(model)

    trainer.hooks.append(Snap())
    summary = trainer.fit()
    assert summary["steps"] == 8 + 5
    assert rows == 0 and not torch.equal(state["top"][0], top[0])  # the warm-up trained everything
    assert all(torch.equal(a, b) for a, b in zip(state["top"], model.top.parameters(), strict=True))
    assert torch.equal(table_rows(model), state["rows"])  # frozen tables: read-only lookups, no updates
    factors = [r["lr_factor"] for r in trainer.reporter.history if r["kind"] == "train"]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[8:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert all(p.requires_grad for p in model.parameters())  # restored after the run


def test_gradient_accumulation_matches_big_batch(data_file):
    def final(batch_size, accum):
        model = make_din(dropout=0.0)
        reader = ColumnReader(data_file, COLUMNS, batch_size=batch_size)
        sparse, dense = SparseSGD(model, lr=0.1), torch.optim.SGD(model.parameters(), lr=0.1)
        cfg = TrainerConfig(objectives=[Objective("click")], grad_accum=accum, max_steps=3, progress=False)
        Trainer(model, reader, None, sparse, dense, cfg).fit()
        return [p.detach() for p in model.parameters()] + [table_rows(model)]

    for a, b in zip(final(32, 1), final(16, 2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_online_windows_progressive_validation_and_resume(tmp_path):
    root = tmp_path / "stream"
    for hour in range(4):
        (root / f"hour={hour}").mkdir(parents=True)
        write_rows(root / f"hour={hour}" / "part.parquet", 64, seed=hour)
    reader = lambda w: ColumnReader(str(w), COLUMNS, batch_size=32)

    def fit(out, hooks=(), resume=None):
        model = make_din()
        online = OnlineData(sorted(str(p) for p in root.iterdir()), reader)
        cfg = TrainerConfig(objectives=[Objective("click")], output_dir=str(out), progress=False, log_every=1,
                            resume=resume, hooks=list(hooks), checkpoint_at_end=False)  # fmt: skip
        return Trainer(model, online, None, *optimizers(model), cfg)

    full = fit(tmp_path / "full")
    full.fit()
    evals = [r for r in full.reporter.history if r["kind"] == "window_eval"]
    assert [e["window"].rsplit("=", 1)[1] for e in evals] == ["1", "2", "3"]  # each evaluated before training
    assert full.step == 8 and full.last_checkpoint.name == "step-0000000008"

    cut = fit(tmp_path / "cut", hooks=[StopAt(5)])
    cut.fit()
    resumed = fit(tmp_path / "cut", resume="latest")  # checkpoint after window 1 (step 4)
    resumed.fit()
    assert resumed.step == 8
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")


def test_unknown_dense_sharding_is_refused():
    with pytest.raises(ValueError, match="dense_sharding must be 'ddp' or 'fsdp', got 'zero3'"):
        Trainer(make_din(), [], config=TrainerConfig(dense_sharding="zero3"))


def test_a_list_label_is_refused_naming_the_column(tmp_path):
    table = pq.read_table(write_rows(tmp_path / "train.parquet", 64))
    click = pa.array([[float(c)] for c in table["click"].to_pylist()], pa.list_(pa.float64()))
    pq.write_table(table.set_column(table.column_names.index("click"), "click", click), tmp_path / "train.parquet")
    model = make_din()
    reader = ColumnReader(str(tmp_path / "train.parquet"), COLUMNS, batch_size=16)
    trainer = Trainer(model, reader, reader, *optimizers(model), TrainerConfig([Objective("click")], progress=False))
    expected = r"label column 'click' \(objective 'click'\): expected one number per row .*, got a list per row"
    with pytest.raises(TypeError, match=expected):
        trainer.fit()
    with pytest.raises(TypeError, match=expected):
        trainer.evaluate()


def test_metrics_file_is_strict_json_and_plots_leave_the_backend_alone(data_file, tmp_path):
    import matplotlib

    matplotlib.use("svg")  # a user's choice, which writing the run's plots must not change
    run(data_file, tmp_path)
    assert matplotlib.get_backend() == "svg"
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")

    def refuse(name):
        raise AssertionError(f"metrics.jsonl holds {name}, which is not JSON")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=refuse) for line in lines]
    train = [r for r in records if r["kind"] == "train"]
    assert train[0]["samples_per_s"] is None  # no rate at the first record yet: null, not NaN
    assert all(isinstance(r["loss"], float) for r in train)


def test_resuming_a_finished_run_with_more_epochs_trains_on(data_file, tmp_path, caplog):
    def fit(epochs, max_steps=None):
        model = make_din()
        reader = ColumnReader(data_file, COLUMNS, batch_size=16, shuffle=True, shuffle_window=64, seed=3)
        cfg = TrainerConfig(objectives=[Objective("click")], epochs=epochs, output_dir=str(tmp_path), log_every=1,
                            progress=False, resume="latest", max_steps=max_steps)  # fmt: skip
        return Trainer(model, reader, reader, *optimizers(model), cfg).fit()

    def records(kind):
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == kind]

    assert fit(1)["steps"] == 16 and len(records("eval")) == 1
    with caplog.at_level("INFO", logger="recis.train"):
        summary = fit(1)  # finished, and asked for nothing more
    assert summary["steps"] == 16 and summary["stop_reason"] == "nothing to train"
    assert "nothing to train: the run finished its stages at step 16" in caplog.text
    assert len(records("eval")) == 1  # no second record of the same evaluation
    assert fit(1, max_steps=40)["stop_reason"] == "nothing to train"  # more steps, but its one epoch is done
    summary = fit(3)  # two more epochs
    assert summary["steps"] == 48 and summary["stop_reason"] == "done" and len(records("eval")) == 2
    assert [r["step"] for r in records("train")] == list(range(1, 49))  # epochs 2 and 3 continued the count


def test_evaluation_shows_a_progress_bar_of_its_own(data_file, tmp_path, capsys):
    model = make_din()
    reader = ColumnReader(data_file, COLUMNS, batch_size=16)
    cfg = TrainerConfig(objectives=[Objective("click")], max_steps=2, progress=True, eval_batches=5)
    Trainer(model, reader, reader, *optimizers(model), cfg).fit()
    err = capsys.readouterr().err
    assert "train:" in err and re.search(r"eval: +\d+%\|.*\| \d/5 ", err), err


def test_tensorboard_event_files_hold_the_runs_scalars(data_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_din()
    reader = ColumnReader(data_file, COLUMNS, batch_size=16)
    cfg = TrainerConfig(objectives=[Objective("click")], epochs=1, output_dir=str(tmp_path), log_every=4,
                        progress=False, eval_every=8, tensorboard=True)  # fmt: skip
    Trainer(model, reader, reader, *optimizers(model), cfg).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    table = "tables/0.table0:user+item+hist"
    want = {"train/loss", "train/click.loss", "train/samples_per_s", "eval/click.auc", "lr/sparse", "lr/dense"}
    assert want | {f"{table}/rows", f"{table}/hit_rate", f"{table}/evicted"} <= tags, tags
    assert [e.step for e in events.Scalars("train/loss")] == [4, 8, 12, 16]
    assert [e.step for e in events.Scalars("eval/click.auc")] == [8, 16]
    first_loss = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert events.Scalars("train/loss")[0].value == pytest.approx(first_loss, rel=1e-6)


def test_each_step_is_evaluated_once_with_eval_every_and_every_epoch(data_file, tmp_path):
    model = make_din()
    reader = ColumnReader(data_file, COLUMNS, batch_size=16)
    cfg = TrainerConfig(objectives=[Objective("click")], epochs=2, output_dir=str(tmp_path), progress=False,
                        eval_every=16, eval_every_epoch=True, eval_batches=2)  # fmt: skip
    Trainer(model, reader, reader, *optimizers(model), cfg).fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in map(json.loads, lines) if r["kind"] == "eval"] == [16, 32]  # epoch ends = eval_every


@pytest.mark.parametrize("keep", [True, False])
def test_fit_keeps_freed_memory_unless_told_not_to(data_file, tmp_path, monkeypatch, keep):
    from recis.train import trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(1))
    run(data_file, tmp_path, max_steps=1, keep_freed_memory=keep)
    assert len(calls) == int(keep)
