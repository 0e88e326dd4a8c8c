// Bucketize and Mod. Validation runs first (serially, it is cheap next to the work), then the
// transform runs on the thread pool.
#include "recis/transforms.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "recis/parallel.h"

namespace recis {

void bucketize(const double* values, int64_t n, const double* boundaries, int64_t num_boundaries, int64_t* out) {
  for (int64_t i = 0; i < num_boundaries; ++i) {
    if (!std::isfinite(boundaries[i]))
      throw std::invalid_argument("bucketize: boundaries[" + std::to_string(i) + "] is not finite");
    if (i > 0 && !(boundaries[i - 1] < boundaries[i]))
      throw std::invalid_argument("bucketize: boundaries must be strictly increasing, got boundaries[" +
                                  std::to_string(i - 1) + "]=" + std::to_string(boundaries[i - 1]) + " >= boundaries[" +
                                  std::to_string(i) + "]=" + std::to_string(boundaries[i]));
  }
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(values[i]))
      throw std::invalid_argument("bucketize: value at position " + std::to_string(i) + " is NaN (fill missing values first)");
  const double* end = boundaries + num_boundaries;
  parallel_for(n, 16384, [&](int64_t begin, int64_t stop) {
    for (int64_t i = begin; i < stop; ++i) out[i] = std::upper_bound(boundaries, end, values[i]) - boundaries;
  });
}

void mod_ids(const int64_t* ids, int64_t n, int64_t m, int64_t* out) {
  if (m <= 0) throw std::invalid_argument("mod: the modulus must be > 0, got " + std::to_string(m));
  parallel_for(n, 65536, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = ids[i] % m;
      out[i] = r < 0 ? r + m : r;
    }
  });
}

}  // namespace recis
