"""A run from one TOML file: data, features, embeddings, model, objectives, optimizers, stages, output.

Every value is read through `Section`, which knows its dotted path, so a bad or unknown key fails
with `ValueError("config key 'model.hidden': expected a list of ints, got 'big'")` before any data is
touched. See docs/training.md for the full reference.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recis.embedding import EmbeddingEngine, EmbeddingSpec, Eviction, Initializer
from recis.embedding.table import ROW_DTYPES as TABLE_ROW_DTYPES

from .objectives import LOSSES, Objective
from .pipeline import Needs, check_columns
from .stages import OnlineData, Stage, make_schedule
from .trainer import TrainerConfig

MODELS = ("din", "sim", "deepfm", "dcn", "wide_deep", "mmoe", "transformer", "logistic")


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the key."""


class Section:
    """A config table with its dotted path; `get` checks types, `done` rejects keys nobody read."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise ConfigError(f"config key {path!r}: expected a table, got {data!r}")
        self.data, self.path, self.used = data, path, set[str]()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: Any, default: Any = ..., what: str | None = None) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(f"config key {self.key(name)!r} is required ({what or _describe(kind)})")
            return default
        value = self.data[name]
        if not _matches(value, kind):
            raise ConfigError(f"config key {self.key(name)!r}: expected {what or _describe(kind)}, got {value!r}")
        return value

    def section(self, name: str, required: bool = False) -> Section | None:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"config key {self.key(name)!r} is required (a table)")
            return None
        return Section(self.data[name], self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f"in {self.path!r}" if self.path else "at the top level"
            raise ConfigError(f"unknown config keys {where}: {unknown}")


PATHS = ("paths",)  # a kind: one path or a list of them


def _matches(value: Any, kind: Any) -> bool:
    if kind is PATHS:
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, tuple) and kind and kind[0] == "list":
        return isinstance(value, list) and all(_matches(v, kind[1]) for v in value)
    if isinstance(kind, tuple) and kind and kind[0] == "oneof":
        return value in kind[1:]
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    if kind is PATHS:
        return "a path or a list of paths"
    if isinstance(kind, tuple) and kind[0] == "list":
        return "a list of " + {str: "strings", int: "ints", float: "numbers"}.get(kind[1], str(kind[1]))
    if isinstance(kind, tuple) and kind[0] == "oneof":
        return "one of " + ", ".join(repr(k) for k in kind[1:])
    return {str: "a string", int: "an int", float: "a number", bool: "true or false", dict: "a table"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def _paths(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass
class Run:
    """What `build` makes from a config: everything the CLI hands to `Trainer`."""

    model: nn.Module
    train_data: Any
    eval_data: Any
    sparse_optimizer: torch.optim.Optimizer | None
    dense_optimizer: torch.optim.Optimizer | None
    trainer: TrainerConfig
    baseline: Callable[[], Run] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Reads a TOML config and applies `key.path=value` overrides (values parsed as TOML, else strings)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a table")
        node[parts[-1]] = value
    return data


ROW_DTYPES = {name: dtype for dtype, name in TABLE_ROW_DTYPES.items()}  # "bfloat16" -> torch.bfloat16


PATTERN = "*?["  # an [embeddings] key holding one of these is a name pattern (fnmatch)


def expand_patterns(sec: Section, candidates: list[str]) -> dict[str, tuple[dict[str, Any], str]]:
    """`[embeddings]` with name patterns resolved: {feature: (its settings, the key naming them)}.

    A key such as "C*" applies to every candidate (data column or feature) it matches; settings of
    several matching patterns merge in file order, a feature's own table last. Explicit features
    come first, in file order, then pattern matches in the candidates' order.
    """
    patterns = {k: v for k, v in sec.data.items() if any(c in k for c in PATTERN)}
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for key, value in sec.data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"config key {sec.key(key)!r}: expected a table, got {value!r}")
        if key not in patterns:
            merged = {k: v for p, t in patterns.items() if fnmatch.fnmatchcase(key, p) for k, v in t.items()}
            out[key] = (merged | value, sec.key(key))
    for pattern in patterns:
        matched = [c for c in candidates if fnmatch.fnmatchcase(c, pattern)]
        if not matched:
            raise ConfigError(
                f"config key {sec.key(pattern)!r}: the pattern matches none of the columns and features {candidates}"
            )
        for name in matched:
            if name not in out:
                merged = {k: v for p, t in patterns.items() if fnmatch.fnmatchcase(name, p) for k, v in t.items()}
                out[name] = (merged, f"{sec.key(pattern)} (for {name!r})")
    sec.used.update(sec.data)
    return out


def embedding_specs(sec: Section, device: str = "cpu", candidates: Sequence[str] = ()) -> dict[str, EmbeddingSpec]:
    """The `[embeddings.<feature>]` tables (name patterns matched against `candidates`, see
    `expand_patterns`); `device` (train.device) is where their tables live unless a table says
    `device = "host"` (the core's host table) or another device."""
    specs = {}
    for name, (settings, key) in expand_patterns(sec, list(candidates)).items():
        s = Section(settings, key)
        combiner = s.get("combiner", ("oneof", "sum", "mean", "sqrtn", "tile", "none"), "sum")
        init_std = s.get("init_std", float, 0.01)
        evict_age, capacity = s.get("max_age", int, None), s.get("capacity", int, None)
        policy = s.get("policy", ("oneof", "lru", "lfu"), "lru")
        try:
            specs[name] = EmbeddingSpec(
                dim=s.get("dim", int),
                table=s.get("table", str, None),
                combiner=None if combiner == "none" else combiner,
                max_len=s.get("max_len", int, None),
                side=s.get("side", ("oneof", "left", "right"), "left"),
                ragged=s.get("ragged", bool, False),
                initializer=Initializer.truncated_normal(0.0, float(init_std)),
                min_count=s.get("min_count", int, 1),
                eviction=Eviction(evict_age, capacity, policy) if evict_age or capacity is not None else None,
                dtype=ROW_DTYPES[s.get("dtype", ("oneof", *ROW_DTYPES), "float32")],
                rounding=s.get("rounding", ("oneof", "nearest", "stochastic"), "nearest"),
                seed=s.get("seed", int, 0),
                device=_table_device(s.get("device", str, "host" if device == "cpu" else device)),
            )
            if specs[name].dim < 1 or (specs[name].max_len or 0) < 0:
                raise ValueError(f"dim must be >= 1 and max_len >= 0, got {specs[name].dim} and {specs[name].max_len}")
            if combiner == "tile" and specs[name].max_len is None:
                raise ValueError("combiner 'tile' needs max_len")
        except ValueError as e:
            raise ConfigError(f"config key {s.path!r}: {e}") from None
        s.done()
    return specs


def _table_device(name: str) -> str | None:
    """None for "host" (the core's table in host memory), else the torch device, checked."""
    if name == "host":
        return None
    try:
        torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device must be 'host' or a torch device such as 'cuda', got {name!r}") from e
    return name


def objectives(items: Any) -> list[Objective]:
    if not isinstance(items, list) or not items:
        raise ConfigError("config key 'objectives': expected a non-empty array of tables [[objectives]]")
    out = []
    for i, item in enumerate(items):
        s = Section(item, f"objectives[{i}]")
        out.append(
            Objective(
                label=s.get("label", str),
                loss=s.get("loss", ("oneof", *LOSSES), "bce"),
                head=s.get("head", str, None),
                weight=float(s.get("weight", float, 1.0)),
                name=s.get("name", str, None),
            )
        )
        s.get("classes", int, 1)
        s.done()
    return out


def head_widths(items: Any, objs: list[Objective]) -> dict[str, int]:
    return {o.head_name: int(item.get("classes", 1)) for o, item in zip(objs, items, strict=True)}


def build_model(
    sec: Section, specs: dict[str, EmbeddingSpec], heads: dict[str, int], features: nn.Module | None
) -> nn.Module:
    from .models import DIN, SIM, DCNv2, DeepFM, LogisticRegression, MMoE, TransformerRanker, WideDeep

    kind = sec.get("type", str, what=f"one of {', '.join(map(repr, MODELS))}, or 'package.module:Class'")
    if kind not in MODELS and ":" not in kind:
        raise ConfigError(
            f"config key {sec.key('type')!r}: expected one of {', '.join(map(repr, MODELS))}, or "
            f"'package.module:Class' (a model of your own), got {kind!r}"
        )
    dense = sec.get("dense", ("list", str), [])
    common: dict[str, Any] = {
        "features": features,
        "dense": dense,
        "heads": heads,
        "dense_width": sec.get("dense_width", int, len(dense)),
    }
    ints = ("list", int)
    try:
        if kind == "din":
            model: nn.Module = DIN(
                EmbeddingEngine(specs),
                sec.get("sequences", dict, what="a table {history = target}"),
                hidden=sec.get("hidden", ints, [200, 80]),
                attention_hidden=sec.get("attention_hidden", ints, [64, 32]),
                dropout=float(sec.get("dropout", float, 0.0)),
                **common,
            )
        elif kind == "sim":
            model = SIM(
                EmbeddingEngine(specs),
                sec.get("history", str),
                sec.get("target", str),
                search=sec.get("search", ("oneof", "category", "similarity"), "category"),
                category=sec.get("category", ("list", str), None),
                top_k=sec.get("top_k", int, 50),
                hidden=sec.get("hidden", ints, [200, 80]),
                attention_hidden=sec.get("attention_hidden", ints, [64, 32]),
                dropout=float(sec.get("dropout", float, 0.0)),
                **common,
            )
        elif kind == "dcn":
            model = DCNv2(
                EmbeddingEngine(specs),
                cross_layers=sec.get("cross_layers", int, 3),
                rank=sec.get("rank", int, None),
                hidden=sec.get("hidden", ints, [256, 128]),
                dropout=float(sec.get("dropout", float, 0.0)),
                **common,
            )
        elif kind == "wide_deep":
            model = WideDeep(
                EmbeddingEngine(specs),
                sec.get("wide", ("list", str)),
                hidden=sec.get("hidden", ints, [256, 128]),
                dropout=float(sec.get("dropout", float, 0.0)),
                **common,
            )
        elif kind == "mmoe":
            model = MMoE(
                EmbeddingEngine(specs),
                experts=sec.get("experts", int, 4),
                expert_hidden=sec.get("expert_hidden", ints, [128, 64]),
                tower=sec.get("tower", ints, [32]),
                dropout=float(sec.get("dropout", float, 0.0)),
                **common,
            )
        elif ":" in kind:
            model = custom_model(sec, kind, EmbeddingEngine(specs), common)
        elif kind == "deepfm":
            first_order = sec.get("first_order", bool, True)  # one more coordinate per row: the weight
            model = DeepFM(
                EmbeddingEngine(DeepFM.first_order_specs(specs) if first_order else specs),
                hidden=sec.get("hidden", ints, [256, 128]),
                bottom=sec.get("bottom", ints, [64]),
                dropout=float(sec.get("dropout", float, 0.0)),
                first_order=first_order,
                **common,
            )
        elif kind == "transformer":
            model = TransformerRanker(
                EmbeddingEngine(specs),
                sec.get("sequence", str),
                sec.get("target", str),
                num_layers=sec.get("num_layers", int, 2),
                num_heads=sec.get("num_heads", int, 2),
                hidden=sec.get("hidden", ints, [128, 64]),
                dropout=float(sec.get("dropout", float, 0.0)),
                **common,
            )
        else:
            lr_specs = {
                n: EmbeddingSpec(
                    1,
                    table=s.table,
                    combiner="mean" if s.combiner is None else "sum",
                    max_len=s.max_len,
                    min_count=s.min_count,
                    seed=s.seed,
                )
                for n, s in specs.items()
            }
            model = LogisticRegression(EmbeddingEngine(lr_specs), **common)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"config key {sec.path!r} (type {kind!r}): {e}") from None
    sec.done()
    return model


