// Overlap losses (Dice, Tversky, generalized Dice) and the cosine similarity over an axis.
//
// Both walk an (n0, n1, n2) array whose axis 1 is reduced (the classes of a segmentation
// batch, the embedding axis of a cosine), and both put positions of the other axes in the
// SIMD lanes: for (N, C, H, W) the class axis is strided and the H * W positions of one sample
// are contiguous, so a vector holds W neighbouring pixels and every step over the classes is
// one vector instruction for all of them (a per-pixel loop over C classes would be scalar and
// would touch a new cache line per class). Sums are accumulated in float64 lanes; every
// partial sum belongs to a fixed stretch of positions, so results do not depend on the number
// of threads.
#include "overlap.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

// Positions per block of the overlap kernels: 128 floats of a class row are 8 cache lines
// (each class row of an (N, C, H, W) batch is its own stream, H * W apart); a multiple of every
// vector width. The cosine over a strided axis takes blocks of kCosLanes positions.
constexpr int64_t kLanes = 128;
constexpr int64_t kCosLanes = 64;

// Scratch slots (thread_scratch): the probabilities of a block, its d loss / d p, the
// float64 accumulators of a chunk.
enum Slot { kSlotP = 0, kSlotG = 1, kSlotAcc = 2 };

// n <= W elements at p, p + stride, ... as a compute-type vector, padded with `pad`.
template <class S, class T = compute_t<S>>
inline vec_t<T> load_lanes(const S* p, int64_t stride, int64_t n, T pad) {
  constexpr int W = vec_width<T>;
  if (stride == 1) return n == W ? vload_as(p) : load_partial(p, n, pad);
  T buf[W];
  for (int k = 0; k < W; ++k) buf[k] = k < n ? to_compute(p[k * stride]) : pad;
  return vload<T>(buf);
}

template <class S, class T = compute_t<S>>
inline void store_lanes(S* p, int64_t stride, int64_t n, vec_t<T> v) {
  constexpr int W = vec_width<T>;
  if (stride == 1) {
    if (n == W)
      vstore_as(p, v);
    else
      store_partial(p, n, v);
    return;
  }
  T buf[W];
  vstore(buf, v);
  for (int64_t k = 0; k < n; ++k) p[k * stride] = from_compute<S>(buf[k]);
}

// Lanes of a compute-type vector added to float64 lanes (K = 2 vectors for float).
template <class T>
constexpr int kWide = vec_width<T> / vec_width<double>;
template <class T>
inline void add_wide(f64v* acc, vec_t<T> v) {
  if constexpr (std::is_same_v<T, float>) {
    f64v lo, hi;
    widen(v, lo, hi);
    acc[0] += lo;
    acc[1] += hi;
  } else {
    acc[0] += v;
  }
}

// Lanes at or beyond n set to 0.
template <class T>
inline vec_t<T> keep_first(vec_t<T> v, int64_t n) {
  constexpr int W = vec_width<T>;
  if (n >= W) return v;
  T buf[W];
  vstore(buf, v);
  for (int k = int(n); k < W; ++k) buf[k] = T(0);
  return vload<T>(buf);
}

// Splits `items` independent work items over threads (each gets one contiguous range).
template <class Fn>
void parallel_items(int64_t items, int64_t work, Fn&& fn) {
  const int nt = threads_for(work, items);
  parallel_for(nt, [&](int64_t t, int64_t n) {
    const int64_t lo = items * t / n, hi = items * (t + 1) / n;
    for (int64_t k = lo; k < hi; ++k) fn(k);
  });
}

// ---------------------------------------------------------------------------------------------
// Overlap statistics. Per sample n and class c, over the positions i of the sample:
//   I_nc = sum_i p_ic t_ic,  P_nc = sum_i p_ic,  T_nc = sum_i t_ic
// with p the softmax over classes of the scores at position i (max-shifted: x_c - max_c x_c
// <= 0, so exp never overflows whatever the logits), or the sigmoid of a single channel
// (p = 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|)), or the input itself. The
// caller turns these into Dice / Tversky losses and gives back A_nc, B_nc with
//   d loss / d p_ic = A_nc t_ic + B_nc;
// the gradient pass chains that through the activation:
//   softmax: d / d x_ic = p_ic (g_ic - sum_k p_ik g_ik),  sigmoid: g e / (1 + e)^2.
// A block is kLanes positions of one sample: its probabilities for all classes (C * kLanes
// values) stay in a per-thread scratch buffer between the max, exp, normalise and use steps.
// ---------------------------------------------------------------------------------------------

