// Host launchers of the CUDA kernels (cpp/src/*/*.cu, built with RECIS_WITH_CUDA). Pointers are
// device memory. Every launch goes to `stream`, the caller's current CUDA stream (a cudaStream_t
// passed as void*: PyTorch's, from torch.cuda.current_stream()), and none synchronizes with the
// host; a failed launch throws std::runtime_error naming the kernel.
#pragma once

#include <cstdint>

#include "recis/device_map.h"

namespace recis::gpu {

// ID map: each key's value or -1 (map_find); distinct absent keys put in (map_claim).
void map_find(const MapView& m, const int64_t* ids, const int64_t* tags, int64_t n, int64_t* out, void* stream);
void map_claim(const MapView& m, const int64_t* ids, const int64_t* tags, const int64_t* values, int64_t n,
               void* stream);

// De-duplication of rows in [-1, capacity) (-1 ranks last): dedup_mark sets each row's bit in
// `bits` (capacity / 32 + 1 words, zeroed by the caller) and writes each word's bit count to
// `counts`; after the caller's exclusive prefix sum of the counts (`before`, int64), dedup_rank
// writes each key's index into the distinct rows (`inverse`) and the distinct rows in ascending
// order, -1 last (`unique`, sized by the caller from the counts' total).
void dedup_mark(const int64_t* rows, int64_t n, int64_t capacity, uint32_t* bits, int32_t* counts, void* stream);
void dedup_rank(const int64_t* rows, int64_t n, int64_t capacity, const uint32_t* bits, const int64_t* before,
                int64_t* inverse, int64_t* unique, void* stream);

// Pooling over a table's storage (dim floats a row): bag b of out is scales[b] (1 when null) times
// the sum over keys j in [offsets[b], offsets[b + 1]) of weights[j] (1 when null) times row
// rows[index[j]] (-1: zeros). A warp per bag, its lanes over the row.
void pool_forward(const float* storage, int64_t dim, const int64_t* rows, const int64_t* index, const int64_t* offsets,
                  int64_t bags, const float* weights, const float* scales, float* out, void* stream);
// Its gradient onto the unique rows: grad_rows[index[j]] += scales[b] * weights[j] * grad_out[b]
// (grad_rows zeroed by the caller; float atomics, so sums may associate differently run to run).
void pool_backward(const float* grad_out, int64_t dim, const int64_t* index, const int64_t* offsets, int64_t bags,
                   const float* weights, const float* scales, float* grad_rows, void* stream);

// One sparse optimizer step over distinct rows (-1 skipped), the formulas of
// cpp/src/optim/sparse_optim.cc; step constants as the core computes them.
enum class UpdateKind : int { kSgd, kAdagrad, kRowWiseAdagrad, kAdam, kAdamTF, kFtrl };
struct Update {
  UpdateKind kind;
  float lr, beta1, beta2, eps, weight_decay, l1, l2, ftrl_beta, grad_scale;
  bool decoupled;
  float step_size, sqrt_bias2, decay;  // as RowUpdater: the kind's step size, Adam's sqrt(1 - b2^t), 1 - lr wd
};
void sparse_update(const Update& u, float* embeddings, float* slot0, float* slot1, int64_t dim, const int64_t* rows,
                   int64_t n, const float* grad, void* stream);

// Features: strings in Arrow layout (n + 1 int64 offsets) hashed (farm when !murmur), then mod
// buckets (0: all 64 bits); bucketize of float64 values against sorted float64 boundaries; mod.
void hash_strings(const int64_t* offsets, int64_t n, const uint8_t* data, bool murmur, uint64_t seed, int64_t buckets,
                  int64_t* out, void* stream);
void bucketize(const double* values, int64_t n, const double* boundaries, int64_t num_boundaries, int64_t* out,
               void* stream);
void mod(const int64_t* ids, int64_t n, int64_t modulus, int64_t* out, void* stream);

// A feature cross of k <= kMaxCrossInputs flat ID columns with the same rows: position p of row r
// (out_offsets, the exclusive scan of the product of the rows' lengths, read by the caller) is the
// p-th combination, last input fastest, hashed as the host's cross (murmur3 of the k IDs, seeded,
// mod buckets when > 0); weights[p] (when not null) the product of the present inputs' weights,
// first input first. A thread per output position decodes its digits.
constexpr int kMaxCrossInputs = 16;
struct CrossInputs {
  int k;
  const int64_t* offsets[kMaxCrossInputs];
  const int64_t* values[kMaxCrossInputs];
  const float* weights[kMaxCrossInputs];  // null: no weights for that input
};
void cross(const CrossInputs& in, const int64_t* out_offsets, int64_t rows, int64_t total, uint64_t seed,
           int64_t buckets, int64_t* values, float* weights, void* stream);

}  // namespace recis::gpu
