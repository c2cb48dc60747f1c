// Row losses of issue 16 (rowloss.hpp): multi-class hinge / perceptron, sparsemax and its loss,
// the generalized Jensen-Shannon divergence of logits, the listwise ranking softmax loss.
//
// Row kernels in the manner of distributions.cpp: a row (the class axis of one sample) is read
// from memory once (rows.hpp: in place when contiguous, through per-thread tiles when strided),
// widened to the compute type where the storage is 16-bit, and every later pass runs over it
// while it is in cache; loss and gradient come out of the same call; sums are accumulated in
// float64; rows are independent, so results do not depend on the number of threads.
#include "rowloss.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels.hpp"
#include "lanes.hpp"
#include "rows.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

template <class T>
constexpr T kInf = std::numeric_limits<T>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Scratch slots (rows.hpp): read tiles of up to three inputs, the write tile of the gradient,
// and per-thread row buffers (widened inputs, kept exps, gradient values, sparsemax candidates).
enum Slot {
  kSlotA = 0,
  kSlotB = 1,
  kSlotG = kWriteSlot,
  kSlotC = 3,    // third input's read tile (ranking mask)
  kSlotWA = 4,   // first input widened / masked
  kSlotWB = 5,   // second input widened / masked
  kSlotE1 = 6,   // kept exps / candidates
  kSlotE2 = 7,   // kept exps
  kSlotOut = 8,  // gradient values in the compute type before narrowing
};
static_assert(kSlotOut < kScratchSlots, "more scratch slots than threads.cpp provides");

// ---------------------------------------------------------------------------------------------
// Row helpers.
// ---------------------------------------------------------------------------------------------
// The row in the compute type: in place for float/double storage, else widened into `slot`.
template <class S, class T = compute_t<S>>
const T* compute_row(const S* p, int64_t n, int slot) {
  if constexpr (std::is_same_v<S, T>) {
    (void)slot;
    (void)n;
    return p;
  } else {
    constexpr int W = vec_width<T>;
    T* b = scratch_row<T>(slot, n);
    int64_t j = 0;
    for (; j + W <= n; j += W) vstore(b + j, vload_as(p + j));
    for (; j < n; ++j) b[j] = to_compute(p[j]);
    return b;
  }
}

// Store n compute-type values into a storage row (rounded for 16-bit storage).
template <class S, class T = compute_t<S>>
void store_row(S* dst, const T* src, int64_t n) {
  if constexpr (std::is_same_v<S, T>) {
    if (dst != src) std::memcpy(dst, src, size_t(n) * sizeof(T));
  } else {
    constexpr int W = vec_width<T>;
    int64_t j = 0;
    for (; j + W <= n; j += W) vstore_as(dst + j, vload(src + j));
    for (; j < n; ++j) dst[j] = from_compute<S>(src[j]);
  }
}

// Where gradient values of the compute type go: straight into the storage row when the types
// agree, else a scratch row that store_row narrows.
template <class S, class T = compute_t<S>>
T* grad_values(S* row, int64_t n) {
  if constexpr (std::is_same_v<S, T>) {
    (void)n;
    return row;
  } else {
    (void)row;
    return scratch_row<T>(kSlotOut, n);
  }
}

// Maximum of a row, and whether it holds a NaN (comparisons drop NaN, so it is looked for).
template <class T>
T row_max(const T* x, int64_t n, bool& nan) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V m0 = vset<T>(-kInf<T>), m1 = m0, bad = vset<T>(0);
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const V a = vload(x + j), b = vload(x + j + W);
    m0 = vmax<T>(m0, a);
    m1 = vmax<T>(m1, b);
    bad = vselect(a != a, vset<T>(1), bad);
    bad = vselect(b != b, vset<T>(1), bad);
  }
  for (; j < n; j += W) {
    const V a = j + W <= n ? vload(x + j) : load_partial(x + j, n - j, -kInf<T>);
    m0 = vmax<T>(m0, a);
    bad = vselect(a != a, vset<T>(1), bad);
  }
  // (a NaN in m0/m1 can only come from a NaN element, which `bad` counts)
  bool any = false;
  for (int k = 0; k < W; ++k) any |= bad[k] != T(0);
  nan = any;
  return hmax<T>(vmax<T>(m0, m1));
}

// sum_j exp((x_j - ref) inv) for ref >= max_j x_j (every argument <= 0), in float64 lanes;
// keep: also stores each exp at keep[j] (nullptr: not kept).
template <class T>
double sum_exp(const T* x, int64_t n, T ref, T inv, T* keep) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  Acc<T> acc;
  const V r = vset<T>(ref), k = vset<T>(inv);
  int64_t j = 0;
  while (j < n) {
    V part = vset<T>(0);  // float partials of at most 4 terms in [0, 1]
    for (int u = 0; u < 4 && j < n; ++u, j += W) {
      const int64_t cnt = n - j < W ? n - j : W;
      const V v = cnt == W ? vload(x + j) : load_partial(x + j, cnt, -kInf<T>);
      const V e = vexp_capped((v - r) * k);  // (padding -inf: 0)
      part += e;
      if (keep) {
        if (cnt == W)
          vstore(keep + j, e);
        else
          store_partial(keep + j, cnt, e);
      }
    }
    acc.add_partial(part);
  }
  return acc.total();
}

