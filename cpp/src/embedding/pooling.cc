// Pooling kernels. Forward is parallel over bags; backward first groups value positions by
// unique row (a counting sort, O(n)), then is parallel over unique rows, so no atomics are needed
// and the summation order is fixed; the row's sum goes to a sink (a gradient array, or an
// optimizer that updates the row at once).
#include "recis/pooling.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "recis/buffer.h"
#include "recis/huge_pages.h"
#include "recis/parallel.h"
#include "recis/ragged.h"

namespace recis {

std::vector<float> bag_scales(const int64_t* offsets, int64_t bags, const float* weights,
                              const std::vector<BagRun>& runs, const char* op) {
  int64_t covered = 0;
  bool all_sum = true;
  for (const BagRun& r : runs) {
    if (r.bags < 0) throw std::invalid_argument(std::string(op) + ": a feature has a negative bag count");
    covered += r.bags;
    all_sum = all_sum && r.combiner == Combiner::kSum;
  }
  if (covered != bags)
    throw std::invalid_argument(std::string(op) + ": combiner runs cover " + std::to_string(covered) +
                                " bags, but there are " + std::to_string(bags));
  if (all_sum) return {};
  std::vector<float> scales(static_cast<size_t>(bags));
  int64_t b = 0;
  for (const BagRun& r : runs) {
    for (const int64_t end = b + r.bags; b < end; ++b) {
      scales[static_cast<size_t>(b)] = bag_scale(r.combiner, weights, offsets[b], offsets[b + 1]);
    }
  }
  return scales;
}

float bag_scale(Combiner combiner, const float* weights, int64_t begin, int64_t end) {
  if (combiner == Combiner::kSum) return 1.0f;
  double acc = 0.0;
  for (int64_t j = begin; j < end; ++j) {
    const double w = weights ? weights[j] : 1.0;
    acc += combiner == Combiner::kMean ? w : w * w;
  }
  // empty bag (or all-zero weights): zeros, never a division by zero
  return acc == 0.0 ? 0.0f : static_cast<float>(combiner == Combiner::kMean ? 1.0 / acc : 1.0 / std::sqrt(acc));
}

namespace {

// The first inverse[j] outside [0, U), as an error naming `op` (called once a check failed).
[[noreturn]] void throw_bad_inverse(const char* op, const int64_t* inverse, int64_t n, int64_t num_unique) {
  for (int64_t j = 0; j < n; ++j)
    if (inverse[j] < 0 || inverse[j] >= num_unique)
      throw std::invalid_argument(std::string(op) + ": inverse[" + std::to_string(j) +
                                  "]=" + std::to_string(inverse[j]) + " is out of range for " +
                                  std::to_string(num_unique) + " unique rows");
  throw std::logic_error(std::string(op) + ": inverse check failed without an offender");
}

// kDim > 0 fixes the width at compile time (fully unrolled, vectorized); 0 reads it at run time.
// row_of(u) gives the values of unique row u.
template <int kDim, typename RowOf>
RECIS_VECTOR_CLONES void pool_bags(RowOf row_of, int64_t dim_rt, const int64_t* inverse, const int64_t* offsets,
                                   const float* weights, const float* scales, float* out, BagLayout layout,
                                   int64_t begin, int64_t end) {
  constexpr int64_t kAhead = 32;  // rows prefetched ahead, across bags
  const int64_t dim = kDim > 0 ? kDim : dim_rt;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
  using Stored = std::remove_cv_t<std::remove_pointer_t<decltype(row_of(int64_t{0}))>>;  // float, Bf16 or F16
  const size_t stored_bytes = static_cast<size_t>(dim) * sizeof(Stored);
  const int64_t last = offsets[end];
  // Fixed widths sum into a local row (it stays in L1), written to out once per bag.
  float local[kDim > 0 ? kDim : 1];
  for (int64_t b = begin; b < end; ++b) {
    float* __restrict o = kDim > 0 ? local : out + layout.row(b) * dim;
    std::memset(o, 0, row_bytes);
    for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      if (j + 2 * kAhead < last) row_of.prefetch_index(inverse[j + 2 * kAhead]);
      if (j + kAhead < last) prefetch_lines(row_of(inverse[j + kAhead]), stored_bytes);
      const auto* __restrict e = row_of(inverse[j]);  // float, or 16-bit rows widened as summed
      if (!weights) {
        for (int64_t d = 0; d < dim; ++d) o[d] += to_f32(e[d]);
        continue;
      }
      const float w = weights[j];
      for (int64_t d = 0; d < dim; ++d) o[d] += w * to_f32(e[d]);
    }
    if (scales && scales[b] != 1.0f)
      for (int64_t d = 0; d < dim; ++d) o[d] *= scales[b];
    if (kDim > 0) std::memcpy(out + layout.row(b) * dim, o, row_bytes);
  }
}

template <typename RowOf>
void pool_all(RowOf row_of, int64_t num_unique, int64_t dim, const int64_t* inverse, const int64_t* offsets,
              int64_t bags, const float* weights, const float* scales, float* out, const BagLayout& layout,
              const char* op) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, dim));
  std::atomic<bool> bad{false};
  parallel_for(bags, grain, [&](int64_t begin, int64_t end) {
    // The chunk's inverse checked right before pooling reads it, from cache.
    if (op && !all_in_range(inverse, offsets[begin], offsets[end], 0, num_unique)) {
      bad.store(true, std::memory_order_relaxed);
      return;
    }
    switch (dim) {
      case 8: return pool_bags<8>(row_of, dim, inverse, offsets, weights, scales, out, layout, begin, end);
      case 16: return pool_bags<16>(row_of, dim, inverse, offsets, weights, scales, out, layout, begin, end);
      case 32: return pool_bags<32>(row_of, dim, inverse, offsets, weights, scales, out, layout, begin, end);
      case 64: return pool_bags<64>(row_of, dim, inverse, offsets, weights, scales, out, layout, begin, end);
      case 128: return pool_bags<128>(row_of, dim, inverse, offsets, weights, scales, out, layout, begin, end);
      default: return pool_bags<0>(row_of, dim, inverse, offsets, weights, scales, out, layout, begin, end);
    }
  });
  if (bad.load()) throw_bad_inverse(op, inverse, offsets[bags], num_unique);
}

