// Pooling on the device, a warp per bag with its lanes over the row: forward reads the table's
// storage in place; backward adds each key's share of the output gradient to its unique row.
#include "../common/launch.cuh"
#include "recis/gpu.h"

namespace recis::gpu {
namespace {

__global__ void forward_kernel(const float* storage, int64_t dim, const int64_t* rows, const int64_t* index,
                               const int64_t* offsets, int64_t bags, const float* weights, const float* scales,
                               float* out) {
  const int lane = threadIdx.x % 32;
  for (int64_t b = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32; b < bags;
       b += int64_t{gridDim.x} * kWarpsPerBlock) {
    const float scale = scales ? scales[b] : 1.0f;
    for (int64_t d = lane; d < dim; d += 32) {
      float sum = 0.0f;
      for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
        const int64_t r = rows[index[j]];
        if (r >= 0) sum += (weights ? weights[j] : 1.0f) * storage[r * dim + d];
      }
      out[b * dim + d] = scale * sum;
    }
  }
}

__global__ void backward_kernel(const float* grad_out, int64_t dim, const int64_t* index, const int64_t* offsets,
                                int64_t bags, const float* weights, const float* scales, float* grad_rows) {
  const int lane = threadIdx.x % 32;
  for (int64_t b = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32; b < bags;
       b += int64_t{gridDim.x} * kWarpsPerBlock) {
    const float scale = scales ? scales[b] : 1.0f;
    for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      const float coef = scale * (weights ? weights[j] : 1.0f);
      float* row = grad_rows + index[j] * dim;
      for (int64_t d = lane; d < dim; d += 32) atomicAdd(row + d, coef * grad_out[b * dim + d]);
    }
  }
}

}  // namespace

void pool_forward(const float* storage, int64_t dim, const int64_t* rows, const int64_t* index, const int64_t* offsets,
                  int64_t bags, const float* weights, const float* scales, float* out, void* stream) {
  if (bags == 0) return;
  forward_kernel<<<blocks_for(bags, kWarpsPerBlock), kThreads, 0, stream_of(stream)>>>(
      storage, dim, rows, index, offsets, bags, weights, scales, out);
  check_launch("pool_forward");
}

void pool_backward(const float* grad_out, int64_t dim, const int64_t* index, const int64_t* offsets, int64_t bags,
                   const float* weights, const float* scales, float* grad_rows, void* stream) {
  if (bags == 0) return;
  backward_kernel<<<blocks_for(bags, kWarpsPerBlock), kThreads, 0, stream_of(stream)>>>(
      grad_out, dim, index, offsets, bags, weights, scales, grad_rows);
  check_launch("pool_backward");
}

}  // namespace recis::gpu