// How many x_j equal m.
template <class T>
int64_t count_equal(const T* x, int64_t n, T m) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const V vm = vset<T>(m), one = vset<T>(1), zero = vset<T>(0);
  V c = zero;  // (exact: counts below 2^24 per lane for float)
  int64_t j = 0, total = 0;
  for (; j + W <= n; j += W) {
    c += vselect(vload(x + j) == vm, one, zero);
    if (((j / W) & 0xFFFFF) == 0xFFFFF) {  // flush before a float lane could round
      for (int k = 0; k < W; ++k) total += int64_t(c[k]);
      c = zero;
    }
  }
  for (int k = 0; k < W; ++k) total += int64_t(c[k]);
  for (; j < n; ++j) total += x[j] == m;
  return total;
}

// g_j = v where x_j == m, else 0.
template <class T>
void fill_equal(const T* x, int64_t n, T m, T v, T* g) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const V vm = vset<T>(m), vv = vset<T>(v), zero = vset<T>(0);
  int64_t j = 0;
  for (; j + W <= n; j += W) vstore(g + j, vselect(vload(x + j) == vm, vv, zero));
  for (; j < n; ++j) g[j] = x[j] == m ? v : T(0);
}

// ---------------------------------------------------------------------------------------------
// Multi-class hinge (Crammer-Singer) and perceptron (margin 0). Per row s, target y, C classes:
//   m = max_{j != y} s_j (-inf for C = 1),  z = (m - s_y) + margin  (in float64),
//   loss = max(0, z)
//   optax writes it max_j (s_j + margin [j != y]) - s_y; its jax.grad shares the maximum's
//   unit gradient among all maximisers K of (s_j + margin [j != y]):
//     d loss / d s_k = [k in K] / |K| - [k = y],
//   K = {j != y : s_j = m} when z > 0, that set and y when z = 0, {y} when z < 0 (gradient 0).
// A NaN in the row gives NaN (loss and gradient).
// ---------------------------------------------------------------------------------------------
// The same for rows of at most kClassMarginNarrowMax classes, with the rows in SIMD lanes
// (lanes.hpp): per lane the target's score, the rivals' maximum m and how many reach it, then
// z and the gradient's shares once per block.
constexpr int64_t kClassMarginNarrowMax = 64;

template <class S>
void class_margin_narrow(const ClassMarginArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t n = a.lx.n1;
  parallel_row_blocks(a.lx.rows(), n, W, [&](int64_t r0, int nb) {
    alignas(64) T xb[kClassMarginNarrowMax * W];
    int64_t off[W] = {};
    prefetch_block(a.x, a.lx, r0, W);  // (as the cross-entropy lane kernel; see the changelog)
    if (a.lx.n2 == 1) prefetch_bytes(a.target + r0 + 4 * W, W * int64_t(sizeof(int64_t)));
    if (a.grad) prefetch_block(a.grad, a.lg, r0, W);
    load_block(a.x, a.lx, r0, nb, xb, off);
    // targets as lanes (-1, and a flag, for an index outside [0, n): rejected before the call,
    // a NaN row if one slips through; a short block padded with class 0, never written)
    alignas(64) int64_t tpad[W];
    const int64_t* tp = a.target + r0;
    if (nb < W) {
      for (int b = 0; b < W; ++b) tpad[b] = b < nb ? a.target[r0 + b] : 0;
      tp = tpad;
    }
    const TargetLanes<T> tg = target_lanes<T>(tp, n, -1);  // (-1 "ignored" or not: bad)
    const V tv = tg.t, zero = vset<T>(0), one = vset<T>(1);
    V xt = zero, m = vset<T>(-kInf<T>), nan = zero;
    for (int64_t j = 0; j < n; ++j) {
      const V v = vload(xb + j * W);
      const auto is_y = tv == vset<T>(T(j));
      xt = vselect(is_y, v, xt);
      nan = vselect(v != v, one, nan);
      m = vselect((v > m) & (tv != vset<T>(T(j))), v, m);
    }
    V cnt = zero;  // rivals j != y with x_j = m
    if (a.grad)
      for (int64_t j = 0; j < n; ++j)
        cnt += vselect((vload(xb + j * W) == m) & (tv != vset<T>(T(j))), one, zero);
    // per float64 lane: z = (m - s_y) + margin, the loss max(z, 0) (NaN for a bad row), and
    // the gradient's shares (the row kernel's operations)
    constexpr int K = TargetLanes<T>::K, WD = vec_width<double>;
    f64v md[K], xd[K], nd[K], cd[K], share64[K], gy64[K];
    lanes_f64<T>(m, md), lanes_f64<T>(xt, xd), lanes_f64<T>(nan, nd), lanes_f64<T>(cnt, cd);
    alignas(64) double lbuf[W], nanbuf[W];
    double* lout = nb == W ? a.loss + r0 : lbuf;
    const f64v f0 = vset<double>(0.0), f1 = vset<double>(1.0), gs = vset<double>(a.grad_scale);
    for (int k = 0; k < K; ++k) {
      const f64v z = (md[k] - xd[k]) + a.margin;
      const auto is_nan = (tg.ign64[k] + tg.inv64[k] != f0) | (nd[k] != f0) | (z != z);
      vstore(lout + k * WD, vselect(is_nan, f0 + kNaN, vselect(z > f0, z, f0)));
      if (!a.grad) continue;
      vstore(nanbuf + k * WD, vselect(is_nan, f1, f0));
      const auto with_y = z <= f0, with_others = (z >= f0) & (cd[k] > f0);
      const f64v kk = vselect(with_others, cd[k], f0) + vselect(with_y, f1, f0);
      const f64v ks = vselect(kk == f0, f1, kk);  // (no share at all: no division)
      share64[k] = vselect(with_others, gs / ks, f0);
      gy64[k] = gs * (vselect(with_y, f1 / ks, f0) - f1);
    }
    if (nb < W) std::memcpy(a.loss + r0, lbuf, sizeof(double) * size_t(nb));
    bool fill_row[W];
    T fill[W];
    if (a.grad)
      for (int b = 0; b < W; ++b) {
        fill_row[b] = nanbuf[b] != 0.0 && b < nb;
        fill[b] = T(kNaN);
      }
    if (!a.grad) return;
    const V vs = lanes_from_f64<T>(share64), vgy = lanes_from_f64<T>(gy64);
    for (int64_t j = 0; j < n; ++j) {
      const V v = vload(xb + j * W);
      const auto is_y = tv == vset<T>(T(j));
      vstore(xb + j * W, vselect(is_y, vgy, vselect(v == m, vs, zero)));
    }
    row_offsets(a.lg, r0, nb, off);
    scatter_lanes(a.grad, a.lg, off, nb, xb, fill_row, fill);
  });
}

