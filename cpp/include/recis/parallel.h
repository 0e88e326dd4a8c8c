// A small reusable thread pool for the core's kernels.
// One pool per process, sized once and resized on request; the calling thread takes part in
// every loop, so a pool of size N runs N-1 workers. Nested parallel_for calls run inline.
// Its workers are the process's OpenMP team (torch's) once attach_openmp found one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

// Hot kernels are compiled three times, for AVX-512, AVX2 and the x86-64 baseline, and the loader
// picks one per machine (GNU ifunc), so one wheel runs everywhere and uses the widest vectors it
// can. The core is built with -ffp-contract=off (AVX-512 implies FMA, which would otherwise fuse
// a * b + c): every clone rounds alike, so results never depend on the machine.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(RECIS_NO_CLONES)
#define RECIS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RECIS_VECTOR_CLONES
#endif

namespace recis {

// How the kernels split work (counts of elements: keys, rows, values). A chunk of a cheap
// per-element loop is never smaller than kMinChunk (smaller ones cost more in scheduling than
// they save), and an input of fewer than kMinParallel elements is done in one part.
constexpr int64_t kMinChunk = 16384;
constexpr int64_t kMinParallel = 65536;

// Number of threads a parallel_for may use (the caller included); at least 1.
int num_threads();

// Resizes the pool; n < 1 is an error. Blocks until running loops finish.
void set_num_threads(int n);

// Runs every later loop on the OpenMP team of a runtime already loaded in the process (libgomp,
// libiomp or libomp, found by name; never loads one) instead of the pool's own threads. Returns
// the runtime's path, or "" (and changes nothing) when none is loaded.
std::string attach_openmp();
// Back to the pool's own threads.
void detach_openmp();
bool on_openmp();

// Calls fn(begin, end) over disjoint chunks covering [0, n), each at least `grain` long
// (except the last). Runs inline when the work is small, the pool has one thread, or the
// caller is already inside a parallel_for. The first exception thrown by fn is rethrown here
// after all chunks have stopped.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace recis
