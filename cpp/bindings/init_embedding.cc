// Bindings for HashTable and the pooling kernels.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "recis/hash_table.h"
#include "recis/parallel.h"
#include "recis/pooling.h"
#include "recis/ragged.h"
#include "pooling_args.h"
#include "tensor.h"

namespace recis::bind {
namespace {

using F32Array2 = nb::ndarray<nb::pytorch, const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Out2 = nb::ndarray<nb::pytorch, float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Array1 = nb::ndarray<nb::pytorch, const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

Initializer parse_init(const std::string& kind, double a, double b) {
  static const std::pair<const char*, InitKind> kinds[] = {
      {"constant", InitKind::kConstant},
      {"uniform", InitKind::kUniform},
      {"normal", InitKind::kNormal},
      {"truncated_normal", InitKind::kTruncatedNormal},
      {"xavier_uniform", InitKind::kXavierUniform}};
  for (const auto& [name, k] : kinds)
    if (kind == name) return Initializer{k, a, b};
  throw std::invalid_argument("HashTable: unknown initializer '" + kind +
                              "' (expected constant, uniform, normal, truncated_normal or xavier_uniform)");
}

// Hands the vector to Python as a 1-D tensor: the tensor owns the vector (no copy).
template <typename T>
nb::object vector_tensor(std::vector<T>&& v, nb::dlpack::dtype dtype) {
  if (v.capacity() == 0) v.reserve(1);  // a null data pointer is no valid DLPack buffer
  auto* owned = new std::vector<T>(std::move(v));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  const size_t shape[1] = {owned->size()};
  return nb::cast(nb::ndarray<nb::pytorch>(owned->data(), 1, shape, owner, nullptr, dtype));
}

const float* weights_of(const std::optional<F32Array1>& w, int64_t n, const char* op) {
  if (!w) return nullptr;
  if (static_cast<int64_t>(w->shape(0)) != n)
    throw std::invalid_argument(std::string(op) + ": weights must have " + std::to_string(n) + " entries, got " +
                                std::to_string(w->shape(0)));
  return w->data();
}

using I32Array = nb::ndarray<nb::pytorch, const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The ID arrays as runs of one tag each (checked: one tag per array, each in [0, 65535]).
std::vector<HashTable::KeyRun> key_runs(const std::vector<I64Array>& ids, const std::vector<int>& tags, const char* op) {
  if (ids.size() != tags.size())
    throw std::invalid_argument(std::string(op) + ": got " + std::to_string(ids.size()) + " ID arrays but " +
                                std::to_string(tags.size()) + " tags");
  std::vector<HashTable::KeyRun> runs;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (tags[k] < 0 || tags[k] > 0xffff)
      throw std::invalid_argument(std::string(op) + ": tags must be in [0, 65535], got " + std::to_string(tags[k]));
    runs.push_back({ids[k].data(), static_cast<int64_t>(ids[k].shape(0)), static_cast<uint16_t>(tags[k]), nullptr});
  }
  return runs;
}

// The keys of the runs concatenated, with a tag per key.
int64_t concat_keys(const std::vector<HashTable::KeyRun>& keys, ScratchArray<int64_t>& all_ids,
                    ScratchArray<uint16_t>& all_tags) {
  const std::vector<int64_t> starts = run_starts(keys);
  const int64_t n = starts.back();
  all_ids = ScratchArray<int64_t>(static_cast<size_t>(n));
  all_tags = ScratchArray<uint16_t>(static_cast<size_t>(n));
  nb::gil_scoped_release release;
  parallel_for(static_cast<int64_t>(keys.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const HashTable::KeyRun& run = keys[static_cast<size_t>(k)];
      const int64_t at = starts[static_cast<size_t>(k)];
      if (run.n) std::memcpy(all_ids.data() + at, run.ids, static_cast<size_t>(run.n) * sizeof(int64_t));
      std::fill(all_tags.data() + at, all_tags.data() + at + run.n, run.tag);
    }
  });
  return n;
}