template <class S>
void class_margin_impl(const ClassMarginArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t n = a.lx.n1;
  if (n <= kClassMarginNarrowMax) return class_margin_narrow(a);
  parallel_rows<S>(a.lx.rows(), n, [&](int64_t r) {
    const int64_t y = a.target[r];
    if (y < 0 || y >= n) {  // rejected before the call; a NaN row if one slips through
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    const T* x = compute_row<S>(read_row(a.x, a.lx, r, kSlotA), n, kSlotWA);
    // m = max over j != y (two vector passes around y); NaN anywhere makes the row NaN
    bool nan_lo = false, nan_hi = false;
    const T m_lo = row_max(x, y, nan_lo), m_hi = row_max(x + y + 1, n - y - 1, nan_hi);
    const T m = m_lo > m_hi ? m_lo : m_hi;
    const bool nan = nan_lo || nan_hi || x[y] != x[y];
    const double z = (double(m) - double(x[y])) + a.margin;
    if (nan || z != z) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    a.loss[r] = z > 0 ? z : 0.0;
    if (!a.grad) return;
    S* gs = write_row(a.grad, a.lg, r, kSlotG);
    T* g = grad_values<S>(gs, n);
    const bool with_y = z <= 0;  // y is a maximiser (z = 0: tied with the others)
    // (the rivals that reach m: only counted when they share the gradient)
    const int64_t count = z >= 0 ? count_equal(x, n, m) - (x[y] == m ? 1 : 0) : 0;
    const bool with_others = count > 0;
    const int64_t k = (with_others ? count : 0) + (with_y ? 1 : 0);
    // g_j = share where x_j = m (j != y), else 0; g_y set after
    fill_equal(x, n, m, with_others ? T(a.grad_scale / double(k)) : T(0), g);
    g[y] = T(a.grad_scale * ((with_y ? 1.0 / double(k) : 0.0) - 1.0));
    store_row(gs, g, n);
    scatter_row(a.grad, a.lg, r, gs);
  });
}

// ---------------------------------------------------------------------------------------------
// sparsemax. Per row x with maximum M, d_j = x_j - M (<= 0, in float64):
//   sparsemax(x)_j = max(0, d_j - tau),  tau the root of f(tau) = sum_j max(0, d_j - tau) - 1
//   (tau in [-1, 0): the maximum alone gives f(-1) >= 0).
// Sort-free, by Michelot's iteration: from tau_0 = -1 <= tau*, with S_k = {j : d_j > tau_k},
//   tau_{k+1} = (sum_{S_k} d_j - 1) / |S_k|
// is Newton's method on the convex, piecewise-linear, decreasing f: tau_k rises monotonically
// to tau* and S_k shrinks, reaching it exactly when S_{k+1} = S_k (at most |S_0| steps, a few in
// practice). Only the candidates d_j > -1 are kept (compacted in place each step), so a step
// costs the size of the current support, not the row. A row with NaN or +inf, or whose
// entries are all -inf, gives NaN.
// ---------------------------------------------------------------------------------------------
// A value of T at least two ulps below v (the rounding of a float64 threshold to T is then
// on the safe side): x_j <= safely_below(T(t)) implies x_j < t.
template <class T>
T safely_below(T v) {
  return std::nextafter(std::nextafter(v, -kInf<T>), -kInf<T>);
}

// fn(j) for every j of a block of 4 vectors that has an element above lo; every other
// element is <= lo (or NaN: the callers have rejected NaN rows).
template <class T, class Fn>
void for_blocks_above(const T* x, int64_t n, T lo, Fn&& fn) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, B = 4 * W;
  int64_t j = 0;
  for (; j + B <= n; j += B) {
    const V m = vmax<T>(vmax<T>(vload(x + j), vload(x + j + W)),
                        vmax<T>(vload(x + j + 2 * W), vload(x + j + 3 * W)));
    if (hmax<T>(m) > lo)
      for (int64_t i = j; i < j + B; ++i) fn(i);
  }
  for (; j < n; ++j) fn(j);
}

