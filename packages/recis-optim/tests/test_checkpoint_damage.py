"""Checkpoints under damage and misuse: every byte covered by a digest, a damaged newest
checkpoint named (not silently skipped), paths kept inside the checkpoint, validation before any
write, atomic re-saves, one writer per directory."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from recis.optim import Saver, latest
from recis.optim import checkpoint as checkpoint_module
from recis.optim.checkpoint_load import index_digest
from recis.optim.safetensors_stream import digest

_spec = importlib.util.spec_from_file_location("checkpoint_worker", Path(__file__).with_name("checkpoint_worker.py"))
assert _spec is not None and _spec.loader is not None
w = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(w)


def trained(steps: int = 4):
    model, sparse, dense = w.build()
    w.train(model, sparse, dense, range(steps))
    return model, sparse, dense


def fresh_saver(directory: Path) -> tuple[Saver, w.Model]:
    model, sparse, dense = w.build()
    return Saver(directory, model, optimizers=[sparse, dense]), model


def snapshot(model: w.Model) -> tuple[dict, dict]:
    return w.all_rows(model), {k: v.clone() for k, v in model.mlp.state_dict().items()}


def assert_untouched(model: w.Model, before: tuple[dict, dict]) -> None:
    rows, dense = snapshot(model)
    assert rows.keys() == before[0].keys()
    for name in rows:
        for k in rows[name]:
            assert torch.equal(rows[name][k], before[0][name][k]), (name, k)
    assert all(torch.equal(v, before[1][k]) for k, v in dense.items())


def edit_index(path: Path, edit) -> None:
    """Applies `edit` to the index and re-signs it: what a deliberate (or buggy) writer would leave."""
    index = json.loads((path / "index.json").read_text())
    edit(index)
    index["xxh3"] = index_digest(index)
    (path / "index.json").write_text(json.dumps(index))


def flip_byte(file: Path, at: int) -> None:
    data = bytearray(file.read_bytes())
    data[at % len(data)] ^= 0x10
    file.write_bytes(bytes(data))


@pytest.fixture
def saved(tmp_path):
    model, sparse, dense = trained()
    path = Saver(tmp_path, model, optimizers=[sparse, dense], shards=2, chunk_rows=100).save(4, extra={"row": 12})
    return path


@pytest.mark.parametrize("file", ["model.pt", "optimizers.pt"])
def test_a_flipped_byte_in_a_dense_file_fails_its_digest(saved, file):
    flip_byte(saved / file, (saved / file).stat().st_size // 2)
    saver, model = fresh_saver(saved.parent)
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"file {file}: fails its digest"):
        saver.load()
    assert_untouched(model, before)
    saver.load(verify=False)  # unverified, the damage goes unseen: the promise is only with verify


def test_an_edited_extra_json_fails_its_digest_even_unverified(saved):
    (saved / "extra.json").write_text((saved / "extra.json").read_text().replace("12", "13"))
    saver, _ = fresh_saver(saved.parent)
    for verify in (True, False):
        with pytest.raises(ValueError, match=r"file extra\.json: fails its digest"):
            saver.load(verify=verify)


def test_swapped_words_in_a_shard_fail_the_digest(saved):
    """Two 32-bit words swapped keep a word sum; a real hash sees them."""
    index = json.loads((saved / "index.json").read_text())
    name = next(k for k in index["tensors"] if k.endswith("/embeddings"))
    info = index["tensors"][name]
    file = saved / info["file"]
    header_len = int.from_bytes(file.read_bytes()[:8], "little")
    start = 8 + header_len + json.loads(file.read_bytes()[8 : 8 + header_len])[name]["data_offsets"][0]
    data = bytearray(file.read_bytes())
    data[start : start + 4], data[start + 4 : start + 8] = data[start + 4 : start + 8], data[start : start + 4]
    assert data != file.read_bytes()
    file.write_bytes(bytes(data))
    saver, model = fresh_saver(saved.parent)
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"tensor '{name.replace('+', '.')}' fails its digest"):
        saver.load()
    assert_untouched(model, before)


def test_an_edited_index_fails_its_digest(saved):
    text = (saved / "index.json").read_text()
    (saved / "index.json").write_text(text.replace('"step": 4', '"step": 5'))
    saver, _ = fresh_saver(saved.parent)
    with pytest.raises(ValueError, match=r"index\.json fails its digest"):
        saver.load(saved)


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_a_damaged_newest_checkpoint_is_named_not_skipped(tmp_path, damage):
    model, sparse, dense = trained()
    saver = Saver(tmp_path, model, optimizers=[sparse, dense])
    saver.save(4, extra={"step": 4})
    newest = saver.save(5, extra={"step": 5})
    saver.close()
    if damage == "delete":
        (newest / "index.json").unlink()
    else:
        (newest / "index.json").write_text('{"format": "recis.checkpoint", "vers')
    loader, _ = fresh_saver(tmp_path)
    with pytest.raises(ValueError, match=r"step-0000000005.*(missing|not valid JSON).*fallback=True"):
        loader.load()
    with pytest.warns(RuntimeWarning, match="skipping a damaged checkpoint.*step-0000000005"):
        assert loader.load(fallback=True) == {"step": 4}


def test_fallback_skips_a_checkpoint_with_corrupt_data(tmp_path):
    model, sparse, dense = trained()
    saver = Saver(tmp_path, model, optimizers=[sparse, dense])
    saver.save(4, extra={"step": 4})
    newest = saver.save(5, extra={"step": 5})
    shard = max(newest.glob("*.safetensors"), key=lambda f: f.stat().st_size)
    flip_byte(shard, shard.stat().st_size - 3)  # in the data
    loader, _ = fresh_saver(tmp_path)
    with pytest.raises(ValueError, match="fails its digest"):
        loader.load()
    with pytest.warns(RuntimeWarning, match="fails its digest"):
        assert loader.load(fallback=True) == {"step": 4}


@pytest.mark.parametrize("where", ["../../../etc/hostname", "/etc/hostname", "../step-0000000003/x.safetensors"])
def test_index_paths_stay_inside_the_checkpoint(saved, where):
    def edit(index):
        old = next(iter(index["files"]))
        index["files"][where] = index["files"].pop(old)
        for t in index["tensors"].values():
            if t["file"] == old:
                t["file"] = where

    edit_index(saved, edit)
    saver, _ = fresh_saver(saved.parent)
    with pytest.raises(ValueError, match="names files outside the checkpoint"):
        saver.load(saved)


def test_a_delta_base_outside_the_directory_is_refused(saved):
    edit_index(saved, lambda index: index.update(kind="delta", base="../elsewhere/step-0000000001"))
    with pytest.raises(ValueError, match="outside the checkpoint"):
        fresh_saver(saved.parent)[0].load(saved)


def test_an_absurd_row_count_raises_at_once(saved):
    """A crafted `rows` used to size the ID map: 2^63 - 1 made the doubling loop spin forever."""
    table = next(iter(json.loads((saved / "index.json").read_text())["tables"]))
    edit_index(saved, lambda index: index["tables"][table].update(rows=2**63 - 1))
    saver, model = fresh_saver(saved.parent)
    before = snapshot(model)
    with pytest.raises(ValueError, match="9223372036854775807 rows, but its chunks hold"):
        saver.load(saved)
    assert_untouched(model, before)


def test_a_chunk_of_the_wrong_width_fails_before_any_row_is_written(saved):
    """The last chunk of a table is rewritten 4 wide where the table is 8 wide, consistently in the
    file and the index: earlier chunks must not have been inserted when the load fails."""
    index = json.loads((saved / "index.json").read_text())
    table = next(n for n, e in index["tables"].items() if e["dim"] == 8 and len(e["chunks"]) > 1)
    last = index["tables"][table]["chunks"][-1]
    name = f"{table}/{last['begin']}/embeddings"
    file = saved / last["file"]
    tensors = load_file(file)
    tensors[name] = tensors[name][:, :4].contiguous()
    save_file(tensors, file)

    def edit(index):
        index["tensors"][name] |= {"shape": list(tensors[name].shape), "xxh3": digest(tensors[name])}
        index["files"][last["file"]]["bytes"] = file.stat().st_size

    edit_index(saved, edit)
    saver, model = fresh_saver(saved.parent)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"the table needs \('float32', \[\d+, 8\]\)"):
        saver.load(saved)
    assert_untouched(model, before)


def test_negative_steps_are_refused(tmp_path):
    model, sparse, dense = trained()
    saver = Saver(tmp_path, model, optimizers=[sparse, dense])
    for step in (-1, 1.5, True):
        with pytest.raises(ValueError, match="step must be an int >= 0"):
            saver.save(step)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_resaving_a_step_never_leaves_it_missing(tmp_path, monkeypatch):
    """A re-save of an existing step killed at each rename or delete of its publish leaves a
    loadable step (old or new copy); with keep=1 the next save still finds it."""
    model, sparse, dense = trained()
    for kill_at in range(3):
        directory = tmp_path / str(kill_at)
        saver = Saver(directory, model, optimizers=[sparse, dense], keep=1)
        saver.save(4, extra={"copy": 1})
        calls: list[object] = []

        def dying(real, calls=calls, kill_at=kill_at):
            def call(*args, **kwargs):
                calls.append(args[0])
                if len(calls) == kill_at + 1:
                    raise KeyboardInterrupt  # stands for SIGKILL at this filesystem step
                return real(*args, **kwargs)

            return call

        monkeypatch.setattr(checkpoint_module.os, "rename", dying(checkpoint_module.os.rename))
        monkeypatch.setattr(checkpoint_module.shutil, "rmtree", dying(checkpoint_module.shutil.rmtree))
        with contextlib.suppress(KeyboardInterrupt):  # a publish with fewer steps is not killed
            saver.save(4, extra={"copy": 2})
        monkeypatch.undo()
        saver.close()
        assert latest(directory) == directory / "step-0000000004", (kill_at, sorted(directory.iterdir()))
        assert fresh_saver(directory)[0].load() in ({"copy": 1}, {"copy": 2})


def test_resaving_without_exchange_restores_the_old_copy_after_a_crash(tmp_path, monkeypatch):
    """Where renameat2 exchange is missing the old copy is renamed aside first; a crash before the
    new one is in place leaves it aside, and the next save puts it back before anything else."""
    model, sparse, dense = trained()
    saver = Saver(tmp_path, model, optimizers=[sparse, dense], keep=1)
    saver.save(4, extra={"copy": 1})
    monkeypatch.setattr(checkpoint_module, "_exchange", lambda a, b: False)
    real_rename, calls = checkpoint_module.os.rename, []

    def rename(a, b):
        calls.append(b)
        if len(calls) == 2:  # the new copy's rename into place: the process dies here
            raise KeyboardInterrupt
        real_rename(a, b)

    monkeypatch.setattr(checkpoint_module.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        saver.save(4, extra={"copy": 2})
    monkeypatch.setattr(checkpoint_module.os, "rename", real_rename)
    assert [p.name[:20] for p in tmp_path.iterdir() if p.name.startswith(".old-")] == [".old-step-0000000004"]
    saver.save(5, extra={"copy": 3})  # recovers step 4, then keep=1 prunes it
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["step-0000000005"]
    assert fresh_saver(tmp_path)[0].load() == {"copy": 3}


@pytest.mark.slow  # a second writer in a fresh interpreter
def test_one_writer_per_directory(tmp_path):
    model, sparse, dense = trained()
    first = Saver(tmp_path, model, optimizers=[sparse, dense])
    first.save(1)
    second = Saver(tmp_path, model, optimizers=[sparse, dense])
    with pytest.raises(RuntimeError, match=r"locked by its writer \(pid \d+"):
        second.save(2)
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import checkpoint_worker as w
from recis.optim import Saver
model, sparse, dense = w.build()
try:
    Saver({str(tmp_path)!r}, model, optimizers=[sparse, dense]).save(3)
except RuntimeError as e:
    print(e)
    sys.exit(3)
"""
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert other.returncode == 3 and "locked by its writer" in other.stdout, other.stderr
    first.close()
    with second:
        second.save(2)
    assert [p.name for p in sorted(tmp_path.glob("step-*"))] == ["step-0000000001", "step-0000000002"]


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from recis.optim import safetensors_stream

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    model, sparse, dense = trained()
    saver = Saver(tmp_path, model, optimizers=[sparse, dense], shards=2)
    monkeypatch.setattr(safetensors_stream.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device.*shard-0000\d-of-00002\.safetensors") as e:
        saver.save(1)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    monkeypatch.setattr(checkpoint_module, "_flush", lambda f, fsync: full(f))  # the dense files' writes
    with pytest.raises(OSError, match=r"No space left on device.*model\.pt"):
        saver.save(1)
    assert not list(tmp_path.glob("step-*")) and not list(tmp_path.glob(".tmp-*"))  # nothing half-written left


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"dtype": {}, "shape": [1], "data_offsets": [0, 4]}, "dtype {} is not one of"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, r"shape \[-1\] is not a list of sizes"),
        ({"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}, "shape '1' is not a list of sizes"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, r"data_offsets \[4, 0\] are not two increasing"),
        ({"dtype": "F32", "shape": [1], "data_offsets": "0"}, "data_offsets '0' are not two increasing"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, r"data_offsets \[0, 4\] do not fit its shape"),
        ("x", "data_offsets None are not two increasing"),
    ],
)
def test_hostile_safetensors_headers_name_the_entry_and_field(tmp_path, entry, problem):
    from recis.optim.safetensors_stream import read_header

    header = json.dumps({"t": entry}).encode()
    (tmp_path / "x.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    with pytest.raises(ValueError, match=f"header entry 't': {problem}"):
        read_header(tmp_path / "x.safetensors")