// The probabilities of positions [i0, i0 + nb) of sample n into P (class c, lane k at
// P[c * kLanes + k]); lanes at or beyond nb are 0. Sigmoid: also e / (1 + e)^2 into D.
template <class S, class T = compute_t<S>>
void block_probs(const OverlapArgs<S>& a, int64_t n, int64_t i0, int64_t nb, T* P, T* D) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const Layout3& L = a.lx;
  const int64_t C = L.n1;
  const S* base = a.x + n * L.s0 + i0 * L.s2;
  for (int64_t v = 0; v * W < nb; ++v) {
    const int64_t m = nb - v * W < W ? nb - v * W : W;
    const S* p = base + v * W * L.s2;
    if (a.act == OverlapActivation::kSoftmax) {
      V mx = vset<T>(-std::numeric_limits<T>::infinity());
      for (int64_t c = 0; c < C; ++c) {
        const V x = load_lanes(p + c * L.s1, L.s2, m, T(0));
        vstore(P + c * kLanes + v * W, x);
        mx = vmax<T>(mx, x);
      }
      V z = vset<T>(0);
      for (int64_t c = 0; c < C; ++c) {
        T* q = P + c * kLanes + v * W;
        const V e = vexp_capped(vload<T>(q) - mx);
        vstore(q, e);
        z += e;
      }
      const V inv = vset<T>(1) / z;
      for (int64_t c = 0; c < C; ++c) {
        T* q = P + c * kLanes + v * W;
        vstore(q, keep_first<T>(vload<T>(q) * inv, m));
      }
    } else if (a.act == OverlapActivation::kSigmoid) {  // C == 1
      const V x = load_lanes(p, L.s2, m, T(0));
      const V one = vset<T>(1), zero = vset<T>(0);
      const V e = vexp_capped(vselect(x < zero, x, -x));  // exp(-|x|) (NaN stays NaN)
      const V r = one / (one + e);
      vstore(P + v * W, keep_first<T>(vselect(x < zero, e * r, r), m));
      if (D) vstore(D + v * W, e * r * r);
    } else {
      for (int64_t c = 0; c < C; ++c)
        vstore(P + c * kLanes + v * W, load_lanes(p + c * L.s1, L.s2, m, T(0)));
    }
  }
}

// Targets of class c at positions [i0 + v W, ...) (m lanes; the rest 0). idx: the block's
// class indices (lanes beyond nb hold -1).
template <class S, class T = compute_t<S>>
inline vec_t<T> block_target(const OverlapArgs<S>& a, const typename Vec<T>::itype* idx,
                             int64_t n, int64_t c, int64_t i0, int64_t v, int64_t m) {
  constexpr int W = vec_width<T>;
  using IV = typename Vec<T>::itype;
  if (a.target) {
    const Layout3& L = a.lt;
    return load_lanes(a.target + n * L.s0 + c * L.s1 + (i0 + v * W) * L.s2, L.s2, m, T(0));
  }
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  const IV hit = idx[v] == (IV{} + I(c));
  return vselect(hit, vset<T>(1), vset<T>(0));
}

// The block's class indices as compute-width integer vectors (padding -1).
template <class S, class T = compute_t<S>>
inline void block_index(const OverlapArgs<S>& a, int64_t n, int64_t i0, int64_t nb,
                        typename Vec<T>::itype* idx) {
  using IV = typename Vec<T>::itype;
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  constexpr int W = vec_width<T>;
  const int64_t* src = a.index + n * a.lx.n2 + i0;
  I buf[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) buf[k] = k < nb ? I(src[k]) : I(-1);
  for (int64_t v = 0; v < kLanes / W; ++v) std::memcpy(&idx[v], buf + v * W, sizeof(IV));
}

