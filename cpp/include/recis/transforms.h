// Element-wise feature transforms over flat arrays (a Ragged's values or a dense column).
#pragma once

#include <cstdint>
#include <vector>

namespace recis {

enum class NumericType { kFloat32, kFloat64, kInt32, kInt64 };

// Bucketize: out[i] = number of boundaries <= values[i], so bucket i holds [boundaries[i-1],
// boundaries[i]) as in TensorFlow's Bucketize and torch.bucketize(right=True). Boundaries must be
// strictly increasing and finite; a NaN value is an error (fill missing values first).
// One column of a fused bucketize call: n values of `type`, compared as doubles.
struct BucketizeColumn {
  const void* values;
  NumericType type;
  int64_t n;
  const double* boundaries;
  int64_t num_boundaries;
  int64_t* out;
};

// Bucketizes many columns in one run over the pool. Errors read "bucketize: column c: ...".
void bucketize_columns(const std::vector<BucketizeColumn>& columns);

// Mod: out[i] = ids[i] mod modulus with the sign of the modulus (Python's %, torch.remainder),
// always in [0, modulus). One column of a fused mod call.
struct ModColumn {
  const int64_t* ids;
  int64_t n;
  int64_t modulus;
  int64_t* out;
};

// Takes many columns mod their moduli in one run over the pool. Errors read "mod: column c: ...".
void mod_columns(const std::vector<ModColumn>& columns);

// FillMissing on dense float columns: NaN becomes `value`, everything else is copied. Only
// kFloat32 and kFloat64 columns; out has the column's type.
struct FillNanColumn {
  const void* values;
  NumericType type;
  int64_t n;
  double value;
  void* out;
};

// Fills many columns in one run over the pool. Errors read "fill_missing: column c: ...".
void fill_nan_columns(const std::vector<FillNanColumn>& columns);

}  // namespace recis
