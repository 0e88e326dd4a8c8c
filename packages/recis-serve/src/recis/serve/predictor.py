"""`Predictor`: scores batches with a serving bundle (recis-export writes them).

A batch goes through what training ran, minus the trainer: the feature transforms (the bundle's
`FeatureEngine` config), an eval-mode `EmbeddingEngine` over the bundle's frozen tables (unknown
IDs read zeros and are counted), the dense part as its exported program, and each head's link
(sigmoid for "bce", softmax for "softmax", none for "mse"). Nothing here imports the trainer.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import torch
from torch import Tensor

from recis.core import Padded, Ragged
from recis.embedding import EmbeddingEngine, EmbeddingSpec
from recis.features.config import engine_from_dict
from recis.io.convert import count_nulls, default_fill, fill_nulls, innermost, to_torch

from . import bundle

Batch = dict[str, Any]


class RequestError(ValueError):
    """A batch the bundle's model cannot score: a missing or unknown column, a wrong type or shape."""


class Predictor:
    """Loads a bundle and scores batches: `predict({column: Tensor | Ragged | list}) -> {head: Tensor}`.

    Args:
        path: the bundle directory.
        verify: check every file's digest against the manifest first (a damaged bundle raises
            `bundle.BundleError` naming the file).
        compiled: run the bundle's AOTInductor build of the dense part when it has one that this
            torch can load (False: always the portable `torch.export` program).

    Columns are what the training data held: IDs as int tensors, `Ragged`s or (through
    `predict_rows`) Python lists; strings as string columns when the bundle's features hash them.
    """

    def __init__(self, path: str | Path, verify: bool = True, compiled: bool = True):
        self.path = Path(path)
        self.manifest = m = bundle.read(self.path, verify)
        self.inputs: dict[str, str] = dict(m["inputs"])  # column -> its Arrow type, as trained on
        self.schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(m["schema"])))
        self.features = engine_from_dict(m["features"]).eval() if m.get("features") else None
        specs = {name: EmbeddingSpec(**fields) for name, fields in m["embeddings"].items()}
        self.tables = bundle.tables(self.path, m)
        self.embedding = EmbeddingEngine(specs).use_frozen(self.tables)
        self.program = bundle.program(self.path, m, compiled)
        self.pooled: list[str] = list(m["program"]["pooled"])
        self.sequences: list[str] = list(m["program"]["sequences"])
        self.dense: list[str] = list(m["program"]["dense"])
        self.heads: dict[str, str] = dict(m["heads"])
        self.fill_nulls = m.get("nulls") == "fill"  # as the training reader was told

    def _column(self, name: str, arr: pa.Array | pa.ChunkedArray) -> Tensor | Ragged:
        """One Arrow column as the training reader gave it (nulls filled or refused, as it did)."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if count_nulls(arr):
            if not self.fill_nulls:
                raise RequestError(f"column {name!r} has {count_nulls(arr)} null values (its training data had none)")
            arr = fill_nulls(arr, default_fill(innermost(arr.type)))
        try:
            return to_torch(arr)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise RequestError(f"column {name!r}: {e}") from e

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, heads={list(self.heads)}, dtype={self.manifest.get('dtype')})"

    def _check(self, batch: Mapping[str, Any]) -> None:
        missing = [c for c in self.inputs if c not in batch]
        if missing:
            raise RequestError(f"missing columns {missing} (the model reads {sorted(self.inputs)})")
        rows = {len(v) for v in batch.values() if isinstance(v, (Tensor, Ragged))}
        if len(rows) > 1:
            raise RequestError(f"columns have different numbers of rows: {sorted(rows)}")

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """{head: predictions} for a batch of columns ((B,) per head, (B, C) for softmax heads)."""
        self._check(batch)
        try:
            x = self.features(dict(batch)) if self.features is not None else dict(batch)
            out = self.embedding(x)
            pooled = {n: out[n].contiguous() for n in self.pooled}
            seqs: list[Padded | Ragged] = [out[n] for n in self.sequences]
            dense = {n: x[n] for n in self.dense}
        except (TypeError, ValueError, KeyError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise RequestError(str(message)) from e
        values = {n: s.values for n, s in zip(self.sequences, seqs, strict=True)}
        # Padded sequences travel with their masks, ragged ones (ragged=True) with their offsets.
        structure = {
            n: s.offsets if isinstance(s, Ragged) else s.mask for n, s in zip(self.sequences, seqs, strict=True)
        }
        outputs = self.program(pooled, values, structure, dense)
        return {head: _link(loss, outputs[head]) for head, loss in self.heads.items()}

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """`predict` of rows given as {column: value} dicts (JSON's shape): numbers, strings, lists."""
        if not rows:
            raise RequestError("no rows to score")
        unknown = sorted({c for r in rows for c in r} - set(self.inputs))
        if unknown:
            raise RequestError(f"unknown columns {unknown} (the model reads {sorted(self.inputs)})")
        batch = {}
        for column in self.inputs:
            kind = self.schema.field(column).type
            try:
                arr = pa.array([r.get(column) for r in rows], type=kind)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as e:
                raise RequestError(f"column {column!r} ({kind}): {e}") from e
            batch[column] = self._column(column, arr)
        return self.predict(batch)

    def predict_parquet(
        self, source: str | Path, target: str | Path, passthrough: Sequence[str] = (), batch_rows: int = 4096
    ) -> int:
        """Scores a Parquet file (or a directory of them, in name order) and writes `target`: the
        `passthrough` columns, then one column per head ("<head>", or "<head>_<class>" for softmax
        heads). Returns the number of rows."""
        source = Path(source)
        files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
        if not files:
            raise RequestError(f"{source}: no .parquet files")
        wanted = list(dict.fromkeys([*self.inputs, *passthrough]))
        opened = [pq.ParquetFile(str(f)) for f in files]
        for f, file in zip(files, opened, strict=True):
            absent = [c for c in wanted if c not in file.schema_arrow.names]
            if absent:
                raise RequestError(f"{f}: no columns {absent}")
        writer, total = None, 0
        try:
            for part in (p for file in opened for p in _parts(file, wanted, batch_rows)):
                batch = {c: self._column(c, part.column(c)) for c in self.inputs}
                scores = self.predict(batch)
                columns = {c: part.column(c) for c in passthrough}
                for head, score in scores.items():
                    if score.dim() == 1:
                        columns[head] = pa.array(score.numpy())
                    else:
                        columns |= {f"{head}_{k}": pa.array(score[:, k].numpy()) for k in range(score.shape[1])}
                table = pa.table(columns)
                writer = writer or pq.ParquetWriter(str(target), table.schema, write_page_checksum=True)
                writer.write_table(table)
                total += part.num_rows
        finally:
            if writer is not None:
                writer.close()
        return total

    def stats(self) -> dict[str, int]:
        """Keys looked up and keys unknown to the tables (they read zeros), since loading."""
        out = {"lookups": 0, "unknown": 0}
        for t in self.tables:
            for k, v in t.stats().items():
                out[k] += v
        return out


def _parts(file: pq.ParquetFile, columns: list[str], rows: int) -> Iterator[pa.Table]:
    for part in file.iter_batches(batch_size=rows, columns=columns):
        yield pa.Table.from_batches([part])


def _link(loss: str, out: Tensor) -> Tensor:
    if loss == "bce":
        return torch.sigmoid(out.reshape(-1))
    if loss == "softmax":
        return torch.softmax(out.reshape(out.shape[0], -1), -1)
    return out.float().reshape(-1)
