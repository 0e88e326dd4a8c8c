// HashTable implementation. Lookups probe in parallel (read-only), then insert misses serially
// (map growth and row allocation), then initialize the new rows in parallel.
#include "recis/hash_table.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "recis/buffer.h"
#include "recis/parallel.h"

namespace recis {
namespace {

constexpr int64_t kProbeGrain = 2048;
constexpr int kPrefetchAhead = 8;

std::string str(int64_t v) { return std::to_string(v); }

// Set bits of x: the POPCNT instruction when kHw (callers compiled for it), else a few inline
// instructions (without -mpopcnt, __builtin_popcountll is a libgcc call).
template <bool kHw>
[[gnu::always_inline]] inline int64_t popcount64(uint64_t x) {
  if constexpr (kHw) {
    return __builtin_popcountll(x);
  } else {
    x -= (x >> 1) & 0x5555555555555555ULL;
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return static_cast<int64_t>((x * 0x0101010101010101ULL) >> 56);
  }
}

// unique_rows' counting loops, compiled twice: with POPCNT (every x86-64 CPU since 2008, but not
// the baseline the wheel targets) and without; the CPU picks once.
template <bool kHw>
[[gnu::always_inline]] inline uint32_t count_below(const uint64_t* bits, int64_t words, uint32_t* below) {
  uint32_t seen = 0;  // below[w]: marked rows in the words before w; returns all marked rows
  for (int64_t w = 0; w < words; ++w) {
    below[w] = seen;
    seen += static_cast<uint32_t>(popcount64<kHw>(bits[w]));
  }
  return seen;
}
// Row r's index among the marked rows: those in the words before its own, plus those below it.
template <bool kHw>
[[gnu::always_inline]] inline int64_t rank_of(const uint64_t* bits, const uint32_t* below, int64_t r) {
  return int64_t{below[r >> 6]} + popcount64<kHw>(bits[r >> 6] & ((uint64_t{1} << (r & 63)) - 1));
}
// x[i] (a row, or -1) becomes its index among the distinct rows, where `unique` (unless null)
// gets the row.
template <bool kHw>
[[gnu::always_inline]] inline void rank_rows(int64_t* x, int64_t begin, int64_t end, const uint64_t* bits,
                                             const uint32_t* below, int64_t none_at, int64_t* unique) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = x[i];
    x[i] = r < 0 ? none_at : rank_of<kHw>(bits, below, r);
    if (unique && r >= 0) unique[x[i]] = r;  // repeats store the same value
  }
}
constexpr int kMaxBucketShift = 15;  // rows per bucket at most 2^15: a 4 KiB bitmap, in L1
// ranks[k] = the rank of rows[k] (offsets within one bucket of 64 * words rows) among the
// bucket's distinct rows, k < n; returns how many there are.
template <bool kHw>
[[gnu::always_inline]] inline uint32_t rank_bucket(const uint16_t* rows, int64_t n, int64_t words, uint16_t* ranks) {
  uint64_t bits[(1 << kMaxBucketShift) / 64];
  uint32_t below[(1 << kMaxBucketShift) / 64];
  std::fill(bits, bits + words, 0);
  for (int64_t k = 0; k < n; ++k) bits[rows[k] >> 6] |= uint64_t{1} << (rows[k] & 63);
  const uint32_t seen = count_below<kHw>(bits, words, below);
  for (int64_t k = 0; k < n; ++k) ranks[k] = static_cast<uint16_t>(rank_of<kHw>(bits, below, rows[k]));
  return seen;
}
#if defined(__x86_64__) && defined(__GNUC__)
#define RECIS_POPCNT __attribute__((target("popcnt")))
// RECIS_NO_POPCNT=1 takes the portable loops (tests run both). Runs while the library loads,
// possibly before libgcc's own CPU detection, hence the explicit init.
bool has_popcnt() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("popcnt") && !std::getenv("RECIS_NO_POPCNT");
}
#else  // elsewhere __builtin_popcountll is the machine's own instruction
#define RECIS_POPCNT
bool has_popcnt() { return !std::getenv("RECIS_NO_POPCNT"); }
#endif
const bool kHasPopcnt = has_popcnt();
RECIS_POPCNT uint32_t count_below_hw(const uint64_t* bits, int64_t words, uint32_t* below) {
  return count_below<true>(bits, words, below);
}
RECIS_POPCNT void rank_rows_hw(int64_t* x, int64_t begin, int64_t end, const uint64_t* bits, const uint32_t* below,
                               int64_t none_at, int64_t* unique) {
  rank_rows<true>(x, begin, end, bits, below, none_at, unique);
}
RECIS_POPCNT uint32_t rank_bucket_hw(const uint16_t* rows, int64_t n, int64_t words, uint16_t* ranks) {
  return rank_bucket<true>(rows, n, words, ranks);
}

