// Softmax family and softmax cross-entropy: logsumexp, softmax, log_softmax, cross_entropy,
// nll_loss.
//
// Every kernel works row by row (a row = the class axis of one sample). A row is read from
// main memory once; the passes after the first (max) re-read it from cache: a 50,257-class
// float32 row is 200 KB and stays in L2. Rows whose class stride is not 1 are first gathered
// into a per-thread buffer, so the arithmetic below always sees a contiguous row.
//
// Accumulation: sums of exp(x - max) and of coefficient-weighted terms are accumulated in
// float64 lanes (float32 exp values are widened before adding), so a float32 loss is rounded
// once, at the end, from a float64 result. Per-row scalars (max, log of the sum, the loss)
// are float64.
#include <omp.h>

#include <cmath>
#include <limits>

#include "kernels.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

template <class T> constexpr T kInf = std::numeric_limits<T>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// Row access: contiguous rows are used in place; strided rows go through a scratch buffer.
// ---------------------------------------------------------------------------------------------
// Scratch rows come from thread_scratch (baseline code), not std::vector: no STL template may be
// instantiated here, or the linker could keep this file's AVX-512 copy for every caller.
enum Slot { kSlotX = 0, kSlotY = 1, kSlotG = 2 };
template <class T> T* scratch_row(Slot slot, int64_t n) {
  return static_cast<T*>(thread_scratch(slot, size_t(n) * sizeof(T)));
}

template <class T> const T* read_row(const T* base, const Layout3& L, int64_t r, Slot slot) {
  const T* p = base + L.offset(r);
  if (L.s1 == 1) return p;
  T* buf = scratch_row<T>(slot, L.n1);
  for (int64_t j = 0; j < L.n1; ++j) buf[j] = p[j * L.s1];
  return buf;
}

// Where to write row r: in place when contiguous, else a scratch row (then scatter_row).
template <class T> T* write_row(T* base, const Layout3& L, int64_t r) {
  if (L.s1 == 1) return base + L.offset(r);
  return scratch_row<T>(kSlotG, L.n1);
}

template <class T> void scatter_row(T* base, const Layout3& L, int64_t r, const T* row) {
  if (L.s1 == 1) return;
  T* p = base + L.offset(r);
  for (int64_t j = 0; j < L.n1; ++j) p[j * L.s1] = row[j];
}

template <class T> void fill_row(T* base, const Layout3& L, int64_t r, T value) {
  T* p = base + L.offset(r);
  for (int64_t j = 0; j < L.n1; ++j) p[j * L.s1] = value;
}

// Load n < width elements, padding the rest of the vector with `pad`.
template <class T> inline vec_t<T> load_partial(const T* p, int64_t n, T pad) {
  T buf[vec_width<T>];
  for (int i = 0; i < vec_width<T>; ++i) buf[i] = i < n ? p[i] : pad;
  return vload(buf);
}
template <class T> inline void store_partial(T* p, int64_t n, vec_t<T> v) {
  T buf[vec_width<T>];
  vstore(buf, v);
  for (int64_t i = 0; i < n; ++i) p[i] = buf[i];
}

// Sum of vectors accumulated in float64 lanes.
template <class T> struct Acc;
template <> struct Acc<float> {
  f64v lo{}, hi{};
  void add(f32v v) {
    f64v l, h;
    widen(v, l, h);
    lo += l;
    hi += h;
  }
  double total() const { return hsum(lo + hi); }
};
template <> struct Acc<double> {
  f64v a{}, b{};
  bool flip = false;
  void add(f64v v) {  // two chains so consecutive adds do not wait on each other
    (flip ? b : a) += v;
    flip = !flip;
  }
  double total() const { return hsum(a + b); }
};

