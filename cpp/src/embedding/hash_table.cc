// HashTable: the ID map, rows, admission and eviction. A lookup probes every key in parallel, then
// inserts the distinct misses (rows handed out in key order, map slots claimed in parallel, or one
// by one under admission counting), then initializes the new rows in parallel.
#include "recis/hash_table.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "recis/parallel.h"

namespace recis {

namespace {
template <typename P>
using Stored = std::remove_cv_t<std::remove_pointer_t<P>>;  // a row pointer's element type
}  // namespace
namespace {

constexpr int64_t kProbeGrain = 2048;  // keys a thread probes at least
constexpr int kPrefetchAhead = 8;      // rows ahead a copy loop prefetches

std::string str(int64_t v) { return std::to_string(v); }

}  // namespace

size_t HashTable::KeyHash::operator()(const std::pair<int64_t, uint16_t>& k) const {
  return static_cast<size_t>(mix64(static_cast<uint64_t>(k.first) ^ (static_cast<uint64_t>(k.second) << 48)));
}

HashTable::HashTable(int64_t dim, Initializer init, int64_t admit_count, int64_t block_rows, RowType type)
    : dim_(dim), type_(type), row_bytes_(dim * row_type_bytes(type)), init_(init), admit_count_(admit_count) {
  if (dim < 1 || dim > kMaxWidth) throw std::invalid_argument("HashTable: dim must be in [1, 2^20], got " + str(dim));
  if (admit_count < 1) throw std::invalid_argument("HashTable: admit_count must be >= 1, got " + str(admit_count));
  if (block_rows < 1 || block_rows > kMaxWidth || (block_rows & (block_rows - 1)))
    throw std::invalid_argument("HashTable: block_rows must be a power of two in [1, 2^20], got " + str(block_rows));
  block_shift_ = 0;
  while ((int64_t{1} << block_shift_) < block_rows) ++block_shift_;
  block_mask_ = block_rows - 1;
  tag_seeds_.assign(1, 0);
  zero_row_.assign(static_cast<size_t>(dim), 0.0f);
  map_.assign(1024, Entry{0, -1, 0, 0});
  map_mask_ = map_.size() - 1;
}

void HashTable::set_stochastic_rounding(bool on) {
  if (on && type_ != RowType::kBf16)
    throw std::invalid_argument(std::string("HashTable: stochastic rounding is for bfloat16 rows, this table stores ") +
                                row_type_name(type_));
  std::lock_guard<std::mutex> lock(mutex_);
  stochastic_ = on;
}

bool HashTable::stochastic_rounding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stochastic_;
}

int64_t HashTable::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_;
}

int64_t HashTable::row_capacity() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return allocated_rows_;
}

std::vector<std::string> HashTable::slot_names() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> names;
  names.reserve(slots_.size());
  for (const Slot& s : slots_) names.push_back(s.name);
  return names;
}

std::vector<int64_t> HashTable::slot_widths() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> widths;
  widths.reserve(slots_.size());
  for (const Slot& s : slots_) widths.push_back(s.width);
  return widths;
}

void HashTable::set_tag_seed(int tag, uint64_t seed) {
  if (tag < 0 || tag > 0xffff) throw std::invalid_argument("HashTable: tag must be in [0, 65535], got " + str(tag));
  std::lock_guard<std::mutex> lock(mutex_);
  if (tag_seeds_.size() <= static_cast<size_t>(tag)) tag_seeds_.resize(static_cast<size_t>(tag) + 1, 0);
  tag_seeds_[static_cast<size_t>(tag)] = seed;
}

int HashTable::add_slot(const std::string& name, int64_t width, float init) {
  if (width < 1 || width > kMaxWidth)
    throw std::invalid_argument("HashTable.add_slot: width must be in [1, 2^20], got " + str(width));
  std::lock_guard<std::mutex> lock(mutex_);
  for (const Slot& s : slots_)
    if (s.name == name) throw std::invalid_argument("HashTable.add_slot: slot '" + name + "' exists already");
  Slot s{name, width, init, {}};
  const int64_t block_rows = block_mask_ + 1;
  for (size_t b = 0; b < emb_.size(); ++b) {
    s.blocks.push_back(new_block(block_rows * width * 4));
    std::fill(s.blocks.back().get(), s.blocks.back().get() + block_rows * width, init);
  }
  slots_.push_back(std::move(s));
  return static_cast<int>(slots_.size()) - 1;
}

