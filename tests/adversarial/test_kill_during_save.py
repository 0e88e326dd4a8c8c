"""SIGKILL at every I/O step of a save (full, delta, and a re-save of an existing step): after each,
the newest checkpoint loads and holds exactly the state before or after that save, every older
checkpoint still loads, and the next save in the directory works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .harness import KillAt, assert_all_good, isolated, record
from .model import build, load, same, saver, state, train

pytestmark = pytest.mark.slow  # a saving process killed at every I/O step

STEP = "step-0000000003"
KIND_NAMES = {"full": "full save", "delta": "delta save", "resave": "re-save of an existing step"}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A directory with one checkpoint (step 3, extra version "old") and the state it holds."""
    directory = tmp_path_factory.mktemp("template")
    model, sparse, dense = build()
    train(model, sparse, dense, range(3))
    with saver(directory, model, sparse, dense) as s:
        s.save(3, extra={"version": "old"})
    return directory, state(model)


def save_in_child(directory: Path, kind: str, kill_at: int):
    """Resumes from step 3, trains one step and saves it as `kind`, dying at I/O step `kill_at`
    (0: never). Returns the number of I/O steps and the state it saved."""
    killer = KillAt(kill_at)
    model, sparse, dense = build()
    s = saver(directory, model, sparse, dense)
    s.load()  # also the base a delta builds on
    train(model, sparse, dense, range(3, 4))
    killer.armed = True
    s.save(3 if kind == "resave" else 4, extra={"version": "new"}, delta=kind == "delta")
    killer.armed = False
    return killer.seen, state(model)


def save_after(directory: Path) -> bool:
    model, sparse, dense = build()
    s = saver(directory, model, sparse, dense)
    s.load()
    s.save(9, extra={"version": "after"})
    return load(directory)[0] == {"version": "after"}


def outcome(directory: Path, kind: str, old: dict, new: dict) -> str:
    try:
        extra, got = load(directory)
        if kind != "resave":
            old_extra, old_got = load(directory, directory / STEP)
            if old_extra != {"version": "old"} or not same(old_got, old):
                return "data loss"
    except ValueError:
        return "data loss"
    if not same(got, {"old": old, "new": new}[extra["version"]]):
        return "wrong"
    ran, ok = isolated(save_after, directory)
    return "correct" if ran == "ok" and ok else "unclear error"


@pytest.mark.parametrize("kind", ["full", "delta", "resave"])
def test_sigkill_at_every_io_step_of_a_save(template, tmp_path, kind):
    base, old = template
    ran, result = isolated(save_in_child, shutil.copytree(base, tmp_path / "count"), kind, 0)
    assert ran == "ok", result
    steps, new = result
    assert steps >= 12, steps  # mkdir, files, tensors, fsyncs, renames, deletes
    area = f"kill -9 during a {KIND_NAMES[kind]}"
    for n in range(1, steps + 1):
        directory = shutil.copytree(base, tmp_path / str(n))
        died = isolated(save_in_child, directory, kind, n)
        assert died == ("crash", "signal 9"), (n, died)
        record(area, outcome(directory, kind, old, new), f"killed at I/O step {n} of {steps}")
        shutil.rmtree(directory)
    assert_all_good(area)
