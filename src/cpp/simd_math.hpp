// SIMD math shared by every kernel: fixed-width vector types and exp.
//
// The vectors are GCC/Clang vector extensions as wide as the target's registers (64 bytes for
// AVX-512, 32 for AVX2, 16 for SSE2). The same source compiles for each instruction set, which
// is what lets one kernel source be built once per ISA and dispatched at run time.
//
// exp is our own (Cody-Waite range reduction + polynomial, 2^n built from the exponent bits):
// glibc's vector expf reaches ~1.4 G exp/s per core and would halve the fused bandwidth.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <limits>

#include "kernels.hpp"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

// The math below is forced inline: as plain "inline" functions GCC left vexp_capped,
// vlog1p_f32acc and others out of line in the larger kernels (391 calls of the AVX2 float exp),
// and every call spilled the caller's vector registers (the SysV ABI saves none of them).
#define FL_ALWAYS_INLINE inline __attribute__((always_inline))

namespace fastloss {
// Internal linkage: each translation unit (one per instruction set) keeps its own copy, so the
// linker can never hand an AVX-512 body to the baseline kernels.
namespace {

// Native vector width of the instruction set this file is compiled for: an operation on a
// wider GCC vector than the hardware has is lowered element by element (max and select become
// scalar code), so the width follows the target.
#if defined(__AVX512F__)
#define FASTLOSS_VEC_BYTES 64
#elif defined(__AVX__)
#define FASTLOSS_VEC_BYTES 32
#else
#define FASTLOSS_VEC_BYTES 16
#endif

typedef float f32v __attribute__((vector_size(FASTLOSS_VEC_BYTES)));
typedef int32_t i32v __attribute__((vector_size(FASTLOSS_VEC_BYTES)));
typedef double f64v __attribute__((vector_size(FASTLOSS_VEC_BYTES)));
typedef int64_t i64v __attribute__((vector_size(FASTLOSS_VEC_BYTES)));
typedef float f32h __attribute__((vector_size(FASTLOSS_VEC_BYTES / 2)));  // half an f32v

template <class T> struct Vec;
template <> struct Vec<float> {
  using type = f32v;
  using itype = i32v;
  static constexpr int width = FASTLOSS_VEC_BYTES / 4;
};
template <> struct Vec<double> {
  using type = f64v;
  using itype = i64v;
  static constexpr int width = FASTLOSS_VEC_BYTES / 8;
};
template <class T> using vec_t = typename Vec<T>::type;
template <class T> constexpr int vec_width = Vec<T>::width;

template <class T> inline vec_t<T> vload(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class T> inline void vstore(T* p, vec_t<T> v) { std::memcpy(p, &v, sizeof(v)); }
template <class T> inline vec_t<T> vset(T x) { return vec_t<T>{} + x; }

// Non-temporal (streaming) store of one vector: p must be aligned to the vector size. Used for
// outputs larger than the last-level cache, which would otherwise be read before being written
// (write-allocate) and evict the inputs.
template <class V> inline void vstream(void* p, V v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(v[0]) == 4) _mm512_stream_ps(static_cast<float*>(p), __m512(v));
  else _mm512_stream_pd(static_cast<double*>(p), __m512d(v));
#elif defined(__AVX__)
  if constexpr (sizeof(v[0]) == 4) _mm256_stream_ps(static_cast<float*>(p), __m256(v));
  else _mm256_stream_pd(static_cast<double*>(p), __m256d(v));
#elif defined(__SSE2__)
  if constexpr (sizeof(v[0]) == 4) _mm_stream_ps(static_cast<float*>(p), __m128(v));
  else _mm_stream_pd(static_cast<double*>(p), __m128d(v));
#else
  std::memcpy(p, &v, sizeof(v));
#endif
}
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Lane-wise select: mask lanes are all-ones (true) or zero, as produced by vector compares.
// With AVX2/AVX-512 the vector ternary maps to blend instructions; without them GCC lowers it
// element by element, so the baseline build selects with bitwise and/or instead.
template <class V, class M> inline V vselect(M mask, V a, V b) {
#if defined(__AVX2__)
  return mask ? a : b;
#else
  return V((mask & M(a)) | (~mask & M(b)));
#endif
}

template <class T> inline vec_t<T> vmax(vec_t<T> a, vec_t<T> b) { return vselect(a > b, a, b); }

template <class T> inline T hmax(vec_t<T> v) {
  T m = v[0];
  for (int i = 1; i < vec_width<T>; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// Horizontal sum in double (pairwise over the lanes).
template <class V> inline double hsum(V v) {
  constexpr int n = sizeof(V) / sizeof(v[0]);
  double s[n];
  for (int i = 0; i < n; ++i) s[i] = double(v[i]);
  for (int w = n / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) s[i] += s[i + w];
  return s[0];
}

// Widen a float vector into two double vectors (low and high halves). With intrinsics on
// AVX-512 and AVX: a generic version goes through memory and stalls on store forwarding.
FL_ALWAYS_INLINE void widen(f32v v, f64v& lo, f64v& hi) {
#if defined(__AVX512F__)
  lo = f64v(_mm512_cvtps_pd(_mm512_castps512_ps256(__m512(v))));
  hi = f64v(_mm512_cvtps_pd(_mm512_extractf32x8_ps(__m512(v), 1)));
#elif defined(__AVX__)
  lo = f64v(_mm256_cvtps_pd(_mm256_castps256_ps128(__m256(v))));
  hi = f64v(_mm256_cvtps_pd(_mm256_extractf128_ps(__m256(v), 1)));
#else
  f32h l, h;
  std::memcpy(&l, &v, sizeof(l));
  std::memcpy(&h, reinterpret_cast<const char*>(&v) + sizeof(l), sizeof(h));
  lo = __builtin_convertvector(l, f64v);
  hi = __builtin_convertvector(h, f64v);
#endif
}

// The inverse: two double vectors rounded (to nearest) into one float vector.
FL_ALWAYS_INLINE f32v narrow(f64v lo, f64v hi) {
#if defined(__AVX512F__)
  return f32v(_mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(__m512d(lo))),
                                 _mm512_cvtpd_ps(__m512d(hi)), 1));
#elif defined(__AVX__)
  return f32v(_mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(__m256d(lo))),
                                   _mm256_cvtpd_ps(__m256d(hi)), 1));
#else
  const f32h l = __builtin_convertvector(lo, f32h), h = __builtin_convertvector(hi, f32h);
  f32v v;
  std::memcpy(&v, &l, sizeof(l));
  std::memcpy(reinterpret_cast<char*>(&v) + sizeof(l), &h, sizeof(h));
  return v;
#endif
}

// exp(r) for |r| <= ln2/2: float32 by the Cephes minimax polynomial (max error ~1 ulp), float64 by
// the Taylor series to degree 13 (truncation error < 2e-17 relative); Horner's scheme.
FL_ALWAYS_INLINE f32v expm1_poly(f32v r) {  // exp(r) - 1 for |r| <= ln2/2, no cancellation
  f32v p = vset<float>(1.9875691500E-4f);
  p = p * r + vset<float>(1.3981999507E-3f);
  p = p * r + vset<float>(8.3334519073E-3f);
  p = p * r + vset<float>(4.1665795894E-2f);
  p = p * r + vset<float>(1.6666665459E-1f);
  p = p * r + vset<float>(5.0000001201E-1f);
  return p * (r * r) + r;
}
FL_ALWAYS_INLINE f32v exp_poly(f32v r) { return expm1_poly(r) + vset<float>(1.0f); }
// expm1(r) - r for |r| <= ln2/2: r^2 times the Taylor series of (e^r - 1 - r) / r^2 to degree 11
// (truncation < 2e-17 relative); also used alone (gaussian_kl's exp(x) - 1 - x).
FL_ALWAYS_INLINE f64v expm1_minus_r(f64v r) {
  f64v p = vset<double>(1.0 / 6227020800.0);
  p = p * r + vset<double>(1.0 / 479001600.0);
  p = p * r + vset<double>(1.0 / 39916800.0);
  p = p * r + vset<double>(1.0 / 3628800.0);
  p = p * r + vset<double>(1.0 / 362880.0);
  p = p * r + vset<double>(1.0 / 40320.0);
  p = p * r + vset<double>(1.0 / 5040.0);
  p = p * r + vset<double>(1.0 / 720.0);
  p = p * r + vset<double>(1.0 / 120.0);
  p = p * r + vset<double>(1.0 / 24.0);
  p = p * r + vset<double>(1.0 / 6.0);
  p = p * r + vset<double>(0.5);
  return p * (r * r);
}
FL_ALWAYS_INLINE f64v expm1_poly(f64v r) { return expm1_minus_r(r) + r; }
FL_ALWAYS_INLINE f64v exp_poly(f64v r) { return expm1_poly(r) + vset<double>(1.0); }

