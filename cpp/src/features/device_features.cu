// Feature ops on the device, a value per thread: string hashing over Arrow buffers (the host's
// hash algorithms, recis/hash_algo.h), bucketize (an upper bound per value), mod and crosses.
#include "../common/launch.cuh"
#include "recis/gpu.h"
#include "recis/hash_algo.h"

namespace recis::gpu {
namespace {

__global__ void hash_kernel(const int64_t* offsets, int64_t n, const uint8_t* data, bool murmur, uint64_t seed,
                            int64_t buckets, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint8_t* s = data + offsets[i];
    const auto len = static_cast<size_t>(offsets[i + 1] - offsets[i]);
    uint64_t h = murmur ? hash_algo::murmur3_x64_64(s, len, seed) : hash_algo::farmhash_fingerprint64(s, len);
    if (buckets > 0) h %= static_cast<uint64_t>(buckets);
    out[i] = static_cast<int64_t>(h);
  }
}

__global__ void bucketize_kernel(const double* values, int64_t n, const double* boundaries, int64_t nb, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t lo = 0, hi = nb;  // the first boundary > value: the count of those <= it
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (boundaries[mid] <= values[i])
        lo = mid + 1;
      else
        hi = mid;
    }
    out[i] = lo;
  }
}

__global__ void mod_kernel(const int64_t* ids, int64_t n, int64_t modulus, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = ids[i] % modulus;
    out[i] = r < 0 ? r + modulus : r;
  }
}

__global__ void cross_kernel(CrossInputs in, const int64_t* out_offsets, int64_t rows, int64_t total, uint64_t seed,
                             int64_t buckets, int64_t* values, float* weights) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < total; p += int64_t{gridDim.x} * blockDim.x) {
    int64_t lo = 0, hi = rows;  // the row: the first r with out_offsets[r + 1] > p
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (out_offsets[mid + 1] <= p)
        lo = mid + 1;
      else
        hi = mid;
    }
    const int64_t r = lo;
    int64_t q = p - out_offsets[r];
    int64_t ids[kMaxCrossInputs];
    int64_t at[kMaxCrossInputs];
    for (int f = in.k - 1; f >= 0; --f) {  // mixed-radix digits, the last input fastest
      const int64_t first = in.offsets[f][r], len = in.offsets[f][r + 1] - first;
      at[f] = first + q % len;
      q /= len;
      ids[f] = in.values[f][at[f]];
    }
    uint64_t h = hash_algo::murmur3_x64_64(reinterpret_cast<const uint8_t*>(ids), 8 * static_cast<size_t>(in.k), seed);
    if (buckets > 0) h %= static_cast<uint64_t>(buckets);
    values[p] = static_cast<int64_t>(h);
    if (weights) {
      float w = 1.0f;
      for (int f = 0; f < in.k; ++f)
        if (in.weights[f]) w *= in.weights[f][at[f]];
      weights[p] = w;
    }
  }
}

}  // namespace

void hash_strings(const int64_t* offsets, int64_t n, const uint8_t* data, bool murmur, uint64_t seed, int64_t buckets,
                  int64_t* out, void* stream) {
  if (n == 0) return;
  hash_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(offsets, n, data, murmur, seed, buckets,
                                                                           out);
  check_launch("hash_strings");
}

void bucketize(const double* values, int64_t n, const double* boundaries, int64_t num_boundaries, int64_t* out,
               void* stream) {
  if (n == 0) return;
  bucketize_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(values, n, boundaries, num_boundaries,
                                                                                out);
  check_launch("bucketize");
}

void mod(const int64_t* ids, int64_t n, int64_t modulus, int64_t* out, void* stream) {
  if (n == 0) return;
  mod_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(ids, n, modulus, out);
  check_launch("mod");
}

void cross(const CrossInputs& in, const int64_t* out_offsets, int64_t rows, int64_t total, uint64_t seed,
           int64_t buckets, int64_t* values, float* weights, void* stream) {
  if (total == 0) return;
  if (in.k < 2 || in.k > kMaxCrossInputs)
    throw std::invalid_argument("cross: needs 2 to " + std::to_string(kMaxCrossInputs) + " inputs, got " +
                                std::to_string(in.k));
  cross_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream_of(stream)>>>(in, out_offsets, rows, total, seed,
                                                                                buckets, values, weights);
  check_launch("cross");
}

}  // namespace recis::gpu
