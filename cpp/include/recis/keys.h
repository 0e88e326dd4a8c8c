// Keys of the embedding tables: an int64 feature ID plus a 16-bit tag naming the logical table
// inside a merged physical one. Callers hand them over as runs (one feature's IDs, or keys with a
// tag each) that are read in place, never concatenated; de-duplication works on keys or on rows.
#pragma once

#include <cstdint>
#include <vector>

#include "recis/hd.h"

namespace recis {

// 64-bit mixer (the splitmix64 finalizer): spreads sequential and skewed IDs evenly.
RECIS_HD inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The hash of a key: the ID map's home slot and de-duplication's partition come from it.
RECIS_HD inline uint64_t key_hash(int64_t id, uint16_t tag) {
  return mix64(static_cast<uint64_t>(id) + 0x632be59bd9b4e019ULL * tag);
}

// n keys read in place: all of logical table `tag`, or with a tag each (`tags`).
struct KeyRun {
  const int64_t* ids;
  int64_t n;
  uint16_t tag = 0;
  const uint16_t* tags = nullptr;
};

// Where each run starts when the runs are laid end to end; the last entry is their total.
std::vector<int64_t> run_starts(const std::vector<KeyRun>& keys);

// Hash-based de-duplication (radix-partitioned, parallel): the distinct keys and, per input key,
// its index among them. Keys come out grouped by hash partition, then in first-seen order.
void unique_keys(const int64_t* ids, const uint16_t* tags, int64_t n, std::vector<int64_t>& unique_ids,
                 std::vector<uint16_t>& unique_tags, int64_t* index);

// De-duplicates row indices in [-1, capacity): `unique` gets the distinct rows and index[i] the
// position of rows[i] among them (`index` may be `rows` itself, updated in place). The rows come
// out ascending with a -1 last (a bitmap over the rows, or over each bucket of rows when the table
// has 2^22 rows or more and more than 64 per key), unless the table is far larger than the batch
// (hash order then). Returns whether a -1 is among them.
bool unique_rows(const int64_t* rows, int64_t n, int64_t capacity, std::vector<int64_t>& unique, int64_t* index);

}  // namespace recis
