"""The recis-train command: a TOML run end to end, overrides, resume, eval-only, config errors naming the key,
and data errors as one line (before training: exit 2; during it: exit 1, the traceback under --debug)."""

import json
import re
import textwrap

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from recis.train import Checkpointer, cli
from recis.train.config import ConfigError, build, load

from .conftest import write_rows

CONFIG = """
output_dir = "{out}"

[data]
train = "{train}"
eval = "{eval}"
batch_size = 32
shuffle = true

[embeddings.user]
dim = 4
[embeddings.item]
dim = 4
table = "items"
[embeddings.hist]
dim = 4
table = "items"
combiner = "none"
max_len = 4

[model]
type = "din"
sequences = {{ hist = "item" }}
hidden = [8]

[[objectives]]
label = "click"

[optim.sparse]
type = "adam"
lr = 0.01
[optim.dense]
type = "adam"
lr = 0.01

[train]
epochs = 1
progress = false
group_column = "user"
checkpoint_every = 4
log_every = 2

[baseline]
type = "logistic"
"""


@pytest.fixture
def config_file(tmp_path):
    train = write_rows(tmp_path / "train.parquet", 256, seed=1)
    test = write_rows(tmp_path / "test.parquet", 128, seed=2)
    path = tmp_path / "run.toml"
    path.write_text(CONFIG.format(out=tmp_path / "run", train=train, eval=test))
    return path


def test_runs_a_config_with_baseline_resume_and_eval_only(config_file, tmp_path, capsys):
    assert cli.main([str(config_file), "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "logistic" in out and "difference" in out
    summary = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["kind"] == "summary" and summary["steps"] == 16
    assert {"loss.png", "eval.png", "summary.txt"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert (tmp_path / "run" / "baseline" / "metrics.jsonl").is_file()
    assert cli.main([str(config_file), "--resume", "--set", "train.epochs=2"]) == 0  # finished: nothing to redo
    assert Checkpointer(tmp_path / "run" / "checkpoints").steps()[-1] == 16
    capsys.readouterr()
    assert cli.main([str(config_file), "--eval-only"]) == 0
    assert json.loads(capsys.readouterr().out)["click.auc"] > 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden='big'", "config key 'model.hidden': expected a list of ints, got 'big'"),
        ("model.type='mlp'", "config key 'model.type': expected one of 'din'"),
        ("train.epoch=2", "unknown config keys in 'train': ['epoch']"),
        ("embeddings.user.dim=-1", "config key 'embeddings.user': dim must be >= 1"),
        ("optim.dense.momentum=0.9", "config key 'optim.dense' (type 'adam')"),
        ("data.batch_size=0", "config key 'data'"),
        ("objectives=[{label='click', loss='hinge'}]", "config key 'objectives[0].loss'"),
        ("stages=[{lr_schedule='zigzag'}]", "config key 'stages[0].lr_schedule'"),
        ("train.dense_sharding='zero3'", "config key 'train.dense_sharding': expected one of 'ddp', 'fsdp'"),
        ("train.keep_freed_memory=1", "config key 'train.keep_freed_memory': expected"),
        ("optim.dense.betas=[0.9]", "config key 'optim.dense.betas': expected a list of 2 numbers, got [0.9]"),
    ],
)
def test_config_errors_name_the_key(config_file, override, message):
    with pytest.raises(ConfigError) as e:
        build(load(config_file, [override]))
    assert message in str(e.value)


def test_missing_required_key_and_exit_code(config_file, tmp_path, capsys):
    text = config_file.read_text().replace('[model]\ntype = "din"', "[model]")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert cli.main([str(bad)]) == 2
    assert "config key 'model.type' is required" in capsys.readouterr().err


def test_the_seed_fixes_the_initial_dense_weights(config_file):
    def weights(*overrides):
        torch.manual_seed(len(overrides) + 100)  # whatever the RNG held before
        return build(load(config_file, list(overrides))).model.state_dict()

    first, again, other = weights(), weights("train.log_every=5"), weights("train.seed=7")
    dense = [k for k, v in first.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert dense and all(torch.equal(first[k], again[k]) for k in dense)
    assert not all(torch.equal(first[k], other[k]) for k in dense)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.dense.lr='fast'", "config key 'optim.dense.lr': expected a number, got 'fast'"),
        ("optim.sparse.lr=true", "config key 'optim.sparse.lr': expected a number, got True"),
        (
            "optim.sparse.betas=[0.9, 'x']",
            "config key 'optim.sparse.betas': expected a list of numbers, got [0.9, 'x']",
        ),
        ("optim.dense.amsgrad=1", "config key 'optim.dense.amsgrad': expected true or false, got 1"),
        ("optim.sparse.fused='yes'", "config key 'optim.sparse.fused': expected true or false, got 'yes'"),
        ("data.batch_size='big'", "config key 'data.batch_size': expected an int, got 'big'"),
        ("data.nulls='drop'", "config key 'data.nulls': expected one of 'error', 'fill', got 'drop'"),
        ("data.train=3", "config key 'data.train': expected a path or a list of paths, got 3"),
        ("embeddings.user.policy='fifo'", "config key 'embeddings.user.policy': expected one of 'lru', 'lfu'"),
    ],
)
def test_config_types_name_the_full_key_and_the_expected_type(config_file, override, message):
    with pytest.raises(ConfigError) as e:
        build(load(config_file, [override]))
    assert str(e.value).startswith(message)