// Counter-based stream of uniform doubles in [0, 1) for one (seed, id): value k is a pure
// function of (seed, id, k).
struct RowRandom {
  uint64_t base;
  uint64_t k = 0;
  double next() { return static_cast<double>(mix64(base + 0x9e3779b97f4a7c15ULL * ++k) >> 11) * 0x1.0p-53; }
  double normal() {  // Box-Muller; 1 - u keeps the log argument in (0, 1]
    const double u = 1.0 - next(), v = next();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

}  // namespace

size_t HashTable::KeyHash::operator()(const std::pair<int64_t, uint16_t>& k) const {
  return static_cast<size_t>(mix64(static_cast<uint64_t>(k.first) ^ (static_cast<uint64_t>(k.second) << 48)));
}

namespace {

// out[k] = low + width * u_k for k < dim (kept below low + width), u_k uniform in [0, 1) on a
// 2^-24 grid: a 32-bit counter hash of (row stream, k), two rounds of the lowbias32 mixer.
// 32-bit lanes, so the loop vectorizes (8 values per AVX2 instruction); a scalar 64-bit mix per
// value cost ~4 ns.
RECIS_VECTOR_CLONES void uniform_row(uint64_t stream, float low, float width, float* out, int64_t dim) {
  const auto lo = static_cast<uint32_t>(stream), hi = static_cast<uint32_t>(stream >> 32);
  const float top = std::nextafter(low + width, low);  // float rounding must not reach the open end
  auto mix32 = [](uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
  };
  for (int64_t k = 0; k < dim; ++k) {
    const uint32_t x = mix32(mix32(lo + static_cast<uint32_t>(k) * 0x9e3779b9U) ^ hi);
    out[k] = std::min(top, low + width * (static_cast<float>(static_cast<int32_t>(x >> 8)) * 0x1.0p-24f));
  }
}

}  // namespace

void init_row(const Initializer& init, uint64_t seed, int64_t id, float* out, int64_t dim) {
  RowRandom rng{mix64(seed ^ mix64(static_cast<uint64_t>(id)))};
  switch (init.kind) {
    case InitKind::kConstant:
      std::fill(out, out + dim, static_cast<float>(init.a));
      break;
    case InitKind::kUniform:
      uniform_row(rng.base, static_cast<float>(init.a), static_cast<float>(init.b - init.a), out, dim);
      break;
    case InitKind::kNormal:
      for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(init.a + init.b * rng.normal());
      break;
    case InitKind::kTruncatedNormal:
      for (int64_t i = 0; i < dim; ++i) {
        double z;
        do z = rng.normal();
        while (std::fabs(z) > 2.0);
        out[i] = static_cast<float>(init.a + init.b * z);
      }
      break;
    case InitKind::kXavierUniform: {
      const auto bound = static_cast<float>(std::sqrt(6.0 / (1.0 + static_cast<double>(dim))));
      uniform_row(rng.base, -bound, 2.0f * bound, out, dim);
      break;
    }
  }
}

HashTable::HashTable(int64_t dim, Initializer init, int64_t admit_count, int64_t block_rows)
    : dim_(dim), init_(init), admit_count_(admit_count) {
  if (dim < 1 || dim > kMaxWidth)
    throw std::invalid_argument("HashTable: dim must be in [1, 2^20], got " + str(dim));
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

int64_t HashTable::size() const { return live_; }

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
    s.blocks.push_back(new_block(block_rows * width));
    std::fill(s.blocks.back().get(), s.blocks.back().get() + block_rows * width, init);
  }
  slots_.push_back(std::move(s));
  return static_cast<int>(slots_.size()) - 1;
}

size_t HashTable::home(int64_t id, uint16_t tag) const {
  return static_cast<size_t>(mix64(static_cast<uint64_t>(id) + 0x632be59bd9b4e019ULL * tag)) & map_mask_;
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
  while (static_cast<size_t>(rows) * 2 > cap) cap *= 2;
  if (cap == map_.size()) return;
  std::vector<Entry, HugePageAllocator<Entry>> old(cap);  // fresh pages: filled (faulted in) in parallel
  parallel_for(static_cast<int64_t>(cap), 1 << 16, [&](int64_t begin, int64_t end) {
    std::fill(old.begin() + begin, old.begin() + end, Entry{0, -1, 0, 0});
  });
  old.swap(map_);
  map_mask_ = map_.size() - 1;
  parallel_for(static_cast<int64_t>(old.size()), 1 << 14, [&](int64_t begin, int64_t end) {
    claim_range(begin, end, [&](int64_t k) { return old[static_cast<size_t>(k)]; });
  });
}

