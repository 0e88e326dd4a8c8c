"""Mutation fuzz of TOML run configs: a value replaced by one of another type or out of range, a
line deleted or garbled, an unknown key added. Loading and building the run either works (the
edit was still a valid config) or raises `ConfigError`/`SchemaError` naming the key, column or
file, which the CLI prints as one line with exit 2; never another exception, a crash or a hang."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recis.train.config import build, load

from .harness import assert_all_good, cases, isolated, record

pytestmark = pytest.mark.slow  # 60 forked cases (make fuzz: 1000)

CONFIG = """\
output_dir = "{out}"

[data]
train = "{data}"
eval = "{data}"
batch_size = 16
shuffle = true

[embeddings.user]
dim = 4
[embeddings.item]
dim = 4
table = "items"
min_count = 1
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
betas = [0.9, 0.999]

[train]
epochs = 1
progress = false
group_column = "user"
checkpoint_every = 4
"""
HOSTILE = ['"fast"', "-1", "0", "2147483648", "9223372036854775807", "1e400", "nan", "-inf", "true", "[]",
           '[1, "a"]', "{}", "{ a = 1 }", '""', '"../../etc/passwd"', "1.5", '"none"', "[[1]]"]  # fmt: skip
ASSIGNMENT = re.compile(r"^(\s*[\w.\"]+\s*=\s*)(.+)$")


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    lines = text.splitlines()
    kind = rng.choice(["value", "value", "value", "delete", "unknown key", "garble"])
    i = rng.randrange(len(lines))
    if kind == "value":
        i = rng.choice([j for j, line in enumerate(lines) if ASSIGNMENT.match(line)])
        value = rng.choice(HOSTILE)
        what = f"{lines[i]!r} -> {value}"
        lines[i] = ASSIGNMENT.sub(lambda m: m.group(1) + value, lines[i])
    elif kind == "delete":
        what = f"deleted {lines[i]!r}"
        del lines[i]
    elif kind == "unknown key":
        i = rng.choice([j for j, line in enumerate(lines) if line.startswith("[")])
        lines.insert(i + 1, "bogus_key = 1")
        what = f"unknown key under {lines[i]!r}"
    else:
        line = lines[i]
        at = rng.randrange(max(len(line), 1))
        lines[i] = line[:at] + rng.choice("=[]{}\"'#\\ x9") + line[at + 1 :]
        what = f"{line!r} -> {lines[i]!r}"
    return "\n".join(lines) + "\n", what


def build_run(path: Path) -> str:
    run = build(load(path))
    return type(run.model).__name__


def classify(run: tuple[str, Any]) -> tuple[str, str]:
    kind, result = run
    if kind in ("crash", "hang"):
        return kind, str(result)
    if kind == "raised":
        error, message, trace = result
        names_key = "config key" in message or ".toml" in message
        clear = (error == "ConfigError" and names_key) or error == "SchemaError"  # the latter names column and file
        return ("clear error", message) if clear else ("unclear error", trace)
    return "correct", ""


@pytest.fixture(scope="module")
def config_text(tmp_path_factory):
    directory = tmp_path_factory.mktemp("config")
    rng = random.Random(0)
    rows = 64
    data = pa.table(
        {
            "user": pa.array([rng.randrange(30) for _ in range(rows)], pa.int64()),
            "item": pa.array([rng.randrange(50) for _ in range(rows)], pa.int64()),
            "hist": pa.array([[rng.randrange(50) for _ in range(rng.randrange(5))] for _ in range(rows)]),
            "click": pa.array([rng.randrange(2) for _ in range(rows)], pa.int64()),
        }
    )
    pq.write_table(data, directory / "data.parquet", write_page_checksum=True)
    return CONFIG.format(out=directory / "run", data=directory / "data.parquet")


def test_mutated_configs_fail_naming_the_key(config_text, tmp_path):
    intact = tmp_path / "intact.toml"
    intact.write_text(config_text)
    assert isolated(build_run, intact) == ("ok", "DIN")
    rng = random.Random(25)
    area = "mutated TOML configs"
    for case in range(cases(60, 1000)):
        text, what = mutate(config_text, rng)
        path = tmp_path / f"case-{case}.toml"
        path.write_text(text)
        outcome, detail = classify(isolated(build_run, path))
        record(area, outcome, f"{what}: {detail}")
    assert_all_good(area)
