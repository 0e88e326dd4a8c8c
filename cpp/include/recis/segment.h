// Per-row kernels over CSR segments: row b's events are [offsets[b], offsets[b+1]). Attention
// pooling of a scores (N) and values (N x dim) pair, and broadcasting a per-row value onto the
// events with its gradient (a per-row sum). One pass per row, no per-event index arrays: what
// target attention over ragged histories needs around its scorer.
#pragma once

#include <cstdint>

#include "recis/ragged.h"

namespace recis {

// w_i = softmax of the row's scores (their maximum subtracted first), out[b] = sum_i w_i values[i];
// rows without events pool to zeros. Writes weights (N) and out (rows x dim). Validates offsets.
void segment_softmax_pool(const float* scores, const float* values, const Offsets& offsets, int64_t dim, float* weights,
                          float* out);

// Gradients of segment_softmax_pool, given its weights and the gradient of out: with
// g_i = grad_out[b] . values[i], grad_scores[i] = w_i (g_i - sum_j w_j g_j) and
// grad_values[i] = w_i grad_out[b].
void segment_softmax_pool_backward(const float* grad_out, const float* weights, const float* values,
                                   const Offsets& offsets, int64_t dim, float* grad_scores, float* grad_values);

// out[i] = x[b] for every event i of row b: each row's value (value_bytes bytes) repeated over its
// events (rows x value_bytes in, num_values x value_bytes out). Validates offsets.
void segment_expand(const uint8_t* x, int64_t value_bytes, const Offsets& offsets, uint8_t* out);

// out[b] = sum of values[i] over row b's events (rows x dim out; empty rows 0), summed in double.
// The gradient of segment_expand. Validates offsets.
void segment_sum(const float* values, const Offsets& offsets, int64_t dim, float* out);

}  // namespace recis
