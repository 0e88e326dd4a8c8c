// The keys of a frozen (read-only, inference) table: every logical table's IDs ascending, laid end
// to end in one array, tag t's at [tag_offsets[t], tag_offsets[t + 1]).
#pragma once

#include <cstdint>
#include <vector>

#include "recis/keys.h"
#include "recis/pooling.h"

namespace recis {

// An open-addressing index over the keys: slots[s] is a position in `ids` or -1 (empty), the slot
// count a power of two at least twice the key count (linear probing from key_hash(id, tag)). Built
// once per table, read by frozen_find; a key repeated within its logical table throws.
std::vector<int64_t> frozen_index(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags);

// rows[i] = the position in `ids` of the i-th key of the runs laid end to end, or -1 when absent
// (probes of the index `slots`, in parallel). Returns how many keys were absent. A tag outside
// [0, num_tags) throws std::invalid_argument.
int64_t frozen_find(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags, const int64_t* slots,
                    int64_t num_slots, const std::vector<KeyRun>& keys, int64_t* rows);

// A frozen table's rows (n x dim) as stored: float32, bfloat16, float16, or int8 read as
// q * scale[row] + bias[row] with float16 or float32 scale and bias.
enum class FrozenType : uint8_t { kF32, kBf16, kF16, kI8 };
struct FrozenRows {
  FrozenType type;
  const void* data;
  int64_t dim;
  const void* scale = nullptr;  // int8 only
  const void* bias = nullptr;
  bool scale_f16 = false;
};

// What frozen_embed makes of a feature's bags: pooled rows (bags x dim), the rows padded to
// (bags x width x dim) with a (bags x width) mask, or the rows packed (kept keys x dim).
enum class FrozenOut : uint8_t { kPooled, kDense, kRows };

// One feature's bags for frozen_embed: keys.n IDs of logical table keys.tag, bag b holding
// [offsets[b], offsets[b + 1]) (or, with null offsets, `stride` IDs each). Each bag keeps at most
// max_len IDs (>= 0; the last ones when keep_last), then pools into out with `combiner`, or its
// rows are laid out left-aligned in out (dense: zeros past the bag's end, mask, and for weighted
// bags their weights padded with 0 in out_weights) or packed from out_offsets[b] (rows: the
// prefix sums of the kept lengths; weights likewise).
struct FrozenBags {
  KeyRun keys;
  const int64_t* offsets = nullptr;
  int64_t stride = 0;
  int64_t bags = 0;
  const float* weights = nullptr;  // keys.n or null
  Combiner combiner = Combiner::kSum;
  FrozenOut output = FrozenOut::kPooled;
  int64_t max_len = -1;  // -1: no limit
  bool keep_last = false;
  int64_t width = 0;                     // dense: at least every kept bag's length
  const int64_t* out_offsets = nullptr;  // rows: bags + 1
  float* out = nullptr;
  bool* mask = nullptr;          // dense only
  float* out_weights = nullptr;  // dense or rows, weighted bags only
};

struct FrozenCounts {
  int64_t keys;     // IDs looked up (those cut by max_len are not)
  int64_t unknown;  // of which absent from the table
};

// Serving's whole lookup of a frozen table in one pass per feature: each kept ID found through the
// index (frozen_index; unknown IDs read zeros), its row widened to float32 and pooled or laid out
// as `features` say. Throws std::invalid_argument for a tag outside [0, num_tags) or slots that
// are not an index of these IDs.
FrozenCounts frozen_embed(const int64_t* ids, const int64_t* tag_offsets, int64_t num_tags, const int64_t* slots,
                          int64_t num_slots, const FrozenRows& rows, const std::vector<FrozenBags>& features);

}  // namespace recis
