// Bindings of recis.core._C.gpu (built with RECIS_WITH_CUDA only): the CUDA kernels over CUDA
// tensors. Each takes the caller's stream as an integer (torch.cuda.current_stream().cuda_stream)
// and returns at once; nothing here synchronizes with the host.
#ifdef RECIS_WITH_CUDA
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "recis/gpu.h"

namespace recis::bind {

namespace nb = nanobind;

namespace {

template <typename T>
using Dev1 = nb::ndarray<nb::pytorch, T, nb::ndim<1>, nb::c_contig, nb::device::cuda>;
template <typename T>
using Dev2 = nb::ndarray<nb::pytorch, T, nb::ndim<2>, nb::c_contig, nb::device::cuda>;

void* stream_ptr(uintptr_t s) { return reinterpret_cast<void*>(s); }  // NOLINT(performance-no-int-to-ptr)

template <typename A>
void need(const A& a, size_t n, const char* op, const char* name) {
  if (a.shape(0) != n)
    throw std::invalid_argument(std::string(op) + ": " + name + " must have " + std::to_string(n) + " entries, got " +
                                std::to_string(a.shape(0)));
}

MapView map_view(const Dev1<int64_t>& ids, const Dev1<int64_t>& tags, const Dev1<int64_t>& values, const char* op) {
  const size_t cap = values.shape(0);
  if (cap == 0 || (cap & (cap - 1)) != 0 || ids.shape(0) != cap || tags.shape(0) != cap)
    throw std::invalid_argument(std::string(op) + ": the map's three arrays must share a power-of-two length");
  return MapView{ids.data(), tags.data(), values.data(), static_cast<int64_t>(cap) - 1};
}

gpu::UpdateKind kind_of(const std::string& kind) {
  if (kind == "sgd") return gpu::UpdateKind::kSgd;
  if (kind == "adagrad") return gpu::UpdateKind::kAdagrad;
  if (kind == "rowwise_adagrad") return gpu::UpdateKind::kRowWiseAdagrad;
  if (kind == "adam") return gpu::UpdateKind::kAdam;
  if (kind == "adam_tf") return gpu::UpdateKind::kAdamTF;
  if (kind == "ftrl") return gpu::UpdateKind::kFtrl;
  throw std::invalid_argument("sparse_update: unknown optimizer '" + kind + "'");
}

}  // namespace

void init_gpu(nb::module_& m) {
  m.def(
      "map_find",
      [](const Dev1<int64_t>& map_ids, const Dev1<int64_t>& map_tags, const Dev1<int64_t>& map_values,
         const Dev1<const int64_t>& ids, const Dev1<const int64_t>& tags, const Dev1<int64_t>& out, uintptr_t stream) {
        need(tags, ids.shape(0), "map_find", "tags");
        need(out, ids.shape(0), "map_find", "out");
        gpu::map_find(map_view(map_ids, map_tags, map_values, "map_find"), ids.data(), tags.data(),
                      static_cast<int64_t>(ids.shape(0)), out.data(), stream_ptr(stream));
      },
      nb::arg("map_ids"), nb::arg("map_tags"), nb::arg("map_values"), nb::arg("ids"), nb::arg("tags"), nb::arg("out"),
      nb::arg("stream"), "out[i] = the value of key (ids[i], tags[i]) in the map, or -1.");
  m.def(
      "map_claim",
      [](const Dev1<int64_t>& map_ids, const Dev1<int64_t>& map_tags, const Dev1<int64_t>& map_values,
         const Dev1<const int64_t>& ids, const Dev1<const int64_t>& tags, const Dev1<const int64_t>& values,
         uintptr_t stream) {
        need(tags, ids.shape(0), "map_claim", "tags");
        need(values, ids.shape(0), "map_claim", "values");
        gpu::map_claim(map_view(map_ids, map_tags, map_values, "map_claim"), ids.data(), tags.data(), values.data(),
                       static_cast<int64_t>(ids.shape(0)), stream_ptr(stream));
      },
      nb::arg("map_ids"), nb::arg("map_tags"), nb::arg("map_values"), nb::arg("ids"), nb::arg("tags"),
      nb::arg("values"), nb::arg("stream"), "Puts distinct absent keys in the map (room for them reserved first).");
  m.def(
      "dedup_mark",
      [](const Dev1<const int64_t>& rows, int64_t capacity, const Dev1<int32_t>& bits, const Dev1<int32_t>& counts,
         uintptr_t stream) {
        const auto words = static_cast<size_t>(capacity / 32 + 1);
        if (capacity < 0) throw std::invalid_argument("dedup_mark: capacity must be >= 0");
        need(bits, words, "dedup_mark", "bits");
        need(counts, words, "dedup_mark", "counts");
        gpu::dedup_mark(rows.data(), static_cast<int64_t>(rows.shape(0)), capacity,
                        reinterpret_cast<uint32_t*>(bits.data()), counts.data(), stream_ptr(stream));
      },
      nb::arg("rows"), nb::arg("capacity"), nb::arg("bits"), nb::arg("counts"), nb::arg("stream"),
      "Marks rows in [-1, capacity) (checked by the caller) in a zeroed bitmap; counts[w] = bits set in word w.");
  m.def(
      "dedup_rank",
      [](const Dev1<const int64_t>& rows, int64_t capacity, const Dev1<const int32_t>& bits,
         const Dev1<const int64_t>& before, const Dev1<int64_t>& inverse, const Dev1<int64_t>& unique,
         uintptr_t stream) {
        const auto words = static_cast<size_t>(capacity / 32 + 1);
        if (capacity < 0) throw std::invalid_argument("dedup_rank: capacity must be >= 0");
        need(bits, words, "dedup_rank", "bits");
        need(before, words, "dedup_rank", "before");
        need(inverse, rows.shape(0), "dedup_rank", "inverse");
        gpu::dedup_rank(rows.data(), static_cast<int64_t>(rows.shape(0)), capacity,
                        reinterpret_cast<const uint32_t*>(bits.data()), before.data(), inverse.data(), unique.data(),
                        stream_ptr(stream));
      },
      nb::arg("rows"), nb::arg("capacity"), nb::arg("bits"), nb::arg("before"), nb::arg("inverse"), nb::arg("unique"),
      nb::arg("stream"), "Each key's rank among the marked rows, and the marked rows in order (-1 last).");
  m.def(
      "pool_forward",
      [](const Dev2<const float>& storage, const Dev1<const int64_t>& rows, const Dev1<const int64_t>& index,
         const Dev1<const int64_t>& offsets, const std::optional<Dev1<const float>>& weights,
         const std::optional<Dev1<const float>>& scales, const Dev2<float>& out, uintptr_t stream) {
        const auto bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        if (bags < 0 || out.shape(0) != static_cast<size_t>(bags) || out.shape(1) != storage.shape(1))
          throw std::invalid_argument("pool_forward: out must be (bags, dim)");
        if (weights) need(*weights, index.shape(0), "pool_forward", "weights");
        if (scales) need(*scales, static_cast<size_t>(bags), "pool_forward", "scales");
        gpu::pool_forward(storage.data(), static_cast<int64_t>(storage.shape(1)), rows.data(), index.data(),
                          offsets.data(), bags, weights ? weights->data() : nullptr, scales ? scales->data() : nullptr,
                          out.data(), stream_ptr(stream));
      },
      nb::arg("storage"), nb::arg("rows"), nb::arg("index"), nb::arg("offsets"), nb::arg("weights").none(),
      nb::arg("scales").none(), nb::arg("out"), nb::arg("stream"),
      "out[b] = scales[b] * sum over bag b of weights[j] * storage[rows[index[j]]] (row -1: zeros).");
  m.def(
      "pool_backward",
      [](const Dev2<const float>& grad_out, const Dev1<const int64_t>& index, const Dev1<const int64_t>& offsets,
         const std::optional<Dev1<const float>>& weights, const std::optional<Dev1<const float>>& scales,
         const Dev2<float>& grad_rows, uintptr_t stream) {
        const auto bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        if (bags < 0 || grad_out.shape(0) != static_cast<size_t>(bags) || grad_out.shape(1) != grad_rows.shape(1))
          throw std::invalid_argument("pool_backward: grad_out must be (bags, dim) of grad_rows' dim");
        if (weights) need(*weights, index.shape(0), "pool_backward", "weights");
        if (scales) need(*scales, static_cast<size_t>(bags), "pool_backward", "scales");
        gpu::pool_backward(grad_out.data(), static_cast<int64_t>(grad_rows.shape(1)), index.data(), offsets.data(),
                           bags, weights ? weights->data() : nullptr, scales ? scales->data() : nullptr,
                           grad_rows.data(), stream_ptr(stream));
      },
      nb::arg("grad_out"), nb::arg("index"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("scales").none(),
      nb::arg("grad_rows"), nb::arg("stream"), "grad_rows[index[j]] += scales[b] * weights[j] * grad_out[b].");
  m.def(
      "sparse_update",
      [](const std::string& kind, const nb::dict& c, const Dev2<float>& embeddings,
         const std::optional<Dev2<float>>& slot0, const std::optional<Dev2<float>>& slot1,
         const Dev1<const int64_t>& rows, const Dev2<const float>& grad, uintptr_t stream) {
        need(grad, rows.shape(0), "sparse_update", "grad");
        gpu::Update u{kind_of(kind),
                      nb::cast<float>(c["lr"]),
                      nb::cast<float>(c["beta1"]),
                      nb::cast<float>(c["beta2"]),
                      nb::cast<float>(c["eps"]),
                      nb::cast<float>(c["weight_decay"]),
                      nb::cast<float>(c["l1"]),
                      nb::cast<float>(c["l2"]),
                      nb::cast<float>(c["ftrl_beta"]),
                      nb::cast<float>(c["grad_scale"]),
                      nb::cast<bool>(c["decoupled"]),
                      nb::cast<float>(c["step_size"]),
                      nb::cast<float>(c["sqrt_bias2"]),
                      nb::cast<float>(c["decay"])};
        gpu::sparse_update(u, embeddings.data(), slot0 ? slot0->data() : nullptr, slot1 ? slot1->data() : nullptr,
                           static_cast<int64_t>(embeddings.shape(1)), rows.data(), static_cast<int64_t>(rows.shape(0)),
                           grad.data(), stream_ptr(stream));
      },
      nb::arg("kind"), nb::arg("config"), nb::arg("embeddings"), nb::arg("slot0").none(), nb::arg("slot1").none(),
      nb::arg("rows"), nb::arg("grad"), nb::arg("stream"),
      "One sparse optimizer step over distinct rows (-1 skipped); config holds the formulas' constants.");
  m.def(
      "hash_strings",
      [](const Dev1<const int64_t>& offsets, const Dev1<const uint8_t>& data, bool murmur, uint64_t seed,
         int64_t buckets, const Dev1<int64_t>& out, uintptr_t stream) {
        if (offsets.shape(0) == 0) throw std::invalid_argument("hash_strings: offsets must hold n + 1 entries");
        if (buckets < 0)
          throw std::invalid_argument("hash_strings: buckets must be >= 0, got " + std::to_string(buckets));
        need(out, offsets.shape(0) - 1, "hash_strings", "out");
        gpu::hash_strings(offsets.data(), static_cast<int64_t>(out.shape(0)), data.data(), murmur, seed, buckets,
                          out.data(), stream_ptr(stream));
      },
      nb::arg("offsets"), nb::arg("data"), nb::arg("murmur"), nb::arg("seed"), nb::arg("buckets"), nb::arg("out"),
      nb::arg("stream"), "Hashes strings in Arrow layout (offsets checked by the caller).");
  m.def(
      "bucketize",
      [](const Dev1<const double>& values, const Dev1<const double>& boundaries, const Dev1<int64_t>& out,
         uintptr_t stream) {
        need(out, values.shape(0), "bucketize", "out");
        gpu::bucketize(values.data(), static_cast<int64_t>(values.shape(0)), boundaries.data(),
                       static_cast<int64_t>(boundaries.shape(0)), out.data(), stream_ptr(stream));
      },
      nb::arg("values"), nb::arg("boundaries"), nb::arg("out"), nb::arg("stream"),
      "out[i] = number of boundaries <= values[i] (boundaries sorted; NaN checked by the caller).");
  m.def(
      "mod",
      [](const Dev1<const int64_t>& ids, int64_t modulus, const Dev1<int64_t>& out, uintptr_t stream) {
        if (modulus < 1) throw std::invalid_argument("mod: modulus must be >= 1, got " + std::to_string(modulus));
        need(out, ids.shape(0), "mod", "out");
        gpu::mod(ids.data(), static_cast<int64_t>(ids.shape(0)), modulus, out.data(), stream_ptr(stream));
      },
      nb::arg("ids"), nb::arg("modulus"), nb::arg("out"), nb::arg("stream"), "out[i] = ids[i] mod modulus, in [0, m).");
  m.def(
      "cross",
      [](const std::vector<Dev1<const int64_t>>& offsets, const std::vector<Dev1<const int64_t>>& values,
         const std::vector<std::optional<Dev1<const float>>>& weights, const Dev1<const int64_t>& out_offsets,
         uint64_t seed, int64_t buckets, const Dev1<int64_t>& out_values, const std::optional<Dev1<float>>& out_weights,
         uintptr_t stream) {
        const size_t k = offsets.size();
        if (k < 2 || k > static_cast<size_t>(gpu::kMaxCrossInputs) || values.size() != k || weights.size() != k)
          throw std::invalid_argument("cross: offsets, values and weights must be 2 to " +
                                      std::to_string(gpu::kMaxCrossInputs) + " inputs each");
        if (buckets < 0) throw std::invalid_argument("cross: buckets must be >= 0, got " + std::to_string(buckets));
        if (out_offsets.shape(0) == 0) throw std::invalid_argument("cross: out_offsets must hold rows + 1 entries");
        const size_t rows = out_offsets.shape(0) - 1;
        gpu::CrossInputs in{static_cast<int>(k), {}, {}, {}};
        for (size_t f = 0; f < k; ++f) {
          need(offsets[f], rows + 1, "cross", "each input's offsets");
          if (weights[f]) need(*weights[f], values[f].shape(0), "cross", "an input's weights");
          in.offsets[f] = offsets[f].data();
          in.values[f] = values[f].data();
          in.weights[f] = weights[f] ? weights[f]->data() : nullptr;
        }
        if (out_weights) need(*out_weights, out_values.shape(0), "cross", "out_weights");
        gpu::cross(in, out_offsets.data(), static_cast<int64_t>(rows), static_cast<int64_t>(out_values.shape(0)), seed,
                   buckets, out_values.data(), out_weights ? out_weights->data() : nullptr, stream_ptr(stream));
      },
      nb::arg("offsets"), nb::arg("values"), nb::arg("weights"), nb::arg("out_offsets"), nb::arg("seed"),
      nb::arg("buckets"), nb::arg("out_values"), nb::arg("out_weights").none(), nb::arg("stream"),
      "A cross of flat ID columns (offsets checked by the caller) into out_offsets' positions.");
}

}  // namespace recis::bind
#endif  // RECIS_WITH_CUDA
