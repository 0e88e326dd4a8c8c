// Kernels over CSR ("ragged") batches: rows are segments [offsets[i], offsets[i+1]) of a values
// array. The kernels are dtype-agnostic: a value is `value_bytes` opaque bytes (itemsize times the
// product of trailing dimensions), so one kernel serves int64 IDs, float weights and [N, D] rows.
#pragma once

#include <cstdint>
#include <vector>

#include "recis/buffer.h"

namespace recis {

// A borrowed array of `num_values` values of `value_bytes` bytes each.
struct Column {
  const uint8_t* data;
  int64_t value_bytes;
};

// Borrowed CSR structure: `num_rows + 1` offsets over `num_values` values.
struct Offsets {
  const int64_t* data;
  int64_t num_rows;
  int64_t num_values;
};

// Output of a row-restructuring kernel: new offsets and, for each input column, its new values.
struct RaggedResult {
  Buffer offsets;               // int64, num_rows + 1
  std::vector<Buffer> columns;  // one per input column, num_values values each
  int64_t num_rows = 0;
  int64_t num_values = 0;
};

// Output of ragged_to_dense: per column a [num_rows, max_len] array of values, and a bool mask.
struct DenseResult {
  std::vector<Buffer> columns;
  Buffer mask;  // uint8 0/1, [num_rows, max_len]
  int64_t num_rows = 0;
  int64_t max_len = 0;
};

// Rows per parallel task when rows hold bytes_total bytes between them: about 64 KiB a task, so
// the pool's wake-up cost (a few microseconds) stays negligible.
int64_t row_grain(int64_t num_rows, int64_t bytes_total);

// Checks offsets[0] == 0, non-decreasing, offsets[num_rows] == num_values. Throws
// std::invalid_argument naming `op`, the first bad position and the values found there.
void validate_offsets(const Offsets& offsets, const char* op);

// Keeps at most max_len values per row: the first ones, or the last ones when keep_last.
RaggedResult ragged_truncate(const Offsets& offsets, const std::vector<Column>& columns, int64_t max_len,
                             bool keep_last);

// Gathers rows by index (negative indices count from the end, as in Python).
RaggedResult ragged_select(const Offsets& offsets, const std::vector<Column>& columns, const int64_t* rows,
                           int64_t num_selected);

// Pads rows to max_len values (the longest row when max_len < 0); longer rows keep their first
// max_len values, or their last when keep_last. pads[c] points at one value_bytes pad value for
// column c. Kept values are left-aligned; mask marks them.
DenseResult ragged_to_dense(const Offsets& offsets, const std::vector<Column>& columns,
                            const std::vector<const uint8_t*>& pads, int64_t max_len, bool keep_last);

// The way back from ragged_to_dense's layout, its gradient with respect to the values: each value
// read from its cell of `dense` ([num_rows * max_len] values of value_bytes), values cut by
// max_len as zeros. Returns offsets.num_values values.
Buffer dense_to_ragged(const Offsets& offsets, const Column& dense, int64_t max_len, bool keep_last);

}  // namespace recis
