"""Loading checkpoints: resolve a delta chain, map saved logical tables onto the model's, check
everything (index digest, file names, headers, digests, dims, slots, dense shapes), and only then
stream rows in.

Checking first costs a second read of the data when digests are verified; in exchange a bad
checkpoint raises before any table, module or optimizer has changed.
"""

from __future__ import annotations

import io
import json
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recis.embedding import owner, without_tables

from . import dense_state
from .safetensors_stream import digest, read_header, read_tensor
from .sparse import SparseOptimizer

if TYPE_CHECKING:
    from .checkpoint import SavedTable, Saver

FORMAT_VERSION = 2
_META = ("ids", "tags", "steps", "freqs", "embeddings")
_DTYPES = {"ids": "int64", "tags": "int32", "steps": "int64", "freqs": "int64"}  # slots: float32
_ROW_DTYPES = ("float32", "bfloat16", "float16")  # embeddings: as the index's table entry says
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I64": "int64", "I32": "int32"}
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a plain name inside the checkpoint directory
_STEP_NAME = re.compile(r"step-\d+")


def fail(checkpoint: Path, problem: str, file: str | None = None, table: str | None = None) -> ValueError:
    """The error every load check raises: checkpoint, file and table first, then what is wrong."""
    where = f"checkpoint {checkpoint}" + (f", file {file}" if file else "") + (f", table {table!r}" if table else "")
    return ValueError(f"[recis.checkpoint] {where}: {problem}")


