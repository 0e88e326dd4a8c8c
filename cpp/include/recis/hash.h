// String and integer hashes for feature IDs.
//
// farm: FarmHash Fingerprint64 (farmhashna::Hash64), the hash behind TensorFlow's
// string_to_hash_bucket_fast, so IDs match models trained there. murmur: the low 64 bits of
// MurmurHash3 x64-128 (what mmh3.hash64 returns first), with a seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace recis {

uint64_t farmhash_fingerprint64(const uint8_t* s, size_t len);
uint64_t murmur3_x64_64(const uint8_t* s, size_t len, uint64_t seed);

enum class StringHash { kFarm, kMurmur };

// Hashes n strings in Arrow layout (string i is data[offsets[i] .. offsets[i+1])) into out.
// buckets > 0 maps each hash h to h mod buckets (unsigned, as TensorFlow does); 0 keeps all 64
// bits (reinterpreted as int64). Offsets are int32 (Arrow string) or int64 (large_string).
template <typename Offset>
void hash_strings(const Offset* offsets, int64_t n, const uint8_t* data, int64_t data_len, StringHash algo,
                  uint64_t seed, int64_t buckets, int64_t* out);

// One string column of a fused call: n strings in Arrow layout with int64 offsets.
struct StringColumn {
  const int64_t* offsets;  // n + 1
  int64_t n;
  const uint8_t* data;
  int64_t data_len;
  StringHash algo;
  uint64_t seed;
  int64_t buckets;  // as in hash_strings
  int64_t* out;     // n
};

// Hashes many string columns in one run over the pool (tasks are column x chunk pairs). Errors
// read "hash_strings: column c: ...".
void hash_string_columns(const std::vector<StringColumn>& columns);

// One ID column of a fused call: each of the n IDs is hashed k times, hash j with seed + j and
// then mod buckets[j] when buckets[j] > 0, into out[i * k + j]. k = 1 is hash_ids; k > 1 gives
// k independent hashes of one ID (MultiHash).
struct IdColumn {
  const int64_t* ids;  // n
  int64_t n;
  uint64_t seed;
  const int64_t* buckets;  // k
  int64_t k;
  int64_t* out;  // n * k
};

// Hashes many ID columns in one run over the pool. Errors read "hash_ids: column c: ...".
void hash_id_columns(const std::vector<IdColumn>& columns);

}  // namespace recis