// ---------------------------------------------------------------------------------------------
// exp, float32. exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2],
// ln 2 split in two (Cody-Waite) so r is exact; exp(r) by the Cephes minimax polynomial
// (max error ~1 ulp). Results below ~2.2e-38 (x < -87.3) flush to 0; x > 88.72 gives +inf;
// NaN propagates. 2^n is built as 2^(n-1) * 2 so n = 128 still reaches FLT_MAX.
// ---------------------------------------------------------------------------------------------
FL_ALWAYS_INLINE f32v vexp(f32v x) {
  const f32v hi = vset<float>(88.7228390f), lo = vset<float>(-87.3365448f);
  f32v xc = vselect(x > hi, hi, x);
  xc = vselect(xc < lo, lo, xc);
  // Round to nearest via the 1.5 * 2^23 shifter: valid for |x / ln2| < 2^22.
  const f32v shifter = vset<float>(12582912.0f);
  f32v t = xc * vset<float>(1.44269504088896341f) + shifter;
  f32v n = t - shifter;
  f32v r = xc - n * vset<float>(0.693359375f);
  r = r - n * vset<float>(-2.12194440e-4f);
  const f32v p = exp_poly(r);
  // t = shifter + n exactly, so n is the difference of their bit patterns (no float->int
  // conversion, which SSE2 lacks for doubles).
  i32v ni = i32v(t) - i32v(shifter);
  i32v bits = (ni + 126) << 23;  // 2^(n-1)
  f32v scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  f32v res = p * scale * vset<float>(2.0f);
  res = vselect(x < lo, vset<float>(0.0f), res);
  res = vselect(x > hi, vset<float>(std::numeric_limits<float>::infinity()), res);
  res = vselect(x != x, x, res);  // NaN in, NaN out
  return res;
}

// ---------------------------------------------------------------------------------------------
// exp, float64. Same reduction; exp(r) for |r| <= ln2/2 by its Taylor series to degree 13
// (truncation error < 2e-17 relative). Results below ~2.2e-308 flush to 0.
// ---------------------------------------------------------------------------------------------
FL_ALWAYS_INLINE f64v vexp(f64v x) {
  const f64v hi = vset<double>(709.782712893383973), lo = vset<double>(-708.39641853226408);
  f64v xc = vselect(x > hi, hi, x);
  xc = vselect(xc < lo, lo, xc);
  const f64v shifter = vset<double>(6755399441055744.0);  // 1.5 * 2^52
  f64v t = xc * vset<double>(1.4426950408889634074) + shifter;
  f64v n = t - shifter;
  f64v r = xc - n * vset<double>(6.93147180369123816490e-01);
  r = r - n * vset<double>(1.90821492927058770002e-10);
  // Horner on 1/k! coefficients, degree 13.
  const f64v p = exp_poly(r);
  i64v ni = i64v(t) - i64v(shifter);
  i64v bits = (ni + 1022) << 52;  // 2^(n-1)
  f64v scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  f64v res = p * scale * vset<double>(2.0);
  res = vselect(x < lo, vset<double>(0.0), res);
  res = vselect(x > hi, vset<double>(std::numeric_limits<double>::infinity()), res);
  res = vselect(x != x, x, res);
  return res;
}

// ---------------------------------------------------------------------------------------------
// exp for arguments x <= 64 (softmax: x = logit - reference near the row max), the hot path.
// Only the low clamp is needed: at x <= -127 ln 2 the exponent field is 0, so the result is
// exactly 0 (-inf gives 0; results below 2^-126 flush to 0; the AVX-512 and AVX2 forms keep
// subnormals). NaN in gives NaN out. Same polynomials as vexp (SSE2).
// ---------------------------------------------------------------------------------------------
#if defined(__AVX512F__)
template <bool kNeg = false> FL_ALWAYS_INLINE f32v vexp_table(f32v x);
#endif
FL_ALWAYS_INLINE f32v vexp_capped(f32v x) {
#if defined(__AVX512F__)
  // AVX-512: the table form vexp_table (defined below) after max(-104, x), one vmaxps; with
  // the constant first, a NaN x is what comes out.
  return vexp_table(f32v(_mm512_max_ps(__m512(vset<float>(-104.0f)), __m512(x))));
#elif defined(__AVX2__)
  // AVX2: an 8-entry table held in a register (one vpermps), as vexp_table's 32 entries:
  //   x = max(-104, x) (NaN stays: the constant first), n = round(8 x / ln 2) by the 1.5 * 2^23
  //   shifter (its low 3 bits index the table), r = x - n ln2/8 (ln2/8 in two parts, the first
  //   product fused), |r| <= ln2/16, exp(r) - 1 = r + r^2 (1/2 + r (1/6 + r/24)) (truncation
  //   < 1.3e-9 relative), exp(x) = 2^-32 (2^(k + 32) 2^(j/8)) exp(r), k = floor(n/8), j = n mod 8.
  // 2^(k + 32) 2^(j/8) is built in the bits (normal for every k in [-151, 92], x in [-104, 64]):
  // the table holds bits(2^(j/8)) + (32 << 23) - (j << 20), to which n << 20 adds (k << 23) +
  // (j << 20). The last product by 2^-32 rounds once, into the subnormals where the result is
  // below 2^-126 (0 from about -103.3). Against the Cephes form below: 9 multiplies and FMAs
  // where it has 11, and 14 operations where it has 16; about 1 ulp.
  const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-104.0f), __m256(x));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);
  const __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(11.5415603271117071f), shifter);
  const __m256 n = _mm256_sub_ps(t, shifter);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e43p-4f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-0x1.05c61p-32f), r);
  __m256 q = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 24), _mm256_set1_ps(1.0f / 6));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.5f));
  const __m256 em1 = _mm256_fmadd_ps(_mm256_mul_ps(r, r), q, r);
  const __m256i ti = _mm256_castps_si256(t);
  const __m256i tab = _mm256_castps_si256(_mm256_permutevar8x32_ps(
      _mm256_castsi256_ps(_mm256_setr_epi32(0x4f800000, 0x4f7b95c2, 0x4f7837f0, 0x4f75fed7,
                                            0x4f7504f3, 0x4f75672a, 0x4f7744fd, 0x4f7ac0c7)),
      ti));
  const __m256 sc = _mm256_castsi256_ps(_mm256_add_epi32(tab, _mm256_slli_epi32(ti, 20)));
  return f32v(_mm256_mul_ps(_mm256_fmadd_ps(sc, em1, sc), _mm256_set1_ps(0x1p-32f)));
#else
  const f32v lo = vset<float>(-88.0296919311f);  // -127 ln 2
  const f32v xc = vselect(x < lo, lo, x);
  const f32v shifter = vset<float>(12582912.0f);
  const f32v t = xc * vset<float>(1.44269504088896341f) + shifter;
  const f32v n = t - shifter;
  f32v r = xc - n * vset<float>(0.693359375f);
  r = r - n * vset<float>(-2.12194440e-4f);
  const f32v p = exp_poly(r);
  const i32v bits = (i32v(t) - i32v(shifter) + 127) << 23;  // 2^n, n in [-127, 93]
  f32v scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
#endif
}

