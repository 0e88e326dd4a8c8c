// The keys of a frozen (read-only, inference) table: every logical table's IDs ascending, laid end
// to end in one array, tag t's at [tag_offsets[t], tag_offsets[t + 1]).
#pragma once

#include <cstdint>
#include <vector>

#include "recis/keys.h"

namespace recis {

// rows[i] = the position in `ids` of the i-th key of the runs laid end to end, or -1 when absent
// (binary searches, in parallel). Returns how many keys were absent. A tag outside [0, num_tags)
// throws std::invalid_argument.
int64_t frozen_find(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags, const std::vector<KeyRun>& keys,
                    int64_t* rows);

}  // namespace recis
