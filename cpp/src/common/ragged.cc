// Ragged kernels. Each op first plans, per output row, where its segment starts in the input
// and how long it is (serial, O(rows)), then copies all segments of all columns in parallel.
#include "recis/ragged.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "recis/parallel.h"

namespace recis {
namespace {

// Enough bytes per chunk that the pool's wake-up cost (a few microseconds) stays negligible.
constexpr int64_t kBytesPerChunk = 64 * 1024;

std::string str(int64_t v) { return std::to_string(v); }

int64_t total_value_bytes(const std::vector<Column>& columns) {
  int64_t b = 0;
  for (const Column& c : columns) b += c.value_bytes;
  return b;
}

// Copies segment i = [starts[i], starts[i] + len_i) of every column into the output, where
// len_i = out_offsets[i + 1] - out_offsets[i].
RaggedResult gather_segments(const std::vector<Column>& columns, const std::vector<int64_t>& starts, Buffer out_offsets,
                             int64_t num_rows) {
  RaggedResult r;
  r.num_rows = num_rows;
  const int64_t* oo = out_offsets.as<int64_t>();
  r.num_values = oo[num_rows];
  for (const Column& c : columns) r.columns.emplace_back(static_cast<size_t>(r.num_values * c.value_bytes));
  const int64_t grain = row_grain(num_rows, r.num_values * total_value_bytes(columns));
  parallel_for(num_rows, grain, [&](int64_t begin, int64_t end) {
    for (size_t k = 0; k < columns.size(); ++k) {
      const int64_t vb = columns[k].value_bytes;
      const uint8_t* src = columns[k].data;
      uint8_t* dst = r.columns[k].data();
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = oo[i + 1] - oo[i];
        if (n > 0) std::memcpy(dst + oo[i] * vb, src + starts[i] * vb, static_cast<size_t>(n * vb));
      }
    }
  });
  r.offsets = std::move(out_offsets);
  return r;
}

}  // namespace

int64_t row_grain(int64_t num_rows, int64_t bytes_total) {
  const int64_t per_row = std::max<int64_t>(1, bytes_total / std::max<int64_t>(1, num_rows));
  return std::max<int64_t>(1, kBytesPerChunk / per_row);
}

void validate_offsets(const Offsets& o, const char* op) {
  if (o.num_rows < 0) throw std::invalid_argument(std::string(op) + ": offsets must have at least one element");
  if (o.data[0] != 0) throw std::invalid_argument(std::string(op) + ": offsets[0] must be 0, got " + str(o.data[0]));
  for (int64_t i = 0; i < o.num_rows; ++i) {
    if (o.data[i + 1] < o.data[i])
      throw std::invalid_argument(std::string(op) + ": offsets must be non-decreasing, got offsets[" + str(i) +
                                  "]=" + str(o.data[i]) + " > offsets[" + str(i + 1) + "]=" + str(o.data[i + 1]));
  }
  if (o.data[o.num_rows] != o.num_values)
    throw std::invalid_argument(std::string(op) + ": last offset must equal the number of values " + str(o.num_values) +
                                ", got offsets[" + str(o.num_rows) + "]=" + str(o.data[o.num_rows]));
}

RaggedResult ragged_truncate(const Offsets& o, const std::vector<Column>& columns, int64_t max_len, bool keep_last) {
  if (max_len < 0) throw std::invalid_argument("ragged_truncate: max_len must be >= 0, got " + str(max_len));
  validate_offsets(o, "ragged_truncate");
  std::vector<int64_t> starts(static_cast<size_t>(o.num_rows));
  Buffer out_offsets(static_cast<size_t>(o.num_rows + 1) * sizeof(int64_t));
  int64_t* oo = out_offsets.as<int64_t>();
  oo[0] = 0;
  for (int64_t i = 0; i < o.num_rows; ++i) {
    const int64_t len = o.data[i + 1] - o.data[i];
    const int64_t kept = std::min(len, max_len);
    starts[i] = o.data[i] + (keep_last ? len - kept : 0);
    oo[i + 1] = oo[i] + kept;
  }
  return gather_segments(columns, starts, std::move(out_offsets), o.num_rows);
}