FL_ALWAYS_INLINE f64v vexp_capped(f64v x) {
  const f64v lo = vset<double>(-709.089565712824051);  // -1023 ln 2
  const f64v xc = vselect(x < lo, lo, x);
  const f64v shifter = vset<double>(6755399441055744.0);
  const f64v t = xc * vset<double>(1.4426950408889634074) + shifter;
  const f64v n = t - shifter;
  f64v r = xc - n * vset<double>(6.93147180369123816490e-01);
  r = r - n * vset<double>(1.90821492927058770002e-10);
  const f64v p = exp_poly(r);
  const i64v bits = (i64v(t) - i64v(shifter) + 1023) << 52;
  f64v scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// ---------------------------------------------------------------------------------------------
// tanh(z) and its derivative 1 - tanh(z)^2 (soft-capping), from E = exp(-2|z|):
//   tanh |z| = (1 - E) / (1 + E) = -em1 / (2 + em1),   1 - tanh^2 = 4 E / (2 + em1)^2,
// em1 = expm1(-2|z|) from the exp polynomial near 0 (no cancellation for small z). +-inf gives
// +-1 and 0; NaN propagates.
// ---------------------------------------------------------------------------------------------
template <class V> FL_ALWAYS_INLINE void vtanh_parts(V z, V& th, V& dth) {
  using T = std::remove_reference_t<decltype(z[0])>;
  const V a = vselect(z < V{}, -z, z), u = a * T(-2);
  const V E = vexp_capped(u);
  const V em1 = vselect(u > V{} + T(-0.34657359027997264), expm1_poly(u), E - T(1));
  const V den = em1 + T(2);
  const V t = -em1 / den;
  th = vselect(z < V{}, -t, t);
  dth = (E * T(4)) / (den * den);
}

// ---------------------------------------------------------------------------------------------
// log, float32 and float64: x = 2^e * m with m in [sqrt(1/2), sqrt(2)), log(m) = log(1 + f) by
// the Cephes logf polynomial (float, ~1 ulp) or fdlibm's log kernel (double, < 1 ulp), plus
// e * ln 2 in two parts. Subnormal x is scaled up first. log(0) = -inf, log(x < 0) = NaN,
// log(inf) = inf, NaN propagates.
// ---------------------------------------------------------------------------------------------
FL_ALWAYS_INLINE f32v vlog(f32v x) {
  const f32v tiny = vset<float>(1.17549435e-38f);
  const f32v xs = vselect(x < tiny, x * vset<float>(8388608.0f), x);  // * 2^23 for subnormals
  const i32v bits = i32v(xs);
  f32v e = __builtin_convertvector(((bits >> 23) & 0xFF) - 127, f32v);
  e = vselect(x < tiny, e - vset<float>(23.0f), e);
  f32v m = f32v((bits & 0x007FFFFF) | 0x3F800000);  // [1, 2)
  const auto big = m > vset<float>(1.41421356237f);
  m = vselect(big, m * vset<float>(0.5f), m);
  e = vselect(big, e + vset<float>(1.0f), e);
  const f32v f = m - vset<float>(1.0f), z = f * f;
  f32v y = vset<float>(7.0376836292E-2f);
  y = y * f - vset<float>(1.1514610310E-1f);
  y = y * f + vset<float>(1.1676998740E-1f);
  y = y * f - vset<float>(1.2420140846E-1f);
  y = y * f + vset<float>(1.4249322787E-1f);
  y = y * f - vset<float>(1.6668057665E-1f);
  y = y * f + vset<float>(2.0000714765E-1f);
  y = y * f - vset<float>(2.4999993993E-1f);
  y = y * f + vset<float>(3.3333331174E-1f);
  y = y * f * z;
  y = y + e * vset<float>(-2.12194440e-4f) - vset<float>(0.5f) * z;
  f32v r = f + y + e * vset<float>(0.693359375f);
  const float inf = std::numeric_limits<float>::infinity();
  r = vselect(x == vset<float>(0.0f), vset<float>(-inf), r);
  r = vselect(x == vset<float>(inf), x, r);
  r = vselect(x < vset<float>(0.0f), vset<float>(std::numeric_limits<float>::quiet_NaN()), r);
  return vselect(x != x, x, r);
}

FL_ALWAYS_INLINE f64v vlog(f64v x) {
  const f64v tiny = vset<double>(2.2250738585072014e-308);
  const f64v xs = vselect(x < tiny, x * vset<double>(18014398509481984.0), x);  // * 2^54
  const i64v bits = i64v(xs);
#if defined(__AVX512DQ__) || !defined(__x86_64__)
  f64v e = __builtin_convertvector(((bits >> 52) & 0x7FF) - 1023, f64v);
#else
  // (x86 before AVX-512 has no int64 -> double conversion: the compiler's is a scalar one per
  // lane. The biased exponent as the low bits of 2^52's mantissa, then 2^52 + 1023 off: exact.)
  f64v e = f64v(((bits >> 52) & 0x7FF) | 0x4330000000000000LL) - vset<double>(4503599627371519.0);
#endif
  e = vselect(x < tiny, e - vset<double>(54.0), e);
  f64v m = f64v((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
  const auto big = m > vset<double>(1.4142135623730951);
  m = vselect(big, m * vset<double>(0.5), m);
  e = vselect(big, e + vset<double>(1.0), e);
  const f64v f = m - vset<double>(1.0);
  const f64v s = f / (vset<double>(2.0) + f), z = s * s, w = z * z;
  const f64v t1 = w * (vset<double>(3.999999999940941908e-01) +
                       w * (vset<double>(2.222219843214978396e-01) +
                            w * vset<double>(1.531383769920937332e-01)));
  const f64v t2 = z * (vset<double>(6.666666666666735130e-01) +
                       w * (vset<double>(2.857142874366239149e-01) +
                            w * (vset<double>(1.818357216161805012e-01) +
                                 w * vset<double>(1.479819860511658591e-01))));
  const f64v R = t2 + t1, hfsq = vset<double>(0.5) * f * f;
  f64v r = e * vset<double>(6.93147180369123816490e-01) -
           ((hfsq - (s * (hfsq + R) + e * vset<double>(1.90821492927058770002e-10))) - f);
  const double inf = std::numeric_limits<double>::infinity();
  r = vselect(x == vset<double>(0.0), vset<double>(-inf), r);
  r = vselect(x == vset<double>(inf), x, r);
  r = vselect(x < vset<double>(0.0), vset<double>(std::numeric_limits<double>::quiet_NaN()), r);
  return vselect(x != x, x, r);
}

// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]: the polynomial cores of vlog.
FL_ALWAYS_INLINE f32v log1p_core(f32v f) {
  const f32v z = f * f;
  f32v y = vset<float>(7.0376836292E-2f);
  y = y * f - vset<float>(1.1514610310E-1f);
  y = y * f + vset<float>(1.1676998740E-1f);
  y = y * f - vset<float>(1.2420140846E-1f);
  y = y * f + vset<float>(1.4249322787E-1f);
  y = y * f - vset<float>(1.6668057665E-1f);
  y = y * f + vset<float>(2.0000714765E-1f);
  y = y * f - vset<float>(2.4999993993E-1f);
  y = y * f + vset<float>(3.3333331174E-1f);
  return f + (y * f * z - vset<float>(0.5f) * z);
}
FL_ALWAYS_INLINE f64v log1p_core(f64v f) {
  const f64v s = f / (vset<double>(2.0) + f), z = s * s, w = z * z;
  const f64v t1 = w * (vset<double>(3.999999999940941908e-01) +
                       w * (vset<double>(2.222219843214978396e-01) +
                            w * vset<double>(1.531383769920937332e-01)));
  const f64v t2 = z * (vset<double>(6.666666666666735130e-01) +
                       w * (vset<double>(2.857142874366239149e-01) +
                            w * (vset<double>(1.818357216161805012e-01) +
                                 w * vset<double>(1.479819860511658591e-01))));
  const f64v hfsq = vset<double>(0.5) * f * f;
  return f - (hfsq - s * (hfsq + t2 + t1));
}

// log1p(e) for e in [0, 1] (softplus: e = exp(-|x|)), without the exponent extraction of vlog:
// 1 + e is in [1, 2], so log1p(e) = log1p(e) (e <= sqrt(2) - 1) or ln 2 + log1p((e - 1) / 2),
// both arguments exact. NaN propagates.
template <class V> FL_ALWAYS_INLINE V vlog1p_unit(V e) {
  using T = std::remove_reference_t<decltype(e[0])>;
  const auto hi = e > V{} + T(0.41421356237309504880);
  const V f = vselect(hi, (e - T(1)) * T(0.5), e);
  const V r = log1p_core(f);
  return vselect(hi, r + T(0.69314718055994530942), r);
}

// log1p(z) for z > -1 (accurate for tiny |z|): log(u) - ((u - 1) - z) / u with u = 1 + z
// (the correction recovers what rounding 1 + z lost).
template <class V> FL_ALWAYS_INLINE V vlog1p(V z) {
  const V one = V{} + 1, u = one + z, lu = vlog(u);
  const V r = vselect(u == V{}, lu, lu - ((u - one) - z) / u);  // z = -1: log 0 = -inf
  return vselect(u == one, z, r);
}


#if defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// AVX-512 float logs by a 32-entry table (one vpermt2ps per table, the whole table in two
// registers) and a degree-4 polynomial, about half the work of the Cephes form above:
//   log(w) = log(c) + log1p(w / c - 1),  c = a table point near w,
// with 1/c rounded to float and log(c) taken as -log of that rounded 1/c, so the identity is
// exact and |w / c - 1| <= 0.0215. The entry near 1 has 1/c = 1 exactly: small arguments keep
// full relative accuracy. The table index is read from the low bits of a rounding shifter's sum
// (vpermt2ps reads the low 5 bits of each index lane), not converted.
// ---------------------------------------------------------------------------------------------
// log1p tables (vlog1p_unit): points c_k near 1 + k/31, k = 0..31, chosen (Gal's accurate
// tables) so that log(c_k) = -log(1/c_k) is within 4e-4 ulp of its float value: 1/c_k first,
// a float within a few thousand ulps of 1/(1 + k/31), then log(c_k) = -log of that float.
// c_0 = 1 exactly.
alignas(64) inline constexpr float kLog1pInvC[32] = {
    0x1.0000000000000p+0f, 0x1.eff0340000000p-1f, 0x1.e0f1ce0000000p-1f, 0x1.d2d5aa0000000p-1f,
    0x1.c591960000000p-1f, 0x1.b8cfb00000000p-1f, 0x1.ad09d80000000p-1f, 0x1.a1b1720000000p-1f,
    0x1.96eb860000000p-1f, 0x1.8cd9180000000p-1f, 0x1.8321b20000000p-1f, 0x1.79e7a80000000p-1f,
    0x1.71095c0000000p-1f, 0x1.68ca820000000p-1f, 0x1.60bde60000000p-1f, 0x1.58fe200000000p-1f,
    0x1.51ab7a0000000p-1f, 0x1.4ab10c0000000p-1f, 0x1.43e5840000000p-1f, 0x1.3d69920000000p-1f,
    0x1.3749ee0000000p-1f, 0x1.3136be0000000p-1f, 0x1.2b85ee0000000p-1f, 0x1.25d7160000000p-1f,
    0x1.2090e20000000p-1f, 0x1.1b59c40000000p-1f, 0x1.1672d60000000p-1f, 0x1.11b5c40000000p-1f,
    0x1.0d13640000000p-1f, 0x1.0873e80000000p-1f, 0x1.041b980000000p-1f, 0x1.fff7ea0000000p-2f,
};
alignas(64) inline constexpr float kLog1pLogC[32] = {
    0x0.0p+0f, 0x1.051ac40000000p-5f, 0x1.004c2c0000000p-4f, 0x1.7a43860000000p-4f,
    0x1.f0583a0000000p-4f, 0x1.3299fe0000000p-3f, 0x1.6a0aa00000000p-3f, 0x1.a0ed460000000p-3f,
    0x1.d671240000000p-3f, 0x1.04e2c00000000p-2f, 0x1.1e44f20000000p-2f, 0x1.36f86c0000000p-2f,
    0x1.4f49860000000p-2f, 0x1.666d200000000p-2f, 0x1.7d87ca0000000p-2f, 0x1.9446d40000000p-2f,
    0x1.aa3f060000000p-2f, 0x1.bfa1380000000p-2f, 0x1.d4e3dc0000000p-2f, 0x1.e999060000000p-2f,
    0x1.fd8bca0000000p-2f, 0x1.08dd1e0000000p-1f, 0x1.1280020000000p-1f, 0x1.1c4eca0000000p-1f,
    0x1.2594d00000000p-1f, 0x1.2eeb5e0000000p-1f, 0x1.37dace0000000p-1f, 0x1.40a48c0000000p-1f,
    0x1.4962c60000000p-1f, 0x1.52424a0000000p-1f, 0x1.5abdb20000000p-1f, 0x1.62ec460000000p-1f,
};
// log tables (vlog_table, vlog_sum): points c_k near 1 + k/32 for k = round(32 (m - 1)) in
// [-8, 16], m in [0.75, 1.5), entry k at index k mod 32; Gal-style as the log1p tables above
// (log c_k within 3e-4 ulp of its float value, |m / c_k - 1| <= 0.0211); c_0 = 1 exactly.
alignas(64) inline constexpr float kLogInvC[32] = {
    0x1.0000000000000p+0f, 0x1.f06b940000000p-1f, 0x1.e1f4520000000p-1f, 0x1.d40f4e0000000p-1f,
    0x1.c711d40000000p-1f, 0x1.badefe0000000p-1f, 0x1.af1f4a0000000p-1f, 0x1.a42db00000000p-1f,
    0x1.99a9680000000p-1f, 0x1.8f97080000000p-1f, 0x1.8624d20000000p-1f, 0x1.7cf1b60000000p-1f,
    0x1.746c6c0000000p-1f, 0x1.6c13800000000p-1f, 0x1.6430f40000000p-1f, 0x1.5caeb80000000p-1f,
    0x1.5565e20000000p-1f, 0x1.0000000000000p+0f, 0x1.0000000000000p+0f, 0x1.0000000000000p+0f,
    0x1.0000000000000p+0f, 0x1.0000000000000p+0f, 0x1.0000000000000p+0f, 0x1.0000000000000p+0f,
    0x1.5564fa0000000p+0f, 0x1.47bbcc0000000p+0f, 0x1.3b20d80000000p+0f, 0x1.2f63fa0000000p+0f,
    0x1.248eee0000000p+0f, 0x1.1a653a0000000p+0f, 0x1.11031c0000000p+0f, 0x1.0852e60000000p+0f,
};
alignas(64) inline constexpr float kLogLogC[32] = {
    0x0.0p+0f, 0x1.fa4ba60000000p-6f, 0x1.ef69a00000000p-5f, 0x1.6f87400000000p-4f,
    0x1.e2d0040000000p-4f, 0x1.290dda0000000p-3f, 0x1.601e680000000p-3f, 0x1.94c6f20000000p-3f,
    0x1.c8b0760000000p-3f, 0x1.fbab7e0000000p-3f, 0x1.1655240000000p-2f, 0x1.2ec4940000000p-2f,
    0x1.45ee940000000p-2f, 0x1.5d25040000000p-2f, 0x1.7390c20000000p-2f, 0x1.8961fe0000000p-2f,
    0x1.9f009a0000000p-2f, 0x0.0p+0f, 0x0.0p+0f, 0x0.0p+0f,
    0x0.0p+0f, 0x0.0p+0f, 0x0.0p+0f, 0x0.0p+0f,
    -0x1.26c50e0000000p-2f, -0x1.f9e7800000000p-3f, -0x1.a9944e0000000p-3f, -0x1.5bd6de0000000p-3f,
    -0x1.11616a0000000p-3f, -0x1.91f1a20000000p-4f, -0x1.07882a0000000p-4f, -0x1.061fa20000000p-5f,
};
FL_ALWAYS_INLINE f32v table_lookup(const float* table, __m512i idx) {
  return f32v(_mm512_permutex2var_ps(_mm512_load_ps(table), idx, _mm512_load_ps(table + 16)));
}
// log1p(f) for |f| <= 0.0215: f + f^2 (g2 + g3 f + g4 f^2), a minimax fit (relative error
// 1.2e-8), in Estrin's order.
FL_ALWAYS_INLINE f32v log1p_small(f32v f) {
  const f32v f2 = f * f;
  const f32v g = f2 * vset<float>(-0x1.000d56p-2f) +
                 (f * vset<float>(0x1.5566dep-2f) + vset<float>(-0.5f));
  return f2 * g + f;
}
// log1p(e) for e in [0, 1] (NaN propagates): w = 1 + e is never formed; k = round(31 e) sits in
// the low bits of 31 e + 1.5 * 2^23 (vpermt2ps reads the low 5 bits of each index lane), then
// f = e / c_k + (1/c_k - 1) (fused: one rounding), |f| <= 0.0165, and log1p(f) = f + f^2 (g2 +
// g3 f + g4 f^2), a minimax fit (relative error 4e-9); Estrin's order (f^2 next to the first
// fma) keeps the dependency chain short.
FL_ALWAYS_INLINE f32v vlog1p_unit(f32v e) {
  const __m512i idx = _mm512_castps_si512(
      _mm512_fmadd_ps(__m512(e), _mm512_set1_ps(31.0f), _mm512_set1_ps(12582912.0f)));
  const f32v inv = table_lookup(kLog1pInvC, idx);
  const f32v f = e * inv + (inv - vset<float>(1.0f));
  const f32v f2 = f * f;
  const f32v g = f2 * vset<float>(-0x1.0007dap-2f) +
                 (f * vset<float>(0x1.555fa8p-2f) + vset<float>(-0.5f));
  return table_lookup(kLog1pLogC, idx) + (f2 * g + f);
}
// 2^(j/32), j = 0..31, rounded to float
alignas(64) inline constexpr float kExp2J32[32] = {
    0x1.0000000000000p+0f, 0x1.059b0e0000000p+0f, 0x1.0b55860000000p+0f, 0x1.11301e0000000p+0f,
    0x1.172b840000000p+0f, 0x1.1d48740000000p+0f, 0x1.2387a60000000p+0f, 0x1.29e9e00000000p+0f,
    0x1.306fe00000000p+0f, 0x1.371a740000000p+0f, 0x1.3dea640000000p+0f, 0x1.44e0860000000p+0f,
    0x1.4bfdae0000000p+0f, 0x1.5342b60000000p+0f, 0x1.5ab07e0000000p+0f, 0x1.6247ec0000000p+0f,
    0x1.6a09e60000000p+0f, 0x1.71f75e0000000p+0f, 0x1.7a11480000000p+0f, 0x1.82589a0000000p+0f,
    0x1.8ace540000000p+0f, 0x1.93737c0000000p+0f, 0x1.9c49180000000p+0f, 0x1.a5503c0000000p+0f,
    0x1.ae89fa0000000p+0f, 0x1.b7f7700000000p+0f, 0x1.c199be0000000p+0f, 0x1.cb720e0000000p+0f,
    0x1.d5818e0000000p+0f, 0x1.dfc9740000000p+0f, 0x1.ea4afa0000000p+0f, 0x1.f507660000000p+0f,
};
// exp(x) for x in [-104, 100] or NaN (callers clamp): x = (n/32) ln 2 + r, n = round(32 x / ln 2),
// r = x - (n/32) ln 2 (ln 2 in two parts, the first product fused: r is accurate to an ulp of
// itself), |r| <= ln2/64; exp(x) = 2^floor(n/32) * 2^(j/32) * exp(r), j = n mod 32, with
// exp(r) - 1 = r + r^2 (1/2 + r/6) (truncation < 6e-10) and 2^floor(n/32) applied by vscalefps
// (0 below the float range, subnormals kept; +inf above it). About 1.5 ulp; two thirds of the
// operations of vexp_capped. (kNeg: exp(-x), the negation folded into the first operations.)
// n/32 comes straight from a rounding shifter of 1.5 * 2^18, whose ulp is 1/32: t = x / ln 2 +
// shifter rounds to a multiple of 1/32, t - shifter is n/32 exactly (vscalefps floors it to
// floor(n/32)) and the low 5 bits of t's mantissa are n mod 32 (the table index). The constants
// are those of n = round(32 x / ln 2) scaled by powers of 2, so no rounding changes: the bits
// of a 1.5 * 2^23 shifter and a multiply of n by 1/32, less that multiply.
template <bool kNeg> FL_ALWAYS_INLINE f32v vexp_table(f32v x) {
  const __m512 xx = __m512(x), shifter = _mm512_set1_ps(393216.0f);
  constexpr float s = kNeg ? -1.0f : 1.0f;
  const __m512 t = _mm512_fmadd_ps(xx, _mm512_set1_ps(s * 1.44269504088896341f), shifter);
  const __m512 n32 = _mm512_sub_ps(t, shifter);  // n/32
  // r = (+-x) - (n/32) ln2
  __m512 r = kNeg ? _mm512_fnmsub_ps(n32, _mm512_set1_ps(0x1.62e43p-1f), xx)
                  : _mm512_fnmadd_ps(n32, _mm512_set1_ps(0x1.62e43p-1f), xx);
  r = _mm512_fnmadd_ps(n32, _mm512_set1_ps(-0x1.05c61p-29f), r);
  const __m512 q = _mm512_fmadd_ps(r, _mm512_set1_ps(0x1.555556p-3f), _mm512_set1_ps(0.5f));
  const __m512 em1 = _mm512_fmadd_ps(_mm512_mul_ps(r, r), q, r);
  const __m512 tab = __m512(table_lookup(kExp2J32, _mm512_castps_si512(t)));
  const __m512 y = _mm512_fmadd_ps(tab, em1, tab);
  return f32v(_mm512_scalef_ps(y, n32));
}
// log(u + c) for u >= 0 and a correction |c| <= ulp(u) (0: plain log u): u = m 2^k with m in
// [0.75, 1.5) by vgetmantps/vgetexpps (subnormals included), f = (m + c 2^-k) / c_i - 1.
// log(0) = -inf, log(inf) = inf, log(u < 0) = NaN, NaN propagates.
FL_ALWAYS_INLINE f32v vlog_sum(f32v u, f32v c) {
  const __m512 uu = __m512(u);
  const f32v m = f32v(_mm512_getmant_ps(uu, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan));
  const f32v k = f32v(_mm512_getexp_ps(uu)) - f32v(_mm512_getexp_ps(__m512(m)));
  // round(32 (m - 1)) in the low bits of 32 m + (1.5 * 2^23 - 32)
  const __m512i idx = _mm512_castps_si512(
      _mm512_fmadd_ps(__m512(m), _mm512_set1_ps(32.0f), _mm512_set1_ps(12582880.0f)));
  const f32v inv = table_lookup(kLogInvC, idx);
  const f32v cs = f32v(_mm512_scalef_ps(__m512(c), __m512(-k)));
  const f32v f = cs * inv + (m * inv - vset<float>(1.0f));
  const f32v r = table_lookup(kLogLogC, idx) + (log1p_small(f) + k * vset<float>(-2.12194440e-4f));
  const f32v out = k * vset<float>(0.693359375f) + r;
  return vselect(u == f32v{}, vset<float>(-std::numeric_limits<float>::infinity()), out);
}
#endif
// ---------------------------------------------------------------------------------------------
// e = exp(-a) and log1p(e) for a >= 0 (or NaN), together: the softplus of the logistic losses
// (softplus(-|x|) = log1p(exp(-|x|))). Generic form: vexp_capped and vlog1p_unit.
// ---------------------------------------------------------------------------------------------
template <class V> FL_ALWAYS_INLINE void exp_log1p_neg(V a, V& e, V& l1pe) {
  e = vexp_capped(-a);
  l1pe = vlog1p_unit(e);
}
#if defined(__AVX512F__)
// AVX-512, float: exp(-a) by the table form vexp_table (a clamped to 104: exp(-104) is 0 in
// float; min with the constant first, so that a NaN a is what comes out).
FL_ALWAYS_INLINE void exp_log1p_neg(f32v a, f32v& e, f32v& l1pe) {
  e = vexp_table<true>(f32v(_mm512_min_ps(_mm512_set1_ps(104.0f), __m512(a))));
  l1pe = vlog1p_unit(e);
}
#endif
#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2, float: both through 8-entry tables held in registers (one vpermps per table; vpermps
// reads only the low 3 bits of each index lane, so the index is the rounding shifter's bits).
//   exp(-a) = 2^(n/8) exp(r), n = round(-8 a / ln 2), r = -a - n ln2/8 (Cody-Waite, |r| <=
//     ln2/16): 2^(n/8) = 2^(j/8) 2^k (j = n mod 8) built in the integer domain as
//     bits(2^(j/8)) - (j << 20) + (n << 20); exp(r) = 1 + r + r^2 (c2 + c3 r), a minimax fit
//     (relative error 8.3e-8). a > 126 ln 2 (a result below 2^-126) gives 0.
//   log1p(e) = log(c_k) + log1p(f), c_k = 1 + k/7, k = round(7 e), f = (1 + e)/c_k - 1 =
//     e inv_k + (inv_k - 1), |f| <= 1/14, with inv_k = 1/c_k rounded to float and log(c_k) taken
//     as -log(inv_k) (so the identity is exact); log1p(f) = f + f^2 (g0 + g1 f + g2 f^2 + g3 f^3),
//     a minimax fit (relative error 4.6e-8). k = 0: c = 1, f = e exactly (tiny e keep their
//     relative accuracy).
// Errors: exp about 1.5 ulp, log1p about 1 ulp (against 1 ulp for the generic forms).
FL_ALWAYS_INLINE void exp_log1p_neg(f32v a, f32v& e, f32v& l1pe) {
  // (no clamp of a: where a > 126 ln 2, or +inf, the last step sets e to 0 whatever the steps
  // before made of a; a NaN a comes out as NaN. One thread in cache, exp and log1p alone:
  // 0.94 the time with the clamp.)
  const __m256 ac = __m256(a), ma = ac;
  const __m256 shifter = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23: round to nearest
  const __m256 t = _mm256_fmadd_ps(ac, _mm256_set1_ps(-11.5415603271117f), shifter);  // -8/ln2
  const __m256 n = _mm256_sub_ps(t, shifter);
  // r = -a - n ln2/8, ln2/8 in two parts (the first with 9 bits: n * hi is exact)
  __m256 r = _mm256_fnmsub_ps(n, _mm256_set1_ps(0.086669921875f), ac);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.65243055e-5f), r);
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 q =
      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555bbcp-3f), r, _mm256_set1_ps(0x1.000556p-1f));
  const __m256 sm1 = _mm256_fmadd_ps(r2, q, r);  // exp(r) - 1
  const __m256i exp_tab = _mm256_setr_epi32(0x3f800000, 0x3f7b95c2, 0x3f7837f0, 0x3f75fed7,
                                            0x3f7504f3, 0x3f75672a, 0x3f7744fd, 0x3f7ac0c7);
  const __m256i ti = _mm256_castps_si256(t);
  const __m256i tab = _mm256_castps_si256(
      _mm256_permutevar8x32_ps(_mm256_castsi256_ps(exp_tab), ti));
  const __m256 scale = _mm256_castsi256_ps(_mm256_add_epi32(tab, _mm256_slli_epi32(ti, 20)));
  __m256 ev = _mm256_fmadd_ps(scale, sm1, scale);
  ev = _mm256_andnot_ps(_mm256_cmp_ps(ma, _mm256_set1_ps(87.3365447f), _CMP_GT_OQ), ev);
  // log1p(e), e in [0, 1]
  const __m256 k = _mm256_fmadd_ps(ev, _mm256_set1_ps(7.0f), shifter);  // round(7 e) in the bits
  const __m256i ki = _mm256_castps_si256(k);
  const __m256 inv = _mm256_permutevar8x32_ps(
      _mm256_setr_ps(0x1p+0f, 0x1.cp-1f, 0x1.8e38e4p-1f, 0x1.666666p-1f, 0x1.45d174p-1f,
                     0x1.2aaaaap-1f, 0x1.13b13cp-1f, 0x1p-1f), ki);
  const __m256 invm1 = _mm256_permutevar8x32_ps(
      _mm256_setr_ps(0.0f, -0x1p-3f, -0x1.c71c7p-3f, -0x1.333334p-2f, -0x1.745d18p-2f,
                     -0x1.aaaaacp-2f, -0x1.d89d88p-2f, -0x1p-1f), ki);
  const __m256 logc = _mm256_permutevar8x32_ps(
      _mm256_setr_ps(0.0f, 0x1.1178e8p-3f, 0x1.01589p-2f, 0x1.6d3c34p-2f, 0x1.ced532p-2f,
                     0x1.13f75ap-1f, 0x1.3cf2b4p-1f, 0x1.62e43p-1f), ki);
  const __m256 f = _mm256_fmadd_ps(ev, inv, invm1);  // (fused: one rounding)
  __m256 g = _mm256_fmadd_ps(_mm256_set1_ps(0x1.9b96a8p-3f), f, _mm256_set1_ps(-0x1.00ed6cp-2f));
  g = _mm256_fmadd_ps(g, f, _mm256_set1_ps(0x1.5554fep-2f));
  g = _mm256_fmadd_ps(g, f, _mm256_set1_ps(-0x1.ffffd6p-2f));
  const __m256 lp = _mm256_fmadd_ps(_mm256_mul_ps(f, f), g, f);
  e = f32v(ev);
  l1pe = f32v(_mm256_add_ps(logc, lp));
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// AVX2 float log(u + c) for u >= 0 and a correction |c| <= ulp(u) (0: plain log u), by a
// 16-entry table (two vpermps and a blend per table) instead of the Cephes polynomial:
//   u = m 2^k, m in [0.75, 1.5) (integer offset trick; subnormal u scaled by 2^23 first),
//   log(u) = k ln 2 + log(c_j) + log1p(f),  f = m inv_j - 1 (fused: one rounding),
//   c_j the centre of one of 16 intervals of m (1 exactly for the two intervals next to 1, so
//   u near 1 keeps its relative accuracy), inv_j = 1/c_j rounded to float, log(c_j) taken as
//   -log(inv_j); |f| <= 1/16 and log1p(f) = f + f^2 (g0 + g1 f + g2 f^2 + g3 f^3), a minimax
//   fit (relative error 1.1e-8).
//   The correction goes into f: f + c 2^-k inv_j, since log1p(f + d) = log1p(f) + d / (1 + f) +
//   O(d^2) and d / (1 + f) = c / u (no division; where u rounds to 1, f = c exactly and the
//   result is c, e.g. log(1 - q) for tiny q).
//   log(0) = -inf, log(inf) = inf, log(u < 0) and NaN: NaN.
// kCorrect false: no correction term (vlog_table). kSpecial false: u normal and finite in every
// lane (2^-126 <= u < inf; the caller checks, all_normal below), without the subnormal scaling
// and the special values: the same bits there in about two thirds of the operations.
template <bool kCorrect, bool kSpecial = true>
FL_ALWAYS_INLINE f32v log_table_avx2(f32v uv, f32v cv) {
  const __m256 u = __m256(uv);
  __m256 us = u, c = __m256(cv), sub = _mm256_setzero_ps();
  if constexpr (kSpecial) {
    const __m256 two23 = _mm256_set1_ps(8388608.0f);
    sub = _mm256_cmp_ps(u, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    us = _mm256_blendv_ps(u, _mm256_mul_ps(u, two23), sub);
    if constexpr (kCorrect) c = _mm256_blendv_ps(c, _mm256_mul_ps(c, two23), sub);
  }
  const __m256i bits = _mm256_sub_epi32(_mm256_castps_si256(us), _mm256_set1_epi32(0x3F400000));
  const __m256i kshift = _mm256_and_si256(bits, _mm256_set1_epi32(int(0xFF800000u)));  // k << 23
  __m256 k = _mm256_cvtepi32_ps(_mm256_srai_epi32(bits, 23));
  if constexpr (kSpecial) k = _mm256_sub_ps(k, _mm256_and_ps(sub, _mm256_set1_ps(23.0f)));
  const __m256 m = _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_castps_si256(us), kshift));
  const __m256i idx = _mm256_srli_epi32(bits, 19);                // low 3 bits: the entry
  const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 9));  // sign: entries 8-15
  const __m256 inv = _mm256_blendv_ps(
      _mm256_permutevar8x32_ps(
          _mm256_setr_ps(0x1.4e5e0ap+0f, 0x1.414142p+0f, 0x1.3521d0p+0f, 0x1.29e412p+0f,
                         0x1.1f7048p+0f, 0x1.15b1e6p+0f, 0x1.0c9714p+0f, 0x1p+0f), idx),
      _mm256_permutevar8x32_ps(
          _mm256_setr_ps(0x1p+0f, 0x1.d41d42p-1f, 0x1.bacf92p-1f, 0x1.a41a42p-1f,
                         0x1.8f9c18p-1f, 0x1.7d05f4p-1f, 0x1.6c16c2p-1f, 0x1.5c9882p-1f), idx),
      upper);
  const __m256 logc = _mm256_blendv_ps(
      _mm256_permutevar8x32_ps(
          _mm256_setr_ps(-0x1.1178e6p-2f, -0x1.d10384p-3f, -0x1.823c18p-3f, -0x1.365fc6p-3f,
                         -0x1.da7278p-4f, -0x1.4d3116p-4f, -0x1.894a84p-5f, 0.0f), idx),
      _mm256_permutevar8x32_ps(
          _mm256_setr_ps(0.0f, 0x1.6f0d28p-4f, 0x1.29552cp-3f, 0x1.9525a8p-3f,
                         0x1.fb918cp-3f, 0x1.2e8e2cp-2f, 0x1.5d1bdap-2f, 0x1.89a33ap-2f), idx),
      upper);
  __m256 f = _mm256_fmsub_ps(m, inv, _mm256_set1_ps(1.0f));
  if constexpr (kCorrect) {
    const __m256 inv2k =  // 2^-k of us (k in [-126, 128]: 2^-128 rounds to a subnormal, fine)
        _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_set1_epi32(0x3F800000), kshift));
    f = _mm256_fmadd_ps(_mm256_mul_ps(c, inv2k), inv, f);
  }
  __m256 g = _mm256_fmadd_ps(_mm256_set1_ps(0x1.85b8f4p-3f), f, _mm256_set1_ps(-0x1.001506p-2f));
  g = _mm256_fmadd_ps(g, f, _mm256_set1_ps(0x1.555726p-2f));
  g = _mm256_fmadd_ps(g, f, _mm256_set1_ps(-0.5f));
  const __m256 lp = _mm256_fmadd_ps(_mm256_mul_ps(f, f), g, f);
  // k ln 2 + log(c) + log1p(f), ln 2 in two parts
  const __m256 lo = _mm256_fmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), lp);
  __m256 r = _mm256_add_ps(_mm256_fmadd_ps(k, _mm256_set1_ps(0.693359375f), logc), lo);
  if constexpr (!kSpecial) return f32v(r);
  const float inf = std::numeric_limits<float>::infinity();
  r = _mm256_blendv_ps(r, _mm256_set1_ps(-inf), _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_EQ_OQ));
  r = _mm256_blendv_ps(r, u, _mm256_cmp_ps(u, _mm256_set1_ps(inf), _CMP_EQ_OQ));
  // u < 0 or NaN: all-ones bits, a NaN
  return f32v(_mm256_or_ps(r, _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_NGE_UQ)));
}
FL_ALWAYS_INLINE f32v vlog_sum(f32v uv, f32v cv) { return log_table_avx2<true>(uv, cv); }
// Whether every lane is normal and finite (2^-126 <= u < inf; not NaN).
FL_ALWAYS_INLINE bool all_normal(f32v uv) {
  const __m256 u = __m256(uv);
  const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(u, _mm256_set1_ps(1.17549435e-38f), _CMP_GE_OQ),
                                  _mm256_cmp_ps(u, _mm256_set1_ps(3.40282347e+38f), _CMP_LE_OQ));
  return _mm256_movemask_ps(ok) == 0xFF;
}
#endif
#if defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// log1p(z) in float64 for z >= 0 (or NaN), relative error below 2^-38: for sums that end in a
// float32 result (the lane kernels' log of a row's exponential sum), where the fdlibm form of
// vlog1p (two divisions) is more accuracy than the float32 result can show and a large share of
// a narrow row's cost. u = 1 + z rounded and c = z - (u - 1) its rounding error (exact), u = m
// 2^k with m in [0.75, 1.5) (vgetmantpd / vgetexppd), a 16-entry table of points 1 + i/16,
// i = round(16 (m - 1)) in [-4, 8] (from a rounding shifter's low bits), f = (m + c 2^-k) / c_i
// - 1, |f| <= 1/24, log1p(f) by its Taylor series to degree 7 in Estrin's order. z = +inf and
// NaN give NaN (the kernels replace those rows).
// ---------------------------------------------------------------------------------------------
alignas(64) inline constexpr double kLog16InvC[16] = {
    0x1.0000000000000p+0, 0x1.e1e1e1e1e1e1ep-1, 0x1.c71c71c71c71cp-1, 0x1.af286bca1af28p-1,
    0x1.999999999999ap-1, 0x1.8618618618618p-1, 0x1.745d1745d1746p-1, 0x1.642c8590b2164p-1,
    0x1.5555555555555p-1, 0x1.0000000000000p+0, 0x1.0000000000000p+0, 0x1.0000000000000p+0,
    0x1.5555555555555p+0, 0x1.3b13b13b13b14p+0, 0x1.2492492492492p+0, 0x1.1111111111111p+0,
};
alignas(64) inline constexpr double kLog16LogC[16] = {
    0x0.0p+0, 0x1.f0a30c01162a8p-5, 0x1.e27076e2af2eap-4, 0x1.5ff3070a793d6p-3,
    0x1.c8ff7c79a9a20p-3, 0x1.1675cababa60fp-2, 0x1.4618bc21c5ec2p-2, 0x1.739d7f6bbd007p-2,
    0x1.9f323ecbf984dp-2, 0x0.0p+0, 0x0.0p+0, 0x0.0p+0,
    -0x1.269621134db91p-2, -0x1.a93ed3c8ad9e5p-3, -0x1.1178e8227e47ap-3, -0x1.08598b59e3a06p-4,
};
FL_ALWAYS_INLINE f64v vlog1p_f32acc(f64v z) {
  const f64v one = vset<double>(1.0), u = one + z, c = z - (u - one);
  const __m512d uu = __m512d(u);
  const __m512d m = _mm512_getmant_pd(uu, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan);
  const __m512d nk = _mm512_sub_pd(_mm512_getexp_pd(m), _mm512_getexp_pd(uu));  // -k
  const __m512i idx = _mm512_castpd_si512(
      _mm512_fmadd_pd(m, _mm512_set1_pd(16.0), _mm512_set1_pd(6755399441055744.0 - 16.0)));
  const __m512d inv = _mm512_permutex2var_pd(_mm512_load_pd(kLog16InvC), idx,
                                             _mm512_load_pd(kLog16InvC + 8));
  const __m512d logc = _mm512_permutex2var_pd(_mm512_load_pd(kLog16LogC), idx,
                                              _mm512_load_pd(kLog16LogC + 8));
  const __m512d cs = _mm512_scalef_pd(__m512d(c), nk);
  const f64v f = f64v(_mm512_fmadd_pd(cs, inv, _mm512_fmsub_pd(m, inv, _mm512_set1_pd(1.0))));
  const f64v f2 = f * f, f4 = f2 * f2;
  const f64v a = f * (1.0 / 3) - 0.5, b = f * 0.2 - 0.25, d = f * (1.0 / 7) - (1.0 / 6);
  const f64v lp = f2 * ((f4 * d + f2 * b) + a) + f;
  return f64v(logc) + lp - f64v(nk) * 0.69314718055994530942;
}
#elif defined(__AVX2__)
// The same contract on AVX2, which has no vgetmantpd / vgetexppd and no 16-entry permute of
// doubles: u = 1 + z = m 2^k with m in [0.75, 1.5) from the bits (u >= 1: no subnormals),
// f = (m - 1) + c 2^-k, and log1p(f) = 2 atanh(s), s = f / (2 + f), |s| <= 0.2, by its series
// to s^15 (the next term is below 2^-41 of the result). One division, where vlog1p takes two
// and a longer polynomial.
FL_ALWAYS_INLINE f64v vlog1p_f32acc(f64v z) {
  const f64v one = vset<double>(1.0), u = one + z, c = z - (u - one);
  const i64v bits = i64v(u);
  f64v m = f64v((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);  // [1, 2)
  const auto big = m >= vset<double>(1.5);
  m = vselect(big, m * vset<double>(0.5), m);
  const i64v eb = ((bits >> 52) & 0x7FF) - big;  // biased exponent of 2^k (big: -1 lanes)
  const f64v k = f64v(eb | 0x4330000000000000LL) - vset<double>(4503599627371519.0);
  const f64v inv2k = f64v((2046 - eb) << 52);  // 2^-k
  const f64v f = (m - one) + c * inv2k;
  const f64v s = f / (vset<double>(2.0) + f), q = s * s;
  f64v p = vset<double>(1.0 / 15);
  p = p * q + 1.0 / 13;
  p = p * q + 1.0 / 11;
  p = p * q + 1.0 / 9;
  p = p * q + 1.0 / 7;
  p = p * q + 1.0 / 5;
  p = p * q + 1.0 / 3;
  const f64v s2 = s + s;
  return k * 0.69314718055994530942 + (s2 + s2 * (q * p));
}
#endif
// ---------------------------------------------------------------------------------------------
// log(u) for u >= 0 (or NaN) by the float table forms of vlog_sum above without their correction
// term (one division fewer on AVX2, one vscalefps fewer on AVX-512); vlog elsewhere (float64,
// SSE2). log(0) = -inf, log(inf) = inf, log(u < 0) and NaN: NaN.
// ---------------------------------------------------------------------------------------------
#if defined(__AVX512F__)
FL_ALWAYS_INLINE f32v vlog_table(f32v u) {
  const __m512 uu = __m512(u);
  const f32v m = f32v(_mm512_getmant_ps(uu, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan));
  const f32v k = f32v(_mm512_getexp_ps(uu)) - f32v(_mm512_getexp_ps(__m512(m)));
  // round(32 (m - 1)) in the low bits of 32 m + (1.5 * 2^23 - 32)
  const __m512i idx = _mm512_castps_si512(
      _mm512_fmadd_ps(__m512(m), _mm512_set1_ps(32.0f), _mm512_set1_ps(12582880.0f)));
  const f32v inv = table_lookup(kLogInvC, idx);
  const f32v f = m * inv - vset<float>(1.0f);
  const f32v r = table_lookup(kLogLogC, idx) + (log1p_small(f) + k * vset<float>(-2.12194440e-4f));
  const f32v out = k * vset<float>(0.693359375f) + r;
  return vselect(u == f32v{}, vset<float>(-std::numeric_limits<float>::infinity()), out);
}
#elif defined(__AVX2__)
// (the short form where every lane is normal and finite, all_normal: one thread in cache,
// float32, poisson_nll_loss and gaussian_nll_loss 0.75 the time, kl_div 0.89)
FL_ALWAYS_INLINE f32v vlog_table(f32v u) {
  if (all_normal(u)) return log_table_avx2<false, false>(u, f32v{});
  return log_table_avx2<false>(u, f32v{});
}
#endif
template <class V> FL_ALWAYS_INLINE V vlog_table(V u) { return vlog(u); }

// log(u + c), u >= 0, c a correction of at most an ulp of u (see the AVX-512 form above).
template <class V> FL_ALWAYS_INLINE V vlog_sum(V u, V c) {
  const V lu = vlog(u);
  return vselect(c == V{}, lu, lu + c / u);
}

// ---------------------------------------------------------------------------------------------
// vlog_table and vlog_sum where the caller has checked that u is normal and finite in every lane
// (2^-126 <= u < inf): on AVX2 a shorter form, the same elsewhere.
// ---------------------------------------------------------------------------------------------
#if defined(__AVX2__) && !defined(__AVX512F__)
FL_ALWAYS_INLINE f32v vlog_normal(f32v u) { return log_table_avx2<false, false>(u, f32v{}); }
FL_ALWAYS_INLINE f32v vlog_sum_normal(f32v u, f32v c) { return log_table_avx2<true, false>(u, c); }
#endif
template <class V> FL_ALWAYS_INLINE V vlog_normal(V u) { return vlog_table(u); }
template <class V> FL_ALWAYS_INLINE V vlog_sum_normal(V u, V c) { return vlog_sum(u, c); }
// vlog_table(y) where the caller discards the lanes with y = 0 (mask y0; their value is
// unspecified): on AVX2 (float) those lanes take log 1, so that a vector with zeros keeps
// vlog_table's short form (elsewhere the select would only add an operation: AVX-512, one thread
// in cache, kl_div 1.14 the time with it).
template <class V, class M> FL_ALWAYS_INLINE V vlog_nonzero(V y, [[maybe_unused]] M y0) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  if constexpr (sizeof(y[0]) == 4) return vlog_table(vselect(y0, V{} + 1, y));
#endif
  return vlog_table(y);
}

