// The recis.core._C extension: one NB_MODULE, one submodule and one init_<area> per binding file.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

namespace recis::bind {
void init_common(nb::module_& m);
void init_embedding(nb::module_& m);
void init_features(nb::module_& m);
void init_optim(nb::module_& m);
#ifdef RECIS_WITH_CUDA
void init_gpu(nb::module_& m);
#endif
}  // namespace recis::bind

NB_MODULE(_C, m) {
  m.doc() = "RecIS compiled core: C++ kernels over DLPack tensors (no libtorch link).";
  m.attr("version") = RECIS_VERSION;
#ifdef NDEBUG
  // Caches that live until interpreter exit (torch.compile's guards hold the kernels) are not
  // leaks of ours; debug builds keep nanobind's report for finding real ones.
  nb::set_leak_warnings(false);
#endif
#ifdef RECIS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  // One submodule per area; Python reaches them through recis.core.kernels, which applies the
  // core's thread count before every call.
  nb::module_ common = m.def_submodule("common", "Threads, output buffers, Ragged kernels.");
  nb::module_ embedding = m.def_submodule("embedding", "HashTable, routing by owner rank, pooling.");
  nb::module_ features = m.def_submodule("features", "Hashing, bucketizing, crossing columns.");
  nb::module_ optim = m.def_submodule("optim", "Sparse optimizer updates.");
  recis::bind::init_common(common);
  recis::bind::init_embedding(embedding);
  recis::bind::init_features(features);
  recis::bind::init_optim(optim);
#ifdef RECIS_WITH_CUDA
  nb::module_ gpu = m.def_submodule("gpu", "CUDA kernels over CUDA tensors, on the caller's stream.");
  recis::bind::init_gpu(gpu);
#endif
}
