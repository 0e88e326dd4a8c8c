// Drives the device table's map bodies (recis/device_map.h) from std::threads, as CUDA threads
// run them: in each of many rounds, threads released together claim distinct keys in a small map
// (long probe chains, slots raced for); then every key is found with its value, absent keys are
// not, and no key took two slots. Prints "ok ..." or the first failure (test_device_bodies.py).
#include <atomic>
#include <cstdio>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "recis/device_map.h"

// One round: a fresh map, every thread released at once; 0 when every check holds.
int round(std::mt19937_64& rng) {
  constexpr int kThreads = 8;
  constexpr int64_t kSlots = 1 << 8, kKeys = kSlots / 2 - 3;  // load just under 0.5
  std::vector<int64_t> ids(kSlots, 0), tags(kSlots, 0), values(kSlots, -1);
  const recis::MapView map{ids.data(), tags.data(), values.data(), kSlots - 1};
  std::set<std::pair<int64_t, int64_t>> seen;
  std::vector<std::pair<int64_t, int64_t>> keys;
  while (static_cast<int64_t>(keys.size()) < kKeys) {
    const std::pair<int64_t, int64_t> k{static_cast<int64_t>(rng()), static_cast<int64_t>(rng() % 3)};
    if (seen.insert(k).second) keys.push_back(k);
  }
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int64_t i = t; i < kKeys; i += kThreads) recis::map_claim(map, keys[i].first, keys[i].second, i);
    });
  go.store(true);
  for (std::thread& t : threads) t.join();
  for (int64_t i = 0; i < kKeys; ++i)
    if (recis::map_find(map, keys[i].first, keys[i].second) != i) {
      std::printf("key %lld found as %lld\n", static_cast<long long>(i),
                  static_cast<long long>(recis::map_find(map, keys[i].first, keys[i].second)));
      return 1;
    }
  for (int64_t i = 0; i < kKeys; ++i)
    if (recis::map_find(map, keys[i].first, keys[i].second + 3) != -1) {
      std::printf("absent key found\n");
      return 1;
    }
  int64_t placed = 0;
  for (int64_t s = 0; s < kSlots; ++s) placed += values[s] >= 0;
  if (placed != kKeys) {
    std::printf("%lld slots taken for %lld keys\n", static_cast<long long>(placed), static_cast<long long>(kKeys));
    return 1;
  }
  return 0;
}

int main() {
  std::mt19937_64 rng(7);
  constexpr int kRounds = 2000;
  for (int r = 0; r < kRounds; ++r)
    if (round(rng) != 0) return 1;
  std::printf("ok %d rounds\n", kRounds);
  return 0;
}
