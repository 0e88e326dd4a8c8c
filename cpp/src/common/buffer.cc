// The block cache behind recis::Buffer. Each block starts with a 64-byte header holding its
// capacity, so buffer_free needs only the pointer (DLPack deleters get nothing else).
#include "recis/buffer.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace recis {
namespace {

constexpr size_t kHeader = 64;
constexpr size_t kMinCached = 256 * 1024;

struct Cache {
  std::mutex mutex;
  std::multimap<size_t, uint8_t*> free_blocks;  // capacity -> block base
  size_t held = 0;
  size_t limit = size_t{1} << 30;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked: blocks may be freed by tensors during interpreter exit
  return *c;
}

size_t size_class(size_t bytes) {
  if (bytes > (size_t{1} << 48)) throw std::bad_alloc();  // no machine has 256 TiB
  if (bytes < kMinCached) return ((bytes + 63) / 64) * 64;
  size_t c = kMinCached;
  while (c < bytes) c <<= 1;
  return c;
}

}  // namespace

uint8_t* buffer_alloc(size_t bytes) {
  const size_t capacity = size_class(bytes == 0 ? 64 : bytes);
  if (capacity >= kMinCached) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.free_blocks.find(capacity);
    if (it != c.free_blocks.end()) {
      uint8_t* base = it->second;
      c.free_blocks.erase(it);
      c.held -= capacity;
      return base + kHeader;
    }
  }
  auto* base = static_cast<uint8_t*>(std::aligned_alloc(64, capacity + kHeader));
  if (!base) throw std::bad_alloc();
  *reinterpret_cast<size_t*>(base) = capacity;
  return base + kHeader;
}

void buffer_free(uint8_t* p) noexcept {
  if (!p) return;
  uint8_t* base = p - kHeader;
  const size_t capacity = *reinterpret_cast<size_t*>(base);
  if (capacity >= kMinCached) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.held + capacity <= c.limit) {
      c.free_blocks.emplace(capacity, base);
      c.held += capacity;
      return;
    }
  }
  std::free(base);
}

size_t buffer_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.held;
}

void set_buffer_cache_limit(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.limit = bytes;
  while (c.held > c.limit && !c.free_blocks.empty()) {
    auto it = std::prev(c.free_blocks.end());  // largest first
    c.held -= it->first;
    std::free(it->second);
    c.free_blocks.erase(it);
  }
}

}  // namespace recis
