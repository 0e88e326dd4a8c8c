// Argument parsing shared by the bindings of the pooling kernels.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "recis/pooling.h"

namespace recis::bind {

inline Combiner parse_combiner(const std::string& c, const char* op) {
  if (c == "sum") return Combiner::kSum;
  if (c == "mean") return Combiner::kMean;
  if (c == "sqrtn") return Combiner::kSqrtn;
  throw std::invalid_argument(std::string(op) + ": unknown combiner '" + c + "' (expected sum, mean or sqrtn)");
}

// One combiner per run of bags (a feature's bags, in a call that pools several features).
inline std::vector<BagRun> parse_runs(const std::vector<std::string>& combiners, const std::vector<int64_t>& bags,
                                      const char* op) {
  if (combiners.size() != bags.size())
    throw std::invalid_argument(std::string(op) + ": got " + std::to_string(combiners.size()) + " combiners for " +
                                std::to_string(bags.size()) + " bag runs");
  std::vector<BagRun> runs;
  runs.reserve(bags.size());
  for (size_t i = 0; i < bags.size(); ++i) runs.push_back(BagRun{bags[i], parse_combiner(combiners[i], op)});
  return runs;
}

// The bag layout of a call's output (and output gradient); batch-major needs equal runs.
inline BagLayout parse_layout(const std::vector<int64_t>& runs, bool batch_major, const char* op) {
  if (!batch_major || runs.empty()) return {};
  for (int64_t r : runs)
    if (r != runs[0])
      throw std::invalid_argument(std::string(op) + ": batch_major needs the same number of bags in every run, got " +
                                  std::to_string(runs[0]) + " and " + std::to_string(r));
  return BagLayout{static_cast<int64_t>(runs.size()), runs[0]};
}

// Checks that an output (or output gradient) array is (bags, dim), or (per_run, runs * dim) when batch-major.
template <typename Array>
void check_out_shape(const Array& out, const BagLayout& layout, int64_t bags, int64_t dim, const char* op,
                     const char* name) {
  if (bags < 0) throw std::invalid_argument(std::string(op) + ": offsets must hold at least one entry");
  const int64_t rows = layout.runs ? layout.per_run : bags, cols = layout.runs ? layout.runs * dim : dim;
  if (static_cast<int64_t>(out.shape(0)) != rows || static_cast<int64_t>(out.shape(1)) != cols)
    throw std::invalid_argument(std::string(op) + ": " + name + " must be " + std::to_string(rows) + " x " +
                                std::to_string(cols) + ", got " + std::to_string(out.shape(0)) + " x " +
                                std::to_string(out.shape(1)));
}

}  // namespace recis::bind