int64_t HashTable::probe(int64_t id, uint16_t tag) const { return probe_from(home(id, tag), id, tag); }

int64_t HashTable::probe_from(size_t i, int64_t id, uint16_t tag) const {
  for (;; i = (i + 1) & map_mask_) {
    const Entry& e = map_[i];
    if (e.row < 0) return -1;
    if (e.id == id && e.tag == tag) return e.row;
  }
}

void HashTable::reserve_map(int64_t rows) {
  rows = std::min(rows, kMaxRows);  // past it inserts fail anyway; the doubling below must end
  size_t cap = map_.size();
  while (static_cast<size_t>(rows) * 4 > cap * 3) cap *= 2;
  if (cap == map_.size()) return;
  std::vector<Entry, HugePageAllocator<Entry>> old(cap);  // fresh pages: filled (faulted in) in parallel
  parallel_for(static_cast<int64_t>(cap), kMinParallel, [&](int64_t begin, int64_t end) {
    std::fill(old.begin() + begin, old.begin() + end, Entry{0, -1, 0, 0});
  });
  old.swap(map_);
  map_mask_ = map_.size() - 1;
  parallel_for(static_cast<int64_t>(old.size()), kMinChunk, [&](int64_t begin, int64_t end) {
    claim_range(begin, end, [&](int64_t k) { return old[static_cast<size_t>(k)]; });
  });
}

template <bool kWrite, typename SlotOf, typename Visit>
void HashTable::pipeline(int64_t begin, int64_t end, SlotOf slot_of, Visit visit) const {
  // A rolling distance keeps kMapAhead lines in flight throughout (probing in windows, prefetch
  // 32 then visit 32, would let the misses drain at every window's end).
  size_t ring[kMapAhead];
  auto fetch = [&](int64_t i) {
    const size_t s = slot_of(i);
    ring[i & (kMapAhead - 1)] = s;
    if (s != kSkip) __builtin_prefetch(&map_[s], kWrite);
  };
  for (int64_t i = begin; i < end && i < begin + kMapAhead; ++i) fetch(i);
  for (int64_t i = begin; i < end; ++i) {
    const size_t s = ring[i & (kMapAhead - 1)];
    if (i + kMapAhead < end) fetch(i + kMapAhead);  // the same ring entry, read above
    if (s != kSkip) visit(i, s);
  }
}

template <typename EntryAt>
void HashTable::claim_range(int64_t begin, int64_t end, EntryAt entry_at) {
  pipeline<true>(
      begin, end,
      [&](int64_t k) {
        const Entry e = entry_at(k);
        return e.row < 0 ? kSkip : home(e.id, e.tag);
      },
      [&](int64_t k, size_t slot) { claim_from(slot, entry_at(k)); });
}

void HashTable::claim(const Entry& e) { claim_from(home(e.id, e.tag), e); }

void HashTable::claim_from(size_t slot, const Entry& e) {
  // Linear probing to the first empty slot, taken by compare-and-swap on its row, so threads can
  // fill the map at once (distinct keys; nobody reads a slot's ID until they are done).
  for (size_t i = slot;; i = (i + 1) & map_mask_) {
    int32_t empty = -1;
    if (__atomic_load_n(&map_[i].row, __ATOMIC_RELAXED) < 0 &&
        __atomic_compare_exchange_n(&map_[i].row, &empty, e.row, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      map_[i].id = e.id;
      map_[i].tag = e.tag;
      meta_[static_cast<size_t>(e.row)].slot = static_cast<uint32_t>(i);
      return;
    }
  }
}

void HashTable::add_block() {
  const int64_t block_rows = block_mask_ + 1;
  emb_.push_back(new_block(block_rows * row_bytes_));
  for (Slot& s : slots_) s.blocks.push_back(new_block(block_rows * s.width * 4));
  // Left uninitialized: no row at or past allocated_rows_ is ever read.
  meta_.resize(static_cast<size_t>(emb_.size()) << block_shift_);
  alive_.resize((meta_.size() + 63) / 64, 0);
}

int64_t HashTable::insert_new(int64_t id, uint16_t tag) {
  if (live_ >= kMaxRows) throw std::length_error("HashTable: more than 2^31 - 1 rows in one table");
  reserve_map(live_ + 1);
  int64_t r;
  if (!free_rows_.empty()) {
    r = free_rows_.back();
    free_rows_.pop_back();
  } else {
    if (allocated_rows_ == static_cast<int64_t>(emb_.size()) << block_shift_) add_block();
    r = allocated_rows_++;
  }
  claim(Entry{id, static_cast<int32_t>(r), tag, 0});
  start_row(r);
  ++live_;
  return r;
}

void HashTable::init_new_rows(const int64_t* ids, const uint16_t* tags, const int64_t* rows, int64_t n) {
  parallel_for(n, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> wide(type_ == RowType::kF32 ? 0 : static_cast<size_t>(dim_));  // 16-bit rows start here
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r = rows[k];
      if (r < 0) continue;
      const uint16_t tag = tags ? tags[k] : 0;
      const uint64_t seed = tag < tag_seeds_.size() ? tag_seeds_[tag] : 0;
      if (type_ == RowType::kF32) {
        init_row(init_, seed, ids[k], static_cast<float*>(row(r)), dim_);
      } else {
        init_row(init_, seed, ids[k], wide.data(), dim_);
        store_row(type_, wide.data(), row(r), dim_);
      }
      for (size_t s = 0; s < slots_.size(); ++s) {
        float* p = slot_row(static_cast<int>(s), r);
        std::fill(p, p + slots_[s].width, slots_[s].init);
      }
    }
  });
}