// ---------------------------------------------------------------------------------------------
// Storage <-> compute conversions: 16-bit inputs are widened to float32 as they are loaded and
// rounded (to nearest even) as they are stored, so they cost half the memory traffic.
// ---------------------------------------------------------------------------------------------
typedef uint16_t u16h __attribute__((vector_size(FASTLOSS_VEC_BYTES / 2)));
typedef uint32_t u32v __attribute__((vector_size(FASTLOSS_VEC_BYTES)));

// IEEE half -> float without F16C, branch-free on the bits (exact for every half, incl.
// subnormals, inf and NaN): shift exponent and mantissa into place, re-bias the exponent, then
// fix subnormals by a float subtraction and inf/NaN by a larger re-bias.
FL_ALWAYS_INLINE f32v half_bits_to_float(u32v h) {
  const u32v shifted = (h & 0x7FFFu) << 13;
  const u32v exp = shifted & (0x1Fu << 23);
  u32v o = shifted + ((127u - 15u) << 23);
  o = vselect(exp == (0x1Fu << 23), o + ((128u - 16u) << 23), o);  // inf / NaN
  f32v f = f32v(o);
  const f32v sub = f32v(o + (1u << 23)) - f32v(u32v{} + (113u << 23));  // subnormal
  f = vselect(exp == 0u, sub, f);
  return f32v(u32v(f) | ((h & 0x8000u) << 16));
}

