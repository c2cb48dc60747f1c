// Issue 16's elementwise losses from PyTorch's catalogue (Poisson and Gaussian NLL, margin
// ranking, hinge embedding, soft margin, multilabel soft margin) and the two optax/Keras ones
// (log-cosh, generalized KL). One driver reads every operand once and writes the per-element
// loss (reduction "none") and both gradients in the same pass, summing the losses in float64;
// each loss is a small functor with its formulas. Also the multilabel margin loss, per row.
#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

#include "pairs.hpp"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "simd_math.hpp"

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

constexpr int kSlotChunkSums = kScratchSlots - 1;  // (the calling thread's; see thread_scratch)

#define FL_INLINE inline __attribute__((always_inline))

template <class T> using V = vec_t<T>;
template <class T> using M = typename Vec<T>::itype;  // lane masks (-1 where true)
template <class T> inline V<T> splat(double v) { return vset<T>(T(v)); }
// |v| by clearing the sign bit (one operation; NaN stays NaN)
template <class T> inline V<T> vabs(V<T> v) {
  using E = std::conditional_t<std::is_same_v<T, float>, int32_t, int64_t>;
  return V<T>(M<T>(v) & (M<T>{} + std::numeric_limits<E>::max()));
}
// max(v, 0) keeping NaN (and -0): x86's max returns its second operand where either is NaN
template <class T> inline V<T> relu(V<T> v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) return V<T>(_mm512_max_ps(__m512{}, __m512(v)));
  else return V<T>(_mm512_max_pd(__m512d{}, __m512d(v)));
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) return V<T>(_mm256_max_ps(__m256{}, __m256(v)));
  else return V<T>(_mm256_max_pd(__m256d{}, __m256d(v)));
#elif defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) return V<T>(_mm_max_ps(__m128{}, __m128(v)));
  else return V<T>(_mm_max_pd(__m128d{}, __m128d(v)));
#else
  return vselect(v < V<T>{}, V<T>{}, v);
#endif
}
// sign(d): 0 at 0, NaN for NaN (torch.sign)
template <class T> inline V<T> vsign(V<T> d) {
  V<T> s = vselect(d > V<T>{}, splat<T>(1), vselect(d < V<T>{}, splat<T>(-1), V<T>{}));
  return vselect(d != d, d, s);
}

// exp(x) for any x: +inf above the float range, 0 below it, NaN propagates (vexp's results).
// AVX-512 float: vexp_table after clamping x to [-104, 100] (its vscalefps overflows to inf by
// itself; the constants first, so that a NaN x is what comes out), half the operations of vexp.
// AVX2 float: vexp's reduction with x clamped to [-126 ln 2, 89] and no selects after it: at the
// low clamp 2^(n-1) has exponent bits 0 (the result is 0, as vexp's below its range), at the
// high one 2^(n-1) * 2 overflows to inf; a NaN x passes both clamps (min / max return their
// second operand where either is NaN) and the polynomial.
template <class T> FL_INLINE V<T> exp_any(V<T> x) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    return vexp_table(f32v(_mm512_max_ps(__m512(splat<T>(-104)),
                                         _mm512_min_ps(__m512(splat<T>(100)), __m512(x)))));
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    const f32v xc = f32v(_mm256_max_ps(_mm256_set1_ps(-87.3365448f),
                                       _mm256_min_ps(_mm256_set1_ps(89.0f), __m256(x))));
    const f32v shifter = vset<float>(12582912.0f);
    const f32v t = xc * vset<float>(1.44269504088896341f) + shifter, n = t - shifter;
    f32v r = xc - n * vset<float>(0.693359375f);
    r = r - n * vset<float>(-2.12194440e-4f);
    const i32v bits = (i32v(t) - i32v(shifter) + 126) << 23;  // 2^(n-1), n in [-126, 128]
    f32v scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return exp_poly(r) * scale * vset<float>(2.0f);
  }
#endif
  return vexp(x);
}
constexpr double kLn2 = 0.69314718055994530942;
constexpr double kLog2Pi = 1.83787706640934548356;  // log(2 pi)

