// Feature crosses in two parallel passes: count each row's combinations, then (after a serial
// prefix sum per cross) hash them into place. Tasks are (cross, chunk of rows) pairs.
#include "recis/cross.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "column_tasks.h"
#include "recis/hash.h"
#include "recis/ragged.h"

namespace recis {
namespace {

constexpr int64_t kMaxValues = int64_t{1} << 62;
constexpr int64_t kGrain = 2048;

void check(const CrossSpec& spec, int64_t c) {
  const std::string where = detail::column_error("cross", c);
  if (spec.inputs.size() < 2)
    throw std::invalid_argument(where + "needs at least 2 inputs, got " + std::to_string(spec.inputs.size()));
  if (spec.buckets < 0)
    throw std::invalid_argument(where + "buckets must be >= 0, got " + std::to_string(spec.buckets));
  for (const CrossInput& in : spec.inputs) validate_offsets(Offsets{in.offsets, spec.num_rows, in.num_values}, "cross");
}

// Writes row r's combinations from position `pos` on: an odometer over the inputs, last fastest.
void fill_row(const CrossSpec& spec, int64_t r, int64_t pos, int64_t* values, float* weights) {
  const size_t k = spec.inputs.size();
  const auto buckets = static_cast<uint64_t>(spec.buckets);
  if (k == 2 && !weights) {  // the common case, without the odometer
    const CrossInput &a = spec.inputs[0], &b = spec.inputs[1];
    for (int64_t i = a.offsets[r]; i < a.offsets[r + 1]; ++i)
      for (int64_t j = b.offsets[r]; j < b.offsets[r + 1]; ++j) {
        const int64_t pair[2] = {a.values[i], b.values[j]};
        uint64_t h = murmur3_x64_64(reinterpret_cast<const uint8_t*>(pair), 16, spec.seed);
        if (buckets > 0) h %= buckets;
        values[pos++] = static_cast<int64_t>(h);
      }
    return;
  }
  int64_t idx_buf[16], ids_buf[16];
  std::vector<int64_t> idx_heap, ids_heap;
  int64_t* idx = idx_buf;
  int64_t* ids = ids_buf;
  if (k > 16) {
    idx_heap.resize(k);
    ids_heap.resize(k);
    idx = idx_heap.data();
    ids = ids_heap.data();
  }
  for (size_t f = 0; f < k; ++f) {
    idx[f] = spec.inputs[f].offsets[r];
    if (idx[f] == spec.inputs[f].offsets[r + 1]) return;  // an empty input row crosses to nothing
  }
  for (;;) {
    float w = 1.0f;
    for (size_t f = 0; f < k; ++f) {
      ids[f] = spec.inputs[f].values[idx[f]];
      if (spec.inputs[f].weights) w *= spec.inputs[f].weights[idx[f]];
    }
    uint64_t h = murmur3_x64_64(reinterpret_cast<const uint8_t*>(ids), 8 * k, spec.seed);
    if (buckets > 0) h %= buckets;
    values[pos] = static_cast<int64_t>(h);
    if (weights) weights[pos] = w;
    ++pos;
    size_t f = k;
    while (f > 0) {
      --f;
      if (++idx[f] < spec.inputs[f].offsets[r + 1]) break;
      idx[f] = spec.inputs[f].offsets[r];
      if (f == 0) return;
    }
  }
}

}  // namespace

std::vector<CrossResult> cross_columns(const std::vector<CrossSpec>& crosses) {
  std::vector<CrossResult> results(crosses.size());
  std::vector<int64_t> sizes;
  for (size_t c = 0; c < crosses.size(); ++c) {
    check(crosses[c], static_cast<int64_t>(c));
    results[c].num_rows = crosses[c].num_rows;
    results[c].offsets = Buffer(sizeof(int64_t) * (crosses[c].num_rows + 1));
    results[c].offsets.as<int64_t>()[0] = 0;
    for (const CrossInput& in : crosses[c].inputs) results[c].weighted |= in.weights != nullptr;
    sizes.push_back(crosses[c].num_rows);
  }
  // Pass 1: combinations per row (saturating at kMaxValues, checked below).
  detail::parallel_over_columns(sizes, kGrain, [&](int64_t c, int64_t begin, int64_t end) {
    const CrossSpec& spec = crosses[c];
    int64_t* counts = results[c].offsets.as<int64_t>() + 1;
    for (int64_t r = begin; r < end; ++r) {
      int64_t n = 1;
      for (const CrossInput& in : spec.inputs) {
        const int64_t len = in.offsets[r + 1] - in.offsets[r];
        n = (len != 0 && n > kMaxValues / len) ? kMaxValues : n * len;
      }
      counts[r] = n;
    }
  });
  for (size_t c = 0; c < crosses.size(); ++c) {
    int64_t* offsets = results[c].offsets.as<int64_t>();
    for (int64_t r = 0; r < crosses[c].num_rows; ++r) {
      if (offsets[r + 1] >= kMaxValues - offsets[r])
        throw std::invalid_argument(detail::column_error("cross", static_cast<int64_t>(c)) + "row " +
                                    std::to_string(r) + " takes the output past 2^62 values");
      offsets[r + 1] += offsets[r];
    }
    CrossResult& res = results[c];
    res.num_values = offsets[crosses[c].num_rows];
    res.values = Buffer(sizeof(int64_t) * static_cast<size_t>(res.num_values));
    if (res.weighted) res.weights = Buffer(sizeof(float) * static_cast<size_t>(res.num_values));
  }
  // Pass 2: hash every combination into place.
  detail::parallel_over_columns(sizes, kGrain, [&](int64_t c, int64_t begin, int64_t end) {
    const CrossResult& res = results[c];
    const int64_t* offsets = res.offsets.as<int64_t>();
    float* weights = res.weighted ? res.weights.as<float>() : nullptr;
    for (int64_t r = begin; r < end; ++r) fill_row(crosses[c], r, offsets[r], res.values.as<int64_t>(), weights);
  });
  return results;
}

}  // namespace recis
