// Rows in SIMD lanes, for rows of a few classes: when a row is only a few vectors long, the
// per-row work of the row kernels (max, sum, the log, the target pick, the scalar epilogue, the
// block bookkeeping) costs more than the arithmetic on the elements. A block of
// W = vec_width<T> rows is transposed into a small local buffer (element j of lane b at
// buf[j * W + b]), so every step, the epilogue's exp and log included, is one vector
// instruction for W rows. Rows whose class axis is strided (the class axis 1 of an
// (N, C, H, W) batch) come in with neighbouring rows next to each other in memory, which is
// this layout already.
//
// Results per row do not depend on which rows share a block (no operation crosses lanes), so
// they are bit-identical for every thread count. Sums are accumulated in float64 lanes, as in
// the row kernels. Used by softmax_narrow.hpp and distributions.cpp; included by files compiled
// once per instruction set (the code lands in their namespace fastloss::<isa>::<anonymous>).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "include lanes.hpp only from a file compiled with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

template <class T> using ivec_t = typename Vec<T>::itype;

// The rows of a block: element offsets of rows r0 .. r0 + nb - 1 (no division per row).
inline void row_offsets(const Layout3& L, int64_t r0, int nb, int64_t* off) {
  if (L.n2 == 1) {
    for (int b = 0; b < nb; ++b) off[b] = (r0 + b) * L.s0;
    return;
  }
  int64_t o = r0 / L.n2, i = r0 % L.n2;
  for (int b = 0; b < nb; ++b) {
    off[b] = o * L.s0 + i * L.s2;
    if (++i == L.n2) i = 0, ++o;
  }
}

// ---------------------------------------------------------------------------------------------
// Contiguous float rows: a tile of W rows x W classes is transposed in registers (W masked row
// loads, 4 log2(W) shuffles per row, W stores) instead of W * W scalar moves, the cost that
// dominated a row of ten classes. r[i] holds row i on entry and class i on return.
// ---------------------------------------------------------------------------------------------
#if defined(__AVX512F__)
__attribute__((always_inline)) inline void transpose_tile(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {  // pairs of rows, per 128-bit lane: a0 b0 a1 b1 | a2 b2 a3 b3
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // u[i + e], lane L: rows i .. i+3 of class 4L + e
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int e = 0; e < 4; ++e) {  // a 4 x 4 transpose of 128-bit lanes across the row groups
    const __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x44);   // A0 A1 B0 B1
    const __m512 v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xEE);   // A2 A3 B2 B3
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x44);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xEE);
    r[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);       // class e:      A0 B0 C0 D0
    r[4 + e] = _mm512_shuffle_f32x4(v0, v2, 0xDD);   // class 4 + e:  A1 B1 C1 D1
    r[8 + e] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + e] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}
inline __m512 load_row_part(const float* p, int k) {  // p[0:k), zeros after (no fault past k)
  return _mm512_maskz_loadu_ps(__mmask16((1u << k) - 1u), p);
}
inline void store_row_part(float* p, int k, __m512 v) {
  _mm512_mask_storeu_ps(p, __mmask16((1u << k) - 1u), v);
}
using TileReg = __m512;
inline TileReg tile_load(const float* p) { return _mm512_loadu_ps(p); }
inline void tile_store(float* p, TileReg v) { _mm512_storeu_ps(p, v); }
#elif defined(__AVX2__)
__attribute__((always_inline)) inline void transpose_tile(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    const __m256d a = _mm256_castps_pd(t[i]), b = _mm256_castps_pd(t[i + 1]);
    const __m256d c = _mm256_castps_pd(t[i + 2]), d = _mm256_castps_pd(t[i + 3]);
    u[i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
    u[i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
    u[i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, d));
    u[i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, d));
  }
  for (int e = 0; e < 4; ++e) {
    const __m256 a = u[e], b = u[4 + e];
    r[e] = _mm256_permute2f128_ps(a, b, 0x20);
    r[4 + e] = _mm256_permute2f128_ps(a, b, 0x31);
  }
}
inline __m256i tile_mask(int k) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 load_row_part(const float* p, int k) { return _mm256_maskload_ps(p, tile_mask(k)); }
inline void store_row_part(float* p, int k, __m256 v) { _mm256_maskstore_ps(p, tile_mask(k), v); }
using TileReg = __m256;
// (tile rows by explicit unaligned loads and stores: a memcpy of a TileReg became a copy
// through the stack in 16-byte halves, and the 32-byte reloads that followed waited on it)
inline TileReg tile_load(const float* p) { return _mm256_loadu_ps(p); }
inline void tile_store(float* p, TileReg v) { _mm256_storeu_ps(p, v); }
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
// A tile row of W floats stored as W elements of S: float32 by tile_store, 16-bit types
// converted as they are stored (vstore_as rounds as from_compute does).
template <class S> __attribute__((always_inline)) inline void tile_store_as(S* p, TileReg v) {
  if constexpr (std::is_same_v<S, float>) tile_store(p, v);
  else vstore_as(p, f32v(v));
}
#endif

#if defined(__AVX512F__)
// f(std::integral_constant<int, n>{}) for a class count n from 3 to 7 (loops over the classes
// then unroll).
template <class F> inline void with_small_class_count(int64_t n, F&& f) {
  switch (n) {
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    default: f(std::integral_constant<int, 7>{}); break;
  }
}