// Each functor: op(x, x2, y, l, g, g2, bad) sets the loss l, d l / d x in g, d l / d x2 in g2
// (kTwo functors only) and marks invalid lanes in bad. kTwo: x2 is an operand.
// ---------------------------------------------------------------------------------------------
// poisson_nll_loss (torch), rate given as log (log_input) or as is:
//   log_input:  l = exp(x) - y x                   g = exp(x) - y
//   else:       l = x - y log(x + eps)             g = 1 - y / (x + eps)    (x < 0: invalid)
//               (y = 0: l = x, g = 1, also where x + eps = 0)
//   full: + y log y - y + 0.5 log(2 pi y) where y > 1 (Stirling's approximation of log y!)
// ---------------------------------------------------------------------------------------------
template <bool kLogInput> struct PoissonNll {  // (two bodies: no branch on log_input per vector)
  static constexpr bool kTwo = false;
  double eps;
  bool full;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T>, V<T> y, V<T>& l, V<T>& g, V<T>&, M<T>& bad) const {
    const V<T> zero{}, one = splat<T>(1);
    if constexpr (kLogInput) {
      const V<T> e = exp_any<T>(x);
      l = vselect(y == zero, e, e - y * x);
      g = e - y;
    } else {
      const V<T> u = x + splat<T>(eps);
      l = x - vselect(y == zero, zero, y * vlog_table(u));
      g = one - vselect(y == zero, zero, y / u);
      bad = M<T>(x < zero);
    }
    if (full) {
      const V<T> ly = vlog_table(vselect(y > one, y, one));
      const V<T> st = y * (ly - one) + splat<T>(0.5) * (ly + splat<T>(kLog2Pi));
      l += vselect(y > one, st, zero);
    }
  }
};
// ---------------------------------------------------------------------------------------------
// gaussian_nll_loss (torch), x2 = var, v = max(var, eps) (the clamp is not differentiated, as
// torch's no_grad clamp: the gradient flows to var as if v were var), d = x - y:
//   l = 0.5 (log v + d^2 / v)  (+ 0.5 log(2 pi) if full)
//   g = d / v                 g2 = 0.5 (1 / v - d^2 / v^2)            (var < 0: invalid)
// ---------------------------------------------------------------------------------------------
struct GaussianNll {
  static constexpr bool kTwo = true;
  double eps;
  bool full;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T> var, V<T> y, V<T>& l, V<T>& g, V<T>& g2,
                            M<T>& bad) const {
    const V<T> e = splat<T>(eps), half = splat<T>(0.5);
    bad = M<T>(var < V<T>{});
    const V<T> v = vselect(var < e, e, var);
    const V<T> inv = splat<T>(1) / v, d = x - y, q = d * inv;
    l = half * (vlog_table(v) + d * q);
    if (full) l += splat<T>(0.5 * kLog2Pi);
    g = q;
    g2 = half * (inv - q * q);
  }
};
// ---------------------------------------------------------------------------------------------
// margin_ranking_loss (torch): z = margin - y (x1 - x2)
//   l = max(0, z)       g = -y [z >= 0]       g2 = y [z >= 0]
// (the kink z = 0 passes the gradient, as torch's clamp_min; NaN z gives NaN everywhere)
// ---------------------------------------------------------------------------------------------
struct MarginRanking {
  static constexpr bool kTwo = true;
  double margin;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T> x2, V<T> y, V<T>& l, V<T>& g, V<T>& g2, M<T>&) const {
    const V<T> z = splat<T>(margin) - y * (x - x2);
    l = relu<T>(z);
    const V<T> gy = vselect(z != z, z, vselect(z >= V<T>{}, y, V<T>{}));
    g = V<T>{} - gy;  // (0, not -0, where inactive)
    g2 = gy;
  }
};
// ---------------------------------------------------------------------------------------------
// hinge_embedding_loss (torch), y in {-1, +1}:
//   y = +1: l = x,                g = 1
//   y = -1: l = max(0, margin - x),  g = -[margin - x >= 0]   (torch's clamp_min at the kink)
// ---------------------------------------------------------------------------------------------
struct HingeEmbedding {
  static constexpr bool kTwo = false;
  double margin;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T>, V<T> y, V<T>& l, V<T>& g, V<T>&, M<T>& bad) const {
    const V<T> one = splat<T>(1), z = splat<T>(margin) - x;
    const auto pos = y == one;
    bad = ~(M<T>(pos) | M<T>(y == -one));
    l = vselect(pos, x, relu<T>(z));
    const V<T> gneg = vselect(z != z, z, vselect(z >= V<T>{}, -one, V<T>{}));
    g = vselect(pos, one, gneg);
  }
};
// softplus(t) = log(1 + exp(t)) = max(t, 0) + log1p(exp(-|t|)) and sigmoid(t) from the same
// e = exp(-|t|): no overflow for any t, no cancellation.
template <class T> FL_INLINE void softplus_sigmoid(V<T> t, V<T>& sp, V<T>& sig) {
  V<T> e, l1pe;
  exp_log1p_neg(vabs<T>(t), e, l1pe);
  const V<T> one = splat<T>(1), big = one / (one + e);
  sp = relu<T>(t) + l1pe;
  sig = vselect(t >= V<T>{}, big, e * big);
  sig = vselect(t != t, t, sig);
}
// ---------------------------------------------------------------------------------------------
// soft_margin_loss (torch): t = -y x
//   l = log(1 + exp(t)) = softplus(t)       g = -y sigmoid(t)
// ---------------------------------------------------------------------------------------------
struct SoftMargin {
  static constexpr bool kTwo = false;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T>, V<T> y, V<T>& l, V<T>& g, V<T>&, M<T>&) const {
    V<T> sig;
    softplus_sigmoid<T>(-y * x, l, sig);
    g = -y * sig;
  }
};
// ---------------------------------------------------------------------------------------------
// multilabel_soft_margin_loss (torch), per element before the weight and the 1/C of the row:
//   l = -(y log sigmoid(x) + (1 - y) log sigmoid(-x))
//     = [x >= 0 ? (1 - y) x : -y x] + log1p(exp(-|x|))    (two non-negative terms for y in [0, 1])
//   g = sigmoid(x) - y = x >= 0 ? (1 - y) - e / (1 + e) : e / (1 + e) - y,  e = exp(-|x|)
// ---------------------------------------------------------------------------------------------
struct MultilabelSoftMargin {
  static constexpr bool kTwo = false;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T>, V<T> y, V<T>& l, V<T>& g, V<T>&, M<T>&) const {
    V<T> e, l1pe;
    exp_log1p_neg(vabs<T>(x), e, l1pe);
    const V<T> one = splat<T>(1), big = one / (one + e);
    const auto pos = x >= V<T>{};
    l = vselect(pos, (one - y) * x, -y * x) + l1pe;
    l = vselect(x != x, x, l);
    // x >= 0: sigmoid(x) = 1 - e/(1 + e), so g = (1 - y) - e/(1 + e): no cancellation for y
    // near 1 (e.g. y = 1, large x, where 1/(1 + e) - 1 would keep only the rounding of 1/(1 + e))
    const V<T> eb = e * big;
    g = vselect(pos, (one - y) - eb, eb - y);
    g = vselect(x != x, x, g);
  }
};
// ---------------------------------------------------------------------------------------------
// log_cosh_loss (optax / Keras): d = x - y, a = |d|
//   l = log cosh d          g = tanh d = sign(d) tanh(a)
// (float32 and float64 by different forms, below; both accurate near 0, where
// a + log1p(exp(-2a)) - log 2 alone would lose the small result)
// ---------------------------------------------------------------------------------------------
// expm1(x) for 0 <= x <= 20 (or NaN): x = n ln 2 + r, |r| <= ln2/2 (Cody-Waite, r exact),
// expm1(x) = 2^n expm1(r) + (2^n - 1), expm1(r) by its polynomial: no cancellation near 0
// (n = 0), 2^n - 1 exact.
template <class T> FL_INLINE V<T> expm1_0_20(V<T> x) {
  using I = M<T>;
  constexpr bool f32 = std::is_same_v<T, float>;
  const V<T> shifter = splat<T>(f32 ? 12582912.0 : 6755399441055744.0);
  const V<T> t = x * splat<T>(1.4426950408889634074) + shifter, n = t - shifter;
  V<T> r = x - n * splat<T>(f32 ? 0.693359375 : 6.93147180369123816490e-01);
  r = r - n * splat<T>(f32 ? -2.12194440e-4 : 1.90821492927058770002e-10);
  const V<T> p = expm1_poly(r);
  const I bits = ((I(t) - I(shifter)) + I{} + (f32 ? 127 : 1023)) << (f32 ? 23 : 52);
  V<T> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return scale * p + (scale - splat<T>(1));
}

