// Splits the work of a fused multi-column call into (column, chunk) tasks on the core's pool, so
// that 26 narrow columns keep every thread as busy as one wide column does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "recis/parallel.h"

namespace recis::detail {

struct ColumnTask {
  int64_t column, begin, end;
};

// Calls fn(column, begin, end) over chunks of at most `grain` rows of every column.
template <typename Fn>
void parallel_over_columns(const std::vector<int64_t>& sizes, int64_t grain, Fn&& fn) {
  std::vector<ColumnTask> tasks;
  for (size_t c = 0; c < sizes.size(); ++c)
    for (int64_t b = 0; b < sizes[c]; b += grain)
      tasks.push_back({static_cast<int64_t>(c), b, std::min(sizes[c], b + grain)});
  parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) fn(tasks[t].column, tasks[t].begin, tasks[t].end);
  });
}

// Prefix of every error a fused kernel throws, so callers can name the feature behind column c.
inline std::string column_error(const char* op, int64_t column) {
  return std::string(op) + ": column " + std::to_string(column) + ": ";
}

}  // namespace recis::detail
