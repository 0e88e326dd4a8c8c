// Memory for big, randomly accessed arrays (ID maps, row blocks, row metadata): 2 MiB aligned and
// advised as transparent huge pages, so a random probe costs a cache miss but rarely a TLB miss,
// and first touch faults once per 2 MiB instead of once per 4 KiB.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>

#include <sys/mman.h>

namespace recis {

inline void* huge_alloc(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes < kHuge) {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
  const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, rounded);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  madvise(p, rounded, MADV_HUGEPAGE);  // advisory: ignored where THP is off
#endif
  return p;
}

// std::vector allocator over huge_alloc.
template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(huge_alloc(n * sizeof(T))); }
  void deallocate(T* p, size_t) noexcept { std::free(p); }
  // vector(n) and resize(n) leave trivial elements uninitialized (no serial zero fill of fresh
  // pages); give a value, or fill in parallel, where contents matter.
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const {
    return false;
  }
};

// Prefetches every cache line of [p, p + bytes): a 64-float row spans four lines.
inline void prefetch_lines(const void* p, size_t bytes, bool write = false) {
  const char* c = static_cast<const char*>(p);
  for (size_t off = 0; off < bytes; off += 64) {
    if (write)
      __builtin_prefetch(c + off, 1);
    else
      __builtin_prefetch(c + off, 0);
  }
}

struct HugeDeleter {
  void operator()(float* p) const noexcept { std::free(p); }
};

}  // namespace recis