// p_j = max(0, (x_j - M) - tau), rounded to T, times scale into out[j]; blocks entirely below
// the threshold M + tau are written as 0 without the float64 arithmetic (out may be x itself).
// Also sum_j p_j d_j and sum_j p_j^2 (d_j = x_j - M; of the rounded p_j) over the support.
template <class T>
void sparsemax_out(const T* x, int64_t n, double max, double tau, T scale, T* out, double& pd,
                   double& pp) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, B = 4 * W;
  const T lo = safely_below(T(max + tau));
  pd = pp = 0;
  auto one = [&](int64_t j) {
    const double d = double(x[j]) - max;
    const double p0 = d - tau;
    const T p = p0 > 0 ? T(p0) : T(0);
    if (p > 0) {
      pd += double(p) * d;
      pp += double(p) * double(p);
    }
    out[j] = scale * p;
  };
  int64_t j = 0;
  for (; j + B <= n; j += B) {
    const V v0 = vload(x + j), v1 = vload(x + j + W), v2 = vload(x + j + 2 * W),
            v3 = vload(x + j + 3 * W);
    if (hmax<T>(vmax<T>(vmax<T>(v0, v1), vmax<T>(v2, v3))) > lo) {
      for (int64_t i = j; i < j + B; ++i) one(i);
    } else {
      const V zero = vset<T>(0);
      for (int k = 0; k < 4; ++k) vstore(out + j + k * W, zero);
    }
  }
  for (; j < n; ++j) one(j);
}

struct SparsemaxRow {
  double max = 0, tau = 0;
  bool ok = false;
};

template <class T>
SparsemaxRow sparsemax_threshold(const T* x, int64_t n) {
  SparsemaxRow s;
  bool nan = false;
  const T m = row_max(x, n, nan);
  if (nan || m == kInf<T> || m == -kInf<T>) return s;
  double* c = scratch_row<double>(kSlotE1, n);
  int64_t k = 0;
  double sum = 0;
  // candidates d_j = x_j - M > -1 (float64); blocks whose maximum is at most a value safely
  // below M - 1 in the compute type hold none and are skipped without the float64 arithmetic
  const T lo = safely_below(T(double(m) - 1.0));
  for_blocks_above(x, n, lo, [&](int64_t j) {
    const double d = double(x[j]) - double(m);
    if (d > -1.0) {
      c[k++] = d;
      sum += d;
    }
  });
  double tau = (sum - 1.0) / double(k);  // (k >= 1: the maximum itself, d = 0)
  for (;;) {
    int64_t k2 = 0;
    double s2 = 0;
    for (int64_t i = 0; i < k; ++i)
      if (c[i] > tau) {
        s2 += c[i];
        c[k2++] = c[i];
      }
    if (k2 == k) break;  // support unchanged: tau is exact for it
    k = k2;
    sum = s2;
    tau = (sum - 1.0) / double(k);
  }
  s.max = double(m);
  s.tau = tau;
  s.ok = true;
  return s;
}

template <class S>
void sparsemax_impl(const SparsemaxArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t n = a.lx.n1;
  parallel_rows<S>(a.lx.rows(), n, [&](int64_t r) {
    const T* x = compute_row<S>(read_row(a.x, a.lx, r, kSlotA), n, kSlotWA);
    const SparsemaxRow s = sparsemax_threshold(x, n);
    if (!s.ok) {
      fill_row(a.out, a.lo, r, from_compute<S>(T(kNaN)));
      return;
    }
    S* os = write_row(a.out, a.lo, r, kSlotG);
    T* o = grad_values<S>(os, n);
    // p_j = max(0, (x_j - M) - tau)
    double pd, pp;
    sparsemax_out(x, n, s.max, s.tau, T(1), o, pd, pp);
    store_row(os, o, n);
    scatter_row(a.out, a.lo, r, os);
  });
}

