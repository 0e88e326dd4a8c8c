"""`Saver`: checkpoints of hash tables, sparse and dense optimizers and trainer state, one directory per step.

Tables are streamed chunk by chunk of row indices into SafeTensors shards written by a thread
pool, so a save holds about `threads` chunks, never a table; a directory becomes visible by one
atomic rename once complete (an existing step is swapped out atomically), and every byte is covered
by an XXH3 digest in the index. One writer per directory, held by a file lock. Delta saves hold only
rows touched since the previous save plus the keys evicted since, and load as base + deltas in
order. Format and tensor names: docs/checkpoints.md.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import xxhash
from torch import nn

from recis.embedding import EmbeddingEngine, HashTable, Table

from . import checkpoint_load, dense_state
from .safetensors_stream import ShardWriter, digest
from .sparse import SparseOptimizer

FORMAT_VERSION = checkpoint_load.FORMAT_VERSION
_STEP_DIR = re.compile(r"step-(\d+)$")
_META = ("ids", "tags", "steps", "freqs")
_META_DTYPES = {"ids": torch.int64, "tags": torch.int32, "steps": torch.int64, "freqs": torch.int64}


@dataclass
class SavedTable:
    """A physical table as the checkpoint names it, with its logical tables (by tag) and the engine
    whose step counter its rows record (None for a bare table)."""

    name: str
    table: Table
    logical: list[str]
    engine: EmbeddingEngine | None


class Saver:
    """Saves and loads checkpoints under `directory` (`step-0000000123/` each).

    Args:
        directory: where checkpoint directories go (created if needed).
        model: a module holding `EmbeddingEngine`s (their tables are saved) and dense parameters
            (saved with `torch.save` of its `state_dict()` without table rows; it carries the engines' steps).
        tables: bare `HashTable`s to save as well, by name.
        optimizers: dense `torch.optim` optimizers and `SparseOptimizer`s; their state is saved.
        keep: how many newest checkpoints to keep (with the older ones their deltas build on).
        shards: SafeTensors files per checkpoint; table chunks are dealt to them in turn.
        threads: writer/reader threads.
        chunk_rows: row indices per chunk: the unit of streaming, and of peak extra memory
            (`threads` chunks of (8 + 4 + 8 + 8 + 4 * (dim + slot widths)) bytes a row).
        fsync: flush files and directories to disk before publishing (power-loss safety); without
            it a checkpoint still survives a killed process.
        deltas: after each save, record the keys that eviction drops (about 16 bytes each, until
            the next save) so `save(delta=True)` can list them; False for runs that only save in full.

    The first `save` takes an exclusive lock on `directory` (a `.lock` file, `flock`), held until
    `close()` or the end of the process: a second writer, in this process or another, gets a
    `RuntimeError` at once instead of overwriting or losing saves. Loading takes no lock.

    Examples:
        >>> import tempfile
        >>> from recis.embedding import EmbeddingSpec
        >>> from recis.optim import SparseAdam
        >>> model = nn.ModuleDict({"emb": EmbeddingEngine({"item": EmbeddingSpec(4)}), "mlp": nn.Linear(4, 1)})
        >>> sparse, dense = SparseAdam(model["emb"]), torch.optim.Adam(model["mlp"].parameters())
        >>> _ = model["emb"]({"item": torch.tensor([1, 2, 3])})
        >>> saver = Saver(tempfile.mkdtemp(), model, optimizers=[sparse, dense], keep=2)
        >>> saver.save(step=1, extra={"reader": {"row": 3}}).name
        'step-0000000001'
        >>> saver.load()  # the latest complete checkpoint; returns `extra`
        {'reader': {'row': 3}}
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        model: nn.Module | None = None,
        *,
        tables: dict[str, HashTable] | None = None,
        optimizers: Sequence[torch.optim.Optimizer] = (),
        keep: int = 3,
        shards: int = 4,
        threads: int = 4,
        chunk_rows: int = 65536,
        fsync: bool = True,
        deltas: bool = True,
    ):
        if keep < 1 or shards < 1 or threads < 1 or chunk_rows < 1:
            raise ValueError(
                f"Saver: keep, shards, threads and chunk_rows must be >= 1, "
                f"got {keep}, {shards}, {threads}, {chunk_rows}"
            )
        self.directory = Path(directory)
        self.model = model
        self.optimizers = list(optimizers)
        self.keep, self.shards, self.threads, self.chunk_rows, self.fsync = keep, shards, threads, chunk_rows, fsync
        self.deltas = deltas
        self.tables = _saved_tables(model, tables or {})
        sharded = [t.engine for t in self.tables if t.engine is not None and t.engine.sharded]
        # A sharded model saves collectively: every rank writes the rows it owns, rank 0 the rest
        # (FSDP-sharded dense layers are gathered first, by all ranks).
        self.group = sharded[0].process_group if sharded else None
        collective = bool(sharded) or dense_state.has_sharded(model)
        if collective and len(sharded) < len([t for t in self.tables if t.engine is not None]):
            raise ValueError(
                "Saver: ranks save together (sharded tables or FSDP-sharded dense layers), so every "
                "EmbeddingEngine must be sharded (engine.shard()); an unsharded one would be written by every rank"
            )
        self.rank, self.world = (dist.get_rank(self.group), dist.get_world_size(self.group)) if collective else (0, 1)
        self._last: tuple[str, dict[str, int]] | None = None  # previous save: (dir name, row step per table)
        self._lock: Any = None  # the open .lock file while this Saver is the directory's writer

    def close(self) -> None:
        """Releases the writer lock (the next `save` takes it again)."""
        if getattr(self, "_lock", None) is not None:  # (also from __del__ of a half-made Saver)
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_lock(self) -> None:
        """Makes this Saver the directory's only writer, or raises naming the one that is."""
        if self._lock is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        f = open(self.directory / ".lock", "a+")  # noqa: SIM115 (held open: the lock lives with the file)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another Saver"
            f.close()
            raise RuntimeError(
                f"[recis.checkpoint] {self.directory} is locked by its writer ({holder}); one Saver may "
                "write a checkpoint directory at a time (close() the other, or save elsewhere)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._lock = f

    # -- saving ----------------------------------------------------------------------------------

    def save(self, step: int, extra: dict[str, Any] | None = None, delta: bool = False) -> Path:
        """Writes checkpoint `step-<step>` and returns its path once it is published.

        Args:
            step: the training step (names the directory; for bare tables, also the row step a
                delta counts from).
            extra: JSON-serializable state to keep beside the model (reader position, trainer state).
            delta: write only the rows touched since the previous save by this `Saver` (or since
                the checkpoint it loaded) and the keys evicted since; needs such a previous save.

        Re-saving an existing step replaces it atomically: at every moment one of the two is there.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"Saver.save: step must be an int >= 0, got {step!r}")
        extra_json = json.dumps(extra or {}, indent=1, allow_nan=False)  # fails before anything is written
        if delta and not self.deltas:
            raise ValueError(f"Saver.save(step={step}, delta=True): this Saver was made with deltas=False")
        if delta and self._last is None:
            raise ValueError(
                f"Saver.save(step={step}, delta=True): no previous save or full load by this Saver to build on"
            )
        final = self.directory / f"step-{step:010d}"
        if self.world == 1:
            self._take_lock()
            tmp = self._new_tmp(final)
            try:
                self._write(tmp, step, extra_json, delta)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._publish(tmp, final)
            self._prune()
        else:
            self._save_collective(final, step, extra_json, delta)
        self._last = (final.name, self._row_steps(step))
        for t in self.tables:
            t.table.track_evictions(self.deltas)
        return final

    def _new_tmp(self, final: Path) -> Path:
        """A fresh temporary directory for `final`'s save, after clearing what dead saves left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.directory)
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def _save_collective(self, final: Path, step: int, extra_json: str, delta: bool) -> None:
        """Every rank writes its rows' shards into one temporary directory; rank 0 merges the
        ranks' index parts, writes the dense state and the index, and publishes. Any rank's failure
        fails the save on all ranks (agreed by collectives, so none waits forever)."""
        pg, root = self.group, dist.get_global_rank(self.group, 0) if self.group is not None else 0
        where: list[Any] = [None]
        if self.rank == 0:
            try:
                self._take_lock()
                where[0] = self._new_tmp(final)
            except Exception as e:  # every rank must learn of it, or the others wait forever
                where[0] = e
        dist.broadcast_object_list(where, src=root, group=pg)
        if isinstance(where[0], Exception):
            raise where[0] if self.rank == 0 else RuntimeError(f"Saver.save(step={step}): rank 0 failed: {where[0]}")
        tmp = Path(where[0])
        # Rank 0 writes the dense state; the others only take part in gathering FSDP shards.
        dense = self._dense_state() if self.rank == 0 or dense_state.has_sharded(self.model) else None
        index = self._index(step, delta)
        since = self._last[1] if delta and self._last else {}
        drained = {t.name: t.table.take_evicted() for t in self.tables}  # drained by full saves too
        evicted = drained if delta else {}
        try:
            caps: list[Any] = [None] * self.world
            dist.all_gather_object(caps, [t.table.row_capacity for t in self.tables], group=pg)
            offsets = {t.name: sum(c[i] for c in caps[: self.rank]) for i, t in enumerate(self.tables)}
            logs: list[Any] = [None] * self.world
            dist.all_gather_object(logs, evicted, group=pg)
            evicted = {
                name: (torch.cat([log[name][0] for log in logs]), torch.cat([log[name][1] for log in logs]))
                for name in evicted
            }
            self._write_tables(
                tmp, index, since, self._row_steps(step), delta, offsets, evicted if self.rank == 0 else {}
            )
            part: Any = (None, index)
        except Exception as e:
            part = (f"rank {self.rank}: {type(e).__name__}: {e}", None)
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part, group=pg)
        outcome: list[Any] = [next((err for err, _ in parts if err), None)]
        if self.rank == 0:
            try:
                if outcome[0] is None:
                    self._write(tmp, step, extra_json, delta, _merge_parts([ix for _, ix in parts]), dense)
                    self._publish(tmp, final)
                    self._prune()
            except Exception as e:
                outcome[0] = f"rank 0: {type(e).__name__}: {e}"
            if outcome[0] is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        dist.broadcast_object_list(outcome, src=root, group=pg)
        if outcome[0] is not None:
            raise RuntimeError(f"Saver.save(step={step}): the collective save failed: {outcome[0]}")

    def _row_steps(self, step: int) -> dict[str, int]:
        """The step each table's next lookups will record: rows seen at or after it are 'since this save'."""
        return {t.name: t.engine.step if t.engine is not None else step for t in self.tables}

    def _index(self, step: int, delta: bool) -> dict[str, Any]:
        return {
            "format": "recis.checkpoint",
            "version": FORMAT_VERSION,
            "step": step,
            "kind": "delta" if delta else "full",
            "base": self._last[0] if delta and self._last else None,
            "tables": {},
            "files": {},  # shard name -> bytes
            "tensors": {},  # name -> file, dtype, shape, digest
            "state_files": {},  # model.pt, optimizers.pt, extra.json -> bytes, digest
        }

    def _dense_state(self) -> tuple[dict[str, Any] | None, dict[str, list[Any]]]:
        """The model's state dict and the optimizers' (sparse, dense), sharded dense tensors gathered."""
        model = dense_state.full_model_state(self.model) if self.model is not None else None
        sparse = [o.state_dict(slots=False) for o in self.optimizers if isinstance(o, SparseOptimizer)]
        dense = [dense_state.full_optimizer_state(o) for o in self.optimizers if not isinstance(o, SparseOptimizer)]
        return model, {"sparse": sparse, "dense": dense}

    def _write(
        self,
        tmp: Path,
        step: int,
        extra_json: str,
        delta: bool,
        index: dict[str, Any] | None = None,
        dense: tuple[dict[str, Any] | None, dict[str, list[Any]]] | None = None,
    ) -> None:
        """Writes a checkpoint into `tmp`: the tables (unless `index` already lists them), the
        dense and optimizer state (`dense`, else this process's), `extra` and, last, the index."""
        if index is None:
            index = self._index(step, delta)
            since = self._last[1] if delta and self._last else {}
            evicted = {t.name: t.table.take_evicted() for t in self.tables}  # drained by full saves too
            self._write_tables(tmp, index, since, self._row_steps(step), delta, {}, evicted if delta else {})
        model, optimizers = dense if dense is not None else self._dense_state()
        if model is not None:
            index["state_files"]["model.pt"] = self._torch_save(model, tmp / "model.pt")
        index["state_files"]["optimizers.pt"] = self._torch_save(optimizers, tmp / "optimizers.pt")
        index["state_files"]["extra.json"] = self._write_bytes(tmp / "extra.json", extra_json.encode())
        index["xxh3"] = checkpoint_load.index_digest(index)
        self._write_bytes(tmp / "index.json", json.dumps(index, indent=1).encode())  # last: marks the files complete

    def _write_tables(
        self,
        tmp: Path,
        index: dict[str, Any],
        since: dict[str, int],
        row_steps: dict[str, int],
        delta: bool,
        offsets: dict[str, int],
        evicted: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Deals this rank's chunks of every table (and the `evicted` keys given) to its shards and
        writes them; a chunk is named by its first row index plus the table's `offsets` entry."""
        work: list[list[tuple[SavedTable, int, int | None, Any]]] = [[] for _ in range(self.shards)]
        n = 0
        for t in self.tables:
            opt = next((o for o in self.optimizers if isinstance(o, SparseOptimizer) and t.table in o.tables), None)
            slots = dict(zip(t.table.slot_names(), checkpoint_load.slot_widths(t.table), strict=True))
            index["tables"][t.name] = {
                "dim": t.table.dim,
                "dtype": str(row_dtype(t.table)).removeprefix("torch."),
                "initializer": vars(t.table.initializer) | {"seed": t.table.seed},
                "logical_tables": t.logical,
                "optimizer": None if opt is None else type(opt).__name__,
                "slots": slots,
                "row_step": row_steps[t.name],
                "min_step": since.get(t.name) if delta else None,
                "rows": 0,
                "chunks": [],
            }
            if t.name in evicted:
                work[n % self.shards].append((t, -1, None, evicted[t.name]))
                n += 1
            for begin in range(0, t.table.row_capacity, self.chunk_rows):
                work[n % self.shards].append((t, begin, since.get(t.name) if delta else None, slots))
                n += 1
        total = self.shards * self.world
        names = [f"shard-{self.rank * self.shards + i:05d}-of-{total:05d}.safetensors" for i in range(self.shards)]
        with ThreadPoolExecutor(self.threads) as pool:
            results = list(pool.map(partial(self._write_shard, offsets=offsets), [tmp / name for name in names], work))
        for name, (size, tensors, chunks) in zip(names, results, strict=True):
            index["files"][name] = {"bytes": size}
            index["tensors"] |= {k: v | {"file": name} for k, v in tensors.items()}
            for table, chunk in chunks:
                entry = index["tables"][table]
                if chunk["begin"] < 0:
                    entry["evicted"] = {"rows": chunk["rows"], "file": name}
                else:
                    entry["chunks"].append(chunk | {"file": name})
                    entry["rows"] += chunk["rows"]
        for entry in index["tables"].values():
            entry["chunks"].sort(key=lambda c: c["begin"])

    def _write_shard(
        self, path: Path, items: list[tuple[SavedTable, int, int | None, Any]], offsets: dict[str, int]
    ) -> tuple[int, dict[str, Any], list[tuple[str, dict[str, int]]]]:
        planned: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
        for t, begin, _, info in items:
            if begin < 0:  # evicted keys, already in hand
                planned += [(f"{t.name}/evicted/ids", torch.int64, tuple(info[0].shape))]
                planned += [(f"{t.name}/evicted/tags", torch.int32, tuple(info[1].shape))]
                continue
            rows, at = min(self.chunk_rows, t.table.row_capacity - begin), begin + offsets.get(t.name, 0)
            planned += [(f"{t.name}/{at}/{k}", _META_DTYPES[k], (rows,)) for k in _META]
            planned += [(f"{t.name}/{at}/embeddings", row_dtype(t.table), (rows, t.table.dim))]
            planned += [(f"{t.name}/{at}/slot.{s}", torch.float32, (rows, w)) for s, w in info.items()]
        writer = ShardWriter(path, planned, {"format": "pt", "producer": f"recis.checkpoint v{FORMAT_VERSION}"})
        tensors: dict[str, Any] = {}
        chunks: list[tuple[str, dict[str, int]]] = []
        try:
            for t, begin, min_step, info in items:
                if begin < 0:
                    data = {"ids": info[0], "tags": info[1].to(torch.int32)}
                    prefix = f"{t.name}/evicted/"
                else:
                    data = t.table.export(begin, begin + self.chunk_rows, min_step)  # one chunk in memory
                    begin += offsets.get(t.name, 0)  # row index space of this rank (collective saves)
                    prefix = f"{t.name}/{begin}/"
                for k, v in data.items():
                    tensors[prefix + k] = {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
                    tensors[prefix + k]["xxh3"] = writer.write(prefix + k, v)
                chunks.append((t.name, {"begin": begin, "rows": len(data["ids"])}))
            return writer.close(self.fsync), tensors, chunks
        except OSError as e:
            raise _naming(e, path) from e
        finally:
            writer.file.close()

    def _torch_save(self, obj: Any, path: Path) -> dict[str, Any]:
        """torch.save into `path`, hashing the bytes as they go; returns the file's index entry."""
        try:
            with open(path, "wb") as f:
                out = _Digesting(f)
                torch.save(obj, out)  # type: ignore[arg-type]  # a writable file-like object
                _flush(f, self.fsync)
        except OSError as e:
            raise _naming(e, path) from e
        return {"bytes": out.size, "xxh3": out.hash.hexdigest()}

    def _write_bytes(self, path: Path, data: bytes) -> dict[str, Any]:
        try:
            with open(path, "wb") as f:
                f.write(data)
                _flush(f, self.fsync)
        except OSError as e:
            raise _naming(e, path) from e
        return {"bytes": len(data), "xxh3": digest(data)}

    def _publish(self, tmp: Path, final: Path) -> None:
        """Makes `tmp` visible as `final` in one rename. An existing `final` is swapped with `tmp`
        in one atomic exchange (Linux `renameat2`) and then deleted, so some `final` is always
        there; where exchange is not supported it is renamed aside first, and a save restores it
        if the process died in between (`_remove_stale`)."""
        if self.fsync:
            _fsync_dir(tmp)
        old = None
        if final.exists():
            if _exchange(tmp, final):
                old = tmp
            else:
                old = self.directory / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
                os.rename(tmp, final)
        else:
            os.rename(tmp, final)
        if self.fsync:
            _fsync_dir(self.directory)
        if old is not None:
            shutil.rmtree(old)

    def _prune(self) -> None:
        """Keeps the `keep` newest checkpoints and the ones their deltas need (a damaged one among
        the newest is kept as it is, for inspection); renames before deleting, so a crash
        mid-delete never leaves a half-deleted `step-*` directory."""
        done = complete_checkpoints(self.directory)
        needed: set[str] = set()
        for path in done[-self.keep :]:
            try:
                needed |= {p.name for p in checkpoint_load.chain(path)}
            except ValueError:
                needed.add(path.name)
        for path in done:
            if path.name not in needed:
                doomed = self.directory / f".del-{path.name}-{uuid.uuid4().hex[:8]}"
                os.rename(path, doomed)
                shutil.rmtree(doomed)

    # -- loading ---------------------------------------------------------------------------------

    def load(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        tables: Sequence[str] | None = None,
        rename: dict[str, str] | None = None,
        optimizer: bool = True,
        dense: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        verify: bool = True,
        fallback: bool = False,
    ) -> dict[str, Any]:
        """Loads a checkpoint (default: the newest) and returns its `extra` dict.

        Rows are inserted into (or overwrite rows of) the model's tables; everything is checked
        first (files, header, digests, dims, slots, dense shapes), so a `ValueError` leaves the
        model as it was.

        Args:
            path: a checkpoint directory; a delta loads its base and the deltas up to it, in order.
                Default: the newest checkpoint in the directory; a damaged one raises, naming it.
            tables: logical table names to load (default: all in the checkpoint).
            rename: checkpoint logical table name -> the model's name for it.
            optimizer: False skips slots and optimizer state (warm start from trained embeddings).
            dense: False skips the dense model (and, with it, dense optimizer state).
            rank: keep only the rows `recis.embedding.owner` gives to `rank` (default:
                this process's place in a sharded model's group, else 0 of 1). With a sharded
                model every rank loads together, and a failure on any rank fails all of them.
            world_size: the number of ranks `owner` splits the rows over (see `rank`).
            verify: check the digest of every tensor and dense file before loading (reads the data
                twice); without it the index's digest, the structure, shapes and dims are still checked.
            fallback: without `path`, skip damaged checkpoints (with a warning naming each and what
                is wrong) and load the newest intact one, instead of raising.
        """
        rank = self.rank if rank is None else rank
        world_size = self.world if world_size is None else world_size
        args = (path, tables, rename, optimizer, dense, rank, world_size, verify, fallback)
        if self.world == 1:
            return self._load(*args)
        try:
            extra, error = self._load(*args), None
        except Exception as e:
            extra, error = {}, e
        errors: list[Any] = [None] * self.world
        dist.all_gather_object(errors, None if error is None else f"rank {self.rank}: {error}", group=self.group)
        if error is not None:
            raise error
        failed = [e for e in errors if e]
        if failed:
            raise RuntimeError(f"Saver.load: loading failed on another rank: {failed[0]}")
        return extra

    def _load(
        self,
        path: str | os.PathLike[str] | None,
        tables: Sequence[str] | None,
        rename: dict[str, str] | None,
        optimizer: bool,
        dense: bool,
        rank: int,
        world_size: int,
        verify: bool,
        fallback: bool,
    ) -> dict[str, Any]:
        if not 0 <= rank < world_size:
            raise ValueError(f"Saver.load: expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        candidates = [Path(path)] if path is not None else complete_checkpoints(self.directory)[::-1]
        if not candidates:
            raise ValueError(f"Saver.load: no checkpoint in {self.directory}")
        for k, cp in enumerate(candidates):
            try:
                chain = checkpoint_load.chain(cp)
                loader = checkpoint_load.Loader(self, chain, tables, rename or {}, optimizer, dense, rank, world_size)
                loader.validate(verify)
                break
            except ValueError as e:
                if path is not None:
                    raise
                if not fallback:
                    hint = "the newest checkpoint is damaged: move it away, or load with fallback=True"
                    raise ValueError(f"{e} ({hint})") from None
                if k == len(candidates) - 1:
                    raise ValueError(f"Saver.load: no intact checkpoint in {self.directory}; the oldest: {e}") from e
                warnings.warn(f"Saver.load: skipping a damaged checkpoint: {e}", RuntimeWarning, stacklevel=3)
        extra = loader.apply()
        if tables is None and not rename and world_size == self.world and optimizer and dense:
            last = checkpoint_load.read_index(chain[-1])
            self._last = (chain[-1].name, {n: t["row_step"] for n, t in last["tables"].items()})
            for t in self.tables:
                t.table.take_evicted()
                t.table.track_evictions(self.deltas)
        return extra


def _merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One index from the ranks' parts of a collective save (each lists its own shards and chunks)."""
    index = parts[0]
    for part in parts[1:]:
        index["files"] |= part["files"]
        index["tensors"] |= part["tensors"]
        for name, entry in part["tables"].items():
            mine = index["tables"][name]
            mine["rows"] += entry["rows"]
            mine["chunks"] = sorted(mine["chunks"] + entry["chunks"], key=lambda c: c["begin"])
            if "evicted" in entry:
                mine["evicted"] = entry["evicted"]
    return index


def complete_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """The published checkpoint directories (`step-*`) under `directory`, oldest first. A save
    publishes complete directories only, so one that does not load (see `latest`) was damaged
    afterwards; unfinished saves live under temporary names and are never listed."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest(directory: str | os.PathLike[str], fallback: bool = False) -> Path | None:
    """The newest checkpoint in `directory`, or None when there is none.

    A newest checkpoint whose index is missing or damaged, or whose delta chain is broken, raises
    `ValueError` naming it; with `fallback` it is skipped with a warning and the next one is tried.
    Temporary directories of unfinished saves are never candidates. (`Saver.load` also verifies
    the data.)
    """
    for path in reversed(complete_checkpoints(directory)):
        try:
            checkpoint_load.chain(path)
        except ValueError as e:
            if not fallback:
                raise
            warnings.warn(f"latest: skipping a damaged checkpoint: {e}", RuntimeWarning, stacklevel=2)
            continue
        return path
    return None


def _saved_tables(model: nn.Module | None, bare: dict[str, HashTable]) -> list[SavedTable]:
    """The physical tables to save, named as the sparse optimizers name them."""
    engines = [m for m in model.modules() if isinstance(m, EmbeddingEngine)] if model is not None else []
    out: list[SavedTable] = []
    for i, engine in enumerate(engines):
        prefix = f"engine{i}." if len(engines) > 1 else ""
        for name, table in engine.tables().items():
            out.append(SavedTable(prefix + name, table, [prefix + n for n in table.tag_names], engine))
    out += [SavedTable(name, t, list(t.tag_names) or [name], None) for name, t in bare.items()]
    names = [t.name for t in out]
    logical = [n for t in out for n in t.logical]
    for what, seen in (("table", names), ("logical table", logical)):
        if len(set(seen)) != len(seen):
            raise ValueError(f"Saver: {what} names must be unique, got {seen}")
    if any("/" in n for n in names):
        raise ValueError(f"Saver: table names may not contain '/', got {names}")
    return out


def _remove_stale(directory: Path) -> None:
    """Deletes leftovers of saves whose process is gone (killed mid-save or mid-delete), and puts
    back a checkpoint renamed aside by a replacing save that died before its new copy was in place."""
    for p in directory.iterdir():
        m = re.match(r"\.tmp-step-\d+-(\d+)-", p.name)
        old = re.match(r"\.old-(step-\d+)-", p.name)
        if old and not (directory / old.group(1)).exists():
            os.rename(p, directory / old.group(1))
        elif (m and not _alive(int(m.group(1)))) or p.name.startswith((".del-", ".old-")):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _Digesting:
    """A write-only file wrapper that hashes (XXH3-64) and counts what passes through."""

    def __init__(self, f: Any):
        self.f, self.hash, self.size = f, xxhash.xxh3_64(), 0

    def write(self, data: Any) -> int:
        self.hash.update(data)
        self.size += memoryview(data).nbytes
        return int(self.f.write(data))

    def flush(self) -> None:
        self.f.flush()


def _naming(e: OSError, path: Path) -> OSError:
    """`e` with the file it was about (disk-full errors from write() name none)."""
    return e if e.filename else OSError(e.errno, f"{e.strerror or e} (saving a checkpoint)", str(path))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_RENAMEAT2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
if _RENAMEAT2 is not None:
    _RENAMEAT2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]


def _flush(f: Any, fsync: bool) -> None:
    f.flush()
    if fsync:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def row_dtype(table: Table) -> torch.dtype:
    """How `table` stores its rows, as its checkpoint chunks hold them (device tables: float32)."""
    return getattr(table, "dtype", torch.float32)
