"""Feature configs as plain dicts, JSON and TOML, so a CLI can build a `FeatureEngine` from a file.

TOML is read with the standard library's `tomllib`; it has no writer, so `dumps_toml` is a small
one for what configs hold: scalars, lists of scalars and arrays of tables. TOML has no null:
unset (None) settings are left out and come back as their defaults.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Any

from .engine import Feature, FeatureEngine
from .ops import Op

FORMAT_VERSION = 1


def feature_to_dict(f: Feature) -> dict[str, Any]:
    d: dict[str, Any] = {"name": f.name}
    if f.source_column is not None:
        d["source_column"] = f.source_column
    d["ops"] = [op.to_dict() for op in f.ops]
    return d


def feature_from_dict(d: dict[str, Any]) -> Feature:
    unknown = sorted(set(d) - {"name", "source_column", "ops"})
    if unknown:
        raise ValueError(f"[recis.features] feature {d.get('name')!r}: unknown keys {unknown}")
    try:
        ops = [Op.from_dict(o) for o in d.get("ops", [])]
    except (TypeError, ValueError) as e:
        raise ValueError(f"[recis.features] feature {d.get('name')!r}: {e}") from None
    return Feature(d["name"], d.get("source_column"), ops)


def engine_to_dict(engine: FeatureEngine) -> dict[str, Any]:
    """{"version": 1, "keep_sources": bool, "features": [...]}."""
    return {
        "version": FORMAT_VERSION,
        "keep_sources": engine.keep_sources,
        "features": [feature_to_dict(f) for f in engine.features],
    }


def engine_from_dict(d: dict[str, Any]) -> FeatureEngine:
    if d.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"[recis.features] config version {d.get('version')!r} is not {FORMAT_VERSION}")
    return FeatureEngine([feature_from_dict(f) for f in d.get("features", [])], d.get("keep_sources", False))


def to_json(engine: FeatureEngine) -> str:
    """The engine's config as JSON.

    Examples:
        >>> from recis.features import Feature, FeatureEngine, Hash
        >>> text = to_json(FeatureEngine([Feature("C1", ops=[Hash(buckets=10)])]))
        >>> from_json(text).features == [Feature("C1", ops=[Hash(buckets=10)])]
        True
    """
    return json.dumps(engine_to_dict(engine), indent=2)


def from_json(text: str) -> FeatureEngine:
    return engine_from_dict(json.loads(text))


def to_toml(engine: FeatureEngine) -> str:
    """The engine's config as TOML (`[[features]]` tables with `[[features.ops]]`).

    Examples:
        >>> from recis.features import Bucketize, Feature, FeatureEngine
        >>> print(to_toml(FeatureEngine([Feature("I1", ops=[Bucketize([0, 1.5])])])))
        version = 1
        keep_sources = false
        <BLANKLINE>
        [[features]]
        name = "I1"
        <BLANKLINE>
        [[features.ops]]
        op = "Bucketize"
        boundaries = [0.0, 1.5]
        <BLANKLINE>
    """
    return dumps_toml(engine_to_dict(engine))


def from_toml(text: str) -> FeatureEngine:
    return engine_from_dict(tomllib.loads(text))


def _toml_string(s: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for ch in s:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"dumps_toml: cannot write {type(v).__name__} {v!r}")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_string(k)


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _write_table(d: dict[str, Any], path: str, lines: list[str]) -> None:
    for k, v in d.items():
        if v is not None and not _is_tables(v):
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in d.items():
        if _is_tables(v):
            sub = f"{path}.{_toml_key(k)}" if path else _toml_key(k)
            for table in v:
                lines.append("")
                lines.append(f"[[{sub}]]")
                _write_table(table, sub, lines)


def dumps_toml(d: dict[str, Any]) -> str:
    """Writes a dict of scalars, lists of scalars and lists of dicts (arrays of tables) as TOML.

    Examples:
        >>> print(dumps_toml({"a": 1, "t": [{"s": "x\\ty"}]}))
        a = 1
        <BLANKLINE>
        [[t]]
        s = "x\\ty"
        <BLANKLINE>
    """
    lines: list[str] = []
    _write_table(d, "", lines)
    return "\n".join(lines) + "\n"
