#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>

#include "kernels.hpp"

namespace fastloss {

namespace {
// Default: OpenMP's own default, which follows OMP_NUM_THREADS or the number of cores.
std::atomic<int> g_num_threads{0};
// Below this many elements a parallel region costs more than it saves (a team start-up is a
// few microseconds; one core streams ~3 G floats/s).
constexpr int64_t kMinWorkPerThread = int64_t(1) << 16;
}  // namespace

int get_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) { g_num_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

int threads_for(int64_t work, int64_t max_parallel) {
  int64_t by_work = work / kMinWorkPerThread;
  int64_t n = std::min<int64_t>({int64_t(get_num_threads()), by_work, max_parallel});
  return int(std::max<int64_t>(n, 1));
}

void* thread_scratch(int slot, size_t bytes) {
  struct Buffers {
    void* p[kScratchSlots] = {};
    size_t n[kScratchSlots] = {};
    ~Buffers() {
      for (void* q : p) std::free(q);
    }
  };
  thread_local Buffers b;
  if (b.n[slot] < bytes) {
    std::free(b.p[slot]);
    const size_t rounded = (bytes + 63) / 64 * 64;
    b.p[slot] = std::aligned_alloc(64, rounded);
    if (!b.p[slot]) throw std::bad_alloc();
    b.n[slot] = rounded;
  }
  return b.p[slot];
}

}  // namespace fastloss