// De-duplicates n keys, finds or inserts their rows and (with gather) copies them out: returns
// (unique rows, inverse into them for every key, unique embeddings U x dim or None).
nb::tuple lookup_keys(HashTable& t, const std::vector<HashTable::KeyRun>& keys, int64_t step, bool insert, bool gather) {
  const int64_t n = run_starts(keys).back();
  Buffer inverse(static_cast<size_t>(n) * sizeof(int64_t));
  std::vector<int64_t> rows;
  Buffer emb;
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(t.mutex());
    t.lookup(keys, step, insert, rows, inverse.as<int64_t>());
    if (gather) emb = Buffer(rows.size() * static_cast<size_t>(t.dim()) * sizeof(float));
    // Read-only lookups leave the metadata alone: eval traffic must not keep rows alive.
    t.touch_and_gather(rows.data(), static_cast<int64_t>(rows.size()), step, insert, gather ? emb.as<float>() : nullptr);
  }
  const size_t u = rows.size();
  nb::object emb_out = gather ? to_tensor(std::move(emb), {u, static_cast<size_t>(t.dim())}, nb::dtype<float>())
                              : nb::none();
  return nb::make_tuple(vector_tensor(std::move(rows), nb::dtype<int64_t>()),
                        to_tensor(std::move(inverse), {static_cast<size_t>(n)}, nb::dtype<int64_t>()), emb_out);
}

nb::tuple lookup(HashTable& t, const std::vector<I64Array>& ids, const std::vector<int>& tags, int64_t step,
                 bool insert, bool gather) {
  return lookup_keys(t, key_runs(ids, tags, "HashTable.lookup"), step, insert, gather);
}

// Lookup of keys that carry one tag each (keys received from other ranks).
nb::tuple lookup_tagged(HashTable& t, const I64Array& ids, const I32Array& tags, int64_t step, bool insert,
                        bool gather) {
  const int64_t n = static_cast<int64_t>(ids.shape(0));
  if (static_cast<int64_t>(tags.shape(0)) != n)
    throw std::invalid_argument("HashTable.lookup_tagged: " + std::to_string(n) + " IDs but " +
                                std::to_string(tags.shape(0)) + " tags");
  ScratchArray<uint16_t> tags16(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t tag = tags.data()[i];
    if (tag < 0 || tag > 0xffff)
      throw std::invalid_argument("HashTable.lookup_tagged: tags must be in [0, 65535], got " + std::to_string(tag));
    tags16.data()[i] = static_cast<uint16_t>(tag);
  }
  return lookup_keys(t, {HashTable::KeyRun{ids.data(), n, 0, tags16.data()}}, step, insert, gather);
}