// 16 consecutive rows of N (3 to 7) float classes, p[0 .. 16 N), as N class vectors: element
// e = b N + j (class j of row b) is picked by permutes of two vectors at a time (e mod 32
// indexes the pair holding element e; pairs after the first blend in where e / 32 is theirs),
// at most 6 operations per class.
template <int N> __attribute__((always_inline)) inline void split_small_rows(const float* p,
                                                                             __m512 c[N]) {
  __m512 v[N];
  for (int q = 0; q < N; ++q) v[q] = _mm512_loadu_ps(p + q * 16);
  const __m512i e0 = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(N));
  for (int j = 0; j < N; ++j) {
    const __m512i e = _mm512_add_epi32(e0, _mm512_set1_epi32(j));
    const __m512i pair = _mm512_srli_epi32(e, 5);
    __m512 r = _mm512_permutex2var_ps(v[0], e, v[1]);  // (low 5 bits: e mod 32)
    for (int q = 2; q < N; q += 2) {
      const __mmask16 k = _mm512_cmpeq_epi32_mask(pair, _mm512_set1_epi32(q / 2));
      r = q + 1 < N ? _mm512_mask_blend_ps(k, r, _mm512_permutex2var_ps(v[q], e, v[q + 1]))
                    : _mm512_mask_permutexvar_ps(r, k, e, v[q]);  // (low 4 bits)
    }
    c[j] = r;
  }
}

// The inverse: N class vectors written back as 16 consecutive rows, p[0 .. 16 N). Output vector
// q, element e = 16 q + i, is class e mod N of row e / N, picked from the class vectors two at a
// time by permutes (index tables built once per class count).
template <int N> __attribute__((always_inline)) inline void join_small_rows(const __m512 c[N],
                                                                            float* p) {
  struct Tab {
    alignas(64) int32_t idx[N][16];
    uint16_t mask[N][4];
  };
  static const Tab tab = [] {
    Tab t{};
    for (int q = 0; q < N; ++q)
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * q + i, b = e / N, j = e % N;
        t.idx[q][i] = (j % 2) * 16 + b;
        t.mask[q][j / 2] = uint16_t(t.mask[q][j / 2] | (1u << i));
      }
    return t;
  }();
  for (int q = 0; q < N; ++q) {
    const __m512i idx = _mm512_load_si512(tab.idx[q]);
    __m512 r = _mm512_permutex2var_ps(c[0], idx, c[1]);
    for (int k = 1; 2 * k < N; ++k)
      r = 2 * k + 1 < N ? _mm512_mask_blend_ps(tab.mask[q][k], r,
                                               _mm512_permutex2var_ps(c[2 * k], idx, c[2 * k + 1]))
                        : _mm512_mask_permutexvar_ps(r, tab.mask[q][k], idx, c[2 * k]);
    _mm512_storeu_ps(p + q * 16, r);
  }
}
#endif

// Whether a full block's rows start at consecutive elements (the class axis of an (N, C, H, W)
// batch inside one image, or a transposed (C, N) array): then class j of the block is W
// consecutive elements, one vector load or store, and the block touches one run of cache lines
// per class instead of one line per element (the class stride is often a multiple of 4 KB,
// every class in the same L1 set).
template <int W> inline bool rows_in_lanes(const Layout3& L, const int64_t* off, int nb) {
  if (nb != W || L.s1 == 1) return false;
  for (int b = 1; b < W; ++b)
    if (off[b] != off[0] + b) return false;
  return true;
}

// Transposes a block of nb rows of n classes into buf (compute type). Lanes nb .. W-1 repeat
// lane 0, so they compute finite numbers wherever lane 0 does (their results are dropped).
template <class S, class T = compute_t<S>>
void gather_lanes(const S* x, const Layout3& L, const int64_t* off, int nb, T* buf) {
  constexpr int W = vec_width<T>;
  const int64_t n = L.n1, s1 = L.s1;
  if (rows_in_lanes<W>(L, off, nb)) {
    for (int64_t j = 0; j < n; ++j) vstore(buf + j * W, vload_as(x + off[0] + j * s1));
    return;
  }
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (!std::is_same_v<S, float> && std::is_same_v<T, float> &&
                sizeof(TileReg) == W * sizeof(float)) {
    // 16-bit rows (bfloat16, float16) of at least W classes, a full block: the float tiles
    // below, each row's W elements converted as they are loaded; the classes past the last
    // whole tile as the tile of the row's last W classes (the element-by-element loop after
    // this took twice the float32 time: AVX2, bfloat16 cross-entropy loss at 32 to 256 classes)
    if (s1 == 1 && nb == W && n >= W) {
      for (int64_t j0 = 0; j0 < n; j0 += W) {
        const int64_t j = j0 + W <= n ? j0 : n - W;
        TileReg r[W];
        for (int b = 0; b < W; ++b) r[b] = TileReg(vload_as(x + off[b] + j));
        transpose_tile(r);
        for (int i = 0; i < W; ++i) tile_store(buf + (j + i) * W, r[i]);
      }
      return;
    }
  }
  if constexpr (std::is_same_v<S, float> && sizeof(TileReg) == W * sizeof(float)) {
    if (s1 == 1) {
#if defined(__AVX512F__)
      // A full block of 3 to 7 classes in consecutive rows: its 16 n floats are n whole
      // vectors, split into classes by permutes (split_small_rows), where the tile transpose
      // takes 16 masked loads and 64 shuffles to fill a few classes (one thread, in cache:
      // cross-entropy 9% less time at 3 and 4 classes, 2-6% at 5 to 7; none at 8).
      if (nb == W && n >= 3 && n <= 7 && L.n2 == 1 && L.s0 == n) {  // (rows back to back)
        auto pick = [&](auto kN) {
          constexpr int N = decltype(kN)::value;
          __m512 c[N];
          split_small_rows<N>(x + off[0], c);
          for (int j = 0; j < N; ++j)
            _mm512_storeu_ps(reinterpret_cast<float*>(buf) + j * W, c[j]);
        };
        with_small_class_count(n, pick);
        return;
      }
#endif
      int64_t j0 = 0;
      if (nb == W) {  // full tiles: fixed trip counts, so the tile stays in registers
        for (; j0 + W <= n; j0 += W) {
          TileReg r[W];
          for (int b = 0; b < W; ++b) r[b] = tile_load(x + off[b] + j0);
          transpose_tile(r);
          for (int j = 0; j < W; ++j) tile_store(buf + (j0 + j) * W, r[j]);
        }
        if (j0 < n) {
          // The last k < W classes (rows of fewer than W classes: the only tile), by masked
          // loads: the whole tile of the row's last W classes, as 16-bit rows and the stores
          // take it, measured 1.02-1.04 the time here from 17 to 25 classes.
          const int k = int(n - j0);
          TileReg r[W];
          for (int b = 0; b < W; ++b) r[b] = load_row_part(x + off[b] + j0, k);
          transpose_tile(r);
          for (int j = 0; j < W; ++j)
            if (j < k) tile_store(buf + (j0 + j) * W, r[j]);
        }
        return;
      }
      for (; j0 < n; j0 += W) {
        const int k = int(n - j0 < W ? n - j0 : W);
        TileReg r[W];
        for (int b = 0; b < nb; ++b) r[b] = load_row_part(x + off[b] + j0, k);
        for (int b = nb; b < W; ++b) r[b] = r[0];
        transpose_tile(r);
        for (int j = 0; j < k; ++j) tile_store(buf + (j0 + j) * W, r[j]);
      }
      return;
    }
  }
#endif
  if (s1 == 1) {
    for (int b = 0; b < nb; ++b) {
      const S* p = x + off[b];
      for (int64_t j = 0; j < n; ++j) buf[j * W + b] = to_compute(p[j]);
    }
  } else {
    for (int64_t j = 0; j < n; ++j)
      for (int b = 0; b < nb; ++b) buf[j * W + b] = to_compute(x[off[b] + j * s1]);
  }
  for (int b = nb; b < W; ++b)
    for (int64_t j = 0; j < n; ++j) buf[j * W + b] = buf[j * W];
}