// ---------------------------------------------------------------------------------------------
// sparsemax_loss. Per row z, p = sparsemax(z), d_j = z_j - M, target q (one-hot e_y):
//   loss = sum_j (p_j - q_j) z_j + 0.5 (sum_j q_j^2 - sum_j p_j^2)
//        = sum_{p_j > 0} p_j d_j - sum_{q_j != 0} q_j d_j + 0.5 (sum q^2 - sum p^2)
//   (the shift by M is exact for rows with sum_j q_j = 1, and keeps huge logits out),
//   class index y:  loss = sum_{p_j > 0} p_j d_j - d_y + 0.5 (1 - sum p^2)   (optax's form);
//   d loss / d z = p - q.
// A target of probability 0 counts 0 even where z_j = -inf; a -inf logit where q_j > 0 gives
// +inf (the gradient stays p - q).
// ---------------------------------------------------------------------------------------------
template <class S>
void sparsemax_loss_impl(const SparsemaxLossArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t n = a.lx.n1;
  parallel_rows<S>(a.lx.rows(), n, [&](int64_t r) {
    const int64_t y = a.target ? a.target[r] : 0;
    const T* x = compute_row<S>(read_row(a.x, a.lx, r, kSlotA), n, kSlotWA);
    const T* q = a.probs ? read_row(a.probs, a.lp, r, kSlotB) : nullptr;
    const SparsemaxRow s = sparsemax_threshold(x, n);
    bool bad = !s.ok || (a.target && (y < 0 || y >= n));
    if (q)
      for (int64_t j = 0; j < n; ++j) bad |= q[j] != q[j];
    if (bad) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    S* gs = a.grad ? write_row(a.grad, a.lg, r, kSlotG) : nullptr;
    // g = gscale p (then - gscale q); without a gradient, p goes to a scratch row
    T* g = gs ? grad_values<S>(gs, n) : scratch_row<T>(kSlotOut, n);
    const T gscale = gs ? T(a.grad_scale) : T(1);
    // the target's terms first: g may be x itself (in place), overwritten by sparsemax_out
    double pd, pp, qd = 0, qq = 0;
    if (q) {
      for (int64_t j = 0; j < n; ++j) {
        if (q[j] == T(0)) continue;  // (0 even where x_j = -inf)
        qd += double(q[j]) * (double(x[j]) - s.max);
        qq += double(q[j]) * double(q[j]);
      }
    } else {
      qd = double(x[y]) - s.max;
      qq = 1;
    }
    sparsemax_out(x, n, s.max, s.tau, gscale, g, pd, pp);
    if (q) {
      for (int64_t j = 0; j < n; ++j) g[j] -= gscale * q[j];
    } else {
      g[y] -= gscale;
    }
    a.loss[r] = pd - qd + 0.5 * (qq - pp);
    if (!gs) return;
    store_row(gs, g, n);
    scatter_row(a.grad, a.lg, r, gs);
  });
}

// ---------------------------------------------------------------------------------------------
// jensen_shannon (Liger-Kernel's generalized JSD of logits). Per row, student s, teacher t,
// temperature T, with a'_j = (s_j - M_s) / T, b'_j = (t_j - M_t) / T (row maxima M),
// S_s = sum_j exp(a'_j), S_t likewise:
//   delta_j = log Q_j - log P_j = ((s_j - M_s) - (t_j - M_t)) / T + (log S_t - log S_s)
//   beta = 0: loss = -sum_j P_j delta_j,  d loss / d s_k = (Q_k - P_k) / T
//   beta = 1: loss = sum_j Q_j delta_j,   d loss / d s_k = Q_k (delta_k - loss) / T
//   else, with A_j = log P_j - log M_j, B_j = log Q_j - log M_j = delta_j + A_j
//   (from delta by expm1 / log1p, see jsd_terms; M itself is never formed):
//             loss = sum_j beta P_j A_j + (1 - beta) Q_j B_j,
//             with w_j = (1 - beta) Q_j B_j:
//             d loss / d s_k = (w_k - Q_k sum_j w_j) / T
//   (d loss / d Q_j = (1 - beta)(log Q_j - log M_j), through the softmax's Jacobian).
// A term whose weight P_j (or Q_j) is 0 counts 0, whatever the logs. The rows are read from
// memory once: the maxima pass brings them into cache, the exp pass keeps exp(a'), exp(b')
// (in cache), and the term pass and the gradient pass read those back. A row with NaN or
// +inf, or whose student or teacher logits are all -inf, gives NaN.
// ---------------------------------------------------------------------------------------------
// The general case's term beta P A + (1 - beta) Q B, and w = (1 - beta) Q B, from delta:
// A = log P - log M, B = log Q - log M = delta + A, with M = beta P + (1 - beta) Q:
//   delta <= 0: A = -log1p((1 - beta) expm1(delta)),  B = delta + A
//   delta >  0: B = -log1p(beta expm1(-delta)),        A = B - delta
// (expm1 and log1p keep the accuracy of nearly equal P and Q; arguments > -1). vb, vb1: beta
// and 1 - beta.
template <class T, class V = vec_t<T>>
FL_ALWAYS_INLINE V jsd_mixed_term(V p, V q, V delta, V vb, V vb1, V& wv) {
  const V zero = vset<T>(0), one = vset<T>(1), small = vset<T>(T(0.34657359027997265));
  const auto neg = delta <= zero;
  const V x = vselect(neg, delta, zero - delta);  // -|delta| (NaN stays NaN)
  const V em1 = vselect(zero - x < small, expm1_poly(x), vexp_capped(x) - one);
  const V l = zero - vlog1p(vselect(neg, vb1, vb) * em1);
  const V A = vselect(neg, l, l - delta), B = vselect(neg, delta + l, l);
  const V tp = vselect(p == zero, zero, p * A);
  const V tq = vselect(q == zero, zero, q * B);
  wv = vb1 * tq;
  return vb * tp + wv;
}

