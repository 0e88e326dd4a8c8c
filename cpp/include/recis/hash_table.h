// HashTable: int64 feature ID (plus a 16-bit logical-table tag, for merged tables) -> row.
//
// The ID map is open addressing with linear probing over 16-byte slots that hold the key, so a
// probe touches one cache line and never the rows. Rows live in fixed-size blocks that never move
// when the table grows (only the map is rehashed); optimizer slots are parallel block arrays under
// the same row index; per-row metadata (ID, tag, last step, frequency) sits in flat arrays that
// eviction scans without touching embeddings. Freed rows are reused. All batch operations take
// the table's lock; their heavy parts run on the core's thread pool.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "recis/huge_pages.h"
#include "recis/pooling.h"

namespace recis {

enum class InitKind { kConstant, kUniform, kNormal, kTruncatedNormal, kXavierUniform };

// constant: value=a. uniform: [a, b). normal: mean a, stddev b. truncated normal: mean a, stddev
// b, redrawn outside 2 stddev. xavier uniform: [-sqrt(6/(1+dim)), +sqrt(6/(1+dim))), treating a
// row as a (1, dim) matrix.
struct Initializer {
  InitKind kind = InitKind::kNormal;
  double a = 0.0, b = 0.01;
};

// Fills out[0..dim) for one ID; depends only on (seed, id), never on order or threads.
void init_row(const Initializer& init, uint64_t seed, int64_t id, float* out, int64_t dim);

struct TableCounters {
  int64_t lookups = 0;   // unique keys looked up
  int64_t hits = 0;      // of those, found in the table
  int64_t inserts = 0;   // rows created
  int64_t admitted = 0;  // of those, created on reaching the admission count (min_count > 1)
  int64_t rejected = 0;  // misses that got no row (read-only lookup or below the admission count)
  int64_t evicted = 0;   // rows removed by eviction
};

enum class EvictPolicy { kLru, kLfu };

class HashTable {
 public:
  // Row indices are int32 in the ID map, so a table holds at most 2^31 - 1 rows; widths are capped
  // so that a block's size (block_rows x width floats) can never overflow.
  static constexpr int64_t kMaxRows = (int64_t{1} << 31) - 1;
  static constexpr int64_t kMaxWidth = int64_t{1} << 20;  // floats per row: dim, slot widths, block rows

  // dim: embedding width. admit_count: an ID gets a row once seen this many times (1: at once);
  // counting happens in a side map and allocates no row. block_rows: rows per block.
  HashTable(int64_t dim, Initializer init, int64_t admit_count, int64_t block_rows);

  int64_t dim() const { return dim_; }
  int64_t size() const;  // live rows

  // Seed for the rows of logical table `tag` (merged tables: one tag per logical table).
  void set_tag_seed(int tag, uint64_t seed);

  // Adds an optimizer slot of `width` floats per row, initialized to `init` for every row (and
  // reset to it when a row is created or reused). Returns its index.
  int add_slot(const std::string& name, int64_t width, float init);
  int num_slots() const { return static_cast<int>(slots_.size()); }
  const std::string& slot_name(int s) const { return slots_[static_cast<size_t>(s)].name; }
  int64_t slot_width(int s) const { return slots_[static_cast<size_t>(s)].width; }

  // n keys read in place: one feature's IDs, all of logical table `tag`, or keys with a tag
  // each (`tags`). Lookups take a list of runs, laid end to end, so no caller concatenates them.
  struct KeyRun {
    const int64_t* ids;
    int64_t n;
    uint16_t tag = 0;
    const uint16_t* tags = nullptr;
  };

  // Maps the keys (repeats allowed) to their distinct rows: probes every key (parallel), inserts
  // the distinct misses (when `insert` and admitted), then de-duplicates by row (unique_rows:
  // ascending, one -1 last when some key has no row); inverse[i] is key i's index among them. Call touch_and_gather on unique_rows under the same lock to record the step.
  // Caller holds mutex().
  void lookup(const std::vector<KeyRun>& keys, int64_t step, bool insert, std::vector<int64_t>& unique_rows,
              int64_t* inverse);