// Row offsets and transposed elements of the block of rows r0 .. r0 + nb - 1.
template <class S, class T = compute_t<S>>
void load_block(const S* x, const Layout3& L, int64_t r0, int nb, T* buf, int64_t* off) {
  row_offsets(L, r0, nb, off);
  gather_lanes(x, L, off, nb, buf);
}

// Software prefetch of [p, p + bytes), a cache line at a time (addresses past an array's end are
// harmless: a prefetch never faults). Volatile asm on x86: GCC 12 dropped a loop of
// __builtin_prefetch once inlined into the lane kernels.
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t q = 0; q < bytes; q += 64) {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("prefetcht0 %0" : : "m"(c[q]));
#else
    __builtin_prefetch(c + q);
#endif
  }
}

// Software prefetch of the block of B rows a few blocks after the one at r0 (rows a stride
// apart, classes contiguous: the common (N, C) array). A lane kernel's block is short (16 rows
// of 10 float32 classes are 640 bytes) and its arithmetic long, and the hardware prefetcher
// alone left it waiting on memory: cross-entropy loss over 50M float32 logits, 2 threads, median
// of 8 alternated runs, 10 classes 53.3 -> 28.8 ms, 3 classes 81.8 -> 67.7, 32 classes 20.8 ->
// 13.6, 100 classes 17.8 -> 11.5 (4 blocks ahead for blocks up to 1 KB, else `far`, 2 unless
// the kernel says otherwise).
template <class S>
inline void prefetch_block(const S* x, const Layout3& L, int64_t r0, int B, int far = 2) {
  if (L.n2 != 1 || L.s1 != 1 || L.s0 < L.n1) return;
  const int64_t bytes = int64_t(B) * L.s0 * int64_t(sizeof(S));
  const int64_t r = r0 + (bytes <= 1024 ? 4 : far) * B;
  if (r + B > L.n0) return;  // (the last blocks: already on their way, or read)
  prefetch_bytes(x + r * L.s0, bytes);
}

