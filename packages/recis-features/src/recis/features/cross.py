"""Feature crosses: per row, every combination of 2+ ID lists hashed to one ID (weights multiply).

The kernel is `cpp/src/features/cross.cc`; the reference, `reference.cross`, decodes each output
position's combination with tensor arithmetic. A combination (id_1, ..., id_k) hashes as the low
64 bits of MurmurHash3 x64-128 of the IDs' 8k little-endian bytes (`mmh3.hash64` of those bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import fused
from .columns import Column
from .fused import check_int


def cross(columns: Sequence[Column], buckets: int = 0, seed: int = 0) -> Column:
    """Crosses 2+ ID columns with the same rows.

    Row r of the output lists the combinations of the inputs' row-r IDs in row-major order (the
    first input varies slowest); an empty input row gives an empty output row. A weight is the
    product of the inputs' weights (an unweighted input counts as 1); the output is weighted when
    any input is. All-dense (B,) inputs (one ID per row) give a dense (B,) tensor.

    Args:
        columns: int IDs, each a (B,) tensor or a flat Ragged with B rows.
        buckets: in [1, 2**63 - 1] takes the unsigned hash mod buckets; 0 keeps all 64 bits.
        seed: MurmurHash3 seed, 0 <= seed < 2**64.

    Examples:
        >>> a = Ragged.from_list([[1, 2], [3]], weights=[[0.5, 1.0], [2.0]])
        >>> b = torch.tensor([10, 20])
        >>> out = cross([a, b], buckets=1000)
        >>> out.lengths().tolist(), out.weights.tolist()
        ([2, 1], [0.5, 1.0, 2.0])
    """
    buckets = check_int("cross", "buckets", buckets, 0)
    if not 0 <= seed < 2**64:
        raise ValueError(f"cross: seed must be in [0, 2**64), got {seed}")
    return fused.cross_many([list(columns)], [seed], [buckets])[0]
