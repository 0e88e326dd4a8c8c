// Sparse optimizer updates over a HashTable's rows: for each touched row, read its reduced
// gradient, update its optimizer slots and its embedding in one pass. Rows not in the batch are
// left alone ("lazy" semantics), so a row's moments only move when the row is seen.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recis/hash_table.h"

namespace recis {

enum class OptKind {
  kSgd,      // w -= lr * (g + wd * w)
  kAdagrad,  // s += g^2; w -= lr_t * g / (sqrt(s) + eps), lr_t = lr / (1 + (t - 1) * lr_decay)  (torch.optim.Adagrad)
  kRowWiseAdagrad,  // s += mean_d(g^2) (one float per row); w -= lr * g / (sqrt(s) + eps)  (FBGEMM/TorchRec)
  kAdam,            // torch.optim.Adam; with decoupled: torch.optim.AdamW
  kAdamTF,          // TF/Keras Adam: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t * m / (sqrt(v) + eps)
  kFtrl,            // FTRL-Proximal (McMahan et al. 2013, Algorithm 1), slots z and n
};

// Slots each kind needs, in the order sparse_update expects them: {name, width (0: the table's
// dim, else that many floats), initial value from OptConfig::initial_accumulator when true}.
struct SlotSpec {
  const char* name;
  int64_t width;
  bool accumulator;
};
std::vector<SlotSpec> slot_specs(OptKind kind);

struct OptConfig {
  OptKind kind = OptKind::kSgd;
  float lr = 0.01f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;  // Adam kinds: decay w *= 1 - lr * wd before the update (AdamW); else L2 in g
  float lr_decay = 0.0f;   // Adagrad
  float l1 = 0.0f, l2 = 0.0f, ftrl_beta = 1.0f;  // FTRL
  int64_t step = 1;                              // t, the bias-correction step (1 on the first update)
  float grad_scale = 1.0f;                       // multiplies every gradient first (global norm clipping)
};

OptKind parse_opt_kind(const std::string& name);

// Updates single rows of one table under one config; per-step constants are computed once.
// Used by sparse_update and by the fused pooled backward (which reduces a row's gradient and
// updates it at once), through the rows' access (which holds the table's lock).
class RowUpdater {
 public:
  RowUpdater(const HashTable::RowAccess& rows, const OptConfig& c, const std::vector<int>& slots);
  // Prefetches row r's embedding and slots (call some rows ahead).
  void prefetch(int64_t r) const;
  // Applies the update to row r (>= 0) with its gradient g (dim floats, not yet scaled).
  void apply(int64_t r, const float* g) const;

 private:
  const HashTable::RowAccess& rows_;
  OptConfig c_;
  int s0_ = -1, s1_ = -1;  // the kind's slots (first, second), -1 when it has fewer
  int64_t dim_;
  // Per-step constants: the step size (Adam: lr / (1 - beta1^t); TF Adam: its lr_t; Adagrad: the
  // decayed lr), Adam's sqrt(1 - beta2^t), and decoupled weight decay's factor 1 - lr * wd.
  float step_size_ = 0, sqrt_bias2_ = 1, decay_ = 1;
};

// Applies one update per row: rows (n, distinct; -1 is skipped) with reduced gradients grad
// (n x dim). slots: indices of the kind's slot_specs in the table. Takes the table's lock.
void sparse_update(HashTable& t, const OptConfig& c, const std::vector<int>& slots, const int64_t* rows, int64_t n,
                   const float* grad);

// The backward of a pooled table lookup fused with the optimizer (the lookup's rows distinct, -1
// skipped; index, offsets, weights, scales and layout as for pooling): each row's gradient is
// reduced into a per-thread buffer and applied to the row at once; no (rows x dim) gradient is
// ever stored. Takes the table's lock.
void pooled_backward_update(HashTable& t, const OptConfig& c, const std::vector<int>& slots, const int64_t* rows,
                            int64_t num_rows, const int64_t* index, const int64_t* offsets, int64_t bags,
                            const float* weights, const float* scales, const float* grad_out, const BagLayout& layout,
                            const char* op);

}  // namespace recis