def custom_model(sec: Section, kind: str, engine: EmbeddingEngine, common: dict[str, Any]) -> nn.Module:
    """`model.type = "package.module:Class"`: `Class(engine, features=, dense=, heads=, dense_width=,
    **the [model] table's other keys)`, which must be an `nn.Module` returning {head: logits}."""
    import importlib

    module_name, _, attr = kind.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key {sec.key('type')!r}: cannot load {kind!r} ({type(e).__name__}: {e})") from None
    options = {k: v for k, v in sec.data.items() if k not in sec.used}
    sec.used.update(options)
    model = cls(engine, **common, **options)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"config key {sec.key('type')!r}: {kind} made a {type(model).__name__}, not an nn.Module")
    return model


SPARSE = {
    "sgd": "SparseSGD",
    "adagrad": "SparseAdagrad",
    "rowwise_adagrad": "SparseRowWiseAdagrad",
    "adam": "SparseAdam",
    "adamw": "SparseAdamW",
    "adam_tf": "SparseAdamTF",
    "adamw_tf": "SparseAdamWTF",
    "ftrl": "SparseFtrl",
}
DENSE = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adagrad": "Adagrad"}


def optimizer(sec: Section | None, which: str, model: nn.Module) -> torch.optim.Optimizer | None:
    import recis.optim

    if sec is None:
        return None
    table = SPARSE if which == "sparse" else DENSE
    kind = sec.get("type", ("oneof", *table), "adam")
    cls = getattr(recis.optim if which == "sparse" else torch.optim, table[kind])
    options = inspect.signature(cls).parameters
    kwargs = {}
    for k in sec.data:
        if k != "type":  # an unknown option is left to the constructor, whose error names it
            v = sec.get(k, _option_kind(options[k]) if k in options else object)
            default = options[k].default if k in options else None
            if isinstance(default, tuple) and isinstance(v, list) and len(v) != len(default):
                raise ConfigError(f"config key {sec.key(k)!r}: expected a list of {len(default)} numbers, got {v!r}")
            kwargs[k] = tuple(v) if isinstance(v, list) else v
    params = model if which == "sparse" else [p for p in model.parameters() if p.requires_grad]
    if which == "dense" and kind in ("adam", "adamw") and not {"fused", "foreach"} & set(kwargs):
        # torch's default on the CPU is one small op per parameter and step; the fused kernel is
        # 3.6x faster on the DIN demo's dense layers. Where it is refused (parameters it cannot
        # take), the constructor's default remains.
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as e:
            logging.getLogger("recis.train").info("%s: torch's default %s, not the fused one (%s)", sec.path, kind, e)
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key {sec.path!r} (type {kind!r}): {e}") from None