// De-duplicates the keys of several ID arrays and orders the unique keys by owner rank
// (mix64(id) mod world, the rule of recis.embedding.owner): returns (ids, tags int32, keys per
// rank, inverse into the ordered keys for every input ID).
nb::tuple route_keys(const std::vector<I64Array>& ids, const std::vector<int>& tags, int64_t world) {
  if (world < 1 || world > 0xffff)
    throw std::invalid_argument("route_keys: world must be in [1, 65535], got " + std::to_string(world));
  ScratchArray<int64_t> all_ids(0);
  ScratchArray<uint16_t> all_tags(0);
  const int64_t n = concat_keys(key_runs(ids, tags, "route_keys"), all_ids, all_tags);
  Buffer inverse(static_cast<size_t>(n) * sizeof(int64_t));
  std::vector<int64_t> counts(static_cast<size_t>(world), 0);
  Buffer out_ids, out_tags;
  size_t u = 0;
  {
    nb::gil_scoped_release release;
    std::vector<int64_t> uids;
    std::vector<uint16_t> utags;
    int64_t* inv = inverse.as<int64_t>();
    unique_keys(all_ids.data(), all_tags.data(), n, uids, utags, inv);
    u = uids.size();
    std::vector<int64_t> rank(u), at(static_cast<size_t>(world), 0);
    const OwnerRank owner(static_cast<uint32_t>(world));
    for (size_t i = 0; i < u; ++i) {
      rank[i] = owner(uids[i]);
      ++counts[static_cast<size_t>(rank[i])];
    }
    for (int64_t r = 1; r < world; ++r) at[static_cast<size_t>(r)] = at[static_cast<size_t>(r - 1)] + counts[static_cast<size_t>(r - 1)];
    out_ids = Buffer(u * sizeof(int64_t));
    out_tags = Buffer(u * sizeof(int32_t));
    std::vector<int64_t> pos(u);
    for (size_t i = 0; i < u; ++i) {
      const int64_t p = at[static_cast<size_t>(rank[i])]++;
      pos[i] = p;
      out_ids.as<int64_t>()[p] = uids[i];
      out_tags.as<int32_t>()[p] = utags[i];
    }
    for (int64_t j = 0; j < n; ++j) inv[j] = pos[static_cast<size_t>(inv[j])];
  }
  return nb::make_tuple(to_tensor(std::move(out_ids), {u}, nb::dtype<int64_t>()),
                        to_tensor(std::move(out_tags), {u}, nb::dtype<int32_t>()),
                        vector_tensor(std::move(counts), nb::dtype<int64_t>()),
                        to_tensor(std::move(inverse), {static_cast<size_t>(n)}, nb::dtype<int64_t>()));
}

// Splits bags of keys by owner rank for owner-side pooling. `ids` are one array per feature,
// concatenated; bag b holds keys offsets[b]:offsets[b + 1] of that concatenation. Returns
// (packed, sizes, order): packed holds one block per rank q: `header`, how many keys of each bag
// q owns (one count per bag), then those keys' IDs in input order; sizes[q] is that block's
// length; order[i] is the input position of the i-th packed ID (to send per-key weights along;
// empty unless `with_order`).
nb::tuple route_bags(const std::vector<I64Array>& ids, const I64Array& offsets, int64_t world,
                     const std::vector<int64_t>& header, bool with_order) {
  if (world < 1 || world > 0xffff)
    throw std::invalid_argument("route_bags: world must be in [1, 65535], got " + std::to_string(world));
  int64_t n = 0;
  for (const auto& a : ids) n += static_cast<int64_t>(a.shape(0));
  const int64_t bags = static_cast<int64_t>(offsets.shape(0)) - 1;
  const int64_t* off = offsets.data();
  if (bags < 0 || off[0] != 0 || off[bags] != n)
    throw std::invalid_argument("route_bags: offsets must run from 0 to the " + std::to_string(n) + " IDs, got " +
                                (bags < 0 ? std::string("none") : std::to_string(off[0]) + ".." + std::to_string(off[bags])));
  for (int64_t b = 0; b < bags; ++b)
    if (off[b + 1] < off[b])
      throw std::invalid_argument("route_bags: offsets decrease at bag " + std::to_string(b) + " (" +
                                  std::to_string(off[b]) + " > " + std::to_string(off[b + 1]) + ")");
  const auto w = static_cast<size_t>(world);
  const auto head = static_cast<int64_t>(header.size());
  std::vector<int64_t> sizes(w, head + bags), start(w, 0);
  ScratchArray<uint16_t> rank(static_cast<size_t>(n));
  std::vector<const int64_t*> part(ids.size());
  std::vector<int64_t> part_end(ids.size());
  for (size_t k = 0, at = 0; k < ids.size(); ++k) {
    part[k] = ids[k].data();
    at += ids[k].shape(0);
    part_end[k] = static_cast<int64_t>(at);
  }
  const size_t order_size = with_order ? static_cast<size_t>(n) : 0;
  Buffer packed, order(order_size * sizeof(int64_t));
  {
    nb::gil_scoped_release release;
    const OwnerRank owner(static_cast<uint32_t>(world));
    uint16_t* __restrict rank_of = rank.data();
    int64_t* __restrict size = sizes.data();
    for (size_t k = 0; k < ids.size(); ++k) {  // the owner of every key, counted
      const int64_t* __restrict p = part[k];
      const int64_t begin = k ? part_end[k - 1] : 0, m = part_end[k] - begin;
      for (int64_t i = 0; i < m; ++i) {
        const auto q = static_cast<uint16_t>(owner(p[i]));
        rank_of[begin + i] = q;
        ++size[q];
      }
    }
    for (size_t q = 1; q < w; ++q) start[q] = start[q - 1] + sizes[q - 1];
    packed = Buffer(static_cast<size_t>(start[w - 1] + sizes[w - 1]) * sizeof(int64_t));
    int64_t* __restrict out = packed.as<int64_t>();
    int64_t* __restrict ord = order.as<int64_t>();
    std::vector<int64_t> next(w), counts(w);  // where rank q's next ID goes; rank q's counts (bag 0)
    for (size_t q = 0; q < w; ++q) {
      std::copy(header.begin(), header.end(), out + start[q]);
      counts[q] = start[q] + head;
      next[q] = counts[q] + bags;
      std::fill(out + counts[q], out + next[q], 0);
    }
    int64_t* __restrict nx = next.data();
    const int64_t* __restrict cnt = counts.data();
    const int64_t skip = head + bags;  // a block's header and counts
    size_t k = 0;  // the part holding key j
    for (int64_t b = 0; b < bags; ++b) {  // each bag's keys, scattered to their owners and counted per owner
      for (int64_t j = off[b]; j < off[b + 1]; ++j) {
        while (j >= part_end[k]) ++k;
        const uint16_t q = rank_of[j];
        const int64_t at = nx[q]++;
        out[at] = part[k][j - (k ? part_end[k - 1] : 0)];
        ++out[cnt[q] + b];
        if (with_order) ord[at - (q + 1) * skip] = j;  // IDs before it: all but q + 1 headers and counts
      }
    }
  }
  const auto total = static_cast<size_t>(std::accumulate(sizes.begin(), sizes.end(), int64_t{0}));
  return nb::make_tuple(to_tensor(std::move(packed), {total}, nb::dtype<int64_t>()),
                        vector_tensor(std::move(sizes), nb::dtype<int64_t>()),
                        to_tensor(std::move(order), {order_size}, nb::dtype<int64_t>()));
}

}  // namespace