// One value's share of a row's gradient: factor * grad_out[bag].
struct Contribution {
  int32_t grad_row;  // the bag's row in grad_out (reduce_rows refuses 2^31 bags or more)
  float factor;
};

// Sums the contributions [k, k_end) of one row, prefetching the gradient rows kAhead
// contributions ahead (across rows, up to `last`).
template <int kDim>
void sum_row(const float* grad_out, int64_t dim_rt, const Contribution* items, int64_t k, int64_t k_end, int64_t last,
             float* g) {
  constexpr int64_t kAhead = 16;
  const int64_t dim = kDim > 0 ? kDim : dim_rt;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
  float* __restrict out = g;
  std::memset(out, 0, row_bytes);
  for (; k < k_end; ++k) {
    if (k + kAhead < last) prefetch_lines(grad_out + int64_t{items[k + kAhead].grad_row} * dim, row_bytes);
    const float* __restrict go = grad_out + int64_t{items[k].grad_row} * dim;
    const float f = items[k].factor;
    for (int64_t d = 0; d < dim; ++d) out[d] += f * go[d];
  }
}

// Rows [begin, end) of reduce_rows: each row's contributions summed, then handed to the sink.
RECIS_VECTOR_CLONES void reduce_range(const float* grad_out, int64_t dim, const Contribution* items,
                                      const int64_t* start, int64_t begin, int64_t end, const RowSink& sink) {
  std::vector<float> scratch(static_cast<size_t>(dim));
  constexpr int64_t kAhead = 8;
  const int64_t last = start[end];
  for (int64_t u = begin; u < end; ++u) {
    if (u + kAhead < end) sink.prefetch(u + kAhead);
    float* g = sink.buffer(u, scratch.data());
    const int64_t k = start[u], k_end = start[u + 1];
    switch (dim) {
      case 32: sum_row<32>(grad_out, dim, items, k, k_end, last, g); break;
      case 64: sum_row<64>(grad_out, dim, items, k, k_end, last, g); break;
      case 128: sum_row<128>(grad_out, dim, items, k, k_end, last, g); break;
      default: sum_row<0>(grad_out, dim, items, k, k_end, last, g);
    }
    sink.take(u, g);
  }
}

}  // namespace

void pooled_forward(const float* emb, int64_t num_unique, int64_t dim, const int64_t* inverse, const int64_t* offsets,
                    int64_t bags, const float* weights, const float* scales, float* out, const BagLayout& layout,
                    const char* op) {
  struct Dense {  // unique row u at emb + u * dim
    const float* emb;
    int64_t dim;
    const float* operator()(int64_t u) const { return emb + u * dim; }
    void prefetch_index(int64_t) const {}
  };
  pool_all(Dense{emb, dim}, num_unique, dim, inverse, offsets, bags, weights, scales, out, layout, op);
}

void pooled_forward_rows(const TableRowsOf<float>& rows, int64_t num_unique, int64_t dim, const int64_t* inverse,
                         const int64_t* offsets, int64_t bags, const float* weights, const float* scales, float* out,
                         const BagLayout& layout, const char* op) {
  pool_all(rows, num_unique, dim, inverse, offsets, bags, weights, scales, out, layout, op);
}

void pooled_forward_rows(const TableRowsOf<Bf16>& rows, int64_t num_unique, int64_t dim, const int64_t* inverse,
                         const int64_t* offsets, int64_t bags, const float* weights, const float* scales, float* out,
                         const BagLayout& layout, const char* op) {
  pool_all(rows, num_unique, dim, inverse, offsets, bags, weights, scales, out, layout, op);
}

void pooled_forward_rows(const TableRowsOf<F16>& rows, int64_t num_unique, int64_t dim, const int64_t* inverse,
                         const int64_t* offsets, int64_t bags, const float* weights, const float* scales, float* out,
                         const BagLayout& layout, const char* op) {
  pool_all(rows, num_unique, dim, inverse, offsets, bags, weights, scales, out, layout, op);
}

