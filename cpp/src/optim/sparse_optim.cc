// Fused per-row optimizer updates. Each formula follows its reference's operation order (torch's
// single-tensor Adam/Adagrad, TF's ApplyAdam, the FTRL-Proximal paper) so results match to float
// rounding.
#include "recis/sparse_optim.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "recis/huge_pages.h"
#include "recis/keys.h"
#include "recis/parallel.h"

namespace recis {

std::vector<SlotSpec> slot_specs(OptKind kind) {
  switch (kind) {
    case OptKind::kSgd: return {};
    case OptKind::kAdagrad: return {{"adagrad.sum", 0, true}};
    case OptKind::kRowWiseAdagrad: return {{"rowwise_adagrad.sum", 1, true}};
    case OptKind::kAdam:
    case OptKind::kAdamTF: return {{"adam.m", 0, false}, {"adam.v", 0, false}};
    case OptKind::kFtrl: return {{"ftrl.z", 0, false}, {"ftrl.n", 0, true}};
  }
  return {};
}

OptKind parse_opt_kind(const std::string& name) {
  static const std::pair<const char*, OptKind> kinds[] = {
      {"sgd", OptKind::kSgd},   {"adagrad", OptKind::kAdagrad}, {"rowwise_adagrad", OptKind::kRowWiseAdagrad},
      {"adam", OptKind::kAdam}, {"adam_tf", OptKind::kAdamTF},  {"ftrl", OptKind::kFtrl}};
  for (const auto& [n, k] : kinds)
    if (name == n) return k;
  throw std::invalid_argument("sparse_update: unknown optimizer '" + name +
                              "' (expected sgd, adagrad, rowwise_adagrad, adam, adam_tf or ftrl)");
}

RowUpdater::RowUpdater(const HashTable::RowAccess& rows, const OptConfig& c, const std::vector<int>& slots)
    : rows_(rows), c_(c), dim_(rows.dim()) {
  const std::vector<SlotSpec> specs = slot_specs(c.kind);
  if (slots.size() != specs.size())
    throw std::invalid_argument("sparse_update: expected " + std::to_string(specs.size()) + " slots, got " +
                                std::to_string(slots.size()));
  for (size_t i = 0; i < specs.size(); ++i) {
    const int s = slots[i];
    const int64_t width = specs[i].width ? specs[i].width : dim_;
    if (s < 0 || s >= rows.num_slots() || rows.slot_width(s) != width)
      throw std::invalid_argument(std::string("sparse_update: slot '") + specs[i].name + "' must be a slot of width " +
                                  std::to_string(width) + ", got index " + std::to_string(s));
  }
  if (!specs.empty()) s0_ = slots[0];
  if (specs.size() > 1) s1_ = slots[1];
  if (c.step < 1) throw std::invalid_argument("sparse_update: step must be >= 1, got " + std::to_string(c.step));
  const bool adam = c.kind == OptKind::kAdam || c.kind == OptKind::kAdamTF;
  if (c.decoupled && !adam)
    throw std::invalid_argument("sparse_update: decoupled weight decay is for the Adam kinds only");
  if (c.kind == OptKind::kFtrl && c.weight_decay != 0.0f)
    throw std::invalid_argument("sparse_update: FTRL takes l1/l2, not weight_decay");
  const double step = static_cast<double>(c.step);
  switch (c.kind) {
    case OptKind::kAdam:  // lr / (1 - beta1^t), and sqrt(1 - beta2^t) corrects v
      step_size_ = static_cast<float>(c.lr / (1.0 - std::pow(static_cast<double>(c.beta1), step)));
      sqrt_bias2_ = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(c.beta2), step)));
      break;
    case OptKind::kAdamTF:  // TF's lr_t
      step_size_ = static_cast<float>(c.lr * std::sqrt(1.0 - std::pow(static_cast<double>(c.beta2), step)) /
                                      (1.0 - std::pow(static_cast<double>(c.beta1), step)));
      break;
    case OptKind::kAdagrad:  // torch's clr, the decayed learning rate
      step_size_ = static_cast<float>(c.lr / (1.0 + (step - 1.0) * c.lr_decay));
      break;
    default: break;
  }
  if (c.decoupled) decay_ = 1.0f - c.lr * c.weight_decay;
}

void RowUpdater::prefetch(int64_t r) const {
  const size_t bytes = static_cast<size_t>(dim_) * sizeof(float);
  prefetch_lines(rows_.embedding(r), static_cast<size_t>(dim_ * row_type_bytes(rows_.row_type())), true);
  if (s0_ >= 0) prefetch_lines(rows_.slot(s0_, r), static_cast<size_t>(rows_.slot_width(s0_)) * sizeof(float), true);
  if (s1_ >= 0) prefetch_lines(rows_.slot(s1_, r), bytes, true);
}

