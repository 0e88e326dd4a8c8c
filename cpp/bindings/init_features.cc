// Bindings for the feature kernels: hashing, bucketize, mod, cross; single-column and fused
// multi-column forms (one call per op for all features of a batch).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "recis/cross.h"
#include "recis/hash.h"
#include "recis/transforms.h"
#include "tensor.h"

namespace recis::bind {
namespace {

using U8 = nb::ndarray<nb::pytorch, const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using F32 = nb::ndarray<nb::pytorch, const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using F64In = nb::ndarray<nb::pytorch, const double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using I64In = nb::ndarray<nb::pytorch, const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using I64Mut = nb::ndarray<nb::pytorch, int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Numeric = nb::ndarray<nb::pytorch, nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

StringHash string_hash_of(const std::string& algo, const std::string& where) {
  if (algo == "farm") return StringHash::kFarm;
  if (algo == "murmur") return StringHash::kMurmur;
  throw std::invalid_argument(where + "algo must be 'farm' or 'murmur', got '" + algo + "'");
}

std::string at(const char* op, size_t c) { return std::string(op) + ": column " + std::to_string(c) + ": "; }

void check_count(const char* op, const char* what, size_t got, size_t want) {
  if (got != want)
    throw std::invalid_argument(std::string(op) + ": expected " + std::to_string(want) + " " + what + ", got " +
                                std::to_string(got));
}

void check_out(const char* op, size_t c, size_t got, size_t want) {
  if (got != want)
    throw std::invalid_argument(at(op, c) + "out must have " + std::to_string(want) + " entries, got " +
                                std::to_string(got));
}

using NumericOut = nb::ndarray<nb::pytorch, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

template <typename Array>
NumericType numeric_type_of(const Array& a, const char* op, size_t c) {
  const nb::dlpack::dtype dt = a.dtype();
  if (dt == nb::dtype<float>()) return NumericType::kFloat32;
  if (dt == nb::dtype<double>()) return NumericType::kFloat64;
  if (dt == nb::dtype<int32_t>()) return NumericType::kInt32;
  if (dt == nb::dtype<int64_t>()) return NumericType::kInt64;
  throw std::invalid_argument(at(op, c) + "values must be float32, float64, int32 or int64");
}

}  // namespace

void init_features(nb::module_& m) {
  m.def(
      "hash_strings",
      [](const nb::ndarray<nb::pytorch, nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>& offsets,
         const nb::ndarray<nb::pytorch, const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>& data,
         const std::string& algo, uint64_t seed, int64_t buckets,
         const nb::ndarray<nb::pytorch, int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>& out) {
        const StringHash a = string_hash_of(algo, "hash_strings: ");
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
      "hash_string_columns",
      [](const std::vector<I64In>& offsets, const std::vector<U8>& data, const std::vector<std::string>& algos,
         const std::vector<uint64_t>& seeds, const std::vector<int64_t>& buckets, std::vector<I64Mut> outs) {
        const size_t n = offsets.size();
        check_count("hash_strings", "data arrays", data.size(), n);
        check_count("hash_strings", "algos", algos.size(), n);
        check_count("hash_strings", "seeds", seeds.size(), n);
        check_count("hash_strings", "bucket counts", buckets.size(), n);
        check_count("hash_strings", "outputs", outs.size(), n);
        std::vector<StringColumn> columns;
        for (size_t c = 0; c < n; ++c) {
          if (offsets[c].shape(0) == 0) throw std::invalid_argument(at("hash_strings", c) + "offsets are empty");
          check_out("hash_strings", c, outs[c].shape(0), offsets[c].shape(0) - 1);
          columns.push_back({offsets[c].data(), static_cast<int64_t>(outs[c].shape(0)), data[c].data(),
                             static_cast<int64_t>(data[c].shape(0)), string_hash_of(algos[c], at("hash_strings", c)),
                             seeds[c], buckets[c], outs[c].data()});
        }
        nb::gil_scoped_release release;
        hash_string_columns(columns);
      },
      nb::arg("offsets"), nb::arg("data"), nb::arg("algos"), nb::arg("seeds"), nb::arg("buckets"),
      nb::arg("outs").noconvert(),
      "Hashes many Arrow-layout string columns (int64 offsets + bytes) in one call, as hash_strings does each.");

  m.def(
      "hash_id_columns",
      [](const std::vector<I64In>& ids, const std::vector<uint64_t>& seeds, const std::vector<I64In>& buckets,
         std::vector<I64Mut> outs) {
        const size_t n = ids.size();
        check_count("hash_ids", "seeds", seeds.size(), n);
        check_count("hash_ids", "bucket arrays", buckets.size(), n);
        check_count("hash_ids", "outputs", outs.size(), n);
        std::vector<IdColumn> columns;
        for (size_t c = 0; c < n; ++c) {
          const auto k = static_cast<int64_t>(buckets[c].shape(0));
          check_out("hash_ids", c, outs[c].shape(0), ids[c].shape(0) * buckets[c].shape(0));
          columns.push_back(
              {ids[c].data(), static_cast<int64_t>(ids[c].shape(0)), seeds[c], buckets[c].data(), k, outs[c].data()});
        }
        nb::gil_scoped_release release;
        hash_id_columns(columns);
      },
      nb::arg("ids"), nb::arg("seeds"), nb::arg("buckets"), nb::arg("outs").noconvert(),
      "Hashes many int64 ID columns in one call: `k = len(buckets[c])` hashes per ID (seed + j, mod `buckets[c][j]` "
      "when > 0) into `outs[c][i * k + j]`.");

  m.def(
      "bucketize_columns",
      [](const std::vector<Numeric>& values, const std::vector<F64In>& boundaries, std::vector<I64Mut> outs) {
        const size_t n = values.size();
        check_count("bucketize", "boundary arrays", boundaries.size(), n);
        check_count("bucketize", "outputs", outs.size(), n);
        std::vector<BucketizeColumn> columns;
        for (size_t c = 0; c < n; ++c) {
          check_out("bucketize", c, outs[c].shape(0), values[c].shape(0));
          columns.push_back({values[c].data(), numeric_type_of(values[c], "bucketize", c),
                             static_cast<int64_t>(values[c].shape(0)), boundaries[c].data(),
                             static_cast<int64_t>(boundaries[c].shape(0)), outs[c].data()});
        }
        nb::gil_scoped_release release;
        bucketize_columns(columns);
      },
      nb::arg("values"), nb::arg("boundaries"), nb::arg("outs").noconvert(),
      "Bucketizes many float32/float64/int32/int64 columns in one call, as bucketize does each.");

  m.def(
      "fill_nan_columns",
      [](const std::vector<Numeric>& values, const std::vector<double>& fills, std::vector<NumericOut> outs) {
        const size_t n = values.size();
        check_count("fill_missing", "fill values", fills.size(), n);
        check_count("fill_missing", "outputs", outs.size(), n);
        std::vector<FillNanColumn> columns;
        for (size_t c = 0; c < n; ++c) {
          check_out("fill_missing", c, outs[c].shape(0), values[c].shape(0));
          if (outs[c].dtype() != values[c].dtype())
            throw std::invalid_argument(at("fill_missing", c) + "out must have the values' dtype");
          columns.push_back({values[c].data(), numeric_type_of(values[c], "fill_missing", c),
                             static_cast<int64_t>(values[c].shape(0)), fills[c], outs[c].data()});
        }
        nb::gil_scoped_release release;
        fill_nan_columns(columns);
      },
      nb::arg("values"), nb::arg("fills"), nb::arg("outs").noconvert(),
      "FillMissing for many float32/float64 columns in one call: NaN becomes the column's fill value.");

  m.def(
      "mod_columns",
      [](const std::vector<I64In>& ids, const std::vector<int64_t>& moduli, std::vector<I64Mut> outs) {
        const size_t n = ids.size();
        check_count("mod", "moduli", moduli.size(), n);
        check_count("mod", "outputs", outs.size(), n);
        std::vector<ModColumn> columns;
        for (size_t c = 0; c < n; ++c) {
          check_out("mod", c, outs[c].shape(0), ids[c].shape(0));
          columns.push_back({ids[c].data(), static_cast<int64_t>(ids[c].shape(0)), moduli[c], outs[c].data()});
        }
        nb::gil_scoped_release release;
        mod_columns(columns);
      },
      nb::arg("ids"), nb::arg("moduli"), nb::arg("outs").noconvert(),
      "Takes many int64 columns mod their moduli in one call.");

  m.def(
      "cross_columns",
      [](const std::vector<I64In>& offsets, const std::vector<I64In>& values,
         const std::vector<std::optional<F32>>& weights, const std::vector<int64_t>& arity,
         const std::vector<uint64_t>& seeds, const std::vector<int64_t>& buckets) {
        check_count("cross", "value arrays", values.size(), offsets.size());
        check_count("cross", "weight entries", weights.size(), offsets.size());
        check_count("cross", "seeds", seeds.size(), arity.size());
        check_count("cross", "bucket counts", buckets.size(), arity.size());
        std::vector<CrossSpec> crosses;
        size_t next = 0;
        for (size_t c = 0; c < arity.size(); ++c) {
          if (arity[c] < 0 || next + static_cast<size_t>(arity[c]) > offsets.size())
            throw std::invalid_argument(at("cross", c) + "arity " + std::to_string(arity[c]) +
                                        " runs past the inputs given");
          CrossSpec spec{{}, -1, seeds[c], buckets[c]};
          for (int64_t f = 0; f < arity[c]; ++f, ++next) {
            if (offsets[next].shape(0) == 0) throw std::invalid_argument(at("cross", c) + "offsets are empty");
            const auto rows = static_cast<int64_t>(offsets[next].shape(0)) - 1;
            if (spec.num_rows >= 0 && rows != spec.num_rows)
              throw std::invalid_argument(at("cross", c) + "inputs have " + std::to_string(spec.num_rows) + " and " +
                                          std::to_string(rows) + " rows");
            spec.num_rows = rows;
            const float* w = nullptr;
            if (weights[next]) {
              if (weights[next]->shape(0) != values[next].shape(0))
                throw std::invalid_argument(at("cross", c) + "weights must have one entry per value");
              static const float kNoWeights = 0.0f;  // an empty weight tensor may have a null data pointer
              w = weights[next]->shape(0) ? weights[next]->data() : &kNoWeights;
            }
            spec.inputs.push_back(
                {offsets[next].data(), values[next].data(), w, static_cast<int64_t>(values[next].shape(0))});
          }
          crosses.push_back(std::move(spec));
        }
        if (next != offsets.size())
          throw std::invalid_argument("cross: arities sum to " + std::to_string(next) + " but " +
                                      std::to_string(offsets.size()) + " inputs were given");
        std::vector<CrossResult> results;
        {
          nb::gil_scoped_release release;
          results = cross_columns(crosses);
        }
        std::vector<nb::tuple> out;
        for (CrossResult& r : results) {
          const auto nv = static_cast<size_t>(r.num_values);
          nb::object w = r.weighted ? to_tensor(std::move(r.weights), {nv}, nb::dtype<float>()) : nb::none();
          out.push_back(nb::make_tuple(
              to_tensor(std::move(r.offsets), {static_cast<size_t>(r.num_rows + 1)}, nb::dtype<int64_t>()),
              to_tensor(std::move(r.values), {nv}, nb::dtype<int64_t>()), w));
        }
        return out;
      },
      nb::arg("offsets"), nb::arg("values"), nb::arg("weights"), nb::arg("arity"), nb::arg("seeds"), nb::arg("buckets"),
      "Feature crosses, many in one call: cross c takes the next arity[c] (offsets, values, weights) inputs and "
      "returns (offsets, values, weights or None); each combination is MurmurHash3 of its IDs' bytes.");
}

}  // namespace recis::bind
