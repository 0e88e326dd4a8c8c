// Bindings of recis.core._C.embedding: HashTable, routing by owner rank, row de-duplication and the
// pooling kernels. Each converts its arguments, releases the GIL and calls the core.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pooling_args.h"
#include "recis/frozen.h"
#include "recis/hash_table.h"
#include "recis/initializer.h"
#include "recis/keys.h"
#include "recis/pooling.h"
#include "recis/ragged.h"
#include "recis/routing.h"
#include "tensor.h"

namespace recis::bind {
namespace {

using F32Array2 = nb::ndarray<nb::pytorch, const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Out2 = nb::ndarray<nb::pytorch, float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Array1 = nb::ndarray<nb::pytorch, const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using I32Array = nb::ndarray<nb::pytorch, const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

InitKind parse_init_kind(const std::string& kind) {
  static const std::pair<const char*, InitKind> kinds[] = {{"constant", InitKind::kConstant},
                                                           {"uniform", InitKind::kUniform},
                                                           {"normal", InitKind::kNormal},
                                                           {"truncated_normal", InitKind::kTruncatedNormal},
                                                           {"xavier_uniform", InitKind::kXavierUniform}};
  for (const auto& [name, k] : kinds)
    if (kind == name) return k;
  throw std::invalid_argument("HashTable: unknown initializer '" + kind +
                              "' (expected constant, uniform, normal, truncated_normal or xavier_uniform)");
}

// Hands the vector to Python as a 1-D tensor: the tensor owns the vector (no copy).
template <typename T>
nb::object vector_tensor(std::vector<T>&& v) {
  if (v.capacity() == 0) v.reserve(1);  // a null data pointer is no valid DLPack buffer
  auto* owned = new std::vector<T>(std::move(v));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  const size_t shape[1] = {owned->size()};
  return nb::cast(nb::ndarray<nb::pytorch>(owned->data(), 1, shape, owner, nullptr, nb::dtype<T>()));
}

nb::object i64_tensor(Buffer&& b, size_t n) { return to_tensor(std::move(b), {n}, nb::dtype<int64_t>()); }

const float* weights_of(const std::optional<F32Array1>& w, int64_t n, const char* op) {
  if (!w) return nullptr;
  if (static_cast<int64_t>(w->shape(0)) != n)
    throw std::invalid_argument(std::string(op) + ": weights must have " + std::to_string(n) + " entries, got " +
                                std::to_string(w->shape(0)));
  return w->data();
}

// The logical tables of a frozen table: tag_offsets (T + 1) must end at the number of IDs.
int64_t frozen_tags(const I64Array& ids, const I64Array& tag_offsets, const char* op) {
  const auto num_tags = static_cast<int64_t>(tag_offsets.shape(0)) - 1;
  const auto n = static_cast<int64_t>(ids.shape(0));
  if (num_tags < 0 || tag_offsets.data()[num_tags] != n)
    throw std::invalid_argument(std::string(op) + ": tag_offsets must end at the number of IDs (" + std::to_string(n) +
                                "), got " +
                                (num_tags < 0 ? "an empty tag_offsets" : std::to_string(tag_offsets.data()[num_tags])));
  return num_tags;
}

// A frozen table's stored rows (n x D: float32, bfloat16, float16, or int8 with per-row float16 or
// float32 scale and bias) as frozen_embed reads them.
FrozenRows frozen_rows(const AnyArray& rows, const std::optional<AnyArray>& scale, const std::optional<AnyArray>& bias,
                       int64_t n) {
  const nb::dlpack::dtype t = rows.dtype();
  if (rows.ndim() != 2 || static_cast<int64_t>(rows.shape(0)) != n)
    throw std::invalid_argument("frozen_embed: rows must be (" + std::to_string(n) + ", D)");
  FrozenRows out{FrozenType::kF32, rows.data(), static_cast<int64_t>(rows.shape(1))};
  if (t == nb::dtype<float>()) return out;
  if (t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && t.bits == 16) {
    out.type = FrozenType::kBf16;
    return out;
  }
  if (t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && t.bits == 16) {
    out.type = FrozenType::kF16;
    return out;
  }
  if (t != nb::dtype<int8_t>())
    throw std::invalid_argument("frozen_embed: rows must be float32, bfloat16, float16 or int8");
  out.type = FrozenType::kI8;
  if (!scale || !bias || scale->dtype() != bias->dtype() || scale->ndim() != 1 || bias->ndim() != 1 ||
      static_cast<int64_t>(scale->shape(0)) != n || static_cast<int64_t>(bias->shape(0)) != n)
    throw std::invalid_argument("frozen_embed: int8 rows need a scale and a bias of " + std::to_string(n) +
                                " entries of one dtype");
  out.scale_f16 =
      scale->dtype().code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && scale->dtype().bits == 16;
  if (!out.scale_f16 && scale->dtype() != nb::dtype<float>())
    throw std::invalid_argument("frozen_embed: int8 scale and bias must be float16 or float32");
  out.scale = scale->data();
  out.bias = bias->data();
  return out;
}

// The ID arrays as runs of one tag each (one tag per array, each in [0, 65535]).
std::vector<KeyRun> key_runs(const std::vector<I64Array>& ids, const std::vector<int>& tags, const char* op) {
  if (ids.size() != tags.size())
    throw std::invalid_argument(std::string(op) + ": got " + std::to_string(ids.size()) + " ID arrays but " +
                                std::to_string(tags.size()) + " tags");
  std::vector<KeyRun> runs;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (tags[k] < 0 || tags[k] > 0xffff)
      throw std::invalid_argument(std::string(op) + ": tags must be in [0, 65535], got " + std::to_string(tags[k]));
    runs.push_back({ids[k].data(), static_cast<int64_t>(ids[k].shape(0)), static_cast<uint16_t>(tags[k]), nullptr});
  }
  return runs;
}

// int32 tags (as Python hands them over) narrowed to the core's 16 bits, checked.
ScratchArray<uint16_t> narrow_tags(const I32Array& tags, int64_t n, const char* op) {
  if (static_cast<int64_t>(tags.shape(0)) != n)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(n) + " IDs but " +
                                std::to_string(tags.shape(0)) + " tags");
  ScratchArray<uint16_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t tag = tags.data()[i];
    if (tag < 0 || tag > 0xffff)
      throw std::invalid_argument(std::string(op) + ": tags must be in [0, 65535], got " + std::to_string(tag));
    out[static_cast<size_t>(i)] = static_cast<uint16_t>(tag);
  }
  return out;
}

