// Pooling kernels. Forward is parallel over bags; backward first groups value positions by
// unique row (a counting sort, O(n)), then is parallel over unique rows, so no atomics are needed
// and the summation order is fixed.
#include "recis/pooling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "recis/huge_pages.h"
#include "recis/parallel.h"
#include "recis/ragged.h"

namespace recis {
namespace {

float bag_scale(const int64_t* offsets, int64_t b, const float* weights, Combiner c) {
  if (c == Combiner::kSum) return 1.0f;
  double acc = 0.0;
  for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
    const double w = weights ? weights[j] : 1.0;
    acc += c == Combiner::kMean ? w : w * w;
  }
  if (acc == 0.0) return 0.0f;  // empty bag (or all-zero weights): zeros, never a division by zero
  return static_cast<float>(c == Combiner::kMean ? 1.0 / acc : 1.0 / std::sqrt(acc));
}

}  // namespace

void check_pooling_inputs(const char* op, const int64_t* inverse, int64_t n, int64_t num_unique,
                          const int64_t* offsets, int64_t bags) {
  validate_offsets(Offsets{offsets, bags, n}, op);
  for (int64_t j = 0; j < n; ++j)
    if (inverse[j] < 0 || inverse[j] >= num_unique)
      throw std::invalid_argument(std::string(op) + ": inverse[" + std::to_string(j) + "]=" + std::to_string(inverse[j]) +
                                  " is out of range for " + std::to_string(num_unique) + " unique rows");
}

namespace {

// kDim > 0 fixes the width at compile time (fully unrolled, vectorized); 0 reads it at run time.
// row_of(u) gives the values of unique row u.
template <int kDim, typename RowOf>
void pool_bags(RowOf row_of, int64_t dim_rt, const int64_t* inverse, const int64_t* offsets, const float* weights,
               Combiner combiner, float* out, int64_t begin, int64_t end) {
  constexpr int64_t kAhead = 16;  // rows in flight; prefetch crosses bag boundaries
  const int64_t dim = kDim > 0 ? kDim : dim_rt;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
  const int64_t last = offsets[end];
  for (int64_t b = begin; b < end; ++b) {
    float* __restrict o = out + b * dim;
    std::memset(o, 0, row_bytes);
    for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      if (j + kAhead < last) prefetch_lines(row_of(inverse[j + kAhead]), row_bytes);
      const float* __restrict e = row_of(inverse[j]);
      const float w = weights ? weights[j] : 1.0f;
      for (int64_t d = 0; d < dim; ++d) o[d] += w * e[d];
    }
    const float s = bag_scale(offsets, b, weights, combiner);
    if (s != 1.0f)
      for (int64_t d = 0; d < dim; ++d) o[d] *= s;
  }
}

template <typename RowOf>
void pool_all(RowOf row_of, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
              const float* weights, Combiner combiner, float* out) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, dim));
  parallel_for(bags, grain, [&](int64_t begin, int64_t end) {
    switch (dim) {
      case 8: return pool_bags<8>(row_of, dim, inverse, offsets, weights, combiner, out, begin, end);
      case 16: return pool_bags<16>(row_of, dim, inverse, offsets, weights, combiner, out, begin, end);
      case 32: return pool_bags<32>(row_of, dim, inverse, offsets, weights, combiner, out, begin, end);
      case 64: return pool_bags<64>(row_of, dim, inverse, offsets, weights, combiner, out, begin, end);
      case 128: return pool_bags<128>(row_of, dim, inverse, offsets, weights, combiner, out, begin, end);
      default: return pool_bags<0>(row_of, dim, inverse, offsets, weights, combiner, out, begin, end);
    }
  });
}

}  // namespace

void pooled_forward(const float* emb, int64_t /*num_unique*/, int64_t dim, const int64_t* inverse,
                    const int64_t* offsets, int64_t bags, const float* weights, Combiner combiner, float* out) {
  pool_all([emb, dim](int64_t u) { return emb + u * dim; }, dim, inverse, offsets, bags, weights, combiner, out);
}

void pooled_forward_rows(const TableRows& rows, int64_t dim, const int64_t* inverse, const int64_t* offsets,
                         int64_t bags, const float* weights, Combiner combiner, float* out) {
  pool_all(rows, dim, inverse, offsets, bags, weights, combiner, out);
}

void pooled_backward(const float* grad_out, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
                     const float* weights, Combiner combiner, int64_t num_unique, float* grad_emb) {
  const int64_t n = offsets[bags];
  // Per value: its bag and its factor scale_bag * w_j.
  std::vector<int64_t> bag_of(static_cast<size_t>(n));
  std::vector<float> factor(static_cast<size_t>(n));
  parallel_for(bags, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float s = bag_scale(offsets, b, weights, combiner);
      for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
        bag_of[static_cast<size_t>(j)] = b;
        factor[static_cast<size_t>(j)] = s * (weights ? weights[j] : 1.0f);
      }
    }
  });
  // Counting sort of value positions by unique row: order[start[u] .. start[u + 1]).
  std::vector<int64_t> start(static_cast<size_t>(num_unique) + 1, 0);
  for (int64_t j = 0; j < n; ++j) ++start[static_cast<size_t>(inverse[j]) + 1];
  for (int64_t u = 0; u < num_unique; ++u) start[static_cast<size_t>(u) + 1] += start[static_cast<size_t>(u)];
  std::vector<int64_t> order(static_cast<size_t>(n));
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t j = 0; j < n; ++j) order[static_cast<size_t>(fill[static_cast<size_t>(inverse[j])]++)] = j;
  }
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, dim));
  parallel_for(num_unique, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      float* g = grad_emb + u * dim;
      std::memset(g, 0, static_cast<size_t>(dim) * sizeof(float));
      for (int64_t k = start[static_cast<size_t>(u)]; k < start[static_cast<size_t>(u) + 1]; ++k) {
        const int64_t j = order[static_cast<size_t>(k)];
        const float f = factor[static_cast<size_t>(j)];
        const float* go = grad_out + bag_of[static_cast<size_t>(j)] * dim;
        for (int64_t d = 0; d < dim; ++d) g[d] += f * go[d];
      }
    }
  });
}

}  // namespace recis
