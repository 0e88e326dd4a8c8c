// How a table stores its embedding rows: float32, or 16-bit bfloat16 / float16 (half the bytes).
// Arithmetic is always float32: rows are widened when read (lookups, pooling, optimizer updates)
// and rounded when written, to nearest even, or for bfloat16 optionally stochastically (each
// value rounds up with probability equal to the fraction cut off, so small updates are not lost
// on average).
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace recis {

enum class RowType : uint8_t { kF32, kBf16, kF16 };

inline int64_t row_type_bytes(RowType t) { return t == RowType::kF32 ? 4 : 2; }

inline RowType parse_row_type(const std::string& name) {
  if (name == "float32") return RowType::kF32;
  if (name == "bfloat16") return RowType::kBf16;
  if (name == "float16") return RowType::kF16;
  throw std::invalid_argument("HashTable: dtype must be float32, bfloat16 or float16, got '" + name + "'");
}

inline const char* row_type_name(RowType t) {
  return t == RowType::kF32 ? "float32" : t == RowType::kBf16 ? "bfloat16" : "float16";
}

// Element types of 16-bit rows; to_f32 widens any stored element.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

inline float to_f32(float x) { return x; }
inline float to_f32(Bf16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_f32(F16 x) {
  _Float16 h;
  std::memcpy(&h, &x.bits, 2);
  return static_cast<float>(h);
}

// float32 -> bfloat16 bits: nearest even (NaN stays NaN), or stochastic with 16 random bits.
inline uint16_t bf16_bits(float f, uint32_t random16 = 0x7FFF, bool stochastic = false) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  if ((u & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>(u >> 16);          // +-inf
  const uint32_t add = stochastic ? (random16 & 0xFFFFu) : 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + add) >> 16);  // may carry into the exponent: rounds to inf past the max
}
inline uint16_t f16_bits(float f) {
  const auto h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

// A row of `dim` stored elements at src, widened into dst.
inline void load_row(RowType t, const void* src, float* dst, int64_t dim) {
  if (t == RowType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(dim) * 4);
  } else if (t == RowType::kBf16) {
    const auto* s = static_cast<const Bf16*>(src);
    for (int64_t d = 0; d < dim; ++d) dst[d] = to_f32(s[d]);
  } else {
    const auto* s = static_cast<const F16*>(src);
    for (int64_t d = 0; d < dim; ++d) dst[d] = to_f32(s[d]);
  }
}

// `dim` float32 values rounded into a stored row. `seed` != 0 with bfloat16: stochastic rounding,
// its random bits a pure function of the seed and the position (runs repeat).
inline void store_row(RowType t, const float* src, void* dst, int64_t dim, uint64_t seed = 0) {
  if (t == RowType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(dim) * 4);
  } else if (t == RowType::kBf16) {
    auto* d16 = static_cast<uint16_t*>(dst);
    uint64_t s = seed;
    for (int64_t d = 0; d < dim; ++d) {
      uint32_t r = 0;
      if (seed) {  // xorshift64*: cheap, and plenty for rounding noise
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        r = static_cast<uint32_t>((s * 0x2545F4914F6CDD1DULL) >> 48);
      }
      d16[d] = bf16_bits(src[d], r, seed != 0);
    }
  } else {
    auto* d16 = static_cast<uint16_t*>(dst);
    for (int64_t d = 0; d < dim; ++d) d16[d] = f16_bits(src[d]);
  }
}

}  // namespace recis
