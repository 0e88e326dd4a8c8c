// Conversions between nanobind ndarrays (DLPack) and the core's borrowed/owned arrays.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "recis/buffer.h"
#include "recis/ragged.h"

namespace recis::bind {

namespace nb = nanobind;

// Any dtype, any rank >= 1, read-only, contiguous, on the CPU.
using AnyArray = nb::ndarray<nb::pytorch, nb::ro, nb::c_contig, nb::device::cpu>;
using I64Array = nb::ndarray<nb::pytorch, const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

inline std::vector<size_t> shape_of(const AnyArray& a) {
  std::vector<size_t> s(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) s[i] = a.shape(i);
  return s;
}

// One value = itemsize times the product of the trailing dimensions.
inline Column column_of(const AnyArray& a, const char* op, const char* name) {
  if (a.ndim() == 0) throw std::invalid_argument(std::string(op) + ": " + name + " must have at least one dimension");
  int64_t value_bytes = static_cast<int64_t>(a.itemsize());
  for (size_t i = 1; i < a.ndim(); ++i) value_bytes *= static_cast<int64_t>(a.shape(i));
  return Column{static_cast<const uint8_t*>(a.data()), value_bytes};
}

// Hands an owned buffer to Python as a torch tensor of the given shape and dtype (no copy).
inline nb::object to_tensor(Buffer&& buf, const std::vector<size_t>& shape, nb::dlpack::dtype dtype) {
  uint8_t* data = buf.release();
  nb::capsule owner(data, [](void* p) noexcept { buffer_free(static_cast<uint8_t*>(p)); });
  return nb::cast(nb::ndarray<nb::pytorch>(data, shape.size(), shape.data(), owner, nullptr, dtype));
}

}  // namespace recis::bind