def _option_kind(option: inspect.Parameter) -> Any:
    """An optimizer option's config kind, from its default and annotation: number, int, bool or list of numbers."""
    default = option.default
    if isinstance(default, bool) or (default is None and "bool" in str(option.annotation)):
        return bool
    if isinstance(default, int) and "float" not in str(option.annotation):
        return int
    if isinstance(default, int | float):
        return float
    if isinstance(default, tuple):
        return ("list", float)
    return object


def _reader(paths: Any, data: Section, base: Path, shuffle: bool) -> Any:
    from recis.io import ColumnReader

    resolved = [p if "://" in p or Path(p).is_absolute() else str(base / p) for p in _paths(paths)]
    try:
        return ColumnReader(
            resolved,
            data.get("columns", ("list", str), None),
            data.get("batch_size", int, 1024),
            shuffle=shuffle and data.get("shuffle", bool, False),
            shuffle_window=data.get("shuffle_window", int, 65536),
            seed=data.get("seed", int, 0),
            num_threads=data.get("num_threads", int, 2),
            nulls=data.get("nulls", ("oneof", "error", "fill"), "error"),
            fill_values=data.get("fill_values", dict, None),
            missing_indicators=data.get("missing_indicators", ("list", str), []),
        )
    except ConfigError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise ConfigError(f"config key {data.path!r}: {e}") from None