// Writes lanes b < nb of buf back as rows; lanes with fill[b] set get that value instead
// (NaN rows, ignored rows).
template <class S, class T = compute_t<S>>
void scatter_lanes(S* g, const Layout3& L, const int64_t* off, int nb, const T* buf,
                   const bool* use_fill = nullptr, const T* fill = nullptr) {
  constexpr int W = vec_width<T>;
  const int64_t n = L.n1, s1 = L.s1;
  if (rows_in_lanes<W>(L, off, nb)) {
    alignas(64) T keep[W], fv[W];  // (lanes: 1 keeps the row's value, 0 takes fill)
    bool any_fill = false;
    for (int b = 0; b < W; ++b) {
      const bool f = use_fill && use_fill[b];
      any_fill |= f;
      keep[b] = f ? T(0) : T(1);
      fv[b] = f ? fill[b] : T(0);
    }
    if (!any_fill) {
      for (int64_t j = 0; j < n; ++j) vstore_as(g + off[0] + j * s1, vload(buf + j * W));
    } else {
      const auto k = vload(keep) != vset<T>(0);
      const auto f = vload(fv);
      for (int64_t j = 0; j < n; ++j)
        vstore_as(g + off[0] + j * s1, vselect(k, vload(buf + j * W), f));
    }
    return;
  }
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<T, float> && sizeof(TileReg) == W * sizeof(float)) {
    // Rows of at least W classes, a full block: gather_lanes' tiles in reverse, 16-bit rows
    // converted as they are stored (vstore_as rounds as from_compute does), filled rows' lanes
    // replaced by their fill as each class vector is loaded (one blend; an ignored row in a
    // block, as padding tokens make common, took the element loop below: AVX-512, float32
    // cross-entropy with the gradient, a row in 7 ignored, time against that: one thread in
    // cache 0.88 at 17 classes, 0.82 at 100, 0.81 at 256; two threads, 50M logits, 0.85-0.93,
    // 0.87-0.91, 0.83-0.86). The last k < W classes as the tile of the row's last W
    // classes, whole, its first W - k classes written again with the values they already hold
    // (vmaskmovps stores are slow on Zen 3: AVX2, one thread, float32, in cache, time against
    // the masked tile: cross-entropy with the gradient 0.86 at 17 and 20 classes, 0.90 at 25,
    // 0.92 at 33, 0.96 at 100; softmax 0.81-0.97 from 17 to 100).
    bool any_fill = false;
    if (use_fill)
      for (int b = 0; b < nb; ++b) any_fill |= use_fill[b];
    if (s1 == 1 && nb == W && n >= W) {
      auto tiles = [&](auto kFill) {
        using V = vec_t<T>;
        alignas(64) T keep[W] = {}, fv[W] = {};  // (lanes: 1 keeps the row's value, 0 fills)
        if constexpr (decltype(kFill)::value)
          for (int b = 0; b < W; ++b) {
            keep[b] = use_fill[b] ? T(0) : T(1);
            fv[b] = use_fill[b] ? fill[b] : T(0);
          }
        const auto k = vload(keep) != vset<T>(0);
        const V f = vload(fv);
        for (int64_t j0 = 0; j0 < n; j0 += W) {
          const int64_t j = j0 + W <= n ? j0 : n - W;
          TileReg r[W];
          for (int i = 0; i < W; ++i) {
            if constexpr (decltype(kFill)::value)
              r[i] = TileReg(vselect(k, vload(buf + (j + i) * W), f));
            else
              r[i] = tile_load(buf + (j + i) * W);
          }
          transpose_tile(r);
          for (int b = 0; b < W; ++b) tile_store_as(g + off[b] + j, r[b]);
        }
      };
      if (any_fill)
        tiles(std::true_type{});
      else
        tiles(std::false_type{});
      return;
    }
    if constexpr (std::is_same_v<S, float>) {
      if (s1 == 1) {
#if defined(__AVX512F__)
        // The inverse of gather_lanes' split for 3 to 7 classes in consecutive rows
        // (join_small_rows).
        if (nb == W && !any_fill && n >= 3 && n <= 7 && L.n2 == 1 && L.s0 == n) {
          auto put = [&](auto kN) {
            constexpr int N = decltype(kN)::value;
            __m512 c[N];
            for (int j = 0; j < N; ++j)
              c[j] = _mm512_loadu_ps(reinterpret_cast<const float*>(buf) + j * W);
            join_small_rows<N>(c, g + off[0]);
          };
          with_small_class_count(n, put);
          return;
        }
#endif
        if (nb == W && !any_fill) {  // rows of fewer than W classes: one masked tile
          const int k = int(n);
          TileReg r[W];
          for (int j = 0; j < W; ++j) {
            r[j] = TileReg{};
            if (j < k) r[j] = tile_load(buf + j * W);
          }
          transpose_tile(r);
          for (int b = 0; b < W; ++b) store_row_part(g + off[b], k, r[b]);
          return;
        }
        for (int64_t j0 = 0; j0 < n; j0 += W) {  // a partial block, or one with filled rows
          const int k = int(n - j0 < W ? n - j0 : W);
          TileReg r[W];
          for (int j = 0; j < k; ++j) r[j] = tile_load(buf + (j0 + j) * W);
          for (int j = k; j < W; ++j) r[j] = r[0];
          transpose_tile(r);  // (r[b]: row b's classes j0 .. j0 + k - 1)
          for (int b = 0; b < nb; ++b) {
            if (use_fill && use_fill[b]) {
              for (int j = 0; j < k; ++j) g[off[b] + j0 + j] = fill[b];
            } else {
              store_row_part(g + off[b] + j0, k, r[b]);
            }
          }
        }
        return;
      }
    }
  }
#endif
  for (int b = 0; b < nb; ++b) {
    S* p = g + off[b];
    if (use_fill && use_fill[b]) {
      const S v = from_compute<S>(fill[b]);
      for (int64_t j = 0; j < n; ++j) p[j * s1] = v;
    } else if (s1 == 1) {
      for (int64_t j = 0; j < n; ++j) p[j] = from_compute<S>(buf[j * W + b]);
    } else {
      for (int64_t j = 0; j < n; ++j) p[j * s1] = from_compute<S>(buf[j * W + b]);
    }
  }
}

// fn(r0, nb) for blocks of B rows (the last of a thread's range may be shorter); each thread
// takes one contiguous range of whole blocks. row_work: a row's work for threads_for (its
// elements, times kExpWork where each takes an exp or a log).
// In groups: fn(g0, g1) for the consecutive row ranges [g0, g1) of at most G rows (G a
// multiple of B) that make up each thread's share of whole blocks (a group ends where the share
// does; the last group of the rows may end in a partial block).
template <class Fn>
void parallel_row_groups(int64_t rows, int64_t row_work, int B, int64_t G, Fn&& fn) {
  const int64_t blocks = (rows + B - 1) / B;
  const int nt = threads_for(rows * (row_work > 1 ? row_work : 1), blocks);
  parallel_for(nt, [&](int64_t t, int64_t n) {
    const int64_t lo = blocks * t / n * B;
    int64_t hi = blocks * (t + 1) / n * B;
    hi = hi < rows ? hi : rows;
    for (int64_t g0 = lo; g0 < hi; g0 += G) fn(g0, g0 + G < hi ? g0 + G : hi);
  });
}
template <class Fn> void parallel_row_blocks(int64_t rows, int64_t row_work, int B, Fn&& fn) {
  parallel_row_groups(rows, row_work, B, B, [&](int64_t r, int64_t end) { fn(r, int(end - r)); });
}

