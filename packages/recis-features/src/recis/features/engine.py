"""`Feature` definitions and the `FeatureEngine` that applies them to batches, fused across features.

The engine plans once, at construction: identical definitions are computed once, and ops run in
rounds where every feature whose next op is of the same kind joins one group, i.e. one C++ call
(26 string columns hashed in one call, not 26). A kind waits while a ready feature still needs it
after another op, so [FillMissing, Bucketize] and [Bucketize] features bucketize together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .columns import Column, as_column
from .numeric import RunningMoments
from .ops import Cross, Op, Standardize

Batch = dict[str, Any]


def _error(feature: str, op: Op | None, message: str) -> ValueError:
    where = f"feature {feature!r}" + (f", op {op}" if op is not None else "")
    return ValueError(f"[recis.features] {where}: {message}")


@dataclass(frozen=True)
class Feature:
    """One output column: `ops` applied in order to the batch column `source_column`.

    Args:
        name: output column name.
        source_column: input column; defaults to `name`. A feature whose first op is a `Cross`
            reads the crossed features instead and takes no source column.
        ops: the transforms, e.g. `[FillMissing(0.0), Bucketize([1, 10, 100])]`.

    Examples:
        >>> from recis.features import Feature, Hash
        >>> Feature("C1", ops=[Hash(buckets=1000)]).source
        'C1'
    """

    name: str
    source_column: str | None = None
    ops: Sequence[Op] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"[recis.features] a feature needs a non-empty name, got {self.name!r}")
        for i, op in enumerate(self.ops):
            if not isinstance(op, Op):
                raise _error(self.name, None, f"ops[{i}] must be an Op (Hash, Bucketize, ...), got {op!r}")
            try:
                op.check()
            except ValueError as e:
                raise _error(self.name, op, str(e)) from None
            if isinstance(op, Cross) and i > 0:
                raise _error(self.name, op, "a Cross must be the first op of its feature")
        if self.is_cross and self.source_column is not None:
            raise _error(self.name, self.ops[0], "a Cross feature reads its crossed features, not a source column")

    @property
    def is_cross(self) -> bool:
        return bool(self.ops) and isinstance(self.ops[0], Cross)

    @property
    def source(self) -> str | None:
        """The batch column read (None for a Cross feature)."""
        return None if self.is_cross else (self.source_column or self.name)

    def definition(self) -> tuple[Any, ...]:
        """What the feature computes, without its name: equal definitions are computed once."""
        return (self.source, self.ops)

    def with_ops(self, ops: Sequence[Op]) -> Feature:
        return dataclasses.replace(self, ops=tuple(ops))


class FeatureEngine(nn.Module):
    """Applies features to a batch dict: `{column: Tensor | Ragged | list[str]}` in, the same out.

    Output: every feature under its name, plus the batch's other columns unchanged (labels, dense
    inputs). Source columns a feature consumed are dropped unless `keep_sources` (or a feature
    has the same name). Inputs must be CPU tensors for the fused kernels (others take the torch
    references one by one).

    Args:
        features: the definitions; names must be unique (an exact repeat is dropped).
        keep_sources: keep the consumed input columns in the output.

    Examples:
        >>> from recis.features import Bucketize, Cross, Feature, FeatureEngine, FillMissing, Hash
        >>> engine = FeatureEngine([
        ...     Feature("C1", ops=[Hash(buckets=100)]),
        ...     Feature("C2", ops=[Hash(buckets=100)]),
        ...     Feature("I1", ops=[FillMissing(0.0), Bucketize([0.0, 10.0])]),
        ...     Feature("C1_x_C2", ops=[Cross(["C1", "C2"], buckets=1000)]),
        ... ])
        >>> out = engine({"C1": ["a", "b"], "C2": ["x", ""], "I1": torch.tensor([3.0, float("nan")]),
        ...               "label": torch.tensor([1, 0])})
        >>> sorted(out), out["I1"].tolist(), out["C1"].shape
        (['C1', 'C1_x_C2', 'C2', 'I1', 'label'], [1, 1], torch.Size([2]))
    """

    def __init__(self, features: Sequence[Feature], keep_sources: bool = False):
        super().__init__()
        self.keep_sources = keep_sources
        self.features: list[Feature] = []
        by_name: dict[str, Feature] = {}
        for f in features:
            if not isinstance(f, Feature):
                raise TypeError(f"[recis.features] FeatureEngine takes Feature objects, got {f!r}")
            if f.name in by_name:
                if by_name[f.name] != f:
                    raise ValueError(f"[recis.features] duplicate feature name {f.name!r} with different definitions")
                continue
            by_name[f.name] = f
            self.features.append(f)
        # name -> the canonical feature computing the same definition
        first: dict[tuple[Any, ...], str] = {}
        self._canonical = {f.name: first.setdefault(f.definition(), f.name) for f in self.features}
        self._computed = [by_name[n] for n in dict.fromkeys(self._canonical.values())]
        self._check_crosses(by_name)
        self._plan = self._schedule()

    def _check_crosses(self, by_name: Mapping[str, Feature]) -> None:
        state: dict[str, int] = {}  # 1: visiting, 2: done

        def visit(name: str) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"[recis.features] feature {name!r}: crosses form a cycle")
            state[name] = 1
            f = by_name[name]
            if f.is_cross:
                for dep in f.ops[0].features:  # type: ignore[attr-defined]
                    if dep in by_name:
                        visit(dep)
            state[name] = 2

        for name in by_name:
            visit(name)

    def _deps(self, f: Feature) -> list[str]:
        if not f.is_cross:
            return []
        return [self._canonical[d] for d in f.ops[0].features if d in self._canonical]  # type: ignore[attr-defined]

    def _schedule(self) -> list[list[tuple[type[Op], list[tuple[str, int]]]]]:
        """Rounds of groups: (op class, [(canonical feature, op index)]); one call per group."""
        step = {f.name: 0 for f in self._computed}
        ops = {f.name: f.ops for f in self._computed}
        deps = {f.name: self._deps(f) for f in self._computed}
        done = {n for n, o in ops.items() if not o}
        rounds = []
        while len(done) < len(ops):
            ready = [n for n in ops if n not in done and all(d in done for d in deps[n])]
            nexts = {n: type(ops[n][step[n]]) for n in ready}
            later = {type(op) for n in ready for op in ops[n][step[n] + 1 :]}
            kinds = list(dict.fromkeys(nexts.values()))
            runnable = [k for k in kinds if k not in later]
            if not runnable:  # every kind is needed again later: run the most shared one now
                runnable = [max(kinds, key=lambda k: sum(v is k for v in nexts.values()))]
            groups = [(k, [(n, step[n]) for n in ready if nexts[n] is k]) for k in runnable]
            for _, members in groups:
                for n, _ in members:
                    step[n] += 1
                    if step[n] == len(ops[n]):
                        done.add(n)
            rounds.append(groups)
        return rounds

    @property
    def num_calls(self) -> int:
        """Op-group calls per batch (fused kernel calls plus per-feature torch ops' groups)."""
        return sum(len(r) for r in self._plan)

    def forward(self, batch: Mapping[str, Any]) -> Batch:
        by_name = {f.name: f for f in self._computed}
        values: dict[str, Column] = {}
        consumed: set[str] = set()

        def source(name: str, f: Feature, op: Op | None) -> Column:
            if name not in batch:
                raise _error(f.name, op, f"unknown source column {name!r}; the batch has {sorted(batch)}")
            consumed.add(name)
            try:
                return as_column(batch[name])
            except TypeError as e:
                raise _error(f.name, op, f"column {name!r}: {e}") from None

        for f in self._computed:
            if not f.ops:
                values[f.name] = source(f.source, f, None)  # type: ignore[arg-type]
        for groups in self._plan:
            for kind, members in groups:
                ops, xs = [], []
                for n, i in members:
                    f = by_name[n]
                    op = f.ops[i]
                    if i > 0:
                        x: Any = values[n]
                    elif isinstance(op, Cross):
                        x = [
                            values[self._canonical[d]] if d in self._canonical else source(d, f, op)
                            for d in op.features
                        ]
                    else:
                        x = source(f.source, f, op)  # type: ignore[arg-type]
                    ops.append(op)
                    xs.append(x)
                try:
                    outs = kind.run_group(ops, xs)
                except (TypeError, ValueError) as e:
                    raise self._blame(kind, members, ops, xs, e) from e
                for (n, _), result in zip(members, outs, strict=True):
                    values[n] = result
        out = {k: v for k, v in batch.items() if self.keep_sources or k not in consumed}
        for f in self.features:
            out[f.name] = values[self._canonical[f.name]]
        return out

    def _blame(
        self, kind: type[Op], members: list[tuple[str, int]], ops: list[Op], xs: list[Any], err: Exception
    ) -> ValueError:
        """Finds which feature of a failed group caused the error (rerunning them one by one)."""
        for (n, _), op, x in zip(members, ops, xs, strict=True):
            try:
                kind.run_group([op], [x])
            except (TypeError, ValueError) as e:  # the kernel's "column 0" means nothing to the user
                return _error(n, op, re.sub(r"column \d+: ", "", str(e)))
        names = [n for n, _ in members]
        return _error(", ".join(names), ops[0], str(err))

    def fit(self, batches: Iterable[Mapping[str, Any]]) -> FeatureEngine:
        """Fits every `Standardize()` without statistics on `batches`; returns the fitted engine.

        Statistics are taken over the finite values reaching the op (after the ops before it),
        population standard deviation, float64. `batches` is read once per chain depth of
        unfitted Standardize ops (once, usually); it is materialized as a list. A feature that no
        finite value reaches (an all-NaN column) raises ValueError naming it.

        Examples:
            >>> from recis.features import Feature, FeatureEngine, Standardize
            >>> engine = FeatureEngine([Feature("x", ops=[Standardize()])])
            >>> fitted = engine.fit([{"x": torch.tensor([1.0, 3.0])}])
            >>> fitted.features[0].ops[0], fitted({"x": torch.tensor([3.0])})["x"].tolist()
            (Standardize(mean=2.0, std=1.0), [1.0])
        """
        data = list(batches)
        features = list(self.features)
        while True:
            todo = {}
            for i, f in enumerate(features):
                j = next((j for j, op in enumerate(f.ops) if isinstance(op, Standardize) and not op.fitted), None)
                if j is not None:
                    todo[i] = j
            if not todo:
                return FeatureEngine(features, self.keep_sources)
            prefix = [f.with_ops(f.ops[: todo[i]]) if i in todo else f for i, f in enumerate(features)]
            engine = FeatureEngine(prefix, keep_sources=True)
            moments = {i: RunningMoments() for i in todo}
            for batch in data:
                out = engine(batch)
                for i, m in moments.items():
                    m.update(out[features[i].name])
            for i, j in todo.items():
                if moments[i].count == 0:  # fitting would store the identity (mean 0, std 1) silently
                    f = features[i]
                    column = f"column {f.source!r}" if f.source is not None else "its crossed columns"
                    raise _error(
                        f.name,
                        f.ops[j],
                        f"Standardize.fit: no finite value of {column} reached it in {len(data)} "
                        "batch(es) (all NaN or infinite, or empty); fill missing values first or give mean and std",
                    )
                fitted = Standardize(mean=moments[i].mean, std=moments[i].std())
                features[i] = features[i].with_ops([*features[i].ops[:j], fitted, *features[i].ops[j + 1 :]])

    def extra_repr(self) -> str:
        return f"{len(self.features)} features, {len(self._computed)} computed, {self.num_calls} op groups per batch"
