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
  for (size_t i = 0; i < bags.size(); ++i) runs.push_back(BagRun{bags[i], parse_combiner(combiners[i], op)});
  return runs;
}

}  // namespace recis::bind