def index_digest(index: dict[str, Any]) -> str:
    """The digest an index carries of itself: XXH3-64 of its canonical JSON without the digest."""
    body = {k: v for k, v in index.items() if k != "xxh3"}
    return digest(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def read_index(path: Path) -> dict[str, Any]:
    """The parsed index.json of checkpoint `path`; ValueError if missing, unreadable, edited (its
    digest), of another format, or naming files outside the checkpoint directory."""
    try:
        index = json.loads((path / "index.json").read_bytes())
    except FileNotFoundError:
        raise fail(path, "index.json is missing (not a checkpoint, or a damaged one)") from None
    except OSError as e:
        raise fail(path, f"cannot be read ({e.strerror or e})", "index.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(path, f"index.json is not valid JSON ({e})", "index.json") from None
    if not isinstance(index, dict) or index.get("format") != "recis.checkpoint":
        raise fail(path, "index.json is not a recis checkpoint index", "index.json")
    if index.get("version") != FORMAT_VERSION:
        raise fail(
            path,
            f"format version {index.get('version')} is not supported (this RecIS reads {FORMAT_VERSION})",
            "index.json",
        )
    if index.get("xxh3") != index_digest(index):
        raise fail(path, "index.json fails its digest (edited or corrupt)", "index.json")
    wrong = _misfit(index, _INDEX, "")
    if wrong is not None:
        raise fail(path, f"index.json is malformed: {wrong}", "index.json")
    bad = [n for n in [*index["files"], *index["state_files"]] if not _FILE_NAME.fullmatch(n)]
    base = index.get("base")
    if bad or not (base is None or (isinstance(base, str) and _STEP_NAME.fullmatch(base))):
        raise fail(path, f"index.json names files outside the checkpoint: {bad or [base]}", "index.json")
    return index


# The structure the loader relies on: {str: spec} is a mapping of any keys, [spec] a list.
_TABLE = {"dim": int, "dtype": str, "logical_tables": [str], "slots": {str: int}, "rows": int, "row_step": int,
          "chunks": [{"begin": int, "rows": int, "file": str}]}  # fmt: skip
_INDEX = {"step": int, "tables": {str: _TABLE}, "files": {str: {"bytes": int}},
          "tensors": {str: {"file": str, "dtype": str, "shape": [int], "xxh3": str}},
          "state_files": {str: {"bytes": int, "xxh3": str}}}  # fmt: skip
_EVICTED = {"rows": int, "file": str}


def _misfit(value: Any, spec: Any, where: str) -> str | None:
    """Where `value` departs from `spec` (and what was expected there), or None if it fits."""
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where or 'the index'} is not a list"
        return next((m for i, v in enumerate(value) if (m := _misfit(v, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where or 'the index'} is not an object"
        if str in spec:
            return next((m for k, v in value.items() if (m := _misfit(v, spec[str], f"{where}[{k!r}]"))), None)
        extra = {"evicted": _EVICTED} if spec is _TABLE and "evicted" in value else {}
        for key, sub in (spec | extra).items():
            if key not in value:
                return f"{where or 'the index'} has no {key!r}"
            if (m := _misfit(value[key], sub, f"{where}.{key}" if where else key)) is not None:
                return m
        return None
    ok = type(value) is int if spec is int else isinstance(value, spec)
    return None if ok else f"{where} is {value!r}, expected {'an int' if spec is int else 'a string'}"


def chain(path: Path) -> list[Path]:
    """The checkpoints to load for `path`, oldest first: its full base, then each delta up to `path`."""
    out = [path]
    while (base := read_index(out[-1]).get("base")) is not None:
        parent = path.parent / base
        if parent in out or not (parent / "index.json").is_file():
            raise fail(out[-1], f"its base checkpoint {base} is missing or incomplete")
        out.append(parent)
    return out[::-1]


class Loader:
    """One load: the plan (which saved tag goes to which model table and tag), its checks, its writes."""

    def __init__(
        self,
        saver: Saver,
        checkpoints: list[Path],
        tables: Sequence[str] | None,
        rename: dict[str, str],
        optimizer: bool,
        dense: bool,
        rank: int,
        world_size: int,
    ):
        self.saver, self.checkpoints = saver, checkpoints
        self.indexes = [read_index(p) for p in checkpoints]
        self.optimizer, self.dense, self.rank, self.world_size = optimizer, dense, rank, world_size
        self.targets: dict[str, tuple[SavedTable, int]] = {
            n: (t, tag) for t in saver.tables for tag, n in enumerate(t.logical)
        }
        saved = {n for index in self.indexes for e in index["tables"].values() for n in e["logical_tables"]}
        unknown = sorted({*(tables or ()), *rename} - saved)
        if unknown:
            raise fail(checkpoints[-1], f"has no logical tables {unknown} (it has {sorted(saved)})")
        self.selected = set(tables) if tables is not None else saved
        self.rename = rename
        # (checkpoint i, saved table) -> (target per saved tag, new tag per saved tag); targets index into `used`
        self.routes: dict[tuple[int, str], tuple[list[SavedTable], Tensor, Tensor]] = {}
        self.headers: dict[tuple[int, str], tuple[dict[str, Any], int]] = {}
        self.evicted: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self.state: dict[str, Any] = {}

    # -- checks ----------------------------------------------------------------------------------

    def validate(self, verify: bool) -> None:
        """Every check a load makes, before anything is written."""
        for i in range(len(self.checkpoints)):
            self._validate(i, verify)
        self._check_dense(verify)

    def _validate(self, i: int, verify: bool) -> None:
        cp, index = self.checkpoints[i], self.indexes[i]
        for name, entry in index["tables"].items():
            self._route(i, name, entry)
            if entry["rows"] != sum(c["rows"] for c in entry["chunks"]):
                raise fail(cp, f"{entry['rows']} rows, but its chunks hold {sum(c['rows'] for c in entry['chunks'])}",
                           "index.json", name)  # fmt: skip
        for file, info in index["files"].items():
            try:
                self.headers[(i, file)] = read_header(cp / file)
            except ValueError as e:
                raise fail(cp, str(e), file) from None
            if (cp / file).stat().st_size != info["bytes"]:
                raise fail(cp, f"has {(cp / file).stat().st_size} bytes, the index says {info['bytes']}", file)
        needed = list(self._needed(i))
        for table, tensor, shape in needed:
            self._check_tensor(i, table, tensor, shape)
        if verify:
            with ThreadPoolExecutor(self.saver.threads) as pool:
                list(pool.map(lambda need: self._verify(i, need[0], need[1]), needed))
        for name, entry in index["tables"].items():
            if "evicted" in entry and (i, name) in self.routes:
                self.evicted[(i, name)] = (self._read(i, f"{name}/evicted/ids"), self._read(i, f"{name}/evicted/tags"))

    def _route(self, i: int, name: str, entry: dict[str, Any]) -> None:
        cp = self.checkpoints[i]
        used: list[SavedTable] = []
        target_of = torch.full((2**16,), -1, dtype=torch.int64)
        tag_of = torch.zeros(2**16, dtype=torch.int32)
        for tag, logical in enumerate(entry["logical_tables"]):
            if logical not in self.selected:
                continue
            want = self.rename.get(logical, logical)
            if want not in self.targets:
                raise fail(
                    cp,
                    f"logical table {logical!r} has no table {want!r} in the model "
                    f"(it has {sorted(self.targets)}); pass tables= or rename=",
                    table=name,
                )
            target, new_tag = self.targets[want]
            if entry["dim"] != target.table.dim or entry["dtype"] not in _ROW_DTYPES:
                raise fail(
                    cp,
                    f"rows are {entry['dtype']} of dim {entry['dim']}, the model's table {target.name!r} "
                    f"holds rows of dim {target.table.dim} (float32, bfloat16 or float16: loads convert)",
                    table=name,
                )
            if self.optimizer:
                have = dict(zip(target.table.slot_names(), slot_widths(target.table), strict=True))
                for slot, width in entry["slots"].items():
                    if have.get(slot) != width:
                        raise fail(
                            cp,
                            f"slot {slot!r} (width {width}) is not in the model's table {target.name!r} "
                            f"(slots {have}); create the optimizer before loading, or pass optimizer=False",
                            table=name,
                        )
            if target not in used:
                used.append(target)
            target_of[tag], tag_of[tag] = used.index(target), new_tag
        if used:
            self.routes[(i, name)] = (used, target_of, tag_of)

    def _needed(self, i: int) -> Iterator[tuple[str, str, list[int]]]:
        """(table, tensor name, expected shape) of every tensor this load reads from checkpoint i."""
        for name, entry in self.indexes[i]["tables"].items():
            if (i, name) not in self.routes:
                continue
            widths = {"embeddings": entry["dim"]} | {
                f"slot.{s}": w for s, w in entry["slots"].items() if self.optimizer
            }
            for chunk in entry["chunks"]:
                n = chunk["rows"]
                yield from ((name, f"{name}/{chunk['begin']}/{f}", [n]) for f in _META[:-1])
                yield from ((name, f"{name}/{chunk['begin']}/{f}", [n, w]) for f, w in widths.items())
            if "evicted" in entry:
                yield from ((name, f"{name}/evicted/{f}", [entry["evicted"]["rows"]]) for f in ("ids", "tags"))

    def _check_tensor(self, i: int, table: str, tensor: str, shape: list[int]) -> None:
        """The tensor is where the index says, with the dtype its field needs and `shape` (rows
        from the index, widths from the table), in the file and in the index alike."""
        cp = self.checkpoints[i]
        info = self.indexes[i]["tensors"].get(tensor)
        if info is None:
            raise fail(cp, f"the index lists no tensor {tensor!r}", "index.json", table)
        header, _ = self.headers.get((i, info["file"]), (None, 0))
        if header is None:
            raise fail(cp, f"tensor {tensor!r} is in a file the index does not list", info["file"], table)
        entry = header.get(tensor)
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"]) if entry else None
        field = tensor.rsplit("/", 1)[1]
        want = self.indexes[i]["tables"][table]["dtype"] if field == "embeddings" else _DTYPES.get(field, "float32")
        if entry is None or dtype != want or entry["shape"] != shape or info["dtype"] != want or info["shape"] != shape:
            raise fail(
                cp,
                f"tensor {tensor!r} is {entry and (dtype, entry['shape'])} in the file and "
                f"{(info['dtype'], info['shape'])} in the index; the table needs {(want, shape)}",
                info["file"],
                table,
            )

    def _verify(self, i: int, table: str, tensor: str) -> None:
        info = self.indexes[i]["tensors"][tensor]
        if digest(self._read(i, tensor)) != info["xxh3"]:
            raise fail(self.checkpoints[i], f"tensor {tensor!r} fails its digest (corrupt data)", info["file"], table)

    def _read(self, i: int, tensor: str) -> Tensor:
        file = self.indexes[i]["tensors"][tensor]["file"]
        header, start = self.headers[(i, file)]
        with open(self.checkpoints[i] / file, "rb") as f:
            try:
                return read_tensor(f, start, header[tensor])
            except ValueError as e:
                raise fail(self.checkpoints[i], str(e), file) from None

    def _dense_file(self, name: str, verify: bool) -> bytes:
        """The bytes of one of the last checkpoint's dense files, checked against its index entry
        (size always; digest when `verify`, and always for the small extra.json)."""
        cp = self.checkpoints[-1]
        info = self.indexes[-1]["state_files"].get(name)
        if info is None:
            raise fail(cp, f"the index lists no {name}", "index.json")
        try:
            data = (cp / name).read_bytes()
        except FileNotFoundError:
            raise fail(cp, "is missing", name) from None
        except OSError as e:
            raise fail(cp, f"cannot be read ({e.strerror or e})", name) from None
        if len(data) != info["bytes"]:
            raise fail(cp, f"has {len(data)} bytes, the index says {info['bytes']}", name)
        if (verify or name == "extra.json") and digest(data) != info["xxh3"]:
            raise fail(cp, "fails its digest (corrupt data)", name)
        return data

    def _check_dense(self, verify: bool) -> None:
        """Loads the last checkpoint's dense state and checks it fits the model and optimizers."""
        cp = self.checkpoints[-1]
        model = self.saver.model
        files = {"optimizers": "optimizers.pt"} | ({"model": "model.pt"} if self.dense and model is not None else {})
        for key, name in files.items():
            data = self._dense_file(name, verify)
            try:
                self.state[key] = torch.load(io.BytesIO(data), weights_only=True)
            except Exception as e:  # torch.load of a damaged file raises several types
                raise fail(cp, f"cannot be read ({type(e).__name__}: {e})", name) from None
        try:
            self.state["extra"] = json.loads(self._dense_file("extra.json", verify))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise fail(cp, f"is not valid JSON ({e})", "extra.json") from None
        if "model" in self.state and model is not None:
            with without_tables(model):  # the tables' rows are the checkpoint's own files
                have = model.state_dict()
            saved = self.state["model"]
            if set(have) != set(saved):
                raise fail(
                    cp,
                    f"dense keys differ: missing {sorted(set(have) - set(saved))}, "
                    f"unexpected {sorted(set(saved) - set(have))}",
                    "model.pt",
                )
            bad = [k for k, v in have.items() if isinstance(v, Tensor) and tuple(v.shape) != tuple(saved[k].shape)]
            if bad:
                raise fail(cp, f"dense shapes differ for {bad}", "model.pt")
        sparse = [o for o in self.saver.optimizers if isinstance(o, SparseOptimizer)]
        dense = [o for o in self.saver.optimizers if not isinstance(o, SparseOptimizer)]
        saved_opt = self.state["optimizers"]
        if self.optimizer and len(saved_opt["sparse"]) != len(sparse):
            raise fail(
                cp, f"has {len(saved_opt['sparse'])} sparse optimizers, the Saver {len(sparse)}", "optimizers.pt"
            )
        for opt, state in zip(sparse if self.optimizer else [], saved_opt["sparse"], strict=False):
            names = [g["name"] for g in opt.param_groups]
            if names != [g["name"] for g in state["param_groups"]]:
                raise fail(
                    cp,
                    f"sparse optimizer tables {[g['name'] for g in state['param_groups']]} differ from "
                    f"{names}; pass optimizer=False to skip optimizer state",
                    "optimizers.pt",
                )
        if self.optimizer and self.dense and len(saved_opt["dense"]) != len(dense):
            raise fail(cp, f"has {len(saved_opt['dense'])} dense optimizers, the Saver {len(dense)}", "optimizers.pt")

    # -- writes ----------------------------------------------------------------------------------

    def apply(self) -> dict[str, Any]:
        """Streams the rows into the tables (base first, then each delta), then the dense state."""
        for i, index in enumerate(self.indexes):
            for name, entry in index["tables"].items():
                if (i, name) in self.routes:
                    for target in self.routes[(i, name)][0]:
                        target.table.reserve(len(target.table) + entry["rows"])  # one rehash, not many
                    for chunk in self._chunks(i, name, entry):
                        self._insert(i, name, chunk)
        if "model" in self.state and self.saver.model is not None:
            model = self.saver.model
            dense_state.load_model_state(model, self.state["model"])
        if self.optimizer:
            sparse = [o for o in self.saver.optimizers if isinstance(o, SparseOptimizer)]
            dense = [o for o in self.saver.optimizers if not isinstance(o, SparseOptimizer)]
            for opt, state in zip(sparse, self.state["optimizers"]["sparse"], strict=True):
                opt.load_state_dict(state)
            for d_opt, state in zip(dense if self.dense else [], self.state["optimizers"]["dense"], strict=False):
                d_opt.load_state_dict(dense_state.shard_optimizer_state(d_opt, state))
        return dict(self.state["extra"])

    def _chunks(self, i: int, name: str, entry: dict[str, Any]) -> Iterator[dict[str, Tensor]]:
        """The table's chunks in order, read ahead by the thread pool (at most `threads` in flight)."""
        fields = [*_META, *(f"slot.{s}" for s in entry["slots"] if self.optimizer)]
        read = lambda begin: {f: self._read(i, f"{name}/{begin}/{f}") for f in fields}
        with ThreadPoolExecutor(self.saver.threads) as pool:
            pending: deque[Any] = deque()
            for chunk in entry["chunks"]:
                pending.append(pool.submit(read, chunk["begin"]))
                if len(pending) > self.saver.threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _insert(self, i: int, name: str, rows: dict[str, Tensor]) -> None:
        """Routes one chunk's rows: drops rows of other ranks and rows evicted by a later delta,
        then writes each target table's share under its tag."""
        used, target_of, tag_of = self.routes[(i, name)]
        later = [self.evicted[(j, name)] for j in range(i + 1, len(self.indexes)) if (j, name) in self.evicted]
        n_tags = len(self.indexes[i]["tables"][name]["logical_tables"])
        same = len(used) == 1 and bool(
            (tag_of[:n_tags] == torch.arange(n_tags)).all() and (target_of[:n_tags] == 0).all()
        )
        if same and self.world_size == 1 and not any(len(ids) for ids, _ in later):
            used[0].table.load_state_dict(rows)  # the common case: the table as saved, whole
            return
        ids, tags = rows["ids"], rows["tags"].to(torch.int64)
        keep = target_of[tags] >= 0
        if self.world_size > 1:
            keep &= owner(ids, self.world_size) == self.rank
        for gone_ids, gone_tags in later:
            for tag in gone_tags.unique().tolist():
                keep &= ~((tags == tag) & torch.isin(ids, gone_ids[gone_tags == tag]))
        for k, target in enumerate(used):
            mask = keep & (target_of[tags] == k)
            part = rows if bool(mask.all()) else {f: v[mask] for f, v in rows.items()}
            if len(part["ids"]):
                target.table.load_state_dict(part | {"tags": tag_of[part["tags"].to(torch.int64)]})


def slot_widths(table: Any) -> list[int]:
    """Widths of the table's optimizer slots, in `slot_names()` order."""
    return [int(v.shape[1]) for k, v in table.export(0, 0).items() if k.startswith("slot.")]
