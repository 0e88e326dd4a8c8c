"""`recis-export CHECKPOINT OUT_DIR`: a trained model as a serving bundle (`recis.serve.Predictor`).

recis-export runs/demo/checkpoints/step-0000000500 bundles/demo
recis-export runs/demo/checkpoints/step-0000000500 bundles/demo-int8 --dtype int8

The run's config comes from `config.json` in the run directory (recis-train writes it) or `--config`.
The model is rebuilt from it and the checkpoint loaded; every physical table is frozen as `--dtype`
(fp32, fp16, bf16, or int8 with a scale and bias per row); the dense part (everything after the
embedding lookups) is exported with `torch.export` on a sample batch of the run's data, its batch
dimension (and the length of sequences without `max_len`) dynamic, its weights rounded to float16
(bfloat16 for bf16 and int8) in narrow bundles. The bundle's predictions on that sample are checked
against the model's before the manifest is written.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import shutil
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import torch
from torch import Tensor, nn

from recis.core import Padded, Ragged, version_line
from recis.embedding import EmbeddingEngine, FrozenTable
from recis.embedding.frozen import DTYPES
from recis.optim import Saver
from recis.serve import Predictor, bundle

from . import config as cfgmod

CONFIG_FILE = "config.json"  # what recis-train writes into output_dir
# the precision the dense weights keep in a bundle of each row dtype (int8, the smallest: bfloat16)
DENSE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.bfloat16}


class _Given(nn.Module):
    """Stands in for the `EmbeddingEngine` inside the exported dense part: the batch it gets
    already holds the embedding outputs."""

    def __init__(self, engine: EmbeddingEngine):
        super().__init__()
        self.specs = engine.specs

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch


class DenseProgram(nn.Module):
    """A model's dense part as a function of tensors: (pooled outputs, sequence values, sequence
    structure, dense columns) -> {head: output}. A padded sequence is values (B, L, D) with its mask
    (B, L); a ragged one (those in `ragged`) values (N, D) with its offsets (B + 1,). Built around
    the model itself, its engine replaced."""

    def __init__(self, model: nn.Module, sequences: list[str], ragged: Sequence[str] = ()):
        super().__init__()
        self.model = model
        self.sequences = sequences
        self.ragged = set(ragged)

    def forward(
        self,
        pooled: dict[str, Tensor],
        values: dict[str, Tensor],
        structure: dict[str, Tensor],
        dense: dict[str, Tensor],
    ) -> dict[str, Tensor]:
        batch: dict[str, Any] = {**dense, **pooled}
        for name in self.sequences:
            if name in self.ragged:
                batch[name] = Ragged(values[name], structure[name], validate=False)
            else:
                batch[name] = Padded(values[name], structure[name], None)
        return self.model(batch)


def _sample(run: cfgmod.Run, rows: int) -> dict[str, Any]:
    data = run.eval_data if run.eval_data is not None else run.train_data
    if data is None:
        raise ValueError("recis-export: the config names no data (data.eval or data.train) to take a sample batch from")
    batch = next(iter(data), None)
    if batch is None:
        raise ValueError("recis-export: the run's data is empty; no sample batch to export the dense part with")
    keep = torch.arange(min(rows, len(next(iter(batch.values())))))
    cut = lambda v: v[keep] if isinstance(v, Tensor) else v.select(keep) if isinstance(v, Ragged) else v
    return {k: cut(v) for k, v in batch.items()}


def _versions() -> dict[str, str]:
    out = {"torch": str(torch.__version__)}
    for layer in ("core", "io", "features", "embedding", "optim", "serve", "train"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[f"recis-{layer}"] = metadata.version(f"recis-{layer}")
    return out


def load_config(checkpoint: Path, config: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """The run config: a dict as given, a TOML or JSON file, or the run directory's config.json."""
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config) if config is not None else checkpoint.parent.parent / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"recis-export: no run config at {path} (recis-train writes {CONFIG_FILE} into output_dir; "
            "pass --config RUN.toml otherwise)"
        )
    return json.loads(path.read_text()) if path.suffix == ".json" else cfgmod.load(str(path), [])


def load_trained(checkpoint: str | Path, config: str | Path | Mapping[str, Any] | None = None) -> cfgmod.Run:
    """The run of `checkpoint` (config as in `export_bundle`) built on the CPU with the
    checkpoint's rows and weights loaded and the model in eval mode: what a bundle is made from
    and checked against."""
    checkpoint = Path(checkpoint)
    data = load_config(checkpoint, config)
    data["train"] = {**data.get("train", {}), "device": "cpu"}  # a bundle is exported (and served) on the CPU
    run = cfgmod.build(data)
    Saver(checkpoint.parent, run.model, optimizers=[]).load(checkpoint, optimizer=False)
    run.model.eval()
    return run