template <int kMode, class T>  // kMode 0: beta = 0, 1: beta = 1, 2: general
double jsd_terms(const T* s, const T* t, int64_t n, T ms, T mt, T inv, double log_ss,
                 double log_st, const T* es, const T* et, double ss, double st, double beta,
                 T* w, double& wsum) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  Acc<T> acc, accw;
  const V vms = vset<T>(ms), vmt = vset<T>(mt), vinv = vset<T>(inv), zero = vset<T>(0);
  const V rss = vset<T>(T(1.0 / ss)), rst = vset<T>(T(1.0 / st));
  // delta_j = log Q_j - log P_j = ((s_j - M_s) - (t_j - M_t)) / T + (log S_t - log S_s): the
  // logits' differences first, the constant once in float64 (equal rows give exactly 0)
  const V vc = vset<T>(T(log_st - log_ss));
  const V vb = vset<T>(T(beta)), vb1 = vset<T>(T(1.0 - beta));
  for (int64_t j = 0; j < n; j += W) {
    const int64_t cnt = n - j < W ? n - j : W;
    const bool full = cnt == W;
    // (padding: s = t = -inf, so P = Q = 0: a 0 term)
    const V sv = full ? vload(s + j) : load_partial(s + j, cnt, -kInf<T>);
    const V tv = full ? vload(t + j) : load_partial(t + j, cnt, -kInf<T>);
    const V q = (full ? vload(es + j) : load_partial(es + j, cnt, T(0))) * rss;
    const V p = (full ? vload(et + j) : load_partial(et + j, cnt, T(0))) * rst;
    const V delta = ((sv - vms) - (tv - vmt)) * vinv + vc;
    V term, wv = zero;
    if constexpr (kMode == 0) {
      term = vselect(p == zero, zero, zero - p * delta);  // P (log P - log Q)
    } else if constexpr (kMode == 1) {
      term = vselect(q == zero, zero, q * delta);  // Q (log Q - log P)
      wv = term;
    } else {
      term = jsd_mixed_term<T>(p, q, delta, vb, vb1, wv);
    }
    acc.add_partial(term);
    if constexpr (kMode != 0) {
      accw.add_partial(wv);
      if (w) {
        if (full)
          vstore(w + j, wv);
        else
          store_partial(w + j, cnt, wv);
      }
    }
  }
  wsum = accw.total();
  return acc.total();
}

// The same for rows of at most kJsdNarrowMax classes, with the rows in SIMD lanes (lanes.hpp,
// as kl_div_with_logits_narrow): the maxima, sums and logs per lane (the logs in float64
// lanes), then jsd_terms' terms and gradient per class, operation for operation, with the
// sums taken per class into float64 lanes. AVX-512, two threads, 50M float32 logits, the
// loss against the row kernel: 0.22 the time at 10 classes, 0.51 at 32, 0.74 at 64, 0.90 at
// 100, 1.03 at 128 (with the gradient 0.23, 0.58, 0.86, 0.96, 1.07); a (32, 10) call with the
// gradient 1.6 us (4.4).
constexpr int64_t kJsdNarrowMax = 100;