// float32: without the division and the log of a sum (the threshold 0.75 keeps both forms
// within ~1 ulp; tests/test_pairs.py checks the range around it):
//   a < 0.75:  l = s (1/2 + s Q(s)), s = a^2, Q a minimax fit of (log cosh a - s/2) / s^2
//              (relative error 2e-8);  tanh a = a + a s R(s), R a fit of (tanh(a)/a - 1) / s
//   a >= 0.75: l = (a - ln 2) + log1p(e), e = exp(-2a) (no cancellation: l >= 0.26);
//              tanh a = (1 - e) / (1 + e) (e <= 0.23: 1 - e exact to half an ulp)
//   (both forms computed for every lane and selected; a NaN takes the second, NaN, form)
struct LogCosh {
  static constexpr bool kTwo = false;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T>, V<T> y, V<T>& l, V<T>& g, V<T>&, M<T>&) const {
    if constexpr (std::is_same_v<T, float>) {
      const V<T> d = x - y, a = vabs<T>(d), one = splat<T>(1);
      V<T> e, l1pe;
      exp_log1p_neg(a + a, e, l1pe);
      // ln 2 = 0.693359375 - 2.12194440e-4 (a - 0.693359375 exact for a in [0.75, 2))
      const V<T> lbig = (a - splat<T>(0.693359375)) + (l1pe + splat<T>(2.12194440e-4));
      const V<T> s = a * a;
      V<T> q = splat<T>(-0x1.ee0442p-12);
      q = q * s + splat<T>(0x1.0f3644p-9);
      q = q * s + splat<T>(-0x1.b8a60cp-8);
      q = q * s + splat<T>(0x1.6c1076p-6);
      q = q * s + splat<T>(-0x1.55555p-4);
      const auto small = a < splat<T>(0.75);
      l = vselect(small, s * (s * q + splat<T>(0.5)), lbig);
      V<T> r = splat<T>(0x1.f73566p-10);
      r = r * s + splat<T>(-0x1.0470e2p-7);
      r = r * s + splat<T>(0x1.6242acp-6);
      r = r * s + splat<T>(-0x1.b9daa8p-5);
      r = r * s + splat<T>(0x1.11105p-3);
      r = r * s + splat<T>(-0x1.555554p-2);
      const V<T> t = vselect(small, (a * s) * r + a, (one - e) / (one + e));
      g = vselect(d < V<T>{}, -t, t);
    } else {
      // float64: d = x - y, a = |d|, E1 = expm1(a) (expm1_0_20):
      //   z = cosh(a) - 1 = E1^2 / (2 (E1 + 1))      tanh(a) = E1 (E1 + 2) / (E1 (E1 + 2) + 2)
      //   l = log cosh d = log1p(z) = log(u + c),  u = 1 + z rounded, c = (1 - u) + z exactly
      //   g = tanh d = sign(d) tanh(a)
      // (accurate near 0, where |d| + log1p(exp(-2|d|)) - log 2 loses the small result); for
      // a > 20 (exp(-2a) below the rounding of the result): l = a - log 2, g = sign(d)
      const V<T> d = x - y, a = vabs<T>(d), one = splat<T>(1), two = splat<T>(2);
      const auto big = a > splat<T>(20);
      const V<T> ac = vselect(big, V<T>{}, a);  // (NaN stays NaN)
      const V<T> E1 = expm1_0_20<T>(ac);
      // one division for both: z = E1^2 / (2 (E1 + 1)), t = E1 (E1 + 2) / (E1 (E1 + 2) + 2)
      const V<T> s2 = E1 * (E1 + two), w = s2 + two, p = (E1 + one) * two;
      const V<T> inv = one / (p * w);
      const V<T> z = E1 * E1 * w * inv;
      const V<T> t = s2 * p * inv;
      // log1p(z) = log(u + c): u = 1 + z rounded, c = (1 - u) + z its rounding error, exactly
      const V<T> u = one + z, c = (one - u) + z;
      const V<T> lz = vlog_sum(u, c);
      l = vselect(big, a - splat<T>(kLn2), lz);
      const V<T> tt = vselect(big, one, t);
      g = vselect(d < V<T>{}, -tt, tt);
      g = vselect(d != d, d, g);
    }
  }
};
// ---------------------------------------------------------------------------------------------
// generalized_kl_div (optax's convex_kl_divergence), x = log-predictions, y = targets >= 0:
//   l = y (log y - x) + exp(x) - y     (the first term 0 where y = 0)
//   g = exp(x) - y                                                      (y < 0: invalid)
// ---------------------------------------------------------------------------------------------
struct GeneralizedKl {
  static constexpr bool kTwo = false;
  template <class T>
  FL_INLINE void operator()(V<T> x, V<T>, V<T> y, V<T>& l, V<T>& g, V<T>&, M<T>& bad) const {
    const V<T> zero{}, e = exp_any<T>(x);
    bad = M<T>(y < zero);
    const auto y0 = y == zero;
    const V<T> kl = vselect(y0, zero, y * (vlog_nonzero(y, y0) - x));
    g = e - y;
    l = kl + g;
  }
};