template <class S>
void overlap_stats_impl(const OverlapArgs<S>& a) {
  using T = compute_t<S>;
  constexpr int W = vec_width<T>, K = kWide<T>;
  using IV = typename Vec<T>::itype;
  const int64_t N = a.lx.n0, C = a.lx.n1, Sp = a.lx.n2;
  const int64_t chunks = Sp == 0 ? 0 : (Sp + a.chunk - 1) / a.chunk;
  const int64_t items = N * chunks;
  parallel_items(items, N * C * Sp, [&](int64_t item) {
    const int64_t n = item / chunks, k = item % chunks;
    const int64_t begin = k * a.chunk, end = begin + a.chunk < Sp ? begin + a.chunk : Sp;
    T* P = static_cast<T*>(thread_scratch(kSlotP, size_t(C * kLanes) * sizeof(T)));
    f64v* acc = static_cast<f64v*>(thread_scratch(kSlotAcc, size_t(C * 3 * K) * sizeof(f64v)));
    for (int64_t j = 0; j < C * 3 * K; ++j) acc[j] = f64v{};
    IV idx[kLanes / W];
    for (int64_t i0 = begin; i0 < end; i0 += kLanes) {
      const int64_t nb = end - i0 < kLanes ? end - i0 : kLanes;
      block_probs(a, n, i0, nb, P, static_cast<T*>(nullptr));
      if (!a.target) block_index(a, n, i0, nb, idx);
      for (int64_t c = 0; c < C; ++c) {
        // I += p t, P += p, T += t: terms summed in the compute type in partials of at most
        // 8 per lane, each partial then added to the float64 lanes
        f64v* ac = acc + c * 3 * K;
        for (int64_t v0 = 0; v0 * W < nb; v0 += 8) {
          vec_t<T> si = vset<T>(0), sp = si, st = si;
          for (int64_t v = v0; v < v0 + 8 && v * W < nb; ++v) {
            const int64_t m = nb - v * W < W ? nb - v * W : W;
            const vec_t<T> p = vload<T>(P + c * kLanes + v * W);
            const vec_t<T> t = block_target(a, idx, n, c, i0, v, m);
            si += p * t;
            sp += p;
            st += t;
          }
          add_wide<T>(ac, si);
          add_wide<T>(ac + K, sp);
          add_wide<T>(ac + 2 * K, st);
        }
      }
    }
    double* out = a.partial + (n * chunks + k) * C * 3;
    for (int64_t j = 0; j < C * 3; ++j) {
      double s = 0;
      for (int q = 0; q < K; ++q) s += hsum(acc[j * K + q]);
      out[j] = s;
    }
  });
}

