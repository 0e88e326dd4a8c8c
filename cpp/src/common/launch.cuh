// Launch helpers shared by the .cu files: grid sizes for grid-stride loops, the caller's stream,
// and launch errors turned into exceptions naming the kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace recis::gpu {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

inline cudaStream_t stream_of(void* s) { return static_cast<cudaStream_t>(s); }

// Blocks for n items of `per_block` each, at least one, at most 2^20 (the loops stride the rest).
inline unsigned blocks_for(int64_t n, int64_t per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (int64_t{1} << 20) ? (int64_t{1} << 20) : b));
}

inline void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(kernel) + ": " + cudaGetErrorString(e));
}

}  // namespace recis::gpu
