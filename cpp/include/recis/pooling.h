// Pooled embedding kernels over a batch's unique rows: forward pools rows[inverse[j]] per bag,
// backward reduces the output gradient onto the unique rows (never a [table rows, D] gradient).
// One call can cover several features: their bags are concatenated, each feature's run of bags
// with its own combiner.
#pragma once

#include <cstdint>
#include <vector>

#include "recis/row_type.h"

namespace recis {

enum class Combiner { kSum, kMean, kSqrtn };

// A run of `bags` consecutive bags pooled with `combiner`.
struct BagRun {
  int64_t bags;
  Combiner combiner;
};

// Where bag b's output row (and its gradient) lives. Feature-major (the default): row b of a
// (bags, dim) array. Batch-major, for `runs` runs of `per_run` bags each: bag i of run t at row
// i * runs + t, i.e. a (per_run, runs * dim) array with the runs side by side, as a model
// concatenates pooled features.
struct BagLayout {
  int64_t runs = 0;  // 0: feature-major
  int64_t per_run = 0;
  int64_t first = 0;  // the call's bag 0 is bag `first` of the layout (a piece of a larger call)
  int64_t row(int64_t b) const {
    b += first;
    return runs ? (b % per_run) * runs + b / per_run : b;
  }
};

// Per-bag scale: 1 (sum), 1 / sum_j w_j (mean), 1 / sqrt(sum_j w_j^2) (sqrtn), 0 for empty bags
// (w_j = 1 when weights is null). Empty when every run is "sum" (all scales 1). The runs must
// cover exactly `bags` bags.
std::vector<float> bag_scales(const int64_t* offsets, int64_t bags, const float* weights,
                              const std::vector<BagRun>& runs, const char* op);

// One bag's scale under `combiner`: 1 (sum), 1 / sum_j w_j (mean) or 1 / sqrt(sum_j w_j^2) (sqrtn)
// over values [begin, end), summed in double; 0 for an empty bag (w_j = 1 when weights is null).
float bag_scale(Combiner combiner, const float* weights, int64_t begin, int64_t end);

// Whether v[begin, end) all lie in [lo, hi): a branch-free min/max, so callers search for the
// offender only on failure.
inline bool all_in_range(const int64_t* v, int64_t begin, int64_t end, int64_t lo, int64_t hi) {
  int64_t mn = lo, mx = lo;
  for (int64_t i = begin; i < end; ++i) {
    mn = v[i] < mn ? v[i] : mn;
    mx = v[i] > mx ? v[i] : mx;
  }
  return begin == end || (mn >= lo && mx < hi);
}

// The kernels below check every inverse[j] in [0, U) as they go (a chunk's values just before
// they are used, so no separate pass reads them) and throw std::invalid_argument naming `op` and
// the first offender; callers validate the offsets (validate_offsets) first. For the forward
// kernels a null `op` skips the check, for an inverse the caller built itself.

// out[b] = scale_b * sum_{j in bag b} w_j * emb[inverse[j]]; scales null: all 1.
// emb: U x dim; inverse: n values in [0, U); offsets: bags + 1; out: bags x dim.
void pooled_forward(const float* emb, int64_t num_unique, int64_t dim, const int64_t* inverse, const int64_t* offsets,
                    int64_t bags, const float* weights, const float* scales, float* out, const BagLayout& layout = {},
                    const char* op = "pooled_forward");

// Where unique row u lives in a table: rows[u] is a table row (-1: the zero row), found in
// blocks[row >> shift] at (row & mask) * dim. T: the stored element type (float, Bf16, F16).
template <typename T>
struct TableRowsOf {
  const T* const* blocks;
  int shift;
  int64_t mask;
  int64_t dim;
  const int64_t* rows;
  const T* zero;
  const T* operator()(int64_t u) const {
    const int64_t r = rows[u];
    return r < 0 ? zero : blocks[r >> shift] + (r & mask) * dim;
  }
  void prefetch_index(int64_t u) const { __builtin_prefetch(rows + u); }  // before operator()(u) reads it
};

// Same as pooled_forward, reading the U unique rows straight from a table's blocks (no copy);
// 16-bit rows are widened to float32 as they are summed.
void pooled_forward_rows(const TableRowsOf<float>& rows, int64_t num_unique, int64_t dim, const int64_t* inverse,
                         const int64_t* offsets, int64_t bags, const float* weights, const float* scales, float* out,
                         const BagLayout& layout = {}, const char* op = "pooled_forward");
void pooled_forward_rows(const TableRowsOf<Bf16>& rows, int64_t num_unique, int64_t dim, const int64_t* inverse,
                         const int64_t* offsets, int64_t bags, const float* weights, const float* scales, float* out,
                         const BagLayout& layout = {}, const char* op = "pooled_forward");
void pooled_forward_rows(const TableRowsOf<F16>& rows, int64_t num_unique, int64_t dim, const int64_t* inverse,
                         const int64_t* offsets, int64_t bags, const float* weights, const float* scales, float* out,
                         const BagLayout& layout = {}, const char* op = "pooled_forward");

// Receives each unique row's reduced gradient from reduce_rows (called in parallel over rows).
class RowSink {
 public:
  virtual ~RowSink() = default;
  // Where row u's gradient is summed (dim floats); `scratch` is a per-thread buffer.
  virtual float* buffer(int64_t /*u*/, float* scratch) const { return scratch; }
  virtual void prefetch(int64_t /*u*/) const {}
  virtual void take(int64_t u, const float* g) const = 0;
};

// For each unique row u: g_u = sum over j with inverse[j] == u of scale_{bag(j)} * w_j *
// grad_out[bag(j)], summed in increasing j (deterministic), handed to sink.take(u, g_u).
void reduce_rows(const float* grad_out, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
                 const float* weights, const float* scales, int64_t num_unique, const RowSink& sink,
                 const BagLayout& layout = {}, const char* op = "pooled_backward");

// reduce_rows into grad_emb (U x dim, fully written).
void pooled_backward(const float* grad_out, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
                     const float* weights, const float* scales, int64_t num_unique, float* grad_emb,
                     const BagLayout& layout = {}, const char* op = "pooled_backward");

}  // namespace recis
