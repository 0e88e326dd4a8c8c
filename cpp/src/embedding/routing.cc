// Splitting a batch's keys by owner rank: route_keys for lookups that gather rows from the owners,
// route_bags for pooled lookups that pool on the owners.
#include "recis/routing.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "recis/parallel.h"

namespace recis {
namespace {

void check_world(int64_t world, const char* op) {
  if (world < 1 || world > 0xffff)
    throw std::invalid_argument(std::string(op) + ": world must be in [1, 65535], got " + std::to_string(world));
}

// The keys of the runs laid end to end, with a tag each.
void concat_keys(const std::vector<KeyRun>& keys, const std::vector<int64_t>& starts, int64_t* ids, uint16_t* tags) {
  parallel_for(static_cast<int64_t>(keys.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const KeyRun& run = keys[static_cast<size_t>(k)];
      const int64_t at = starts[static_cast<size_t>(k)];
      if (run.n) std::memcpy(ids + at, run.ids, static_cast<size_t>(run.n) * sizeof(int64_t));
      if (run.tags)
        std::memcpy(tags + at, run.tags, static_cast<size_t>(run.n) * sizeof(uint16_t));
      else
        std::fill(tags + at, tags + at + run.n, run.tag);
    }
  });
}

}  // namespace

RoutedKeys route_keys(const std::vector<KeyRun>& keys, int64_t world) {
  check_world(world, "route_keys");
  const std::vector<int64_t> starts = run_starts(keys);
  const int64_t n = starts.back();
  ScratchArray<int64_t> all_ids(static_cast<size_t>(n));
  ScratchArray<uint16_t> all_tags(static_cast<size_t>(n));
  concat_keys(keys, starts, all_ids.data(), all_tags.data());
  RoutedKeys out;
  out.index = Buffer(static_cast<size_t>(n) * sizeof(int64_t));
  int64_t* index = out.index.as<int64_t>();
  std::vector<int64_t> uids;
  std::vector<uint16_t> utags;
  unique_keys(all_ids.data(), all_tags.data(), n, uids, utags, index);
  const size_t u = uids.size();
  out.size = u;
  out.counts.assign(static_cast<size_t>(world), 0);
  std::vector<int64_t> rank(u), at(static_cast<size_t>(world), 0);
  const OwnerRank owner(static_cast<uint32_t>(world));
  for (size_t i = 0; i < u; ++i) {
    rank[i] = owner(uids[i]);
    ++out.counts[static_cast<size_t>(rank[i])];
  }
  for (size_t r = 1; r < static_cast<size_t>(world); ++r) at[r] = at[r - 1] + out.counts[r - 1];
  out.ids = Buffer(u * sizeof(int64_t));
  out.tags = Buffer(u * sizeof(int32_t));
  std::vector<int64_t> pos(u);
  for (size_t i = 0; i < u; ++i) {
    const int64_t p = at[static_cast<size_t>(rank[i])]++;
    pos[i] = p;
    out.ids.as<int64_t>()[p] = uids[i];
    out.tags.as<int32_t>()[p] = utags[i];
  }
  for (int64_t j = 0; j < n; ++j) index[j] = pos[static_cast<size_t>(index[j])];
  return out;
}

RoutedBags route_bags(const std::vector<KeyRun>& ids, const int64_t* off, int64_t bags, int64_t world,
                      const std::vector<int64_t>& header, bool with_order) {
  check_world(world, "route_bags");
  const std::vector<int64_t> part_start = run_starts(ids);  // part k holds keys [part_start[k], part_start[k + 1])
  const int64_t n = part_start.back();
  if (bags < 0 || off[0] != 0 || off[bags] != n)
    throw std::invalid_argument(
        "route_bags: offsets must run from 0 to the " + std::to_string(n) + " IDs, got " +
        (bags < 0 ? std::string("none") : std::to_string(off[0]) + ".." + std::to_string(off[bags])));
  for (int64_t b = 0; b < bags; ++b)
    if (off[b + 1] < off[b])
      throw std::invalid_argument("route_bags: offsets decrease at bag " + std::to_string(b) + " (" +
                                  std::to_string(off[b]) + " > " + std::to_string(off[b + 1]) + ")");
  const auto w = static_cast<size_t>(world);
  const auto head = static_cast<int64_t>(header.size());
  RoutedBags out;
  out.sizes.assign(w, head + bags);
  std::vector<int64_t> start(w, 0);
  ScratchArray<uint16_t> rank(static_cast<size_t>(n));
  out.order_size = with_order ? static_cast<size_t>(n) : 0;
  out.order = Buffer(out.order_size * sizeof(int64_t));
  const OwnerRank owner(static_cast<uint32_t>(world));
  uint16_t* __restrict rank_of = rank.data();
  int64_t* __restrict size = out.sizes.data();
  for (size_t k = 0; k < ids.size(); ++k) {  // the owner of every key, counted
    const int64_t* __restrict p = ids[k].ids;
    const int64_t begin = part_start[k], m = ids[k].n;
    for (int64_t i = 0; i < m; ++i) {
      const auto q = static_cast<uint16_t>(owner(p[i]));
      rank_of[begin + i] = q;
      ++size[q];
    }
  }
  for (size_t q = 1; q < w; ++q) start[q] = start[q - 1] + out.sizes[q - 1];
  out.size = static_cast<size_t>(start[w - 1] + out.sizes[w - 1]);
  out.packed = Buffer(out.size * sizeof(int64_t));
  int64_t* __restrict packed = out.packed.as<int64_t>();
  int64_t* __restrict ord = out.order.as<int64_t>();
  std::vector<int64_t> next(w), counts(w);  // where rank q's next ID goes; rank q's counts (bag 0)
  for (size_t q = 0; q < w; ++q) {
    std::copy(header.begin(), header.end(), packed + start[q]);
    counts[q] = start[q] + head;
    next[q] = counts[q] + bags;
    std::fill(packed + counts[q], packed + next[q], 0);
  }
  int64_t* __restrict nx = next.data();
  const int64_t* __restrict cnt = counts.data();
  const int64_t skip = head + bags;     // a block's header and counts
  size_t k = 0;                         // the part holding key j
  for (int64_t b = 0; b < bags; ++b) {  // each bag's keys, scattered to their owners and counted per owner
    for (int64_t j = off[b]; j < off[b + 1]; ++j) {
      while (j >= part_start[k + 1]) ++k;
      const uint16_t q = rank_of[j];
      const int64_t at = nx[q]++;
      packed[at] = ids[k].ids[j - part_start[k]];
      ++packed[cnt[q] + b];
      if (with_order) ord[at - (q + 1) * skip] = j;  // IDs before it: all but q + 1 headers and counts
    }
  }
  return out;
}

}  // namespace recis
