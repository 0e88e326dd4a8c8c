"""`KeyMap`: the core's open-addressing ID map (key -> int64 value) in torch tensor ops, on any device.

Keys are (int64 ID, 16-bit tag) pairs hashed as the core hashes them (`key_hash`), placed by
linear probing at load <= 0.5. A batch of distinct absent keys is inserted at once: each round,
every key still looking at an empty slot competes for it and the first of them (in batch order)
takes it, the others probe on; that is what the CUDA kernel's compare-and-swap does in some order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recis.core import kernels

from .sharding import mix64

_TAG_MIX = 0x632BE59BD9B4E019  # the core's tag multiplier (below 2^63: a valid int64)


def key_hash(ids: Tensor, tags: Tensor) -> Tensor:
    """mix64(id + C * tag) with wrapping int64 arithmetic: the core's `key_hash`, bits as int64."""
    return mix64(ids + tags.to(torch.int64) * _TAG_MIX)


class KeyMap:
    """Open addressing over (ID, tag) keys; `values[slot] < 0` marks an empty slot.

    Examples:
        >>> m = KeyMap(torch.device("cpu"))
        >>> m.insert(torch.tensor([7, -3]), torch.tensor([0, 1]), torch.tensor([10, 11]))
        >>> m.find(torch.tensor([-3, 7, 7]), torch.tensor([1, 0, 1])).tolist()
        [11, 10, -1]
    """

    def __init__(self, device: torch.device, capacity: int = 1024, use_kernels: bool = True):
        self.device = device
        self.use_kernels = use_kernels  # False: the tensor-op twin even where CUDA kernels exist
        self.size = 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.ids = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.tags = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.values = torch.full((capacity,), -1, dtype=torch.int64, device=self.device)
        self.mask = capacity - 1

    @property
    def capacity(self) -> int:
        return self.mask + 1

    def nbytes(self) -> int:
        return 3 * 8 * self.capacity

    def find(self, ids: Tensor, tags: Tensor) -> Tensor:
        """Each key's value, -1 for absent keys (int64, on the map's device)."""
        if self.use_kernels and kernels.on_gpu(self.values):
            out = torch.empty(ids.shape, dtype=torch.int64, device=self.device)
            kernels.gpu.map_find(*self._arrays(), ids.contiguous(), tags.contiguous(), out, kernels.stream(self.device))
            return out
        out = torch.full(ids.shape, -1, dtype=torch.int64, device=self.device)
        todo = torch.arange(len(ids), device=self.device)
        slot = key_hash(ids, tags) & self.mask
        while len(todo):
            s = slot[todo]
            value = self.values[s]
            hit = (value >= 0) & (self.ids[s] == ids[todo]) & (self.tags[s] == tags[todo])
            out[todo[hit]] = value[hit]
            going = (value >= 0) & ~hit  # a full slot of another key: probe the next one
            todo = todo[going]
            slot[todo] = (s[going] + 1) & self.mask
        return out

    def reserve(self, size: int) -> None:
        """Grows (and rehashes) so `size` keys stay at load <= 0.5."""
        capacity = self.capacity
        while size * 2 > capacity:
            capacity *= 2
        if capacity == self.capacity:
            return
        keep = self.values >= 0
        ids, tags, values = self.ids[keep], self.tags[keep], self.values[keep]
        self._alloc(capacity)
        self.size = 0
        self.insert(ids, tags, values)

    def insert(self, ids: Tensor, tags: Tensor, values: Tensor) -> None:
        """Adds distinct keys that are not in the map."""
        self.reserve(self.size + len(ids))
        if self.use_kernels and kernels.on_gpu(self.values):
            arrays = (ids.contiguous(), tags.contiguous(), values.contiguous())
            kernels.gpu.map_claim(*self._arrays(), *arrays, kernels.stream(self.device))
            self.size += len(ids)
            return
        todo = torch.arange(len(ids), device=self.device)
        slot = key_hash(ids, tags) & self.mask
        while len(todo):
            s = slot[todo]
            empty = self.values[s] < 0
            first = torch.full((self.capacity,), len(ids), dtype=torch.int64, device=self.device)
            first.scatter_reduce_(0, s[empty], todo[empty], "amin")
            won = empty & (first[s] == todo)
            taken, keys = s[won], todo[won]
            self.ids[taken], self.tags[taken], self.values[taken] = ids[keys], tags[keys], values[keys]
            todo = todo[~won]
            slot[todo] = (s[~won] + 1) & self.mask
        self.size += len(ids)

    def _arrays(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.ids, self.tags, self.values

    def rebuild(self, ids: Tensor, tags: Tensor, values: Tensor) -> None:
        """Holds exactly these (distinct) keys afterwards; deletions are done this way."""
        self.values.fill_(-1)
        self.size = 0
        self.insert(ids, tags, values)