def eval_predictions(run: cfgmod.Run, head: str = "label") -> tuple[list[dict[str, Any]], Tensor, Tensor]:
    """The raw batches of `run`'s eval data, the model's probabilities for `head` (sigmoid of its
    logits) and the labels: the reference a bundle's predictions are compared with."""
    model: Any = run.model
    batches, preds, labels = [], [], []
    with torch.no_grad():
        for raw in run.eval_data or []:
            batches.append(raw)
            preds.append(torch.sigmoid(model(model.transform(raw))[head]))
            labels.append(raw[head].float())
    return batches, torch.cat(preds), torch.cat(labels)


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "fp32",
    config: str | Path | Mapping[str, Any] | None = None,
    sample_rows: int = 64,
    aot: bool = False,
) -> Path:
    """Writes a serving bundle of `checkpoint` to `out` (replaced if it exists); returns its manifest path.

    `aot`: also compile the dense part ahead of time with AOTInductor (needs a C++ compiler here;
    the Predictor uses it where torch's version matches, the portable program elsewhere).
    Sequences reach the dense program as trained: padded (values and mask) or, with `ragged=True`,
    as their real events ((N, D) rows and offsets).

    Example: `export_bundle("runs/demo/checkpoints/step-0000000500", "bundles/demo", dtype="int8")`.
    """
    if dtype not in DTYPES:
        raise ValueError(f"recis-export: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    checkpoint, out = Path(checkpoint), Path(out)
    data = load_config(checkpoint, config)
    run = load_trained(checkpoint, data)
    model: Any = run.model  # a RankingModel: embedding, features, transform, dense_columns
    engine = model.embedding
    if not isinstance(engine, EmbeddingEngine):
        raise TypeError(f"recis-export: the model.embedding must be an EmbeddingEngine, got {type(engine).__name__}")
    raw = _sample(run, sample_rows)
    sample = model.transform(raw)
    with torch.no_grad():
        want = model(sample)
        outputs = engine(sample)
    pooled = [n for n in engine.specs if isinstance(outputs[n], Tensor)]
    sequences = [n for n in engine.specs if isinstance(outputs[n], (Padded, Ragged))]
    ragged = [n for n in sequences if isinstance(outputs[n], Ragged)]  # trained so
    dense = list(getattr(model, "dense_columns", []))

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tables = []
    for i, table in enumerate(engine.tables().values()):
        frozen = FrozenTable.from_table(table, dtype)
        file = f"tables/table{i}.safetensors"
        bundle.write_table(tmp / file, frozen)
        tables.append({"file": file, "logical_tables": frozen.tag_names, "dim": frozen.dim, "rows": len(frozen)})

    model._modules["embedding"] = _Given(engine)  # the dense part alone, from here on
    program = DenseProgram(model, sequences, ragged).eval()
    args = (
        {n: outputs[n].contiguous() for n in pooled},
        {n: outputs[n].values for n in sequences},
        {n: outputs[n].offsets if n in ragged else outputs[n].mask for n in sequences},
        {n: sample[n] for n in dense},
    )
    batch_dim = torch.export.Dim("batch", min=1)
    lengths = {n: torch.export.Dim(f"{n}_length", min=1) for n in sequences if engine.specs[n].max_len is None}
    padded = {n: {0: batch_dim, **({1: lengths[n]} if n in lengths else {})} for n in sequences if n not in ragged}
    shapes = (
        {n: {0: batch_dim} for n in pooled},
        padded | {n: {0: torch.export.Dim(f"{n}_events", min=0)} for n in ragged},  # (N, D) rows
        padded | {n: {0: batch_dim + 1} for n in ragged},  # their offsets
        {n: {0: batch_dim} for n in dense},
    )
    _round_weights(model, DENSE_DTYPES[dtype])
    exported = torch.export.export(program, args, dynamic_shapes=shapes)
    sample_inputs, exported.example_inputs = exported.example_inputs, None
    _save_deflated(exported, tmp / "dense.pt2")  # without the sample batch (most of its bytes)
    exported.example_inputs = sample_inputs  # AOTInductor needs it
    compiled = None
    if aot:  # AOTInductor: the dense part as compiled C++ for this platform and torch version
        from torch._inductor import aoti_compile_and_package

        compiled = "dense.aoti.pt2"
        aoti_compile_and_package(exported, package_path=str(tmp / compiled))

    objectives = cfgmod.objectives(data.get("objectives", [{"label": "label"}]))
    inputs = cfgmod.data_needs(engine.specs, model.features, model, objectives, "model")
    labels = {o.label for o in objectives}
    read = [c for c in inputs if c not in labels]
    types = _column_types(run, read)
    spec_fields = ("dim", "table", "combiner", "max_len", "side", "ragged")
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "source": {"checkpoint": str(checkpoint.resolve()), "step": int(checkpoint.name.split("-")[-1])},
        "dtype": dtype,
        "unknown_ids": "zeros",
        "nulls": data.get("data", {}).get("nulls", "error"),
        "inputs": {c: str(types[c]) for c in read},
        "schema": base64.b64encode(pa.schema([(c, types[c]) for c in read]).serialize().to_pybytes()).decode(),
        "features": _features(model.features),
        "embeddings": {n: {f: getattr(s, f) for f in spec_fields} for n, s in engine.specs.items()},
        "tables": tables,
        "program": {
            "file": "dense.pt2",
            "compiled": compiled,
            "pooled": pooled,
            "sequences": sequences,
            "ragged": ragged,
            "dense": dense,
        },
        "heads": {o.head_name: o.loss for o in objectives},
    }
    bundle.write_manifest(tmp, manifest)
    check = Predictor(tmp).predict(raw)
    diffs = {}
    for head in manifest["heads"]:
        expected = next(o for o in objectives if o.head_name == head).predictions(want[head])
        diffs[head] = float((check[head] - expected).abs().max()) if len(expected) else 0.0
    manifest["check"] = {"rows": len(next(iter(check.values()))), "max_abs_diff": diffs}
    bundle.write_manifest(tmp, manifest)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out / bundle.MANIFEST


