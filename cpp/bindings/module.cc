// The recis.core._C extension: one NB_MODULE, one init_<area> per binding file.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

namespace recis::bind {
void init_common(nb::module_& m);
void init_embedding(nb::module_& m);
void init_features(nb::module_& m);
void init_optim(nb::module_& m);
}

NB_MODULE(_C, m) {
  m.doc() = "RecIS compiled core: C++ kernels over DLPack tensors (no libtorch link).";
  m.attr("version") = RECIS_VERSION;
#ifdef RECIS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  recis::bind::init_common(m);
  recis::bind::init_embedding(m);
  recis::bind::init_features(m);
  recis::bind::init_optim(m);
}
