// Thread count, per-thread scratch and run_parallel: the kernels' only way to use threads, an
// OpenMP team (FASTLOSS_OPENMP=1) or a small std::thread pool (toolchains without OpenMP, e.g.
// Apple's clang). Either way a kernel sees body(t, n) calls and splits its work by (t, n).
#if FASTLOSS_OPENMP
#include <omp.h>
#else
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif
#if !defined(_WIN32)
#include <unistd.h>
#endif
#endif
#if defined(_WIN32)
#include <malloc.h>  // _aligned_malloc: the Windows C runtime has no aligned_alloc
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <new>

#include "kernels.hpp"

namespace fastloss {

namespace {
// 0: the default, which follows OMP_NUM_THREADS or the number of usable cores.
std::atomic<int> g_num_threads{0};
// Below this much work (elements, kExpWork for each of an exp/log kernel's) a parallel region
// costs more than it saves (a team start-up is a few microseconds; one core streams ~3 G
// floats/s).
constexpr int64_t kMinWorkPerThread = int64_t(1) << 16;

#if !FASTLOSS_OPENMP
// What OpenMP would default to: the first value of OMP_NUM_THREADS, else the cores this process
// may run on (its affinity mask, as taskset or a container's cpuset limit it).
int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? int(n) : 1;
}

// Workers 1..n-1 of the current job wait on `wake_`; the caller is thread 0. One job at a time:
// a caller that finds the pool busy (another Python thread's call, with the GIL released) or
// that is itself inside a job runs every share in turn on its own thread, which gives the same
// result (no body waits for another) and cannot deadlock.
class ThreadPool {
 public:
  void run(int n, ParallelBody body, void* ctx) {
    if (t_in_job) return run_here(n, body, ctx);  // (before try_lock: busy_ may be this thread's)
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return run_here(n, body, ctx);
#if !defined(_WIN32)
    // A fork()ed child has the pool's memory but not its threads: start new ones there.
    if (owner_ != getpid()) {
      workers_.clear();  // (their std::thread objects name threads of the parent)
      owner_ = getpid();
    }
#endif
    while (int(workers_.size()) < n - 1) {  // (only the busy_ holder changes generation_)
      const int id = int(workers_.size()) + 1;
      const uint64_t now = generation_;
      workers_.push_back(new std::thread([this, id, now] { work(id, now); }));
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      body_ = body;
      ctx_ = ctx;
      n_ = n;
      pending_ = n - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr mine = call(0, n, body, ctx);
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [this] { return pending_ == 0; });
    if (!mine) mine = error_;
    if (mine) std::rethrow_exception(mine);
  }

 private:
  static std::exception_ptr call(int t, int n, ParallelBody body, void* ctx) {
    t_in_job = true;
    std::exception_ptr e;
    try {
      body(ctx, t, n);
    } catch (...) {
      e = std::current_exception();
    }
    t_in_job = false;
    return e;
  }

  static void run_here(int n, ParallelBody body, void* ctx) {
    for (int t = 0; t < n; ++t) body(ctx, t, n);
  }

  // Worker `id`, started while the pool's last job was number `seen`.
  void work(int id, uint64_t seen) {
    for (;;) {
      std::unique_lock<std::mutex> lock(m_);
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (id >= n_) continue;  // not needed for this job (it has fewer threads)
      const ParallelBody body = body_;
      void* const ctx = ctx_;
      const int n = n_;
      lock.unlock();
      std::exception_ptr e = call(id, n, body, ctx);
      lock.lock();
      if (e && !error_) error_ = e;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  static thread_local bool t_in_job;
  std::mutex busy_, m_;
  std::condition_variable wake_, done_;
  // Never joined: the workers live as long as the process (destroying a pool whose threads
  // wait on it at exit would be the only way to hang there).
  std::vector<std::thread*> workers_;
#if !defined(_WIN32)
  pid_t owner_ = getpid();
#endif
  uint64_t generation_ = 0;
  ParallelBody body_ = nullptr;
  void* ctx_ = nullptr;
  int n_ = 0, pending_ = 0;
  std::exception_ptr error_;
};
thread_local bool ThreadPool::t_in_job = false;

ThreadPool& pool() {
  static ThreadPool* p = new ThreadPool;  // (leaked on purpose: see workers_)
  return *p;
}
#endif
}  // namespace

int get_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
#if FASTLOSS_OPENMP
  return n > 0 ? n : omp_get_max_threads();
#else
  static const int fallback = default_threads();
  return n > 0 ? n : fallback;
#endif
}

void set_num_threads(int n) { g_num_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

int threads_for(int64_t work, int64_t max_parallel) {
  int64_t by_work = work / kMinWorkPerThread;
  int64_t n = std::min<int64_t>({int64_t(get_num_threads()), by_work, max_parallel});
  return int(std::max<int64_t>(n, 1));
}

#if FASTLOSS_OPENMP
const char* threading() { return "openmp"; }

void run_parallel(int n_threads, ParallelBody body, void* ctx) {
  // An exception must not leave an OpenMP region (std::terminate): keep the first one.
  std::exception_ptr error;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
  {
    try {
      body(ctx, omp_get_thread_num(), omp_get_num_threads());
    } catch (...) {
#pragma omp critical(fastloss_run_parallel)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}
#else
const char* threading() { return "threadpool"; }

void run_parallel(int n_threads, ParallelBody body, void* ctx) {
  if (n_threads <= 1) return body(ctx, 0, 1);
  pool().run(n_threads, body, ctx);
}
#endif

void* thread_scratch(int slot, size_t bytes) {
#if defined(_WIN32)
  auto release = [](void* q) { _aligned_free(q); };
  auto allocate = [](size_t n) { return _aligned_malloc(n, 64); };
#else
  auto release = [](void* q) { std::free(q); };
  auto allocate = [](size_t n) { return std::aligned_alloc(64, n); };
#endif
  struct Buffers {
    void (*release)(void*);
    void* p[kScratchSlots] = {};
    size_t n[kScratchSlots] = {};
    ~Buffers() {
      for (void* q : p) release(q);
    }
  };
  thread_local Buffers b{release};
  if (b.n[slot] < bytes) {
    release(b.p[slot]);
    const size_t rounded = (bytes + 63) / 64 * 64;
    b.p[slot] = allocate(rounded);
    if (!b.p[slot]) throw std::bad_alloc();
    b.n[slot] = rounded;
  }
  return b.p[slot];
}

}  // namespace fastloss
