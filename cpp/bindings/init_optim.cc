// Bindings of recis.core._C.optim: the sparse optimizer updates, alone or fused with the pooled backward.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "pooling_args.h"
#include "recis/pooling.h"
#include "recis/ragged.h"
#include "recis/sparse_optim.h"
#include "tensor.h"

namespace recis::bind {

using F32Grad = nb::ndarray<nb::pytorch, const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Array1 = nb::ndarray<nb::pytorch, const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

void init_optim(nb::module_& m) {
  nb::class_<OptConfig>(m, "OptConfig", "Hyper-parameters of one sparse update (see recis/sparse_optim.h).")
      .def(
          "__init__", [](OptConfig* c, const std::string& kind) { new (c) OptConfig{parse_opt_kind(kind)}; },
          nb::arg("kind"))
      .def_rw("lr", &OptConfig::lr)
      .def_rw("beta1", &OptConfig::beta1)
      .def_rw("beta2", &OptConfig::beta2)
      .def_rw("eps", &OptConfig::eps)
      .def_rw("weight_decay", &OptConfig::weight_decay)
      .def_rw("decoupled", &OptConfig::decoupled)
      .def_rw("lr_decay", &OptConfig::lr_decay)
      .def_rw("l1", &OptConfig::l1)
      .def_rw("l2", &OptConfig::l2)
      .def_rw("ftrl_beta", &OptConfig::ftrl_beta)
      .def_rw("step", &OptConfig::step)
      .def_rw("grad_scale", &OptConfig::grad_scale);

  m.def(
      "optimizer_slots",
      [](const std::string& kind) {
        std::vector<std::tuple<std::string, int64_t, bool>> out;
        for (const SlotSpec& s : slot_specs(parse_opt_kind(kind))) out.emplace_back(s.name, s.width, s.accumulator);
        return out;
      },
      nb::arg("kind"), "Slots an optimizer kind keeps per row: (name, width (0: the table's dim), accumulator).");

  m.def(
      "sparse_update",
      [](HashTable& t, const OptConfig& c, const std::vector<int>& slots, const I64Array& rows, const F32Grad& grad) {
        const int64_t n = static_cast<int64_t>(rows.shape(0));
        if (static_cast<int64_t>(grad.shape(0)) != n || static_cast<int64_t>(grad.shape(1)) != t.dim())
          throw std::invalid_argument("sparse_update: grad must be " + std::to_string(n) + " x " +
                                      std::to_string(t.dim()) + ", got " + std::to_string(grad.shape(0)) + " x " +
                                      std::to_string(grad.shape(1)));
        nb::gil_scoped_release release;
        sparse_update(t, c, slots, rows.data(), n, grad.data());
      },
      nb::arg("table"), nb::arg("config"), nb::arg("slots"), nb::arg("rows"), nb::arg("grad"),
      "Updates each (distinct) row with its reduced gradient; rows -1 are skipped.");

  m.def(
      "pooled_backward_update",
      [](HashTable& t, const OptConfig& c, const std::vector<int>& slots, const I64Array& rows, const I64Array& index,
         const I64Array& offsets, const std::optional<F32Array1>& weights, const std::vector<std::string>& combiners,
         const std::vector<int64_t>& runs, const F32Grad& grad_out, bool batch_major) {
        const char* op = "pooled_backward_update";
        const auto n = static_cast<int64_t>(index.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        const std::vector<BagRun> parsed = parse_runs(combiners, runs, op);
        const BagLayout layout = parse_layout(runs, batch_major, op);
        check_out_shape(grad_out, layout, bags, t.dim(), op, "grad_out");
        if (weights && static_cast<int64_t>(weights->shape(0)) != n)
          throw std::invalid_argument(std::string(op) + ": weights must have " + std::to_string(n) + " entries");
        const float* w = weights ? weights->data() : nullptr;
        nb::gil_scoped_release release;
        validate_offsets(Offsets{offsets.data(), bags, n}, op);
        const std::vector<float> scales = bag_scales(offsets.data(), bags, w, parsed, op);
        pooled_backward_update(t, c, slots, rows.data(), static_cast<int64_t>(rows.shape(0)), index.data(),
                               offsets.data(), bags, w, scales.empty() ? nullptr : scales.data(), grad_out.data(),
                               layout, op);
      },
      nb::arg("table"), nb::arg("config"), nb::arg("slots"), nb::arg("rows"), nb::arg("index"), nb::arg("offsets"),
      nb::arg("weights").none(), nb::arg("combiners"), nb::arg("runs"), nb::arg("grad_out"),
      nb::arg("batch_major") = false,
      "Backward of a pooled table lookup fused with the optimizer: reduces each unique row's gradient and "
      "updates the row at once (rows distinct; -1 skipped).");
}

}  // namespace recis::bind
