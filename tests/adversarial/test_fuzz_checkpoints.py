"""Mutation fuzz of checkpoints: damage one file of a full + delta chain (every file is a target)
and load the newest with verification. A load either restores the exact state or raises a
ValueError naming the damaged checkpoint; never a wrong model, a crash or a hang. Edits that are
re-signed (the index's own digest recomputed) and rewritten SafeTensors headers must never crash,
hang or raise anything but that ValueError."""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from recis.optim.checkpoint_load import index_digest

from .harness import assert_all_good, cases, isolated, record
from .model import build, load, same, saver, state, train

pytestmark = pytest.mark.slow  # 60-80 forked cases per test (make fuzz: thousands)

HOSTILE: list[Any] = [None, -1, 0, 2**31, 2**63 - 1, 2**64, -(2**70), 1.5, float("nan"), "", "x", "../../etc/hostname",
                      "/etc/hostname", [], [1, "a"], {}, {"a": 1}, True]  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """step-3 (full) and step-5 (a delta on it, after evictions), and the state step 5 holds."""
    directory = tmp_path_factory.mktemp("template")
    model, sparse, dense = build()
    train(model, sparse, dense, range(3))
    with saver(directory, model, sparse, dense) as s:
        s.save(3, extra={"reader": {"row": 96}})
        train(model, sparse, dense, range(3, 5))
        s.save(5, extra={"reader": {"row": 160}}, delta=True)
    return directory, state(model)


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    n = len(data)
    at = rng.randrange(max(n, 1))
    kind = rng.choice(["bit", "byte", "zeros", "truncate", "append", "swap words", "insert"])
    b = bytearray(data)
    if kind == "bit" and n:
        b[at] ^= 1 << rng.randrange(8)
    elif kind == "byte" and n:
        b[at] = (b[at] + rng.randrange(1, 256)) % 256
    elif kind == "zeros":
        end = at + rng.randint(1, 64)
        b[at:end] = bytes(len(b[at:end]))
    elif kind == "truncate":
        del b[at:]
    elif kind == "append":
        b += rng.randbytes(rng.randint(1, 16))
    elif kind == "swap words" and n >= 16:
        i, j = sorted(rng.sample(range(n // 4), 2))
        b[4 * i : 4 * i + 4], b[4 * j : 4 * j + 4] = data[4 * j : 4 * j + 4], data[4 * i : 4 * i + 4]
    elif kind == "insert":
        b[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(b), f"{kind} at {at} of {n}"


def mutate_json(value: Any, rng: random.Random) -> tuple[Any, str]:
    """One leaf replaced by a hostile value, or one key deleted, somewhere in a JSON tree."""
    path: list[Any] = []
    node = value
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append(key)
        if not isinstance(node[key], (dict, list)) or not node[key]:
            break
        node = node[key]
    if not path:
        return rng.choice(HOSTILE), "the whole document replaced"
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
        return value, f"deleted {path}"
    new = rng.choice(HOSTILE)
    parent[path[-1]] = new
    return value, f"{path} = {new!r}"


def classify(run: tuple[str, Any], expected: dict, extra: dict) -> tuple[str, str]:
    """(outcome, what happened) of a load that should give `extra` and the state `expected`."""
    kind, result = run
    if kind in ("crash", "hang"):
        return kind, str(result)
    if kind == "raised":
        name, message, trace = result
        clear = name == "ValueError" and "step-00000000" in message
        return ("clear error", message) if clear else ("unclear error", trace)
    got_extra, got = result
    return ("correct", "") if got_extra == extra and same(got, expected) else ("wrong", f"extra {got_extra}")


def damaged_copy(base: Path, into: Path, rng: random.Random) -> tuple[Path, Path]:
    directory = shutil.copytree(base, into)
    files = sorted(p for p in directory.glob("step-*/*") if p.is_file())
    return directory, rng.choice(files)


def test_damaged_files_fail_loudly(template, tmp_path):
    base, expected = template
    rng = random.Random(21)
    area = "damaged checkpoint files (verify=True)"
    for case in range(cases(80, 2000)):
        directory, target = damaged_copy(base, tmp_path / str(case), rng)
        if rng.random() < 0.05:
            target.unlink()
            what = "deleted"
        else:
            data, what = mutate_bytes(target.read_bytes(), rng)
            target.write_bytes(data)
        outcome, detail = classify(isolated(load, directory), expected, {"reader": {"row": 160}})
        record(area, outcome, f"{target.parent.name}/{target.name}: {what}: {detail}")
        shutil.rmtree(directory)
    assert_all_good(area)


def test_resigned_index_edits_never_crash(template, tmp_path):
    """A re-signed index passes its digest, so it may describe another valid checkpoint (outcome
    'valid edit'); it must still never crash, hang or fail with anything but a clear ValueError."""
    base, expected = template
    rng = random.Random(22)
    area = "re-signed index.json edits"
    for case in range(cases(60, 1500)):
        directory, _ = damaged_copy(base, tmp_path / str(case), rng)
        target = directory / rng.choice(["step-0000000003", "step-0000000005"]) / "index.json"
        index, what = mutate_json(json.loads(target.read_text()), rng)
        if isinstance(index, dict):
            index["xxh3"] = index_digest(index)
        target.write_text(json.dumps(index))
        outcome, detail = classify(isolated(load, directory), expected, {"reader": {"row": 160}})
        record(area, "valid edit" if outcome == "wrong" else outcome, f"{target.parent.name}: {what}: {detail}")
        shutil.rmtree(directory)
    assert_all_good(area, also=("valid edit",))


def test_hostile_safetensors_headers_are_clear_errors(template, tmp_path):
    """A shard's header rewritten (entries with hostile dtypes, shapes, offsets, or missing keys),
    the file's size in the index and the index's digest kept consistent with it."""
    base, expected = template
    rng = random.Random(23)
    area = "hostile SafeTensors headers"
    for case in range(cases(60, 1500)):
        directory, _ = damaged_copy(base, tmp_path / str(case), rng)
        cp = directory / "step-0000000005"
        index = json.loads((cp / "index.json").read_text())
        shard = cp / rng.choice(sorted(index["files"]))
        raw = shard.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header, what = mutate_json(json.loads(raw[8 : 8 + n]), rng)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        shard.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
        index["files"][shard.name]["bytes"] = shard.stat().st_size
        index["xxh3"] = index_digest(index)
        (cp / "index.json").write_text(json.dumps(index))
        outcome, detail = classify(isolated(load, directory), expected, {"reader": {"row": 160}})
        record(area, outcome, f"{shard.name}: {what}: {detail}")
        shutil.rmtree(directory)
    assert_all_good(area)