// The per-row losses of a group of n <= G rows from row r0, taken after the group's blocks
// (the deferred logs of the lane kernels): f(i) gives the float64 vector of rows r0 + i ..
// r0 + i + WD - 1, for i < n rounded up to whole vectors; stored straight into loss for a
// whole group, else through a buffer whose lanes past n are dropped.
template <int64_t G, class F>
__attribute__((always_inline)) inline void store_group_losses(double* loss, int64_t r0, int64_t n,
                                                              F&& f) {
  constexpr int WD = vec_width<double>;
  alignas(64) double out[G];
  double* o = n == G ? loss + r0 : out;
  for (int64_t i = 0; i < (n + WD - 1) / WD * WD; i += WD) vstore(o + i, f(i));
  if (o == out) std::memcpy(loss + r0, out, sizeof(double) * size_t(n));
}

// Per-lane float64 sums of compute-type vectors (a float vector is widened to two halves).
template <class T> struct LaneSum {
  static constexpr int K = vec_width<T> / vec_width<double>;
  f64v v[K] = {};
  void add(vec_t<T> x) {
    if constexpr (std::is_same_v<T, float>) {
      f64v lo, hi;
      widen(x, lo, hi);
      v[0] += lo;
      v[1] += hi;
    } else {
      v[0] += x;
    }
  }
  void store(double* out) const {
    for (int k = 0; k < K; ++k) vstore(out + k * vec_width<double>, v[k]);
  }
};

// Targets of a block as lanes (the lane cross-entropy kernels, multi_margin_small): the class
// (compute type; -1 for ignore_index rows and invalid targets), and 1.0 / 0.0 per float64 lane
// for ignore_index rows and for invalid targets. AVX-512 and AVX2 by 64-bit compares (a scalar loop compiles to a
// branch per lane, and its stores stall the vector loads after them: one thread, float32, in
// cache, 10% less time at 3 classes, 6% at 10, 3% at 100).
template <class T> struct TargetLanes {
  static constexpr int K = vec_width<T> / vec_width<double>;
  vec_t<T> t, ign;  // (ign: 1 / 0 in the compute type)
  f64v ign64[K], inv64[K];
};
template <class T>
__attribute__((always_inline)) inline TargetLanes<T> target_lanes(const int64_t* tp, int64_t n,
                                                                    int64_t ignore_index) {
  [[maybe_unused]] constexpr int W = vec_width<T>, WD = vec_width<double>;
  TargetLanes<T> r;
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
  const __m512i vi = _mm512_set1_epi64(ignore_index), vn = _mm512_set1_epi64(n);
  const __m512d one = _mm512_set1_pd(1.0);
  __mmask8 ign[TargetLanes<T>::K], skip[TargetLanes<T>::K];
  for (int k = 0; k < TargetLanes<T>::K; ++k) {
    const __m512i t = _mm512_loadu_si512(tp + k * WD);
    ign[k] = _mm512_cmpeq_epi64_mask(t, vi);
    skip[k] = ign[k] | _mm512_cmpge_epu64_mask(t, vn);  // (t < 0: a large unsigned)
    r.ign64[k] = f64v(_mm512_maskz_mov_pd(ign[k], one));
    r.inv64[k] = f64v(_mm512_maskz_mov_pd(__mmask8(skip[k] & ~ign[k]), one));
  }
  if constexpr (std::is_same_v<T, float>) {
    const __m256 m1 = _mm256_set1_ps(-1.0f);
    const __m256 t0 = _mm256_mask_blend_ps(skip[0], _mm512_cvtepi64_ps(_mm512_loadu_si512(tp)), m1);
    const __m256 t1 =
        _mm256_mask_blend_ps(skip[1], _mm512_cvtepi64_ps(_mm512_loadu_si512(tp + 8)), m1);
    r.t = vec_t<T>(_mm512_insertf32x8(_mm512_castps256_ps512(t0), t1, 1));
    const __mmask16 ig = __mmask16(ign[0] | (unsigned(ign[1]) << 8));
    r.ign = vec_t<T>(_mm512_maskz_mov_ps(ig, _mm512_set1_ps(1.0f)));
  } else {
    r.t = vec_t<T>(_mm512_mask_blend_pd(skip[0], _mm512_cvtepi64_pd(_mm512_loadu_si512(tp)),
                                        _mm512_set1_pd(-1.0)));
    r.ign = vec_t<T>(r.ign64[0]);
  }
#elif defined(__AVX2__)
  // (the scalar form below stores lanes one at a time and reloads them as vectors: a stalled
  // store forwarding per vector)
  const __m256i vi = _mm256_set1_epi64x(ignore_index), vlast = _mm256_set1_epi64x(n - 1);
  const __m256i zero = _mm256_setzero_si256(), m1 = _mm256_set1_epi64x(-1);
  const __m256d one = _mm256_set1_pd(1.0);
  __m256i tc[TargetLanes<T>::K], ig[TargetLanes<T>::K], sk[TargetLanes<T>::K];
  for (int k = 0; k < TargetLanes<T>::K; ++k) {
    const __m256i t = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tp + k * WD));
    ig[k] = _mm256_cmpeq_epi64(t, vi);
    sk[k] = _mm256_or_si256(ig[k], _mm256_or_si256(_mm256_cmpgt_epi64(zero, t),
                                                   _mm256_cmpgt_epi64(t, vlast)));
    tc[k] = _mm256_blendv_epi8(t, m1, sk[k]);  // (a class in [0, n) or -1)
    r.ign64[k] = f64v(_mm256_and_pd(_mm256_castsi256_pd(ig[k]), one));
    r.inv64[k] = f64v(_mm256_and_pd(_mm256_castsi256_pd(_mm256_andnot_si256(ig[k], sk[k])), one));
  }
  if constexpr (std::is_same_v<T, float>) {
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);  // (low halves first)
    auto pack = [&](__m256i a, __m256i b) {
      return _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(a, even),
                                       _mm256_permutevar8x32_epi32(b, even), 0x20);
    };
    r.t = vec_t<T>(_mm256_cvtepi32_ps(pack(tc[0], tc[1])));
    r.ign = vec_t<T>(_mm256_and_ps(_mm256_castsi256_ps(pack(ig[0], ig[1])), _mm256_set1_ps(1.0f)));
  } else {
    // (|class| < 2^31: its int64 as the low bits of 2^52 + 2^31's mantissa, then that off)
    const __m256i biased = _mm256_add_epi64(tc[0], _mm256_set1_epi64x(int64_t(1) << 31));
    r.t = vec_t<T>(_mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(biased, _mm256_set1_epi64x(0x4330000000000000LL))),
        _mm256_set1_pd(4503599627370496.0 + 2147483648.0)));
    r.ign = vec_t<T>(r.ign64[0]);
  }