// ---------------------------------------------------------------------------------------------
// The driver: n elements in fixed chunks over the threads; per element l_i = w_i loss_i,
// grad_i = grad_scale w_i dloss_i/dx_i (and grad2 likewise); returns sum_i l_i, the float64
// sums of the chunks added in chunk order (the same bits for any number of threads).
// The loss bodies run on compute-type blocks (run_block, one instance per functor, compute type
// and kGrad): 16-bit operands are converted to float32 in blocks that stay in L1, and a chunk's
// last partial vector goes through padded buffers; the optional operands (weights, per-element
// losses, grad2) are run-time choices. This keeps the number of copies of each loss body (the
// compile time and the library's size) small.
// ---------------------------------------------------------------------------------------------
template <class T> struct PassState {
  M<T> c_bad{};  // invalid operands per lane (masks are -1 where true)
  f64v acc_lo{}, acc_hi{};
};

template <class T> struct BlockArgs {
  const T* x;
  const T* x2;    // (kTwo functors)
  const T* y;
  const T* w;     // weights, or nullptr (all 1)
  T* loss;        // per-element losses, or nullptr
  T* grad;        // (kGrad)
  T* grad2;       // or nullptr
  int64_t n;      // a multiple of the vector width
  double grad_scale;
  int64_t prefetch;  // elements ahead to prefetch the operands (0: none)
};

// n elements (whole vectors). Losses are summed in partials of 8 vectors (in the compute type)
// before being widened into the float64 sum; the vectors after the last whole group are added
// one at a time. (noinline + flatten: one copy of the loss body per instance, every helper
// inlined into it)
template <class T, class Op, bool kGrad>
__attribute__((noinline, flatten)) void run_block(const void* op_ptr, const BlockArgs<T>& b,
                                                  PassState<T>& st) {
  const Op op = *static_cast<const Op*>(op_ptr);  // (a local copy: its parameters stay in
                                                   // registers, no aliasing with the outputs)
  using I = M<T>;
  constexpr int W = vec_width<T>;
  constexpr bool kTwo = Op::kTwo;
  const V<T> gs = splat<T>(b.grad_scale);
  const T *x = b.x, *x2 = b.x2, *y = b.y, *w = b.w;
  T *loss = b.loss, *grad = b.grad, *grad2 = b.grad2;
  I c_bad = st.c_bad;
  f64v acc_lo = st.acc_lo, acc_hi = st.acc_hi;
  auto add = [&](V<T> l) { add_widened(l, acc_lo, acc_hi); };
  for (int64_t j = 0; j < b.n;) {
    const int64_t m = j + 8 * W <= b.n ? 8 : 1;
    V<T> part{};
    for (int64_t k = 0; k < m; ++k, j += W) {  // (one copy of the body)
      if (b.prefetch) {
        __builtin_prefetch(x + j + b.prefetch);
        __builtin_prefetch(y + j + b.prefetch);
        if constexpr (kTwo) __builtin_prefetch(x2 + j + b.prefetch);
      }
      const V<T> xv = vload(x + j), yv = vload(y + j);
      V<T> x2v{};
      if constexpr (kTwo) x2v = vload(x2 + j);
      V<T> l, g, g2;
      I bad{};
      op.template operator()<T>(xv, x2v, yv, l, g, g2, bad);
      c_bad -= bad;
      V<T> ws = gs;
      if (w) {
        const V<T> wv = vload(w + j);
        l = l * wv;
        ws = wv * gs;
      }
      if (loss) vstore(loss + j, l);
      if constexpr (kGrad) {
        vstore(grad + j, g * ws);
        if constexpr (kTwo)
          if (grad2) vstore(grad2 + j, g2 * ws);
      }
      part += l;
    }
    add(part);
  }
  st.c_bad = c_bad;
  st.acc_lo = acc_lo, st.acc_hi = acc_hi;
}