void reduce_rows(const float* grad_out, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
                 const float* weights, const float* scales, int64_t num_unique, const RowSink& sink,
                 const BagLayout& layout, const char* op) {
  // Counting sort of the values by unique row, keeping each value's bag and factor (scale * w):
  // row u's contributions are [start[u], start[u + 1]), in increasing j. Each thread takes a range
  // of bags and counts, then places, its own values (no atomics, no data-dependent branches);
  // per-thread offsets into each row's run keep lower threads' values first, so the order within
  // a row is fixed.
  const int64_t n = offsets[bags];
  if (bags >= (int64_t{1} << 31) || n >= (int64_t{1} << 31))
    throw std::invalid_argument("pooled backward: at most 2^31 - 1 bags and values per call, got " +
                                std::to_string(bags) + " bags, " + std::to_string(n) + " values");
  ScratchArray<int64_t> start(static_cast<size_t>(num_unique) + 1);  // block cache: no fresh page faults
  ScratchArray<Contribution> items(static_cast<size_t>(n));
  const int64_t parts = n < kMinParallel ? 1 : num_threads();
  ScratchArray<int32_t> at(static_cast<size_t>(parts * num_unique), 0);  // per thread: count, then next slot
  auto bag_range = [&](int64_t p) { return std::pair{bags * p / parts, bags * (p + 1) / parts}; };
  std::atomic<bool> bad{false};
  parallel_for(parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      int32_t* count = at.data() + p * num_unique;
      const auto [lo, hi] = bag_range(p);
      for (int64_t j = offsets[lo]; j < offsets[hi]; ++j) {
        const int64_t u = inverse[j];
        if (static_cast<uint64_t>(u) >= static_cast<uint64_t>(num_unique)) {  // checked as it is counted
          bad.store(true, std::memory_order_relaxed);
          break;
        }
        ++count[u];
      }
    }
  });
  if (bad.load()) throw_bad_inverse(op, inverse, n, num_unique);
  // Exclusive prefix over (row, thread) in two parallel passes: each range of rows sums its
  // counts, then numbers its slots from the totals of the ranges before it.
  const int64_t ranges = num_unique < kMinParallel ? 1 : num_threads();
  std::vector<int64_t> range_base(static_cast<size_t>(ranges) + 1, 0);
  auto rows_of = [&](int64_t q) { return std::pair{num_unique * q / ranges, num_unique * (q + 1) / ranges}; };
  parallel_for(ranges, 1, [&](int64_t qb, int64_t qe) {
    for (int64_t q = qb; q < qe; ++q) {
      int64_t total = 0;
      const auto [lo, hi] = rows_of(q);  // bounds hoisted: the loops' stores could alias them
      for (int64_t u = lo; u < hi; ++u)
        for (int64_t p = 0; p < parts; ++p) total += at[static_cast<size_t>(p * num_unique + u)];
      range_base[static_cast<size_t>(q) + 1] = total;
    }
  });
  for (int64_t q = 0; q < ranges; ++q) range_base[static_cast<size_t>(q) + 1] += range_base[static_cast<size_t>(q)];
  start[0] = 0;
  parallel_for(ranges, 1, [&](int64_t qb, int64_t qe) {
    for (int64_t q = qb; q < qe; ++q) {
      int64_t next = range_base[static_cast<size_t>(q)];
      const auto [lo, hi] = rows_of(q);
      for (int64_t u = lo; u < hi; ++u) {
        for (int64_t p = 0; p < parts; ++p) {
          int32_t& c = at[static_cast<size_t>(p * num_unique + u)];
          const int32_t k = c;
          c = static_cast<int32_t>(next);
          next += k;
        }
        start[static_cast<size_t>(u) + 1] = next;
      }
    }
  });
  parallel_for(parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      int32_t* next = at.data() + p * num_unique;
      const auto [lo, hi] = bag_range(p);
      for (int64_t b = lo; b < hi; ++b) {
        const float s = scales ? scales[b] : 1.0f;
        const auto row = static_cast<int32_t>(layout.row(b));
        for (int64_t j = offsets[b]; j < offsets[b + 1]; ++j)
          items[static_cast<size_t>(next[inverse[j]]++)] = Contribution{row, weights ? s * weights[j] : s};
      }
    }
  });
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, dim));
  parallel_for(num_unique, grain, [&](int64_t begin, int64_t end) {
    reduce_range(grad_out, dim, items.data(), start.data(), begin, end, sink);
  });
}

void pooled_backward(const float* grad_out, int64_t dim, const int64_t* inverse, const int64_t* offsets, int64_t bags,
                     const float* weights, const float* scales, int64_t num_unique, float* grad_emb,
                     const BagLayout& layout, const char* op) {
  struct Into : RowSink {
    float* out;
    int64_t dim;
    float* buffer(int64_t u, float*) const override { return out + u * dim; }
    void take(int64_t, const float*) const override {}
  } sink;
  sink.out = grad_emb;
  sink.dim = dim;
  reduce_rows(grad_out, dim, inverse, offsets, bags, weights, scales, num_unique, sink, layout, op);
}

}  // namespace recis