  // n distinct keys known to be absent (a probe just missed them): each is inserted and
  // initialized when `insert` and admitted, rows[i] gets its row or -1. Returns the rows created.
  // Without admission counting, rows are assigned in key order and the map filled in parallel.
  // Caller holds mutex().
  int64_t insert_missing(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t step, bool insert,
                         int64_t* rows);

  // Copies rows into out (n x dim; null: copy nothing), row -1 giving zeros; when `record`, marks each row seen at
  // `step` (last step = step, frequency + 1, saturating). Rows must be distinct. Caller holds mutex().
  void touch_and_gather(const int64_t* rows, int64_t n, int64_t step, bool record, float* out);

  // Pools rows[inverse[j]] per bag straight from the blocks into out (bags x dim). Rows must be
  // -1 or < the rows ever allocated (checked); an evicted row reads whatever reuses it.
  void pool(const int64_t* rows, int64_t num_rows, const int64_t* inverse, const int64_t* offsets, int64_t bags,
            const float* weights, const float* scales, float* out, const BagLayout& layout = {}) const;

  // Read-only pooled lookup straight from the keys (no de-duplication, no insert, nothing
  // recorded; missing keys read zeros): bag b of `offsets` pools the rows of keys
  // [offsets[b], offsets[b + 1]) of the runs laid end to end (never copied into one array), as
  // HashTable::pool does. Counts every key as a lookup.
  void pool_keys(const std::vector<KeyRun>& keys, const int64_t* offsets, int64_t bags, const float* weights,
                 const float* scales, float* out, const BagLayout& layout = {});

  // Throws std::invalid_argument unless every row is -1 or a live row. Caller holds mutex().
  void check_rows(const int64_t* rows, int64_t n, const char* op) const;

  // Copies rows into out (n x dim); row -1 gives zeros. Caller holds mutex().
  void gather(const int64_t* rows, int64_t n, float* out) const;

  // Row and slot pointers (valid until the row is evicted; blocks never move).
  float* row(int64_t r) const { return ptr(emb_, r, dim_); }
  float* slot_row(int s, int64_t r) const {
    const Slot& sl = slots_[static_cast<size_t>(s)];
    return ptr(sl.blocks, r, sl.width);
  }

  // Removes rows not seen since `min_step` (last_step < min_step), and forgets admission counts
  // of keys not seen since then. Returns how many rows.
  int64_t evict_older_than(int64_t min_step);
  // Keeps at most `capacity` rows, dropping least recently (LRU) or least frequently (LFU) seen
  // ones, ties broken by the older step, and at most `capacity` admission counts, dropped by the
  // same rule. Returns how many rows were dropped.
  int64_t evict_to_capacity(int64_t capacity, EvictPolicy policy);

  // Live rows r in [begin, end) (clamped to the rows ever allocated) last seen at step >= min_step,
  // in row order. Caller holds mutex().
  std::vector<int64_t> live_rows(int64_t begin = 0, int64_t end = INT64_MAX, int64_t min_step = INT64_MIN) const;
  // Grows the ID map once so `rows` live rows fit at load <= 0.5 (bulk loads skip step-wise rehashing).
  // Throws std::length_error past kMaxRows.
  void reserve(int64_t rows);
  // Rows ever allocated: every live row is below this (export iterates [0, row_capacity()) in ranges).
  int64_t row_capacity() const { return allocated_rows_; }
  // When on, eviction records the (id, tag) of every removed row until take_evicted() drains them
  // (delta checkpoints need the keys dropped since the last save).
  void set_eviction_log(bool on);
  std::vector<std::pair<int64_t, uint16_t>> take_evicted();
  int64_t row_id(int64_t r) const { return meta_[static_cast<size_t>(r)].id; }
  uint16_t row_tag(int64_t r) const { return meta_[static_cast<size_t>(r)].tag; }
  int64_t row_step(int64_t r) const { return meta_[static_cast<size_t>(r)].step; }
  int64_t row_freq(int64_t r) const { return meta_[static_cast<size_t>(r)].freq; }