// ---------------------------------------------------------------------------------------------
// Per-class coefficients c_j that multiply the log-probabilities in a loss:
//   kNone      no coefficient term (plain -log p_t)
//   kOne       c_j = 1                        (label smoothing, no class weights)
//   kWeight    c_j = w_j                      (label smoothing with class weights)
//   kProbs     c_j = a*y_j + b                (probability targets, smoothed: a = 1-eps, b = eps/C)
//   kWProbs    c_j = w_j * (a*y_j + b)
// ---------------------------------------------------------------------------------------------
enum class Coef { kNone, kOne, kWeight, kProbs, kWProbs };

template <class T, Coef C> struct CoefRow {
  const T* w = nullptr;
  const T* y = nullptr;
  T a = 1, b = 0;

  vec_t<T> load(int64_t j) const {
    if constexpr (C == Coef::kOne) return vset<T>(1);
    if constexpr (C == Coef::kWeight) return vload(w + j);
    if constexpr (C == Coef::kProbs) return vset<T>(a) * vload(y + j) + b;
    if constexpr (C == Coef::kWProbs) return vload(w + j) * (vset<T>(a) * vload(y + j) + b);
    return vset<T>(0);
  }
  vec_t<T> load_tail(int64_t j, int64_t n) const {  // padded with c = 0
    if constexpr (C == Coef::kOne) return load_partial<T>(ones(), n, 0);
    if constexpr (C == Coef::kWeight) return load_partial<T>(w + j, n, 0);
    if constexpr (C == Coef::kProbs)
      return load_partial<T>(ones(), n, 0) *
             (vset<T>(a) * load_partial<T>(y + j, n, 0) + b);
    if constexpr (C == Coef::kWProbs)
      return load_partial<T>(w + j, n, 0) *
             (vset<T>(a) * load_partial<T>(y + j, n, 0) + b);
    return vset<T>(0);
  }
  double at(int64_t j) const {
    if constexpr (C == Coef::kOne) return 1.0;
    if constexpr (C == Coef::kWeight) return double(w[j]);
    if constexpr (C == Coef::kProbs) return double(a * y[j] + b);
    if constexpr (C == Coef::kWProbs) return double(w[j] * (a * y[j] + b));
    return 0.0;
  }
  static const T* ones() {
    struct Ones {
      T v[vec_width<T>];
      Ones() { for (T& e : v) e = T(1); }
    };
    static const Ones k;
    return k.v;
  }
};

// Row maximum. Comparisons drop NaN, so NaN is tracked separately.
template <class T> T row_max(const T* x, int64_t n, bool& has_nan) {
  using V = vec_t<T>;
  using I = typename Vec<T>::itype;
  constexpr int W = vec_width<T>;
  V m0 = vset<T>(-kInf<T>), m1 = m0;
  I bad{};
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    V a = vload(x + j), b = vload(x + j + W);
    m0 = vmax<T>(m0, a);
    m1 = vmax<T>(m1, b);
    bad |= (a != a) | (b != b);
  }
  for (; j < n; j += W) {
    V a = j + W <= n ? vload(x + j) : load_partial<T>(x + j, n - j, -kInf<T>);
    m0 = vmax<T>(m0, a);
    bad |= (a != a);
  }
  has_nan = false;
  for (int i = 0; i < W; ++i) has_nan |= bad[i] != 0;
  return hmax<T>(vmax<T>(m0, m1));
}

struct RowSums {
  double exp = 0;  // sum_j exp(x_j - m)
  double cd = 0;   // sum_j c_j * (m - x_j), terms with c_j = 0 count as 0 (even if x_j = -inf)
  double c = 0;    // sum_j c_j
};

