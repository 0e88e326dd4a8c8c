// Per-row kernels: each row's events are contiguous, so a row is one independent task (for the
// softmax pooling: max, exponentials and their sum, weighted sum of values), and rows run in
// parallel.
#include "recis/segment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "recis/parallel.h"

namespace recis {
namespace {

// Rows per task for values of value_bytes bytes each.
int64_t grain_of(const Offsets& o, int64_t value_bytes) { return row_grain(o.num_rows, o.num_values * value_bytes); }

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

}  // namespace

void segment_softmax_pool(const float* scores, const float* values, const Offsets& o, int64_t dim, float* weights,
                          float* out) {
  validate_offsets(o, "segment_softmax_pool");
  parallel_for(o.num_rows, grain_of(o, dim * static_cast<int64_t>(sizeof(float))), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = o.data[b], last = o.data[b + 1];
      float* y = out + b * dim;
      std::fill(y, y + dim, 0.f);
      if (first == last) continue;
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t i = first; i < last; ++i) top = std::max(top, scores[i]);
      float total = 0.f;
      for (int64_t i = first; i < last; ++i) total += weights[i] = std::exp(scores[i] - top);
      for (int64_t i = first; i < last; ++i) {
        const float w = weights[i] /= total;
        const float* v = values + i * dim;
        for (int64_t d = 0; d < dim; ++d) y[d] += w * v[d];
      }
    }
  });
}

void segment_softmax_pool_backward(const float* grad_out, const float* weights, const float* values, const Offsets& o,
                                   int64_t dim, float* grad_scores, float* grad_values) {
  validate_offsets(o, "segment_softmax_pool_backward");
  parallel_for(o.num_rows, grain_of(o, dim * static_cast<int64_t>(sizeof(float))), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* g = grad_out + b * dim;
      const int64_t first = o.data[b], last = o.data[b + 1];
      // sum_j w_j g_j from the same g_i the scores' gradients use, so those sum to zero per row
      // (as they do exactly: the softmax is shift-invariant) up to one rounding
      double pooled = 0.0;
      for (int64_t i = first; i < last; ++i) {
        grad_scores[i] = dot(g, values + i * dim, dim);
        pooled += static_cast<double>(weights[i]) * grad_scores[i];
      }
      for (int64_t i = first; i < last; ++i) {
        const float w = weights[i];
        grad_scores[i] = static_cast<float>(w * (grad_scores[i] - pooled));
        float* gv = grad_values + i * dim;
        for (int64_t d = 0; d < dim; ++d) gv[d] = w * g[d];
      }
    }
  });
}

void segment_expand(const uint8_t* x, int64_t value_bytes, const Offsets& o, uint8_t* out) {
  validate_offsets(o, "segment_expand");
  parallel_for(o.num_rows, grain_of(o, value_bytes), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t* src = x + b * value_bytes;
      for (int64_t i = o.data[b]; i < o.data[b + 1]; ++i)
        std::memcpy(out + i * value_bytes, src, static_cast<size_t>(value_bytes));
    }
  });
}

void segment_sum(const float* values, const Offsets& o, int64_t dim, float* out) {
  validate_offsets(o, "segment_sum");
  parallel_for(o.num_rows, grain_of(o, dim * static_cast<int64_t>(sizeof(float))), [&](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(dim));
    for (int64_t b = begin; b < end; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t i = o.data[b]; i < o.data[b + 1]; ++i) {
        const float* v = values + i * dim;
        for (int64_t d = 0; d < dim; ++d) acc[d] += v[d];
      }
      for (int64_t d = 0; d < dim; ++d) out[b * dim + d] = static_cast<float>(acc[d]);
    }
  });
}

}  // namespace recis
