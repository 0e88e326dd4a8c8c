// Bindings for the feature kernels: string hashing.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <string>

#include "recis/hash.h"
#include "recis/transforms.h"
#include "tensor.h"

namespace recis::bind {

void init_features(nb::module_& m) {
  m.def(
      "hash_strings",
      [](const nb::ndarray<nb::pytorch, nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>& offsets,
         const nb::ndarray<nb::pytorch, const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>& data,
         const std::string& algo, uint64_t seed, int64_t buckets,
         nb::ndarray<nb::pytorch, int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> out) {
        StringHash a;
        if (algo == "farm")
          a = StringHash::kFarm;
        else if (algo == "murmur")
          a = StringHash::kMurmur;
        else
          throw std::invalid_argument("hash_strings: algo must be 'farm' or 'murmur', got '" + algo + "'");
        if (offsets.shape(0) == 0 || out.shape(0) != offsets.shape(0) - 1)
          throw std::invalid_argument("hash_strings: out must have len(offsets) - 1 = " +
                                      std::to_string(offsets.shape(0) ? offsets.shape(0) - 1 : 0) + " entries");
        const auto n = static_cast<int64_t>(out.shape(0));
        const auto len = static_cast<int64_t>(data.shape(0));
        const nb::dlpack::dtype dt = offsets.dtype();
        if (dt == nb::dtype<int32_t>()) {
          const auto* o = static_cast<const int32_t*>(offsets.data());
          nb::gil_scoped_release release;
          hash_strings(o, n, data.data(), len, a, seed, buckets, out.data());
        } else if (dt == nb::dtype<int64_t>()) {
          const auto* o = static_cast<const int64_t*>(offsets.data());
          nb::gil_scoped_release release;
          hash_strings(o, n, data.data(), len, a, seed, buckets, out.data());
        } else {
          throw std::invalid_argument("hash_strings: offsets must be int32 or int64");
        }
      },
      nb::arg("offsets"), nb::arg("data"), nb::arg("algo"), nb::arg("seed"), nb::arg("buckets"),
      nb::arg("out").noconvert(),
      "Hashes strings in Arrow layout (offsets + bytes) into out: FarmHash Fingerprint64 ('farm') or the low 64 bits "
      "of MurmurHash3 x64-128 ('murmur'); buckets > 0 takes the unsigned hash mod buckets.");

  m.def(
      "hash_ids",
      [](const nb::ndarray<nb::pytorch, const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>& ids, uint64_t seed,
         int64_t buckets, nb::ndarray<nb::pytorch, int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> out) {
        if (out.shape(0) != ids.shape(0))
          throw std::invalid_argument("hash_ids: out must have " + std::to_string(ids.shape(0)) + " entries");
        nb::gil_scoped_release release;
        hash_ids(ids.data(), static_cast<int64_t>(ids.shape(0)), seed, buckets, out.data());
      },
      nb::arg("ids"), nb::arg("seed"), nb::arg("buckets"), nb::arg("out").noconvert(),
      "Re-hashes int64 IDs (MurmurHash3 of their 8 bytes with seed); buckets > 0 takes the unsigned hash mod buckets.");

  using F64 = nb::ndarray<nb::pytorch, const double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
  using I64 = nb::ndarray<nb::pytorch, const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
  using I64Out = nb::ndarray<nb::pytorch, int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
  m.def(
      "bucketize",
      [](const F64& values, const F64& boundaries, I64Out out) {
        if (out.shape(0) != values.shape(0))
          throw std::invalid_argument("bucketize: out must have " + std::to_string(values.shape(0)) + " entries");
        nb::gil_scoped_release release;
        bucketize(values.data(), static_cast<int64_t>(values.shape(0)), boundaries.data(),
                  static_cast<int64_t>(boundaries.shape(0)), out.data());
      },
      nb::arg("values"), nb::arg("boundaries"), nb::arg("out").noconvert(),
      "out[i] = number of boundaries <= values[i] (TensorFlow Bucketize, torch.bucketize(right=True)).");
  m.def(
      "mod",
      [](const I64& ids, int64_t modulus, I64Out out) {
        if (out.shape(0) != ids.shape(0))
          throw std::invalid_argument("mod: out must have " + std::to_string(ids.shape(0)) + " entries");
        nb::gil_scoped_release release;
        mod_ids(ids.data(), static_cast<int64_t>(ids.shape(0)), modulus, out.data());
      },
      nb::arg("ids"), nb::arg("modulus"), nb::arg("out").noconvert(), "out[i] = ids[i] mod modulus, in [0, modulus).");
}

}  // namespace recis::bind
