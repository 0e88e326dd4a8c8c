// De-duplication of a batch's rows on the device with a bitmap, as the host table ranks rows:
// mark each row's bit, count the bits of each 32-row word, and (after the caller's prefix sum of
// those counts) give each key the rank of its row among the marked ones and list the marked rows
// in order. Rows are in [-1, capacity); -1 takes the bit after the last row, so it ranks last.
#include "../common/launch.cuh"
#include "recis/gpu.h"

namespace recis::gpu {
namespace {

__device__ int64_t bit_of(int64_t row, int64_t capacity) { return row < 0 ? capacity : row; }

__global__ void mark_kernel(const int64_t* rows, int64_t n, int64_t capacity, uint32_t* bits) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = bit_of(rows[i], capacity);
    atomicOr(bits + b / 32, 1u << (b % 32));
  }
}

__global__ void count_kernel(const uint32_t* bits, int64_t words, int32_t* counts) {
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < words; w += int64_t{gridDim.x} * blockDim.x)
    counts[w] = __popc(bits[w]);
}

__global__ void rank_kernel(const int64_t* rows, int64_t n, int64_t capacity, const uint32_t* bits,
                            const int64_t* before, int64_t* inverse) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = bit_of(rows[i], capacity);
    const uint32_t below = (1u << (b % 32)) - 1u;
    inverse[i] = before[b / 32] + __popc(bits[b / 32] & below);
  }
}

__global__ void list_kernel(const uint32_t* bits, int64_t words, int64_t capacity, const int64_t* before,
                            int64_t* unique) {
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < words; w += int64_t{gridDim.x} * blockDim.x) {
    int64_t at = before[w];
    for (uint32_t word = bits[w]; word != 0; word &= word - 1) {
      const int64_t b = w * 32 + __ffs(static_cast<int>(word)) - 1;
      unique[at++] = b == capacity ? -1 : b;
    }
  }
}

int64_t words_for(int64_t capacity) { return capacity / 32 + 1; }  // the rows' bits and the -1 bit

}  // namespace

void dedup_mark(const int64_t* rows, int64_t n, int64_t capacity, uint32_t* bits, int32_t* counts, void* stream) {
  const int64_t words = words_for(capacity);
  if (n > 0) {
    mark_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(rows, n, capacity, bits);
    check_launch("dedup_mark");
  }
  count_kernel<<<blocks_for(words, kThreads), kThreads, 0, stream_of(stream)>>>(bits, words, counts);
  check_launch("dedup_mark");
}

void dedup_rank(const int64_t* rows, int64_t n, int64_t capacity, const uint32_t* bits, const int64_t* before,
                int64_t* inverse, int64_t* unique, void* stream) {
  const int64_t words = words_for(capacity);
  if (n > 0) {
    rank_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(rows, n, capacity, bits, before, inverse);
    check_launch("dedup_rank");
  }
  list_kernel<<<blocks_for(words, kThreads), kThreads, 0, stream_of(stream)>>>(bits, words, capacity, before, unique);
  check_launch("dedup_rank");
}

}  // namespace recis::gpu
