// Hashing string and ID columns on the pool. The algorithms (recis/hash_algo.h: FarmHash
// Fingerprint64 and MurmurHash3 x64-128, low half) are written from the published ones;
// packages/recis-features/tests/test_hashing.py checks them against pyfarmhash, mmh3 and
// TensorFlow's documented bucket values.
#include "recis/hash.h"

#include <stdexcept>
#include <string>

#include "column_tasks.h"
#include "recis/hash_algo.h"
#include "recis/parallel.h"

namespace recis {

uint64_t farmhash_fingerprint64(const uint8_t* s, size_t len) { return hash_algo::farmhash_fingerprint64(s, len); }

uint64_t murmur3_x64_64(const uint8_t* s, size_t len, uint64_t seed) { return hash_algo::murmur3_x64_64(s, len, seed); }

template <typename Offset>
void hash_strings(const Offset* offsets, int64_t n, const uint8_t* data, int64_t data_len, StringHash algo,
                  uint64_t seed, int64_t buckets, int64_t* out) {
  if (buckets < 0) throw std::invalid_argument("hash_strings: buckets must be >= 0, got " + std::to_string(buckets));
  for (int64_t i = 0; i < n; ++i)
    if (offsets[i] < 0 || offsets[i + 1] < offsets[i] || static_cast<int64_t>(offsets[i + 1]) > data_len)
      throw std::invalid_argument("hash_strings: offsets[" + std::to_string(i) + "..] = " + std::to_string(offsets[i]) +
                                  ", " + std::to_string(offsets[i + 1]) + " do not fit " + std::to_string(data_len) +
                                  " bytes");
  parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* s = data + offsets[i];
      const auto len = static_cast<size_t>(offsets[i + 1] - offsets[i]);
      uint64_t h = algo == StringHash::kFarm ? farmhash_fingerprint64(s, len) : murmur3_x64_64(s, len, seed);
      if (buckets > 0) h %= static_cast<uint64_t>(buckets);
      out[i] = static_cast<int64_t>(h);
    }
  });
}

void hash_string_columns(const std::vector<StringColumn>& columns) {
  std::vector<int64_t> sizes;
  for (size_t c = 0; c < columns.size(); ++c) {
    const StringColumn& col = columns[c];
    if (col.buckets < 0)
      throw std::invalid_argument(detail::column_error("hash_strings", c) + "buckets must be >= 0, got " +
                                  std::to_string(col.buckets));
    if (col.n > 0 && col.offsets[0] != 0)
      throw std::invalid_argument(detail::column_error("hash_strings", c) + "offsets[0] must be 0, got " +
                                  std::to_string(col.offsets[0]));
    sizes.push_back(col.n);
  }
  // Offsets are checked inside each chunk: a second serial pass would cost as much as hashing.
  detail::parallel_over_columns(sizes, 8192, [&](int64_t c, int64_t begin, int64_t end) {
    const StringColumn& col = columns[c];
    const auto buckets = static_cast<uint64_t>(col.buckets);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t lo = col.offsets[i], hi = col.offsets[i + 1];
      if (lo < 0 || hi < lo || hi > col.data_len)
        throw std::invalid_argument(detail::column_error("hash_strings", c) + "offsets[" + std::to_string(i) +
                                    "..] = " + std::to_string(lo) + ", " + std::to_string(hi) + " do not fit " +
                                    std::to_string(col.data_len) + " bytes");
      const uint8_t* str = col.data + lo;
      const auto len = static_cast<size_t>(hi - lo);
      uint64_t h =
          col.algo == StringHash::kFarm ? farmhash_fingerprint64(str, len) : murmur3_x64_64(str, len, col.seed);
      if (buckets > 0) h %= buckets;
      col.out[i] = static_cast<int64_t>(h);
    }
  });
}

void hash_id_columns(const std::vector<IdColumn>& columns) {
  std::vector<int64_t> sizes;
  for (size_t c = 0; c < columns.size(); ++c) {
    const IdColumn& col = columns[c];
    if (col.k < 1)
      throw std::invalid_argument(detail::column_error("hash_ids", c) +
                                  "needs at least one hash per ID, got k=" + std::to_string(col.k));
    for (int64_t j = 0; j < col.k; ++j)
      if (col.buckets[j] < 0)
        throw std::invalid_argument(detail::column_error("hash_ids", c) + "buckets must be >= 0, got " +
                                    std::to_string(col.buckets[j]));
    sizes.push_back(col.n);
  }
  detail::parallel_over_columns(sizes, kMinChunk, [&](int64_t c, int64_t begin, int64_t end) {
    const IdColumn& col = columns[c];
    for (int64_t i = begin; i < end; ++i) {
      const auto* id = reinterpret_cast<const uint8_t*>(col.ids + i);
      for (int64_t j = 0; j < col.k; ++j) {
        uint64_t h = murmur3_x64_64(id, 8, col.seed + static_cast<uint64_t>(j));
        if (col.buckets[j] > 0) h %= static_cast<uint64_t>(col.buckets[j]);
        col.out[i * col.k + j] = static_cast<int64_t>(h);
      }
    }
  });
}

template void hash_strings<int32_t>(const int32_t*, int64_t, const uint8_t*, int64_t, StringHash, uint64_t, int64_t,
                                    int64_t*);
template void hash_strings<int64_t>(const int64_t*, int64_t, const uint8_t*, int64_t, StringHash, uint64_t, int64_t,
                                    int64_t*);

}  // namespace recis