int64_t HashTable::insert_missing(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t step, bool insert,
                                  int64_t* rows) {
  int64_t created = 0, rejected = 0;
  if (insert) reserve_map(live_ + n);  // one rehash at most
  if (insert && admit_count_ == 1) {
    // Every key gets a row: rows are assigned here in key order (freed ones first), so a key's row
    // never depends on thread timing; then the map slots are claimed in parallel.
    if (live_ + n > kMaxRows) throw std::length_error("HashTable: more than 2^31 - 1 rows in one table");
    for (int64_t i = 0; i < n; ++i) {
      if (!free_rows_.empty()) {
        rows[i] = free_rows_.back();
        free_rows_.pop_back();
      } else {
        if (allocated_rows_ == static_cast<int64_t>(emb_.size()) << block_shift_) add_block();
        rows[i] = allocated_rows_++;
      }
    }
    parallel_for(n, kProbeGrain, [&](int64_t begin, int64_t end) {
      claim_range(begin, end, [&](int64_t i) {
        return Entry{ids[i], static_cast<int32_t>(rows[i]), tags ? tags[i] : uint16_t{0}, 0};
      });
      for (int64_t i = begin; i < end; ++i) start_row(rows[i]);
    });
    live_ += n;
    created = n;
  } else {  // serial: admission counts, or a read-only lookup
    for (int64_t i = 0; i < n; ++i) {
      rows[i] = -1;
      const uint16_t tag = tags ? tags[i] : 0;
      if (!insert) {
        ++rejected;
        continue;
      }
      auto it = pending_.try_emplace({ids[i], tag}, Pending{0, step}).first;
      it->second.last_step = step;
      if (++it->second.count < admit_count_) {
        ++rejected;
        continue;
      }
      pending_.erase(it);
      ++counters_.admitted;
      rows[i] = insert_new(ids[i], tag);
      ++created;
    }
  }
  init_new_rows(ids, tags, rows, n);
  counters_.lookups += n;
  counters_.inserts += created;
  counters_.rejected += rejected;
  return created;
}