// float -> IEEE half bits without F16C, branch-free, rounding to nearest even (overflow gives
// inf, NaN stays NaN, small values become subnormal halves or zero).
FL_ALWAYS_INLINE u32v float_to_half_bits(f32v v) {
  u32v f = u32v(v);
  const u32v sign = f & 0x80000000u;
  f ^= sign;
  // Normal range: re-bias the exponent and round the 13 dropped mantissa bits to nearest even.
  const u32v normal = (f + ((15u - 127u) << 23) + 0xFFFu + ((f >> 13) & 1u)) >> 13;
  // Subnormal range (|v| < 2^-14): let a float addition do the shift and the rounding.
  const f32v magic = f32v(u32v{} + (((127u - 15u) + (23u - 10u) + 1u) << 23));
  const u32v subnormal = u32v(f32v(f) + magic) - u32v(magic);
  const u32v big = vselect(f > 0x7F800000u, u32v{} + 0x7E00u, u32v{} + 0x7C00u);  // NaN / inf
  u32v o = vselect(f < 0x38800000u, subnormal, normal);
  o = vselect(f >= 0x47800000u, big, o);
  return o | (sign >> 16);
}

// One half <-> float, for the scalar code (tails, single elements): F16C's instructions, else
// lane 0 of the vector forms above (exact, and no libgcc call).
inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return half_bits_to_float(u32v{} + uint32_t(h))[0];
#endif
}
inline uint16_t float_to_half(float v) {
#if defined(__F16C__)
  return uint16_t(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
#else
  return uint16_t(float_to_half_bits(v - f32v{})[0]);  // (v - 0, not 0 + v: -0 stays -0)
#endif
}

template <class S> inline vec_t<compute_t<S>> vload_as(const S* p) {
  if constexpr (std::is_same_v<S, bfloat16>) {  // a bfloat16 is the top half of a float32
#if defined(__AVX512F__)
    return f32v(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
#elif defined(__AVX2__)
    return f32v(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
#elif defined(__SSE2__)
    return f32v(_mm_unpacklo_epi16(_mm_setzero_si128(),
                                   _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
    u16h h;
    std::memcpy(&h, p, sizeof(h));
    return f32v(__builtin_convertvector(h, u32v) << 16);
#endif
  } else if constexpr (std::is_same_v<S, float16>) {
#if defined(__AVX512F__)
    return f32v(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(__F16C__) && defined(__AVX__)
    return f32v(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#else
    u16h h;
    std::memcpy(&h, p, sizeof(h));
    return half_bits_to_float(__builtin_convertvector(h, u32v));
#endif
  } else {
    return vload(p);
  }
}

// Two vectors of float from 2 W bfloat16 at p, in one load and two bit operations (the widening
// load of vload_as takes a cross-lane shuffle a vector): even holds elements p[2 i], odd
// p[2 i + 1] (lane i). For sums and maxima, where the order of the elements does not matter.
#if defined(__AVX512F__)
constexpr bool kBf16PairLoad = true;
FL_ALWAYS_INLINE void vload_bf16_pair(const bfloat16* p, f32v& even, f32v& odd) {
  const __m512i v = _mm512_loadu_si512(p);
  even = f32v(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  odd = f32v(_mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u)))));
}
// The inverse order for float: p[2 i] = even[i], p[2 i + 1] = odd[i], 2 W floats.
FL_ALWAYS_INLINE void vstore_interleaved(float* p, f32v even, f32v odd) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
  _mm512_storeu_ps(p, _mm512_permutex2var_ps(__m512(even), lo, __m512(odd)));
  _mm512_storeu_ps(p + 16, _mm512_permutex2var_ps(__m512(even), hi, __m512(odd)));
}
#elif defined(__AVX2__)
constexpr bool kBf16PairLoad = true;
FL_ALWAYS_INLINE void vload_bf16_pair(const bfloat16* p, f32v& even, f32v& odd) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = f32v(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  odd = f32v(_mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xFFFF0000u)))));
}
FL_ALWAYS_INLINE void vstore_interleaved(float* p, f32v even, f32v odd) {
  const __m256 lo = _mm256_unpacklo_ps(__m256(even), __m256(odd));  // e0 o0 e1 o1 | e4 o4 e5 o5
  const __m256 hi = _mm256_unpackhi_ps(__m256(even), __m256(odd));  // e2 o2 e3 o3 | e6 o6 e7 o7
  _mm256_storeu_ps(p, _mm256_permute2f128_ps(lo, hi, 0x20));
  _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}