template <bool kWrite, typename SlotOf, typename Visit>
void HashTable::pipeline(int64_t begin, int64_t end, SlotOf slot_of, Visit visit) const {
  // A rolling distance keeps kMapAhead lines in flight throughout; probing in windows (prefetch
  // 32, then visit 32) let the misses drain at every window's end: the Zipf pooled forward ran
  // about 5% slower so (tools/bench/embedding.py, alternating processes).
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
      return;
    }
  }
}

void HashTable::add_block() {
  const int64_t block_rows = block_mask_ + 1;
  emb_.push_back(new_block(block_rows * dim_));
  for (Slot& s : slots_) s.blocks.push_back(new_block(block_rows * s.width));
  // Left uninitialized: no row at or past allocated_rows_ is ever read.
  meta_.resize(static_cast<size_t>(emb_.size()) << block_shift_);
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
  meta_[static_cast<size_t>(r)] = RowMeta{id, 0, 0, tag, 1, 0};
  ++live_;
  return r;
}

void HashTable::init_new_rows(const std::vector<int64_t>& rows) {
  parallel_for(static_cast<int64_t>(rows.size()), 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r = rows[static_cast<size_t>(k)];
      const RowMeta& m = meta_[static_cast<size_t>(r)];
      const uint64_t seed = m.tag < tag_seeds_.size() ? tag_seeds_[m.tag] : 0;
      init_row(init_, seed, m.id, row(r), dim_);
      for (int s = 0; s < num_slots(); ++s) {
        float* p = slot_row(s, r);
        std::fill(p, p + slot_width(s), slots_[static_cast<size_t>(s)].init);
      }
    }
  });
}

int64_t HashTable::insert_missing(const int64_t* ids, const uint16_t* tags, int64_t n, int64_t step, bool insert,
                                  int64_t* rows) {
  std::vector<int64_t> created;
  int64_t rejected = 0;
  if (insert) reserve_map(live_ + n);  // one rehash at most
  if (insert && admit_count_ == 1) {
    // Every key gets a row: rows are assigned here in key order (freed ones first), so a key's row
    // never depends on thread timing; then the map slots are claimed in parallel.
    if (live_ + n > kMaxRows) throw std::length_error("HashTable: more than 2^31 - 1 rows in one table");
    created.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      if (!free_rows_.empty()) {
        created[static_cast<size_t>(i)] = free_rows_.back();
        free_rows_.pop_back();
      } else {
        if (allocated_rows_ == static_cast<int64_t>(emb_.size()) << block_shift_) add_block();
        created[static_cast<size_t>(i)] = allocated_rows_++;
      }
    }
    parallel_for(n, kProbeGrain, [&](int64_t begin, int64_t end) {
      auto entry = [&](int64_t i) {
        return Entry{ids[i], static_cast<int32_t>(created[static_cast<size_t>(i)]), tags ? tags[i] : uint16_t{0}, 0};
      };
      claim_range(begin, end, entry);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = created[static_cast<size_t>(i)];
        meta_[static_cast<size_t>(r)] = RowMeta{ids[i], 0, 0, tags ? tags[i] : uint16_t{0}, 1, 0};
        rows[i] = r;
      }
    });
    live_ += n;
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
      created.push_back(rows[i]);
    }
  }
  init_new_rows(created);
  counters_.lookups += n;
  counters_.inserts += static_cast<int64_t>(created.size());
  counters_.rejected += rejected;
  return static_cast<int64_t>(created.size());
}

std::vector<int64_t> run_starts(const std::vector<HashTable::KeyRun>& keys) {
  std::vector<int64_t> starts(keys.size() + 1, 0);
  for (size_t k = 0; k < keys.size(); ++k) starts[k + 1] = starts[k] + keys[k].n;
  return starts;
}

