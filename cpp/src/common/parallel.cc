// Thread pool behind recis::parallel_for: workers pull chunk indices from an atomic counter, so a
// loop costs one wake-up per worker, not one per chunk. The workers are the OpenMP team of the
// runtime torch loaded, when attach_openmp found one (torch's ops and ours then share warm
// threads; two pools on the same cores starve each other while OpenMP's idle workers spin), else
// the pool's own threads, which sleep on a condition variable.
#include "recis/parallel.h"

#include <dlfcn.h>
#include <link.h>

#include <pthread.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace recis {
namespace {

thread_local bool t_inside_loop = false;

class ThreadPool {
 public:
  ~ThreadPool() { stop_workers(); }

  int size() const { return size_.load(std::memory_order_relaxed); }

  // libgomp's entry point for `#pragma omp parallel` (GCC's ABI; LLVM's and Intel's runtimes
  // export it too): runs fn(data) on a team of num_threads, the caller as thread 0.
  using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

  void use_openmp(GompParallel gomp) {
    std::lock_guard<std::mutex> lock(run_mutex_);
    stop_workers();
    gomp_ = gomp;
    if (!gomp_) start_workers(size());
  }
  bool on_openmp() const { return gomp_ != nullptr; }

  void resize(int n) {
    std::lock_guard<std::mutex> lock(run_mutex_);
    if (gomp_) {
      size_.store(n);
      return;
    }
    if (static_cast<int>(workers_.size()) + 1 == n) return;
    stop_workers();
    start_workers(n);
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    const int64_t threads = gomp_ ? size() : static_cast<int64_t>(workers_.size()) + 1;
    // Four chunks per thread balance uneven rows without paying for many tiny chunks.
    const int64_t chunk = std::max(grain, (n + threads * 4 - 1) / (threads * 4));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      chunk_ = chunk;
      next_.store(0);
      error_ = nullptr;
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    if (gomp_) {
      gomp_([](void* self) { static_cast<ThreadPool*>(self)->work(); }, this, static_cast<unsigned>(threads), 0);
    } else {
      wake_.notify_all();
      work();
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return active_ == 0; });
    }
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void start_workers(int n) {
    stopping_ = false;
    // New workers must wait for the next loop, not join the last one again: they start from the
    // current generation (no loop runs now, run_mutex_ is held).
    for (int i = 0; i + 1 < n; ++i) workers_.emplace_back([this, g = generation_] { worker_loop(g); });
    size_.store(n);
  }

  void work() {
    t_inside_loop = true;
    for (;;) {
      const int64_t begin = next_.fetch_add(chunk_);
      if (begin >= n_) break;
      try {
        (*fn_)(begin, std::min(n_, begin + chunk_));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);  // stop handing out chunks
      }
    }
    t_inside_loop = false;
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex run_mutex_;  // one loop at a time; also guards workers_
  std::mutex mutex_;      // guards the loop state below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  std::atomic<int> size_{1};
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  GompParallel gomp_ = nullptr;
};

// Leaked on purpose: joining threads during static destruction at interpreter exit deadlocks on
// some platforms, and the OS reclaims the threads anyway.
ThreadPool* g_pool = nullptr;

// A forked child inherits the pool object but none of its threads (and maybe a locked mutex):
// it starts over with a fresh single-threaded pool, leaking the parent's copy.
// (A child's OpenMP runtime is no safer, so it gets the pool's own threads.)
void reset_pool_in_child() { g_pool = new ThreadPool(); }

ThreadPool& pool() {
  static bool once = [] {
    g_pool = new ThreadPool();
    pthread_atfork(nullptr, nullptr, reset_pool_in_child);
    return true;
  }();
  (void)once;
  return *g_pool;
}

}  // namespace

int num_threads() { return pool().size(); }

std::string attach_openmp() {
  std::vector<std::string> loaded;  // OpenMP runtimes in the process (dlopen is called after the walk)
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        const char* name = info->dlpi_name;
        if (name && (std::strstr(name, "libgomp") || std::strstr(name, "libiomp") || std::strstr(name, "libomp")))
          static_cast<std::vector<std::string>*>(data)->emplace_back(name);
        return 0;
      },
      &loaded);
  for (const std::string& name : loaded) {
    // RTLD_NOLOAD: borrow the runtime torch loaded, never load one. The handle stays open for the
    // life of the process, as the runtime does anyway.
    void* handle = dlopen(name.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) continue;
    if (void* gomp = dlsym(handle, "GOMP_parallel")) {
      pool().use_openmp(reinterpret_cast<ThreadPool::GompParallel>(gomp));
      return name;
    }
    dlclose(handle);
  }
  return {};
}

void detach_openmp() { pool().use_openmp(nullptr); }

bool on_openmp() { return pool().on_openmp(); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: expected n >= 1, got " + std::to_string(n));
  pool().resize(n);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (t_inside_loop || n <= grain || num_threads() == 1) {
    fn(0, n);
    return;
  }
  pool().run(n, grain, fn);
}

}  // namespace recis