def rewrite(path, change):
    """Rewrites a Parquet file as change(table) returns it."""
    pq.write_table(change(pq.read_table(path)), path)


def replaced(table, name, values):
    return table.set_column(table.column_names.index(name), name, values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["item"]), r"column 'item' \(embeddings.item\) is missing from .*train.parquet"),
        (lambda t: t.drop_columns(["click"]), r"column 'click' \(objectives\[0\].label\) is missing from .*train"),
        (
            lambda t: replaced(t, "item", pc.cast(t["item"], pa.string())),
            r"column 'item' \(embeddings.item\) in .*train.parquet \(data.train\): expected integer IDs .*got string",
        ),
        (
            lambda t: replaced(t, "click", pa.array([[float(c)] for c in t["click"].to_pylist()])),
            r"column 'click' \(objectives\[0\].label\) in .*: expected one number per row .*got list<double>",
        ),
    ],
)
def test_data_schema_errors_exit_2_with_one_line_before_training(config_file, tmp_path, capsys, change, message):
    rewrite(tmp_path / "train.parquet", change)
    assert cli.main([str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recis-train: error: ")
    assert re.search(message, err)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step ran


def test_a_data_error_during_training_is_one_line_or_a_traceback_with_debug(config_file, tmp_path, capsys):
    rewrite(tmp_path / "train.parquet", lambda t: replaced(t, "item", pa.array([None, *t["item"].to_pylist()[1:]])))
    assert cli.main([str(config_file)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recis-train: error: [recis.io] column 'item' in ")
    assert "train.parquet, row group 0: 1 null values" in err and "--debug" in err
    assert cli.main([str(config_file), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("replace them with a default)")


def train_losses(config_file, out, train_device: str, table_device: str) -> list[float]:
    sets = [f"output_dir='{out}'", f"train.device='{train_device}'", "train.checkpoint_every=100"]
    sets += [f"embeddings.{name}.device='{table_device}'" for name in ("user", "item", "hist")]
    assert cli.main([str(config_file), *(x for s in sets for x in ("--set", s))]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def test_tables_on_a_device_train_as_host_tables(config_file, tmp_path):
    """`embeddings.<name>.device` puts a table in a DeviceTable ("cpu" here: the same code a GPU
    runs without compiled kernels); the run's losses equal the host tables' run."""
    host = train_losses(config_file, tmp_path / "host", "cpu", "host")
    assert train_losses(config_file, tmp_path / "cpu", "cpu", "cpu") == pytest.approx(host, rel=1e-5)
    assert len(host) >= 3
    with pytest.raises(ConfigError, match=r"config key 'train\.device': expected a torch device"):
        build(load(config_file, ["train.device='gpu0'"]))
    with pytest.raises(ConfigError, match="device must be 'host' or a torch device"):
        build(load(config_file, ["embeddings.user.device='nowhere'"]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_run_matches_host_tables(config_file, tmp_path):
    """`train.device = "cuda"`: model and tables on the GPU (its kernels), losses as on the host."""
    host = train_losses(config_file, tmp_path / "host", "cpu", "host")
    assert train_losses(config_file, tmp_path / "cuda", "cuda", "cuda") == pytest.approx(host, rel=5e-3)


def test_final_metrics_show_without_a_bar_and_quiet_shows_none(config_file, capsys):
    config_file.write_text(config_file.read_text().replace('[baseline]\ntype = "logistic"\n', ""))
    assert cli.main([str(config_file)]) == 0  # train.progress = false: the summary still shows (INFO)
    err = capsys.readouterr().err
    assert "eval @ step 8:" in err and "click.auc" in err and "\nmetric " in err
    assert cli.main([str(config_file), "--quiet", "--set", "train.epochs=2"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert cli.main([str(config_file), "--log-level", "warning", "--set", "train.epochs=3"]) == 0
    assert "click.auc" not in capsys.readouterr().err


def test_embedding_name_patterns_and_defaults(tmp_path):
    n = 64
    columns = {f"C{i}": torch.randint(0, 50, (n,)).numpy() for i in range(1, 6)}
    columns |= {"I1": torch.rand(n).numpy(), "label": torch.randint(0, 2, (n,)).numpy()}
    pq.write_table(pa.table(columns), tmp_path / "train.parquet")

    def specs_of(embeddings, **data):
        cfg = {
            "data": {"train": str(tmp_path / "train.parquet"), "batch_size": 16, **data},
            "embeddings": embeddings,
            "model": {"type": "dcn", "dense": ["I1"], "hidden": [8]},
        }
        return build(cfg).model.embedding.specs

    specs = specs_of({"C*": {"dim": 4, "table": "cat"}, "C2": {"combiner": "mean"}})  # columns read from the file
    assert list(specs) == ["C2", "C1", "C3", "C4", "C5"]  # label and the dense I1 are not matched
    assert {s.table for s in specs.values()} == {"cat"} and specs["C2"].combiner == "mean"
    specs = specs_of({"*": {"dim": 4}, "C[12]": {"dim": 8}}, columns=["C1", "C2", "C3", "I1", "label"])
    assert {n: s.dim for n, s in specs.items()} == {"C1": 8, "C2": 8, "C3": 4}
    with pytest.raises(ConfigError, match=r"'embeddings.X\*': the pattern matches none of the columns"):
        specs_of({"C*": {"dim": 4}, "X*": {"dim": 4}})
    with pytest.raises(ConfigError, match=r"unknown config keys in \"embeddings.C\* \(for 'C1'\)\": \['dimm'\]"):
        specs_of({"C*": {"dim": 4, "dimm": 4}})


def test_baseline_has_its_own_schedule_and_stops_early(config_file, tmp_path):
    text = config_file.read_text().replace('[baseline]\ntype = "logistic"\n', "")
    text += textwrap.dedent("""
        [baseline]
        type = "logistic"
        [baseline.train]
        epochs = 40
        eval_every_epoch = true
        early_stopping = { patience = 1, min_delta = 0.5 }
        [baseline.optim.sparse]
        lr = 0.2
    """)  # fmt: skip
    config_file.write_text(text)
    results = cli.run_config(load(str(config_file), []))
    assert results["model"]["steps"] == 8  # the model's own single epoch
    base = results["baseline"]
    # AUC cannot gain 0.5 twice: the first evaluation sets the best, the second stops the run
    assert base["steps"] == 16 and base["stop_reason"].startswith("early stop: click.auc")
    evals = [json.loads(x) for x in (tmp_path / "run" / "baseline" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["kind"] == "eval"] == [8, 16]


def test_fill_values_and_missing_indicators_from_the_config(tmp_path):
    n = 64
    i1 = pa.array([None if k % 4 == 0 else float(k) for k in range(n)], pa.float64())
    table = pa.table({"C1": torch.randint(0, 9, (n,)).numpy(), "I1": i1, "label": torch.randint(0, 2, (n,)).numpy()})
    pq.write_table(table, tmp_path / "train.parquet")
    cfg = {
        "data": {"train": str(tmp_path / "train.parquet"), "batch_size": 64, "nulls": "fill",
                 "fill_values": {"I1": -1.0}, "missing_indicators": ["I1"]},
        "embeddings": {"C1": {"dim": 4}},
        "model": {"type": "dcn", "dense": ["I1", "I1_missing"], "hidden": [8]},
        "train": {"progress": False},
    }  # fmt: skip
    run = build(cfg)
    batch = next(iter(run.train_data))
    assert batch["I1_missing"].tolist() == [1 if k % 4 == 0 else 0 for k in range(n)]
    assert batch["I1"][0].item() == -1.0
    assert cli.run_config(cfg)["model"]["steps"] == 1


def test_embedding_patterns_read_orc_columns_too(tmp_path):
    import pyarrow.orc as orc

    (tmp_path / "train").mkdir()
    table = pa.table({"C1": [1, 2], "C2": [3, 4], "label": [0, 1]})
    orc.write_table(table, str(tmp_path / "train" / "part-0.orc"))
    cfg = {"data": {"train": str(tmp_path / "train"), "batch_size": 2}, "embeddings": {"C*": {"dim": 4}},
           "model": {"type": "dcn", "hidden": [4]}}  # fmt: skip
    assert list(build(cfg).model.embedding.specs) == ["C1", "C2"]


def test_keep_freed_memory_is_on_unless_the_config_says_no(config_file):
    assert build(load(config_file, [])).trainer.keep_freed_memory is True
    assert build(load(config_file, ["train.keep_freed_memory=false"])).trainer.keep_freed_memory is False
