// The string and integer hash algorithms of recis.features, header-only and compiled for host and
// device (RECIS_HD): FarmHash Fingerprint64 (farmhashna::Hash64, TensorFlow's
// string_to_hash_bucket_fast) and the low 64 bits of MurmurHash3 x64-128. Little-endian only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "recis/hd.h"

namespace recis::hash_algo {

struct U128 {
  uint64_t first, second;
};

constexpr uint64_t kFarm0 = 0xc3a5c85c97cb3127ULL;
constexpr uint64_t kFarm1 = 0xb492b66fbe98f273ULL;
constexpr uint64_t kFarm2 = 0x9ae16a3b2f90404fULL;

RECIS_HD inline uint64_t fetch64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;  // little-endian hosts only (x86-64, aarch64), as the extension is built for
}
RECIS_HD inline uint32_t fetch32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
RECIS_HD inline uint64_t rotate(uint64_t v, int shift) { return shift == 0 ? v : (v >> shift) | (v << (64 - shift)); }
RECIS_HD inline uint64_t shift_mix(uint64_t v) { return v ^ (v >> 47); }

RECIS_HD inline uint64_t hash_len16(uint64_t u, uint64_t v, uint64_t mul) {
  uint64_t a = (u ^ v) * mul;
  a ^= a >> 47;
  uint64_t b = (v ^ a) * mul;
  b ^= b >> 47;
  return b * mul;
}

RECIS_HD inline uint64_t hash_len0to16(const uint8_t* s, size_t len) {
  if (len >= 8) {
    const uint64_t mul = kFarm2 + len * 2;
    const uint64_t a = fetch64(s) + kFarm2;
    const uint64_t b = fetch64(s + len - 8);
    const uint64_t c = rotate(b, 37) * mul + a;
    const uint64_t d = (rotate(a, 25) + b) * mul;
    return hash_len16(c, d, mul);
  }
  if (len >= 4) {
    const uint64_t mul = kFarm2 + len * 2;
    const uint64_t a = fetch32(s);
    return hash_len16(len + (a << 3), fetch32(s + len - 4), mul);
  }
  if (len > 0) {
    const uint8_t a = s[0], b = s[len >> 1], c = s[len - 1];
    const uint32_t y = static_cast<uint32_t>(a) + (static_cast<uint32_t>(b) << 8);
    const uint32_t z = static_cast<uint32_t>(len) + (static_cast<uint32_t>(c) << 2);
    return shift_mix(y * kFarm2 ^ z * kFarm0) * kFarm2;
  }
  return kFarm2;
}

RECIS_HD inline uint64_t hash_len17to32(const uint8_t* s, size_t len) {
  const uint64_t mul = kFarm2 + len * 2;
  const uint64_t a = fetch64(s) * kFarm1, b = fetch64(s + 8);
  const uint64_t c = fetch64(s + len - 8) * mul, d = fetch64(s + len - 16) * kFarm2;
  return hash_len16(rotate(a + b, 43) + rotate(c, 30) + d, a + rotate(b + kFarm2, 18) + c, mul);
}

RECIS_HD inline uint64_t hash_len33to64(const uint8_t* s, size_t len) {
  const uint64_t mul = kFarm2 + len * 2;
  const uint64_t a = fetch64(s) * kFarm2, b = fetch64(s + 8);
  const uint64_t c = fetch64(s + len - 8) * mul, d = fetch64(s + len - 16) * kFarm2;
  const uint64_t y = rotate(a + b, 43) + rotate(c, 30) + d;
  const uint64_t z = hash_len16(y, a + rotate(b + kFarm2, 18) + c, mul);
  const uint64_t e = fetch64(s + 16) * mul, f = fetch64(s + 24);
  const uint64_t g = (y + fetch64(s + len - 32)) * mul, h = (z + fetch64(s + len - 24)) * mul;
  return hash_len16(rotate(e + f, 43) + rotate(g, 30) + h, e + rotate(f + a, 18) + g, mul);
}

RECIS_HD inline U128 weak_hash_len32_with_seeds(const uint8_t* s, uint64_t a, uint64_t b) {
  const uint64_t w = fetch64(s), x = fetch64(s + 8), y = fetch64(s + 16), z = fetch64(s + 24);
  a += w;
  b = rotate(b + a + z, 21);
  const uint64_t c = a;
  a += x;
  a += y;
  b += rotate(a, 44);
  return {a + z, b + c};
}