void HashTable::lookup(const std::vector<KeyRun>& keys, int64_t step, bool insert, std::vector<int64_t>& unique,
                       int64_t* inverse) {
  // Probe every key, repeats included: a repeat finds its entry in cache, which is cheaper than
  // de-duplicating the keys first. inverse holds each key's row until unique_rows turns it into
  // the index among the distinct rows.
  const std::vector<int64_t> starts = run_starts(keys);
  const int64_t n = starts.back();
  std::atomic<bool> any_missed{false};
  parallel_for(n, kProbeGrain, [&](int64_t begin, int64_t end) {
    if (probe_runs(keys, starts, begin, end - begin, inverse + begin)) any_missed.store(true, std::memory_order_relaxed);
  });
  std::vector<int64_t> missed;  // positions of missing keys (a scan only when there are any)
  if (any_missed.load())
    for (int64_t i = 0; i < n; ++i)
      if (inverse[i] < 0) missed.push_back(i);
  int64_t created = 0;
  if (!missed.empty()) {  // the distinct missing keys go through admission and insertion once
    const int64_t m = static_cast<int64_t>(missed.size());
    ScratchArray<int64_t> miss_ids(missed.size()), miss_inverse(missed.size());
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
    unique_keys(miss_ids.data(), miss_tags.data(), m, uids, utags, miss_inverse.data());
    rows.resize(uids.size());
    created = insert_missing(uids.data(), utags.data(), static_cast<int64_t>(uids.size()), step, insert, rows.data());
    for (int64_t k = 0; k < m; ++k) inverse[missed[k]] = rows[static_cast<size_t>(miss_inverse[k])];
  }
  const bool none = unique_rows(inverse, n, allocated_rows_, unique);
  // Distinct rows found by the probe (the missing keys were counted by insert_missing).
  const int64_t found = static_cast<int64_t>(unique.size()) - none - created;
  counters_.lookups += found;
  counters_.hits += found;
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

void HashTable::pool_keys(const std::vector<KeyRun>& keys, const int64_t* offsets, int64_t bags,
                          const float* weights, const float* scales, float* out, const BagLayout& layout) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<const float*> blocks;
  for (const Block& b : emb_) blocks.push_back(b.get());
  const std::vector<int64_t> starts = run_starts(keys);
  // Pieces of 256 bags: probe a piece's keys, then pool it while its rows are still in cache.
  constexpr int64_t kBags = 256;
  std::atomic<int64_t> missed{0};
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
      const TableRows source{blocks.data(), block_shift_, block_mask_, dim_, rows.data(), zero_row_.data()};
      BagLayout piece = layout;
      piece.first += b0;
      pooled_forward_rows(source, m, dim_, position.data(), local.data(), nb, weights ? weights + v0 : nullptr,
                          scales ? scales + b0 : nullptr, out, piece, nullptr);  // positions made here
    }
    missed += missing;
  });
  counters_.lookups += offsets[bags];
  counters_.hits += offsets[bags] - missed.load();
  counters_.rejected += missed.load();
}

void HashTable::check_rows(const int64_t* rows, int64_t n, const char* op) const {
  auto bad = [&](int64_t r) { return r != -1 && (r < -1 || r >= allocated_rows_ || !meta_[static_cast<size_t>(r)].live); };
  std::atomic<bool> any{false};  // parallel check; the first offender is searched only on failure
  // A row below allocated_rows_ is dead only while it waits in free_rows_: with none waiting
  // (always, without eviction), a range check does, and no row's metadata is read.
  const bool all_live = free_rows_.empty();
  parallel_for(n, 16384, [&](int64_t begin, int64_t end) {
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

void HashTable::pool(const int64_t* rows, int64_t num_rows, const int64_t* inverse, const int64_t* offsets,
                     int64_t bags, const float* weights, const float* scales, float* out, const BagLayout& layout) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool fine = all_in_range(rows, 0, num_rows, -1, allocated_rows_);
  for (int64_t u = 0; !fine && u < num_rows; ++u)
    if (rows[u] < -1 || rows[u] >= allocated_rows_)
      throw std::invalid_argument("HashTable.pool: rows[" + str(u) + "]=" + str(rows[u]) + " is not a row of this table");
  std::vector<const float*> blocks;
  for (const Block& b : emb_) blocks.push_back(b.get());
  const TableRows source{blocks.data(), block_shift_, block_mask_, dim_, rows, zero_row_.data()};
  pooled_forward_rows(source, num_rows, dim_, inverse, offsets, bags, weights, scales, out, layout, "HashTable.pool");
}

void HashTable::touch_and_gather(const int64_t* rows, int64_t n, int64_t step, bool record, float* out) {
  if (!record) {
    if (out) gather(rows, n, out);
    return;
  }
  const size_t bytes = static_cast<size_t>(dim_) * sizeof(float);
  parallel_for(n, std::max<int64_t>(1, 16384 / dim_), [&](int64_t begin, int64_t end) {
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
        if (out) std::memcpy(out + i * dim_, row(r), bytes);
      } else if (out) {
        std::memset(out + i * dim_, 0, bytes);
      }
    }
  });
}

void HashTable::gather(const int64_t* rows, int64_t n, float* out) const {
  const size_t bytes = static_cast<size_t>(dim_) * sizeof(float);
  parallel_for(n, std::max<int64_t>(1, 16384 / dim_), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (i + kPrefetchAhead < end && rows[i + kPrefetchAhead] >= 0) prefetch_lines(row(rows[i + kPrefetchAhead]), bytes);
      if (rows[i] >= 0)
        std::memcpy(out + i * dim_, row(rows[i]), bytes);
      else
        std::memset(out + i * dim_, 0, bytes);
    }
  });
}

