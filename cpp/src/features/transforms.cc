// Bucketize, Mod and NaN filling over one or many columns. Per-column checks (boundaries, moduli) run first;
// per-value checks (NaN) run inside the parallel chunks, where they cost no extra pass.
#include "recis/transforms.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "column_tasks.h"
#include "recis/parallel.h"

namespace recis {

namespace {

void check_boundaries(const double* boundaries, int64_t num_boundaries, const std::string& where) {
  for (int64_t i = 0; i < num_boundaries; ++i) {
    if (!std::isfinite(boundaries[i]))
      throw std::invalid_argument(where + "boundaries[" + std::to_string(i) + "] is not finite");
    if (i > 0 && !(boundaries[i - 1] < boundaries[i]))
      throw std::invalid_argument(where + "boundaries must be strictly increasing, got boundaries[" +
                                  std::to_string(i - 1) + "]=" + std::to_string(boundaries[i - 1]) + " >= boundaries[" +
                                  std::to_string(i) + "]=" + std::to_string(boundaries[i]));
  }
}

template <typename T>
void bucketize_range(const BucketizeColumn& col, int64_t c, int64_t begin, int64_t end) {
  const T* values = static_cast<const T*>(col.values);
  const double* b = col.boundaries;
  const int64_t nb = col.num_boundaries;
  for (int64_t i = begin; i < end; ++i) {
    const auto v = static_cast<double>(values[i]);
    if (std::isnan(v))
      throw std::invalid_argument(detail::column_error("bucketize", c) + "value at position " + std::to_string(i) +
                                  " is NaN (fill missing values first)");
    // Branchless upper bound: random values would mispredict std::upper_bound's branches.
    if (nb == 0) {
      col.out[i] = 0;
      continue;
    }
    const double* base = b;
    for (int64_t n = nb; n > 1;) {
      const int64_t half = n / 2;
      base = base[half] <= v ? base + half : base;
      n -= half;
    }
    col.out[i] = (base - b) + (*base <= v);
  }
}

template <typename T>
void fill_nan_range(const FillNanColumn& col, int64_t begin, int64_t end) {
  const T* in = static_cast<const T*>(col.values);
  T* out = static_cast<T*>(col.out);
  const auto fill = static_cast<T>(col.value);
  for (int64_t i = begin; i < end; ++i) out[i] = std::isnan(in[i]) ? fill : in[i];
}

}  // namespace

void bucketize_columns(const std::vector<BucketizeColumn>& columns) {
  std::vector<int64_t> sizes;
  for (size_t c = 0; c < columns.size(); ++c) {
    check_boundaries(columns[c].boundaries, columns[c].num_boundaries, detail::column_error("bucketize", c));
    sizes.push_back(columns[c].n);
  }
  detail::parallel_over_columns(sizes, kMinChunk, [&](int64_t c, int64_t begin, int64_t end) {
    const BucketizeColumn& col = columns[c];
    switch (col.type) {
      case NumericType::kFloat32: return bucketize_range<float>(col, c, begin, end);
      case NumericType::kFloat64: return bucketize_range<double>(col, c, begin, end);
      case NumericType::kInt32: return bucketize_range<int32_t>(col, c, begin, end);
      case NumericType::kInt64: return bucketize_range<int64_t>(col, c, begin, end);
    }
  });
}

void mod_columns(const std::vector<ModColumn>& columns) {
  std::vector<int64_t> sizes;
  for (size_t c = 0; c < columns.size(); ++c) {
    if (columns[c].modulus <= 0)
      throw std::invalid_argument(detail::column_error("mod", c) + "the modulus must be > 0, got " +
                                  std::to_string(columns[c].modulus));
    sizes.push_back(columns[c].n);
  }
  detail::parallel_over_columns(sizes, kMinParallel, [&](int64_t c, int64_t begin, int64_t end) {
    const ModColumn& col = columns[c];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = col.ids[i] % col.modulus;
      col.out[i] = r < 0 ? r + col.modulus : r;
    }
  });
}

void fill_nan_columns(const std::vector<FillNanColumn>& columns) {
  std::vector<int64_t> sizes;
  for (size_t c = 0; c < columns.size(); ++c) {
    if (columns[c].type != NumericType::kFloat32 && columns[c].type != NumericType::kFloat64)
      throw std::invalid_argument(detail::column_error("fill_missing", c) + "values must be float32 or float64");
    sizes.push_back(columns[c].n);
  }
  detail::parallel_over_columns(sizes, kMinParallel, [&](int64_t c, int64_t begin, int64_t end) {
    const FillNanColumn& col = columns[c];
    if (col.type == NumericType::kFloat32)
      fill_nan_range<float>(col, begin, end);
    else
      fill_nan_range<double>(col, begin, end);
  });
}

}  // namespace recis
