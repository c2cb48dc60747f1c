// Pointwise losses: regression (MSE, L1, Huber, smooth L1) and binary (BCE with logits, BCE,
// sigmoid focal, hinge). One driver reads prediction, target and the optional weights once,
// writes the per-element loss (reduction "none") and the gradient in the same pass, and sums
// the losses in float64 lanes; each loss is a small functor with its formulas.
#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels.hpp"
#include "simd_math.hpp"

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

constexpr int kSlotChunkSums = kScratchSlots - 1;  // (per calling thread; see thread_scratch)

#define FL_INLINE inline __attribute__((always_inline))

template <class T> using V = vec_t<T>;
template <class T> inline V<T> splat(double v) { return vset<T>(T(v)); }
// |v| by clearing the sign bit (one and; |-0| = +0, NaN stays NaN)
template <class T> inline V<T> vabs(V<T> v) {
  using I = typename Vec<T>::itype;
  return V<T>(I(v) & ~I(-V<T>{}));
}
// sign(d) with sign(0) = 0 and sign(NaN) = NaN (as torch.sign).
template <class T> inline V<T> vsign(V<T> d) {
  V<T> s = vselect(d > V<T>{}, splat<T>(1), vselect(d < V<T>{}, splat<T>(-1), V<T>{}));
  return vselect(d != d, d, s);
}
// Whether every lane of a compare mask is true (one movemask where the ISA has it).
template <class M> inline bool all_lanes(M m) {
  constexpr int n = sizeof(M) / sizeof(m[0]);
#if defined(__AVX512F__)
  if constexpr (sizeof(M) == 64 && n == 16) return _mm512_movepi32_mask(__m512i(m)) == 0xFFFF;
  if constexpr (sizeof(M) == 64 && n == 8) return _mm512_movepi64_mask(__m512i(m)) == 0xFF;
#endif
#if defined(__AVX__)
  if constexpr (sizeof(M) == 32 && n == 8) return _mm256_movemask_ps(__m256(m)) == 0xFF;
  if constexpr (sizeof(M) == 32 && n == 4) return _mm256_movemask_pd(__m256d(m)) == 0xF;
#endif
#if defined(__SSE2__)
  if constexpr (sizeof(M) == 16 && n == 4) return _mm_movemask_ps(__m128(m)) == 0xF;
  if constexpr (sizeof(M) == 16 && n == 2) return _mm_movemask_pd(__m128d(m)) == 0x3;
#endif
  bool all = true;
  for (int i = 0; i < n; ++i) all &= m[i] != 0;
  return all;
}
// max(v, 0) that keeps NaN (a plain compare-select would turn NaN into 0).
template <class T> inline V<T> relu(V<T> v) { return vselect(v < V<T>{}, V<T>{}, v); }

// Each functor: loss(x, y, pw, l, g) sets the per-element loss l and d l / d x in g.
// ---------------------------------------------------------------------------------------------
// mse:        l = (x - y)^2                    g = 2 (x - y)
// l1:         l = |x - y|                      g = sign(x - y)   (0 at x = y, as torch)
// ---------------------------------------------------------------------------------------------
struct Mse {
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    const V<T> d = x - y;
    l = d * d;
    g = d + d;
  }
};
struct L1 {
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    const V<T> d = x - y;
    l = vabs<T>(d);
    g = vsign<T>(d);
  }
};
// ---------------------------------------------------------------------------------------------
// huber(delta):    |d| <= delta: l = d^2 / 2,             g = d
//                  else          l = delta (|d| - delta/2), g = delta sign(d)
// smooth_l1(beta): |d| <  beta:  l = d^2 / (2 beta),      g = d / beta
//                  else          l = |d| - beta/2,         g = sign(d)      (beta = 0: L1)
// ---------------------------------------------------------------------------------------------
struct Huber {
  double delta;
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    const V<T> d = x - y, a = vabs<T>(d), dl = splat<T>(delta);
    const auto quad = a <= dl;
    l = vselect(quad, splat<T>(0.5) * d * d, dl * (a - splat<T>(0.5 * delta)));
    g = vselect(quad, d, dl * vsign<T>(d));
  }
};
struct SmoothL1 {
  double beta;
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    const V<T> d = x - y, a = vabs<T>(d);
    if (beta == 0) {
      l = a;
      g = vsign<T>(d);
      return;
    }
    const auto quad = a < splat<T>(beta);
    l = vselect(quad, splat<T>(0.5 / beta) * d * d, a - splat<T>(0.5 * beta));
    g = vselect(quad, d * splat<T>(1.0 / beta), vsign<T>(d));
  }
};

