// SIMD math shared by every kernel: fixed-width vector types and exp.
//
// The vectors are GCC/Clang vector extensions of 64 bytes (16 floats or 8 doubles). The same
// source compiles to one AVX-512 register, two AVX2 registers or four SSE2 registers depending
// on the target flags of the translation unit, which is what lets one kernel source be built
// once per instruction set and dispatched at run time.
//
// exp is our own (Cody-Waite range reduction + polynomial, 2^n built from the exponent bits):
// glibc's vector expf reaches ~1.4 G exp/s per core and would halve the fused bandwidth.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace fastloss {

typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef int64_t i64x8 __attribute__((vector_size(64)));

template <class T> struct Vec;
template <> struct Vec<float> {
  using type = f32x16;
  using itype = i32x16;
  static constexpr int width = 16;
};
template <> struct Vec<double> {
  using type = f64x8;
  using itype = i64x8;
  static constexpr int width = 8;
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

// Lane-wise select: mask lanes are all-ones (true) or zero, as produced by vector compares.
template <class V, class M> inline V vselect(M mask, V a, V b) { return mask ? a : b; }

template <class T> inline vec_t<T> vmax(vec_t<T> a, vec_t<T> b) { return a > b ? a : b; }

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

// Widen 16 floats into two vectors of 8 doubles (low and high halves).
inline void widen(f32x16 v, f64x8& lo, f64x8& hi) {
  typedef float f32x8 __attribute__((vector_size(32)));
  f32x8 l = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  f32x8 h = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  lo = __builtin_convertvector(l, f64x8);
  hi = __builtin_convertvector(h, f64x8);
}

// ---------------------------------------------------------------------------------------------
// exp, float32. exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2],
// ln 2 split in two (Cody-Waite) so r is exact; exp(r) by the Cephes minimax polynomial
// (max error ~1 ulp). Results below ~2.2e-38 (x < -87.3) flush to 0; x > 88.72 gives +inf;
// NaN propagates. 2^n is built as 2^(n-1) * 2 so n = 128 still reaches FLT_MAX.
// ---------------------------------------------------------------------------------------------
inline f32x16 vexp(f32x16 x) {
  const f32x16 hi = vset<float>(88.7228390f), lo = vset<float>(-87.3365448f);
  f32x16 xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  // Round to nearest via the 1.5 * 2^23 shifter: valid for |x / ln2| < 2^22.
  const f32x16 shifter = vset<float>(12582912.0f);
  f32x16 t = xc * vset<float>(1.44269504088896341f) + shifter;
  f32x16 n = t - shifter;
  f32x16 r = xc - n * vset<float>(0.693359375f);
  r = r - n * vset<float>(-2.12194440e-4f);
  f32x16 p = vset<float>(1.9875691500E-4f);
  p = p * r + vset<float>(1.3981999507E-3f);
  p = p * r + vset<float>(8.3334519073E-3f);
  p = p * r + vset<float>(4.1665795894E-2f);
  p = p * r + vset<float>(1.6666665459E-1f);
  p = p * r + vset<float>(5.0000001201E-1f);
  p = p * (r * r) + r + vset<float>(1.0f);
  i32x16 ni = __builtin_convertvector(n, i32x16);
  i32x16 bits = (ni + 126) << 23;  // 2^(n-1)
  f32x16 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  f32x16 res = p * scale * vset<float>(2.0f);
  res = x < lo ? vset<float>(0.0f) : res;
  res = x > hi ? vset<float>(std::numeric_limits<float>::infinity()) : res;
  res = x != x ? x : res;  // NaN in, NaN out
  return res;
}

// ---------------------------------------------------------------------------------------------
// exp, float64. Same reduction; exp(r) for |r| <= ln2/2 by its Taylor series to degree 13
// (truncation error < 2e-17 relative). Results below ~2.2e-308 flush to 0.
// ---------------------------------------------------------------------------------------------
inline f64x8 vexp(f64x8 x) {
  const f64x8 hi = vset<double>(709.782712893383973), lo = vset<double>(-708.39641853226408);
  f64x8 xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const f64x8 shifter = vset<double>(6755399441055744.0);  // 1.5 * 2^52
  f64x8 t = xc * vset<double>(1.4426950408889634074) + shifter;
  f64x8 n = t - shifter;
  f64x8 r = xc - n * vset<double>(6.93147180369123816490e-01);
  r = r - n * vset<double>(1.90821492927058770002e-10);
  // Horner on 1/k! coefficients, degree 13.
  f64x8 p = vset<double>(1.0 / 6227020800.0);
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
  p = p * (r * r) + r + vset<double>(1.0);
  i64x8 ni = __builtin_convertvector(n, i64x8);
  i64x8 bits = (ni + 1022) << 52;  // 2^(n-1)
  f64x8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  f64x8 res = p * scale * vset<double>(2.0);
  res = x < lo ? vset<double>(0.0) : res;
  res = x > hi ? vset<double>(std::numeric_limits<double>::infinity()) : res;
  res = x != x ? x : res;
  return res;
}

}  // namespace fastloss