Found HashTable::lookup(const std::vector<KeyRun>& keys, int64_t step, bool insert, bool gather) {
  const std::vector<int64_t> starts = run_starts(keys);
  const int64_t n = starts.back();
  Found found;
  found.index = Buffer(static_cast<size_t>(n) * sizeof(int64_t));
  // Each key's row first (probe every key, repeats included: a repeat finds its entry in cache,
  // which is cheaper than de-duplicating the keys first), then its index among the distinct rows.
  int64_t* key_rows = found.index.as<int64_t>();
  std::lock_guard<std::mutex> lock(mutex_);
  std::atomic<bool> any_missed{false};
  parallel_for(n, kProbeGrain, [&](int64_t begin, int64_t end) {
    if (probe_runs(keys, starts, begin, end - begin, key_rows + begin))
      any_missed.store(true, std::memory_order_relaxed);
  });
  std::vector<int64_t> missed;  // positions of missing keys (a scan only when there are any)
  if (any_missed.load())
    for (int64_t i = 0; i < n; ++i)
      if (key_rows[i] < 0) missed.push_back(i);
  int64_t created = 0;
  if (!missed.empty()) {  // the distinct missing keys go through admission and insertion once
    const int64_t m = static_cast<int64_t>(missed.size());
    ScratchArray<int64_t> miss_ids(missed.size()), miss_index(missed.size());
    ScratchArray<uint16_t> miss_tags(missed.size());
    size_t run = 0;
    for (int64_t k = 0; k < m; ++k) {  // positions ascend: walk the runs along
      while (missed[k] >= starts[run + 1]) ++run;
      const KeyRun& r = keys[run];
      const int64_t at = missed[k] - starts[run];
      miss_ids[k] = r.ids[at];
      miss_tags[k] = r.tags ? r.tags[at] : r.tag;
    }
    std::vector<int64_t> uids, rows;
    std::vector<uint16_t> utags;
    unique_keys(miss_ids.data(), miss_tags.data(), m, uids, utags, miss_index.data());
    rows.resize(uids.size());
    created = insert_missing(uids.data(), utags.data(), static_cast<int64_t>(uids.size()), step, insert, rows.data());
    for (int64_t k = 0; k < m; ++k) key_rows[missed[k]] = rows[static_cast<size_t>(miss_index[k])];
  }
  const bool none = unique_rows(key_rows, n, allocated_rows_, found.rows, key_rows);
  // Distinct rows found by the probe (the missing keys were counted by insert_missing).
  const int64_t hit = static_cast<int64_t>(found.rows.size()) - none - created;
  counters_.lookups += hit;
  counters_.hits += hit;
  const auto u = static_cast<int64_t>(found.rows.size());
  if (gather) found.embeddings = Buffer(static_cast<size_t>(u * dim_) * sizeof(float));
  float* out = gather ? found.embeddings.as<float>() : nullptr;
  if (insert)
    touch_and_gather(found.rows.data(), u, step, out);
  else if (out)  // read-only lookups leave the metadata alone: eval traffic must not keep rows alive
    gather_rows(found.rows.data(), u, out);
  return found;
}

int64_t HashTable::probe_keys(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t* rows, uint16_t tag) const {
  int64_t missing = 0;
  pipeline<false>(
      0, n, [&](int64_t i) { return home(ids[i], tags ? tags[i] : tag); },
      [&](int64_t i, size_t slot) {
        rows[i] = probe_from(slot, ids[i], tags ? tags[i] : tag);
        missing += rows[i] < 0;
      });
  return missing;
}

int64_t HashTable::probe_runs(const std::vector<KeyRun>& keys, const std::vector<int64_t>& starts, int64_t v0,
                              int64_t m, int64_t* rows) const {
  int64_t missing = 0;
  auto k = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), v0) - starts.begin()) - 1;
  for (int64_t v = v0; v < v0 + m; ++k) {
    const int64_t stop = std::min(v0 + m, starts[k + 1]), at = v - starts[k];
    if (stop > v)
      missing += probe_keys(keys[k].ids + at, keys[k].tags ? keys[k].tags + at : nullptr, stop - v, rows + (v - v0),
                            keys[k].tag);
    v = std::max(v, stop);
  }
  return missing;
}

void HashTable::pool_keys(const std::vector<KeyRun>& keys, const int64_t* offsets, int64_t bags, const float* weights,
                          const float* scales, float* out, const BagLayout& layout) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::vector<int64_t> starts = run_starts(keys);
  // Pieces of 256 bags: probe a piece's keys, then pool it while its rows are still in cache.
  constexpr int64_t kBags = 256;
  std::atomic<int64_t> missed{0};
  with_blocks([&](const auto& blocks, const auto* zero) {
    parallel_for((bags + kBags - 1) / kBags, 1, [&](int64_t pb, int64_t pe) {
      std::vector<int64_t> rows, position, local(kBags + 1);
      int64_t missing = 0;
      for (int64_t p = pb; p < pe; ++p) {
        const int64_t b0 = p * kBags, nb = std::min(kBags, bags - b0);
        const int64_t v0 = offsets[b0], m = offsets[b0 + nb] - v0;
        rows.resize(static_cast<size_t>(m));
        missing += probe_runs(keys, starts, v0, m, rows.data());
        for (int64_t k = static_cast<int64_t>(position.size()); k < m; ++k) position.push_back(k);
        for (int64_t k = 0; k <= nb; ++k) local[static_cast<size_t>(k)] = offsets[b0 + k] - v0;
        BagLayout piece = layout;
        piece.first += b0;
        const TableRowsOf<Stored<decltype(zero)>> source{blocks.data(), block_shift_, block_mask_,
                                                         dim_,          rows.data(),  zero};
        pooled_forward_rows(source, m, dim_, position.data(), local.data(), nb, weights ? weights + v0 : nullptr,
                            scales ? scales + b0 : nullptr, out, piece, nullptr);  // positions made here
      }
      missed += missing;
    });
  });
  counters_.lookups += offsets[bags];
  counters_.hits += offsets[bags] - missed.load();
  counters_.rejected += missed.load();
}