template <class T> using BlockFn = void (*)(const void*, const BlockArgs<T>&, PassState<T>&);

// (16-bit operands go through float32 blocks: to_float_block / from_float_block, simd_math.hpp)

// Elements [lo, hi): whole vectors through fn, then the tail padded to a vector (x = 0, x2 = 1,
// y = 1: no functor counts these operands invalid; weight 0) through a scratch state, its real
// lanes' losses then added as a vector of their own (the padded lanes' as 0, even if inf * 0).
// x, x2, grad, grad2 already offset to lo by the caller (they may be blocks of a 16-bit operand).
template <class T>
void run_range(BlockFn<T> fn, const void* op, BlockArgs<T> b, const T* x, const T* x2, T* grad,
               T* grad2, int64_t lo, int64_t hi, PassState<T>& st) {
  constexpr int W = vec_width<T>;
  const int64_t whole = (hi - lo) / W * W;
  b.x = x, b.x2 = x2, b.grad = grad, b.grad2 = grad2;
  b.y += lo, b.w = b.w ? b.w + lo : nullptr, b.loss = b.loss ? b.loss + lo : nullptr;
  if (whole) {
    b.n = whole;
    fn(op, b, st);
  }
  const int64_t cnt = hi - lo - whole;
  if (cnt == 0) return;
  alignas(64) T xb[W], x2b[W], yb[W], wb[W], lb[W], gb[W], g2b[W];
  for (int i = 0; i < W; ++i) {
    const bool real = i < cnt;
    xb[i] = real ? x[whole + i] : T(0);
    x2b[i] = real && x2 ? x2[whole + i] : T(1);
    yb[i] = real ? b.y[whole + i] : T(1);
    wb[i] = real ? (b.w ? b.w[whole + i] : T(1)) : T(0);
  }
  BlockArgs<T> c = b;
  c.x = xb, c.x2 = x2b, c.y = yb, c.w = wb, c.loss = lb;
  c.grad = grad ? gb : nullptr, c.grad2 = grad2 ? g2b : nullptr;
  c.n = W;
  PassState<T> tail;  // (its sum is dropped: the padded lanes may hold inf or NaN)
  fn(op, c, tail);
  st.c_bad += tail.c_bad;
  for (int64_t i = cnt; i < W; ++i) lb[i] = T(0);
  const V<T> l = vload(lb);
  if constexpr (std::is_same_v<T, float>) {
    f64v l_lo, l_hi;
    widen(l, l_lo, l_hi);
    st.acc_lo += l_lo;
    st.acc_hi += l_hi;
  } else {
    st.acc_lo += l;
  }
  for (int64_t i = 0; i < cnt; ++i) {
    if (b.loss) b.loss[whole + i] = lb[i];
    if (grad) grad[whole + i] = gb[i];
    if (grad2) grad2[whole + i] = g2b[i];
  }
}

// (unit_work: threads_for's work per element)
template <class S>
double drive(PairwiseArgs<S>& a, BlockFn<compute_t<S>> fn, const void* op, int64_t unit_work) {
  using T = compute_t<S>;
  constexpr int W = vec_width<T>;
  constexpr int64_t kChunk = 8192;
  constexpr int64_t kBlock16 = 1024;  // 16-bit: float32 blocks of 4 KB (a multiple of 8 W)
  static_assert(kChunk % kBlock16 == 0 && kBlock16 % (8 * W) == 0, "block sizes");
  const int64_t n = a.n, chunks = (n + kChunk - 1) / kChunk;
  const int nt = threads_for(n * unit_work, chunks);
  double* chunk_sum = static_cast<double*>(thread_scratch(kSlotChunkSums, size_t(chunks) * 8));
  std::atomic<int64_t> n_bad{0};
  BlockArgs<T> b{};
  b.y = a.y, b.w = a.w, b.loss = a.loss, b.grad_scale = a.grad_scale;
  // software prefetch 4 KB ahead on the operands read in place (not the 16-bit path's float
  // blocks): the loss bodies are long dependency chains that hold the loads back; both forms
  // alternated in one process, 50M float32 elements, 2 threads: -5% to -12% time (median of 25
  // paired runs) for the exp/log losses and mse
  b.prefetch = std::is_same_v<S, T> ? int64_t(4096 / sizeof(T)) : 0;
  const bool two = a.x2 != nullptr;
  parallel_for(nt, [&](int64_t thread, int64_t n_threads) {
    PassState<T> st;
    // each thread one contiguous range of chunks
    for (int64_t c = chunks * thread / n_threads; c < chunks * (thread + 1) / n_threads; ++c) {
      const int64_t lo = c * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
      st.acc_lo = st.acc_hi = f64v{};
      if constexpr (std::is_same_v<S, T>) {
        run_range<T>(fn, op, b, a.x + lo, two ? a.x2 + lo : nullptr,
                     a.grad ? a.grad + lo : nullptr, a.grad2 ? a.grad2 + lo : nullptr, lo, hi,
                     st);
      } else {
        alignas(64) float xs[kBlock16], x2s[kBlock16], gs[kBlock16], g2s[kBlock16];
        for (int64_t s = lo; s < hi; s += kBlock16) {
          const int64_t e = s + kBlock16 < hi ? s + kBlock16 : hi;
          to_float_block(a.x + s, xs, e - s);
          if (two) to_float_block(a.x2 + s, x2s, e - s);
          run_range<T>(fn, op, b, xs, two ? x2s : nullptr, a.grad ? gs : nullptr,
                       a.grad2 ? g2s : nullptr, s, e, st);
          if (a.grad) from_float_block(gs, a.grad + s, e - s);
          if (a.grad2) from_float_block(g2s, a.grad2 + s, e - s);
        }
      }
      chunk_sum[c] = hsum(st.acc_lo + st.acc_hi);
    }
    int64_t bad = 0;
    for (int i = 0; i < W; ++i) bad += st.c_bad[i];
    n_bad += bad;
  });
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c) total += chunk_sum[c];
  a.n_bad = n_bad;
  return total;
}

