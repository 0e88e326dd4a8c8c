// Row initializers. Every value is drawn from a counter-based stream keyed by (seed, ID), so it
// depends on nothing else.
#include "recis/initializer.h"

#include <algorithm>
#include <cmath>

#include "recis/keys.h"
#include "recis/parallel.h"

namespace recis {
namespace {

// Counter-based stream of uniform doubles in [0, 1) for one (seed, id): value k is a pure
// function of (seed, id, k).
struct RowRandom {
  uint64_t base;
  uint64_t k = 0;
  double next() { return static_cast<double>(mix64(base + 0x9e3779b97f4a7c15ULL * ++k) >> 11) * 0x1.0p-53; }
  double normal() {  // Box-Muller; 1 - u keeps the log argument in (0, 1]
    const double u = 1.0 - next(), v = next();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

// out[k] = low + width * u_k for k < dim (kept below low + width), u_k uniform in [0, 1) on a
// 2^-24 grid: a 32-bit counter hash of (row stream, k), two rounds of the lowbias32 mixer.
// 32-bit lanes, so the loop vectorizes (8 values per AVX2 instruction), which a 64-bit mix per
// value would not.
RECIS_VECTOR_CLONES void uniform_row(uint64_t stream, float low, float width, float* out, int64_t dim) {
  const auto lo = static_cast<uint32_t>(stream), hi = static_cast<uint32_t>(stream >> 32);
  const float top = std::nextafter(low + width, low);  // float rounding must not reach the open end
  auto mix32 = [](uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
  };
  for (int64_t k = 0; k < dim; ++k) {
    const uint32_t x = mix32(mix32(lo + static_cast<uint32_t>(k) * 0x9e3779b9U) ^ hi);
    out[k] = std::min(top, low + width * (static_cast<float>(static_cast<int32_t>(x >> 8)) * 0x1.0p-24f));
  }
}

}  // namespace

void init_row(const Initializer& init, uint64_t seed, int64_t id, float* out, int64_t dim) {
  RowRandom rng{mix64(seed ^ mix64(static_cast<uint64_t>(id)))};
  switch (init.kind) {
    case InitKind::kConstant: std::fill(out, out + dim, static_cast<float>(init.value)); break;
    case InitKind::kUniform:
      uniform_row(rng.base, static_cast<float>(init.low), static_cast<float>(init.high - init.low), out, dim);
      break;
    case InitKind::kNormal:
      for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(init.mean + init.stddev * rng.normal());
      break;
    case InitKind::kTruncatedNormal:
      for (int64_t i = 0; i < dim; ++i) {
        double z;
        do z = rng.normal();
        while (std::fabs(z) > 2.0);
        out[i] = static_cast<float>(init.mean + init.stddev * z);
      }
      break;
    case InitKind::kXavierUniform: {
      const auto bound = static_cast<float>(std::sqrt(6.0 / (1.0 + static_cast<double>(dim))));
      uniform_row(rng.base, -bound, 2.0f * bound, out, dim);
      break;
    }
  }
}

}  // namespace recis