def pattern_candidates(
    config: dict[str, Any], data: Section, features: Any, objs: list[Objective], model_key: str
) -> list[str]:
    """What `[embeddings]` name patterns may match: `data.columns` (else the first training file's
    columns) and the feature engine's outputs, less labels and the model's dense columns."""
    columns = data.data.get("columns")
    if columns is None and any(any(c in k for c in PATTERN) for k in config.get("embeddings", {})):
        train = data.data.get("train")
        first = train if isinstance(train, str) else (train or [None])[0]
        columns = _file_columns(first) if first else []
    names = list(columns or []) + [f.name for f in (features.features if features is not None else [])]
    model = config.get(model_key, {})
    skip = {o.label for o in objs} | set(model.get("dense", []) if isinstance(model, dict) else [])
    return [n for n in dict.fromkeys(names) if n not in skip]


def _file_columns(path: str) -> list[str]:
    """The columns of the first data file at `path` (a file, directory or URL; Parquet or ORC),
    found as the reader finds its files."""
    from recis.io.sources import filesystem_for, inspect, list_files

    try:
        fs, inner = filesystem_for(path)
        files = list_files(fs, inner)
        return list(inspect(fs, files[0], None).schema.names) if files else []
    except (OSError, ValueError, TypeError) as e:
        where = f"name patterns need the data's columns; reading {path}: {e}"
        raise ConfigError(f"config key 'embeddings': {where}") from None