def _round_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Rounds the dense part's float32 weights to `dtype`'s precision in place. They stay float32
    tensors and the program computes in float32, but the deflated archive stores a float16-rounded
    weight in about 2.5 bytes instead of 4. The feature transforms (`model.features`, run before the
    program) keep theirs, and so does a tensor with values beyond `dtype`'s range."""
    if dtype == torch.float32:
        return
    features = getattr(model, "features", None)
    keep = {id(t) for t in (*features.parameters(), *features.buffers())} if isinstance(features, nn.Module) else set()
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            if t.dtype != torch.float32 or id(t) in keep:
                continue
            rounded = t.to(dtype)
            if torch.equal(rounded.isfinite(), t.isfinite()):
                t.copy_(rounded)


def _save_deflated(exported: torch.export.ExportedProgram, path: Path) -> None:
    """`torch.export.save`, its archive then rewritten with deflate (torch.export.load reads both):
    the program's JSON graph shrinks about tenfold, a D = 16 MovieLens DIN's program from 97 to 41 KB."""
    raw = io.BytesIO()
    torch.export.save(exported, raw)
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))


def _column_types(run: cfgmod.Run, columns: list[str]) -> dict[str, Any]:
    """The Arrow types of the columns the model reads, as the run's reader declares them."""
    reader = run.eval_data if run.eval_data is not None else run.train_data
    types = getattr(reader, "types", {})
    missing = [c for c in columns if c not in types]
    if missing:
        raise ValueError(f"recis-export: the run's data has no columns {missing}")
    return {c: types[c] for c in columns}


def _features(engine: Any) -> dict[str, Any] | None:
    if engine is None:
        return None
    from recis.features.config import engine_to_dict

    return engine_to_dict(engine)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recis-export", description="Write a serving bundle of a trained checkpoint.")
    p.add_argument("--version", action="version", version="%(prog)s: " + version_line("recis-train"))
    p.add_argument("checkpoint", help="a checkpoint directory (output_dir/checkpoints/step-N)")
    p.add_argument("out", help="the bundle directory to write (replaced if it exists)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="table rows (narrow: dense weights rounded)")
    p.add_argument("--config", help="the run's TOML or JSON config (default: config.json of the run directory)")
    p.add_argument("--sample-rows", type=int, default=64, help="rows of the sample batch the dense part is exported on")
    p.add_argument("--aot", action="store_true", help="also compile the dense part with AOTInductor (a C++ compiler)")
    args = p.parse_args(argv)
    try:
        start = time.perf_counter()
        path = export_bundle(args.checkpoint, args.out, args.dtype, args.config, args.sample_rows, args.aot)
    except (ValueError, TypeError, FileNotFoundError, cfgmod.ConfigError) as e:
        print(f"recis-export: {e}", file=sys.stderr)
        return 2
    manifest = json.loads(path.read_text())
    size = sum(f["bytes"] for f in manifest["files"].values())
    diff = max(manifest["check"]["max_abs_diff"].values(), default=0.0)
    print(f"wrote {args.out}: {len(manifest['tables'])} tables ({args.dtype}), {size / 2**20:.1f} MiB, "
          f"in {time.perf_counter() - start:.1f} s; sample check: max |bundle - model| = {diff:.2e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
