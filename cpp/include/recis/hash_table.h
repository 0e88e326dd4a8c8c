// HashTable: a key (int64 feature ID plus a 16-bit tag naming the logical table, for merged
// tables) -> a row of embeddings (float32, bfloat16 or float16: recis/row_type.h) with float32
// optimizer slots and metadata beside it.
//
// The ID map is open addressing with linear probing at load <= 0.75 over 16-byte slots that hold
// the key, so a probe touches one cache line and never the rows. Rows live in fixed-size blocks
// that never move when the table grows (only the map is rehashed); optimizer slots are parallel
// block arrays under the same row index; per-row metadata (last step, frequency and the map slot
// that holds the row's key) sits in one flat array of 16-byte records that eviction scans without
// touching embeddings, and a bitmap marks the live rows. Freed rows are reused.
//
// Locking: every public method takes the table's lock for the whole call (batch operations run
// their heavy parts on the core's thread pool inside it). Kernels outside the table that update
// rows in place (the sparse optimizers) hold a RowAccess, which holds the lock while it lives.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "recis/buffer.h"
#include "recis/huge_pages.h"
#include "recis/initializer.h"
#include "recis/keys.h"
#include "recis/pooling.h"
#include "recis/row_type.h"

namespace recis {

struct TableCounters {
  int64_t lookups = 0;   // unique keys looked up
  int64_t hits = 0;      // of those, found in the table
  int64_t inserts = 0;   // rows created
  int64_t admitted = 0;  // of those, created on reaching the admission count (min_count > 1)
  int64_t rejected = 0;  // misses that got no row (read-only lookup or below the admission count)
  int64_t evicted = 0;   // rows removed by eviction
};

enum class EvictPolicy { kLru, kLfu };

// A lookup's result: the distinct rows the keys found (ascending, one -1 last when some key has
// no row, or hash order over a table far larger than the batch), each key's index among them,
// and the rows' embeddings (distinct rows x dim; empty unless gathered).
struct Found {
  std::vector<int64_t> rows;
  Buffer index;  // int64, one per key
  Buffer embeddings;
};

// Live rows with their metadata, embeddings (size x dim) and slots (size x width each).
struct RowExport {
  std::vector<int64_t> ids, steps, freqs;
  std::vector<int32_t> tags;
  Buffer embeddings;
  std::vector<Buffer> slots;  // in slot order
  size_t size() const { return ids.size(); }
};

class HashTable {
 public:
  // Row indices are int32 in the ID map, so a table holds at most 2^31 - 1 rows; widths are capped
  // so that a block's size (block_rows x width floats) can never overflow.
  static constexpr int64_t kMaxRows = (int64_t{1} << 31) - 1;
  static constexpr int64_t kMaxWidth = int64_t{1} << 20;  // floats per row: dim, slot widths, block rows

  // dim: embedding width. admit_count: a key gets a row once seen this many times (1: at once);
  // counting happens in a side map and allocates no row. block_rows: rows per block. type: how
  // rows are stored (every read widens them to float32, every write rounds them: recis/row_type.h).
  HashTable(int64_t dim, Initializer init, int64_t admit_count, int64_t block_rows, RowType type = RowType::kF32);

  int64_t dim() const { return dim_; }        // fixed at construction: no lock
  RowType row_type() const { return type_; }  // fixed at construction: no lock
  // bfloat16 rows only: optimizer updates round stochastically instead of to nearest.
  void set_stochastic_rounding(bool on);
  bool stochastic_rounding() const;
  int64_t size() const;          // live rows
  int64_t row_capacity() const;  // rows ever allocated: every live row is below it

  // Seed for the rows of logical table `tag` (merged tables: one tag per logical table).
  void set_tag_seed(int tag, uint64_t seed);

  // Adds an optimizer slot of `width` floats per row, initialized to `init` for every row (and
  // reset to it when a row is created or reused). Returns its index.
  int add_slot(const std::string& name, int64_t width, float init);
  std::vector<std::string> slot_names() const;
  std::vector<int64_t> slot_widths() const;

  // Finds the keys' rows (repeats allowed), inserts the distinct misses (when `insert` and
  // admitted) and de-duplicates the rows. With `insert` every found row is marked seen at `step`
  // (last step, frequency + 1); a read-only lookup leaves the metadata alone. With `gather` the
  // rows' embeddings are copied out (-1 gives zeros).
  Found lookup(const std::vector<KeyRun>& keys, int64_t step, bool insert, bool gather);

  // Pools rows[index[j]] per bag straight from the blocks into out (bags x dim, or the batch-major
  // layout). Rows must be -1 or < row_capacity() (checked); an evicted row reads whatever reuses it.
  void pool(const int64_t* rows, int64_t num_rows, const int64_t* index, const int64_t* offsets, int64_t bags,
            const float* weights, const float* scales, float* out, const BagLayout& layout = {}) const;