def data_needs(
    specs: dict[str, EmbeddingSpec], features: Any, model: nn.Module, objs: list[Objective], model_key: str
) -> Needs:
    """The columns a run reads from the data, {column: (kind, the config key naming it)}; columns the
    feature engine makes are not read, its source columns are."""
    made = {f.name for f in features.features} if features is not None else set()
    needs: Needs = {}
    for i, f in enumerate(features.features if features is not None else []):
        for column in [f.source] if f.source else getattr(f.ops[0], "features", ()):  # a Cross: its inputs
            if column not in made - {f.name}:  # read unless another feature makes it (in place counts as read)
                needs.setdefault(column, ("any", f"features.features[{i}]"))
    for name in specs:
        if name not in made:
            needs.setdefault(name, ("ids", f"embeddings.{name}"))
    for name in getattr(model, "dense_columns", []):
        if name not in made:
            needs.setdefault(name, ("number", f"{model_key}.dense"))
    for i, o in enumerate(objs):
        needs[o.label] = ("number", f"objectives[{i}].label")
    return needs


def early_stopping(sec: Section | None, objs: list[Objective]) -> list[Any]:
    """`train.early_stopping = {metric, patience, mode, min_delta}` as an `EarlyStopping` hook
    (metric: default the first objective's AUC)."""
    if sec is None:
        return []
    from .hooks import EarlyStopping

    hook = EarlyStopping(
        sec.get("metric", str, f"{objs[0].key}.auc"),
        sec.get("patience", int, 2),
        sec.get("mode", ("oneof", "max", "min"), "max"),
        float(sec.get("min_delta", float, 0.0)),
    )
    sec.done()
    return [hook]


def for_baseline(config: dict[str, Any], key: str) -> dict[str, Any]:
    """`config` as the run of model table `key` sees it: that table's own `train` and `optim`
    tables (if any) override the root's, key by key (optim: per `sparse` / `dense` table; one that
    names another optimizer `type` replaces the root's table instead)."""
    own = dict(config.get(key, {}))
    train, optim = own.pop("train", None), own.pop("optim", None)
    out = dict(config) | {key: own}
    if train is not None:
        out["train"] = {**config.get("train", {}), **train}
    if optim is not None:
        base = config.get("optim", {})
        merged = {}
        for k, v in optim.items():
            root = base.get(k, {})
            same = v.get("type", root.get("type", "adam")) == root.get("type", "adam")
            merged[k] = {**root, **v} if same else dict(v)
        out["optim"] = {**base, **merged}
    return out


