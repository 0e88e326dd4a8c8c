// The keys of a frozen (read-only, inference) table: every logical table's IDs ascending, laid end
// to end in one array, tag t's at [tag_offsets[t], tag_offsets[t + 1]).
#pragma once

#include <cstdint>
#include <vector>

#include "recis/keys.h"

namespace recis {

// An open-addressing index over the keys: slots[s] is a position in `ids` or -1 (empty), the slot
// count a power of two at least twice the key count (linear probing from key_hash(id, tag)). Built
// once per table, read by frozen_find; a key repeated within its logical table throws.
std::vector<int64_t> frozen_index(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags);

// rows[i] = the position in `ids` of the i-th key of the runs laid end to end, or -1 when absent
// (probes of the index `slots`, in parallel). Returns how many keys were absent. A tag outside
// [0, num_tags) throws std::invalid_argument.
int64_t frozen_find(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags, const int64_t* slots,
                    int64_t num_slots, const std::vector<KeyRun>& keys, int64_t* rows);

}  // namespace recis
