"""The ops a `Feature` chains, as small frozen dataclasses (hashable: identical features de-duplicate).

An op checks its settings (`check`, ValueError) and transforms a whole group of columns at once
(`run_group`): the engine hands it every feature that reaches the same op in the same round, so
the C++-backed ops (Hash, MultiHash, Bucketize, Mod, Cross) make one kernel call per round.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import fused, numeric
from .columns import Column, as_column
from .fused import check_int
from .hashing import multi_hash_buckets
from .transforms import Semantics, boundaries_tensor, truncate


def _buckets(op: str, buckets: int | None) -> int:
    """None (keep all 64 bits) as the kernels' 0; a count must be in [1, 2**63 - 1] (their int64)."""
    return 0 if buckets is None else check_int(op, "buckets", buckets, 1, or_none=True)


def _seed(op: str, seed: int) -> None:
    if not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"{op}: seed must be an int in [0, 2**64), got {seed!r}")


@dataclass(frozen=True)
class Op:
    """Base class: one transform step of a feature."""

    registry: ClassVar[dict[str, type[Op]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Op.registry[cls.__name__] = cls

    def check(self) -> None:
        """Raises ValueError when the settings are invalid."""

    def apply(self, x: Any) -> Column:
        """Transforms one column (the input of a Cross is a list of columns)."""
        raise NotImplementedError

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        """Transforms several columns, op i on column i; fused ops override this with one kernel call."""
        return [op.apply(x) for op, x in zip(ops, xs, strict=True)]

    def __call__(self, x: Any) -> Column:
        self.check()
        return self.run_group([self], [x if isinstance(self, Cross) else as_column(x)])[0]

    def to_dict(self) -> dict[str, Any]:
        """{"op": class name, field: value, ...}; None fields are left out, tuples become lists."""
        out: dict[str, Any] = {"op": type(self).__name__}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Op:
        """Inverse of `to_dict`; ValueError on an unknown op or field."""
        d = dict(d)
        name = d.pop("op", None)
        cls = Op.registry.get(str(name))
        if cls is None:
            raise ValueError(f"unknown op {name!r}; known: {sorted(Op.registry)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"op {name}: unknown settings {unknown}; it takes {sorted(fields)}")
        return cls(**d)


@dataclass(frozen=True)
class Hash(Op):
    """Strings (FarmHash Fingerprint64 or MurmurHash3) or integer IDs (MurmurHash3, algo='murmur') to int64 IDs.

    A string column becomes a (B,) tensor, a list<string> column a Ragged; `buckets` takes the
    unsigned hash mod buckets (None keeps all 64 bits).
    """

    algo: str = "farm"
    buckets: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.algo not in ("farm", "murmur"):
            raise ValueError(f"algo must be 'farm' or 'murmur', got {self.algo!r}")
        _buckets("Hash", self.buckets)
        _seed("Hash", self.seed)
        if self.algo == "farm" and self.seed:
            raise ValueError("FarmHash Fingerprint64 takes no seed; use algo='murmur' for seeded hashes")

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        buckets = [_buckets("Hash", op.buckets) for op in ops]
        return fused.hash_many(xs, [op.algo for op in ops], [op.seed for op in ops], buckets)


@dataclass(frozen=True)
class MultiHash(Op):
    """k independent MurmurHash3 hashes of each integer ID (seed + j for hash j): values gain a last dim of k."""

    k: int
    buckets: int | tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.buckets, list):
            object.__setattr__(self, "buckets", tuple(self.buckets))

    @property
    def per_hash(self) -> list[int]:
        b = self.buckets
        if b is None:
            return [0] * self.k
        return multi_hash_buckets(_buckets("MultiHash", b) if isinstance(b, int) else b, self.k)

    def check(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an int >= 1, got {self.k!r}")
        if isinstance(self.buckets, tuple):
            for j, b in enumerate(self.buckets):
                check_int("MultiHash", f"buckets[{j}]", b, 1)
        self.per_hash  # noqa: B018  (checks the count of bucket sizes)
        _seed("MultiHash", self.seed)

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        return fused.multi_hash_many(xs, [op.seed for op in ops], [op.per_hash for op in ops])


@dataclass(frozen=True)
class Bucketize(Op):
    """Number of boundaries <= value, int64; see `bucketize` for the two semantics.

    Args:
        boundaries: strictly increasing, finite bucket edges.
        semantics: "float64" (default): float64 boundaries, values compared as float64
            (`torch.bucketize(x.double(), b, right=True)`). "tensorflow": TensorFlow's `Bucketize`,
            whose boundaries are float32: a float32 value 0.7 lands in bucket 0 of `Bucketize([0.7])`
            but in bucket 1 of `Bucketize([0.7], semantics="tensorflow")`.

    Examples:
        >>> Bucketize([0.7], semantics="tensorflow")(torch.tensor([0.7])).tolist()
        [1]
    """

    boundaries: tuple[float, ...]
    semantics: Semantics = "float64"

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))

    @cached_property
    def tensor(self) -> Tensor:
        return boundaries_tensor(self.boundaries, self.semantics)

    def check(self) -> None:
        self.tensor  # noqa: B018  (checks semantics, order and finiteness)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.semantics == "float64":  # the default is left out: configs written before the option are unchanged
            del out["semantics"]
        return out

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        return fused.bucketize_many(xs, [op.tensor for op in ops], [op.semantics == "tensorflow" for op in ops])


@dataclass(frozen=True)
class Mod(Op):
    """IDs mod n, in [0, n) (Python's sign rule)."""

    n: int

    def check(self) -> None:
        check_int("Mod", "n", self.n, 1)

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        return fused.mod_many(xs, [op.n for op in ops])


@dataclass(frozen=True)
class Truncate(Op):
    """At most max_len values per row; side='right' keeps the first, 'left' the last."""

    max_len: int
    side: str = "right"

    def check(self) -> None:
        check_int("Truncate", "max_len", self.max_len, 0)
        if self.side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")

    def apply(self, x: Any) -> Column:
        return truncate(x, self.max_len, self.side)


@dataclass(frozen=True)
class Cross(Op):
    """Per row, every combination of the named features' IDs (or raw ID columns) hashed to one ID."""

    features: tuple[str, ...]
    buckets: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))

    def check(self) -> None:
        if len(self.features) < 2:
            raise ValueError(f"needs at least 2 features, got {list(self.features)}")
        _buckets("Cross", self.buckets)
        _seed("Cross", self.seed)

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        cols = [[as_column(c) for c in x] for x in xs]
        return fused.cross_many(cols, [op.seed for op in ops], [_buckets("Cross", op.buckets) for op in ops])