template <class S, class Op> double run(PairwiseArgs<S>& a, const Op& op) {
  using T = compute_t<S>;
  // every loss here but the two margin ones takes an exp or a log per element
  constexpr bool kExp = !std::is_same_v<Op, MarginRanking> && !std::is_same_v<Op, HingeEmbedding>;
  return drive<S>(a, a.grad ? &run_block<T, Op, true> : &run_block<T, Op, false>, &op,
                  kExp ? kExpWork : 1);
}

template <class S> double pairwise_impl(PairwiseArgs<S>& a) {
  switch (a.kind) {
    case PairKind::kPoissonNll:
      return a.log_input ? run(a, PoissonNll<true>{a.p0, a.full})
                         : run(a, PoissonNll<false>{a.p0, a.full});
    case PairKind::kGaussianNll: return run(a, GaussianNll{a.p0, a.full});
    case PairKind::kMarginRanking: return run(a, MarginRanking{a.p0});
    case PairKind::kHingeEmbedding: return run(a, HingeEmbedding{a.p0});
    case PairKind::kSoftMargin: return run(a, SoftMargin{});
    case PairKind::kMultilabelSoftMargin: return run(a, MultilabelSoftMargin{});
    case PairKind::kLogCosh: return run(a, LogCosh{});
    case PairKind::kGeneralizedKl: return run(a, GeneralizedKl{});
  }
  return std::numeric_limits<double>::quiet_NaN();
}

// The invalid operands pairwise counts (n_bad), alone: one read of the operand checked.
template <class S> int64_t count_invalid_impl(const PairwiseArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t n = a.n;
  const int nt = threads_for(n, (n + 65535) / 65536);
  std::atomic<int64_t> total{0};
  parallel_for(nt, [&](int64_t t, int64_t m) {
    const int64_t lo = n * t / m, hi = n * (t + 1) / m;
    int64_t c = 0;
    switch (a.kind) {
      case PairKind::kHingeEmbedding:
        for (int64_t i = lo; i < hi; ++i) c += int64_t(a.y[i] != T(1) && a.y[i] != T(-1));
        break;
      case PairKind::kGeneralizedKl:
        for (int64_t i = lo; i < hi; ++i) c += int64_t(a.y[i] < T(0));
        break;
      case PairKind::kPoissonNll:
        if (!a.log_input)
          for (int64_t i = lo; i < hi; ++i) c += int64_t(to_compute(a.x[i]) < T(0));
        break;
      case PairKind::kGaussianNll:
        for (int64_t i = lo; i < hi; ++i) c += int64_t(to_compute(a.x2[i]) < T(0));
        break;
      default:
        break;
    }
    total += c;
  });
  return total;
}