#else
  alignas(64) T tgt[W], ignt[W];
  alignas(64) double ign64[W], inv64[W];
  for (int b = 0; b < W; ++b) {
    const int64_t t = tp[b];
    const bool ign = t == ignore_index, skip = ign | (t < 0) | (t >= n);
    tgt[b] = skip ? T(-1) : T(t);
    ignt[b] = ign ? T(1) : T(0);
    ign64[b] = ign ? 1.0 : 0.0;
    inv64[b] = (skip && !ign) ? 1.0 : 0.0;
  }
  r.t = vload(tgt), r.ign = vload(ignt);
  for (int k = 0; k < TargetLanes<T>::K; ++k)
    r.ign64[k] = vload(ign64 + k * WD), r.inv64[k] = vload(inv64 + k * WD);
#endif
  return r;
}

// The W lanes of a compute-type vector as float64 values.
template <class V> void to_f64_lanes(V v, double* out) {
  if constexpr (sizeof(v[0]) == 4) {
    f64v lo, hi;
    widen(v, lo, hi);
    vstore(out, lo);
    vstore(out + vec_width<double>, hi);
  } else {
    vstore(out, v);
  }
}

// The float64 lanes of a compute-type vector, and back (rounded to nearest).
template <class T> __attribute__((always_inline)) inline void lanes_f64(vec_t<T> v, f64v* d) {
  if constexpr (std::is_same_v<T, float>)
    widen(v, d[0], d[1]);
  else
    d[0] = v;
}
template <class T> __attribute__((always_inline)) inline vec_t<T> lanes_from_f64(const f64v* d) {
  if constexpr (std::is_same_v<T, float>)
    return narrow(d[0], d[1]);
  else
    return d[0];
}

// Row statistics of a transposed block: per lane the maximum m, whether the row has a NaN,
// and (with `first`) the class of the first maximum.
template <class T> struct LaneMax {
  vec_t<T> m, nan_seen, first;
};
template <class T> LaneMax<T> lane_max(const T* buf, int64_t n, bool with_first) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  LaneMax<T> r;
  r.m = vset<T>(-std::numeric_limits<T>::infinity());
  r.nan_seen = vset<T>(0);
  r.first = vset<T>(0);
  for (int64_t j = 0; j < n; ++j) {
    const V x = vload(buf + j * W);
    r.nan_seen = vselect(x != x, x, r.nan_seen);
    if (with_first) r.first = vselect(x > r.m, vset<T>(T(j)), r.first);
    r.m = vselect(x > r.m, x, r.m);  // (NaN never wins: the row is NaN anyway)
  }
  return r;
}

// Per-lane float64 sums of e_j = exp(x_j - m) over a transposed block; with skip_first the
// row's first maximum (class mx.first, exactly 1) is left out (S' of logsumexp); with keep,
// e_j replaces x_j in the buffer.
template <class T>
LaneSum<T> lane_exp_sums(T* buf, int64_t n, const LaneMax<T>& mx, bool skip_first, bool keep) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  LaneSum<T> s;
  auto term = [&](int64_t j) {
    const V e = vexp_capped(vload(buf + j * W) - mx.m);
    if (keep) vstore(buf + j * W, e);
    return skip_first ? vselect(mx.first == vset<T>(T(j)), vset<T>(0), e) : e;
  };
  // (each term at most 1: compute-type partials of four classes, then the float64 lanes, the
  // row kernels' rule, docs/numerics.md)
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const V e0 = term(j), e1 = term(j + 1), e2 = term(j + 2), e3 = term(j + 3);
    s.add((e0 + e1) + (e2 + e3));
  }
  for (; j < n; ++j) s.add(term(j));
  return s;
}


// ---------------------------------------------------------------------------------------------
// Blocks of rows of a few classes held in registers (the register kernels of softmax_narrow.hpp
// and distributions.cpp): a block of W rows of N classes as N class vectors, and back.
// ---------------------------------------------------------------------------------------------
constexpr int64_t kSmallMaxClasses = 16;

// W rows of two classes, interleaved (p[2 i], p[2 i + 1]), as the two class vectors, and back.
template <class T> inline void split_pairs(const T* p, vec_t<T>& a, vec_t<T>& b) {
  [[maybe_unused]] constexpr int W = vec_width<T>;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    a = vec_t<T>(_mm512_permutex2var_ps(v0, ev, v1));
    b = vec_t<T>(_mm512_permutex2var_ps(v0, od, v1));
  } else {
    const __m512d v0 = _mm512_loadu_pd(p), v1 = _mm512_loadu_pd(p + 8);
    a = vec_t<T>(_mm512_permutex2var_pd(v0, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), v1));
    b = vec_t<T>(_mm512_permutex2var_pd(v0, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), v1));
  }