  // Read-only pooled lookup straight from the keys (no de-duplication, no insert, nothing
  // recorded; missing keys read zeros): bag b pools the rows of keys [offsets[b], offsets[b + 1])
  // of the runs laid end to end, as pool does. Counts every key as a lookup.
  void pool_keys(const std::vector<KeyRun>& keys, const int64_t* offsets, int64_t bags, const float* weights,
                 const float* scales, float* out, const BagLayout& layout = {});

  // Copies live rows into out (n x dim); row -1 gives zeros, any other non-live row throws
  // std::invalid_argument naming `op`.
  void gather(const int64_t* rows, int64_t n, float* out, const char* op) const;

  // Removes rows not seen since `min_step` (last step < min_step), and forgets admission counts
  // of keys not seen since then. Returns how many rows.
  int64_t evict_older_than(int64_t min_step);
  // Keeps at most `capacity` rows, dropping least recently (LRU) or least frequently (LFU) seen
  // ones, ties broken by the older step, then the smaller key (ID, then tag), and at most
  // `capacity` admission counts, dropped by the same rule. Returns how many rows were dropped.
  int64_t evict_to_capacity(int64_t capacity, EvictPolicy policy);

  // Grows the ID map once so `rows` live rows fit at load <= 0.75 (bulk loads skip step-wise
  // rehashing). Throws std::length_error past kMaxRows.
  void reserve(int64_t rows);

  // When on, eviction records the (id, tag) of every removed row until take_evicted() drains them
  // (delta checkpoints need the keys dropped since the last save).
  void set_eviction_log(bool on);
  std::vector<std::pair<int64_t, uint16_t>> take_evicted();

  // Live rows with row index in [begin, end) last seen at step >= min_step, in row order: one
  // consistent snapshot (savers walk [0, row_capacity()) in ranges to stream a big table).
  RowExport export_rows(int64_t begin, int64_t end, int64_t min_step) const;

  // Inserts or overwrites rows for n keys with their metadata (tags in [0, 65535], freqs in
  // [0, 2^32 - 1]), embeddings (n x dim) and, per slot, values (n x width) or null to reset the
  // slot. Validates everything before writing. Returns the keys' rows.
  std::vector<int64_t> assign(const int64_t* ids, const int32_t* tags, int64_t n, const int64_t* steps,
                              const int64_t* freqs, const float* embeddings, const std::vector<const float*>& slots);

  TableCounters counters() const;
  // Bytes held by row blocks, slots, metadata, the ID map, admission counts and the eviction log.
  int64_t memory_bytes() const;

  // Direct access to rows for kernels outside the table that update them in place (the sparse
  // optimizers). Holds the table's lock while it lives: take one per batch.
  class RowAccess {
   public:
    int64_t dim() const { return t_->dim_; }
    RowType row_type() const { return t_->type_; }
    bool stochastic_rounding() const { return t_->stochastic_; }
    int num_slots() const { return static_cast<int>(t_->slots_.size()); }
    int64_t slot_width(int s) const { return t_->slots_[static_cast<size_t>(s)].width; }
    // Row r's dim stored elements (of row_type()): blocks never move, valid until evicted.
    void* embedding(int64_t r) const { return t_->row(r); }
    float* slot(int s, int64_t r) const { return t_->slot_row(s, r); }
    // Throws std::invalid_argument naming `op` unless every row is -1 or a live row.
    void check_rows(const int64_t* rows, int64_t n, const char* op) const { t_->check_rows(rows, n, op); }

   private:
    friend class HashTable;
    explicit RowAccess(HashTable& t) : t_(&t), lock_(t.mutex_) {}
    HashTable* t_;
    std::unique_lock<std::mutex> lock_;
  };
  RowAccess access_rows() { return RowAccess(*this); }

 private:
  using Block = std::unique_ptr<float, HugeDeleter>;
  struct Slot {
    std::string name;
    int64_t width;
    float init;
    std::vector<Block> blocks;
  };
  struct RowMeta {  // 16 bytes, 4 to a cache line: one line per row for lookups and eviction scans
    int64_t step;
    uint32_t freq;
    uint32_t slot;  // the map slot holding the row's key (ID and tag): set by claim_from
  };
  struct Entry {  // one map slot; row < 0 marks it empty
    int64_t id;
    int32_t row;
    uint16_t tag;
    uint16_t pad;
  };

