// Bindings for the sparse optimizer updates.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "recis/sparse_optim.h"
#include "tensor.h"

namespace recis::bind {

using F32Grad = nb::ndarray<nb::pytorch, const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

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
        std::lock_guard<std::mutex> lock(t.mutex());
        sparse_update(t, c, slots, rows.data(), n, grad.data());
      },
      nb::arg("table"), nb::arg("config"), nb::arg("slots"), nb::arg("rows"), nb::arg("grad"),
      "Updates each (distinct) row with its reduced gradient; rows -1 are skipped.");
}

}  // namespace recis::bind
