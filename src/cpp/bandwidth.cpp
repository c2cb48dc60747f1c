// The machine's own memory-bandwidth floor, measured with the same threads and the same
// arrays as the kernels it is compared with: a streaming read (sum) and a streaming
// read + write (copy). `fastloss bench` reports every kernel as a ratio to these.
#include <algorithm>
#include <cstring>

#include "kernels.hpp"
#include "simd_math.hpp"

namespace fastloss {

double stream_read(const float* x, int64_t n) {
  const int nt = threads_for(n, n);
  double partial[256] = {};  // per thread, added in thread order
  const int nt_used = std::min(nt, 256);
  parallel_for(nt_used, [&](int64_t t, int64_t n_threads) {
    constexpr int W = vec_width<float>;
    const int64_t blocks = n / (4 * W);
    f32v a{}, b{}, c{}, d{};
    for (int64_t j = blocks * t / n_threads; j < blocks * (t + 1) / n_threads; ++j) {
      const float* p = x + j * 4 * W;
      a += vload(p), b += vload(p + W), c += vload(p + 2 * W), d += vload(p + 3 * W);
    }
    partial[t] = hsum(a + b + c + d);
  });
  double total = 0.0;
  for (double p : partial) total += p;
  for (int64_t j = n / (4 * vec_width<float>) * (4 * vec_width<float>); j < n; ++j) total += x[j];
  return total;
}

// y = x with ordinary stores (nt = false: every written line is first read, write-allocate)
// or non-temporal ones (nt = true), one aligned vector at a time.
void stream_copy(const float* x, float* y, int64_t n, bool nt) {
  const int nt_threads = threads_for(n, n);
  constexpr int W = vec_width<float>;
  parallel_for(nt_threads, [&](int64_t t, int64_t n_threads) {
    for (int64_t j = n / W * t / n_threads; j < n / W * (t + 1) / n_threads; ++j) {
      if (nt)
        vstream(y + j * W, vload(x + j * W));
      else
        vstore(y + j * W, vload(x + j * W));
    }
    stream_fence();
  });
  for (int64_t j = n / W * W; j < n; ++j) y[j] = x[j];
}

}  // namespace fastloss
