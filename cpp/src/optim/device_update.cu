// Sparse optimizer steps on the device, a warp per row with its lanes over the row: the formulas
// of sparse_optim.cc in the same operation order (row-wise Adagrad's mean of g^2 is a warp sum).
#include <cmath>

#include "../common/launch.cuh"
#include "recis/gpu.h"

namespace recis::gpu {
namespace {

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void update_kernel(Update u, float* emb, float* slot0, float* slot1, int64_t dim, const int64_t* rows,
                              int64_t n, const float* grad) {
  const int lane = threadIdx.x % 32;
  const float l2 = u.decoupled ? 0.0f : u.weight_decay;
  for (int64_t i = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32; i < n;
       i += int64_t{gridDim.x} * kWarpsPerBlock) {
    const int64_t r = rows[i];
    if (r < 0) continue;
    float* w = emb + r * dim;
    const float* gi = grad + i * dim;
    if (u.kind == UpdateKind::kRowWiseAdagrad) {
      float sq = 0.0f;
      for (int64_t d = lane; d < dim; d += 32) {
        const float g = gi[d] * u.grad_scale + l2 * w[d];
        sq += g * g;
      }
      sq = warp_sum(sq);
      float* s = slot0 + r;
      const float sum = *s + sq / static_cast<float>(dim);  // every lane reads the old value first
      __syncwarp();
      if (lane == 0) *s = sum;
      const float step = u.lr / (sqrtf(sum) + u.eps);
      for (int64_t d = lane; d < dim; d += 32) w[d] -= step * (gi[d] * u.grad_scale + l2 * w[d]);
      continue;
    }
    for (int64_t d = lane; d < dim; d += 32) {
      const float g = gi[d] * u.grad_scale + (u.kind == UpdateKind::kFtrl ? 0.0f : l2 * w[d]);
      switch (u.kind) {
        case UpdateKind::kSgd: w[d] -= u.lr * g; break;
        case UpdateKind::kAdagrad: {
          float& s = slot0[r * dim + d];
          s += g * g;
          w[d] -= u.step_size * (g / (sqrtf(s) + u.eps));
          break;
        }
        case UpdateKind::kAdam: {
          float &m = slot0[r * dim + d], &v = slot1[r * dim + d];
          m = m + (1.0f - u.beta1) * (g - m);
          v = v * u.beta2 + (1.0f - u.beta2) * g * g;
          w[d] = w[d] * u.decay - u.step_size * (m / (sqrtf(v) * (1.0f / u.sqrt_bias2) + u.eps));
          break;
        }
        case UpdateKind::kAdamTF: {
          float &m = slot0[r * dim + d], &v = slot1[r * dim + d];
          m = m + (g - m) * (1.0f - u.beta1);
          v = v + (g * g - v) * (1.0f - u.beta2);
          w[d] = w[d] * u.decay - u.step_size * m / (sqrtf(v) + u.eps);
          break;
        }
        case UpdateKind::kFtrl: {
          float &z = slot0[r * dim + d], &nn = slot1[r * dim + d];
          const float n_new = nn + g * g;
          const float sigma = (sqrtf(n_new) - sqrtf(nn)) / u.lr;
          z = z + g - sigma * w[d];
          nn = n_new;
          const float shrunk = z - copysignf(u.l1, z);
          w[d] = fabsf(z) <= u.l1 ? 0.0f : -shrunk / ((u.ftrl_beta + sqrtf(n_new)) / u.lr + u.l2);
          break;
        }
        default: break;
      }
    }
  }
}

}  // namespace

void sparse_update(const Update& u, float* embeddings, float* slot0, float* slot1, int64_t dim, const int64_t* rows,
                   int64_t n, const float* grad, void* stream) {
  if (n == 0) return;
  update_kernel<<<blocks_for(n, kWarpsPerBlock), kThreads, 0, stream_of(stream)>>>(u, embeddings, slot0, slot1, dim,
                                                                                   rows, n, grad);
  check_launch("sparse_update");
}

}  // namespace recis::gpu
