// Sharding across ranks: which rank owns a key, and a batch's keys split by owner for the
// all-to-all exchanges of recis.embedding.distributed.
#pragma once

#include <cstdint>
#include <vector>

#include "recis/buffer.h"
#include "recis/keys.h"

namespace recis {

// The rank that owns an ID among `world` ranks: mix64(id) mod world (recis.embedding.owner), with
// the modulo done by multiplications (Lemire's fastmod on 32-bit halves; a 64-bit division costs
// tens of cycles per key). Exact for world in [1, 65535].
class OwnerRank {
 public:
  explicit OwnerRank(uint32_t world)
      : w_(world),
        m_(~uint64_t{0} / world + 1),
        shift_(mod32(1u << 16) * (1u << 16) % world),
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

// The distinct keys of a batch, ordered by owner rank.
struct RoutedKeys {
  size_t size = 0;              // distinct keys
  Buffer ids;                   // int64 [size]
  Buffer tags;                  // int32 [size]
  std::vector<int64_t> counts;  // keys per rank, in rank order
  Buffer index;                 // int64, one per input key: its position among the ordered keys
};

// De-duplicates the keys of the runs and orders the distinct ones by owner rank. world in [1, 65535].
RoutedKeys route_keys(const std::vector<KeyRun>& keys, int64_t world);

// Bags of keys split by owner rank, for pooling on the owners. One block per rank q: `header`,
// how many keys of each bag q owns (one count per bag), then those keys' IDs in input order.
struct RoutedBags {
  size_t size = 0;             // int64 values in `packed`
  Buffer packed;               // the blocks, rank after rank
  std::vector<int64_t> sizes;  // each block's length
  size_t order_size = 0;       // the keys (when asked for), else 0
  Buffer order;                // int64: order[i] is the input position of the i-th packed ID
};

// `ids`: one run per feature, laid end to end; bag b holds keys offsets[b]:offsets[b + 1] of
// them (bags + 1 offsets from 0 to the keys, checked). Tags are not used.
RoutedBags route_bags(const std::vector<KeyRun>& ids, const int64_t* offsets, int64_t bags, int64_t world,
                      const std::vector<int64_t>& header, bool with_order);

}  // namespace recis