// (distinct rows, each key's index among them, their embeddings or None).
nb::tuple lookup_keys(HashTable& t, const std::vector<KeyRun>& keys, int64_t step, bool insert, bool gather) {
  const auto n = static_cast<size_t>(run_starts(keys).back());
  Found found;
  {
    nb::gil_scoped_release release;
    found = t.lookup(keys, step, insert, gather);
  }
  const size_t u = found.rows.size();
  nb::object emb = gather
                       ? to_tensor(std::move(found.embeddings), {u, static_cast<size_t>(t.dim())}, nb::dtype<float>())
                       : nb::none();
  return nb::make_tuple(vector_tensor(std::move(found.rows)), i64_tensor(std::move(found.index), n), emb);
}

// Pooling arguments as the kernels take them: bag runs, layout, weights and per-bag scales.
struct PoolArgs {
  std::vector<BagRun> runs;
  BagLayout layout;
  const float* weights;
  std::vector<float> scales;
  const float* scale_data() const { return scales.empty() ? nullptr : scales.data(); }
};

// Checks everything but the offsets' contents (those are read with the GIL released, in finish).
template <typename Out>
PoolArgs pool_args(const Out& out, int64_t bags, int64_t n, int64_t dim, const std::optional<F32Array1>& weights,
                   const std::vector<std::string>& combiners, const std::vector<int64_t>& runs, bool batch_major,
                   const char* op, const char* out_name) {
  PoolArgs a{parse_runs(combiners, runs, op), parse_layout(runs, batch_major, op), weights_of(weights, n, op), {}};
  check_out_shape(out, a.layout, bags, dim, op, out_name);
  return a;
}

// With the GIL released: the offsets checked, the bags' scales computed.
void finish(PoolArgs& a, const I64Array& offsets, int64_t n, const char* op) {
  const int64_t bags = static_cast<int64_t>(offsets.shape(0)) - 1;
  validate_offsets(Offsets{offsets.data(), bags, n}, op);
  a.scales = bag_scales(offsets.data(), bags, a.weights, a.runs, op);
}