  // Import: inserts or overwrites rows for n keys with their metadata, embeddings (n x dim) and,
  // per slot, values (n x width) or null to reset the slot. Validates everything before writing.
  void assign(const int64_t* ids, const uint16_t* tags, int64_t n, const int64_t* steps, const int64_t* freqs,
              const float* emb, const std::vector<const float*>& slots, int64_t* rows);

  TableCounters counters() const;
  int64_t memory_bytes() const;
  std::mutex& mutex() const { return mutex_; }

 private:
  using Block = std::unique_ptr<float, HugeDeleter>;
  struct Slot {
    std::string name;
    int64_t width;
    float init;
    std::vector<Block> blocks;
  };
  struct RowMeta {  // 24 bytes: one cache-line touch per row for lookups and eviction scans
    int64_t id;
    int64_t step;
    uint32_t freq;
    uint16_t tag;
    uint8_t live;
    uint8_t pad;
  };
  struct Entry {  // one map slot; row < 0 marks it empty
    int64_t id;
    int32_t row;
    uint16_t tag;
    uint16_t pad;
  };

  static Block new_block(int64_t floats) { return Block(static_cast<float*>(huge_alloc(static_cast<size_t>(floats) * 4))); }
  float* ptr(const std::vector<Block>& blocks, int64_t r, int64_t width) const {
    return blocks[static_cast<size_t>(r >> block_shift_)].get() + (r & block_mask_) * width;
  }
  int64_t probe(int64_t id, uint16_t tag) const;  // row or -1
  int64_t probe_from(size_t slot, int64_t id, uint16_t tag) const;  // probe starting at home slot `slot`
  // rows[i] = row of key i or -1, probing a window of keys at a time; returns how many missed.
  // Without `tags`, every key has tag `tag`.
  int64_t probe_keys(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t* rows, uint16_t tag = 0) const;
  // rows[0, m) = rows of keys [v0, v0 + m) of `keys` (run k starts at key starts[k]); returns misses.
  int64_t probe_runs(const std::vector<KeyRun>& keys, const std::vector<int64_t>& starts, int64_t v0, int64_t m,
                     int64_t* rows) const;
  int64_t insert_new(int64_t id, uint16_t tag);  // allocates and maps a row (not initialized)
  // Put e in the first free slot from its home (or from `slot`); safe from several threads at once.
  void claim(const Entry& e);
  void claim_from(size_t slot, const Entry& e);
  template <typename EntryAt>  // claims entry_at(k) for k in [begin, end), skipping rows < 0
  void claim_range(int64_t begin, int64_t end, EntryAt entry_at);
  // Software pipeline over items [begin, end): item i's home slot, slot_of(i) (kSkip: no visit), is
  // computed and its map line prefetched kMapAhead items before visit(i, slot) runs.
  template <bool kWrite, typename SlotOf, typename Visit>
  void pipeline(int64_t begin, int64_t end, SlotOf slot_of, Visit visit) const;
  static constexpr size_t kSkip = ~size_t{0};
  static constexpr int64_t kMapAhead = 32;  // a power of two
  void init_new_rows(const std::vector<int64_t>& rows);
  void remove(int64_t r);
  void reserve_map(int64_t rows);  // rehashes once so min(rows, kMaxRows) live rows keep load <= 0.5
  void add_block();
  size_t home(int64_t id, uint16_t tag) const;

  int64_t dim_;
  Initializer init_;
  int64_t admit_count_;
  int block_shift_;
  int64_t block_mask_;
  std::vector<uint64_t> tag_seeds_;

  std::vector<Entry, HugePageAllocator<Entry>> map_;
  size_t map_mask_ = 0;
  int64_t live_ = 0;