void HashTable::check_rows(const int64_t* rows, int64_t n, const char* op) const {
  auto bad = [&](int64_t r) { return r != -1 && (r < -1 || r >= allocated_rows_ || !alive(r)); };
  std::atomic<bool> any{false};  // parallel check; the first offender is searched only on failure
  // A row below allocated_rows_ is dead only while it waits in free_rows_: with none waiting
  // (always, without eviction), a range check does, and no row's metadata is read.
  const bool all_live = free_rows_.empty();
  parallel_for(n, kMinChunk, [&](int64_t begin, int64_t end) {
    if (all_live) {
      if (!all_in_range(rows, begin, end, -1, allocated_rows_)) any.store(true, std::memory_order_relaxed);
      return;
    }
    for (int64_t i = begin; i < end; ++i)
      if (bad(rows[i])) any.store(true, std::memory_order_relaxed);
  });
  for (int64_t i = 0; any.load() && i < n; ++i)
    if (bad(rows[i]))
      throw std::invalid_argument(std::string(op) + ": rows[" + str(i) + "]=" + str(rows[i]) +
                                  " is not a live row of this table (or -1)");
}

void HashTable::pool(const int64_t* rows, int64_t num_rows, const int64_t* index, const int64_t* offsets, int64_t bags,
                     const float* weights, const float* scales, float* out, const BagLayout& layout) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool fine = all_in_range(rows, 0, num_rows, -1, allocated_rows_);
  for (int64_t u = 0; !fine && u < num_rows; ++u)
    if (rows[u] < -1 || rows[u] >= allocated_rows_)
      throw std::invalid_argument("HashTable.pool: rows[" + str(u) + "]=" + str(rows[u]) +
                                  " is not a row of this table");
  with_blocks([&](const auto& blocks, const auto* zero) {
    const TableRowsOf<Stored<decltype(zero)>> source{blocks.data(), block_shift_, block_mask_, dim_, rows, zero};
    pooled_forward_rows(source, num_rows, dim_, index, offsets, bags, weights, scales, out, layout, "HashTable.pool");
  });
}

void HashTable::touch_and_gather(const int64_t* rows, int64_t n, int64_t step, float* out) {
  const auto bytes = static_cast<size_t>(row_bytes_);
  parallel_for(n, std::max<int64_t>(1, kMinChunk / dim_), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ahead = i + kPrefetchAhead < end ? rows[i + kPrefetchAhead] : -1;
      if (ahead >= 0) {
        if (out) prefetch_lines(row(ahead), bytes);
        __builtin_prefetch(&meta_[static_cast<size_t>(ahead)], 1);
      }
      const int64_t r = rows[i];
      if (r >= 0) {
        RowMeta& m = meta_[static_cast<size_t>(r)];
        m.step = step;
        m.freq += m.freq != UINT32_MAX;
        if (out) load_row(type_, row(r), out + i * dim_, dim_);
      } else if (out) {
        std::memset(out + i * dim_, 0, static_cast<size_t>(dim_) * sizeof(float));
      }
    }
  });
}

void HashTable::gather(const int64_t* rows, int64_t n, float* out, const char* op) const {
  std::lock_guard<std::mutex> lock(mutex_);
  check_rows(rows, n, op);
  gather_rows(rows, n, out);
}

void HashTable::gather_rows(const int64_t* rows, int64_t n, float* out) const {
  const auto bytes = static_cast<size_t>(row_bytes_);
  parallel_for(n, std::max<int64_t>(1, kMinChunk / dim_), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (i + kPrefetchAhead < end && rows[i + kPrefetchAhead] >= 0)
        prefetch_lines(row(rows[i + kPrefetchAhead]), bytes);
      if (rows[i] >= 0)
        load_row(type_, row(rows[i]), out + i * dim_, dim_);
      else
        std::memset(out + i * dim_, 0, static_cast<size_t>(dim_) * sizeof(float));
    }
  });
}

