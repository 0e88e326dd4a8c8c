// How a new table row is filled: a pure function of (seed, ID), never of insertion order or
// threads, so tables built from the same batches hold the same rows however they were built.
#pragma once

#include <cstdint>

namespace recis {

enum class InitKind { kConstant, kUniform, kNormal, kTruncatedNormal, kXavierUniform };

// Each kind reads its own fields: constant `value`; uniform [low, high); normal `mean`, `stddev`;
// truncated normal the same, redrawn beyond 2 stddev; xavier uniform none: [-b, b) with
// b = sqrt(6 / (1 + dim)), a row seen as a (1, dim) matrix.
struct Initializer {
  InitKind kind = InitKind::kNormal;
  double value = 0.0;
  double low = 0.0, high = 0.0;
  double mean = 0.0, stddev = 0.01;
};

// Fills out[0..dim) for one ID.
void init_row(const Initializer& init, uint64_t seed, int64_t id, float* out, int64_t dim);

}  // namespace recis