  std::vector<Block> emb_;
  std::vector<float> zero_row_;  // what a missing row (-1) reads
  std::vector<Slot> slots_;
  int64_t allocated_rows_ = 0;  // rows backed by blocks that were ever handed out
  std::vector<int64_t> free_rows_;
  std::vector<RowMeta, HugePageAllocator<RowMeta>> meta_;

  struct KeyHash {
    size_t operator()(const std::pair<int64_t, uint16_t>& k) const;
  };
  struct Pending {
    int64_t count;
    int64_t last_step;
  };
  // Seen-but-not-admitted keys (admit_count > 1 only); pruned by age in evict_older_than and by
  // count in evict_to_capacity.
  std::unordered_map<std::pair<int64_t, uint16_t>, Pending, KeyHash> pending_;
  // A node of pending_ in libstdc++: the key-value pair, the next pointer and the cached hash.
  static constexpr size_t kPendingNodeBytes = sizeof(std::pair<const std::pair<int64_t, uint16_t>, Pending>) + 16;
  void prune_pending(int64_t capacity, EvictPolicy policy);  // keeps at most `capacity` counts

  bool log_evictions_ = false;
  std::vector<std::pair<int64_t, uint16_t>> evicted_log_;

  TableCounters counters_;
  mutable std::mutex mutex_;
};

// Where each run starts when the runs are laid end to end; the last entry is their total.
std::vector<int64_t> run_starts(const std::vector<HashTable::KeyRun>& keys);

// Hash-based de-duplication (radix-partitioned, parallel): unique keys and, per input, the index
// of its key among them. Keys come out grouped by hash partition, then in first-seen order.
void unique_keys(const int64_t* ids, const uint16_t* tags, int64_t n, std::vector<int64_t>& unique_ids,
                 std::vector<uint16_t>& unique_tags, int64_t* inverse);

// De-duplicates row indices in [-1, capacity): unique gets the distinct rows, and x (the rows on
// entry) each one's index among them on return. The rows come out ascending with a -1 last (a
// bitmap over the rows, or over each bucket of rows when the table has 2^22 rows or more and
// more than 64 per key), unless the table is far larger than the batch (hash order then).
// Returns whether a -1 is among them.
bool unique_rows(int64_t* x, int64_t n, int64_t capacity, std::vector<int64_t>& unique);

// 64-bit mixer (the splitmix64 finalizer): spreads sequential and skewed IDs evenly.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The rank that owns an ID among `world` ranks: mix64(id) mod world (recis.embedding.owner), with
// the modulo done by multiplications (Lemire's fastmod on 32-bit halves; a 64-bit division costs
// tens of cycles per key). Exact for world in [1, 65535].
class OwnerRank {
 public:
  explicit OwnerRank(uint32_t world)
      : w_(world), m_(~uint64_t{0} / world + 1), shift_(mod32(1u << 16) * (1u << 16) % world),
        mask_((world & (world - 1)) == 0 ? world - 1 : 0) {}
  [[gnu::always_inline]] uint32_t operator()(int64_t id) const {
    const uint64_t x = mix64(static_cast<uint64_t>(id));
    if (w_ == mask_ + 1) return static_cast<uint32_t>(x) & mask_;  // a power of two: the low bits
    // x mod w = (hi * (2^32 mod w) + lo) mod w, every term below 2^32 for w < 2^16.
    return mod32(mod32(static_cast<uint32_t>(x >> 32)) * shift_ + mod32(static_cast<uint32_t>(x)));
  }

 private:
  [[gnu::always_inline]] uint32_t mod32(uint32_t a) const {
    return static_cast<uint32_t>((static_cast<unsigned __int128>(m_ * a) * w_) >> 64);
  }
  uint32_t w_;
  uint64_t m_;
  uint32_t shift_;  // 2^32 mod w
  uint32_t mask_;   // w - 1 when w is a power of two, else 0
};

}  // namespace recis