// ---------------------------------------------------------------------------------------------
// multilabel_margin_loss (torch), per row with target classes J (the entries before the first
// -1; a repeated class counts as often as it is listed, as torch) and z_ji = 1 - x_j + x_i:
//   loss = sum_{j in J} sum_{i not in J} max(0, z_ji) / C
//   d/dx_i += s/C, d/dx_j -= s/C for each pair with z_ji > 0   (s = grad_scale)
// (z computed in the compute type, (1 - x_j) + x_i, as torch; a NaN z counts 0, as torch)
// Vectors over i: the row is copied with -inf at the target classes (and the padding past C),
// where z is -inf or NaN and so never counts, in place of a per-pair test (whose branches,
// mispredicted on random targets, were most of a small call's time). The pair sums are
// float64 lanes, added up per row. (1000 x 100 float32 with the gradient: 0.10 of the time.)
// ---------------------------------------------------------------------------------------------
template <class S> void multilabel_margin_impl(const MultilabelMarginArgs<S>& a) {
  using T = compute_t<S>;
  constexpr int W = vec_width<T>;
  const int64_t rows = a.rows, C = a.C;
  const int64_t Cp = (C + W - 1) / W * W;  // (padded to whole vectors)
  const int nt = threads_for(rows * (C > 0 ? C : 1), rows);
  parallel_for(nt, [&](int64_t t, int64_t n_threads) {
    std::vector<T> xr(size_t(C > 0 ? C : 1));
    std::vector<T> xm(size_t(Cp > 0 ? Cp : W));  // the row, -inf at targets and padding
    std::vector<T> gr(size_t(Cp > 0 ? Cp : W));
    std::vector<T> cnt(size_t(C > 0 ? C : 1));  // pairs counted per listed target
    const T unit = T(a.grad_scale / double(C > 0 ? C : 1));
    const V<T> vunit = splat<T>(unit), vone = splat<T>(1), zero{};
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t r = rows * t / n_threads; r < rows * (t + 1) / n_threads; ++r) {
      const S* xp = a.x + r * a.s0;
      const int64_t* tp = a.target + r * C;
      for (int64_t i = 0; i < C; ++i) xm[i] = xr[i] = to_compute(xp[i * a.s1]);
      for (int64_t i = C; i < Cp; ++i) xm[i] = ninf;
      for (int64_t i = 0; i < Cp; ++i) gr[i] = T(0);
      int64_t k = 0;
      while (k < C && tp[k] >= 0) xm[tp[k++]] = ninf;
      f64v lo{}, hi{};
      for (int64_t jj = 0; jj < k; ++jj) {
        const int64_t j = tp[jj];
        const V<T> base = splat<T>(T(1) - xr[j]);
        V<T> count{};
        for (int64_t i = 0; i < Cp; i += W) {
          const V<T> z = base + vload(xm.data() + i);
          const auto on = z > zero;
          add_widened(vselect(on, z, zero), lo, hi);
          count += vselect(on, vone, zero);
          vstore(gr.data() + i, vload(gr.data() + i) + vselect(on, vunit, zero));
        }
        T c = T(0);
        for (int l = 0; l < W; ++l) c += count[l];  // (whole numbers: exact)
        cnt[jj] = c;
      }
      // (after the loop: a scalar store into gr here made the next 32-byte load of it wait;
      // the targets' entries take no + unit, so the order of the sums is unchanged)
      for (int64_t jj = 0; jj < k; ++jj) gr[tp[jj]] -= cnt[jj] * unit;
      a.loss[r] = hsum(lo + hi) / double(C);  // (hi stays 0 for float64)
      if (a.grad) {
        S* gp = a.grad + r * a.g0;
        for (int64_t i = 0; i < C; ++i) gp[i * a.g1] = from_compute<S>(gr[i]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// triplet_margin_loss (pairs.hpp), row by row in float64: the three distances in one pass over
// the row, the gradients in a second (the differences formed again, not stored). The norm's
// forms and its gradient at PyTorch's conventions (0 at a norm of 0, ties of the max norm
// sharing equally, sign(x) (|x| / d)^(q - 1) with 0 at x = 0) are those of the NumPy code this
// replaces, operation for operation but for the order of the sums.
// ---------------------------------------------------------------------------------------------
struct NormAcc {  // the running reductions of one difference row
  double s[4] = {0, 0, 0, 0};  // sum of x^2 (q = 2) or |x| (q = 1), four partial sums
  double big = 0;              // max |x| (NaN if any x is NaN)
  bool nan = false;
};
inline double triplet_sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : x; }  // (NaN, +-0 kept)
// y^e for y >= 0, by products where e is 2, 3 or 4 (q = 3, 4 and their gradients' powers;
// std::pow took most of their time) and a square root for 0.5
inline double triplet_pow(double y, double e) {
  if (e == 2) return y * y;
  if (e == 3) return (y * y) * y;
  if (e == 4) return (y * y) * (y * y);
  if (e == 0.5) return std::sqrt(y);
  return std::pow(y, e);
}
template <class S> void triplet_margin_impl(const TripletArgs<S>& a) {
  const int64_t rows = a.rows, D = a.D;
  const double q = a.norm_p, eps = a.eps;
  const int kind = q == 2 ? 2 : q == 1 ? 1 : std::isinf(q) ? 0 : 3;  // (3: any other q)
  const int nt = threads_for(rows * (D > 0 ? D : 1) * 3, rows);
  auto val = [](const S* b, int64_t s1, int64_t i) { return double(to_compute(b[i * s1])); };
  parallel_for(nt, [&](int64_t t, int64_t n_threads) {
    for (int64_t r = rows * t / n_threads; r < rows * (t + 1) / n_threads; ++r) {
      const S *ap = a.a + r * a.a0, *pp = a.p + r * a.p0, *np_ = a.n + r * a.n0;
      NormAcc acc[3];  // (a - p, a - n, p - n)
      auto add = [&](NormAcc& c, int l, double x) __attribute__((always_inline)) {
        const double ax = std::fabs(x);
        if (kind == 2) c.s[l] += x * x;
        else if (kind == 1) c.s[l] += ax;
        else {
          c.nan |= x != x;
          c.big = ax > c.big ? ax : c.big;
        }
      };
      // (four elements a step, one partial sum each: the sums' chains run side by side)
      auto step = [&](int64_t i, int l, auto swap_tag) __attribute__((always_inline)) {
        const double va = val(ap, a.a1, i), vp = val(pp, a.p1, i), vn = val(np_, a.n1, i);
        add(acc[0], l, (va - vp) + eps);
        add(acc[1], l, (va - vn) + eps);
        if constexpr (decltype(swap_tag)::value) add(acc[2], l, (vp - vn) + eps);
      };
      auto pass = [&](auto swap_tag) __attribute__((always_inline)) {
        int64_t i = 0;
        for (; i + 4 <= D; i += 4)
          for (int l = 0; l < 4; ++l) step(i + l, l, swap_tag);
        for (int l = 0; i < D; ++i, ++l) step(i, l, swap_tag);
      };
      if (a.swap) pass(std::true_type{});
      else pass(std::false_type{});
      double d[3] = {0, 0, 0};
      for (int k = 0; k < (a.swap ? 3 : 2); ++k) {
        NormAcc& c = acc[k];
        const double sum = (c.s[0] + c.s[1]) + (c.s[2] + c.s[3]);
        if (kind == 2) {
          d[k] = std::sqrt(sum);
        } else if (kind == 1) {
          d[k] = sum;
        } else if (c.nan) {
          d[k] = std::numeric_limits<double>::quiet_NaN();
        } else if (kind == 0 || std::isinf(c.big)) {
          d[k] = c.big;
        } else if (c.big > 0) {  // big (sum (|x| / big)^q)^(1/q): no overflow or underflow
          double s = 0;
          for (int64_t i = 0; i < D; ++i) {
            const double va = val(ap, a.a1, i), o = k == 1 || k == 0 ? va : val(pp, a.p1, i);
            const double w = k == 0 ? val(pp, a.p1, i) : val(np_, a.n1, i);
            s += triplet_pow(std::fabs((o - w) + eps) / c.big, q);
          }
          d[k] = c.big * std::pow(s, 1.0 / q);
        } else {
          d[k] = 0;
        }
      }
      const double dneg = a.swap ? (d[1] != d[1] || d[2] != d[2] ? d[1] + d[2]
                                    : d[1] < d[2] ? d[1] : d[2])
                                 : d[1];
      const double z = a.margin + d[0] - dneg;
      a.loss[r] = z != z ? z : z > 0 ? z : 0.0;
      if (!a.ga) continue;
      const double c = z >= 0 ? a.grad_scale : 0.0;  // the hinge's gradient, as clamp_min's
      // swap: minimum(d_an, d_pn) sends the gradient to the smaller, half each on a tie
      const double w_an = !a.swap ? 1.0 : d[1] < d[2] ? 1.0 : d[1] == d[2] ? 0.5 : 0.0;
      double cnt[3] = {1, 1, 1};  // (max norm: the entries at the maximum share its gradient)
      if (kind == 0) {
        for (int k = 0; k < 3; ++k) cnt[k] = 0;
        for (int64_t i = 0; i < D; ++i) {
          const double va = val(ap, a.a1, i), vp = val(pp, a.p1, i), vn = val(np_, a.n1, i);
          cnt[0] += std::fabs((va - vp) + eps) == d[0];
          cnt[1] += std::fabs((va - vn) + eps) == d[1];
          if (a.swap) cnt[2] += std::fabs((vp - vn) + eps) == d[2];
        }
        for (int k = 0; k < 3; ++k) cnt[k] = cnt[k] > 1 ? cnt[k] : 1;
      }
      double inv[3];
      for (int k = 0; k < 3; ++k) inv[k] = d[k] > 0 ? 1.0 / d[k] : 0.0;
      // d ||x||_q / dx for the difference x of norm d[k]
      auto unit = [&](double x, int k) {
        if (kind == 2) return x * inv[k];
        if (kind == 1) return triplet_sign(x);
        if (kind == 0) return triplet_sign(x) * double(std::fabs(x) == d[k]) / cnt[k];
        if (x == 0 || d[k] == 0) return 0.0;
        const double safe = d[k] > 0 ? d[k] : 1.0;
        return triplet_sign(x) * triplet_pow(std::fabs(x) / safe, q - 1);
      };
      S *ga = a.ga + r * D, *gp = a.gp + r * D, *gn = a.gn + r * D;
      for (int64_t i = 0; i < D; ++i) {
        const double va = val(ap, a.a1, i), vp = val(pp, a.p1, i), vn = val(np_, a.n1, i);
        const double u_ap = unit((va - vp) + eps, 0) * c;
        double u_an = unit((va - vn) + eps, 1) * c, u_pn = 0.0;
        if (a.swap) {
          u_an *= w_an;
          u_pn = unit((vp - vn) + eps, 2) * c * (1.0 - w_an);
        }
        ga[i] = from_compute<S>(compute_t<S>(u_ap - u_an));
        gp[i] = from_compute<S>(compute_t<S>(-u_ap - u_pn));
        gn[i] = from_compute<S>(compute_t<S>(u_an + u_pn));
      }
    }
  });
}

}  // namespace

extern const PairTable pair_table;
const PairTable pair_table = {
#define FASTLOSS_PAIR_ROW(sfx, S) &pairwise_impl<S>, &count_invalid_impl<S>, &multilabel_margin_impl<S>, &triplet_margin_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_PAIR_ROW)
#undef FASTLOSS_PAIR_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