template <class S>
void overlap_grad_impl(const OverlapArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  using IV = typename Vec<T>::itype;
  const int64_t N = a.lx.n0, C = a.lx.n1, Sp = a.lx.n2;
  const int64_t blocks = (Sp + kLanes - 1) / kLanes;
  const Layout3& LG = a.lg;
  parallel_items(N * blocks, N * C * Sp, [&](int64_t item) {
    const int64_t n = item / blocks, i0 = item % blocks * kLanes;
    const int64_t nb = Sp - i0 < kLanes ? Sp - i0 : kLanes;
    T* P = static_cast<T*>(thread_scratch(kSlotP, size_t(C * kLanes) * sizeof(T)));
    T* G = static_cast<T*>(thread_scratch(kSlotG, size_t(C * kLanes) * sizeof(T)));
    alignas(64) T D[kLanes];
    IV idx[kLanes / W];
    block_probs(a, n, i0, nb, P, a.act == OverlapActivation::kSigmoid ? D : nullptr);
    if (!a.target) block_index(a, n, i0, nb, idx);
    const double* A = a.coef_a + n * C;
    const double* B = a.coef_b + n * C;
    for (int64_t v = 0; v * W < nb; ++v) {
      const int64_t m = nb - v * W < W ? nb - v * W : W;
      // g_c = A_nc t_c + B_nc (B_nc where t = 0, also for an infinite A);
      // dot = sum_c p_c g_c (softmax only)
      V dot = vset<T>(0);
      for (int64_t c = 0; c < C; ++c) {
        const V t = block_target(a, idx, n, c, i0, v, m);
        const V b = vset<T>(T(B[c]));
        const V g = vselect(t == vset<T>(0), b, vset<T>(T(A[c])) * t + b);
        vstore(G + c * kLanes + v * W, g);
        dot += vload<T>(P + c * kLanes + v * W) * g;
      }
      S* out = a.grad + n * LG.s0 + (i0 + v * W) * LG.s2;
      for (int64_t c = 0; c < C; ++c) {
        const V g = vload<T>(G + c * kLanes + v * W);
        V gx;
        if (a.act == OverlapActivation::kSoftmax)  // p_c (g_c - sum_k p_k g_k)
          gx = vload<T>(P + c * kLanes + v * W) * (g - dot);
        else if (a.act == OverlapActivation::kSigmoid)  // g sigma'(x) = g e / (1 + e)^2
          gx = g * vload<T>(D + v * W);
        else
          gx = g;
        store_lanes(out + c * LG.s1, LG.s2, m, gx);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Cosine similarity over axis 1. Per row, the float64 sums d = x1 . x2, s1 = |x1|^2,
// s2 = |x2|^2, then with c_k = max(|x_k|, eps):
//   cos = (d / c1) / c2
//   d cos / d x1 = (g / c1) (x2 / c2 - [|x1| > eps] (cos / |x1|) x1)   (x2: the same, swapped)
// so that no factor grows or shrinks with the size of the inputs beyond the result's own.
// Rows are contiguous (axis 1 has stride 1, or there is one row per block of n2): vectors
// along the row; otherwise the n2 positions are the lanes (blocks of kCosLanes positions).
// Rows of float64 values beyond ~1e150 overflow the sums of squares (below ~1e-150 they
// underflow): such rows are summed again scaled by their largest magnitudes m_k (the scale
// cancels), cos = d' / (max(sqrt(s1'), eps / m1) max(sqrt(s2'), eps / m2)).
// ---------------------------------------------------------------------------------------------
struct CosCoef {
  double cos = 0;
  double u1 = 0, v12 = 0, w11 = 0;  // g1 = u1 (x2 v12 - x1 w11)
  double u2 = 0, v21 = 0, w22 = 0;  // g2 = u2 (x1 v21 - x2 w22)
};

// From sums of the scaled rows x_k / m_k (m_k = 1: unscaled).
inline CosCoef cos_coef(double d, double s1, double s2, double m1, double m2, double eps,
                        double g) {
  CosCoef r;
  const double r1 = std::sqrt(s1), r2 = std::sqrt(s2);  // |x_k| / m_k
  const double c1 = r1 > eps / m1 ? r1 : eps / m1;      // max(|x_k|, eps) / m_k
  const double c2 = r2 > eps / m2 ? r2 : eps / m2;
  r.cos = d / c1 / c2;
  const double n1 = m1 * r1, n2 = m2 * r2;
  const double C1 = m1 * c1, C2 = m2 * c2;
  r.u1 = g / C1;
  r.v12 = 1 / C2;
  r.w11 = n1 > eps ? r.cos / n1 : 0.0;
  r.u2 = g / C2;
  r.v21 = 1 / C1;
  r.w22 = n2 > eps ? r.cos / n2 : 0.0;
  return r;
}

// Scalar, scaled sums of row (o, i), for rows whose plain sums overflowed.
template <class S>
CosCoef cos_row_scaled(const CosineArgs<S>& a, int64_t o, int64_t i) {
  const Layout3 &L1 = a.l1, &L2 = a.l2;
  const int64_t D = L1.n1;
  const S* p1 = a.x1 + o * L1.s0 + i * L1.s2;
  const S* p2 = a.x2 + o * L2.s0 + i * L2.s2;
  double m1 = 0, m2 = 0;
  for (int64_t j = 0; j < D; ++j) {
    const double y1 = std::fabs(double(to_compute(p1[j * L1.s1])));
    const double y2 = std::fabs(double(to_compute(p2[j * L2.s1])));
    m1 = y1 > m1 || y1 != y1 ? y1 : m1;
    m2 = y2 > m2 || y2 != y2 ? y2 : m2;
  }
  if (!(m1 > 0)) m1 = 1;  // (0 rows; NaN stays NaN through the sums)
  if (!(m2 > 0)) m2 = 1;
  double d = 0, s1 = 0, s2 = 0;
  for (int64_t j = 0; j < D; ++j) {
    const double y1 = double(to_compute(p1[j * L1.s1])) / m1;
    const double y2 = double(to_compute(p2[j * L2.s1])) / m2;
    d += y1 * y2;
    s1 += y1 * y1;
    s2 += y2 * y2;
  }
  return cos_coef(d, s1, s2, m1, m2, a.eps, a.grad_scale);
}

// Sums that overflowed, or whose squares may have underflowed (float64 elements below
// ~1e-150: their squares lose digits), are taken again scaled.
template <class S>
inline bool finite_sums(double d, double s1, double s2) {
  constexpr double kTiny = 1e-250;
  return std::isfinite(d) && std::isfinite(s1) && std::isfinite(s2) && s1 > kTiny &&
         s2 > kTiny;
}

template <class S>
void cosine_rows(const CosineArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, K = kWide<T>;
  const Layout3 &L1 = a.l1, &L2 = a.l2;
  const int64_t D = L1.n1, rows = L1.rows(), n2 = L1.n2;
  parallel_items(rows, rows * D, [&](int64_t r) {
    const int64_t o = r / n2, i = r % n2;
    const S* p1 = a.x1 + o * L1.s0 + i * L1.s2;
    const S* p2 = a.x2 + o * L2.s0 + i * L2.s2;
    f64v ad[2 * K] = {}, a1[2 * K] = {}, a2[2 * K] = {};
    int64_t j = 0;
    for (; j + 2 * W <= D; j += 2 * W) {  // two independent chains
      const V x1 = load_lanes(p1 + j * L1.s1, L1.s1, W, T(0));
      const V y1 = load_lanes(p2 + j * L2.s1, L2.s1, W, T(0));
      const V x2 = load_lanes(p1 + (j + W) * L1.s1, L1.s1, W, T(0));
      const V y2 = load_lanes(p2 + (j + W) * L2.s1, L2.s1, W, T(0));
      add_wide<T>(ad, x1 * y1);
      add_wide<T>(a1, x1 * x1);
      add_wide<T>(a2, y1 * y1);
      add_wide<T>(ad + K, x2 * y2);
      add_wide<T>(a1 + K, x2 * x2);
      add_wide<T>(a2 + K, y2 * y2);
    }
    for (; j < D; j += W) {
      const int64_t m = D - j < W ? D - j : W;
      const V x = load_lanes(p1 + j * L1.s1, L1.s1, m, T(0));
      const V y = load_lanes(p2 + j * L2.s1, L2.s1, m, T(0));
      add_wide<T>(ad, x * y);
      add_wide<T>(a1, x * x);
      add_wide<T>(a2, y * y);
    }
    double d = 0, s1 = 0, s2 = 0;
    for (int q = 0; q < 2 * K; ++q) d += hsum(ad[q]), s1 += hsum(a1[q]), s2 += hsum(a2[q]);
    const CosCoef cf = finite_sums<S>(d, s1, s2)
                           ? cos_coef(d, s1, s2, 1.0, 1.0, a.eps, a.grad_scale)
                           : cos_row_scaled(a, o, i);
    a.cos[r] = cf.cos;
    if (!a.grad1) return;
    S* g1 = a.grad1 + o * a.lg1.s0 + i * a.lg1.s2;
    S* g2 = a.grad2 + o * a.lg2.s0 + i * a.lg2.s2;
    const V u1 = vset<T>(T(cf.u1)), v12 = vset<T>(T(cf.v12)), w11 = vset<T>(T(cf.w11));
    const V u2 = vset<T>(T(cf.u2)), v21 = vset<T>(T(cf.v21)), w22 = vset<T>(T(cf.w22));
    for (j = 0; j < D; j += W) {
      const int64_t m = D - j < W ? D - j : W;
      const V x = load_lanes(p1 + j * L1.s1, L1.s1, m, T(0));
      const V y = load_lanes(p2 + j * L2.s1, L2.s1, m, T(0));
      store_lanes(g1 + j * a.lg1.s1, a.lg1.s1, m, u1 * (y * v12 - x * w11));
      store_lanes(g2 + j * a.lg2.s1, a.lg2.s1, m, u2 * (x * v21 - y * w22));
    }
  });
}

template <class S>
void cosine_lanes(const CosineArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, K = kWide<T>, NV = kCosLanes / W;
  const Layout3 &L1 = a.l1, &L2 = a.l2;
  const int64_t D = L1.n1, n2 = L1.n2;
  const int64_t blocks = (n2 + kCosLanes - 1) / kCosLanes;
  parallel_items(L1.n0 * blocks, L1.rows() * D, [&](int64_t item) {
    const int64_t o = item / blocks, i0 = item % blocks * kCosLanes;
    const int64_t nb = n2 - i0 < kCosLanes ? n2 - i0 : kCosLanes;
    const S* p1 = a.x1 + o * L1.s0 + i0 * L1.s2;
    const S* p2 = a.x2 + o * L2.s0 + i0 * L2.s2;
    f64v ad[NV * K] = {}, a1[NV * K] = {}, a2[NV * K] = {};
    for (int64_t j = 0; j < D; ++j) {
      for (int64_t v = 0; v * W < nb; ++v) {
        const int64_t m = nb - v * W < W ? nb - v * W : W;
        const V x = load_lanes(p1 + j * L1.s1 + v * W * L1.s2, L1.s2, m, T(0));
        const V y = load_lanes(p2 + j * L2.s1 + v * W * L2.s2, L2.s2, m, T(0));
        add_wide<T>(ad + v * K, x * y);
        add_wide<T>(a1 + v * K, x * x);
        add_wide<T>(a2 + v * K, y * y);
      }
    }
    alignas(64) double sd[kCosLanes], ss1[kCosLanes], ss2[kCosLanes];
    for (int64_t q = 0; q < NV * K; ++q) {
      vstore(sd + q * vec_width<double>, ad[q]);
      vstore(ss1 + q * vec_width<double>, a1[q]);
      vstore(ss2 + q * vec_width<double>, a2[q]);
    }
    alignas(64) T cu1[kCosLanes], cv12[kCosLanes], cw11[kCosLanes];
    alignas(64) T cu2[kCosLanes], cv21[kCosLanes], cw22[kCosLanes];
    for (int64_t k = 0; k < kCosLanes; ++k) {
      CosCoef cf;
      if (k < nb) {
        cf = finite_sums<S>(sd[k], ss1[k], ss2[k])
                 ? cos_coef(sd[k], ss1[k], ss2[k], 1.0, 1.0, a.eps, a.grad_scale)
                 : cos_row_scaled(a, o, i0 + k);
        a.cos[o * n2 + i0 + k] = cf.cos;
      }
      cu1[k] = T(cf.u1), cv12[k] = T(cf.v12), cw11[k] = T(cf.w11);
      cu2[k] = T(cf.u2), cv21[k] = T(cf.v21), cw22[k] = T(cf.w22);
    }
    if (!a.grad1) return;
    S* g1 = a.grad1 + o * a.lg1.s0 + i0 * a.lg1.s2;
    S* g2 = a.grad2 + o * a.lg2.s0 + i0 * a.lg2.s2;
    for (int64_t j = 0; j < D; ++j) {
      for (int64_t v = 0; v * W < nb; ++v) {
        const int64_t m = nb - v * W < W ? nb - v * W : W;
        const V x = load_lanes(p1 + j * L1.s1 + v * W * L1.s2, L1.s2, m, T(0));
        const V y = load_lanes(p2 + j * L2.s1 + v * W * L2.s2, L2.s2, m, T(0));
        const int64_t q = v * W;
        const V gx = vload<T>(cu1 + q) * (y * vload<T>(cv12 + q) - x * vload<T>(cw11 + q));
        const V gy = vload<T>(cu2 + q) * (x * vload<T>(cv21 + q) - y * vload<T>(cw22 + q));
        store_lanes(g1 + j * a.lg1.s1 + v * W * a.lg1.s2, a.lg1.s2, m, gx);
        store_lanes(g2 + j * a.lg2.s1 + v * W * a.lg2.s2, a.lg2.s2, m, gy);
      }
    }
  });
}

template <class S>
void cosine_similarity_impl(const CosineArgs<S>& a) {
  if (a.l1.rows() == 0) return;
  const bool row_major = a.l1.n2 == 1 || (a.l1.s1 == 1 && a.l2.s1 == 1);
  if (row_major)
    cosine_rows(a);
  else
    cosine_lanes(a);
}

}  // namespace

extern const OverlapTable overlap_table;
const OverlapTable overlap_table = {
#define FASTLOSS_OVERLAP_ROW(sfx, S) \
  &overlap_stats_impl<S>, &overlap_grad_impl<S>, &cosine_similarity_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_OVERLAP_ROW)
#undef FASTLOSS_OVERLAP_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
