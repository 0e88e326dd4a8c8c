// Owned, 64-byte aligned memory that C++ kernels return when the caller cannot know the output
// size in advance. The bindings hand the pointer to Python (DLPack) without copying.
//
// Large blocks come from a small process-wide cache: a freshly mapped block costs a page fault
// per 4 KiB on first touch, which dominated kernels that return a new batch every step. Freed blocks of 256 KiB and
// more are kept (up to a byte budget) and handed out again to requests of the same size class (the next power of two).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace recis {

// Allocates at least `bytes` (never null); free with buffer_free.
uint8_t* buffer_alloc(size_t bytes);
void buffer_free(uint8_t* p) noexcept;
// Bytes currently held by the cache (for tests and introspection).
size_t buffer_cache_bytes();
// Sets the cache budget (0 disables caching and frees what is held).
void set_buffer_cache_limit(size_t bytes);

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes) : ptr_(buffer_alloc(bytes)), bytes_(bytes) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      buffer_free(ptr_);
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
    }
    return *this;
  }
  ~Buffer() { buffer_free(ptr_); }

  uint8_t* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  // Gives up ownership; free the result with buffer_free.
  uint8_t* release() {
    uint8_t* p = ptr_;
    ptr_ = nullptr;
    return p;
  }

 private:
  uint8_t* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Scratch array of n trivially copyable T, backed by a Buffer (so large ones reuse cached, already
// faulted-in blocks): uninitialized unless given a fill value.
template <typename T>
class ScratchArray {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  explicit ScratchArray(size_t n) : buf_(n * sizeof(T)), n_(n) {}
  ScratchArray(size_t n, T value) : ScratchArray(n) { std::fill(data(), data() + n, value); }
  T* data() const { return buf_.as<T>(); }
  T& operator[](size_t i) const { return data()[i]; }
  size_t size() const { return n_; }
  T* begin() const { return data(); }
  T* end() const { return data() + n_; }

 private:
  Buffer buf_;
  size_t n_;
};

}  // namespace recis