void HashTable::remove(int64_t r) {
  // Backward-shift deletion keeps linear-probing chains intact without tombstones.
  RowMeta& m = meta_[static_cast<size_t>(r)];
  size_t i = home(m.id, m.tag);
  while (map_[i].row != r) i = (i + 1) & map_mask_;
  for (size_t j = (i + 1) & map_mask_;; j = (j + 1) & map_mask_) {
    if (map_[j].row < 0) break;
    const size_t h = home(map_[j].id, map_[j].tag);
    // Move entry j into the hole at i unless its home lies cyclically in (i, j].
    const bool stays = (i <= j) ? (i < h && h <= j) : (i < h || h <= j);
    if (!stays) {
      map_[i] = map_[j];
      i = j;
    }
  }
  map_[i].row = -1;
  m.live = 0;
  if (log_evictions_) evicted_log_.emplace_back(m.id, m.tag);
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
    const RowMeta& m = meta_[static_cast<size_t>(r)];
    if (m.live && m.step < min_step) {
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
    if (meta_[static_cast<size_t>(r)].live) rows.push_back(r);
  auto older = [&](int64_t a, int64_t b) {
    const RowMeta &ma = meta_[static_cast<size_t>(a)], &mb = meta_[static_cast<size_t>(b)];
    if (policy == EvictPolicy::kLfu && ma.freq != mb.freq) return ma.freq < mb.freq;
    if (ma.step != mb.step) return ma.step < mb.step;
    return a < b;
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

std::vector<int64_t> HashTable::live_rows(int64_t begin, int64_t end, int64_t min_step) const {
  std::vector<int64_t> rows;
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, allocated_rows_);
  for (int64_t r = begin; r < end; ++r) {
    const RowMeta& m = meta_[static_cast<size_t>(r)];
    if (m.live && m.step >= min_step) rows.push_back(r);
  }
  return rows;
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

void HashTable::assign(const int64_t* ids, const uint16_t* tags, int64_t n, const int64_t* steps,
                       const int64_t* freqs, const float* emb, const std::vector<const float*>& slots,
                       int64_t* rows) {
  if (slots.size() != slots_.size())
    throw std::invalid_argument("HashTable.assign: expected " + str(num_slots()) + " slot arrays (or nulls), got " +
                                str(static_cast<int64_t>(slots.size())));
  for (int64_t i = 0; i < n; ++i)
    if (freqs && (freqs[i] < 0 || freqs[i] > int64_t{UINT32_MAX}))
      throw std::invalid_argument("HashTable.assign: freqs[" + str(i) + "]=" + str(freqs[i]) +
                                  " is outside [0, 2^32 - 1]");
  std::lock_guard<std::mutex> lock(mutex_);
  reserve_map(live_ + n);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t tag = tags ? tags[i] : 0;
    int64_t r = probe(ids[i], tag);
    if (r < 0) {
      r = insert_new(ids[i], tag);
      ++counters_.inserts;
    }
    RowMeta& m = meta_[static_cast<size_t>(r)];
    m.step = steps ? steps[i] : 0;
    m.freq = static_cast<uint32_t>(freqs ? freqs[i] : 0);
    std::memcpy(row(r), emb + i * dim_, static_cast<size_t>(dim_) * sizeof(float));
    for (int s = 0; s < num_slots(); ++s) {
      const int64_t w = slot_width(s);
      float* p = slot_row(s, r);
      if (slots[static_cast<size_t>(s)])
        std::memcpy(p, slots[static_cast<size_t>(s)] + i * w, static_cast<size_t>(w) * sizeof(float));
      else
        std::fill(p, p + w, slots_[static_cast<size_t>(s)].init);
    }
    rows[i] = r;
  }
}

TableCounters HashTable::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

int64_t HashTable::memory_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t block_rows = block_mask_ + 1;
  int64_t width = dim_;
  for (const Slot& s : slots_) width += s.width;
  const int64_t rows = static_cast<int64_t>(emb_.size()) * block_rows;
  const int64_t meta = static_cast<int64_t>(sizeof(RowMeta));
  return rows * (width * static_cast<int64_t>(sizeof(float)) + meta) +
         static_cast<int64_t>(map_.size() * sizeof(Entry) + free_rows_.capacity() * sizeof(int64_t)) +
         static_cast<int64_t>(pending_.size() * kPendingNodeBytes + pending_.bucket_count() * sizeof(void*) +
                              evicted_log_.capacity() * sizeof(evicted_log_[0]));
}

namespace {

uint64_t key_hash(int64_t id, uint16_t tag) { return mix64(static_cast<uint64_t>(id) + 0x632be59bd9b4e019ULL * tag); }

// De-duplicates m keys laid out contiguously, with an open-addressing table that stores the key
// beside its local index; local[k] gets the local unique index of key k, and first lists, per
// local unique key, the position k where it was first seen.
void dedup_run(const int64_t* ids, const uint16_t* tags, const uint64_t* hashes, int64_t m, int32_t* local,
               std::vector<int64_t>& first) {
  struct Slot {
    int64_t id;
    int32_t u;  // -1: empty
    uint16_t tag;
  };
  size_t cap = 16;
  while (cap < static_cast<size_t>(m) * 2) cap <<= 1;
  const size_t mask = cap - 1;
  ScratchArray<Slot> table(cap, Slot{0, -1, 0});
  first.clear();
  for (int64_t k = 0; k < m; ++k) {
    for (size_t h = static_cast<size_t>(hashes[k]) & mask;; h = (h + 1) & mask) {
      Slot& s = table[h];
      if (s.u < 0) {
        s = Slot{ids[k], static_cast<int32_t>(first.size()), tags[k]};
        first.push_back(k);
        local[k] = s.u;
        break;
      }
      if (s.id == ids[k] && s.tag == tags[k]) {
        local[k] = s.u;
        break;
      }
    }
  }
}

}  // namespace

namespace {

// unique_rows over a table at most 64 times the batch, or of fewer than 2^22 rows: a bitmap over
// its rows marks the ones present (each part of the keys in a bitmap of its own, OR-ed after); a
// row's index among them is the number of marked rows below it (popcounts), so they come out
// ascending with no sort.
bool unique_rows_dense(int64_t* x, int64_t n, int64_t words, std::vector<int64_t>& unique) {
  const int64_t parts = n < 65536 && words < 65536 ? 1 : num_threads();
  ScratchArray<uint64_t> marks(static_cast<size_t>(words * parts));
  ScratchArray<uint32_t> below(static_cast<size_t>(words));  // distinct rows fit 32 bits
  std::vector<char> none_in(static_cast<size_t>(parts), 0);
  uint64_t* bits = marks.data();
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      uint64_t* own = bits + p * words;
      std::fill(own, own + words, 0);
      char none_here = 0;
      for (int64_t i = n * p / parts, stop = n * (p + 1) / parts; i < stop; ++i) {
        const int64_t r = x[i];
        if (r < 0)
          none_here = 1;
        else
          own[r >> 6] |= uint64_t{1} << (r & 63);
      }
      none_in[static_cast<size_t>(p)] = none_here;
    }
  });
  const bool none = std::find(none_in.begin(), none_in.end(), 1) != none_in.end();
  if (parts > 1)
    parallel_for(words, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t p = 1; p < parts; ++p)
        for (int64_t w = begin; w < end; ++w) bits[w] |= marks[static_cast<size_t>(p * words + w)];
    });
  const int64_t u = kHasPopcnt ? count_below_hw(bits, words, below.data()) : count_below<false>(bits, words, below.data());
  unique.resize(static_cast<size_t>(u + none));
  if (none) unique[static_cast<size_t>(u)] = -1;
  int64_t* uniq = unique.data();
  if (parts == 1) {  // one thread: each key writes its row at its rank (no pass over the words)
    if (kHasPopcnt)
      rank_rows_hw(x, 0, n, bits, below.data(), u, uniq);
    else
      rank_rows<false>(x, 0, n, bits, below.data(), u, uniq);
    return none;
  }
  // Each part ranks a range of the keys and lists the marked rows of a range of the words: every
  // thread writes ranges of its own (keys writing their rows at their ranks would write at
  // random, and the result's cache lines would go back and forth between the cores).
  parallel_for(2 * parts, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t p = t % parts;
      if (t < parts) {
        if (kHasPopcnt)
          rank_rows_hw(x, n * p / parts, n * (p + 1) / parts, bits, below.data(), u, nullptr);
        else
          rank_rows<false>(x, n * p / parts, n * (p + 1) / parts, bits, below.data(), u, nullptr);
        continue;
      }
      for (int64_t w = words * p / parts, stop = words * (p + 1) / parts; w < stop; ++w) {
        int64_t* at = uniq + below[static_cast<size_t>(w)];
        for (uint64_t m = bits[w]; m; m &= m - 1) *at++ = w * 64 + __builtin_ctzll(m);
      }
    }
  });
  return none;
}