#elif defined(__AVX2__)
  // (a shuffle within 128-bit halves, then the halves' 64-bit quarters put in order)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
    a = vec_t<T>(_mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8)));
    b = vec_t<T>(_mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8)));
  } else {
    const __m256d v0 = _mm256_loadu_pd(p), v1 = _mm256_loadu_pd(p + 4);
    a = vec_t<T>(_mm256_permute4x64_pd(_mm256_unpacklo_pd(v0, v1), 0xD8));
    b = vec_t<T>(_mm256_permute4x64_pd(_mm256_unpackhi_pd(v0, v1), 0xD8));
  }
#else
  for (int i = 0; i < W; ++i) a[i] = p[2 * i], b[i] = p[2 * i + 1];
#endif
}
template <class T> inline void join_pairs(T* p, vec_t<T> a, vec_t<T> b) {
  [[maybe_unused]] constexpr int W = vec_width<T>;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(p, _mm512_permutex2var_ps(__m512(a), lo, __m512(b)));
    _mm512_storeu_ps(p + 16, _mm512_permutex2var_ps(__m512(a), hi, __m512(b)));
  } else {
    _mm512_storeu_pd(p, _mm512_permutex2var_pd(__m512d(a), _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11),
                                               __m512d(b)));
    _mm512_storeu_pd(p + 8, _mm512_permutex2var_pd(
                                __m512d(a), _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), __m512d(b)));
  }
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 a2 = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(__m256(a)), 0xD8));
    const __m256 b2 = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(__m256(b)), 0xD8));
    _mm256_storeu_ps(p, _mm256_unpacklo_ps(a2, b2));
    _mm256_storeu_ps(p + 8, _mm256_unpackhi_ps(a2, b2));
  } else {
    const __m256d a2 = _mm256_permute4x64_pd(__m256d(a), 0xD8);
    const __m256d b2 = _mm256_permute4x64_pd(__m256d(b), 0xD8);
    _mm256_storeu_pd(p, _mm256_unpacklo_pd(a2, b2));
    _mm256_storeu_pd(p + 4, _mm256_unpackhi_pd(a2, b2));
  }
#else
  for (int i = 0; i < W; ++i) p[2 * i] = a[i], p[2 * i + 1] = b[i];
#endif
}

#if defined(__AVX512F__) || defined(__AVX2__)
// Row b of W rows of N classes back to back from p: the first min(N, L) classes of tile
// register v (L lanes; the lanes after them zeros). AVX2 stores the whole register wherever it
// stays inside the block, and takes the masked store (vmaskmovps) only for the last rows,
// where it would not: on AMD Zen 3 a masked store of 8 floats costs about 12 cycles, and 8 of
// them took 98 cycles where 7 whole stores and one masked took 18 (a loop of those stores
// alone). The rows are stored in order, so what one store spills past its row (zeros) the next
// rows' stores overwrite. p may point into the row (the second tile of 9 to 16 classes): the
// part is then N - L classes, and the block ends L before p + W N.
template <int N, int W>
__attribute__((always_inline)) inline void small_row_store(float* p, int b, TileReg v) {
  constexpr int L = int(sizeof(TileReg) / sizeof(float));
  constexpr int k = N > L ? N - L : N;
  [[maybe_unused]] constexpr int end = N > L ? W * N - L : W * N;
#if defined(__AVX2__) && !defined(__AVX512F__)
  if (b * N + L <= end) return tile_store(p + b * N, v);
#endif
  store_row_part(p + b * N, k, v);
}
#endif

// The W rows at p (N classes each, back to back) as N class vectors, and back.
template <class T, int N>
__attribute__((always_inline)) inline void load_small_rows(const T* p, vec_t<T> c[N]) {
  constexpr int W = vec_width<T>;
  if constexpr (N == 2) {  // (two classes: one even/odd split, every type and ISA)
    split_pairs<T>(p, c[0], c[1]);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && N <= 7) {
    __m512 v[N];
    split_small_rows<N>(p, v);
    for (int j = 0; j < N; ++j) c[j] = vec_t<T>(v[j]);
    return;
  }
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<T, float> && N <= W && sizeof(TileReg) == W * sizeof(float)) {
    TileReg r[W];  // (row b's N classes in r[b], zeros after; transposed: class j in r[j])
    for (int b = 0; b < W; ++b) r[b] = load_row_part(p + b * N, N);
    transpose_tile(r);
    // (register casts: a memcpy here became a copy through the stack in 16-byte halves, which
    // the 32-byte reloads of AVX2 then waited on, store forwarding failing)
    for (int j = 0; j < N; ++j) c[j] = vec_t<T>(r[j]);
    return;
  }
#endif
#if defined(__AVX2__) && !defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && N > W && N <= 2 * W) {  // (two tiles: 9-16 classes)
    TileReg r[W], s[W];
    for (int b = 0; b < W; ++b) {
      r[b] = _mm256_loadu_ps(p + b * N);
      s[b] = load_row_part(p + b * N + W, N - W);
    }
    transpose_tile(r);
    transpose_tile(s);
    for (int j = 0; j < N; ++j) c[j] = vec_t<T>(j < W ? r[j] : s[j - W]);
    return;
  }
#endif
  alignas(64) T buf[N * W];
  Layout3 l;
  l.n0 = W, l.n1 = N, l.n2 = 1, l.s0 = N, l.s1 = 1, l.s2 = 1;
  int64_t off[W];
  for (int b = 0; b < W; ++b) off[b] = int64_t(b) * N;
  gather_lanes(p, l, off, W, buf);
  for (int j = 0; j < N; ++j) c[j] = vload(buf + j * W);
}
template <class T, int N>
__attribute__((always_inline)) inline void store_small_rows(T* p, const vec_t<T> c[N]) {
  constexpr int W = vec_width<T>;
  if constexpr (N == 2) {
    join_pairs<T>(p, c[0], c[1]);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && N <= 7) {
    __m512 v[N];
    for (int j = 0; j < N; ++j) v[j] = __m512(c[j]);
    join_small_rows<N>(v, p);
    return;
  }
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<T, float> && N <= W && sizeof(TileReg) == W * sizeof(float)) {
    TileReg r[W];
    for (int j = 0; j < W; ++j) r[j] = j < N ? TileReg(c[j]) : TileReg{};
    transpose_tile(r);
    for (int b = 0; b < W; ++b) small_row_store<N, W>(p, b, r[b]);
    return;
  }