@dataclass(frozen=True)
class FillMissing(Op):
    """NaN (floats), empty rows (lists) or empty strings become `value`; see `numeric.fill_missing`."""

    value: float | int | str

    def check(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float, str)):
            raise ValueError(f"value must be a number or a str, got {self.value!r}")

    def apply(self, x: Any) -> Column:
        return numeric.fill_missing(x, self.value)

    @classmethod
    def run_group(cls, ops: Sequence[Any], xs: Sequence[Any]) -> list[Column]:
        # Dense float CPU columns (Criteo's numbers) in one kernel call; torch's own parallel ops
        # here would leave OpenMP threads spinning against the core's pool on the next kernel.
        dense = [
            i
            for i, (op, x) in enumerate(zip(ops, xs, strict=True))
            if isinstance(x, Tensor)
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and not isinstance(op.value, (str, bool))
        ]
        out: list[Column | None] = [None] * len(xs)
        for i, filled in zip(
            dense, fused.fill_nan_many([xs[i] for i in dense], [ops[i].value for i in dense]), strict=True
        ):
            out[i] = filled
        for i, (op, x) in enumerate(zip(ops, xs, strict=True)):
            if out[i] is None:
                out[i] = op.apply(x)
        return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Log1p(Op):
    """log(1 + x) as float."""

    def apply(self, x: Any) -> Column:
        return numeric.log1p(x)


@dataclass(frozen=True)
class Clip(Op):
    """Clamps values into [min, max] (either may be None)."""

    min: float | None = None
    max: float | None = None

    def check(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and not self.min <= self.max:
            raise ValueError(f"min must be <= max, got min={self.min}, max={self.max}")

    def apply(self, x: Any) -> Column:
        return numeric.clip(x, self.min, self.max)


@dataclass(frozen=True)
class Standardize(Op):
    """(x - mean) / std with statistics fitted by `FeatureEngine.fit` (or given)."""

    mean: float | None = None
    std: float | None = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None and self.std is not None

    def check(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"give both mean and std or neither (to fit them), got mean={self.mean}, std={self.std}")
        if self.fitted and not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):  # type: ignore[arg-type, operator]
            raise ValueError(f"needs a finite mean and std > 0, got mean={self.mean}, std={self.std}")

    def apply(self, x: Any) -> Column:
        if self.mean is None or self.std is None:
            raise ValueError("Standardize is not fitted: call FeatureEngine.fit(batches) or give mean and std")
        return numeric.standardize(x, self.mean, self.std)