namespace {

// One row's update (the body of RowUpdater::apply), compiled once per vector width (RECIS_VECTOR_CLONES).
RECIS_VECTOR_CLONES void update_row(const OptConfig& c_, float step_size, float sqrt_bias2, float decay_, int64_t dim_,
                                    float* w_row, float* s0_row, float* s1_row, const float* g_in) {
  // Branch-free inner loops (they vectorize): L2 decay enters as g += l2 * w with l2 = 0 when off,
  // decoupled decay as w *= decay_ with decay_ = 1 when off.
  float* __restrict w = w_row;
  const float* __restrict gi = g_in;
  const int64_t dim = dim_;
  const float gs = c_.grad_scale;
  const float l2 = c_.decoupled ? 0.0f : c_.weight_decay;
  switch (c_.kind) {
    case OptKind::kSgd:
      for (int64_t d = 0; d < dim; ++d) w[d] -= c_.lr * (gi[d] * gs + l2 * w[d]);
      return;
    case OptKind::kAdagrad: {
      float* __restrict s = s0_row;
      for (int64_t d = 0; d < dim; ++d) {
        const float g = gi[d] * gs + l2 * w[d];
        s[d] += g * g;
        w[d] -= step_size * (g / (std::sqrt(s[d]) + c_.eps));
      }
      return;
    }
    case OptKind::kRowWiseAdagrad: {
      float* s = s0_row;
      // Eight partial sums, added in a fixed order: the loop vectorizes and every machine rounds alike.
      float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t d = 0;
      for (; d + 8 <= dim; d += 8)
        for (int k = 0; k < 8; ++k) {
          const float g = gi[d + k] * gs + l2 * w[d + k];
          lanes[k] += g * g;
        }
      for (; d < dim; ++d) {
        const float g = gi[d] * gs + l2 * w[d];
        lanes[0] += g * g;
      }
      const float sq =
          ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
      *s += sq / static_cast<float>(dim);
      const float step = c_.lr / (std::sqrt(*s) + c_.eps);
      for (int64_t d = 0; d < dim; ++d) w[d] -= step * (gi[d] * gs + l2 * w[d]);
      return;
    }
    case OptKind::kAdam: {
      float* __restrict m = s0_row;
      float* __restrict v = s1_row;
      const float b1c = 1.0f - c_.beta1, b2 = c_.beta2, b2c = 1.0f - c_.beta2, inv_b = 1.0f / sqrt_bias2;
      for (int64_t d = 0; d < dim; ++d) {
        const float g = gi[d] * gs + l2 * w[d];
        const float md = m[d] + b1c * (g - m[d]);
        const float vd = v[d] * b2 + b2c * g * g;
        m[d] = md;
        v[d] = vd;
        w[d] = w[d] * decay_ - step_size * (md / (std::sqrt(vd) * inv_b + c_.eps));
      }
      return;
    }
    case OptKind::kAdamTF: {
      float* __restrict m = s0_row;
      float* __restrict v = s1_row;
      const float b1c = 1.0f - c_.beta1, b2c = 1.0f - c_.beta2;
      for (int64_t d = 0; d < dim; ++d) {
        const float g = gi[d] * gs + l2 * w[d];
        const float md = m[d] + (g - m[d]) * b1c;
        const float vd = v[d] + (g * g - v[d]) * b2c;
        m[d] = md;
        v[d] = vd;
        w[d] = w[d] * decay_ - step_size * md / (std::sqrt(vd) + c_.eps);
      }
      return;
    }
    case OptKind::kFtrl: {
      float* __restrict z = s0_row;
      float* __restrict n = s1_row;
      const float alpha = c_.lr, l1 = c_.l1;
      for (int64_t d = 0; d < dim; ++d) {
        const float g = gi[d] * gs;
        const float n_new = n[d] + g * g;
        const float sigma = (std::sqrt(n_new) - std::sqrt(n[d])) / alpha;
        const float zd = z[d] + g - sigma * w[d];
        z[d] = zd;
        n[d] = n_new;
        const float shrunk = zd - std::copysign(l1, zd);
        w[d] = std::fabs(zd) <= l1 ? 0.0f : -shrunk / ((c_.ftrl_beta + std::sqrt(n_new)) / alpha + c_.l2);
      }
      return;
    }
  }
}

}  // namespace

void RowUpdater::apply(int64_t r, const float* g) const {
  float* s0 = s0_ >= 0 ? rows_.slot(s0_, r) : nullptr;
  float* s1 = s1_ >= 0 ? rows_.slot(s1_, r) : nullptr;
  const RowType type = rows_.row_type();
  if (type == RowType::kF32) {
    update_row(c_, step_size_, sqrt_bias2_, decay_, dim_, static_cast<float*>(rows_.embedding(r)), s0, s1, g);
    return;
  }
  // 16-bit rows: widened, updated in float32, rounded back (stochastically: the bits drawn from
  // the row and the step, so a run repeats exactly).
  thread_local std::vector<float> wide;
  wide.resize(static_cast<size_t>(dim_));
  load_row(type, rows_.embedding(r), wide.data(), dim_);
  update_row(c_, step_size_, sqrt_bias2_, decay_, dim_, wide.data(), s0, s1, g);
  const uint64_t seed =
      rows_.stochastic_rounding()
          ? mix64(static_cast<uint64_t>(r) * 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(c_.step)) | 1
          : 0;
  store_row(type, wide.data(), rows_.embedding(r), dim_, seed);
}

void sparse_update(HashTable& t, const OptConfig& c, const std::vector<int>& slots, const int64_t* rows, int64_t n,
                   const float* grad) {
  const HashTable::RowAccess access = t.access_rows();
  const RowUpdater up(access, c, slots);
  access.check_rows(rows, n, "sparse_update");
  const int64_t dim = t.dim();
  constexpr int64_t kAhead = 8;
  parallel_for(n, std::max<int64_t>(64, 8192 / dim), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (i + kAhead < end && rows[i + kAhead] >= 0) up.prefetch(rows[i + kAhead]);
      if (rows[i] >= 0) up.apply(rows[i], grad + i * dim);
    }
  });
}

}  // namespace recis