#else
constexpr bool kBf16PairLoad = false;
inline void vload_bf16_pair(const bfloat16*, f32v&, f32v&) {}
inline void vstore_interleaved(float*, f32v, f32v) {}
#endif

template <class S> inline compute_t<S> to_compute(S v);
template <class S> inline S from_compute(compute_t<S> v);

template <class S> inline void vstore_as(S* p, vec_t<compute_t<S>> v) {
  if constexpr (std::is_same_v<S, bfloat16>) {
    u32v u = u32v(v);
    u = u + 0x7FFFu + ((u >> 16) & 1u);           // round to nearest even
    u = vselect(v != v, u32v{} + 0x7FC00000u, u);  // NaN stays a (quiet) NaN
    u = u >> 16;
#if defined(__AVX512F__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(__m512i(u)));
#elif defined(__AVX2__)
    const __m256i packed = _mm256_packus_epi32(__m256i(u), __m256i(u));  // per 128-bit lane
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
#else
    for (int i = 0; i < vec_width<float>; ++i) p[i] = bfloat16{uint16_t(u[i])};
#endif
  } else if constexpr (std::is_same_v<S, float16>) {
#if defined(__AVX512F__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(__m512(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__F16C__) && defined(__AVX__)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(__m256(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    const u16h h = __builtin_convertvector(float_to_half_bits(v), u16h);
    std::memcpy(p, &h, sizeof(h));
#endif
  } else {
    vstore(p, v);
  }
}

