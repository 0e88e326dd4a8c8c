// The device table's ID map: a key per thread, probing (map_find) or claiming (map_claim) with
// the bodies of recis/device_map.h.
#include "../common/launch.cuh"
#include "recis/gpu.h"

namespace recis::gpu {
namespace {

__global__ void find_kernel(MapView m, const int64_t* ids, const int64_t* tags, int64_t n, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = map_find(m, ids[i], tags[i]);
}

__global__ void claim_kernel(MapView m, const int64_t* ids, const int64_t* tags, const int64_t* values, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    map_claim(m, ids[i], tags[i], values[i]);
}

}  // namespace

void map_find(const MapView& m, const int64_t* ids, const int64_t* tags, int64_t n, int64_t* out, void* stream) {
  if (n == 0) return;
  find_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(m, ids, tags, n, out);
  check_launch("map_find");
}

void map_claim(const MapView& m, const int64_t* ids, const int64_t* tags, const int64_t* values, int64_t n,
               void* stream) {
  if (n == 0) return;
  claim_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(stream)>>>(m, ids, tags, values, n);
  check_launch("map_claim");
}

}  // namespace recis::gpu
