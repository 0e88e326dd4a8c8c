// Bindings for the thread pool and the Ragged kernels. Thin: convert, release the GIL, call.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "recis/buffer.h"
#include "recis/parallel.h"
#include "recis/ragged.h"
#include "recis/segment.h"
#include "tensor.h"

namespace recis::bind {
namespace {

Offsets offsets_of(const I64Array& offsets, int64_t num_values, const char* op) {
  if (offsets.shape(0) == 0) throw std::invalid_argument(std::string(op) + ": offsets must have at least one element");
  return Offsets{offsets.data(), static_cast<int64_t>(offsets.shape(0)) - 1, num_values};
}

struct Inputs {
  Offsets offsets;
  std::vector<Column> columns;
};

// values and the optional weights share the offsets; weights must match values' first dimension.
Inputs inputs_of(const I64Array& offsets, const AnyArray& values, const std::optional<AnyArray>& weights,
                 const char* op) {
  Inputs in{offsets_of(offsets, values.ndim() ? static_cast<int64_t>(values.shape(0)) : 0, op), {}};
  in.columns.push_back(column_of(values, op, "values"));
  if (weights) {
    if (weights->ndim() != 1 || weights->shape(0) != values.shape(0))
      throw std::invalid_argument(std::string(op) + ": weights must be 1-D with " + std::to_string(values.shape(0)) +
                                  " entries (one per value), got " + std::to_string(weights->ndim()) + "-D with " +
                                  (weights->ndim() ? std::to_string(weights->shape(0)) : std::string("1")));
    in.columns.push_back(column_of(*weights, op, "weights"));
  }
  return in;
}

using F32Array = nb::ndarray<nb::pytorch, const float, nb::c_contig, nb::device::cpu>;

// The D of (N,) scores or weights beside (N, D) values.
int64_t pool_dim(const F32Array& per_event, const F32Array& values, const char* op) {
  if (per_event.ndim() != 1 || values.ndim() != 2 || per_event.shape(0) != values.shape(0))
    throw std::invalid_argument(std::string(op) + ": expected (N,) scores or weights and (N, D) values, got " +
                                std::to_string(per_event.ndim()) + "-D and " + std::to_string(values.ndim()) +
                                "-D arrays of " + std::to_string(per_event.ndim() ? per_event.shape(0) : 0) + " and " +
                                std::to_string(values.ndim() ? values.shape(0) : 0) + " rows");
  return static_cast<int64_t>(values.shape(1));
}

// Returns (offsets, values, weights or None) as torch tensors.
nb::tuple ragged_out(RaggedResult&& r, const AnyArray& values, const std::optional<AnyArray>& weights) {
  auto shape = shape_of(values);
  shape[0] = static_cast<size_t>(r.num_values);
  nb::object out_values = to_tensor(std::move(r.columns[0]), shape, values.dtype());
  nb::object out_weights = nb::none();
  if (weights) {
    auto wshape = shape_of(*weights);
    wshape[0] = static_cast<size_t>(r.num_values);
    out_weights = to_tensor(std::move(r.columns[1]), wshape, weights->dtype());
  }
  nb::object out_offsets = to_tensor(std::move(r.offsets), {static_cast<size_t>(r.num_rows + 1)}, nb::dtype<int64_t>());
  return nb::make_tuple(out_offsets, out_values, out_weights);
}

}  // namespace

void init_common(nb::module_& m) {
  m.def(
      "_parallel_for_hits",
      [](int64_t n, int64_t grain, int64_t fail_at, int64_t spin_us) {
        std::vector<int32_t> hits(static_cast<size_t>(std::max<int64_t>(n, 0)));
        std::mutex m;
        std::set<std::thread::id> threads;
        {
          nb::gil_scoped_release release;
          parallel_for(n, grain, [&](int64_t begin, int64_t end) {
            {
              std::lock_guard<std::mutex> lock(m);
              threads.insert(std::this_thread::get_id());
            }
            for (int64_t i = begin; i < end; ++i) {
              if (i == fail_at) throw std::invalid_argument("parallel_for test: failed at " + std::to_string(i));
              ++hits[static_cast<size_t>(i)];
              const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
              while (std::chrono::steady_clock::now() < until) {
              }
            }
          });
        }
        return std::make_tuple(hits, static_cast<int64_t>(threads.size()));
      },
      nb::arg("n"), nb::arg("grain"), nb::arg("fail_at") = -1, nb::arg("spin_us") = 0,
      "Test hook: (visits per index of [0, n), distinct threads used); throws at fail_at; spins spin_us per index.");
  m.def("buffer_cache_bytes", &recis::buffer_cache_bytes, "Bytes of freed output blocks kept for reuse.");
  m.def("set_buffer_cache_limit", &recis::set_buffer_cache_limit, nb::arg("bytes"),
        "Budget of the output-block cache (default 1 GiB); 0 disables it and frees what it holds.");
  m.def("num_threads", &recis::num_threads, "Threads the core's parallel loops use (the caller included).");
  m.def("set_num_threads", &recis::set_num_threads, nb::arg("n"), nb::call_guard<nb::gil_scoped_release>(),
        "Resizes the core's thread pool.");
  m.def("attach_openmp", &recis::attach_openmp, nb::call_guard<nb::gil_scoped_release>(),
        "Runs the core's loops on the OpenMP team of the runtime torch loaded; returns its path or ''.");
  m.def("detach_openmp", &recis::detach_openmp, nb::call_guard<nb::gil_scoped_release>(),
        "Runs the core's loops on its own threads again.");
  m.def("on_openmp", &recis::on_openmp, "Whether the core's loops run on an OpenMP team.");

  m.def(
      "validate_offsets",
      [](const I64Array& offsets, int64_t num_values) {
        Offsets o = offsets_of(offsets, num_values, "Ragged");
        nb::gil_scoped_release release;
        validate_offsets(o, "Ragged");
      },
      nb::arg("offsets"), nb::arg("num_values"),
      "Raises ValueError unless offsets start at 0, never decrease and end at num_values.");

  m.def(
      "ragged_truncate",
      [](const I64Array& offsets, const AnyArray& values, const std::optional<AnyArray>& weights, int64_t max_len,
         bool keep_last) {
        Inputs in = inputs_of(offsets, values, weights, "ragged_truncate");
        RaggedResult r;
        {
          nb::gil_scoped_release release;
          r = ragged_truncate(in.offsets, in.columns, max_len, keep_last);
        }
        return ragged_out(std::move(r), values, weights);
      },
      nb::arg("offsets"), nb::arg("values"), nb::arg("weights").none(), nb::arg("max_len"), nb::arg("keep_last"),
      "Keeps at most max_len values per row; returns (offsets, values, weights).");

  m.def(
      "ragged_select",
      [](const I64Array& offsets, const AnyArray& values, const std::optional<AnyArray>& weights,
         const I64Array& rows) {
        Inputs in = inputs_of(offsets, values, weights, "ragged_select");
        RaggedResult r;
        {
          nb::gil_scoped_release release;
          r = ragged_select(in.offsets, in.columns, rows.data(), static_cast<int64_t>(rows.shape(0)));
        }
        return ragged_out(std::move(r), values, weights);
      },
      nb::arg("offsets"), nb::arg("values"), nb::arg("weights").none(), nb::arg("rows"),
      "Gathers rows by index; returns (offsets, values, weights).");

  m.def(
      "ragged_to_dense",
      [](const I64Array& offsets, const AnyArray& values, const std::optional<AnyArray>& weights, const AnyArray& pad,
         int64_t max_len, bool keep_last) {
        Inputs in = inputs_of(offsets, values, weights, "ragged_to_dense");
        const Column pad_col = column_of(pad, "ragged_to_dense", "pad");
        if (pad.dtype() != values.dtype() ||
            pad_col.value_bytes * static_cast<int64_t>(pad.shape(0)) != in.columns[0].value_bytes)
          throw std::invalid_argument("ragged_to_dense: pad must hold exactly one value of values' dtype and shape");
        static const uint8_t zeros[16] = {};
        std::vector<const uint8_t*> pads{pad_col.data};
        if (weights) pads.push_back(zeros);  // 1-D, at most 16 bytes per value
        DenseResult r;
        {
          nb::gil_scoped_release release;
          r = ragged_to_dense(in.offsets, in.columns, pads, max_len, keep_last);
        }
        auto shape = shape_of(values);
        shape[0] = static_cast<size_t>(r.max_len);
        shape.insert(shape.begin(), static_cast<size_t>(r.num_rows));
        nb::object dense = to_tensor(std::move(r.columns[0]), shape, values.dtype());
        nb::object dense_weights = nb::none();
        if (weights)
          dense_weights =
              to_tensor(std::move(r.columns[1]), {static_cast<size_t>(r.num_rows), static_cast<size_t>(r.max_len)},
                        weights->dtype());
        nb::object mask = to_tensor(
            std::move(r.mask), {static_cast<size_t>(r.num_rows), static_cast<size_t>(r.max_len)}, nb::dtype<bool>());
        return nb::make_tuple(dense, mask, dense_weights);
      },
      nb::arg("offsets"), nb::arg("values"), nb::arg("weights").none(), nb::arg("pad"), nb::arg("max_len"),
      nb::arg("keep_last"), "Pads rows to a [rows, max_len, ...] array; returns (dense, mask, dense weights).");
  m.def(
      "dense_to_ragged",
      [](const I64Array& offsets, const AnyArray& dense, int64_t max_len, bool keep_last) {
        const char* op = "dense_to_ragged";
        const int64_t last = offsets.shape(0) ? offsets.data()[offsets.shape(0) - 1] : 0;
        const Offsets o = offsets_of(offsets, last, op);  // the values: as many as the offsets say
        const int64_t rows = o.num_rows;
        int64_t cells = 0;
        if (max_len < 0 || dense.ndim() == 0 || __builtin_mul_overflow(rows, max_len, &cells) ||
            static_cast<int64_t>(dense.shape(0)) != cells)
          throw std::invalid_argument(std::string(op) + ": dense must hold " + std::to_string(rows) +
                                      " rows x max_len " + std::to_string(max_len) + " cells, got " +
                                      std::to_string(dense.ndim() ? dense.shape(0) : 0));
        const Column column = column_of(dense, op, "dense");
        Buffer out;
        {
          nb::gil_scoped_release release;
          out = dense_to_ragged(o, column, max_len, keep_last);
        }
        auto shape = shape_of(dense);
        shape[0] = static_cast<size_t>(std::max<int64_t>(o.num_values, 0));
        return to_tensor(std::move(out), shape, dense.dtype());
      },
      nb::arg("offsets"), nb::arg("dense"), nb::arg("max_len"), nb::arg("keep_last"),
      "ragged_to_dense's gradient with respect to the values: each value read back from its cell of dense "
      "(rows * max_len cells, flattened), values cut by max_len as zeros.");
  m.def(
      "segment_softmax_pool",
      [](const I64Array& offsets, const F32Array& scores, const F32Array& values) {
        const char* op = "segment_softmax_pool";
        const int64_t dim = pool_dim(scores, values, op);
        const Offsets o = offsets_of(offsets, static_cast<int64_t>(scores.shape(0)), op);
        Buffer weights(static_cast<size_t>(o.num_values) * sizeof(float));
        Buffer out(static_cast<size_t>(o.num_rows * dim) * sizeof(float));
        {
          nb::gil_scoped_release release;
          segment_softmax_pool(scores.data(), values.data(), o, dim, weights.as<float>(), out.as<float>());
        }
        return nb::make_tuple(
            to_tensor(std::move(out), {static_cast<size_t>(o.num_rows), static_cast<size_t>(dim)}, nb::dtype<float>()),
            to_tensor(std::move(weights), {static_cast<size_t>(o.num_values)}, nb::dtype<float>()));
      },
      nb::arg("offsets"), nb::arg("scores"), nb::arg("values"),
      "Softmax of each row's scores, then the weighted sum of its values; returns (out (rows, D), weights (N,)).");
  m.def(
      "segment_softmax_pool_backward",
      [](const I64Array& offsets, const F32Array& grad_out, const F32Array& weights, const F32Array& values) {
        const char* op = "segment_softmax_pool_backward";
        const int64_t dim = pool_dim(weights, values, op);
        const Offsets o = offsets_of(offsets, static_cast<int64_t>(weights.shape(0)), op);
        if (grad_out.ndim() != 2 || static_cast<int64_t>(grad_out.shape(0)) != o.num_rows ||
            static_cast<int64_t>(grad_out.shape(1)) != dim)
          throw std::invalid_argument(std::string(op) + ": grad_out must be (rows, D) = (" +
                                      std::to_string(o.num_rows) + ", " + std::to_string(dim) + ")");
        Buffer grad_scores(static_cast<size_t>(o.num_values) * sizeof(float));
        Buffer grad_values(static_cast<size_t>(o.num_values * dim) * sizeof(float));
        {
          nb::gil_scoped_release release;
          segment_softmax_pool_backward(grad_out.data(), weights.data(), values.data(), o, dim, grad_scores.as<float>(),
                                        grad_values.as<float>());
        }
        return nb::make_tuple(
            to_tensor(std::move(grad_scores), {static_cast<size_t>(o.num_values)}, nb::dtype<float>()),
            to_tensor(std::move(grad_values), {static_cast<size_t>(o.num_values), static_cast<size_t>(dim)},
                      nb::dtype<float>()));
      },
      nb::arg("offsets"), nb::arg("grad_out"), nb::arg("weights"), nb::arg("values"),
      "Gradients of segment_softmax_pool; returns (grad_scores (N,), grad_values (N, D)).");
  m.def(
      "segment_expand",
      [](const I64Array& offsets, const AnyArray& x, int64_t num_values) {
        const char* op = "segment_expand";
        const Column c = column_of(x, op, "x");
        const Offsets o = offsets_of(offsets, num_values, op);
        if (static_cast<int64_t>(x.shape(0)) != o.num_rows)
          throw std::invalid_argument(std::string(op) + ": x has " + std::to_string(x.shape(0)) + " rows, offsets " +
                                      std::to_string(o.num_rows));
        Buffer out(static_cast<size_t>(num_values * c.value_bytes));
        {
          nb::gil_scoped_release release;
          segment_expand(c.data, c.value_bytes, o, out.as<uint8_t>());
        }
        auto shape = shape_of(x);
        shape[0] = static_cast<size_t>(num_values);
        return to_tensor(std::move(out), shape, x.dtype());
      },
      nb::arg("offsets"), nb::arg("x"), nb::arg("num_values"),
      "Row b of x repeated over its events: (rows, ...) -> (num_values, ...).");
  m.def(
      "segment_sum",
      [](const I64Array& offsets, const F32Array& values) {
        const char* op = "segment_sum";
        if (values.ndim() != 2)
          throw std::invalid_argument(std::string(op) + ": values must be (N, D), got a " +
                                      std::to_string(values.ndim()) + "-D array");
        const int64_t dim = static_cast<int64_t>(values.shape(1));
        const Offsets o = offsets_of(offsets, static_cast<int64_t>(values.shape(0)), op);
        Buffer out(static_cast<size_t>(o.num_rows * dim) * sizeof(float));
        {
          nb::gil_scoped_release release;
          segment_sum(values.data(), o, dim, out.as<float>());
        }
        return to_tensor(std::move(out), {static_cast<size_t>(o.num_rows), static_cast<size_t>(dim)},
                         nb::dtype<float>());
      },
      nb::arg("offsets"), nb::arg("values"), "Each row's values summed (in double): (N, D) -> (rows, D).");
}

}  // namespace recis::bind
