// Feature crosses: per row, the Cartesian product of two or more ID lists, each combination
// hashed to one int64 ID (weights multiply).
#pragma once

#include <cstdint>
#include <vector>

#include "recis/buffer.h"

namespace recis {

// One input of a cross: a CSR column of int64 IDs with optional float32 weights (null: all 1).
struct CrossInput {
  const int64_t* offsets;  // num_rows + 1
  const int64_t* values;   // num_values
  const float* weights;    // num_values or null
  int64_t num_values;
};

// A cross of inputs.size() >= 2 columns with the same number of rows. Row r of the output lists
// the combinations in row-major order (the first input varies slowest); each combination
// (id_1, ..., id_k) becomes the low 64 bits of MurmurHash3 x64-128 of the k IDs' little-endian
// bytes (8k bytes) with `seed`, then the unsigned hash mod buckets when buckets > 0.
struct CrossSpec {
  std::vector<CrossInput> inputs;
  int64_t num_rows;
  uint64_t seed;
  int64_t buckets;
};

struct CrossResult {
  Buffer offsets;  // int64, num_rows + 1
  Buffer values;   // int64, num_values
  Buffer weights;  // float32, num_values; empty unless some input is weighted
  int64_t num_rows = 0;
  int64_t num_values = 0;
  bool weighted = false;
};

// Runs all crosses in one pass over the pool. Throws std::invalid_argument ("cross: column c:
// ...") for fewer than two inputs, bad offsets, buckets < 0 or an output over 2^62 values.
std::vector<CrossResult> cross_columns(const std::vector<CrossSpec>& crosses);

}  // namespace recis
