// The machine's own memory-bandwidth floor, measured with the same threads and the same
// arrays as the kernels it is compared with: a streaming read (sum) and a streaming
// read + write (copy). `fastloss bench` reports every kernel as a ratio to these.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels.hpp"
#include "simd_math.hpp"

namespace fastloss {

double stream_read(const float* x, int64_t n) {
  const int nt = threads_for(n, n);
  double total = 0.0;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : total)
  {
    constexpr int W = vec_width<float>;
    f32v a{}, b{}, c{}, d{};
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n / (4 * W); ++j) {
      const float* p = x + j * 4 * W;
      a += vload(p), b += vload(p + W), c += vload(p + 2 * W), d += vload(p + 3 * W);
    }
    total += hsum(a + b + c + d);
  }
  for (int64_t j = n / (4 * vec_width<float>) * (4 * vec_width<float>); j < n; ++j) total += x[j];
  return total;
}

void stream_copy(const float* x, float* y, int64_t n) {
  const int nt = threads_for(n, n);
  const int64_t block = int64_t(1) << 16;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t j = 0; j < (n + block - 1) / block; ++j) {
    const int64_t lo = j * block, len = std::min(block, n - lo);
    std::memcpy(y + lo, x + lo, size_t(len) * sizeof(float));
  }
}

}  // namespace fastloss