  // Everything below runs with mutex_ held by the public method that called it.
  static Block new_block(int64_t bytes) {
    return Block(static_cast<float*>(huge_alloc(static_cast<size_t>((bytes + 3) / 4) * 4)));
  }
  float* ptr(const std::vector<Block>& blocks, int64_t r, int64_t width) const {
    return blocks[static_cast<size_t>(r >> block_shift_)].get() + (r & block_mask_) * width;
  }
  // Row r's stored elements.
  void* row(int64_t r) const {
    auto* block = reinterpret_cast<unsigned char*>(emb_[static_cast<size_t>(r >> block_shift_)].get());
    return block + (r & block_mask_) * row_bytes_;
  }
  // Calls make_rows(blocks, zero) once with the row blocks as arrays of the stored element type
  // (float, Bf16 or F16) and the zero row as one, for pooling straight from the blocks.
  template <typename F>
  void with_blocks(F&& make_rows) const {
    auto typed = [&](auto element) {
      using T = decltype(element);
      std::vector<const T*> blocks;
      blocks.reserve(emb_.size());
      for (const Block& b : emb_) blocks.push_back(reinterpret_cast<const T*>(b.get()));
      make_rows(blocks, reinterpret_cast<const T*>(zero_row_.data()));  // zero bits read 0 in every type
    };
    if (type_ == RowType::kF32)
      typed(float{});
    else if (type_ == RowType::kBf16)
      typed(Bf16{});
    else
      typed(F16{});
  }
  float* slot_row(int s, int64_t r) const {
    const Slot& sl = slots_[static_cast<size_t>(s)];
    return ptr(sl.blocks, r, sl.width);
  }
  void check_rows(const int64_t* rows, int64_t n, const char* op) const;
  void gather_rows(const int64_t* rows, int64_t n, float* out) const;
  // Marks each (distinct) row seen at `step`, copying it into out unless out is null.
  void touch_and_gather(const int64_t* rows, int64_t n, int64_t step, float* out);
  // n distinct keys a probe just missed: each is inserted and initialized when `insert` and
  // admitted, rows[i] gets its row or -1. Returns the rows created. Without admission counting,
  // rows are assigned in key order and the map filled in parallel.
  int64_t insert_missing(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t step, bool insert, int64_t* rows);
  int64_t probe(int64_t id, uint16_t tag) const;                    // row or -1
  int64_t probe_from(size_t slot, int64_t id, uint16_t tag) const;  // probe starting at home slot `slot`
  // rows[i] = row of key i or -1, probing a window of keys at a time; returns how many missed.
  // Without `tags`, every key has tag `tag`.
  int64_t probe_keys(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t* rows, uint16_t tag = 0) const;
  // rows[0, m) = rows of keys [v0, v0 + m) of `keys` (run k starts at key starts[k]); returns misses.
  int64_t probe_runs(const std::vector<KeyRun>& keys, const std::vector<int64_t>& starts, int64_t v0, int64_t m,
                     int64_t* rows) const;
  int64_t insert_new(int64_t id, uint16_t tag);  // allocates and maps a row (not initialized)
  // Puts e in the first free slot from its home (or from `slot`) and points its row's metadata at
  // it; safe from several threads at once (distinct rows).
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
  // Initializes rows[k] (skipping -1), the new row of key (ids[k], tags[k] or 0), and its slots.
  void init_new_rows(const int64_t* ids, const uint16_t* tags, const int64_t* rows, int64_t n);
  void remove(int64_t r);
  void reserve_map(int64_t rows);  // rehashes once so min(rows, kMaxRows) live rows keep load <= 0.75
  void add_block();
  size_t home(int64_t id, uint16_t tag) const { return static_cast<size_t>(key_hash(id, tag)) & map_mask_; }
  void prune_pending(int64_t capacity, EvictPolicy policy);  // keeps at most `capacity` counts
  // Row r's key, through its metadata's map slot (r must be live).
  const Entry& key_of(int64_t r) const { return map_[meta_[static_cast<size_t>(r)].slot]; }
  bool alive(int64_t r) const { return (alive_[static_cast<size_t>(r) >> 6] >> (r & 63)) & 1; }
  // A new row (already claimed: its slot is set) becomes live, never seen yet. Atomic on the
  // bitmap: parallel inserts share its words.
  void start_row(int64_t r) {
    meta_[static_cast<size_t>(r)].step = 0;
    meta_[static_cast<size_t>(r)].freq = 0;
    __atomic_fetch_or(&alive_[static_cast<size_t>(r) >> 6], uint64_t{1} << (r & 63), __ATOMIC_RELAXED);
  }

  int64_t dim_;
  RowType type_;
  int64_t row_bytes_;  // dim_ stored elements
  bool stochastic_ = false;
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
  std::vector<uint64_t> alive_;  // bit r: row r is live

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

  bool log_evictions_ = false;
  std::vector<std::pair<int64_t, uint16_t>> evicted_log_;

  TableCounters counters_;
  mutable std::mutex mutex_;
};

}  // namespace recis