// unique_rows over a larger table: the keys are counting-sorted by their row's high bits into
// buckets of 2^shift rows (about 64 keys each), and each bucket ranks its rows with a bitmap of
// its own, in L1. The rows still come out ascending, without the table-sized bitmap whose random
// accesses missed the cache about once per key. A last bucket holds the -1 rows.
bool unique_rows_bucketed(int64_t* x, int64_t n, int64_t capacity, std::vector<int64_t>& unique) {
  int shift = 6;
  while (shift < kMaxBucketShift && (int64_t{1} << shift) * n < 64 * capacity) ++shift;
  const int64_t buckets = ((capacity + (int64_t{1} << shift) - 1) >> shift) + 1;
  auto bucket = [&](int64_t r) { return r < 0 ? buckets - 1 : r >> shift; };
  const int64_t parts = n < 65536 ? 1 : num_threads();
  auto part_begin = [&](int64_t p) { return n * p / parts; };
  // at[p * buckets + b]: part p's keys in bucket b, then where the next of them goes.
  std::vector<uint32_t> at(static_cast<size_t>(parts * buckets), 0);
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      uint32_t* count = at.data() + p * buckets;
      for (int64_t i = part_begin(p), stop = part_begin(p + 1); i < stop; ++i) ++count[bucket(x[i])];
    }
  });
  std::vector<uint32_t> start(static_cast<size_t>(buckets) + 1);  // bucket-major, parts in order
  uint32_t pos = 0;
  for (int64_t b = 0; b < buckets; ++b) {
    start[static_cast<size_t>(b)] = pos;
    for (int64_t p = 0; p < parts; ++p) pos += std::exchange(at[static_cast<size_t>(p * buckets + b)], pos);
  }
  start[static_cast<size_t>(buckets)] = pos;
  ScratchArray<uint16_t> sorted(static_cast<size_t>(n));  // the keys' rows (offsets in their bucket) by bucket
  ScratchArray<uint32_t> where(static_cast<size_t>(n));   // key i's place in `sorted`
  const int64_t low = (int64_t{1} << shift) - 1;
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      uint32_t* next = at.data() + p * buckets;
      for (int64_t i = part_begin(p), stop = part_begin(p + 1); i < stop; ++i) {
        const uint32_t k = next[bucket(x[i])]++;
        sorted[k] = static_cast<uint16_t>(x[i] & low);
        where[static_cast<size_t>(i)] = k;
      }
    }
  });
  ScratchArray<uint16_t> rank(static_cast<size_t>(n));  // rank[k]: sorted[k]'s among its bucket's distinct rows
  std::vector<int64_t> first(static_cast<size_t>(buckets));  // distinct rows per bucket, then the index of its first
  parallel_for(buckets - 1, 16, [&](int64_t bb, int64_t be) {
    const int64_t words = int64_t{1} << (shift - 6);
    for (int64_t b = bb; b < be; ++b) {
      const uint32_t s0 = start[static_cast<size_t>(b)], m = start[static_cast<size_t>(b) + 1] - s0;
      first[static_cast<size_t>(b)] = m == 0        ? 0
                                      : kHasPopcnt ? rank_bucket_hw(sorted.data() + s0, m, words, rank.data() + s0)
                                                   : rank_bucket<false>(sorted.data() + s0, m, words, rank.data() + s0);
    }
  });
  int64_t u = 0;
  for (int64_t b = 0; b + 1 < buckets; ++b) u += std::exchange(first[static_cast<size_t>(b)], u);
  const bool none = pos > start[static_cast<size_t>(buckets) - 1];
  unique.resize(static_cast<size_t>(u + none));
  if (none) unique[static_cast<size_t>(u)] = -1;
  // The keys' indices in key order and the distinct rows bucket by bucket, each part writing a
  // range of its own (random writes from several threads would move cache lines between cores).
  int64_t* uniq = unique.data();
  parallel_for(2 * parts, n < 16384 ? 2 * parts : 1, [&](int64_t tb, int64_t te) {  // small: inline
    for (int64_t t = tb; t < te; ++t) {
      const int64_t p = t % parts;
      if (t < parts) {
        for (int64_t i = part_begin(p), stop = part_begin(p + 1); i < stop; ++i) {
          const int64_t r = x[i];
          x[i] = r < 0 ? u : first[static_cast<size_t>(r >> shift)] + rank[where[static_cast<size_t>(i)]];
        }
        continue;
      }
      for (int64_t b = (buckets - 1) * p / parts, stop = (buckets - 1) * (p + 1) / parts; b < stop; ++b) {
        int64_t* distinct = uniq + first[static_cast<size_t>(b)];
        for (uint32_t k = start[static_cast<size_t>(b)]; k < start[static_cast<size_t>(b) + 1]; ++k)
          distinct[rank[k]] = (b << shift) + sorted[k];  // repeats store the same value
      }
    }
  });
  return none;
}

}  // namespace

