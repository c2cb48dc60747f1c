// A check of the C++ core without Python, for targets where the test suite cannot run (e.g.
// aarch64 under qemu-user, see .ci/aarch64): the kernels against scalar float64 references,
// float16 conversions over every half, and bitwise-equal results for 1 and 4 threads.
// Exit status 0 when every check passes; each failure is printed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels.hpp"

using namespace fastloss;

namespace {

int g_failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    ++g_failures;
    std::printf("FAIL: %s\n", what);
  }
}

// IEEE half bits -> float, written plainly (the kernels' code is branch-free and vectorised).
double half_value(uint16_t h) {
  const int sign = h >> 15, exp = h >> 10 & 0x1F, man = h & 0x3FF;
  double v;
  if (exp == 0) v = std::ldexp(man, -24);
  else if (exp == 31) v = man ? NAN : INFINITY;
  else v = std::ldexp(1024 + man, exp - 25);
  return sign ? -v : v;
}

// Every half through mse_loss against 0: the per-element loss is x*x, exact in float32.
void check_every_half() {
  const int64_t n = 1 << 16;
  std::vector<float16> x(n);
  std::vector<float> y(n, 0.0f), loss(n);
  for (int64_t i = 0; i < n; ++i) x[i].bits = uint16_t(i);
  PointwiseArgs<float16> a;
  a.kind = PointwiseKind::kMse;
  a.n = n;
  a.x = x.data();
  a.y = y.data();
  a.loss = loss.data();
  pointwise(a);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = half_value(uint16_t(i));
    if (std::isnan(v) ? !std::isnan(loss[i]) : double(loss[i]) != float(v) * float(v)) ++bad;
  }
  if (bad) std::printf("  %lld of 65536 halves widened wrongly\n", (long long)bad);
  check(bad == 0, "float16 -> float32 for every half");
}

// Softmax cross-entropy per row (class-index targets), float64, as the formula reads.
double ce_reference(const double* x, int64_t V, int64_t t) {
  double m = -INFINITY;
  for (int64_t j = 0; j < V; ++j) m = std::fmax(m, x[j]);
  double s = 0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(x[j] - m);
  return m + std::log(s) - x[t];
}

template <class S> S store(double v);
template <> float store<float>(double v) { return float(v); }
template <> float16 store<float16>(double v) {
  // round through a float, then to the nearest half by search (slow, plain, independent)
  const float f = float(v);
  uint16_t best = 0;
  double err = INFINITY;
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const double e = std::fabs(half_value(uint16_t(h)) - std::fabs(f));
    if (e < err) err = e, best = uint16_t(h);
  }
  return float16{uint16_t(best | (f < 0 ? 0x8000 : 0))};
}
double value(float v) { return v; }
double value(float16 v) { return half_value(v.bits); }

template <class S> void check_cross_entropy(const char* name, int64_t rows, int64_t V) {
  std::mt19937_64 rng(uint64_t(rows * 7919 + V));
  std::normal_distribution<double> normal(0.0, 2.0);
  std::vector<S> x(rows * V);
  std::vector<double> xd(rows * V);
  if constexpr (std::is_same_v<S, float16>) {
    std::vector<float16> table(4096);  // (store() is slow: draw from a few thousand values)
    for (auto& h : table) h = store<float16>(normal(rng));
    for (int64_t i = 0; i < rows * V; ++i) x[i] = table[rng() % table.size()];
  } else {
    for (int64_t i = 0; i < rows * V; ++i) x[i] = store<S>(normal(rng));
  }
  for (int64_t i = 0; i < rows * V; ++i) xd[i] = value(x[i]);
  std::vector<int64_t> target(rows);
  for (auto& t : target) t = int64_t(rng() % uint64_t(V));
  auto run = [&](int threads, std::vector<double>& loss, std::vector<S>& grad) {
    set_num_threads(threads);
    CrossEntropyArgs<S> a;
    a.x = x.data();
    a.lx = Layout3{rows, V, 1, V, 1, 1};
    a.target = target.data();
    a.loss = loss.data();
    a.grad = grad.data();
    a.lg = a.lx;
    cross_entropy(a);
  };
  std::vector<double> loss1(rows), loss4(rows);
  std::vector<S> grad1(rows * V), grad4(rows * V);
  run(1, loss1, grad1);
  run(4, loss4, grad4);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double want = ce_reference(&xd[r * V], V, target[r]);
    worst = std::fmax(worst, std::fabs(loss1[r] - want) / std::fmax(1.0, std::fabs(want)));
  }
  char what[160];
  std::snprintf(what, sizeof what, "cross_entropy %s (%lld, %lld): loss error %.2e", name,
                (long long)rows, (long long)V, worst);
  check(worst < 1e-5, what);
  std::snprintf(what, sizeof what, "cross_entropy %s (%lld, %lld): 1 and 4 threads equal", name,
                (long long)rows, (long long)V);
  check(loss1 == loss4 && std::memcmp(grad1.data(), grad4.data(), grad1.size() * sizeof(S)) == 0,
        what);
  // gradient of row 0: softmax - onehot (times grad_scale 1)
  double m = -INFINITY, s = 0, gerr = 0;
  for (int64_t j = 0; j < V; ++j) m = std::fmax(m, xd[j]);
  for (int64_t j = 0; j < V; ++j) s += std::exp(xd[j] - m);
  for (int64_t j = 0; j < V; ++j) {
    const double g = std::exp(xd[j] - m) / s - (j == target[0] ? 1.0 : 0.0);
    gerr = std::fmax(gerr, std::fabs(value(grad1[j]) - g));
  }
  std::snprintf(what, sizeof what, "cross_entropy %s (%lld, %lld): gradient error %.2e", name,
                (long long)rows, (long long)V, gerr);
  check(gerr < (std::is_same_v<S, float16> ? 1e-3 : 1e-6), what);
}

}  // namespace

int main() {
  std::printf("isa %s; compiled:", active_isa());
  for (const char* const* p = compiled_isas(); *p; ++p) std::printf(" %s", *p);
  std::printf("; threading %s\n", threading());
  check_every_half();
  for (int64_t V : {3, 10, 100, 5000}) {
    check_cross_entropy<float>("float32", 4096, V);
    check_cross_entropy<float16>("float16", 512, V);
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "passed", g_failures);
  return g_failures ? 1 : 0;
}
