// Pooled embedding kernels over a batch's unique rows: forward pools rows[inverse[j]] per bag,
// backward reduces the output gradient onto the unique rows (never a [table rows, D] gradient).
#pragma once

#include <cstdint>

namespace recis {

enum class Combiner { kSum, kMean, kSqrtn };

// out[b] = scale_b * sum_{j in bag b} w_j * emb[inverse[j]], with w_j = 1 when weights is null,
// scale_b = 1 (sum), 1 / sum_j w_j (mean), 1 / sqrt(sum_j w_j^2) (sqrtn); empty bags give zeros.
// emb: U x dim; inverse: n values in [0, U); offsets: bags + 1; out: bags x dim.
void pooled_forward(const float* emb, int64_t num_unique, int64_t dim, const int64_t* inverse, const int64_t* offsets,
                    int64_t bags, const float* weights, Combiner combiner, float* out);

// Where unique row u lives in a table: rows[u] is a table row (-1: the zero row), found in
// blocks[row >> shift] at (row & mask) * dim.
struct TableRows {
  const float* const* blocks;
  int shift;
  int64_t mask;
  int64_t dim;
  const int64_t* rows;
  const float* zero;
  const float* operator()(int64_t u) const {
    const int64_t r = rows[u];
    return r < 0 ? zero : blocks[r >> shift] + (r & mask) * dim;
  }
};

// Same as pooled_forward, reading the unique rows straight from a table's blocks (no copy).
void pooled_forward_rows(const TableRows& rows, int64_t dim, const int64_t* inverse, const int64_t* offsets,
                         int64_t bags, const float* weights, Combiner combiner, float* out);

// grad_emb[u] = sum over j with inverse[j] == u of scale_{bag(j)} * w_j * grad_out[bag(j)], summed in
// increasing j (deterministic). grad_emb: U x dim, fully written.
void pooled_backward(const float* grad_out, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
                     const float* weights, Combiner combiner, int64_t num_unique, float* grad_emb);

// Checks inverse[j] in [0, U) and offsets (0, non-decreasing, last == n); throws naming `op`.
void check_pooling_inputs(const char* op, const int64_t* inverse, int64_t n, int64_t num_unique,
                          const int64_t* offsets, int64_t bags);

}  // namespace recis