#endif
#if defined(__AVX2__) && !defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && N > W && N <= 2 * W) {
    TileReg r[W], s[W];
    for (int j = 0; j < W; ++j) {
      r[j] = TileReg(c[j]);
      s[j] = j + W < N ? TileReg(c[j + W]) : TileReg{};
    }
    transpose_tile(r);
    transpose_tile(s);
    for (int b = 0; b < W; ++b) {
      _mm256_storeu_ps(p + b * N, r[b]);
      small_row_store<N, W>(p + W, b, s[b]);
    }
    return;
  }
#endif
  alignas(64) T buf[N * W];
  for (int j = 0; j < N; ++j) vstore(buf + j * W, c[j]);
  Layout3 l;
  l.n0 = W, l.n1 = N, l.n2 = 1, l.s0 = N, l.s1 = 1, l.s2 = 1;
  int64_t off[W];
  for (int b = 0; b < W; ++b) off[b] = int64_t(b) * N;
  scatter_lanes(p, l, off, W, buf);
}

// A block of nb <= W rows [r, r + nb) of any layout as N class vectors, and back: a full block
// of rows back to back by load_small_rows / store_small_rows; rows in lanes (rows_in_lanes: the
// class axis of (N, C, H, W) inside one image) by one vector per class; anything else (a short
// block, a block across two images, other strides) through gather_lanes / scatter_lanes (their
// padding lanes repeat lane 0, and their results are dropped).
template <class S, int N, class T = compute_t<S>>
__attribute__((always_inline)) inline void load_small_block(const S* x, const Layout3& L,
                                                            int64_t r, int nb, vec_t<T> c[N]) {
  constexpr int W = vec_width<T>;
  if (nb == W && L.n2 == 1 && L.s1 == 1 && L.s0 == N) {
    if constexpr (std::is_same_v<S, T>) {
      load_small_rows<T, N>(x + r * N, c);
    } else {  // (16-bit: the block widened into float32 rows first, N vectors)
      alignas(64) T rows[N * W];
      for (int q = 0; q < N; ++q) vstore(rows + q * W, vload_as(x + r * N + q * W));
      load_small_rows<T, N>(rows, c);
    }
    return;
  }
  int64_t off[W] = {};
  row_offsets(L, r, nb, off);
  if (rows_in_lanes<W>(L, off, nb)) {
    for (int j = 0; j < N; ++j) c[j] = vload_as(x + off[0] + j * L.s1);
    return;
  }
  alignas(64) T buf[N * W];
  gather_lanes(x, L, off, nb, buf);
  for (int j = 0; j < N; ++j) c[j] = vload(buf + j * W);
}
template <class S, int N, class T = compute_t<S>>
__attribute__((always_inline)) inline void store_small_block(S* y, const Layout3& L, int64_t r,
                                                             int nb, const vec_t<T> c[N]) {
  constexpr int W = vec_width<T>;
  if (nb == W && L.n2 == 1 && L.s1 == 1 && L.s0 == N) {
    if constexpr (std::is_same_v<S, T>) {
      store_small_rows<T, N>(y + r * N, c);
    } else {  // (16-bit: float32 rows, then rounded N vectors at a time)
      alignas(64) T rows[N * W];
      store_small_rows<T, N>(rows, c);
      for (int q = 0; q < N; ++q) vstore_as(y + r * N + q * W, vload(rows + q * W));
    }
    return;
  }
  int64_t off[W] = {};
  row_offsets(L, r, nb, off);
  if (rows_in_lanes<W>(L, off, nb)) {
    for (int j = 0; j < N; ++j) vstore_as(y + off[0] + j * L.s1, c[j]);
    return;
  }
  alignas(64) T buf[N * W];
  for (int j = 0; j < N; ++j) vstore(buf + j * W, c[j]);
  scatter_lanes(y, L, off, nb, buf);
}

// Software prefetch of the rows of the block 4 blocks after r (as prefetch_block; also for rows
// in lanes, a run of W elements per class).
template <class S, int N> inline void prefetch_small_block(const S* x, const Layout3& L, int64_t r) {
  constexpr int W = vec_width<compute_t<S>>;
  const int64_t q = r + 4 * W;
  if (q + W > L.rows()) return;
  if (L.n2 == 1 && L.s1 == 1 && L.s0 == N) {
    prefetch_bytes(x + q * N, W * N * int64_t(sizeof(S)));
  } else if (L.s2 == 1 && L.n2 > 1 && q % L.n2 + W <= L.n2) {
    const S* p = x + L.offset(q);
    for (int j = 0; j < N; ++j) prefetch_bytes(p + j * L.s1, W * int64_t(sizeof(S)));
  }
}

// f(std::integral_constant<int, n>{}) for a class count n from N to Hi.
template <int N, int Hi, class F> void with_class_count_to(int64_t n, F&& f) {
  if constexpr (N < Hi) {
    if (n != N) return with_class_count_to<N + 1, Hi>(n, f);
  }
  f(std::integral_constant<int, N>{});
}

// f(std::integral_constant<int, n>{}) for a class count n from N to kSmallMaxClasses.
template <int N, class F> void with_class_count_up_to_16(int64_t n, F&& f) {
  if constexpr (N < kSmallMaxClasses) {
    if (n != N) return with_class_count_up_to_16<N + 1>(n, f);
  }
  f(std::integral_constant<int, N>{});
}

}  // namespace
}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