template <class S> inline compute_t<S> to_compute(S v) {
  if constexpr (std::is_same_v<S, bfloat16>) {
    const uint32_t u = uint32_t(v.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  } else if constexpr (std::is_same_v<S, float16>) {
    return half_to_float(v.bits);
  } else {
    return compute_t<S>(v);
  }
}

template <class S> inline S from_compute(compute_t<S> v) {
  if constexpr (std::is_same_v<S, bfloat16>) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof(u));
    if (v != v) return bfloat16{0x7FC0};
    u = u + 0x7FFFu + ((u >> 16) & 1u);
    return bfloat16{uint16_t(u >> 16)};
  } else if constexpr (std::is_same_v<S, float16>) {
    return float16{float_to_half(v)};
  } else {
    return S(v);
  }
}

// Load n < width elements (converted to the compute type), padding the vector with `pad`.
// Masked loads on AVX-512 and AVX2 (lanes past n are not read, so they cannot fault), else
// element by element through a buffer.
template <class S> inline vec_t<compute_t<S>> load_partial(const S* p, int64_t n,
                                                          compute_t<S> pad) {
  using T = compute_t<S>;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<S, float>) {
    return f32v(_mm512_mask_loadu_ps(_mm512_set1_ps(pad), __mmask16((1u << n) - 1), p));
  } else if constexpr (std::is_same_v<S, double>) {
    return f64v(_mm512_mask_loadu_pd(_mm512_set1_pd(pad), __mmask8((1u << n) - 1), p));
  } else {  // 16-bit: the valid halfwords, converted, then the padding
    const __mmask16 k = __mmask16((1u << n) - 1);
    const __m256i h = _mm256_maskz_loadu_epi16(k, p);
    __m512 v;
    if constexpr (std::is_same_v<S, bfloat16>)
      v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      v = _mm512_cvtph_ps(h);
    return f32v(_mm512_mask_blend_ps(k, _mm512_set1_ps(pad), v));
  }
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<S, float>) {
    const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return f32v(_mm256_blendv_ps(_mm256_set1_ps(pad), _mm256_maskload_ps(p, k),
                                 _mm256_castsi256_ps(k)));
  } else if constexpr (std::is_same_v<S, double>) {
    const __m256i k = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return f64v(_mm256_blendv_pd(_mm256_set1_pd(pad), _mm256_maskload_pd(p, k),
                                 _mm256_castsi256_pd(k)));
  }
