// The backward of a pooled lookup fused with the sparse optimizer: reduce_rows hands each unique
// row's gradient to a sink that updates the row at once.
#include "recis/pooling.h"
#include "recis/sparse_optim.h"

namespace recis {

void pooled_backward_update(HashTable& t, const OptConfig& c, const std::vector<int>& slots, const int64_t* rows,
                            int64_t num_rows, const int64_t* index, const int64_t* offsets, int64_t bags,
                            const float* weights, const float* scales, const float* grad_out, const BagLayout& layout,
                            const char* op) {
  const HashTable::RowAccess access = t.access_rows();
  access.check_rows(rows, num_rows, op);
  struct Update : RowSink {
    const RowUpdater* up;
    const int64_t* rows;
    void prefetch(int64_t k) const override {
      if (rows[k] >= 0) up->prefetch(rows[k]);
    }
    void take(int64_t k, const float* g) const override {
      if (rows[k] >= 0) up->apply(rows[k], g);
    }
  } sink;
  const RowUpdater up(access, c, slots);
  sink.up = &up;
  sink.rows = rows;
  reduce_rows(grad_out, t.dim(), index, offsets, bags, weights, scales, num_rows, sink, layout, op);
}

}  // namespace recis