void init_embedding(nb::module_& m) {
  nb::class_<HashTable>(m, "HashTable", "Dynamic hash table: int64 ID (+ 16-bit tag) -> embedding row.")
      .def(
          "__init__",
          [](HashTable* self, int64_t dim, const std::string& init, double a, double b, int64_t admit_count,
             int64_t block_rows) { new (self) HashTable(dim, parse_init(init, a, b), admit_count, block_rows); },
          nb::arg("dim"), nb::arg("init") = "normal", nb::arg("a") = 0.0, nb::arg("b") = 0.01,
          nb::arg("admit_count") = 1, nb::arg("block_rows") = 8192)
      .def_prop_ro("dim", &HashTable::dim)
      .def("__len__", &HashTable::size)
      .def("set_tag_seed", &HashTable::set_tag_seed, nb::arg("tag"), nb::arg("seed"))
      .def("add_slot", &HashTable::add_slot, nb::arg("name"), nb::arg("width"), nb::arg("init"),
           "Adds an optimizer slot of `width` floats per row; returns its index.")
      .def("slot_names",
           [](const HashTable& t) {
             std::vector<std::string> names;
             for (int s = 0; s < t.num_slots(); ++s) names.push_back(t.slot_name(s));
             return names;
           })
      .def("lookup", &lookup, nb::arg("ids"), nb::arg("tags"), nb::arg("step"), nb::arg("insert"),
           nb::arg("gather") = true,
           "De-duplicates, finds or inserts, gathers: returns (unique_rows, inverse, unique_embeddings or None).")
      .def("lookup_tagged", &lookup_tagged, nb::arg("ids"), nb::arg("tags"), nb::arg("step"), nb::arg("insert"),
           nb::arg("gather") = true, "lookup of keys with one int32 tag each: (unique_rows, inverse, unique_embeddings or None).")
      .def(
          "pool",
          [](const HashTable& t, const I64Array& rows, const I64Array& inverse, const I64Array& offsets,
             std::optional<F32Array1> weights, const std::vector<std::string>& combiners,
             const std::vector<int64_t>& runs, F32Out2 out, bool batch_major) {
            const int64_t n = static_cast<int64_t>(inverse.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
            const int64_t u = static_cast<int64_t>(rows.shape(0));
            const std::vector<BagRun> c = parse_runs(combiners, runs, "HashTable.pool");
            const BagLayout layout = parse_layout(runs, batch_major, "HashTable.pool");
            check_out_shape(out, layout, bags, t.dim(), "HashTable.pool", "out");
            const float* w = weights_of(weights, n, "HashTable.pool");
            nb::gil_scoped_release release;
            validate_offsets(Offsets{offsets.data(), bags, n}, "HashTable.pool");
            const std::vector<float> scales = bag_scales(offsets.data(), bags, w, c, "HashTable.pool");
            t.pool(rows.data(), u, inverse.data(), offsets.data(), bags, w, scales.empty() ? nullptr : scales.data(),
                   out.data(), layout);
          },
          nb::arg("rows"), nb::arg("inverse"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
          nb::arg("runs"), nb::arg("out").noconvert(), nb::arg("batch_major") = false,
          "Pools table rows rows[inverse[j]] per bag straight from the blocks (no (U, D) copy) into out (bags x dim; "
          "batch_major: bags per run x runs * dim, the runs side by side).")
      .def(
          "pool_keys",
          [](HashTable& t, const std::vector<I64Array>& ids, const std::vector<int>& tags, const I64Array& offsets,
             std::optional<F32Array1> weights, const std::vector<std::string>& combiners,
             const std::vector<int64_t>& runs, F32Out2 out, bool batch_major) {
            const char* op = "HashTable.pool_keys";
            const std::vector<HashTable::KeyRun> keys = key_runs(ids, tags, op);
            const int64_t n = run_starts(keys).back();
            const int64_t bags = static_cast<int64_t>(offsets.shape(0)) - 1;
            const std::vector<BagRun> c = parse_runs(combiners, runs, op);
            const BagLayout layout = parse_layout(runs, batch_major, op);
            check_out_shape(out, layout, bags, t.dim(), op, "out");
            const float* w = weights_of(weights, n, op);
            nb::gil_scoped_release release;
            validate_offsets(Offsets{offsets.data(), bags, n}, op);
            const std::vector<float> scales = bag_scales(offsets.data(), bags, w, c, op);
            t.pool_keys(keys, offsets.data(), bags, w, scales.empty() ? nullptr : scales.data(), out.data(), layout);
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
              std::lock_guard<std::mutex> lock(t.mutex());
              t.check_rows(rows.data(), static_cast<int64_t>(n), "HashTable.gather");
              t.gather(rows.data(), static_cast<int64_t>(n), out.as<float>());
            }
            return to_tensor(std::move(out), {n, static_cast<size_t>(t.dim())}, nb::dtype<float>());
          },
          nb::arg("rows"), "Embeddings of live rows (n x dim); row -1 gives zeros, any other row raises ValueError.")
      .def(
          "evict_older_than",
          [](HashTable& t, int64_t min_step) {
            nb::gil_scoped_release release;
            return t.evict_older_than(min_step);
          },
          nb::arg("min_step"), "Removes rows whose last step is < min_step; returns how many.")
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
      .def_prop_ro("row_capacity",
                   [](const HashTable& t) {
                     nb::gil_scoped_release release;
                     std::lock_guard<std::mutex> lock(t.mutex());
                     return t.row_capacity();
                   })
      .def(
          "reserve",
          [](HashTable& t, int64_t rows) {
            nb::gil_scoped_release release;
            t.reserve(rows);
          },
          nb::arg("rows"), "Grows the ID map once for `rows` live rows (before a bulk load).")
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
            return nb::make_tuple(vector_tensor(std::move(ids), nb::dtype<int64_t>()),
                                  vector_tensor(std::move(tags), nb::dtype<int32_t>()));
          },
          "Drains the evicted keys recorded since the last call: (ids int64, tags int32).")
      .def(
          "export",
          [](const HashTable& t, int64_t begin, int64_t end, int64_t min_step) {
            std::vector<int64_t> rows, ids, steps, freqs;
            std::vector<int32_t> tags;
            Buffer emb;
            std::vector<Buffer> slots;
            size_t n = 0;
            {
              nb::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(t.mutex());  // one consistent snapshot
              rows = t.live_rows(begin, end, min_step);
              n = rows.size();
              ids.resize(n);
              steps.resize(n);
              freqs.resize(n);
              tags.resize(n);
              emb = Buffer(n * static_cast<size_t>(t.dim()) * sizeof(float));
              for (size_t i = 0; i < n; ++i) {
                ids[i] = t.row_id(rows[i]);
                tags[i] = t.row_tag(rows[i]);
                steps[i] = t.row_step(rows[i]);
                freqs[i] = t.row_freq(rows[i]);
              }
              t.gather(rows.data(), static_cast<int64_t>(n), emb.as<float>());
              for (int s = 0; s < t.num_slots(); ++s) {
                const int64_t w = t.slot_width(s);
                slots.emplace_back(n * static_cast<size_t>(w) * sizeof(float));
                for (size_t i = 0; i < n; ++i)
                  std::memcpy(slots.back().as<float>() + i * w, t.slot_row(s, rows[i]), static_cast<size_t>(w) * 4);
              }
            }
            nb::dict out;
            out["ids"] = vector_tensor(std::move(ids), nb::dtype<int64_t>());
            out["tags"] = vector_tensor(std::move(tags), nb::dtype<int32_t>());
            out["steps"] = vector_tensor(std::move(steps), nb::dtype<int64_t>());
            out["freqs"] = vector_tensor(std::move(freqs), nb::dtype<int64_t>());
            out["embeddings"] = to_tensor(std::move(emb), {n, static_cast<size_t>(t.dim())}, nb::dtype<float>());
            nb::dict slot_dict;
            for (int s = 0; s < t.num_slots(); ++s)
              slot_dict[t.slot_name(s).c_str()] = to_tensor(std::move(slots[static_cast<size_t>(s)]),
                                                            {n, static_cast<size_t>(t.slot_width(s))}, nb::dtype<float>());
            out["slots"] = slot_dict;
            return out;
          },
          nb::arg("begin") = 0, nb::arg("end") = INT64_MAX, nb::arg("min_step") = INT64_MIN,
          "Live rows with index in [begin, end) last seen at step >= min_step, as tensors: ids, tags, steps, "
          "freqs, embeddings (n x dim), slots {name: n x width}. Ranges let a saver stream a big table.")
      .def(
          "assign",
          [](HashTable& t, const I64Array& ids,
             const nb::ndarray<nb::pytorch, const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>& tags,
             const I64Array& steps, const I64Array& freqs, const F32Array2& emb, const nb::dict& slots) {
            const int64_t n = static_cast<int64_t>(ids.shape(0));
            const auto un = static_cast<size_t>(n);
            if (tags.shape(0) != un || steps.shape(0) != un || freqs.shape(0) != un || emb.shape(0) != un ||
                static_cast<int64_t>(emb.shape(1)) != t.dim())
              throw std::invalid_argument("HashTable.assign: expected " + std::to_string(n) +
                                          " ids, tags, steps, freqs and a " + std::to_string(n) + " x " +
                                          std::to_string(t.dim()) + " embedding matrix");
            std::vector<F32Array2> slot_arrays;
            std::vector<const float*> slot_ptrs;
            for (int s = 0; s < t.num_slots(); ++s) {
              const std::string& name = t.slot_name(s);
              if (!slots.contains(name.c_str())) {
                slot_ptrs.push_back(nullptr);  // reset to the slot's initial value
                continue;
              }
              slot_arrays.push_back(nb::cast<F32Array2>(slots[name.c_str()]));
              const F32Array2& a = slot_arrays.back();
              if (a.shape(0) != un || static_cast<int64_t>(a.shape(1)) != t.slot_width(s))
                throw std::invalid_argument("HashTable.assign: slot '" + name + "' must be " + std::to_string(n) +
                                            " x " + std::to_string(t.slot_width(s)));
              slot_ptrs.push_back(a.data());
            }
            for (auto item : slots) {
              const std::string key = nb::cast<std::string>(item.first);
              bool known = false;
              for (int s = 0; s < t.num_slots(); ++s) known = known || t.slot_name(s) == key;
              if (!known) throw std::invalid_argument("HashTable.assign: this table has no slot '" + key + "'");
            }
            std::vector<int64_t> rows(un);
            {
              nb::gil_scoped_release release;
              std::vector<uint16_t> utags(un);
              for (size_t i = 0; i < un; ++i) {
                if (tags.data()[i] < 0 || tags.data()[i] > 0xffff)
                  throw std::invalid_argument("HashTable.assign: tags[" + std::to_string(i) + "]=" +
                                              std::to_string(tags.data()[i]) + " is outside [0, 65535]");
                utags[i] = static_cast<uint16_t>(tags.data()[i]);
              }
              t.assign(ids.data(), utags.data(), n, steps.data(), freqs.data(), emb.data(), slot_ptrs, rows.data());
            }
            return vector_tensor(std::move(rows), nb::dtype<int64_t>());
          },
          nb::arg("ids"), nb::arg("tags"), nb::arg("steps"), nb::arg("freqs"), nb::arg("embeddings"),
          nb::arg("slots"),
          "Inserts or overwrites rows with the given embeddings, metadata and slots {name: n x width} "
          "(slots left out are reset); returns their row indices.")
      .def("counters",
           [](const HashTable& t) {
             TableCounters c = t.counters();
             nb::dict d;
             d["lookups"] = c.lookups;
             d["hits"] = c.hits;
             d["inserts"] = c.inserts;
             d["admitted"] = c.admitted;
             d["rejected"] = c.rejected;
             d["evicted"] = c.evicted;
             return d;
           })
      .def("memory_bytes", &HashTable::memory_bytes, "Bytes held by blocks, metadata and the ID map.");

  m.def("route_keys", &route_keys, nb::arg("ids"), nb::arg("tags"), nb::arg("world"),
        "De-duplicates (ID, tag) keys and orders them by owner rank: (ids, tags, counts per rank, inverse).");

  m.def("route_bags", &route_bags, nb::arg("ids"), nb::arg("offsets"), nb::arg("world"),
        nb::arg("header") = std::vector<int64_t>{}, nb::arg("with_order") = true,
        "Splits bags of keys by owner rank: (blocks [header, keys per bag, IDs] per rank, block sizes, order of the IDs).");

  m.def(
      "unique_rows",
      [](const I64Array& rows, int64_t capacity) {
        const int64_t n = static_cast<int64_t>(rows.shape(0));
        for (int64_t i = 0; i < n; ++i)
          if (rows.data()[i] < -1 || rows.data()[i] >= capacity)
            throw std::invalid_argument("unique_rows: rows[" + std::to_string(i) + "]=" + std::to_string(rows.data()[i]) +
                                        " is outside [-1, " + std::to_string(capacity) + ")");
        Buffer inverse(static_cast<size_t>(n) * sizeof(int64_t));
        std::vector<int64_t> unique;
        {
          nb::gil_scoped_release release;
          std::copy(rows.data(), rows.data() + n, inverse.as<int64_t>());
          unique_rows(inverse.as<int64_t>(), n, capacity, unique);
        }
        return nb::make_tuple(vector_tensor(std::move(unique), nb::dtype<int64_t>()),
                              to_tensor(std::move(inverse), {static_cast<size_t>(n)}, nb::dtype<int64_t>()));
      },
      nb::arg("rows"), nb::arg("capacity"),
      "De-duplicates row indices in [-1, capacity): (distinct rows, inverse). Ascending with -1 last unless capacity "
      "is far above len(rows).");

  m.def(
      "pooled_forward",
      [](const F32Array2& emb, const I64Array& inverse, const I64Array& offsets, std::optional<F32Array1> weights,
         const std::vector<std::string>& combiners, const std::vector<int64_t>& runs, F32Out2 out) {
        const int64_t n = static_cast<int64_t>(inverse.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        const int64_t dim = static_cast<int64_t>(emb.shape(1));
        const std::vector<BagRun> c = parse_runs(combiners, runs, "pooled_forward");
        if (bags < 0 || static_cast<int64_t>(out.shape(0)) != bags || static_cast<int64_t>(out.shape(1)) != dim)
          throw std::invalid_argument("pooled_forward: out must be " + std::to_string(bags) + " x " + std::to_string(dim));
        const float* w = weights_of(weights, n, "pooled_forward");
        nb::gil_scoped_release release;
        validate_offsets(Offsets{offsets.data(), bags, n}, "pooled_forward");
        const std::vector<float> scales = bag_scales(offsets.data(), bags, w, c, "pooled_forward");
        pooled_forward(emb.data(), static_cast<int64_t>(emb.shape(0)), dim, inverse.data(), offsets.data(), bags, w,
                       scales.empty() ? nullptr : scales.data(), out.data());
      },
      nb::arg("emb"), nb::arg("inverse"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
      nb::arg("runs"), nb::arg("out").noconvert(), "out[b] = pooled rows emb[inverse[j]] over bag b; combiners[i] (sum, mean or sqrtn) pools the i-th run of runs[i] bags.");

  m.def(
      "pooled_backward",
      [](const F32Array2& grad_out, const I64Array& inverse, const I64Array& offsets, std::optional<F32Array1> weights,
         const std::vector<std::string>& combiners, const std::vector<int64_t>& runs, F32Out2 grad_emb,
         bool batch_major) {
        const int64_t n = static_cast<int64_t>(inverse.shape(0)), bags = static_cast<int64_t>(offsets.shape(0)) - 1;
        const int64_t dim = static_cast<int64_t>(grad_emb.shape(1));
        const std::vector<BagRun> c = parse_runs(combiners, runs, "pooled_backward");
        const BagLayout layout = parse_layout(runs, batch_major, "pooled_backward");
        check_out_shape(grad_out, layout, bags, dim, "pooled_backward", "grad_out");
        const float* w = weights_of(weights, n, "pooled_backward");
        const int64_t u = static_cast<int64_t>(grad_emb.shape(0));
        nb::gil_scoped_release release;
        validate_offsets(Offsets{offsets.data(), bags, n}, "pooled_backward");
        const std::vector<float> scales = bag_scales(offsets.data(), bags, w, c, "pooled_backward");
        pooled_backward(grad_out.data(), dim, inverse.data(), offsets.data(), bags, w,
                        scales.empty() ? nullptr : scales.data(), u, grad_emb.data(), layout, "pooled_backward");
      },
      nb::arg("grad_out"), nb::arg("inverse"), nb::arg("offsets"), nb::arg("weights").none(), nb::arg("combiners"),
      nb::arg("runs"), nb::arg("grad_emb").noconvert(), nb::arg("batch_major") = false,
      "Reduces the pooled output's gradient (laid out as in pool) onto the unique rows (U x dim).");
}

}  // namespace recis::bind