bool unique_rows(int64_t* x, int64_t n, int64_t capacity, std::vector<int64_t>& unique) {
  const int64_t words = (capacity + 63) / 64;
  if (words <= n || words < 65536) return unique_rows_dense(x, n, words, unique);
  if (words <= 8 * n + 65536 && n <= UINT32_MAX) return unique_rows_bucketed(x, n, capacity, unique);
  // Sparse over a huge table: hash de-duplication, rows unordered.
  std::vector<uint16_t> unused;
  ScratchArray<int64_t> rows(static_cast<size_t>(n));
  std::copy(x, x + n, rows.data());
  unique_keys(rows.data(), nullptr, n, unique, unused, x);
  return std::find(unique.begin(), unique.end(), -1) != unique.end();
}

void unique_keys(const int64_t* ids, const uint16_t* tags, int64_t n, std::vector<int64_t>& unique_ids,
                 std::vector<uint16_t>& unique_tags, int64_t* inverse) {
  // Radix-partition the keys by hash into contiguous runs (parallel), then de-duplicate each run
  // with a table small enough for the cache (parallel). Unique keys come out by partition, then
  // in first-seen order: deterministic for a given input.
  constexpr int kBits = 6, kParts = 1 << kBits;
  const int64_t chunks = n < 65536 ? 1 : std::min<int64_t>(64, std::max<int64_t>(1, num_threads() * 4));
  std::vector<int64_t> counts(static_cast<size_t>(chunks * kParts), 0);
  auto chunk_begin = [&](int64_t c) { return n * c / chunks; };
  auto part_of = [](uint64_t h) { return static_cast<size_t>(h >> (64 - kBits)); };
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      int64_t* cnt = counts.data() + c * kParts;
      const int64_t stop = chunk_begin(c + 1);  // hoisted: a division the stores would repeat
      for (int64_t i = chunk_begin(c); i < stop; ++i) ++cnt[part_of(key_hash(ids[i], tags ? tags[i] : 0))];
    }
  });
  // Partition-major layout: run p holds its keys chunk by chunk, so positions stay increasing.
  std::vector<int64_t> part_start(kParts + 1, 0);
  for (int p = 0; p < kParts; ++p) {
    int64_t at = part_start[static_cast<size_t>(p)];
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t k = counts[static_cast<size_t>(c * kParts + p)];
      counts[static_cast<size_t>(c * kParts + p)] = at;
      at += k;
    }
    part_start[static_cast<size_t>(p) + 1] = at;
  }
  // Scratch from the block cache: fresh pages would cost a fault per 4 KiB every batch.
  ScratchArray<int64_t> place(static_cast<size_t>(n)), run_ids(static_cast<size_t>(n));  // place[i]: key i's in the runs
  ScratchArray<uint64_t> run_hashes(static_cast<size_t>(n));
  ScratchArray<uint16_t> run_tags(static_cast<size_t>(n));
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      int64_t* at = counts.data() + c * kParts;
      const int64_t stop = chunk_begin(c + 1);
      for (int64_t i = chunk_begin(c); i < stop; ++i) {
        const uint16_t tag = tags ? tags[i] : 0;
        const uint64_t h = key_hash(ids[i], tag);
        const auto k = static_cast<size_t>(at[part_of(h)]++);
        place[static_cast<size_t>(i)] = static_cast<int64_t>(k);
        run_ids[k] = ids[i];
        run_tags[k] = tag;
        run_hashes[k] = h;
      }
    }
  });
  ScratchArray<int32_t> local(static_cast<size_t>(n));
  std::vector<std::vector<int64_t>> firsts(kParts);
  parallel_for(kParts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const auto b = static_cast<size_t>(part_start[static_cast<size_t>(p)]);
      dedup_run(run_ids.data() + b, run_tags.data() + b, run_hashes.data() + b,
                part_start[static_cast<size_t>(p) + 1] - part_start[static_cast<size_t>(p)], local.data() + b,
                firsts[static_cast<size_t>(p)]);
    }
  });
  std::vector<int64_t> base(kParts + 1, 0);
  for (int p = 0; p < kParts; ++p)
    base[static_cast<size_t>(p) + 1] = base[static_cast<size_t>(p)] + static_cast<int64_t>(firsts[static_cast<size_t>(p)].size());
  unique_ids.resize(static_cast<size_t>(base[kParts]));
  unique_tags.resize(static_cast<size_t>(base[kParts]));
  parallel_for(kParts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const auto b = static_cast<size_t>(part_start[static_cast<size_t>(p)]);
      const int64_t at = base[static_cast<size_t>(p)];
      const std::vector<int64_t>& first = firsts[static_cast<size_t>(p)];
      for (size_t k = 0; k < first.size(); ++k) {
        unique_ids[static_cast<size_t>(at) + k] = run_ids[b + static_cast<size_t>(first[k])];
        unique_tags[static_cast<size_t>(at) + k] = run_tags[b + static_cast<size_t>(first[k])];
      }
    }
  });
  // Each key reads its index where its run put it (written from the runs, the keys' indices land
  // at random places and their cache lines move between the cores).
  parallel_for(n, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      inverse[i] = base[part_of(key_hash(ids[i], tags ? tags[i] : 0))] + local[static_cast<size_t>(place[i])];
  });
}

}  // namespace recis