template <class S>
void jensen_shannon_narrow(const JsdArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, K = W / vec_width<double>;
  const int64_t n = a.ls.n1;
  const double tau = a.temperature, beta = a.beta;
  const int mode = beta == 0.0 ? 0 : beta == 1.0 ? 1 : 2;
  const V vinv = vset<T>(T(1.0 / tau)), zero = vset<T>(0);
  const V vb = vset<T>(T(beta)), vb1 = vset<T>(T(1.0 - beta));
  const bool grad = a.grad != nullptr;
  parallel_row_blocks(a.ls.rows(), 2 * n * kExpWork, W, [&](int64_t r0, int nb) {
    // sb, tb: the logits (sb then w_j and the gradient); es, et: their exps
    alignas(64) T sb[kJsdNarrowMax * W], tb[kJsdNarrowMax * W];
    alignas(64) T es[kJsdNarrowMax * W], et[kJsdNarrowMax * W];
    int64_t off[W] = {};
    prefetch_block(a.student, a.ls, r0, W, 1);  // (one block ahead, as kl_div_with_logits)
    prefetch_block(a.teacher, a.lt, r0, W, 1);
    if (grad) prefetch_block(a.grad, a.lg, r0, W, 1);
    load_block(a.student, a.ls, r0, nb, sb, off);
    load_block(a.teacher, a.lt, r0, nb, tb, off);
    const LaneMax<T> ms = lane_max(sb, n, false), mt = lane_max(tb, n, false);
    LaneSum<T> sum_s, sum_t;
    for (int64_t j = 0; j < n; ++j) {
      const V e_s = vexp_capped((vload(sb + j * W) - ms.m) * vinv);
      const V e_t = vexp_capped((vload(tb + j * W) - mt.m) * vinv);
      vstore(es + j * W, e_s);
      vstore(et + j * W, e_t);
      sum_s.add(e_s);
      sum_t.add(e_t);
    }
    // per lane: 1 / S_s, 1 / S_t, log S_t - log S_s (float64, then the compute type); a row
    // with NaN or +inf, or all -inf, in either input is bad (NaN)
    f64v ms64[K], mt64[K], ns64[K], nt64[K], rss64[K], rst64[K], c64[K], bad64[K];
    lanes_f64<T>(ms.m, ms64), lanes_f64<T>(mt.m, mt64);
    lanes_f64<T>(ms.nan_seen, ns64), lanes_f64<T>(mt.nan_seen, nt64);
    for (int k = 0; k < K; ++k) {
      const auto bad = (ns64[k] != ns64[k]) | (nt64[k] != nt64[k]) |
                       (ms64[k] - ms64[k] != ms64[k] - ms64[k]) |
                       (mt64[k] - mt64[k] != mt64[k] - mt64[k]);
      bad64[k] = vselect(bad, f64v{} + 1.0, f64v{});
      rss64[k] = 1.0 / sum_s.v[k];
      rst64[k] = 1.0 / sum_t.v[k];
      c64[k] = vlog(sum_t.v[k]) - vlog(sum_s.v[k]);
    }
    const V rss = lanes_from_f64<T>(rss64), rst = lanes_from_f64<T>(rst64);
    const V vc = lanes_from_f64<T>(c64);
    LaneSum<T> acc, accw;
    for (int64_t j = 0; j < n; ++j) {
      const V q = vload(es + j * W) * rss, p = vload(et + j * W) * rst;
      const V delta = ((vload(sb + j * W) - ms.m) - (vload(tb + j * W) - mt.m)) * vinv + vc;
      V term, wv = zero;
      if (mode == 0) {
        term = vselect(p == zero, zero, zero - p * delta);  // P (log P - log Q)
      } else if (mode == 1) {
        term = vselect(q == zero, zero, q * delta);  // Q (log Q - log P)
        wv = term;
      } else {
        term = jsd_mixed_term<T>(p, q, delta, vb, vb1, wv);
      }
      acc.add(term);
      if (mode != 0) {
        accw.add(wv);
        if (grad) vstore(sb + j * W, wv);
      }
    }
    alignas(64) double out[W];
    for (int k = 0; k < K; ++k)
      vstore(out + k * vec_width<double>,
             vselect(bad64[k] != 0.0, f64v{} + kNaN, acc.v[k]));
    for (int b = 0; b < nb; ++b) a.loss[r0 + b] = out[b];
    if (!grad) return;
    const V vcg = vset<T>(T(a.grad_scale / tau));
    const V vw = mode == 0 ? zero : lanes_from_f64<T>(accw.v);  // (beta = 1: the loss)
    for (int64_t j = 0; j < n; ++j) {
      const V q = vload(es + j * W) * rss;
      const V gv = mode == 0 ? vcg * (q - vload(et + j * W) * rst)  // (Q - P) / T
                             : vcg * (vload(sb + j * W) - q * vw);  // (w - Q sum w) / T
      vstore(sb + j * W, gv);
    }
    bool fill_row[W];
    T fill[W];
    for (int b = 0; b < W; ++b) {
      fill_row[b] = out[b] != out[b] && b < nb;
      fill[b] = T(kNaN);
    }
    row_offsets(a.lg, r0, nb, off);
    scatter_lanes(a.grad, a.lg, off, nb, sb, fill_row, fill);
  });
}

template <class S>
void jensen_shannon_impl(const JsdArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t n = a.ls.n1;
  if (n <= kJsdNarrowMax) return jensen_shannon_narrow(a);
  const double tau = a.temperature, beta = a.beta;
  const T inv = T(1.0 / tau);
  const int mode = beta == 0.0 ? 0 : beta == 1.0 ? 1 : 2;
  parallel_rows<S>(a.ls.rows(), 2 * n * kExpWork, [&](int64_t r) {
    const T* s = compute_row<S>(read_row(a.student, a.ls, r, kSlotA), n, kSlotWA);
    const T* t = compute_row<S>(read_row(a.teacher, a.lt, r, kSlotB), n, kSlotWB);
    bool nan_s = false, nan_t = false;
    const T ms = row_max(s, n, nan_s), mt = row_max(t, n, nan_t);
    if (nan_s || nan_t || ms == kInf<T> || mt == kInf<T> || ms == -kInf<T> || mt == -kInf<T>) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    T* es = scratch_row<T>(kSlotE1, n);
    T* et = scratch_row<T>(kSlotE2, n);
    const double ss = sum_exp(s, n, ms, inv, es), st = sum_exp(t, n, mt, inv, et);
    const double log_ss = std::log(ss), log_st = std::log(st);
    S* gs = a.grad ? write_row(a.grad, a.lg, r, kSlotG) : nullptr;
    T* g = gs ? grad_values<S>(gs, n) : nullptr;
    // w_j is written over g (the gradient pass reads it back in place)
    double wsum = 0, loss;
    if (mode == 0)
      loss = jsd_terms<0>(s, t, n, ms, mt, inv, log_ss, log_st, es, et, ss, st, beta, g, wsum);
    else if (mode == 1)
      loss = jsd_terms<1>(s, t, n, ms, mt, inv, log_ss, log_st, es, et, ss, st, beta, g, wsum);
    else
      loss = jsd_terms<2>(s, t, n, ms, mt, inv, log_ss, log_st, es, et, ss, st, beta, g, wsum);
    a.loss[r] = loss;
    if (!g) return;
    const double c = a.grad_scale / tau;
    const V rss = vset<T>(T(1.0 / ss)), rst = vset<T>(T(1.0 / st)), vc = vset<T>(T(c));
    // beta = 1: the sum of w is the loss itself
    const V vw = vset<T>(T(mode == 0 ? 0.0 : wsum));
    for (int64_t j = 0; j < n; j += W) {
      const int64_t cnt = n - j < W ? n - j : W;
      const bool full = cnt == W;
      const V q = (full ? vload(es + j) : load_partial(es + j, cnt, T(0))) * rss;
      V gv;
      if (mode == 0) {
        const V p = (full ? vload(et + j) : load_partial(et + j, cnt, T(0))) * rst;
        gv = vc * (q - p);  // (Q - P) / T
      } else {
        const V wv = full ? vload(g + j) : load_partial(g + j, cnt, T(0));
        gv = vc * (wv - q * vw);  // (w - Q sum w) / T
      }
      if (full)
        vstore(g + j, gv);
      else
        store_partial(g + j, cnt, gv);
    }
    store_row(gs, g, n);
    scatter_row(a.grad, a.lg, r, gs);
  });
}