#endif
  T buf[vec_width<T>];
  for (int i = 0; i < vec_width<T>; ++i) buf[i] = i < n ? to_compute(p[i]) : pad;
  return vload(buf);
}
template <class S> inline void store_partial(S* p, int64_t n, vec_t<compute_t<S>> v) {
  using T = compute_t<S>;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<S, float>) {
    _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), __m512(v));
    return;
  } else if constexpr (std::is_same_v<S, double>) {
    _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), __m512d(v));
    return;
  }
#endif
  T buf[vec_width<T>];
  vstore(buf, v);
  for (int64_t i = 0; i < n; ++i) p[i] = from_compute<S>(buf[i]);
}

// Float64 sums of a vector: lo += l (float64), or its two halves widened (float32).
template <class V> inline void add_widened(V l, f64v& lo, f64v& hi) {
  if constexpr (sizeof(l[0]) == 4) {
    f64v a, b;
    widen(l, a, b);
    lo += a;
    hi += b;
  } else {
    lo += l;
  }
}

// 16-bit operands in, 16-bit gradients out, through float32 blocks (the elementwise kernels
// of pointwise.cpp and pairs.cpp): n elements converted, whole vectors then the rest.
template <class S>
__attribute__((noinline)) void to_float_block(const S* s, float* d, int64_t n) {
  constexpr int W = vec_width<float>;
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(d + i, vload_as(s + i));
  for (; i < n; ++i) d[i] = to_compute(s[i]);
}
template <class S>
__attribute__((noinline)) void from_float_block(const float* s, S* d, int64_t n) {
  constexpr int W = vec_width<float>;
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore_as(d + i, vload(s + i));
  for (; i < n; ++i) d[i] = from_compute<S>(s[i]);
}

}  // namespace
}  // namespace fastloss