void HashTable::remove(int64_t r) {
  // Backward-shift deletion keeps linear-probing chains intact without tombstones.
  size_t i = meta_[static_cast<size_t>(r)].slot;
  if (log_evictions_) evicted_log_.emplace_back(map_[i].id, map_[i].tag);
  for (size_t j = (i + 1) & map_mask_;; j = (j + 1) & map_mask_) {
    if (map_[j].row < 0) break;
    const size_t h = home(map_[j].id, map_[j].tag);
    // Move entry j into the hole at i unless its home lies cyclically in (i, j].
    const bool stays = (i <= j) ? (i < h && h <= j) : (i < h || h <= j);
    if (!stays) {
      map_[i] = map_[j];
      meta_[static_cast<size_t>(map_[i].row)].slot = static_cast<uint32_t>(i);
      i = j;
    }
  }
  map_[i].row = -1;
  alive_[static_cast<size_t>(r) >> 6] &= ~(uint64_t{1} << (r & 63));
  free_rows_.push_back(r);
  --live_;
  ++counters_.evicted;
}

int64_t HashTable::evict_older_than(int64_t min_step) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = pending_.begin(); it != pending_.end();)
    it = it->second.last_step < min_step ? pending_.erase(it) : std::next(it);
  int64_t n = 0;
  for (int64_t r = 0; r < allocated_rows_; ++r) {
    if (alive(r) && meta_[static_cast<size_t>(r)].step < min_step) {
      remove(r);
      ++n;
    }
  }
  return n;
}

int64_t HashTable::evict_to_capacity(int64_t capacity, EvictPolicy policy) {
  if (capacity < 0) throw std::invalid_argument("HashTable.evict: capacity must be >= 0, got " + str(capacity));
  std::lock_guard<std::mutex> lock(mutex_);
  prune_pending(capacity, policy);  // admission counts are bounded like the rows they may become
  const int64_t excess = live_ - capacity;
  if (excess <= 0) return 0;
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(live_));
  for (int64_t r = 0; r < allocated_rows_; ++r)
    if (alive(r)) rows.push_back(r);
  auto older = [&](int64_t a, int64_t b) {  // ties go by key, so every implementation drops the same rows
    const RowMeta &ma = meta_[static_cast<size_t>(a)], &mb = meta_[static_cast<size_t>(b)];
    if (policy == EvictPolicy::kLfu && ma.freq != mb.freq) return ma.freq < mb.freq;
    if (ma.step != mb.step) return ma.step < mb.step;
    const Entry &ka = key_of(a), &kb = key_of(b);
    if (ka.id != kb.id) return ka.id < kb.id;
    return ka.tag < kb.tag;
  };
  std::nth_element(rows.begin(), rows.begin() + (excess - 1), rows.end(), older);
  for (int64_t k = 0; k < excess; ++k) remove(rows[static_cast<size_t>(k)]);
  return excess;
}

void HashTable::prune_pending(int64_t capacity, EvictPolicy policy) {
  const auto excess = static_cast<int64_t>(pending_.size()) - capacity;
  if (excess <= 0) return;
  using It = decltype(pending_)::iterator;
  std::vector<It> keys;
  keys.reserve(pending_.size());
  for (auto it = pending_.begin(); it != pending_.end(); ++it) keys.push_back(it);
  auto older = [&](const It& a, const It& b) {
    if (policy == EvictPolicy::kLfu && a->second.count != b->second.count) return a->second.count < b->second.count;
    if (a->second.last_step != b->second.last_step) return a->second.last_step < b->second.last_step;
    return a->first < b->first;
  };
  std::nth_element(keys.begin(), keys.begin() + (excess - 1), keys.end(), older);
  for (int64_t k = 0; k < excess; ++k) pending_.erase(keys[static_cast<size_t>(k)]);
}

