// De-duplication of a batch's keys (hash-partitioned) and of the rows they found (bitmaps over
// the table's rows, so the distinct rows come out ascending without a sort).
#include <algorithm>
#include <cstdlib>
#include <utility>

#include "recis/buffer.h"
#include "recis/keys.h"
#include "recis/parallel.h"

namespace recis {
namespace {

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
// index[i] = the index of rows[i] (a row, or -1) among the distinct rows, where `unique` (unless
// null) gets the row.
template <bool kHw>
[[gnu::always_inline]] inline void rank_rows(const int64_t* rows, int64_t* index, int64_t begin, int64_t end,
                                             const uint64_t* bits, const uint32_t* below, int64_t none_at,
                                             int64_t* unique) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = rows[i];
    index[i] = r < 0 ? none_at : rank_of<kHw>(bits, below, r);
    if (unique && r >= 0) unique[index[i]] = r;  // repeats store the same value
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
bool has_popcnt() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("popcnt") && !std::getenv("RECIS_NO_POPCNT");
}
#else  // elsewhere __builtin_popcountll is the machine's own instruction
#define RECIS_POPCNT
bool has_popcnt() noexcept { return !std::getenv("RECIS_NO_POPCNT"); }
#endif
const bool kHasPopcnt = has_popcnt();
RECIS_POPCNT uint32_t count_below_hw(const uint64_t* bits, int64_t words, uint32_t* below) {
  return count_below<true>(bits, words, below);
}
RECIS_POPCNT void rank_rows_hw(const int64_t* rows, int64_t* index, int64_t begin, int64_t end, const uint64_t* bits,
                               const uint32_t* below, int64_t none_at, int64_t* unique) {
  rank_rows<true>(rows, index, begin, end, bits, below, none_at, unique);
}
RECIS_POPCNT uint32_t rank_bucket_hw(const uint16_t* rows, int64_t n, int64_t words, uint16_t* ranks) {
  return rank_bucket<true>(rows, n, words, ranks);
}

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

// unique_rows over a table at most 64 times the batch, or of fewer than 2^22 rows: a bitmap over
// its rows marks the ones present (each part of the keys in a bitmap of its own, OR-ed after); a
// row's index among them is the number of marked rows below it (popcounts), so they come out
// ascending with no sort.
bool unique_rows_dense(const int64_t* rows, int64_t n, int64_t words, std::vector<int64_t>& unique, int64_t* index) {
  const int64_t parts = n < kMinParallel && words < kMinParallel ? 1 : num_threads();
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
        const int64_t r = rows[i];
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
    parallel_for(words, kMinChunk, [&](int64_t begin, int64_t end) {
      for (int64_t p = 1; p < parts; ++p)
        for (int64_t w = begin; w < end; ++w) bits[w] |= marks[static_cast<size_t>(p * words + w)];
    });
  const int64_t u =
      kHasPopcnt ? count_below_hw(bits, words, below.data()) : count_below<false>(bits, words, below.data());
  unique.resize(static_cast<size_t>(u + none));
  if (none) unique[static_cast<size_t>(u)] = -1;
  int64_t* uniq = unique.data();
  if (parts == 1) {  // one thread: each key writes its row at its rank (no pass over the words)
    if (kHasPopcnt)
      rank_rows_hw(rows, index, 0, n, bits, below.data(), u, uniq);
    else
      rank_rows<false>(rows, index, 0, n, bits, below.data(), u, uniq);
    return none;
  }
  // Each part ranks a range of the keys and lists the marked rows of a range of the words: every
  // thread writes ranges of its own (keys writing their rows at their ranks would write at
  // random, and the result's cache lines would go back and forth between the cores).
  parallel_for(2 * parts, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t p = t % parts;
      if (t < parts) {
        const int64_t begin = n * p / parts, end = n * (p + 1) / parts;
        if (kHasPopcnt)
          rank_rows_hw(rows, index, begin, end, bits, below.data(), u, nullptr);
        else
          rank_rows<false>(rows, index, begin, end, bits, below.data(), u, nullptr);
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
bool unique_rows_bucketed(const int64_t* rows, int64_t n, int64_t capacity, std::vector<int64_t>& unique,
                          int64_t* index) {
  int shift = 6;
  while (shift < kMaxBucketShift && (int64_t{1} << shift) * n < 64 * capacity) ++shift;
  const int64_t buckets = ((capacity + (int64_t{1} << shift) - 1) >> shift) + 1;
  auto bucket = [&](int64_t r) { return r < 0 ? buckets - 1 : r >> shift; };
  const int64_t parts = n < kMinParallel ? 1 : num_threads();
  auto part_begin = [&](int64_t p) { return n * p / parts; };
  // at[p * buckets + b]: part p's keys in bucket b, then where the next of them goes.
  std::vector<uint32_t> at(static_cast<size_t>(parts * buckets), 0);
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      uint32_t* count = at.data() + p * buckets;
      for (int64_t i = part_begin(p), stop = part_begin(p + 1); i < stop; ++i) ++count[bucket(rows[i])];
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
        const uint32_t k = next[bucket(rows[i])]++;
        sorted[k] = static_cast<uint16_t>(rows[i] & low);
        where[static_cast<size_t>(i)] = k;
      }
    }
  });
  ScratchArray<uint16_t> rank(static_cast<size_t>(n));       // rank[k]: sorted[k]'s among its bucket's distinct rows
  std::vector<int64_t> first(static_cast<size_t>(buckets));  // distinct rows per bucket, then the index of its first
  parallel_for(buckets - 1, 16, [&](int64_t bb, int64_t be) {
    const int64_t words = int64_t{1} << (shift - 6);
    for (int64_t b = bb; b < be; ++b) {
      const uint32_t s0 = start[static_cast<size_t>(b)], m = start[static_cast<size_t>(b) + 1] - s0;
      first[static_cast<size_t>(b)] = m == 0       ? 0
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
  parallel_for(2 * parts, n < kMinChunk ? 2 * parts : 1, [&](int64_t tb, int64_t te) {  // small: inline
    for (int64_t t = tb; t < te; ++t) {
      const int64_t p = t % parts;
      if (t < parts) {
        for (int64_t i = part_begin(p), stop = part_begin(p + 1); i < stop; ++i) {
          const int64_t r = rows[i];
          index[i] = r < 0 ? u : first[static_cast<size_t>(r >> shift)] + rank[where[static_cast<size_t>(i)]];
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

std::vector<int64_t> run_starts(const std::vector<KeyRun>& keys) {
  std::vector<int64_t> starts(keys.size() + 1, 0);
  for (size_t k = 0; k < keys.size(); ++k) starts[k + 1] = starts[k] + keys[k].n;
  return starts;
}

bool unique_rows(const int64_t* rows, int64_t n, int64_t capacity, std::vector<int64_t>& unique, int64_t* index) {
  const int64_t words = (capacity + 63) / 64;
  if (words <= n || words < kMinParallel) return unique_rows_dense(rows, n, words, unique, index);
  if (words <= 8 * n + kMinParallel && n <= UINT32_MAX) return unique_rows_bucketed(rows, n, capacity, unique, index);
  // Sparse over a huge table: hash de-duplication, rows unordered (from a copy: index may be rows).
  std::vector<uint16_t> unused;
  ScratchArray<int64_t> copy(static_cast<size_t>(n));
  std::copy(rows, rows + n, copy.data());
  unique_keys(copy.data(), nullptr, n, unique, unused, index);
  return std::find(unique.begin(), unique.end(), -1) != unique.end();
}

void unique_keys(const int64_t* ids, const uint16_t* tags, int64_t n, std::vector<int64_t>& unique_ids,
                 std::vector<uint16_t>& unique_tags, int64_t* index) {
  // Radix-partition the keys by hash into contiguous runs (parallel), then de-duplicate each run
  // with a table small enough for the cache (parallel). Unique keys come out by partition, then
  // in first-seen order: deterministic for a given input.
  constexpr int kBits = 6, kParts = 1 << kBits;
  const int64_t chunks = n < kMinParallel ? 1 : std::min<int64_t>(64, std::max<int64_t>(1, num_threads() * 4));
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
  ScratchArray<int64_t> place(static_cast<size_t>(n)),
      run_ids(static_cast<size_t>(n));  // place[i]: key i's in the runs
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
    base[static_cast<size_t>(p) + 1] =
        base[static_cast<size_t>(p)] + static_cast<int64_t>(firsts[static_cast<size_t>(p)].size());
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
  parallel_for(n, kMinChunk, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      index[i] = base[part_of(key_hash(ids[i], tags ? tags[i] : 0))] + local[static_cast<size_t>(place[i])];
  });
}

}  // namespace recis