RECIS_HD inline uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

RECIS_HD inline uint64_t farmhash_fingerprint64(const uint8_t* s, size_t len) {
  constexpr uint64_t seed = 81;
  if (len <= 16) return hash_len0to16(s, len);
  if (len <= 32) return hash_len17to32(s, len);
  if (len <= 64) return hash_len33to64(s, len);
  uint64_t x = seed, y = seed * kFarm1 + 113, z = shift_mix(y * kFarm2 + 113) * kFarm2;
  U128 v{0, 0}, w{0, 0};
  x = x * kFarm2 + fetch64(s);
  const uint8_t* end = s + ((len - 1) / 64) * 64;
  const uint8_t* last64 = end + ((len - 1) & 63) - 63;
  do {
    x = rotate(x + y + v.first + fetch64(s + 8), 37) * kFarm1;
    y = rotate(y + v.second + fetch64(s + 48), 42) * kFarm1;
    x ^= w.second;
    y += v.first + fetch64(s + 40);
    z = rotate(z + w.first, 33) * kFarm1;
    v = weak_hash_len32_with_seeds(s, v.second * kFarm1, x + w.first);
    w = weak_hash_len32_with_seeds(s + 32, z + w.second, y + fetch64(s + 16));
    const uint64_t t = z;
    z = x;
    x = t;
    s += 64;
  } while (s != end);
  const uint64_t mul = kFarm1 + ((z & 0xff) << 1);
  s = last64;
  w.first += ((len - 1) & 63);
  v.first += w.first;
  w.first += v.first;
  x = rotate(x + y + v.first + fetch64(s + 8), 37) * mul;
  y = rotate(y + v.second + fetch64(s + 48), 42) * mul;
  x ^= w.second * 9;
  y += v.first * 9 + fetch64(s + 40);
  z = rotate(z + w.first, 33) * mul;
  v = weak_hash_len32_with_seeds(s, v.second * mul, x + w.first);
  w = weak_hash_len32_with_seeds(s + 32, z + w.second, y + fetch64(s + 16));
  const uint64_t t = z;
  z = x;
  x = t;
  return hash_len16(hash_len16(v.first, w.first, mul) + shift_mix(y) * kFarm0 + z,
                    hash_len16(v.second, w.second, mul) + x, mul);
}

RECIS_HD inline uint64_t murmur3_x64_64(const uint8_t* data, size_t len, uint64_t seed) {
  constexpr uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
  uint64_t h1 = seed, h2 = seed;
  const size_t blocks = len / 16;
  for (size_t i = 0; i < blocks; ++i) {
    uint64_t a = fetch64(data + i * 16), b = fetch64(data + i * 16 + 8);
    a *= c1;
    a = rotate(a, 64 - 31);
    a *= c2;
    h1 ^= a;
    h1 = rotate(h1, 64 - 27);
    h1 += h2;
    h1 = h1 * 5 + 0x52dce729;
    b *= c2;
    b = rotate(b, 64 - 33);
    b *= c1;
    h2 ^= b;
    h2 = rotate(h2, 64 - 31);
    h2 += h1;
    h2 = h2 * 5 + 0x38495ab5;
  }
  const uint8_t* tail = data + blocks * 16;
  uint64_t a = 0, b = 0;
  const size_t rest = len & 15;
  for (size_t i = rest; i > 8; --i) b ^= static_cast<uint64_t>(tail[i - 1]) << (8 * (i - 9));
  if (rest > 8) {
    b *= c2;
    b = rotate(b, 64 - 33);
    b *= c1;
    h2 ^= b;
  }
  for (size_t i = rest < 8 ? rest : 8; i > 0; --i) a ^= static_cast<uint64_t>(tail[i - 1]) << (8 * (i - 1));
  if (rest > 0) {
    a *= c1;
    a = rotate(a, 64 - 31);
    a *= c2;
    h1 ^= a;
  }
  h1 ^= len;
  h2 ^= len;
  h1 += h2;
  h2 += h1;
  h1 = fmix64(h1);
  h2 = fmix64(h2);
  h1 += h2;
  return h1;
}

}  // namespace recis::hash_algo