RowExport HashTable::export_rows(int64_t begin, int64_t end, int64_t min_step) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> rows;
  for (int64_t r = std::max<int64_t>(begin, 0), stop = std::min(end, allocated_rows_); r < stop; ++r) {
    if (alive(r) && meta_[static_cast<size_t>(r)].step >= min_step) rows.push_back(r);
  }
  const size_t n = rows.size();
  RowExport out;
  out.ids.resize(n);
  out.steps.resize(n);
  out.freqs.resize(n);
  out.tags.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const RowMeta& m = meta_[static_cast<size_t>(rows[i])];
    const Entry& key = key_of(rows[i]);
    out.ids[i] = key.id;
    out.tags[i] = key.tag;
    out.steps[i] = m.step;
    out.freqs[i] = m.freq;
  }
  out.embeddings = Buffer(n * static_cast<size_t>(dim_) * sizeof(float));
  gather_rows(rows.data(), static_cast<int64_t>(n), out.embeddings.as<float>());
  for (int s = 0; s < static_cast<int>(slots_.size()); ++s) {
    const size_t w = static_cast<size_t>(slots_[static_cast<size_t>(s)].width);
    out.slots.emplace_back(n * w * sizeof(float));
    for (size_t i = 0; i < n; ++i) std::memcpy(out.slots.back().as<float>() + i * w, slot_row(s, rows[i]), w * 4);
  }
  return out;
}

void HashTable::reserve(int64_t rows) {
  if (rows < 0 || rows > kMaxRows)
    throw std::length_error("HashTable.reserve: rows must be in [0, 2^31 - 1] (the rows of one table), got " +
                            str(rows));
  std::lock_guard<std::mutex> lock(mutex_);
  reserve_map(rows);
}

void HashTable::set_eviction_log(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  log_evictions_ = on;
  if (!on) evicted_log_.clear();
}

std::vector<std::pair<int64_t, uint16_t>> HashTable::take_evicted() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(evicted_log_, {});
}

std::vector<int64_t> HashTable::assign(const int64_t* ids, const int32_t* tags, int64_t n, const int64_t* steps,
                                       const int64_t* freqs, const float* embeddings,
                                       const std::vector<const float*>& slots) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (slots.size() != slots_.size())
    throw std::invalid_argument("HashTable.assign: expected " + str(static_cast<int64_t>(slots_.size())) +
                                " slot arrays (or nulls), got " + str(static_cast<int64_t>(slots.size())));
  for (int64_t i = 0; i < n; ++i) {
    if (tags[i] < 0 || tags[i] > 0xffff)
      throw std::invalid_argument("HashTable.assign: tags[" + str(i) + "]=" + str(tags[i]) + " is outside [0, 65535]");
    if (freqs[i] < 0 || freqs[i] > int64_t{UINT32_MAX})
      throw std::invalid_argument("HashTable.assign: freqs[" + str(i) + "]=" + str(freqs[i]) +
                                  " is outside [0, 2^32 - 1]");
  }
  std::vector<int64_t> rows(static_cast<size_t>(n));
  reserve_map(live_ + n);
  for (int64_t i = 0; i < n; ++i) {
    const auto tag = static_cast<uint16_t>(tags[i]);
    int64_t r = probe(ids[i], tag);
    if (r < 0) {
      r = insert_new(ids[i], tag);
      ++counters_.inserts;
    }
    RowMeta& m = meta_[static_cast<size_t>(r)];
    m.step = steps[i];
    m.freq = static_cast<uint32_t>(freqs[i]);
    store_row(type_, embeddings + i * dim_, row(r), dim_);
    for (size_t s = 0; s < slots_.size(); ++s) {
      const int64_t w = slots_[s].width;
      float* p = slot_row(static_cast<int>(s), r);
      if (slots[s])
        std::memcpy(p, slots[s] + i * w, static_cast<size_t>(w) * sizeof(float));
      else
        std::fill(p, p + w, slots_[s].init);
    }
    rows[static_cast<size_t>(i)] = r;
  }
  return rows;
}

TableCounters HashTable::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

int64_t HashTable::memory_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t block_rows = block_mask_ + 1;
  int64_t bytes = row_bytes_ + static_cast<int64_t>(sizeof(RowMeta));
  for (const Slot& s : slots_) bytes += s.width * static_cast<int64_t>(sizeof(float));
  const int64_t rows = static_cast<int64_t>(emb_.size()) * block_rows;
  return rows * bytes + static_cast<int64_t>(alive_.size() * sizeof(uint64_t)) +
         static_cast<int64_t>(map_.size() * sizeof(Entry) + free_rows_.capacity() * sizeof(int64_t)) +
         static_cast<int64_t>(pending_.size() * kPendingNodeBytes + pending_.bucket_count() * sizeof(void*) +
                              evicted_log_.capacity() * sizeof(evicted_log_[0]));
}

}  // namespace recis