void init_table(nb::module_& m) {
  nb::class_<Initializer>(m, "Initializer", "How new rows are filled (see recis/initializer.h).")
      .def(
          "__init__", [](Initializer* i, const std::string& kind) { new (i) Initializer{parse_init_kind(kind)}; },
          nb::arg("kind"))
      .def_rw("value", &Initializer::value)
      .def_rw("low", &Initializer::low)
      .def_rw("high", &Initializer::high)
      .def_rw("mean", &Initializer::mean)
      .def_rw("stddev", &Initializer::stddev);

  nb::class_<HashTable>(m, "HashTable", "Dynamic hash table: int64 ID (+ 16-bit tag) -> embedding row.")
      .def(
          "__init__",
          [](HashTable* t, int64_t dim, Initializer init, int64_t admit_count, int64_t block_rows,
             const std::string& dtype) {
            new (t) HashTable(dim, init, admit_count, block_rows, parse_row_type(dtype));
          },
          nb::arg("dim"), nb::arg("init"), nb::arg("admit_count") = 1, nb::arg("block_rows") = 8192,
          nb::arg("dtype") = "float32", "dtype: how rows are stored: float32, bfloat16 or float16.")
      .def_prop_ro("dim", &HashTable::dim)
      .def_prop_ro("dtype", [](const HashTable& t) { return std::string(row_type_name(t.row_type())); })
      .def_prop_rw("stochastic_rounding", &HashTable::stochastic_rounding, &HashTable::set_stochastic_rounding,
                   "bfloat16 rows: optimizer updates round stochastically (else to nearest even).")
      .def("__len__", &HashTable::size)
      .def("set_tag_seed", &HashTable::set_tag_seed, nb::arg("tag"), nb::arg("seed"))
      .def("add_slot", &HashTable::add_slot, nb::arg("name"), nb::arg("width"), nb::arg("init"),
           "Adds an optimizer slot of `width` floats per row; returns its index.")
      .def("slot_names", &HashTable::slot_names)
      .def(
          "lookup",
          [](HashTable& t, const std::vector<I64Array>& ids, const std::vector<int>& tags, int64_t step, bool insert,
             bool gather) { return lookup_keys(t, key_runs(ids, tags, "HashTable.lookup"), step, insert, gather); },
          nb::arg("ids"), nb::arg("tags"), nb::arg("step"), nb::arg("insert"), nb::arg("gather") = true,
          "De-duplicates, finds or inserts, gathers: (distinct rows, each key's index among them, their "
          "embeddings or None).")
      .def(
          "lookup_tagged",
          [](HashTable& t, const I64Array& ids, const I32Array& tags, int64_t step, bool insert, bool gather) {
            const auto n = static_cast<int64_t>(ids.shape(0));
            const ScratchArray<uint16_t> tags16 = narrow_tags(tags, n, "HashTable.lookup_tagged");
            return lookup_keys(t, {KeyRun{ids.data(), n, 0, tags16.data()}}, step, insert, gather);
          },
          nb::arg("ids"), nb::arg("tags"), nb::arg("step"), nb::arg("insert"), nb::arg("gather") = true,
          "lookup of keys with one int32 tag each.")
      .def(
          "pool",
          [](const HashTable& t, const I64Array& rows, const I64Array& index, const I64Array& offsets,
             const std::optional<F32Array1>& weights, const std::vector<std::string>& combiners,
             const std::vector<int64_t>& runs, const F32Out2& out, bool batch_major) {
            const char* op = "HashTable.pool";
            const auto n = static_cast<int64_t>(index.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
            PoolArgs a = pool_args(out, bags, n, t.dim(), weights, combiners, runs, batch_major, op, "out");
            nb::gil_scoped_release release;
            finish(a, offsets, n, op);
            t.pool(rows.data(), static_cast<int64_t>(rows.shape(0)), index.data(), offsets.data(), bags, a.weights,
                   a.scale_data(), out.data(), a.layout);
          },
          nb::arg("rows"), nb::arg("index"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
          nb::arg("runs"), nb::arg("out").noconvert(), nb::arg("batch_major") = false,
          "Pools table rows rows[index[j]] per bag straight from the blocks (no (U, D) copy) into out (bags x dim; "
          "batch_major: bags per run x runs * dim, the runs side by side).")
      .def(
          "pool_keys",
          [](HashTable& t, const std::vector<I64Array>& ids, const std::vector<int>& tags, const I64Array& offsets,
             const std::optional<F32Array1>& weights, const std::vector<std::string>& combiners,
             const std::vector<int64_t>& runs, const F32Out2& out, bool batch_major) {
            const char* op = "HashTable.pool_keys";
            const std::vector<KeyRun> keys = key_runs(ids, tags, op);
            const int64_t n = run_starts(keys).back(), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
            PoolArgs a = pool_args(out, bags, n, t.dim(), weights, combiners, runs, batch_major, op, "out");
            nb::gil_scoped_release release;
            finish(a, offsets, n, op);
            t.pool_keys(keys, offsets.data(), bags, a.weights, a.scale_data(), out.data(), a.layout);
          },
          nb::arg("ids"), nb::arg("tags"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
          nb::arg("runs"), nb::arg("out").noconvert(), nb::arg("batch_major") = false,
          "Read-only pooled lookup straight from the keys (one ID array per tag, bags over their concatenation): no "
          "de-duplication, no insert, nothing recorded, missing keys read zeros; every key counts as a lookup.")
      .def(
          "gather",
          [](const HashTable& t, const I64Array& rows) {
            const size_t n = rows.shape(0);
            Buffer out(n * static_cast<size_t>(t.dim()) * sizeof(float));
            {
              nb::gil_scoped_release release;
              t.gather(rows.data(), static_cast<int64_t>(n), out.as<float>(), "HashTable.gather");
            }
            return to_tensor(std::move(out), {n, static_cast<size_t>(t.dim())}, nb::dtype<float>());
          },
          nb::arg("rows"), "Embeddings of live rows (n x dim); row -1 gives zeros, any other row raises ValueError.")
      .def("evict_older_than", &HashTable::evict_older_than, nb::arg("min_step"),
           nb::call_guard<nb::gil_scoped_release>(), "Removes rows whose last step is < min_step; returns how many.")
      .def(
          "evict_to_capacity",
          [](HashTable& t, int64_t capacity, const std::string& policy) {
            if (policy != "lru" && policy != "lfu")
              throw std::invalid_argument("HashTable.evict_to_capacity: policy must be 'lru' or 'lfu', got '" + policy +
                                          "'");
            nb::gil_scoped_release release;
            return t.evict_to_capacity(capacity, policy == "lru" ? EvictPolicy::kLru : EvictPolicy::kLfu);
          },
          nb::arg("capacity"), nb::arg("policy"), "Keeps at most capacity rows; returns how many were dropped.")
      .def_prop_ro("row_capacity", &HashTable::row_capacity)
      .def("reserve", &HashTable::reserve, nb::arg("rows"), nb::call_guard<nb::gil_scoped_release>(),
           "Grows the ID map once for `rows` live rows (before a bulk load).")
      .def("set_eviction_log", &HashTable::set_eviction_log, nb::arg("on"), nb::call_guard<nb::gil_scoped_release>(),
           "Record the keys of evicted rows until take_evicted() (for delta checkpoints).")
      .def(
          "take_evicted",
          [](HashTable& t) {
            std::vector<std::pair<int64_t, uint16_t>> keys;
            {
              nb::gil_scoped_release release;
              keys = t.take_evicted();
            }
            std::vector<int64_t> ids(keys.size());
            std::vector<int32_t> tags(keys.size());
            for (size_t i = 0; i < keys.size(); ++i) {
              ids[i] = keys[i].first;
              tags[i] = keys[i].second;
            }
            return nb::make_tuple(vector_tensor(std::move(ids)), vector_tensor(std::move(tags)));
          },
          "Drains the evicted keys recorded since the last call: (ids int64, tags int32).")
      .def(
          "export",
          [](const HashTable& t, int64_t begin, int64_t end, int64_t min_step) {
            RowExport e;
            {
              nb::gil_scoped_release release;
              e = t.export_rows(begin, end, min_step);
            }
            const size_t n = e.size();
            const std::vector<std::string> names = t.slot_names();
            const std::vector<int64_t> widths = t.slot_widths();
            nb::dict out, slots;
            out["ids"] = vector_tensor(std::move(e.ids));
            out["tags"] = vector_tensor(std::move(e.tags));
            out["steps"] = vector_tensor(std::move(e.steps));
            out["freqs"] = vector_tensor(std::move(e.freqs));
            out["embeddings"] =
                to_tensor(std::move(e.embeddings), {n, static_cast<size_t>(t.dim())}, nb::dtype<float>());
            for (size_t s = 0; s < names.size(); ++s)
              slots[names[s].c_str()] =
                  to_tensor(std::move(e.slots[s]), {n, static_cast<size_t>(widths[s])}, nb::dtype<float>());
            out["slots"] = slots;
            return out;
          },
          nb::arg("begin") = 0, nb::arg("end") = INT64_MAX, nb::arg("min_step") = INT64_MIN,
          "Live rows with index in [begin, end) last seen at step >= min_step, as tensors: ids, tags, steps, "
          "freqs, embeddings (n x dim), slots {name: n x width}. Ranges let a saver stream a big table.")
      .def(
          "assign",
          [](HashTable& t, const I64Array& ids, const I32Array& tags, const I64Array& steps, const I64Array& freqs,
             const F32Array2& emb, const nb::dict& slots) {
            const size_t n = ids.shape(0);
            if (tags.shape(0) != n || steps.shape(0) != n || freqs.shape(0) != n || emb.shape(0) != n ||
                static_cast<int64_t>(emb.shape(1)) != t.dim())
              throw std::invalid_argument("HashTable.assign: expected " + std::to_string(n) +
                                          " ids, tags, steps, freqs and a " + std::to_string(n) + " x " +
                                          std::to_string(t.dim()) + " embedding matrix");
            const std::vector<std::string> names = t.slot_names();
            const std::vector<int64_t> widths = t.slot_widths();
            for (auto item : slots) {
              const std::string key = nb::cast<std::string>(item.first);
              if (std::find(names.begin(), names.end(), key) == names.end())
                throw std::invalid_argument("HashTable.assign: this table has no slot '" + key + "'");
            }
            std::vector<F32Array2> arrays;  // keeps the slot arrays alive while the core reads them
            std::vector<const float*> slot_values;
            for (size_t s = 0; s < names.size(); ++s) {
              const char* name = names[s].c_str();
              if (!slots.contains(name)) {
                slot_values.push_back(nullptr);  // reset to the slot's initial value
                continue;
              }
              const F32Array2& a = arrays.emplace_back(nb::cast<F32Array2>(slots[name]));
              if (a.shape(0) != n || static_cast<int64_t>(a.shape(1)) != widths[s])
                throw std::invalid_argument("HashTable.assign: slot '" + names[s] + "' must be " + std::to_string(n) +
                                            " x " + std::to_string(widths[s]));
              slot_values.push_back(a.data());
            }
            std::vector<int64_t> rows;
            {
              nb::gil_scoped_release release;
              rows = t.assign(ids.data(), tags.data(), static_cast<int64_t>(n), steps.data(), freqs.data(), emb.data(),
                              slot_values);
            }
            return vector_tensor(std::move(rows));
          },
          nb::arg("ids"), nb::arg("tags"), nb::arg("steps"), nb::arg("freqs"), nb::arg("embeddings"), nb::arg("slots"),
          "Inserts or overwrites rows with the given embeddings, metadata and slots {name: n x width} "
          "(slots left out are reset); returns their row indices.")
      .def("counters",
           [](const HashTable& t) {
             const TableCounters c = t.counters();
             nb::dict d;
             d["lookups"] = c.lookups;
             d["hits"] = c.hits;
             d["inserts"] = c.inserts;
             d["admitted"] = c.admitted;
             d["rejected"] = c.rejected;
             d["evicted"] = c.evicted;
             return d;
           })
      .def("memory_bytes", &HashTable::memory_bytes,
           "Bytes held by blocks, slots, metadata, the ID map, admission counts and the eviction log.");
}

}  // namespace

void init_embedding(nb::module_& m) {
  init_table(m);

  m.def(
      "route_keys",
      [](const std::vector<I64Array>& ids, const std::vector<int>& tags, int64_t world) {
        const std::vector<KeyRun> keys = key_runs(ids, tags, "route_keys");
        const auto n = static_cast<size_t>(run_starts(keys).back());
        RoutedKeys r;
        {
          nb::gil_scoped_release release;
          r = route_keys(keys, world);
        }
        return nb::make_tuple(i64_tensor(std::move(r.ids), r.size),
                              to_tensor(std::move(r.tags), {r.size}, nb::dtype<int32_t>()),
                              vector_tensor(std::move(r.counts)), i64_tensor(std::move(r.index), n));
      },
      nb::arg("ids"), nb::arg("tags"), nb::arg("world"),
      "De-duplicates (ID, tag) keys and orders them by owner rank: (ids, tags, counts per rank, each key's index).");

  m.def(
      "route_bags",
      [](const std::vector<I64Array>& ids, const I64Array& offsets, int64_t world, const std::vector<int64_t>& header,
         bool with_order) {
        std::vector<KeyRun> parts;
        parts.reserve(ids.size());
        for (const I64Array& a : ids) parts.push_back({a.data(), static_cast<int64_t>(a.shape(0))});
        const auto bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        RoutedBags r;
        {
          nb::gil_scoped_release release;
          r = route_bags(parts, offsets.data(), bags, world, header, with_order);
        }
        return nb::make_tuple(i64_tensor(std::move(r.packed), r.size), vector_tensor(std::move(r.sizes)),
                              i64_tensor(std::move(r.order), r.order_size));
      },
      nb::arg("ids"), nb::arg("offsets"), nb::arg("world"), nb::arg("header") = std::vector<int64_t>{},
      nb::arg("with_order") = true,
      "Splits bags of keys by owner rank: (blocks [header, keys per bag, IDs] per rank, block sizes, order of the "
      "IDs).");

  m.def(
      "unique_rows",
      [](const I64Array& rows, int64_t capacity) {
        const auto n = static_cast<int64_t>(rows.shape(0));
        if (!all_in_range(rows.data(), 0, n, -1, capacity))
          for (int64_t i = 0; i < n; ++i)
            if (rows.data()[i] < -1 || rows.data()[i] >= capacity)
              throw std::invalid_argument("unique_rows: rows[" + std::to_string(i) +
                                          "]=" + std::to_string(rows.data()[i]) + " is outside [-1, " +
                                          std::to_string(capacity) + ")");
        Buffer index(static_cast<size_t>(n) * sizeof(int64_t));
        std::vector<int64_t> unique;
        {
          nb::gil_scoped_release release;
          unique_rows(rows.data(), n, capacity, unique, index.as<int64_t>());
        }
        return nb::make_tuple(vector_tensor(std::move(unique)), i64_tensor(std::move(index), static_cast<size_t>(n)));
      },
      nb::arg("rows"), nb::arg("capacity"),
      "De-duplicates row indices in [-1, capacity): (distinct rows, index). Ascending with -1 last unless capacity "
      "is far above len(rows).");

  m.def(
      "frozen_index",
      [](const I64Array& ids, const I64Array& tag_offsets) {
        const int64_t num_tags = frozen_tags(ids, tag_offsets, "frozen_index");
        std::vector<int64_t> slots;
        {
          nb::gil_scoped_release release;
          slots = frozen_index(ids.data(), tag_offsets.data(), num_tags);
        }
        return vector_tensor(std::move(slots));
      },
      nb::arg("ids"), nb::arg("tag_offsets"),
      "The open-addressing index frozen_lookup probes: (slots,) positions in ids or -1, a power of two at least "
      "twice len(ids).");

  m.def(
      "frozen_lookup",
      [](const I64Array& ids, const I64Array& tag_offsets, const I64Array& slots, const std::vector<I64Array>& parts,
         const std::vector<int>& tags) {
        const int64_t num_tags = frozen_tags(ids, tag_offsets, "frozen_lookup");
        const std::vector<KeyRun> runs = key_runs(parts, tags, "frozen_lookup");
        const int64_t n = run_starts(runs).back();
        Buffer index(static_cast<size_t>(n) * sizeof(int64_t));
        std::vector<int64_t> unique;
        int64_t absent = 0;
        {
          nb::gil_scoped_release release;
          absent = frozen_find(ids.data(), tag_offsets.data(), num_tags, slots.data(),
                               static_cast<int64_t>(slots.shape(0)), runs, index.as<int64_t>());
          unique_rows(index.as<int64_t>(), n, static_cast<int64_t>(ids.shape(0)), unique, index.as<int64_t>());
        }
        return nb::make_tuple(vector_tensor(std::move(unique)), i64_tensor(std::move(index), static_cast<size_t>(n)),
                              absent);
      },
      nb::arg("ids"), nb::arg("tag_offsets"), nb::arg("slots"), nb::arg("parts"), nb::arg("tags"),
      "Keys (parts[k] of logical table tags[k]) found through a frozen table's index (frozen_index): (distinct "
      "positions, -1 for "
      "absent keys; each key's index among them; how many keys were absent).");

  m.def(
      "frozen_embed",
      [](const I64Array& ids, const I64Array& tag_offsets, const I64Array& slots, const AnyArray& rows,
         const std::optional<AnyArray>& scale, const std::optional<AnyArray>& bias, const std::vector<I64Array>& values,
         const std::vector<std::optional<I64Array>>& offsets, const std::vector<int64_t>& bags,
         const std::vector<std::optional<F32Array1>>& weights, const std::vector<int>& tags,
         const std::vector<std::string>& combiners, const std::vector<int64_t>& max_lens,
         const std::vector<bool>& keep_last) {
        const char* op = "frozen_embed";
        const int64_t num_tags = frozen_tags(ids, tag_offsets, op);
        const auto n = static_cast<int64_t>(ids.shape(0));
        FrozenRows table = frozen_rows(rows, scale, bias, n);
        const size_t k = values.size();
        if (offsets.size() != k || bags.size() != k || weights.size() != k || tags.size() != k ||
            combiners.size() != k || max_lens.size() != k || keep_last.size() != k)
          throw std::invalid_argument(
              "frozen_embed: values, offsets, bags, weights, tags, combiners, max_lens and keep_last must have one "
              "entry per feature (" +
              std::to_string(k) + " value arrays)");
        const std::vector<KeyRun> runs = key_runs(values, tags, op);
        std::vector<FrozenBags> features(k);
        std::vector<Buffer> outs(k), structure(k), out_weights(k);  // structure: dense masks or rows' offsets
        const auto dim = static_cast<size_t>(table.dim);
        for (size_t i = 0; i < k; ++i) {
          FrozenBags& f = features[i];
          f.keys = runs[i];
          f.bags = bags[i];
          f.weights = weights_of(weights[i], f.keys.n, op);
          f.output = combiners[i] == "dense"  ? FrozenOut::kDense
                     : combiners[i] == "rows" ? FrozenOut::kRows
                                              : FrozenOut::kPooled;
          if (f.output == FrozenOut::kPooled) f.combiner = parse_combiner(combiners[i], op);
          f.max_len = max_lens[i] < 0 ? -1 : max_lens[i];
          f.keep_last = keep_last[i];
          if (offsets[i]) {
            f.offsets = offsets[i]->data();
            f.bags = static_cast<int64_t>(offsets[i]->shape(0)) - 1;
            if (f.bags != bags[i])
              throw std::invalid_argument("frozen_embed: feature " + std::to_string(i) + " has offsets for " +
                                          std::to_string(f.bags) + " bags but bags says " + std::to_string(bags[i]));
            validate_offsets(Offsets{f.offsets, f.bags, f.keys.n}, op);
          } else if (f.bags < 0 || (f.bags ? f.keys.n % f.bags : f.keys.n) != 0) {
            throw std::invalid_argument("frozen_embed: feature " + std::to_string(i) + ": " + std::to_string(f.keys.n) +
                                        " IDs do not split into " + std::to_string(f.bags) + " bags of equal length");
          } else {
            f.stride = f.bags ? f.keys.n / f.bags : 0;
          }
          auto kept = [&](int64_t b) {  // bag b's length after max_len
            const int64_t len = f.offsets ? f.offsets[b + 1] - f.offsets[b] : f.stride;
            return f.max_len < 0 ? len : std::min(len, f.max_len);
          };
          size_t out_rows = static_cast<size_t>(f.bags);  // rows of dim floats in out
          if (f.output == FrozenOut::kDense) {
            f.width = f.max_len;
            for (int64_t b = 0; f.max_len < 0 && b < f.bags; ++b) f.width = std::max(f.width, kept(b));
            f.width = std::max<int64_t>(f.width, 0);
            out_rows = static_cast<size_t>(f.bags * f.width);
            structure[i] = Buffer(out_rows);
            f.mask = structure[i].as<bool>();
          } else if (f.output == FrozenOut::kRows) {
            structure[i] = Buffer(static_cast<size_t>(f.bags + 1) * sizeof(int64_t));
            auto* at = structure[i].as<int64_t>();
            at[0] = 0;
            for (int64_t b = 0; b < f.bags; ++b) at[b + 1] = at[b] + kept(b);
            f.out_offsets = at;
            out_rows = static_cast<size_t>(at[f.bags]);
          }
          if (f.output != FrozenOut::kPooled && weights[i]) {  // (an empty batch's weights may have no data)
            out_weights[i] = Buffer(out_rows * sizeof(float));
            f.out_weights = out_weights[i].as<float>();
          }
          outs[i] = Buffer(out_rows * dim * sizeof(float));
          f.out = outs[i].as<float>();
        }
        FrozenCounts counts{};
        {
          nb::gil_scoped_release release;
          counts = frozen_embed(ids.data(), tag_offsets.data(), num_tags, slots.data(),
                                static_cast<int64_t>(slots.shape(0)), table, features);
        }
        nb::list result;
        for (size_t i = 0; i < k; ++i) {
          const FrozenBags& f = features[i];
          const auto b = static_cast<size_t>(f.bags), w = static_cast<size_t>(f.width);
          if (f.output == FrozenOut::kPooled) {
            result.append(
                nb::make_tuple(to_tensor(std::move(outs[i]), {b, dim}, nb::dtype<float>()), nb::none(), nb::none()));
            continue;
          }
          const bool dense = f.output == FrozenOut::kDense;
          const std::vector<size_t> per_value =
              dense ? std::vector<size_t>{b, w} : std::vector<size_t>{static_cast<size_t>(f.out_offsets[f.bags])};
          std::vector<size_t> shape = per_value;
          shape.push_back(dim);
          nb::object ws =
              f.out_weights ? to_tensor(std::move(out_weights[i]), per_value, nb::dtype<float>()) : nb::none();
          nb::object st = dense ? to_tensor(std::move(structure[i]), {b, w}, nb::dtype<bool>())
                                : to_tensor(std::move(structure[i]), {b + 1}, nb::dtype<int64_t>());
          result.append(nb::make_tuple(to_tensor(std::move(outs[i]), shape, nb::dtype<float>()), st, ws));
        }
        return nb::make_tuple(result, counts.keys, counts.unknown);
      },
      nb::arg("ids"), nb::arg("tag_offsets"), nb::arg("slots"), nb::arg("rows"), nb::arg("scale").none(),
      nb::arg("bias").none(), nb::arg("values"), nb::arg("offsets"), nb::arg("bags"), nb::arg("weights"),
      nb::arg("tags"), nb::arg("combiners"), nb::arg("max_lens"), nb::arg("keep_last"),
      "Serving's lookup of a frozen table, one pass per feature: values[i] (logical table tags[i]) in bags by "
      "offsets[i] (None: bags[i] bags of equal length), each bag cut to its last (keep_last) or first max_lens[i] "
      "IDs (-1: all), pooled by combiners[i] (sum, mean or sqrtn), or its rows padded to max_lens[i] (else the "
      "longest bag) with 'dense' or packed with 'rows'. Unknown IDs read zeros. Returns ([per feature: (pooled, "
      "None, None), (padded, mask, padded weights or None) or (rows, offsets, weights or None)], IDs looked up, of "
      "which unknown).");

  m.def(
      "pooled_forward",
      [](const F32Array2& emb, const I64Array& index, const I64Array& offsets, const std::optional<F32Array1>& weights,
         const std::vector<std::string>& combiners, const std::vector<int64_t>& runs, const F32Out2& out) {
        const char* op = "pooled_forward";
        const auto n = static_cast<int64_t>(index.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        const auto dim = static_cast<int64_t>(emb.shape(1));
        PoolArgs a = pool_args(out, bags, n, dim, weights, combiners, runs, false, op, "out");
        nb::gil_scoped_release release;
        finish(a, offsets, n, op);
        pooled_forward(emb.data(), static_cast<int64_t>(emb.shape(0)), dim, index.data(), offsets.data(), bags,
                       a.weights, a.scale_data(), out.data());
      },
      nb::arg("emb"), nb::arg("index"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
      nb::arg("runs"), nb::arg("out").noconvert(),
      "out[b] = pooled rows emb[index[j]] over bag b; combiners[i] (sum, mean or sqrtn) pools the i-th run of runs[i] "
      "bags.");

  m.def(
      "pooled_backward",
      [](const F32Array2& grad_out, const I64Array& index, const I64Array& offsets,
         const std::optional<F32Array1>& weights, const std::vector<std::string>& combiners,
         const std::vector<int64_t>& runs, const F32Out2& grad_emb, bool batch_major) {
        const char* op = "pooled_backward";
        const auto n = static_cast<int64_t>(index.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        const auto dim = static_cast<int64_t>(grad_emb.shape(1));
        PoolArgs a = pool_args(grad_out, bags, n, dim, weights, combiners, runs, batch_major, op, "grad_out");
        nb::gil_scoped_release release;
        finish(a, offsets, n, op);
        pooled_backward(grad_out.data(), dim, index.data(), offsets.data(), bags, a.weights, a.scale_data(),
                        static_cast<int64_t>(grad_emb.shape(0)), grad_emb.data(), a.layout, op);
      },
      nb::arg("grad_out"), nb::arg("index"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
      nb::arg("runs"), nb::arg("grad_emb").noconvert(), nb::arg("batch_major") = false,
      "Reduces the pooled output's gradient (laid out as in pool) onto the unique rows (U x dim).");
}

}  // namespace recis::bind
