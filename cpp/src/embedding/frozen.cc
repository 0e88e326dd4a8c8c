// Finding keys in a frozen table: a binary search per key over its logical table's sorted IDs,
// each run of keys split into chunks on the core's pool.
#include "recis/frozen.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

#include "recis/parallel.h"

namespace recis {

int64_t frozen_find(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags, const std::vector<KeyRun>& keys,
                    int64_t* rows) {
  for (const KeyRun& run : keys)
    if (run.tags != nullptr || run.tag >= num_tags)
      throw std::invalid_argument("frozen_find: tag " + std::to_string(run.tag) + " is not one of the table's " +
                                  std::to_string(num_tags) + " logical tables");
  const std::vector<int64_t> starts = run_starts(keys);
  std::atomic<int64_t> absent{0};
  for (size_t k = 0; k < keys.size(); ++k) {
    const KeyRun& run = keys[k];
    const int64_t* lo = ids + tag_offsets[run.tag];
    const int64_t* hi = ids + tag_offsets[run.tag + 1];
    int64_t* out = rows + starts[k];
    parallel_for(run.n, 4096, [&](int64_t begin, int64_t end) {
      int64_t missing = 0;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t* at = std::lower_bound(lo, hi, run.ids[i]);
        const bool found = at != hi && *at == run.ids[i];
        out[i] = found ? at - ids : -1;
        missing += !found;
      }
      absent += missing;
    });
  }
  return absent.load();
}

}  // namespace recis