RaggedResult ragged_select(const Offsets& o, const std::vector<Column>& columns, const int64_t* rows,
                           int64_t num_selected) {
  validate_offsets(o, "ragged_select");
  std::vector<int64_t> starts(static_cast<size_t>(num_selected));
  Buffer out_offsets(static_cast<size_t>(num_selected + 1) * sizeof(int64_t));
  int64_t* oo = out_offsets.as<int64_t>();
  oo[0] = 0;
  for (int64_t i = 0; i < num_selected; ++i) {
    int64_t r = rows[i];
    if (r < 0) r += o.num_rows;
    if (r < 0 || r >= o.num_rows)
      throw std::invalid_argument("ragged_select: row index " + str(rows[i]) + " (at position " + str(i) +
                                  ") is out of range for " + str(o.num_rows) + " rows");
    starts[i] = o.data[r];
    oo[i + 1] = oo[i] + (o.data[r + 1] - o.data[r]);
  }
  return gather_segments(columns, starts, std::move(out_offsets), num_selected);
}

DenseResult ragged_to_dense(const Offsets& o, const std::vector<Column>& columns,
                            const std::vector<const uint8_t*>& pads, int64_t max_len, bool keep_last) {
  if (pads.size() != columns.size())
    throw std::invalid_argument("ragged_to_dense: expected one pad value per column, got " + str(pads.size()) +
                                " for " + str(static_cast<int64_t>(columns.size())) + " columns");
  validate_offsets(o, "ragged_to_dense");
  if (max_len < 0) {
    max_len = 0;
    for (int64_t i = 0; i < o.num_rows; ++i) max_len = std::max(max_len, o.data[i + 1] - o.data[i]);
  }
  DenseResult r;
  r.num_rows = o.num_rows;
  r.max_len = max_len;
  int64_t cells = 0, bytes = 0;
  if (__builtin_mul_overflow(o.num_rows, max_len, &cells) ||
      __builtin_mul_overflow(cells, total_value_bytes(columns) + 1, &bytes))
    throw std::invalid_argument("ragged_to_dense: " + str(o.num_rows) + " rows x max_len " + str(max_len) +
                                " is too large to allocate");
  for (const Column& c : columns) r.columns.emplace_back(static_cast<size_t>(cells * c.value_bytes));
  r.mask = Buffer(static_cast<size_t>(cells));
  std::vector<bool> pad_is_zero;
  for (size_t k = 0; k < columns.size(); ++k) {
    const uint8_t* p = pads[k];
    pad_is_zero.push_back(std::all_of(p, p + columns[k].value_bytes, [](uint8_t b) { return b == 0; }));
  }
  const int64_t grain = row_grain(o.num_rows, bytes);
  parallel_for(o.num_rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t len = o.data[i + 1] - o.data[i];
      const int64_t kept = std::min(len, max_len);
      const int64_t start = o.data[i] + (keep_last ? len - kept : 0);
      uint8_t* mask = r.mask.data() + i * max_len;
      std::memset(mask, 1, static_cast<size_t>(kept));
      std::memset(mask + kept, 0, static_cast<size_t>(max_len - kept));
      for (size_t k = 0; k < columns.size(); ++k) {
        const int64_t vb = columns[k].value_bytes;
        uint8_t* dst = r.columns[k].data() + i * max_len * vb;
        if (kept > 0) std::memcpy(dst, columns[k].data + start * vb, static_cast<size_t>(kept * vb));
        if (pad_is_zero[k]) {
          std::memset(dst + kept * vb, 0, static_cast<size_t>((max_len - kept) * vb));
        } else {
          for (int64_t j = kept; j < max_len; ++j) std::memcpy(dst + j * vb, pads[k], static_cast<size_t>(vb));
        }
      }
    }
  });
  return r;
}

Buffer dense_to_ragged(const Offsets& o, const Column& dense, int64_t max_len, bool keep_last) {
  validate_offsets(o, "dense_to_ragged");
  if (max_len < 0) throw std::invalid_argument("dense_to_ragged: max_len must be >= 0, got " + str(max_len));
  const int64_t vb = dense.value_bytes;
  Buffer out(static_cast<size_t>(o.num_values * vb));
  parallel_for(o.num_rows, row_grain(o.num_rows, o.num_values * vb), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t len = o.data[i + 1] - o.data[i];
      const int64_t kept = std::min(len, max_len), cut = len - kept;
      const int64_t first_kept = o.data[i] + (keep_last ? cut : 0);
      const int64_t first_cut = keep_last ? o.data[i] : o.data[i] + kept;
      if (kept > 0)
        std::memcpy(out.data() + first_kept * vb, dense.data + i * max_len * vb, static_cast<size_t>(kept * vb));
      if (cut > 0) std::memset(out.data() + first_cut * vb, 0, static_cast<size_t>(cut * vb));
    }
  });
  return out;
}

}  // namespace recis