def build(config: dict[str, Any], model_key: str = "model") -> Run:
    """Builds model, readers, optimizers and the TrainerConfig from a loaded config dict (for
    `model_key` "baseline": with the baseline table's own `train` / `optim` settings on top)."""
    if model_key != "model":
        config = for_baseline(config, model_key)
    root = Section(config, "")
    base = Path(".")  # relative paths are relative to the working directory
    data = root.section("data", required=True)
    assert data is not None
    train_paths, eval_paths = data.get("train", PATHS, None), data.get("eval", PATHS, None)
    windows = data.section("windows")
    features_sec = root.section("features")
    features = None
    if features_sec is not None:
        from recis.features.config import engine_from_dict

        try:
            features = engine_from_dict(features_sec.data)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"config key 'features': {e}") from None
    emb = root.section("embeddings", required=True)
    assert emb is not None
    train = root.section("train") or Section({}, "train")
    device = train.get("device", str, "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"config key 'train.device': expected a torch device, e.g. 'cuda', got {device!r}") from None
    objs = objectives(root.get("objectives", list, [{"label": "label"}]))
    specs = embedding_specs(emb, device, pattern_candidates(config, data, features, objs, model_key))
    heads = head_widths(root.data.get("objectives", [{}]), objs)
    seed = train.get("seed", int, 0)
    torch.manual_seed(seed)  # the dense layers start from the same weights in every run (and on every rank)
    model = build_model(root.section(model_key, required=True), specs, heads, features)  # type: ignore[arg-type]
    root.get("baseline" if model_key == "model" else "model", dict, None)
    optim = root.section("optim")
    sparse = optimizer(optim.section("sparse") if optim else None, "sparse", model)
    dense = optimizer(optim.section("dense") if optim else None, "dense", model)
    needs = data_needs(specs, features, model, objs, model_key)
    if windows is not None:
        from recis.io import Windows

        stream = Windows(
            str(base / windows.get("root", str)),
            windows.get("pattern", str, "*"),
            marker=windows.get("marker", str, "_SUCCESS"),
        )
        train_data: Any = OnlineData(
            stream, lambda w: check_columns(_reader(w.path, data, base, False), needs, "data.windows")
        )
        windows.done()
    else:
        train_data = _reader(train_paths, data, base, True) if train_paths is not None else None
    eval_data = _reader(eval_paths, data, base, False) if eval_paths is not None else None
    stages = []
    for i, item in enumerate(root.get("stages", list, [])):
        s = Section(item, f"stages[{i}]")
        schedule = s.get("lr_schedule", str, "constant")
        try:
            make_schedule(schedule)
        except ValueError as e:
            raise ConfigError(f"config key {s.key('lr_schedule')!r}: {e}") from None
        stage_data = s.get("data", PATHS, None)
        stages.append(
            Stage(
                s.get("name", str, f"stage{i}"),
                _reader(stage_data, data, base, True) if stage_data else None,
                s.get("epochs", int, None),
                s.get("steps", int, None),
                schedule,
                s.get("train", ("list", str), None),
            )
        )
        s.done()
    out = root.get("output_dir", str, None)
    cfg = TrainerConfig(
        objectives=objs,
        epochs=train.get("epochs", int, 1),
        max_steps=train.get("max_steps", int, None),
        stages=stages,
        grad_accum=train.get("grad_accum", int, 1),
        clip_grad_norm=train.get("clip_grad_norm", float, None),
        bf16=train.get("bf16", bool, False),
        compile=train.get("compile", bool, False),
        prefetch=train.get("prefetch", int, 4),
        eval_every=train.get("eval_every", int, None),
        eval_every_epoch=train.get("eval_every_epoch", bool, False),
        hooks=early_stopping(train.section("early_stopping"), objs),
        eval_batches=train.get("eval_batches", int, None),
        group_column=train.get("group_column", str, None),
        output_dir=out,
        checkpoint_every=train.get("checkpoint_every", int, None),
        keep_checkpoints=train.get("keep_checkpoints", int, 3),
        evict_every=train.get("evict_every", int, None),
        log_every=train.get("log_every", int, 50),
        progress=train.get("progress", bool, True),
        tensorboard=train.get("tensorboard", bool, False),
        seed=seed,
        dense_sharding=train.get("dense_sharding", ("oneof", "ddp", "fsdp"), "ddp"),
        device=device,
        keep_freed_memory=train.get("keep_freed_memory", bool, True),
    )
    for sec in (data, train, *(x for x in (optim,) if x is not None)):
        sec.done()
    root.done()
    check_columns(train_data, needs, "data.train")  # from the footers the readers have read: no data yet
    for i, stage in enumerate(stages):
        check_columns(stage.data, needs, f"stages[{i}].data")
    group = {cfg.group_column: ("number", "train.group_column")} if cfg.group_column else {}
    check_columns(eval_data, needs | group, "data.eval")
    return Run(model, train_data, eval_data, sparse, dense, cfg)