// Sums over x[begin:end). m is the row maximum (finite).
template <class T, Coef C>
RowSums row_sums(const T* x, int64_t begin, int64_t end, T m, const CoefRow<T, C>& coef) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  Acc<T> se, scd, sc;
  const V vm = vset<T>(m);
  auto step = [&](V xv, V cv) {
    V d = vm - xv;  // >= 0
    se.add(vexp(-d));
    if constexpr (C != Coef::kNone) {
      // c_j = 0 terms (zero target mass, and the padding of a row's tail) count 0 even when
      // x_j = -inf, where c_j * d would be 0 * inf = NaN.
      V cd = cv * d;
      cd = vselect(cv == vset<T>(0), vset<T>(0), cd);
      scd.add(cd);
      sc.add(cv);
    }
  };
  int64_t j = begin;
  for (; j + W <= end; j += W) step(vload(x + j), coef.load(j));
  if (j < end) step(load_partial<T>(x + j, end - j, -kInf<T>), coef.load_tail(j, end - j));
  RowSums s;
  s.exp = se.total();
  if constexpr (C != Coef::kNone) {
    s.cd = scd.total();
    s.c = sc.total();
  }
  return s;
}

// g_j = a * exp(x_j - m) - d * c_j for j in [0, n). x and g may be the same row (in place).
template <class T, Coef C>
void row_grad(const T* x, int64_t n, T m, T a, T d, const CoefRow<T, C>& coef, T* g) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const V vm = vset<T>(m), va = vset<T>(a), vd = vset<T>(d);
  auto value = [&](V xv, V cv) {
    V e = va * vexp(xv - vm);
    if constexpr (C != Coef::kNone) e -= vd * cv;
    return e;
  };
  int64_t j = 0;
  for (; j + W <= n; j += W) vstore(g + j, value(vload(x + j), coef.load(j)));
  if (j < n)
    store_partial<T>(g + j, n - j,
                     value(load_partial<T>(x + j, n - j, -kInf<T>), coef.load_tail(j, n - j)));
}

template <class Fn> void parallel_rows(int64_t rows, int64_t row_len, Fn&& fn) {
  const int nt = threads_for(rows * (row_len > 1 ? row_len : 1), rows);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) fn(r);
  }
}

// ---------------------------------------------------------------------------------------------
// logsumexp: lse = m + log(sum_j exp(x_j - m)), m = max_j x_j. As scipy: a +inf entry gives
// +inf, an all -inf row gives -inf, NaN gives NaN.
// ---------------------------------------------------------------------------------------------
template <class T> void logsumexp_impl(const SoftmaxArgs<T>& a) {
  const int64_t V = a.lx.n1;
  parallel_rows(a.lx.rows(), V, [&](int64_t r) {
    const T* x = read_row(a.x, a.lx, r, kSlotX);
    bool has_nan;
    T m = row_max(x, V, has_nan);
    double out;
    if (has_nan)
      out = kNaN;
    else if (!std::isfinite(m))
      out = double(m);
    else
      out = double(m) + std::log(row_sums<T, Coef::kNone>(x, 0, V, m, {}).exp);
    a.out[r] = T(out);
  });
}

