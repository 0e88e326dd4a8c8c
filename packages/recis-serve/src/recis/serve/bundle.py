"""The serving bundle: a directory a trained model leaves the trainer in.

    manifest.json            format, versions, source checkpoint, inputs, features, embeddings,
                             tables, program, heads, and the XXH3-64 digest and size of every file
    tables/table<i>.safetensors
                             one per physical table: "ids" (int64, or int32 when every ID fits;
                             ascending per logical table),
                             "tag_offsets" (int64), "rows" (float32, float16, bfloat16 or int8),
                             and for int8 "scale" and "bias" (per row; float16, or
                             float32 when a table's values exceed float16's range)
    dense.pt2                the dense part as a `torch.export` program (batch dimension dynamic;
                             the archive deflated, the weights rounded to float16 or bfloat16 in
                             narrow bundles)
    dense.aoti.pt2           optional: the same compiled by AOTInductor (this platform, this torch)

`write_manifest` records the files' digests; `read` checks the format and every digest before
anything is used, so a damaged or edited bundle fails with a `BundleError` naming the file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
import xxhash
from safetensors.torch import load_file, save_file
from torch import Tensor

from recis.embedding import FrozenTable

FORMAT = "recis-bundle"
VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle that cannot be used: missing, damaged, edited, or of another format version."""


def digest(path: Path) -> str:
    """XXH3-64 of a file's bytes, as 16 hex digits."""
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_table(path: Path, table: FrozenTable) -> None:
    """IDs go to disk as int32 when they all fit (half the bytes of a D=16 table's keys)."""
    ids = table.ids
    if len(ids) and int(ids.min()) >= -(2**31) and int(ids.max()) < 2**31:
        ids = ids.to(torch.int32)
    tensors: dict[str, Tensor] = {"ids": ids, "tag_offsets": table.tag_offsets, "rows": table.rows}
    if table.scale is not None and table.bias is not None:
        tensors |= {"scale": table.scale, "bias": table.bias}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def read_table(path: Path, tag_names: list[str]) -> FrozenTable:
    try:
        t = load_file(str(path))
        ids = t["ids"].to(torch.int64)
        return FrozenTable(ids, t["tag_offsets"], t["rows"], tag_names, t.get("scale"), t.get("bias"))
    except (KeyError, ValueError, OSError) as e:
        raise BundleError(f"{path}: not a bundle table ({e})") from e


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Adds format, version and every file's size and digest, then writes manifest.json last."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[str(path.relative_to(directory))] = {"bytes": path.stat().st_size, "xxh3": digest(path)}
    out = {"format": FORMAT, "version": VERSION, **manifest, "files": files}
    (directory / MANIFEST).write_text(json.dumps(out, indent=1))
    return directory / MANIFEST


def read(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a bundle, after checking its format and (with `verify`) every file's digest."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{directory}: no {MANIFEST}: not a serving bundle (recis-export writes them)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise BundleError(f"{path}: bundle format version {manifest.get('version')!r}; this recis reads {VERSION}")
    for key in ("inputs", "schema", "embeddings", "tables", "program", "heads", "files"):
        if key not in manifest:
            raise BundleError(f"{path}: the manifest has no {key!r}")
    program, specs = manifest["program"], manifest["embeddings"]
    ragged = [n for n in program.get("sequences", []) if specs.get(n, {}).get("ragged")]
    if sorted(ragged) != sorted(program.get("ragged", [])):  # the engine's outputs must fit the program
        raise BundleError(
            f"{path}: the program takes ragged sequences {program.get('ragged')}, the embeddings make {ragged}"
        )
    for name, entry in manifest["files"].items():
        file = directory / name
        if not file.resolve().is_relative_to(directory.resolve()):
            raise BundleError(f"{path}: file {name!r} lies outside the bundle")
        if not file.is_file():
            raise BundleError(f"{directory}: {name} is missing")
        if file.stat().st_size != entry["bytes"] or (verify and digest(file) != entry["xxh3"]):
            raise BundleError(f"{directory}: {name} is damaged (its size or digest differs from the manifest's)")
    return manifest


def tables(directory: str | Path, manifest: dict[str, Any]) -> list[FrozenTable]:
    directory = Path(directory)
    return [read_table(directory / t["file"], list(t["logical_tables"])) for t in manifest["tables"]]


def program(directory: str | Path, manifest: dict[str, Any], compiled: bool = True) -> Callable[..., Any]:
    """The dense part, callable as `(pooled, sequence values, sequence masks, dense columns) -> {head: output}`:
    the AOTInductor build when the bundle has one made by this torch version (and `compiled`), else
    the portable `torch.export` program."""
    entry = manifest["program"]
    if compiled and entry.get("compiled") and manifest.get("versions", {}).get("torch") == str(torch.__version__):
        from torch._inductor import aoti_load_package

        path = Path(directory) / entry["compiled"]
        try:
            return _spec_once(aoti_load_package(str(path)), entry)
        except Exception as e:  # a build for another CPU or library set: the portable program still serves
            warnings.warn(f"{path}: cannot load ({type(e).__name__}: {e}); using the portable program", stacklevel=2)
    path = Path(directory) / entry["file"]
    try:
        module = torch.export.load(str(path)).module()
    except Exception as e:  # torch.export raises many kinds on a foreign or damaged program
        raise BundleError(f"{path}: cannot load the dense program ({type(e).__name__}: {e})") from e
    # The exported program re-checks every input's shape per call (about 0.4 ms); the Predictor's
    # inputs come from the engine in the shapes it was exported with, so the checks are dropped.
    module._forward_pre_hooks.clear()
    return module


def _spec_once(model: Any, entry: dict[str, Any]) -> Callable[..., Any]:
    """`model` (an AOTInductor build) called with its input order and output structure worked out
    once: its own `__call__` parses both from JSON and re-flattens the inputs on every call (about
    15 us, a tenth of a batch-1 prediction). The order is the manifest's names, checked against
    the build's own input spec here; anything unexpected keeps the build's own call."""
    import torch.utils._pytree as pytree

    loader = getattr(model, "loader", None)
    try:
        in_spec, out_spec = (pytree.treespec_loads(s) for s in loader.get_call_spec())  # type: ignore[union-attr]
    except Exception:  # another torch's loader: its own call still works
        return cast(Callable[..., Any], model)
    names = [list(entry["pooled"]), list(entry["sequences"]), list(entry["sequences"]), list(entry["dense"])]
    if pytree.tree_flatten((tuple(dict.fromkeys(n, 0) for n in names), {}))[1] != in_spec:
        return cast(Callable[..., Any], model)
    run = loader.boxed_run  # type: ignore[union-attr]

    def call(*parts: dict[str, Tensor]) -> Any:
        flat = [part[n] for part, ns in zip(parts, names, strict=True) for n in ns]
        return pytree.tree_unflatten(run(flat), out_spec)

    return call
