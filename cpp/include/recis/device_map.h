// The ID map of a table kept on a device (recis.embedding.DeviceTable): three int64 arrays (IDs,
// tags, values; a value < 0 marks an empty slot) with open addressing from key_hash and linear
// probing, the layout its torch twin (recis/embedding/keymap.py) keeps. Probing and claiming are
// written once for host and device: the CUDA kernels run them a key per thread, a CPU test runs
// them from std::threads. Atomics are libcu++'s (CCCL: in nvcc's include/cccl; on PyPI as
// nvidia-cuda-cccl), so the same body compiles with g++.
#pragma once

#include <cstdint>
#include <cuda/atomic>

#include "recis/hd.h"
#include "recis/keys.h"

namespace recis {

struct MapView {
  int64_t* ids;
  int64_t* tags;
  int64_t* values;
  int64_t mask;  // slots - 1 (a power of two)
};

RECIS_HD inline int64_t map_home(const MapView& m, int64_t id, int64_t tag) {
  return static_cast<int64_t>(key_hash(id, static_cast<uint16_t>(tag)) & static_cast<uint64_t>(m.mask));
}

// The value of key (id, tag), or -1. For lookups, which run when no claim does.
RECIS_HD inline int64_t map_find(const MapView& m, int64_t id, int64_t tag) {
  for (int64_t s = map_home(m, id, tag);; s = (s + 1) & m.mask) {
    const int64_t v = m.values[s];
    if (v < 0) return -1;
    if (m.ids[s] == id && m.tags[s] == tag) return v;
  }
}

// Puts an absent key in the first empty slot from its home; many threads may claim at once
// (distinct keys, the map under load 0.5, no reader of keys until they are done): a slot is taken
// by a compare-and-swap of its value from -1. Returns the slot.
RECIS_HD inline int64_t map_claim(const MapView& m, int64_t id, int64_t tag, int64_t value) {
  for (int64_t s = map_home(m, id, tag);; s = (s + 1) & m.mask) {
    ::cuda::atomic_ref<int64_t, ::cuda::thread_scope_device> slot(m.values[s]);
    int64_t empty = -1;
    if (slot.load(::cuda::memory_order_relaxed) < 0 &&
        slot.compare_exchange_strong(empty, value, ::cuda::memory_order_relaxed)) {
      m.ids[s] = id;
      m.tags[s] = tag;
      return s;
    }
  }
}

}  // namespace recis