// ---------------------------------------------------------------------------------------------
// softmax:     p_j = exp(x_j - m) / sum_k exp(x_k - m)
// log_softmax: log p_j = (x_j - m) - log(sum_k exp(x_k - m))
// A row with NaN or a non-finite maximum gives NaN (softmax) or x_j - m (log_softmax), as scipy.
// ---------------------------------------------------------------------------------------------
template <class T> void softmax_impl(const SoftmaxArgs<T>& a, bool log) {
  const int64_t V = a.lx.n1;
  parallel_rows(a.lx.rows(), V, [&](int64_t r) {
    const T* x = read_row(a.x, a.lx, r, kSlotX);
    T* out = write_row(a.out, a.lo, r);
    bool has_nan;
    T m = row_max(x, V, has_nan);
    if (has_nan || !std::isfinite(m)) {
      for (int64_t j = 0; j < V; ++j) out[j] = log && !has_nan ? x[j] - m : T(kNaN);
    } else {
      const double sum = row_sums<T, Coef::kNone>(x, 0, V, m, {}).exp;
      if (log) {
        // (x_j - m) - log(sum): subtract the max first so large logits keep their digits.
        const T log_sum = T(std::log(sum));
        for (int64_t j = 0; j < V; ++j) out[j] = (x[j] - m) - log_sum;
      } else {
        row_grad<T, Coef::kNone>(x, V, m, T(1.0 / sum), T(0), {}, out);
      }
    }
    scatter_row(a.out, a.lo, r, out);
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with class-index targets t (PyTorch semantics, eps = label_smoothing, C classes,
// w = class weights or 1, W = sum_c w_c, m = row max, S = sum_j exp(x_j - m)):
//   -log p_c = (m - x_c) + log S
//   loss     = (1 - eps) * w_t * (-log p_t)  +  (eps / C) * sum_c w_c * (-log p_c)
//            = (1 - eps) * w_t * ((m - x_t) + log S)  +  (eps / C) * (sum_c w_c (m - x_c) + W log S)
//   dloss/dx_j = ((1 - eps) w_t + (eps / C) W) * p_j  -  (1 - eps) w_t [j == t]  -  (eps / C) w_j
// S is summed as S' = sum_{j != t} exp(x_j - m) plus exp(x_t - m), so that when the target is the
// row maximum log S = log1p(S') and 1 - p_t = S' / S keep full relative accuracy (a confident
// row's loss of 1e-9 is not rounded to 0).
// ---------------------------------------------------------------------------------------------
template <class T, Coef C> void ce_index_rows(const CrossEntropyArgs<T>& a, double W) {
  const int64_t V = a.lx.n1;
  const double eps = a.label_smoothing, g = a.grad_scale;
  CoefRow<T, C> coef;
  coef.w = a.weight;
  parallel_rows(a.lx.rows(), V, [&](int64_t r) {
    const int64_t t = a.target[r];
    const bool ignored = t == a.ignore_index;
    if (ignored || t < 0 || t >= V) {  // out-of-range targets are rejected before the call
      a.loss[r] = ignored ? 0.0 : kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, ignored ? T(0) : T(kNaN));
      return;
    }
    const T* x = read_row(a.x, a.lx, r, kSlotX);
    bool has_nan;
    const T m = row_max(x, V, has_nan);
    if (has_nan || !std::isfinite(m)) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, T(kNaN));
      return;
    }
    RowSums lo = row_sums<T, C>(x, 0, t, m, coef), hi = row_sums<T, C>(x, t + 1, V, m, coef);
    const double md = m, xt = x[t];
    const double e_t = std::exp(xt - md);
    const double s_excl = lo.exp + hi.exp, sum = s_excl + e_t;
    const double log_sum = xt == md ? std::log1p(s_excl) : std::log(sum);
    const double w_t = a.weight ? double(a.weight[t]) : 1.0;
    double loss = (1.0 - eps) * w_t * ((md - xt) + log_sum);
    double c_t = 0.0;
    if constexpr (C != Coef::kNone) {
      c_t = coef.at(t);
      const double cd_t = c_t == 0.0 ? 0.0 : c_t * (md - xt);
      loss += (eps / double(V)) * (lo.cd + hi.cd + cd_t + W * log_sum);
    }
    a.loss[r] = loss;
    if (!a.grad) return;
    T* gr = write_row(a.grad, a.lg, r);
    const double p_scale = g * ((1.0 - eps) * w_t + (eps / double(V)) * W);
    row_grad<T, C>(x, V, m, T(p_scale / sum), T(g * eps / double(V)), coef, gr);
    // The target entry in closed form: g * (-(1-eps) w_t (1 - p_t) + (eps/C)(W p_t - c_t)).
    gr[t] = T(g * (-(1.0 - eps) * w_t * (s_excl / sum) + (eps / double(V)) * (W * e_t / sum - c_t)));
    scatter_row(a.grad, a.lg, r, gr);
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with probability targets y (PyTorch: smoothed y'_c = (1 - eps) y_c + eps / C,
// c_j = w_j y'_j):
//   loss       = sum_c c_c * (-log p_c) = sum_c c_c (m - x_c) + (sum_c c_c) log S
//   dloss/dx_j = (sum_c c_c) p_j - c_j
// A class with c_j = 0 contributes 0 even if its logit is -inf (0 * log 0 = 0).
// ---------------------------------------------------------------------------------------------
template <class T, Coef C> void ce_probs_rows(const CrossEntropyArgs<T>& a) {
  const int64_t V = a.lx.n1;
  const double eps = a.label_smoothing, g = a.grad_scale;
  parallel_rows(a.lx.rows(), V, [&](int64_t r) {
    const T* x = read_row(a.x, a.lx, r, kSlotX);
    CoefRow<T, C> coef;
    coef.w = a.weight;
    coef.y = read_row(a.probs, a.lp, r, kSlotY);
    coef.a = T(1.0 - eps);
    coef.b = T(eps / double(V));
    bool has_nan;
    const T m = row_max(x, V, has_nan);
    if (has_nan || !std::isfinite(m)) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, T(kNaN));
      return;
    }
    const RowSums rs = row_sums<T, C>(x, 0, V, m, coef);
    const double log_sum = std::log(rs.exp);
    a.loss[r] = rs.cd + rs.c * log_sum;
    if (!a.grad) return;
    T* gr = write_row(a.grad, a.lg, r);
    row_grad<T, C>(x, V, m, T(g * rs.c / rs.exp), T(g), coef, gr);
    scatter_row(a.grad, a.lg, r, gr);
  });
}

template <class T> void cross_entropy_impl(const CrossEntropyArgs<T>& a) {
  const bool smooth = a.label_smoothing > 0.0;
  if (a.probs) {
    if (a.weight)
      ce_probs_rows<T, Coef::kWProbs>(a);
    else
      ce_probs_rows<T, Coef::kProbs>(a);
    return;
  }
  double W = double(a.lx.n1);
  if (a.weight) {
    W = 0.0;
    for (int64_t j = 0; j < a.lx.n1; ++j) W += double(a.weight[j]);
  }
  if (!smooth)
    ce_index_rows<T, Coef::kNone>(a, W);
  else if (a.weight)
    ce_index_rows<T, Coef::kWeight>(a, W);
  else
    ce_index_rows<T, Coef::kOne>(a, W);
}

// ---------------------------------------------------------------------------------------------
// nll_loss: loss = -w_t * x_t; dloss/dx_j = -w_t [j == t].
// ---------------------------------------------------------------------------------------------
template <class T> void nll_loss_impl(const NllArgs<T>& a) {
  const int64_t V = a.lx.n1;
  parallel_rows(a.lx.rows(), a.grad ? V : 1, [&](int64_t r) {
    const int64_t t = a.target[r];
    const bool valid = t != a.ignore_index && t >= 0 && t < V;
    const double w_t = valid ? (a.weight ? double(a.weight[t]) : 1.0) : 0.0;
    a.loss[r] = valid ? -w_t * double(a.x[a.lx.offset(r) + t * a.lx.s1])
                      : (t == a.ignore_index ? 0.0 : kNaN);
    if (!a.grad) return;
    fill_row(a.grad, a.lg, r, T(0));
    if (valid) a.grad[a.lg.offset(r) + t * a.lg.s1] = T(-a.grad_scale * w_t);
  });
}

}  // namespace

#define FASTLOSS_STR2(x) #x
#define FASTLOSS_STR(x) FASTLOSS_STR2(x)
extern const KernelTable table;
const KernelTable table = {
    FASTLOSS_STR(FASTLOSS_ISA_NS), &logsumexp_impl<float>, &logsumexp_impl<double>,
    &softmax_impl<float>,          &softmax_impl<double>,  &cross_entropy_impl<float>,
    &cross_entropy_impl<double>,   &nll_loss_impl<float>,  &nll_loss_impl<double>,
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