// log1p(exp(-|x|)), and sigmoid(x), sigmoid(-x) from the same e = exp(-|x|) (no overflow for
// any x, no cancellation in the small one). A NaN x gives NaN in all three (e is NaN).
template <class T> struct LogisticParts {
  V<T> l1pe, sig, sig_neg;
  FL_INLINE explicit LogisticParts(V<T> x) {
    const V<T> one = splat<T>(1);
    V<T> e;
    exp_log1p_neg(vabs<T>(x), e, l1pe);
    const V<T> big = one / (one + e), small = e * big;  // sigmoid(|x|), sigmoid(-|x|)
    const auto pos = x >= V<T>{};
    sig = vselect(pos, big, small);
    sig_neg = vselect(pos, small, big);
  }
};

// ---------------------------------------------------------------------------------------------
// binary_cross_entropy_with_logits (torch), p = pos_weight (1 without it), c = 1 + (p - 1) y:
//   l = (1 - y) x + c softplus(-x),   softplus(-x) = max(-x, 0) + log1p(exp(-|x|))
//     = [x >= 0 ? (1 - y) x : -p y x] + c log1p(exp(-|x|))
//   (the second form adds two non-negative terms: x + softplus(-x) for y = 0, x < 0 would cancel)
//   g = c sigmoid(x) - p y            (p = 1: sigmoid(x) - y)
// ---------------------------------------------------------------------------------------------
template <class T> inline V<T> bce_logits_loss(V<T> x, V<T> y, V<T> p, V<T> c, V<T> l1pe) {
  // (x >= 0: (1 - y) x, else -p y x: x ([x >= 0] - (y or p y)) with the mask as 0 or 1)
  using I = typename Vec<T>::itype;
  const auto pos = x >= V<T>{};
  const V<T> lin = x * (V<T>(I(pos) & I(splat<T>(1))) - vselect(pos, y, p * y));
  return vselect(x != x, x, lin + c * l1pe);
}