// ---------------------------------------------------------------------------------------------
// ranking_softmax (optax's ranking_softmax_loss). Per row of scores s, labels y, mask w (items
// with w = 0 take no part: their score is -inf and their label 0, as optax's jnp.where):
//   M = max_{w_i} s_i,  S = sum_{w_i} exp(s_i - M),  Y = sum_{w_i} y_i,
//   loss = -sum_{w_i} y_i (s_i - M - log S) = Y log S - sum_{w_i, y_i != 0} y_i (s_i - M)
//   d loss / d s_k = Y exp(s_k - M) / S - y_k  (w_k),  0 (masked).
// A label 0 counts 0 even where its score is -inf (optax: 0 * -inf = NaN there); a row with no
// item in the mask has loss 0 and gradient 0 (optax's masked sum); a row with NaN or +inf
// scores in the mask, or whose unmasked scores are all -inf, gives NaN.
// ---------------------------------------------------------------------------------------------
template <class S>
void ranking_softmax_impl(const RankingSoftmaxArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t n = a.lx.n1;
  parallel_rows<S>(a.lx.rows(), 2 * n * kExpWork, [&](int64_t r) {
    const S* xs = read_row(a.x, a.lx, r, kSlotA);
    const T* yl = read_row(a.labels, a.ly, r, kSlotB);
    const uint8_t* w = a.where ? read_row(a.where, a.lw, r, kSlotC) : nullptr;
    // the masked scores and labels, in the compute type
    T* s = scratch_row<T>(kSlotWA, n);
    T* y = scratch_row<T>(kSlotWB, n);
    int64_t valid = 0;
    for (int64_t j = 0; j < n; ++j) {
      const bool in = !w || w[j] != 0;
      valid += in;
      s[j] = in ? to_compute(xs[j]) : -kInf<T>;
      y[j] = in ? yl[j] : T(0);
    }
    S* gs = nullptr;
    T* g = nullptr;
    if (valid == 0) {  // no item: loss 0, gradient 0
      a.loss[r] = 0.0;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(0)));
      return;
    }
    bool nan = false;
    const T m = row_max(s, n, nan);
    bool nan_y = false;
    for (int64_t j = 0; j < n; ++j) nan_y |= y[j] != y[j];
    if (nan || nan_y || m == kInf<T> || m == -kInf<T>) {
      // NaN, with gradient NaN over the mask and 0 outside it (as jax.grad of optax's)
      a.loss[r] = kNaN;
      if (!a.grad) return;
      gs = write_row(a.grad, a.lg, r, kSlotG);
      g = grad_values<S>(gs, n);
      for (int64_t j = 0; j < n; ++j) g[j] = (!w || w[j] != 0) ? T(kNaN) : T(0);
      store_row(gs, g, n);
      scatter_row(a.grad, a.lg, r, gs);
      return;
    }
    T* e = scratch_row<T>(kSlotE1, n);
    const double sum = sum_exp(s, n, m, T(1), a.grad ? e : static_cast<T*>(nullptr));
    double ysum = 0, ys = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (y[j] == T(0)) continue;
      ysum += double(y[j]);
      ys += double(y[j]) * (double(s[j]) - double(m));
    }
    a.loss[r] = ysum * std::log(sum) - ys;
    if (!a.grad) return;
    gs = write_row(a.grad, a.lg, r, kSlotG);
    g = grad_values<S>(gs, n);
    const T c = T(a.grad_scale), k = T(a.grad_scale * ysum / sum);
    // masked items: e = 0 and y = 0, so 0
    for (int64_t j = 0; j < n; ++j) g[j] = k * e[j] - c * y[j];
    store_row(gs, g, n);
    scatter_row(a.grad, a.lg, r, gs);
  });
}

}  // namespace

extern const RowLossTable rowloss_table;
const RowLossTable rowloss_table = {
#define FASTLOSS_ROWLOSS_ROW(sfx, S)                                                 \
  &class_margin_impl<S>, &sparsemax_impl<S>, &sparsemax_loss_impl<S>, &jensen_shannon_impl<S>, \
      &ranking_softmax_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_ROWLOSS_ROW)
#undef FASTLOSS_ROWLOSS_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
