// Owned, 64-byte aligned memory that C++ kernels return when the caller cannot know the output
// size in advance. The bindings hand the pointer to Python (DLPack) without copying.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace recis {

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes) : bytes_(bytes) {
    // aligned_alloc wants a size that is a multiple of the alignment; never ask for zero bytes so
    // every buffer has a valid, unique address (DLPack consumers dislike null data pointers).
    const size_t rounded = ((bytes + 63) / 64) * 64;
    ptr_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded == 0 ? 64 : rounded)));
    if (!ptr_) throw std::bad_alloc();
  }
  uint8_t* data() const { return ptr_.get(); }
  template <typename T>
  T* as() const { return reinterpret_cast<T*>(ptr_.get()); }
  size_t bytes() const { return bytes_; }
  // Gives up ownership; free the result with std::free.
  uint8_t* release() { return ptr_.release(); }

 private:
  std::unique_ptr<uint8_t, FreeDeleter> ptr_;
  size_t bytes_ = 0;
};

}  // namespace recis