// kPos: with pos_weight. Without it, torch's own form max(x, 0) - x y + log1p(exp(-|x|)) with
// max(x, 0) - x y taken as x (1 - y) or -x y (no cancellation; right at x = +-inf).
template <bool kPos> struct BceLogits {
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T> p, V<T>& l, V<T>& g) const {
    using I = typename Vec<T>::itype;
    if constexpr (kPos) {
      const LogisticParts<T> lp(x);
      const V<T> one = splat<T>(1), c = one + (p - one) * y;
      l = bce_logits_loss<T>(x, y, p, c, lp.l1pe);
      g = c * lp.sig - p * y;
    } else {
      const V<T> one = splat<T>(1);
      V<T> e, l1pe;
      exp_log1p_neg(vabs<T>(x), e, l1pe);
      // max(x, 0) - x y as x (1 - y) or x (-y): the same at +-inf as the reference's
      // y softplus(-x) + (1 - y) softplus(x) (+inf, or NaN for 0 * inf), not inf - inf = NaN
      // (found by the property tests under the sanitizer build)
      // (the same expression as bce_logits_loss with p = 1: bit-identical to pos_weight = 1)
      l = x * (V<T>(I(x >= V<T>{}) & I(one)) - y) + l1pe;
      const V<T> big = one / (one + e);
      g = vselect(x >= V<T>{}, big, e * big) - y;
    }
  }
};
// ---------------------------------------------------------------------------------------------
// binary_cross_entropy on probabilities q (torch): logs clamped at -100,
//   l = -(y max(log q, -100) + (1 - y) max(log(1 - q), -100))
//   g = (q - y) / max(q (1 - q), 1e-12)             (torch's backward)
// ---------------------------------------------------------------------------------------------
// Hard labels (a whole vector of 0 and 1) take one log: log(q) or log(1 - q), the latter as
// log(u + c) with u = 1 - q rounded and c = (1 - u) - q its exact rounding error.
// kNormal: every lane has q in [kNormalMin, 1) (run_block checks; the common case): both logs
// of normal numbers and above -100 (log q >= -87.4, log(1 - q) >= -37: no clamp), by
// vlog_normal / vlog_sum_normal, with the same bits (AVX2, float32, one thread in cache: 0.64
// the time of the general form with soft labels, 0.68 with hard ones; AVX-512 0.86-0.88).
struct Bce {
  static constexpr double kNormalMin = 0x1p-126;  // float's smallest normal
  template <class T, bool kNormal = false>
  FL_INLINE void operator()(V<T> q, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    const V<T> one = splat<T>(1), zero{}, lo = splat<T>(-100);
    const V<T> u = one - q, c = (one - u) - q;  // 1 - q = u + c exactly (|q| <= 1)
    auto log_sum = [&](V<T> a, V<T> b) {  // log(a + b), clamped at -100
      if constexpr (kNormal) return vlog_sum_normal(a, b);
      const V<T> r = vlog_sum(a, b);
      return vselect(r < lo, lo, r);
    };
    auto log_q = [&] {  // (no correction term)
      if constexpr (kNormal) return vlog_normal(q);
      const V<T> r = vlog_table(q);
      return vselect(r < lo, lo, r);
    };
    const auto y1 = y == one;
    if (all_lanes(y1 | (y == zero)))  // hard labels
      l = -log_sum(vselect(y1, q, u), vselect(y1, zero, c));
    else
      l = -(y * log_q() + (one - y) * log_sum(u, c));
    V<T> den = q * u;
    den = vselect(den < splat<T>(1e-12), splat<T>(1e-12), den);
    g = (q - y) / den;
  }
};
// ---------------------------------------------------------------------------------------------
// sigmoid_focal_loss (torchvision), s = sigmoid(x), ce = BCE with logits:
//   q = 1 - p_t = s (1 - y) + (1 - s) y;   l = a_t ce q^gamma,  a_t = alpha y + (1 - alpha)(1 - y)
//   (alpha < 0: a_t = 1)
//   g = a_t (  (s - y) q^gamma  +  ce gamma q^(gamma-1) s (1 - s) (1 - 2y)  )
// q^gamma = exp(gamma log q) from q computed as sigmoids (never 1 - rounded p), so the loss stays
// finite and accurate where the probability underflows; q = 0 gives 0 (gamma > 0) or 1.
// ---------------------------------------------------------------------------------------------
// kGamma: 0, 1, 2 for those values of gamma (closed forms), -1 for any other.
template <int kGamma> struct SigmoidFocal {
  double alpha, gamma;
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    const LogisticParts<T> lp(x);
    const V<T> one = splat<T>(1), zero{};
    const V<T> ce = bce_logits_loss<T>(x, y, one, one, lp.l1pe);
    const V<T> q = lp.sig * (one - y) + lp.sig_neg * y;
    V<T> mod, dmod;  // q^gamma, gamma q^(gamma - 1)
    if constexpr (kGamma == 2) {  // torchvision's default: no pow needed
      mod = q * q;
      dmod = q + q;
    } else if constexpr (kGamma == 1) {
      mod = q;
      dmod = one;
    } else if constexpr (kGamma == 0) {
      mod = one;
      dmod = zero;
    } else {
      // log q: for hard labels from the softplus already at hand (log sigmoid(x) = -sp_neg,
      // log sigmoid(-x) = -(sp_neg + x)), else by vlog
      const auto y1 = y == one, y0 = y == zero;
      // softplus(-x) = max(-x, 0) + log1p(exp(-|x|)); softplus(x) = softplus(-x) + x
      const V<T> sp_neg = relu<T>(-x) + lp.l1pe, sp_pos = relu<T>(x) + lp.l1pe;
      V<T> lq = vselect(y1, -sp_pos, -sp_neg);
      if (!all_lanes(y1 | y0)) lq = vselect(y1 | y0, lq, vlog(q));
      const auto qpos = q > zero;
      mod = vselect(qpos, vexp(splat<T>(gamma) * lq), zero);
      dmod = vselect(qpos, splat<T>(gamma) * mod / vselect(qpos, q, one), zero);
      mod = vselect(q != q, q, mod);
    }
    // (a lane select, not a branch: the compare of the constants leaves the loop)
    const V<T> at = vselect(splat<T>(alpha) < zero, one,
                            splat<T>(alpha) * y + splat<T>(1 - alpha) * (one - y));
    l = at * ce * mod;
    g = at * ((lp.sig - y) * mod + ce * dmod * lp.sig * lp.sig_neg * (one - y - y));
  }
};
// ---------------------------------------------------------------------------------------------
// hinge (binary SVM, y in {-1, +1}): z = margin - y x
//   l = max(0, z)       g = -y [z > 0]       (subgradient 0 at the kink)
//   squared: l = max(0, z)^2,  g = -2 y max(0, z)
// ---------------------------------------------------------------------------------------------
struct Hinge {
  double margin;
  bool squared;
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    y = vselect(y == V<T>{}, splat<T>(-1), y);  // labels {0, 1} -> {-1, +1}
    const V<T> z = splat<T>(margin) - y * x, h = relu<T>(z);
    if (squared) {
      l = h * h;
      g = splat<T>(-2) * y * h;
    } else {
      l = h;
      g = vselect(z > V<T>{}, -y, V<T>{});
      g = vselect(z != z, z, g);
    }
  }
};
// ---------------------------------------------------------------------------------------------
// kl_div (torch), x = input (log-probabilities), y = target:
//   kLogTarget false: l = y (log y - x) (0 where y = 0, even for x = -inf)    g = -y
//   kLogTarget true:  l = exp(y) (y - x)                                      g = -exp(y)
// (negative probability targets are counted in the kernel pass and rejected)
// ---------------------------------------------------------------------------------------------
template <bool kLogTarget> struct KlDiv {
  template <class T> FL_INLINE void operator()(V<T> x, V<T> y, V<T>, V<T>& l, V<T>& g) const {
    if constexpr (kLogTarget) {
      const V<T> ey = vexp(y);
      l = vselect(ey == V<T>{}, V<T>{}, ey * (y - x));  // exp(y) = 0: no mass, 0 (not NaN)
      g = -ey;
    } else {
      // (log y = +inf for y = +inf, which the table-based float log does not give)
      const auto y0 = y == V<T>{};
      const V<T> log_y = vselect(y == splat<T>(std::numeric_limits<T>::infinity()), y,
                                 vlog_nonzero(y, y0));
      const V<T> t = y * (log_y - x);
      l = vselect(y0, V<T>{}, t);
      g = -y;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The driver: n elements in chunks over the threads; per element l_i = w_i loss_i,
// grad_i = grad_scale * w_i * dloss_i / dx_i; returns sum_i l_i.
// ---------------------------------------------------------------------------------------------
// One kernel per (compute type, loss, gradient or not): run_block. Weights and per-element
// losses are runtime choices (a predictable branch per vector, nothing next to the arithmetic
// of a transcendental loss); 16-bit predictions and gradients are converted at the edge of a
// block that stays in L1, so float16 and bfloat16 share the float32 kernels. This keeps the
// number of instantiations (the compile time and the size of the library) small.

// Per-thread state of a pass: float64 sums of the losses and per-lane label counts (compare
// masks are -1 where true).
template <class T> struct PassState {
  using I = typename Vec<T>::itype;
  I c_neg{}, c_zero{}, c_bad{};
  f64v acc_lo{}, acc_hi{};
};

template <class T> struct BlockArgs {
  const T* x;     // predictions
  const T* y;     // targets
  const T* w;     // weights, or nullptr (all 1)
  const T* p;     // pos_weight, or nullptr (all 1)
  T* loss;        // per-element losses, or nullptr
  T* grad;        // gradient, or nullptr (kGrad false)
  int64_t n;      // a multiple of the vector width
  double grad_scale;
  int64_t prefetch;  // elements ahead to prefetch the operands (0: none)
};

template <class Op> constexpr bool kUsesPosWeight = std::is_same_v<Op, BceLogits<true>>;

// n elements (whole vectors). Losses are summed in partials of 8 vectors before being widened
// into the float64 sum (each partial's relative error <= 7 ulp of the sum of its terms'
// magnitudes); the vectors after the last whole group are added one at a time.
// (noinline + flatten: one copy of the loss per kernel, with every helper inlined into it)
template <class T, class Op, bool kGrad>
__attribute__((noinline, flatten)) void run_block(const void* op_ptr, const BlockArgs<T>& b,
                                                  PassState<T>& st) {
  const Op op = *static_cast<const Op*>(op_ptr);  // (a local copy: its parameters stay in
                                                   // registers, no aliasing with the outputs)
  using I = typename Vec<T>::itype;
  constexpr int W = vec_width<T>;
  constexpr bool kLabels = std::is_same_v<Op, Hinge>;
  constexpr bool kProbs = std::is_same_v<Op, Bce>;
  constexpr bool kKlProbs = std::is_same_v<Op, KlDiv<false>>;
  const V<T> gs = splat<T>(b.grad_scale), one = splat<T>(1);
  const T *x = b.x, *y = b.y, *w = b.w, *pw = b.p;
  T *loss = b.loss, *grad = b.grad;
  I c_neg = st.c_neg, c_zero = st.c_zero, c_bad = st.c_bad;
  f64v acc_lo = st.acc_lo, acc_hi = st.acc_hi;
  auto at = [&](int64_t j) {
    if (b.prefetch) {
      __builtin_prefetch(x + j + b.prefetch);
      __builtin_prefetch(y + j + b.prefetch);
    }
    const V<T> xv = vload(x + j), yv = vload(y + j);
    V<T> p = one;
    if constexpr (kUsesPosWeight<Op>) p = vload(pw + j);
    if constexpr (kKlProbs) c_bad -= I(yv < V<T>{});  // negative probability targets
    if constexpr (kLabels) {
      const I neg = yv == splat<T>(-1), zero = yv == V<T>{}, pos = yv == one;
      c_neg -= neg;
      c_zero -= zero;
      c_bad -= ~(neg | zero | pos);
    }
    V<T> l, g;
    if constexpr (kProbs) {  // (Bce's normal form: no label outside [0, 1] to count)
      if (all_lanes((xv >= splat<T>(Op::kNormalMin)) & (xv < one))) {
        op.template operator()<T, true>(xv, yv, p, l, g);
      } else {
        c_bad -= I((xv < V<T>{}) | (xv > one));  // outside [0, 1] (NaN passes)
        op.template operator()<T>(xv, yv, p, l, g);
      }
    } else {
      op.template operator()<T>(xv, yv, p, l, g);
    }
    if (w) {
      const V<T> wv = vload(w + j);
      l = l * wv;
      g = g * wv;
    }
    if (loss) vstore(loss + j, l);
    if constexpr (kGrad) vstore(grad + j, g * gs);
    return l;
  };
  auto add = [&](V<T> l) { add_widened(l, acc_lo, acc_hi); };
  for (int64_t j = 0; j < b.n;) {
    const int64_t m = j + 8 * W <= b.n ? 8 : 1;
    V<T> part = at(j);
    for (int64_t k = 1; k < m; ++k) part += at(j + k * W);
    add(part);
    j += m * W;
  }
  st.c_neg = c_neg, st.c_zero = c_zero, st.c_bad = c_bad;
  st.acc_lo = acc_lo, st.acc_hi = acc_hi;
}

template <class T> using BlockFn = void (*)(const void*, const BlockArgs<T>&, PassState<T>&);

// (16-bit operands go through float32 blocks: to_float_block / from_float_block, simd_math.hpp)

// Elements [lo, hi) of one chunk: whole vectors through fn, then the tail padded to a vector
// (x = 0, y = y_pad, weight 0, pos_weight 1: a padded lane adds nothing and counts no label).
template <class T> void run_range(BlockFn<T> fn, const void* op, BlockArgs<T> b, const T* x,
                                  T* grad, int64_t lo, int64_t hi, T y_pad,
                                  PassState<T>& st) {
  constexpr int W = vec_width<T>;
  const int64_t whole = (hi - lo) / W * W;
  if (whole) {
    BlockArgs<T> c = b;
    c.x = x, c.grad = grad;  // (already offset by the caller)
    c.y += lo, c.w = b.w ? b.w + lo : nullptr, c.p = b.p ? b.p + lo : nullptr;
    c.loss = b.loss ? b.loss + lo : nullptr;
    c.n = whole;
    fn(op, c, st);
  }
  const int64_t cnt = hi - lo - whole, t = lo + whole;
  if (cnt == 0) return;
  T xb[W], yb[W], wb[W], pb[W], lb[W], gb[W];
  for (int i = 0; i < W; ++i) {
    const bool real = i < cnt;
    xb[i] = real ? x[whole + i] : T(0);
    yb[i] = real ? b.y[t + i] : y_pad;
    wb[i] = real ? (b.w ? b.w[t + i] : T(1)) : T(0);
    pb[i] = real && b.p ? b.p[t + i] : T(1);
  }
  BlockArgs<T> c = b;
  c.x = xb, c.y = yb, c.w = wb, c.p = b.p ? pb : nullptr, c.loss = b.loss ? lb : nullptr;
  c.grad = grad ? gb : nullptr, c.n = W;
  fn(op, c, st);
  for (int64_t i = 0; i < cnt; ++i) {
    if (b.loss) b.loss[t + i] = lb[i];
    if (grad) grad[whole + i] = gb[i];
  }
}

// (unit_work: threads_for's work per element)
template <class S> double drive(PointwiseArgs<S>& a, BlockFn<compute_t<S>> fn, const void* op,
                                compute_t<S> y_pad, int64_t unit_work) {
  using T = compute_t<S>;
  constexpr int W = vec_width<T>;
  constexpr int64_t kChunk = 8192;
  constexpr int64_t kBlock16 = 1024;  // 16-bit: float32 blocks of 4 KB (a multiple of 8 W)
  static_assert(kChunk % kBlock16 == 0 && kBlock16 % (8 * W) == 0, "block sizes");
  const int64_t n = a.n, chunks = (n + kChunk - 1) / kChunk;
  const int nt = threads_for(n * unit_work, chunks);
  // One float64 sum per fixed-size chunk, added in chunk order at the end: the total does not
  // depend on the number of threads.
  double* chunk_sum = static_cast<double*>(thread_scratch(kSlotChunkSums, size_t(chunks) * 8));
  std::atomic<int64_t> n_neg{0}, n_zero{0}, n_bad{0};  // (integer sums: any order is exact)
  BlockArgs<T> b{};
  b.y = a.y, b.w = a.w, b.p = a.pos_weight, b.loss = a.loss, b.grad_scale = a.grad_scale;
  // software prefetch 4 KB ahead on the operands read in place (not the 16-bit path's float
  // blocks): the loss bodies are long dependency chains that hold the loads back; both forms
  // alternated in one process, 50M float32 elements, 2 threads: -5% to -12% time (median of 25
  // paired runs) for the exp/log losses and mse
  b.prefetch = std::is_same_v<S, T> ? int64_t(4096 / sizeof(T)) : 0;
  parallel_for(nt, [&](int64_t thread, int64_t n_threads) {
    PassState<T> st;
    // each thread one contiguous range of chunks
    for (int64_t c = chunks * thread / n_threads; c < chunks * (thread + 1) / n_threads; ++c) {
      const int64_t lo = c * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
      st.acc_lo = st.acc_hi = f64v{};
      if constexpr (std::is_same_v<S, T>) {
        run_range<T>(fn, op, b, a.x + lo, a.grad ? a.grad + lo : nullptr, lo, hi, y_pad, st);
      } else {
        alignas(64) float xs[kBlock16], gs[kBlock16];
        for (int64_t s = lo; s < hi; s += kBlock16) {
          const int64_t e = s + kBlock16 < hi ? s + kBlock16 : hi;
          to_float_block(a.x + s, xs, e - s);
          run_range<T>(fn, op, b, xs, a.grad ? gs : nullptr, s, e, y_pad, st);
          if (a.grad) from_float_block(gs, a.grad + s, e - s);
        }
      }
      chunk_sum[c] = hsum(st.acc_lo + st.acc_hi);
    }
    int64_t neg = 0, zero = 0, bad = 0;
    for (int i = 0; i < W; ++i) neg += st.c_neg[i], zero += st.c_zero[i], bad += st.c_bad[i];
    n_neg += neg, n_zero += zero, n_bad += bad;
  });
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c) total += chunk_sum[c];
  a.label_counts[0] = n_neg;
  a.label_counts[1] = n_zero;
  a.label_counts[2] = n_bad;
  return total;
}

template <class S, class Op> double run(PointwiseArgs<S>& a, const Op& op) {
  using T = compute_t<S>;
  const BlockFn<T> fn = a.grad ? &run_block<T, Op, true> : &run_block<T, Op, false>;
  // the losses with an exp or a log per element: all but the five below
  constexpr bool kExp = !std::is_same_v<Op, Mse> && !std::is_same_v<Op, L1> &&
                        !std::is_same_v<Op, Huber> && !std::is_same_v<Op, SmoothL1> &&
                        !std::is_same_v<Op, Hinge>;
  // hinge: a padded label 1 counts as none of -1, 0 or "bad"
  return drive<S>(a, fn, &op, std::is_same_v<Op, Hinge> ? T(1) : T(0), kExp ? kExpWork : 1);
}

template <class S> double pointwise_impl(PointwiseArgs<S>& a) {
  switch (a.kind) {
    case PointwiseKind::kMse: return run(a, Mse{});
    case PointwiseKind::kL1: return run(a, L1{});
    case PointwiseKind::kHuber: return run(a, Huber{a.p0});
    case PointwiseKind::kSmoothL1: return run(a, SmoothL1{a.p0});
    case PointwiseKind::kBceLogits:
      return a.pos_weight ? run(a, BceLogits<true>{}) : run(a, BceLogits<false>{});
    case PointwiseKind::kBce: return run(a, Bce{});
    case PointwiseKind::kSigmoidFocal:
      if (a.p1 == 2) return run(a, SigmoidFocal<2>{a.p0, a.p1});
      if (a.p1 == 1) return run(a, SigmoidFocal<1>{a.p0, a.p1});
      if (a.p1 == 0) return run(a, SigmoidFocal<0>{a.p0, a.p1});
      return run(a, SigmoidFocal<-1>{a.p0, a.p1});
    case PointwiseKind::kHinge: return run(a, Hinge{a.p0, a.p1 != 0});
    case PointwiseKind::kKlDiv:
      return a.p0 != 0 ? run(a, KlDiv<true>{}) : run(a, KlDiv<false>{});
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

#define FASTLOSS_STR2(x) #x
#define FASTLOSS_STR(x) FASTLOSS_STR2(x)
extern const PointwiseTable pointwise_table;
const PointwiseTable pointwise_table = {
#define FASTLOSS_PW_ROW(sfx, S) &pointwise_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_PW_ROW)
#undef FASTLOSS_PW_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
