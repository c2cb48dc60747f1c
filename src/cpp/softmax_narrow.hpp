// Narrow rows: logsumexp, softmax, log_softmax and index-target cross-entropy for rows of at
// most kNarrowMaxClasses (kNarrowMaxSoftmax) classes, with the rows in the SIMD lanes (the
// machinery, and why: lanes.hpp); up to kSmallMaxClasses classes, variants that keep a block in
// registers (ce_index_small from 3 classes, logsumexp_small and softmax_small from 2); for two,
// cross-entropy by ce_index_binary.
//
// Included by softmax_ce.cpp (inside its namespace fastloss::<isa>::<anonymous>, after lanes.hpp
// and its own Coef / CoefRow definitions).
#pragma once

// Class counts up to these go through the lane kernels (chosen from the shape alone, so a
// contiguous array and a strided view of it take the same path and give the same numbers).
// Measured on AVX-512, one thread, float32: the lane cross-entropy costs 0.63-0.67 ns per logit
// from 64 to 256 classes where the row kernel costs 0.73-1.67 (loss) and 1.0-1.2 against
// 1.3-3.4 with the gradient; the row logsumexp overtakes the lane one between 100 and 128.
// Checked again (AVX-512, float32, paired runs): cross-entropy up to 512 classes in the lanes
// took 0.68-0.96 of the row kernel's time in cache from 300 to 512 classes but 1.03-1.41 over
// 50M logits on two threads (1.15 with the gradient at 400); the row kernel from 129 classes
// took 1.49-2.18 of the lanes' time in cache from 150 to 256 and 1.04-1.34 over 50M logits.
constexpr int64_t kNarrowMaxClasses = 256;  // cross-entropy
constexpr int64_t kNarrowMaxSoftmax = 100;  // logsumexp, softmax, log_softmax
// From this many classes on, the cross-entropy lane kernel takes the target out of the class
// loop (see ce_index_narrow; AVX-512, one thread, float32, loss only: 5% less time at 48
// classes, 12-14% at 64-100, 2% more at 32).
constexpr int64_t kMaskTargetMin = 40;

// log1p of a row's float64 exponential sum: for float32 (and 16-bit) results vlog1p_f32acc on
// AVX-512 and AVX2 (relative error < 2^-38, far below the result's rounding), else vlog1p
// (float64 accuracy, for float64 results).
template <class T> inline f64v log1p_of_sum(f64v z) {
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) return vlog1p_f32acc(z);
#endif
  return vlog1p(z);
}

// The row logs deferred to the end of a group of rows (loop fission; ce_index_small says why):
// out[i] = defer[i] + log1p_of_sum(defer[G + i]) for i < n, rounded up to whole float64 vectors
// (out and defer hold G and 2 G values).
template <class T, int64_t G>
__attribute__((always_inline)) inline f64v deferred_log(const double* defer, int64_t i) {
  return vload(defer + i) + log1p_of_sum<T>(vload(defer + G + i));
}
template <class T, int64_t G>
__attribute__((always_inline)) inline void deferred_logs(const double* defer, double* out,
                                                         int64_t n) {
  constexpr int WD = vec_width<double>;
  for (int64_t i = 0; i < (n + WD - 1) / WD * WD; i += WD)
    vstore(out + i, deferred_log<T, G>(defer, i));
}

// ---------------------------------------------------------------------------------------------
// logsumexp: lse = m + log1p(S'), S' = sum over the row without its first maximum of
// exp(x_j - m). Leaving the maximum's term (exactly 1) out of the sum keeps a result near 0
// accurate: logsumexp([0, -40]) = 4.25e-18, where log(1 + 4.25e-18) rounds to 0.
// ---------------------------------------------------------------------------------------------
template <class S> void logsumexp_narrow(const SoftmaxArgs<S>& a) {
  using T = compute_t<S>;
  constexpr int W = vec_width<T>;
  const int64_t n = a.lx.n1;
  // The float64 logs of a group of 8 blocks are taken after the group's blocks (loop fission,
  // as logsumexp_small): each block leaves per row its base (NaN for NaN rows, else the
  // maximum) and log1p's argument (0 where the maximum is +inf or the row is all -inf, so that
  // the result is that maximum).
  constexpr int64_t kGroupRows = 8 * W;
  parallel_row_groups(a.lx.rows(), n * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
    alignas(64) double defer[2 * kGroupRows];
    for (int64_t r0 = g0; r0 < g1; r0 += W) {
      const int nb = int(g1 - r0 < W ? g1 - r0 : W);
      alignas(64) T xb[kNarrowMaxSoftmax * W];
      int64_t off[W] = {};
      prefetch_block(a.x, a.lx, r0, W);
      load_block(a.x, a.lx, r0, nb, xb, off);
      const LaneMax<T> mx = lane_max(xb, n, true);
      const LaneSum<T> s = lane_exp_sums(xb, n, mx, true, false);
      alignas(64) double sp[W], m64[W];
      s.store(sp);
      to_f64_lanes(mx.m, m64);
      double* d = defer + (r0 - g0);
      for (int b = 0; b < W; ++b) {
        d[b] = mx.nan_seen[b] != mx.nan_seen[b] ? kNaN : m64[b];
        d[kGroupRows + b] = std::isfinite(m64[b]) ? sp[b] : 0.0;
      }
    }
    alignas(64) double out[kGroupRows];
    deferred_logs<T, kGroupRows>(defer, out, g1 - g0);
    for (int64_t i = 0; i < g1 - g0; ++i) a.out[g0 + i] = from_compute<S>(T(out[i]));
  });
}

// ---------------------------------------------------------------------------------------------
// softmax:     p_j = exp(x_j - m) / S
// log_softmax: log p_j = (x_j - m) - log1p(S'), S' as in logsumexp_narrow
// A row with NaN or a non-finite maximum gives NaN (softmax) or x_j - m (log_softmax).
// ---------------------------------------------------------------------------------------------
template <class S> void softmax_narrow(const SoftmaxArgs<S>& a, bool log) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>;
  const int64_t n = a.lx.n1;
  parallel_row_blocks(a.lx.rows(), n * kExpWork, W, [&](int64_t r0, int nb) {
    alignas(64) T xb[kNarrowMaxSoftmax * W];
    int64_t off[W] = {};
    prefetch_block(a.x, a.lx, r0, W);
    prefetch_block(a.out, a.lo, r0, W);  // (written in place: its lines are read first)
    load_block(a.x, a.lx, r0, nb, xb, off);
    const LaneMax<T> mx = lane_max(xb, n, log);
    // log: S' without the first maximum; softmax: S, with e_j kept (x_j is not needed again)
    const LaneSum<T> s = lane_exp_sums(xb, n, mx, log, !log);
    alignas(64) double sum[W];
    s.store(sum);
    alignas(64) T factor[W];
    bool bad[W];
    T fill[W];
    for (int b = 0; b < W; ++b) {
      bad[b] = mx.nan_seen[b] != mx.nan_seen[b] || !std::isfinite(mx.m[b]);
      fill[b] = T(kNaN);
    }
    if (log) {
      alignas(64) double ls[W];
      for (int k = 0; k < W; k += WD) vstore(ls + k, log1p_of_sum<T>(vload(sum + k)));
      for (int b = 0; b < W; ++b) factor[b] = T(ls[b]);
      const V vls = vload(factor);
      for (int64_t j = 0; j < n; ++j) {
        const V d = vload(xb + j * W) - mx.m;
        vstore(xb + j * W, d - vls);
      }
      // x_j - m for rows with a non-finite maximum (scipy's log_softmax); NaN rows stay NaN.
      for (int b = 0; b < nb; ++b)
        if (bad[b] && mx.nan_seen[b] == mx.nan_seen[b]) {
          bad[b] = false;
          for (int64_t j = 0; j < n; ++j)
            xb[j * W + b] = to_compute(a.x[off[b] + j * a.lx.s1]) - mx.m[b];
        }
    } else {
      for (int b = 0; b < W; ++b) factor[b] = T(1.0 / sum[b]);
      const V f = vload(factor);
      for (int64_t j = 0; j < n; ++j) vstore(xb + j * W, vload(xb + j * W) * f);
    }
    int64_t out_off[W] = {};
    row_offsets(a.lo, r0, nb, out_off);
    scatter_lanes(a.out, a.lo, out_off, nb, xb, bad, fill);
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with class-index targets, the formulas of ce_index_rows per lane:
//   -log p_t = (m - x_t) + log S,  S = S' + exp(x_t - m), S' = sum_{j != t} exp(x_j - m)
//   log S = log1p(S')                when x_t = m (a confident row keeps its small loss)
//         = log1p((S' - 1) + e_t)    otherwise (S' holds the maximum's term, 1)
//   loss  = (1 - eps) w_t (-log p_t) + (eps / C) (sum_c c_c (m - x_c) + W log S)
//   grad  = (p_scale / S) e_j - (eps / C) g c_j,  target entry in closed form (see there)
// Focal loss (rare) takes a scalar epilogue per lane; soft-capping and probability targets
// use the row kernels.
// ---------------------------------------------------------------------------------------------
// The loss of a group of n <= G rows from its deferred logs (ce_index_narrow, ce_index_small):
// defer[i] holds row r0 + i's m - x_t (0 for ignored rows, NaN for bad ones) and defer[G + i]
// the argument of log1p_of_sum (0 for ignored rows).
template <class T, int64_t G>
void finish_loss_group(const double* defer, double* loss, int64_t r0, int64_t n) {
  store_group_losses<G>(loss, r0, n, [&](int64_t i) { return deferred_log<T, G>(defer, i); });
}
// The same with label smoothing (no class weights): defer[2 G + i] holds the row's
// sum_c (m - x_c) (0 for ignored rows), and the loss is the blocks' (1 - eps) (-log p_t) +
// (eps / C) (sum_c (m - x_c) + C log S), operation for operation.
template <class T, int64_t G>
void finish_smoothed_group(const double* defer, double* loss, int64_t r0, int64_t n, double eps,
                           double eps_c, double Wsum) {
  store_group_losses<G>(loss, r0, n, [&](int64_t i) {
    const f64v log_sum = log1p_of_sum<T>(vload(defer + G + i));
    f64v l = (1.0 - eps) * (vload(defer + i) + log_sum);
    l += eps_c * (vload(defer + 2 * G + i) + Wsum * log_sum);
    return l;
  });
}

// ---------------------------------------------------------------------------------------------
// Rows of kByLaneMin to kByLaneMax classes computed in float32 (float32 and 16-bit logits),
// plain cross-entropy sums (no class coefficients): S' is summed "by lane". Row-major, a row is NV = ceil(n / W) vectors; lane l
// holds classes l, l + W, l + 2 W, ... Each lane's terms (the target's and the padding's 0)
// are added in groups of eight vectors, ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
// (shorter groups: the same tree without the missing terms), each group widened into that
// lane's float64 sum; then the lanes are folded in halves (lane l + lane l + W/2, then the
// same on the float64 lanes until one is left). ce_index_narrow's class loop adds the terms
// of such rows in that order too (kByLane), so a row gives the same bits whether its classes
// lie back to back (ce_rows_by_lane: rows in vectors, no transpose) or a stride apart (the
// lane kernel, rows in lanes), and bfloat16 logits keep float32's bits.
// AVX-512 only (AVX2's 16 registers hold too few rows' vectors). Against the lane kernel's
// transposed blocks, float32, paired runs: two threads over 100M logits, the loss 0.79-0.87
// the time from 128 to 200 classes, 0.96-1.00 at 100 and 256, with the gradient 0.80-0.96
// from 100 to 256; one thread in cache, the loss 0.91-1.03, with the gradient 0.85-0.93.
// The lane kernel pays for the by-lane order (a sum per lane, then the fold): an (N, C, H,
// W) class axis took 1.01-1.05 the time at 100 to 256 classes. bfloat16 rows (in vectors)
// took 0.93-1.08 the time, with the gradient 0.86-1.01. From 64 to 96 classes rows in
// vectors gained nothing on the loss (0.96-1.04, with the gradient 0.91-1.00) and the lane
// kernel's by-lane order cost 3-11%, so they start above six vectors; at 40 to 56 classes
// rows in vectors took 1.13-1.2 the time in cache. R rows go in step,
// unrolled (left rolled, their vectors went through the stack: 1.1 the time); the prefetch
// of the block ahead stays (without it, 1.25-2.4 the time over 100M logits).
// ---------------------------------------------------------------------------------------------
constexpr int64_t kByLaneMin = 97, kByLaneMax = 256;
#if defined(__AVX512F__)
constexpr bool kByLaneIsa = true;
#else
constexpr bool kByLaneIsa = false;  // (AVX2, SSE2: the lane kernel's order, no rows in vectors)
#endif

// The four-term tree of the by-lane order over t[0 .. c) (c = 1 .. 4).
template <class V> FL_ALWAYS_INLINE V by_lane_tree4(const V* t, int c) {
  if (c == 1) return t[0];
  if (c == 2) return t[0] + t[1];
  if (c == 3) return (t[0] + t[1]) + t[2];
  return (t[0] + t[1]) + (t[2] + t[3]);
}
// A group of c = 1 .. 8 terms.
template <class V> FL_ALWAYS_INLINE V by_lane_group(const V* t, int c) {
  return c <= 4 ? by_lane_tree4(t, c) : by_lane_tree4(t, 4) + by_lane_tree4(t + 4, c - 4);
}

#if defined(__AVX512F__)
// The lanes of float64 lanes lo (lanes 0 .. 7 of a float vector) and hi folded in halves:
// lane i + lane i + 8, then i + (i + 4), i + (i + 2), 0 + 1.
FL_ALWAYS_INLINE double by_lane_fold(f64v lo, f64v hi) {
  const __m512d s = __m512d(lo + hi);
  const __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
  const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}

// The maximum of a float vector's lanes, in every lane (NaN lanes may or may not win: the
// callers flag rows with a NaN by their sums).
FL_ALWAYS_INLINE f32v hmax_all(f32v v) {
  __m512 m = __m512(v);
  m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0x4e));
  m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0xb1));
  m = _mm512_max_ps(m, _mm512_permute_ps(m, 0x4e));
  return f32v(_mm512_max_ps(m, _mm512_permute_ps(m, 0xb1)));
}

// Rows in vectors: for rows b < nb at x + off[b] (classes back to back), NV vectors of W
// classes each (n classes, n > (NV - 1) W): the row's maximum m[b], S' (by lane, without the
// target's term: tgt[b] a class or -1) in sp[b], and the target's logit in xt[b] (0 without
// one). With e, the row's exps are kept at e + b NV W (the target's 0, the padding's 0).
// R rows go in step (independent chains for the out-of-order core).
template <int NV, int R, class S>
FL_ALWAYS_INLINE void ce_rows_by_lane_step(const S* x, const int64_t* off, int b0,
                                           int64_t n, const float* tgt, float* m, float* xt,
                                           double* sp, float* e) {
  constexpr int W = vec_width<float>;
  const int64_t tail = n - int64_t(NV - 1) * W;
  f32v v[R][NV], mv[R];
  int t[R];
  _Pragma("GCC unroll 16")
  for (int i = 0; i < R; ++i) {
    const S* p = x + off[b0 + i];
    _Pragma("GCC unroll 16")
    for (int k = 0; k < NV - 1; ++k) v[i][k] = vload_as(p + k * W);
    v[i][NV - 1] = load_partial(p + (NV - 1) * W, tail, -std::numeric_limits<float>::infinity());
    t[i] = int(tgt[b0 + i]);
    xt[b0 + i] = t[i] >= 0 ? to_compute(p[t[i]]) : 0.0f;
  }
  _Pragma("GCC unroll 16")
  for (int i = 0; i < R; ++i) {
    f32v a = v[i][0], c = NV > 1 ? v[i][1] : v[i][0];
    _Pragma("GCC unroll 16")
    for (int k = 2; k < NV; k += 2) {
      a = vmax<float>(a, v[i][k]);
      if (k + 1 < NV) c = vmax<float>(c, v[i][k + 1]);
    }
    mv[i] = hmax_all(vmax<float>(a, c));
  }
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  _Pragma("GCC unroll 16")
  for (int i = 0; i < R; ++i) {
    f32v ev[NV];
    const unsigned tk = unsigned(t[i]) / W, tbit = 1u << (unsigned(t[i]) % W);
    _Pragma("GCC unroll 16")
    for (int k = 0; k < NV; ++k) {
      // (the target's slot -inf: its exp 0)
      const __mmask16 hit = __mmask16(tk == unsigned(k) ? tbit : 0u);
      const f32v xk = f32v(_mm512_mask_mov_ps(__m512(v[i][k]), hit, ninf));
      ev[k] = vexp_capped(xk - mv[i]);
      if (e) vstore(e + (b0 + i) * NV * W + k * W, ev[k]);
    }
    f64v lo{}, hi{};
    _Pragma("GCC unroll 16")
    for (int k = 0; k < NV; k += 8)
      add_widened(by_lane_group(ev + k, NV - k < 8 ? NV - k : 8), lo, hi);
    sp[b0 + i] = by_lane_fold(lo, hi);
    m[b0 + i] = mv[i][0];
  }
}

template <int NV, class S>
void ce_rows_by_lane(const S* x, const int64_t* off, int nb, int64_t n, const float* tgt,
                     float* m, float* xt, double* sp, float* e) {
  constexpr int R = NV <= 4 ? 4 : NV <= 8 ? 2 : 1;
  int b = 0;
  for (; b + R <= nb; b += R) ce_rows_by_lane_step<NV, R, S>(x, off, b, n, tgt, m, xt, sp, e);
  for (; b < nb; ++b) ce_rows_by_lane_step<NV, 1, S>(x, off, b, n, tgt, m, xt, sp, e);
}

// ce_rows_by_lane for n classes (kByLaneMin .. kByLaneMax).
template <class S>
void ce_rows_by_lane_n(const S* x, const int64_t* off, int nb, int64_t n,
                              const float* tgt, float* m, float* xt, double* sp, float* e) {
  constexpr int W = vec_width<float>;
  const int64_t nv = (n + W - 1) / W;
  constexpr int lo = int((kByLaneMin + W - 1) / W), hi = int((kByLaneMax + W - 1) / W);
  with_class_count_to<lo, hi>(nv, [&](auto nv_c) {
    ce_rows_by_lane<decltype(nv_c)::value, S>(x, off, nb, n, tgt, m, xt, sp, e);
  });
}
#endif

template <class S, Coef C> void ce_index_narrow(const CrossEntropyArgs<S>& a, double Wsum) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>;
  const int64_t n = a.lx.n1;
  const double eps = a.label_smoothing, g = a.grad_scale, z = a.z_loss, gamma = a.focal_gamma;
  const double eps_c = eps / double(n);
  const bool grad = a.grad != nullptr;
  // The loss of cross-entropy without weights, focal or z-loss term or lse (plain, or with
  // label smoothing: then also sum_c (m - x_c)), with or without the gradient (which needs no
  // log): each block leaves its rows' m - x_t and log1p arguments in `defer`, and the float64
  // logs are taken for a group of kGroupRows rows at a time (as ce_index_small, which see).
  // Against the logs in the block (float32, one thread in cache): plain with the gradient,
  // AVX-512 0.92-0.99 the time from 17 to 100 classes, AVX2 0.91-0.99 (two threads over 50M
  // logits, AVX-512: 0.91 at 17, 0.92 at 32, 0.98 at 100); label smoothing, the loss, AVX-512
  // 0.90-0.97 from 17 to 256, AVX2 0.82-0.97, with the gradient 0.98-1.02 and 0.90-1.00.
  const bool defer_logs = C != Coef::kWeight && !a.focal && z == 0 && !a.lse && !a.weight;
  constexpr int64_t kGroupRows = 8 * W;
  // float32 sums without class coefficients from kByLaneMin to kByLaneMax classes: by lane
  // (see ce_rows_by_lane), and rows whose classes lie back to back (float32 or 16-bit) are
  // taken in vectors (row_path; not for token accuracy or lse, which need the lane kernel's
  // maximum flags)
  constexpr bool kByLane = kByLaneIsa && std::is_same_v<T, float> && C == Coef::kNone;
  const bool by_lane = kByLane && n >= kByLaneMin && n <= kByLaneMax;
  constexpr bool kRows = kByLane;  // (float32 and 16-bit logits)
  const bool row_path = kRows && by_lane && a.lx.s1 == 1 &&
                        (!grad || a.lg.s1 == 1) && !a.correct && !a.lse;
  const int64_t nvw = (n + W - 1) / W * W;  // (row_path: a row's vectors, in floats)
  auto block = [&](int64_t r0, int nb, double* defer) {
    alignas(64) T xb[kNarrowMaxClasses * W];
    int64_t off[W] = {};
    prefetch_block(a.x, a.lx, r0, W);
    if (a.lx.n2 == 1) prefetch_bytes(a.target + r0 + 4 * W, W * int64_t(sizeof(int64_t)));
    if (grad) prefetch_block(a.grad, a.lg, r0, W);  // (written in place: its lines are read first)
    if (row_path)
      row_offsets(a.lx, r0, nb, off);
    else
      load_block(a.x, a.lx, r0, nb, xb, off);
    // Targets as compute-type lanes (exact: classes < 2^24); -1 for ignored rows and padding
    // (padding lanes are never written out).
    alignas(64) int64_t traw[W];
    if (nb == W) {
      std::memcpy(traw, a.target + r0, sizeof(traw));
    } else {
      for (int b = 0; b < W; ++b) traw[b] = b < nb ? a.target[r0 + b] : -1;
    }
    alignas(64) T tgt[W];
    alignas(64) double ign64[W], inv64[W];  // 1.0: an ignore_index row / an invalid target
    // (out-of-range targets are rejected before the call; they would give NaN rows)
    const TargetLanes<T> tl = target_lanes<T>(traw, n, a.ignore_index);
    const V tv = tl.t;
    vstore(tgt, tv);
    for (int k = 0; k < TargetLanes<T>::K; ++k)
      vstore(ign64 + k * WD, tl.ign64[k]), vstore(inv64 + k * WD, tl.inv64[k]);
    bool ignored[W];  // (filled only where needed: weights, statistics, gradient)
    const bool need_ignored = a.weight || a.correct || a.lse || grad;
    if (need_ignored)
      for (int b = 0; b < W; ++b) ignored[b] = tgt[b] < T(0);
    alignas(64) double sp[W];  // S' per row
    alignas(64) T rm[W], rxt[W];  // (row_path: the rows' maxima and target logits)
    LaneMax<T> mx{};
    if constexpr (kRows) {
      if (row_path) {
        ce_rows_by_lane_n(a.x, off, nb, n, tgt, rm, rxt, sp, grad ? xb : nullptr);
        if (nb < W)
          for (int b = nb; b < W; ++b) rm[b] = rxt[b] = T(0), sp[b] = 0.0;
        mx.m = vload(rm);
        // (a row with a NaN: its S' or its target's logit is NaN, and so is x_t + S'; the
        // lane kernel's nan_seen is read for that flag only, lse and accuracy not taking
        // this path)
        if constexpr (std::is_same_v<T, float>)
          mx.nan_seen = vload(rxt) + narrow(vload(sp), vload(sp + WD));
      }
    }
    if (!row_path) mx = lane_max(xb, n, a.correct != nullptr);
    const V m = mx.m;
    if (a.correct) {  // token accuracy: NumPy's argmax (first maximum; a NaN is the largest)
      alignas(64) T first[W], nan_seen[W];
      vstore(first, mx.first);
      vstore(nan_seen, mx.nan_seen);
      for (int b = 0; b < nb; ++b) {
        bool ok = !ignored[b] && first[b] == tgt[b];
        if (!ignored[b] && nan_seen[b] != nan_seen[b]) {  // the first NaN is the argmax
          int64_t k = 0;
          while (xb[k * W + b] == xb[k * W + b]) ++k;
          ok = k == int64_t(tgt[b]);
        }
        a.correct[r0 + b] = ok;
      }
    }
    LaneSum<T> se, scd;
    V xt = vset<T>(0), et = vset<T>(0);  // the target's logit and exp(x_t - m)
    // From kMaskTargetMin classes on, the target's logit is set aside and its slot made -inf
    // (exp 0): the class loop then sums S' with no per-class compare and selects. (Fewer
    // classes: the per-block scalar work costs more than it saves. Label smoothing reads every
    // x_c, the target's included: it selects.) Both give the same bits.
    const bool mask_t = C == Coef::kNone && n >= kMaskTargetMin && !row_path;
    if constexpr (kRows) {
      if (row_path) {  // the target's logit and exp(x_t - m) (0 without a target)
        xt = vload(rxt);
        et = vselect(tv < vset<T>(0), vset<T>(0), vexp_capped(xt - m));
      }
    }
    if (mask_t) {
      alignas(64) T xtb[W], etb[W];
      for (int b = 0; b < W; ++b) {
        xtb[b] = T(0);
        if (tgt[b] >= T(0)) {
          T& slot = xb[int64_t(tgt[b]) * W + b];
          xtb[b] = slot;
          slot = -kInf<T>;
        }
      }
      xt = vload(xtb);
      vstore(etb, vexp_capped(xt - m));
      for (int b = 0; b < W; ++b)
        if (tgt[b] < T(0)) etb[b] = T(0);
      et = vload(etb);
    }
    // class j (jv: j in every lane): exp(x_j - m), 0 in the target's lane (the target's x and e
    // kept aside)
    auto term = [&](int64_t j, V jv, auto kGrad, auto kMasked) {
      const V x = vload(xb + j * W);
      const V e = vexp_capped(x - m);
      if constexpr (decltype(kGrad)::value) vstore(xb + j * W, e);
      if constexpr (decltype(kMasked)::value) {
        (void)jv;
        return e;
      } else {
        const auto is_t = tv == jv;
        xt = vselect(is_t, x, xt);
        et = vselect(is_t, e, et);
        if constexpr (C != Coef::kNone) {
          const T c = C == Coef::kOne ? T(1) : a.weight[j];
          if (c != 0) scd.add(vset<T>(c) * (m - x));  // (c_j = 0 terms count 0, even at -inf)
        }
        return vselect(is_t, vset<T>(0), e);
      }
    };
    // the exponentials (each at most 1) in compute-type partials of four classes, two of them
    // added and flushed into the float64 lanes (the row kernels' rule, docs/numerics.md)
    auto class_loop = [&](auto kGrad, auto kMasked) {
      auto e = [&](int64_t j, V jv) { return term(j, jv, kGrad, kMasked); };
      int64_t j = 0;
      if constexpr (decltype(kMasked)::value) {  // (wide rows) two partials per flush
        for (; j + 8 <= n; j += 8) {
          const V z{};
          const V e0 = e(j, z), e1 = e(j + 1, z), e2 = e(j + 2, z), e3 = e(j + 3, z);
          const V e4 = e(j + 4, z), e5 = e(j + 5, z), e6 = e(j + 6, z), e7 = e(j + 7, z);
          se.add(((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)));
        }
      }
      for (; j + 4 <= n; j += 4) {
        const V e0 = e(j, vset<T>(T(j))), e1 = e(j + 1, vset<T>(T(j + 1)));
        const V e2 = e(j + 2, vset<T>(T(j + 2))), e3 = e(j + 3, vset<T>(T(j + 3)));
        se.add((e0 + e1) + (e2 + e3));
      }
      for (; j < n; ++j) se.add(e(j, vset<T>(T(j))));
    };
    // by lane (kByLane): lane l's terms, then the lanes folded in halves (ce_rows_by_lane's
    // order; the class count is at least kMaskTargetMin: the target masked)
    auto by_lane_loop = [&](auto kGrad) {
      const int64_t nv = (n + W - 1) / W;
      const int64_t tail = n - (nv - 1) * W;  // (lanes l < tail hold nv terms, the rest nv - 1)
      // the tree of by_lane_tree4 over lane l's terms k .. k + c - 1 (c = 1 .. 4), as values
      auto tree4 = [&](int l, int64_t k, int64_t c) {
        auto e = [&](int64_t q) { return term(l + q * W, V{}, kGrad, std::true_type{}); };
        const V t0 = e(k);
        if (c == 1) return t0;
        const V t1 = e(k + 1);
        if (c == 2) return t0 + t1;
        const V t2 = e(k + 2);
        if (c == 3) return (t0 + t1) + t2;
        return (t0 + t1) + (t2 + e(k + 3));
      };
      alignas(64) double pl[W * W];  // lane l's float64 sums of the block's rows at pl + l W
      for (int l = 0; l < W; ++l) {
        const int64_t cnt = l < tail ? nv : nv - 1;
        LaneSum<T> acc;
        for (int64_t k0 = 0; k0 < cnt; k0 += 8) {
          const int64_t c = cnt - k0 < 8 ? cnt - k0 : 8;  // (by_lane_group of c terms)
          V g = tree4(l, k0, c < 4 ? c : 4);
          if (c > 4) g = g + tree4(l, k0 + 4, c - 4);
          acc.add(g);
        }
        acc.store(pl + l * W);
      }
      for (int h = W / 2; h >= 1; h /= 2)
        for (int l = 0; l < h; ++l)
          for (int k = 0; k < W; k += WD)
            vstore(pl + l * W + k, vload(pl + l * W + k) + vload(pl + (l + h) * W + k));
      std::memcpy(sp, pl, sizeof(sp));
    };
    static_assert(kByLaneMin >= kMaskTargetMin);
    if (row_path) {
    } else if (by_lane) {
      if (grad)
        by_lane_loop(std::true_type{});
      else
        by_lane_loop(std::false_type{});
    } else if (mask_t) {
      if (grad)
        class_loop(std::true_type{}, std::true_type{});
      else
        class_loop(std::false_type{}, std::true_type{});
    } else {
      if (grad)
        class_loop(std::true_type{}, std::false_type{});
      else
        class_loop(std::false_type{}, std::false_type{});
    }
    // Epilogue in float64 lanes. exp(x_t - m) is the class loop's, or the same vexp_capped
    // taken aside (in the compute type: for float32 its rounding moves log S by at most
    // p_t * 2^-23, below the float32 result's ulp).
    alignas(64) double cd[W], m64[W], xt64[W], et64[W], nan64[W], wt[W], ct[W];
    if (!by_lane) se.store(sp);
    if constexpr (C != Coef::kNone) scd.store(cd);
    to_f64_lanes(m, m64);
    to_f64_lanes(xt, xt64);
    to_f64_lanes(et, et64);
    to_f64_lanes(mx.nan_seen, nan64);
    if (defer_logs) {  // (finish_loss_group adds up the two terms as the branch below does)
      for (int k = 0; k < W; k += WD) {
        const f64v md = vload(m64 + k), x_t = vload(xt64 + k), s_ex = vload(sp + k);
        const auto t_max = x_t == md;
        const f64v e_t = vselect(t_max, f64v{} + 1.0, vload(et64 + k));
        const f64v nk = vload(nan64 + k), ign = vload(ign64 + k);
        const auto bad = (nk != nk) | (md - md != md - md) | (vload(inv64 + k) != 0.0);
        vstore(defer + k, vselect(ign != 0.0, f64v{}, vselect(bad, f64v{} + kNaN, md - x_t)));
        vstore(defer + kGroupRows + k,
               vselect(ign != 0.0, f64v{}, vselect(t_max, s_ex, (s_ex - 1.0) + e_t)));
        if constexpr (C == Coef::kOne)  // (label smoothing: finish_smoothed_group)
          vstore(defer + 2 * kGroupRows + k, vselect(ign != 0.0, f64v{}, vload(cd + k)));
      }
      if (!grad) return;
    }
    if (!grad && !a.focal && z == 0 && !a.lse) {
      // Loss only: the loss of each lane and nothing else, stored straight into a.loss.
      alignas(64) double out[W];
      for (int k = 0; k < W; k += WD) {
        const f64v md = vload(m64 + k), x_t = vload(xt64 + k), s_ex = vload(sp + k);
        const auto t_max = x_t == md;
        const f64v e_t = vselect(t_max, f64v{} + 1.0, vload(et64 + k));
        const f64v log_sum = log1p_of_sum<T>(vselect(t_max, s_ex, (s_ex - 1.0) + e_t));
        f64v w_t = f64v{} + 1.0;
        if (a.weight) {
          alignas(64) double wk[WD];
          for (int i = 0; i < WD; ++i)
            wk[i] = ignored[k + i] ? 0.0 : double(a.weight[int64_t(tgt[k + i])]);
          w_t = vload(wk);
        }
        const f64v c = (md - x_t) + log_sum;  // -log p_t
        f64v l = (1.0 - eps) * w_t * c;
        if constexpr (C != Coef::kNone) l += eps_c * (vload(cd + k) + Wsum * log_sum);
        const f64v nk = vload(nan64 + k), ign = vload(ign64 + k);
        const auto bad = (nk != nk) | (md - md != md - md) | (vload(inv64 + k) != 0.0);
        vstore(out + k, vselect(ign != 0.0, f64v{}, vselect(bad, f64v{} + kNaN, l)));
      }
      std::memcpy(a.loss + r0, out, size_t(nb) * sizeof(double));
      return;
    }
    if (a.weight) {
      for (int b = 0; b < W; ++b) {
        wt[b] = ignored[b] ? 0.0 : double(a.weight[int64_t(tgt[b])]);
        ct[b] = C == Coef::kWeight ? wt[b] : (C == Coef::kOne ? 1.0 : 0.0);
      }
    } else {
      for (int b = 0; b < W; ++b) wt[b] = 1.0, ct[b] = C == Coef::kNone ? 0.0 : 1.0;
    }
    alignas(64) double loss[W], ce[W], omp[W], pt[W], ls[W], sum_inv[W], ps[W], tc[W];
    for (int k = 0; k < W; k += WD) {
      const f64v md = vload(m64 + k), x_t = vload(xt64 + k), s_ex = vload(sp + k);
      const auto t_max = x_t == md;
      const f64v e_t = vselect(t_max, f64v{} + 1.0, vload(et64 + k)), s = s_ex + e_t;
      // (deferred: the loss is taken after the group; no log here, nor in the gradient)
      const f64v log_sum =
          defer_logs ? f64v{} : log1p_of_sum<T>(vselect(t_max, s_ex, (s_ex - 1.0) + e_t));
      const f64v w_t = vload(wt + k);
      const f64v c = (md - x_t) + log_sum;  // -log p_t
      f64v l = (1.0 - eps) * w_t * c;
      if constexpr (C != Coef::kNone) l += eps_c * (vload(cd + k) + Wsum * log_sum);
      const f64v inv = 1.0 / s;
      vstore(loss + k, l);
      vstore(ce + k, c);
      vstore(ls + k, log_sum);
      vstore(sum_inv + k, inv);
      vstore(omp + k, s_ex * inv);  // 1 - p_t without cancellation
      vstore(pt + k, e_t * inv);
      vstore(ps + k, g * ((1.0 - eps) * w_t + eps_c * Wsum));  // coefficient of p_j
      vstore(tc + k, g * (1.0 - eps) * w_t);                    // coefficient of -[j == t]
    }
    if (a.focal) {  // -alpha_t (1 - p_t)^gamma log p_t, gradient F (p_j - [j == t])
      for (int b = 0; b < W; ++b) {
        // (1 - p_t)^gamma and gamma (1 - p_t)^(gamma - 1), without pow for gamma = 1, 2
        const double q = omp[b];
        const double mod = gamma == 0   ? 1.0
                           : q == 0     ? 0.0
                           : gamma == 2 ? q * q
                           : gamma == 1 ? q
                                        : std::pow(q, gamma);
        const double dq = gamma == 2 ? 2 * q : gamma == 1 ? 1.0 : gamma * std::pow(q, gamma - 1);
        const double dmod = gamma == 0 || q == 0 || pt[b] == 0 ? 0.0 : dq * pt[b] * ce[b];
        loss[b] = wt[b] * mod * ce[b];
        ps[b] = tc[b] = g * wt[b] * (mod + dmod);
      }
    }
    if (z != 0) {  // z-loss: w_t z lse^2, gradient w_t 2 z lse p_j
      for (int k = 0; k < W; k += WD) {
        const f64v lse = vload(m64 + k) + vload(ls + k), w_t = vload(wt + k);
        vstore(loss + k, vload(loss + k) + w_t * z * lse * lse);
        vstore(ps + k, vload(ps + k) + g * w_t * 2.0 * z * lse);
      }
    }
    // Per-row results: 0 for ignore_index rows, NaN for rows with NaN or a non-finite maximum
    // (and for out-of-range targets, which the caller has rejected before).
    alignas(64) double out[W];
    for (int k = 0; k < W; k += WD) {
      const f64v mk = vload(m64 + k), nk = vload(nan64 + k), ign = vload(ign64 + k);
      const auto bad = (nk != nk) | (mk - mk != mk - mk) | (vload(inv64 + k) != 0.0);
      vstore(out + k, vselect(ign != 0.0, f64v{}, vselect(bad, f64v{} + kNaN, vload(loss + k))));
    }
    if (!defer_logs)
      for (int b = 0; b < nb; ++b) a.loss[r0 + b] = out[b];
    if (a.lse) {  // m + log S (an ignored row's S' holds every class: S = S')
      for (int b = 0; b < nb; ++b)
        a.lse[r0 + b] = nan64[b] != nan64[b]     ? kNaN
                        : !std::isfinite(m64[b]) ? m64[b]
                        : ignored[b]             ? m64[b] + std::log(sp[b])
                                                 : m64[b] + ls[b];
    }
    if (!grad) return;
    bool fill_row[W];
    T fill[W];
    for (int b = 0; b < nb; ++b) {
      fill_row[b] = ignored[b] || out[b] != out[b];
      fill[b] = ign64[b] != 0.0 ? T(0) : T(kNaN);
    }
    if (!grad) return;
    // Gradient: (p_scale / S) e_j - (eps / C) g c_j; the target entry in closed form
    // -t_coef (1 - p_t) + (p_scale - t_coef) p_t - (eps / C) g c_t (no cancellation).
    alignas(64) T gs[W], gt[W];
    for (int b = 0; b < W; ++b) {
      gs[b] = T(ps[b] * sum_inv[b]);
      gt[b] = T(-tc[b] * omp[b] + (ps[b] - tc[b]) * pt[b] - g * eps_c * ct[b]);
    }
    if constexpr (kRows) {
      if (row_path) {  // the rows' kept exps times gs, the target's entry gt
        int64_t goff[W] = {};
        row_offsets(a.lg, r0, nb, goff);
        const int64_t tail = n - (nvw - W);
        for (int b = 0; b < nb; ++b) {
          S* gp = a.grad + goff[b];
          const T* eb = xb + b * nvw;
          const V s = vset<T>(fill_row[b] ? fill[b] : gs[b]);  // (a filled row: s itself)
          for (int64_t k = 0; k + W < nvw; k += W)
            vstore_as(gp + k, fill_row[b] ? s : s * vload(eb + k));
          store_partial(gp + (nvw - W), tail, fill_row[b] ? s : s * vload(eb + nvw - W));
          if (!fill_row[b]) gp[int64_t(tgt[b])] = from_compute<S>(gt[b]);
        }
        return;
      }
    }
    const V vgs = vload(gs), vgt = vload(gt), vd = vset<T>(T(g * eps_c));
    V jv = vset<T>(0);
    for (int64_t j = 0; j < n; ++j, jv += T(1)) {
      V out = vgs * vload(xb + j * W);
      if constexpr (C != Coef::kNone) {
        const T c = C == Coef::kOne ? T(1) : a.weight[j];
        out -= vd * c;
      }
      vstore(xb + j * W, vselect(tv == jv, vgt, out));
    }
    int64_t goff[W] = {};
    row_offsets(a.lg, r0, nb, goff);
    scatter_lanes(a.grad, a.lg, goff, nb, xb, fill_row, fill);
  };
  parallel_row_groups(a.lx.rows(), n * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
    alignas(64) double defer[3 * kGroupRows];
    for (int64_t r = g0; r < g1; r += W) block(r, int(g1 - r < W ? g1 - r : W), defer + (r - g0));
    if (!defer_logs) return;
    if constexpr (C == Coef::kOne)
      finish_smoothed_group<T, kGroupRows>(defer, a.loss, g0, g1 - g0, eps, eps_c, Wsum);
    else
      finish_loss_group<T, kGroupRows>(defer, a.loss, g0, g1 - g0);
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with probability targets (ce_probs_rows' formulas, c_j = w_j ((1 - eps) y_j +
// eps / C)) for rows of at most kProbsNarrowMax classes, with the rows in SIMD lanes:
//   loss  = sum_j c_j (m - x_j) + (sum_j c_j) log S + z lse^2,  lse = m + log S
//   log S = log1p(S'),  S' = sum of exp(x_j - m) without the row's first maximum (exactly 1)
//   grad  = (g (sum_j c_j + 2 z lse) / S) e_j - g c_j
// log1p(S') keeps the small loss of a confident row accurate (the row kernel's log S, its sum
// holding the maximum's 1, leaves an absolute error of about 6e-8 in float32). A row with NaN
// or a non-finite maximum gives NaN (its gradient NaN), except an all -inf row without target
// mass, which gives 0 (every term 0 log 0; its gradient 0), as the row kernel.
// ---------------------------------------------------------------------------------------------
constexpr int64_t kProbsNarrowMax = 100;

// The sums of ce_probs_narrow and ce_probs_small over n classes: term(j, pcd, pc) gives class
// j's exp (0 for the first maximum) and adds c_j (m - x_j) and c_j to pcd and pc. Compute-type
// partials of four classes, then the float64 lanes (docs/numerics.md).
template <class T, class Term>
__attribute__((always_inline)) inline void probs_lane_sums(int64_t n, Term&& term, LaneSum<T>& se,
                                                           LaneSum<T>& scd, LaneSum<T>& sc) {
  using V = vec_t<T>;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    V pcd{}, pc{};
    const V e0 = term(j, pcd, pc), e1 = term(j + 1, pcd, pc);
    const V e2 = term(j + 2, pcd, pc), e3 = term(j + 3, pcd, pc);
    se.add((e0 + e1) + (e2 + e3));
    scd.add(pcd);
    sc.add(pc);
  }
  if (j < n) {
    V pcd{}, pc{}, pe{};
    for (; j < n; ++j) pe += term(j, pcd, pc);
    se.add(pe);
    scd.add(pcd);
    sc.add(pc);
  }
}

// The loss of float64 lanes of rows from their maximum md, NaN flag nk and sums (S' in sp,
// c_j (m - x_j) in cd, c_j in cs), and log S in log_sum: NaN for a row with NaN or a
// non-finite maximum, except an all -inf row without target mass (0; NaN with a z-loss term).
template <class T>
__attribute__((always_inline)) inline f64v probs_lane_loss(f64v md, f64v nk, f64v sp, f64v cd,
                                                           f64v cs, double z, f64v& log_sum) {
  log_sum = log1p_of_sum<T>(sp);
  f64v l = cd + cs * log_sum;
  if (z != 0) {
    const f64v lse = md + log_sum;
    l += z * lse * lse;
  }
  const auto bad = (nk != nk) | (md - md != md - md);
  const auto empty = (nk == nk) & (md == -kInf<double>) & (cs == 0.0) & (cd == 0.0);
  const f64v bad_loss = z == 0 ? vselect(empty, f64v{}, f64v{} + kNaN) : f64v{} + kNaN;
  return vselect(bad, bad_loss, l);
}

// The loss of a group of n <= G rows of the probability-target lane kernels from their deferred
// sums: defer holds, G values apart, each row's maximum, NaN flag, S', sum c_j (m - x_j) and
// sum c_j; probs_lane_loss (without a z-loss term) on them, as the block would have taken it.
template <class T, int64_t G>
void finish_probs_group(const double* defer, double* loss, int64_t r0, int64_t n) {
  store_group_losses<G>(loss, r0, n, [&](int64_t i) {
    f64v log_sum;
    return probs_lane_loss<T>(vload(defer + i), vload(defer + G + i), vload(defer + 2 * G + i),
                              vload(defer + 3 * G + i), vload(defer + 4 * G + i), 0.0, log_sum);
  });
}

// Whether a row that gives no gradient of its own (NaN, or a non-finite maximum) has loss 0 (an
// all -inf row without target mass, no z-loss term; probs_lane_loss's `empty`) rather than NaN.
inline bool probs_row_empty(double md, double nk, double cs, double cd) {
  return nk == nk && md == -kInf<double> && cs == 0.0 && cd == 0.0;
}

// Without a z-loss term or lse, neither the loss nor the gradient of ce_probs_narrow and
// ce_probs_small needs a row's log in the block: each block leaves its rows' sums in a buffer,
// and the float64 logs are taken for a group of kProbsGroupBlocks blocks at a time (loop
// fission, as ce_index_small: the same operations on the same values, so the same bits).
// One thread, float32, in cache, against the logs in the block: AVX-512 the loss 0.68-0.79 the
// time from 2 to 8 classes, 0.91-0.94 from 10 to 16, 0.97-0.99 from 32 to 100, with the
// gradient 0.78-0.93 from 2 to 8 classes; AVX2 the loss 0.56-0.78 from 2 to 10 classes, 0.96
// at 100, with the gradient 0.65-0.75 from 2 to 8 and 0.89-0.99 from 9 to 32.
constexpr int64_t kProbsGroupBlocks = 8;

template <class S, Coef C> void ce_probs_narrow(const CrossEntropyArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>;
  constexpr int64_t kGroupRows = kProbsGroupBlocks * W;
  const int64_t n = a.lx.n1;
  const double g = a.grad_scale, z = a.z_loss;
  // (with the gradient only up to 32 classes: against the logs in the block, one thread in
  // cache, AVX2 0.89-0.99 the time from 9 to 32 classes but 0.97-1.01 at 64 and 100, AVX-512
  // 0.96-1.00 up to 32 and 0.98-1.06 at 64 and 100)
  const bool grad = a.grad != nullptr, defer_logs = z == 0 && !a.lse && (!grad || n <= 32);
  const V ca = vset<T>(T(1.0 - a.label_smoothing)), cb = vset<T>(T(a.label_smoothing / double(n)));
  auto block = [&](int64_t r0, int nb, double* defer) {
    alignas(64) T xb[kProbsNarrowMax * W], yb[kProbsNarrowMax * W];
    int64_t off[W] = {};
    prefetch_block(a.x, a.lx, r0, W);
    prefetch_block(a.probs, a.lp, r0, W);
    if (grad) prefetch_block(a.grad, a.lg, r0, W);  // (written in place: its lines are read first)
    load_block(a.x, a.lx, r0, nb, xb, off);
    load_block(a.probs, a.lp, r0, nb, yb, off);
    const LaneMax<T> mx = lane_max(xb, n, true);
    const V m = mx.m;
    LaneSum<T> se, scd, sc;
    // class j: exp(x_j - m) (0 for the first maximum), c_j (m - x_j) (0 where c_j = 0, even
    // at -inf) and c_j; with the gradient e_j and c_j replace x_j and y_j in the buffers
    auto term = [&](int64_t j, V& pcd, V& pc) {
      const V x = vload(xb + j * W), e = vexp_capped(x - m);
      V c = ca * vload(yb + j * W) + cb;
      if constexpr (C == Coef::kWProbs) c = vset<T>(a.weight[j]) * c;
      if (grad) vstore(xb + j * W, e), vstore(yb + j * W, c);
      pcd += vselect(c == V{}, V{}, c * (m - x));
      pc += c;
      return vselect(mx.first == vset<T>(T(j)), V{}, e);
    };
    probs_lane_sums<T>(n, term, se, scd, sc);
    alignas(64) double sp[W], cd[W], cs[W], m64[W], nan64[W], ls[W], loss[W];
    if (defer_logs) {  // (finish_probs_group takes the loss as the branch below)
      se.store(defer + 2 * kGroupRows);
      scd.store(defer + 3 * kGroupRows);
      sc.store(defer + 4 * kGroupRows);
      to_f64_lanes(m, defer);
      to_f64_lanes(mx.nan_seen, defer + kGroupRows);
      if (!grad) return;
      for (int b = 0; b < W; ++b) {  // (the gradient's values; z = 0: no log S in it)
        m64[b] = defer[b], nan64[b] = defer[kGroupRows + b], sp[b] = defer[2 * kGroupRows + b];
        cd[b] = defer[3 * kGroupRows + b], cs[b] = defer[4 * kGroupRows + b], ls[b] = 0.0;
      }
    } else {
      se.store(sp);
      scd.store(cd);
      sc.store(cs);
      to_f64_lanes(m, m64);
      to_f64_lanes(mx.nan_seen, nan64);
      for (int k = 0; k < W; k += WD) {
        f64v log_sum;
        vstore(loss + k, probs_lane_loss<T>(vload(m64 + k), vload(nan64 + k), vload(sp + k),
                                            vload(cd + k), vload(cs + k), z, log_sum));
        vstore(ls + k, log_sum);
      }
      for (int b = 0; b < nb; ++b) a.loss[r0 + b] = loss[b];
      if (a.lse)
        for (int b = 0; b < nb; ++b)
          a.lse[r0 + b] = nan64[b] != nan64[b]     ? kNaN
                          : !std::isfinite(m64[b]) ? m64[b]
                                                   : m64[b] + ls[b];
      if (!grad) return;
    }
    alignas(64) T gs[W];
    bool fill_row[W];
    T fill[W];
    for (int b = 0; b < W; ++b) {
      const bool bad = nan64[b] != nan64[b] || !std::isfinite(m64[b]);
      fill_row[b] = bad;
      // (a bad row's loss: 0 for an empty row, else NaN)
      const bool zero =
          defer_logs ? probs_row_empty(m64[b], nan64[b], cs[b], cd[b]) : loss[b] == 0.0;
      fill[b] = zero ? T(0) : T(kNaN);
      gs[b] = bad ? T(0) : T(g * (cs[b] + 2.0 * z * (m64[b] + ls[b])) / (1.0 + sp[b]));
    }
    const V vgs = vload(gs), vg = vset<T>(T(g));
    for (int64_t i = 0; i < n; ++i)
      vstore(xb + i * W, vgs * vload(xb + i * W) - vg * vload(yb + i * W));
    row_offsets(a.lg, r0, nb, off);
    scatter_lanes(a.grad, a.lg, off, nb, xb, fill_row, fill);
  };
  parallel_row_groups(a.lx.rows(), n * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
    alignas(64) double defer[5 * kGroupRows];
    for (int64_t r = g0; r < g1; r += W) block(r, int(g1 - r < W ? g1 - r : W), defer + (r - g0));
    if (defer_logs) finish_probs_group<T, kGroupRows>(defer, a.loss, g0, g1 - g0);
  });
}

// ce_probs_narrow's arithmetic for 2 to kProbsSmallMax classes, operation for operation (so the
// same bits), with the block held in registers from load to store (load_small_block, as
// ce_index_small and kl_div_with_logits_small) instead of passing through the lane kernel's
// buffers. AVX-512, float32, against ce_probs_narrow (one thread in cache): 0.53-0.66 the time
// from 2 to 7 classes, 0.85 at 8, 1.04-1.08 at 9 and 12 (the loss); 0.52-0.65, 0.75, 0.84-0.98
// with the gradient; two threads over 50M logits 0.51-0.64 at 2 classes, 0.93-1.04 at 10.
constexpr int64_t kProbsSmallMax = 8;

template <class S, Coef C, int N> void ce_probs_small(const CrossEntropyArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>, K = W / WD;
  const double g = a.grad_scale, z = a.z_loss;
  const V ca = vset<T>(T(1.0 - a.label_smoothing)), cb = vset<T>(T(a.label_smoothing / double(N)));
  // (the deferred logs of ce_probs_narrow, which see)
  constexpr int64_t kGroupRows = kProbsGroupBlocks * W;
  const bool defer_logs = z == 0 && !a.lse;
  auto block = [&](int64_t r0, int nb, auto grad_tag, auto defer_tag, double* defer)
                   __attribute__((always_inline)) {
    constexpr bool kGrad = decltype(grad_tag)::value, kDefer = decltype(defer_tag)::value;
    prefetch_small_block<S, N>(a.x, a.lx, r0);
    prefetch_small_block<T, N>(a.probs, a.lp, r0);
    if constexpr (kGrad) prefetch_small_block<S, N>(a.grad, a.lg, r0);  // (read first)
    V x[N], c[N];
    load_small_block<S, N>(a.x, a.lx, r0, nb, x);
    load_small_block<T, N>(a.probs, a.lp, r0, nb, c);
    // lane_max with the first maximum
    V m = vset<T>(-std::numeric_limits<T>::infinity()), nan_seen = vset<T>(0), first = vset<T>(0);
    for (int j = 0; j < N; ++j) {
      nan_seen = vselect(x[j] != x[j], x[j], nan_seen);
      first = vselect(x[j] > m, vset<T>(T(j)), first);
      m = vselect(x[j] > m, x[j], m);
    }
    LaneSum<T> se, scd, sc;
    V e[N];
    auto term = [&](int j, V& pcd, V& pc) __attribute__((always_inline)) {
      e[j] = vexp_capped(x[j] - m);
      c[j] = ca * c[j] + cb;
      if constexpr (C == Coef::kWProbs) c[j] = vset<T>(a.weight[j]) * c[j];
      pcd += vselect(c[j] == V{}, V{}, c[j] * (m - x[j]));
      pc += c[j];
      return vselect(first == vset<T>(T(j)), V{}, e[j]);
    };
    probs_lane_sums<T>(N, term, se, scd, sc);
    f64v m64[K], nan64[K], ls[K], loss[K];
    lanes_f64<T>(m, m64), lanes_f64<T>(nan_seen, nan64);
    alignas(64) double lb[W], mb[W], nb64[W], lsb[W];
    if constexpr (kDefer) {
      for (int k = 0; k < K; ++k) {
        vstore(defer + k * WD, m64[k]);
        vstore(defer + kGroupRows + k * WD, nan64[k]);
        vstore(defer + 2 * kGroupRows + k * WD, se.v[k]);
        vstore(defer + 3 * kGroupRows + k * WD, scd.v[k]);
        vstore(defer + 4 * kGroupRows + k * WD, sc.v[k]);
      }
      if constexpr (!kGrad) return;
    } else {
      for (int k = 0; k < K; ++k)
        loss[k] = probs_lane_loss<T>(m64[k], nan64[k], se.v[k], scd.v[k], sc.v[k], z, ls[k]);
      for (int k = 0; k < K; ++k) vstore(lb + k * WD, loss[k]), vstore(lsb + k * WD, ls[k]);
      std::memcpy(a.loss + r0, lb, sizeof(double) * size_t(nb));
    }
    for (int k = 0; k < K; ++k) vstore(mb + k * WD, m64[k]), vstore(nb64 + k * WD, nan64[k]);
    if (!kDefer && a.lse)
      for (int b = 0; b < nb; ++b)
        a.lse[r0 + b] = nb64[b] != nb64[b]     ? kNaN
                        : !std::isfinite(mb[b]) ? mb[b]
                                                : mb[b] + lsb[b];
    if constexpr (kGrad) {
      alignas(64) T gs[W], fb[W];
      alignas(64) double spb[W], csb[W], cdb[W];
      se.store(spb);
      sc.store(csb);
      if constexpr (kDefer) scd.store(cdb);
      for (int b = 0; b < W; ++b) {
        const bool bad = nb64[b] != nb64[b] || !std::isfinite(mb[b]);
        // (z = 0 where the logs are deferred: no log S in the gradient's coefficient)
        gs[b] = bad ? T(0)
                    : T(g * (csb[b] + 2.0 * z * (mb[b] + (kDefer ? 0.0 : lsb[b]))) /
                        (1.0 + spb[b]));
        // a bad row's loss is 0 (an all -inf row without target mass, no z-loss) or NaN
        const bool zero_loss =
            kDefer ? probs_row_empty(mb[b], nb64[b], csb[b], cdb[b]) : lb[b] == 0.0;
        fb[b] = !bad ? T(1) : zero_loss ? T(0) : T(kNaN);  // (1: the row's own values)
      }
      const V vgs = vload(gs), vg = vset<T>(T(g)), fill = vload(fb), one = vset<T>(1);
      V out[N];
      for (int i = 0; i < N; ++i)
        out[i] = vselect(fill != one, fill, vgs * e[i] - vg * c[i]);
      store_small_block<S, N>(a.grad, a.lg, r0, nb, out);
    }
  };
  auto run = [&](auto grad_tag, auto defer_tag) {
    parallel_row_groups(a.lx.rows(), N * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
      alignas(64) double defer[5 * kGroupRows];
      for (int64_t r = g0; r < g1; r += W)
        block(r, int(g1 - r < W ? g1 - r : W), grad_tag, defer_tag, defer + (r - g0));
      if constexpr (decltype(defer_tag)::value)
        finish_probs_group<T, kGroupRows>(defer, a.loss, g0, g1 - g0);
    });
  };
  auto with_defer = [&](auto grad_tag) {
    if (defer_logs)
      run(grad_tag, std::true_type{});
    else
      run(grad_tag, std::false_type{});
  };
  if (a.grad)
    with_defer(std::true_type{});
  else
    with_defer(std::false_type{});
}

// ---------------------------------------------------------------------------------------------
// Two classes (binary softmax), contiguous (N, 2) logits and gradient, no label smoothing,
// z-loss or focal term: with z = x_other - x_t the loss is
//   -log p_t = softplus(z) = max(z, 0) + log1p(exp(-|z|))
// (no maximum, no sum of exps, no float64 log: one exp and one log1p per row, in the compute
// type, the log1p of exp(-|z|) as in the logistic pointwise losses), and the gradient is
//   d/dx_other = g w_t sigmoid(z),  d/dx_t = -g w_t sigmoid(z)
// with sigmoid(z) = 1 / (1 + e) (z >= 0) or e / (1 + e), e = exp(-|z|). Rows are read in
// vectors of W rows (2 W logits, split into the two classes' lanes), not transposed through
// memory. As ce_index_narrow: 0 for ignore_index rows (gradient 0), NaN for rows with NaN or
// +inf (a non-finite maximum; a row of two -inf gives z = NaN), and for out-of-range targets
// (rejected by the caller before). lse = max(x0, x1) + log1p(exp(-|z|)) from the same exp and
// log1p, and token accuracy (NumPy's argmax, the first NaN winning) from the same lanes.
// ---------------------------------------------------------------------------------------------
// Lane masks of W class-index targets (int64): class 0, class 1, ignore_index (which wins over
// a class of the same value).
template <class T>
inline void target_masks(const int64_t* tp, int64_t ignore_index, typename Vec<T>::itype& t0,
                         typename Vec<T>::itype& t1, typename Vec<T>::itype& ign) {
  using I [[maybe_unused]] = typename Vec<T>::itype;
  constexpr int W = vec_width<T>;
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512i lo = _mm512_loadu_si512(tp), hi = _mm512_loadu_si512(tp + 8);
    auto eq = [&](__m512i v) {
      return __mmask16(_mm512_cmpeq_epi64_mask(lo, v) |
                       (unsigned(_mm512_cmpeq_epi64_mask(hi, v)) << 8));
    };
    const __mmask16 mi = eq(_mm512_set1_epi64(ignore_index));
    ign = I(_mm512_movm_epi32(mi));
    t0 = I(_mm512_movm_epi32(eq(_mm512_setzero_si512()) & ~mi));
    t1 = I(_mm512_movm_epi32(eq(_mm512_set1_epi64(1)) & ~mi));
    return;
  } else {
    const __m512i v = _mm512_loadu_si512(tp);
    const __mmask8 mi = _mm512_cmpeq_epi64_mask(v, _mm512_set1_epi64(ignore_index));
    ign = I(_mm512_movm_epi64(mi));
    t0 = I(_mm512_movm_epi64(_mm512_cmpeq_epi64_mask(v, _mm512_setzero_si512()) & ~mi));
    t1 = I(_mm512_movm_epi64(_mm512_cmpeq_epi64_mask(v, _mm512_set1_epi64(1)) & ~mi));
    return;
  }
#endif
  using E = std::remove_reference_t<decltype(t0[0])>;
  alignas(64) E m0[W], m1[W], mi[W];
  for (int i = 0; i < W; ++i) {
    const int64_t t = tp[i];
    const E k = -E(t == ignore_index);
    mi[i] = k, m0[i] = -E(t == 0) & ~k, m1[i] = -E(t == 1) & ~k;
  }
  std::memcpy(&t0, m0, sizeof(t0)), std::memcpy(&t1, m1, sizeof(t1));
  std::memcpy(&ign, mi, sizeof(ign));
}

template <class T> bool ce_binary_applies(const CrossEntropyArgs<T>& a) {
  return a.lx.n1 == 2 && a.target && !a.probs && a.label_smoothing == 0.0 && a.z_loss == 0.0 &&
         a.softcap == 0.0 && !a.focal;
}

// How a block of W rows of a layout is read or written: kPairs, (N, 2) contiguous (the two
// classes interleaved); kLanes, each class's W rows contiguous (the class axis of (N, C, H, W)
// with the block inside one image: two vector loads); else one element at a time.
enum class PairAccess { kPairs, kLanes, kAny };
template <int W> PairAccess pair_access(const Layout3& l, int64_t r) {
  if (l.n2 == 1) return l.s1 == 1 && (l.n0 <= 1 || l.s0 == 2) ? PairAccess::kPairs
                                                               : PairAccess::kAny;
  return l.s2 == 1 && r % l.n2 + W <= l.n2 ? PairAccess::kLanes : PairAccess::kAny;
}

template <class T> void ce_index_binary(const CrossEntropyArgs<T>& a) {
  using V = vec_t<T>;
  using I = typename Vec<T>::itype;
  constexpr int W = vec_width<T>;
  const int64_t rows = a.lx.rows();
  const int64_t ignore_index = a.ignore_index;
  const T w0 = a.weight ? a.weight[0] : T(1), w1 = a.weight ? a.weight[1] : T(1);
  const T g = T(a.grad_scale);
  // rows [r, r + nb), nb <= W (the lanes past nb: logits 0, target ignored, never written)
  // (kGrad, kStats: the gradient, lse / token accuracy asked for; compile-time, so that the
  // loss-only body has no branch on them, and inlined into the loop over the blocks, so that
  // its constants stay in registers)
  auto block = [&](int64_t r, int nb, auto grad_tag, auto stats_tag) __attribute__((always_inline)) {
    constexpr bool kGrad = decltype(grad_tag)::value, kStats = decltype(stats_tag)::value;
    const bool full = nb == W;
    V x0, x1;
    const PairAccess ax = full ? pair_access<W>(a.lx, r) : PairAccess::kAny;
    if (ax == PairAccess::kPairs) {
      split_pairs<T>(a.x + 2 * r, x0, x1);
    } else if (ax == PairAccess::kLanes) {
      const T* p = a.x + a.lx.offset(r);
      x0 = vload(p), x1 = vload(p + a.lx.s1);
    } else {
      alignas(64) T b0[W] = {}, b1[W] = {};
      for (int i = 0; i < nb; ++i) {
        const int64_t o = a.lx.offset(r + i);
        b0[i] = a.x[o], b1[i] = a.x[o + a.lx.s1];
      }
      x0 = vload(b0), x1 = vload(b1);
    }
    // per lane: target class 0 (t0), class 1 (t1), ignore_index (ign), else out of range
    I t0, t1, ign;
    if (full) {
      target_masks<T>(a.target + r, ignore_index, t0, t1, ign);
    } else {
      alignas(64) int64_t tp[W];
      for (int i = 0; i < W; ++i) tp[i] = i < nb ? a.target[r + i] : ignore_index;
      target_masks<T>(tp, ignore_index, t0, t1, ign);
    }
    const V zero{}, one = vset<T>(1);
    const V z = vselect(t1, x0 - x1, x1 - x0);  // the other class's logit minus the target's
    V e, l1pe;
    exp_log1p_neg(vselect(z < zero, -z, z), e, l1pe);
    {
      // z's rounding error (TwoSum of x_other and -x_t): e and log1p(e) are moved to those of
      // the exact difference, e (1 - sign(z) err), to first order. For a confident row the
      // loss is about e, whose relative error would otherwise be |z| u (32 ulp at |z| = 65).
      // (0 where z overflowed or is NaN: those rows' losses are inf / NaN regardless.)
      const V a_ = vselect(t1, x0, x1), b_ = vselect(t1, -x1, -x0), bb = z - a_;
      V err = (a_ - (z - bb)) + (b_ - bb);
      err = vselect(vselect(z < zero, -z, z) < vset<T>(std::numeric_limits<T>::infinity()), err,
                    zero);
      const V de = vselect(z < zero, err, -err) * e;
      l1pe += de * (vset<T>(1) - e * (vset<T>(1) - e));  // de / (1 + e), within e^3 de
      e += de;
    }
    const V inf = vset<T>(std::numeric_limits<T>::infinity()), nan = vset<T>(T(kNaN));
    const I bad = I(x0 == inf) | I(x1 == inf) | ~(t0 | t1 | ign);
    const V wt = vselect(t1, vset<T>(w1), vselect(t0, vset<T>(w0), zero));
    // loss = max(z, 0) + log1p(e) with z = x_other - x_t formed in float64 for float32 logits
    // (exact: no overflow for finite logits); ignored rows 0 (even NaN ones), bad rows NaN
    const V xo = vselect(ign, zero, vselect(t1, x0, x1)), xt = vselect(ign, zero, vselect(t1, x1, x0));
    const V lp = vselect(ign, zero, vselect(bad, nan, l1pe));
    alignas(64) double lbuf[W];
    double* lout = full ? a.loss + r : lbuf;
    if constexpr (std::is_same_v<T, float>) {
      f64v o[2], t[2], q[2], w[2] = {};
      widen(xo, o[0], o[1]), widen(xt, t[0], t[1]), widen(lp, q[0], q[1]);
      if (a.weight) widen(wt, w[0], w[1]);
      for (int k = 0; k < 2; ++k) {
        const f64v d = o[k] - t[k];
        f64v l = vselect(d > f64v{}, d, f64v{}) + q[k];
        if (a.weight) l *= w[k];
        vstore(lout + k * vec_width<double>, l);
      }
    } else {
      const V d = xo - xt;
      V l = vselect(d > zero, d, zero) + lp;
      if (a.weight) l *= wt;
      vstore(lout, l);
    }
    if (!full) std::memcpy(a.loss + r, lbuf, sizeof(double) * size_t(nb));
    if (kStats && a.lse) {  // max + log1p(exp(-|x0 - x1|)); NaN rows NaN, a non-finite maximum as it is
      const V m = vselect(x0 > x1, x0, x1);
      V lse = vselect(m - m == zero, m + l1pe, m);
      lse = vselect((x0 != x0) | (x1 != x1), nan, lse);
      alignas(64) double out[W];
      to_f64_lanes(lse, out);
      std::memcpy(a.lse + r, out, sizeof(double) * size_t(nb));
    }
    if (kStats && a.correct) {  // NumPy's argmax (the first maximum; the first NaN counts as the largest)
      const I first_nan = I(x0 != x0), ow = I(x1 > x0) | (I(x1 != x1) & ~first_nan);
      const I win = (ow & I(t1)) | (~ow & I(t0));
      alignas(64) T corr[W];
      vstore(corr, vselect(win, one, zero));
      for (int i = 0; i < nb; ++i) a.correct[r + i] = corr[i] != T(0);
    }
    if constexpr (!kGrad) return;
    const V big = one / (one + e);
    V s = vselect(z >= zero, big, e * big);  // sigmoid(z); NaN for NaN z
    s = vselect(z != z, z, s);
    const V go = vselect(bad, nan, vselect(ign, zero, (vset<T>(g) * wt) * s));
    const V g0 = vselect(t1, go, -go), g1 = vselect(t1, -go, go);
    const PairAccess ag = full ? pair_access<W>(a.lg, r) : PairAccess::kAny;
    if (ag == PairAccess::kPairs) {
      join_pairs<T>(a.grad + 2 * r, g0, g1);
    } else if (ag == PairAccess::kLanes) {
      T* p = a.grad + a.lg.offset(r);
      vstore(p, g0), vstore(p + a.lg.s1, g1);
    } else {
      alignas(64) T b0[W], b1[W];
      vstore(b0, g0), vstore(b1, g1);
      for (int i = 0; i < nb; ++i) {
        const int64_t o = a.lg.offset(r + i);
        a.grad[o] = b0[i], a.grad[o + a.lg.s1] = b1[i];
      }
    }
  };
  const int64_t blocks = (rows + W - 1) / W;
  const int nt = threads_for(rows * 2 * kExpWork, blocks);
  auto run = [&](auto grad_tag, auto stats_tag) {
    parallel_for(nt, [&](int64_t th, int64_t n_th) {
      const int64_t lo = blocks * th / n_th * W;
      int64_t hi = blocks * (th + 1) / n_th * W;
      hi = hi < rows ? hi : rows;
      for (int64_t r = lo; r < hi; r += W)
        block(r, int(hi - r < W ? hi - r : W), grad_tag, stats_tag);
    });
  };
  using Yes = std::true_type;
  using No = std::false_type;
  const bool stats = a.lse || a.correct;
  if (a.grad)
    stats ? run(Yes{}, Yes{}) : run(Yes{}, No{});
  else
    stats ? run(No{}, Yes{}) : run(No{}, No{});
}

// ---------------------------------------------------------------------------------------------
// 3 to 16 classes (2 for the focal loss and 16-bit inputs, which ce_index_binary does not
// take), class-index targets, no weights (alpha), z-loss, lse or token accuracy, any layout
// and input type: the arithmetic of ce_index_narrow<S, Coef::kNone> (with its focal term), or
// with label smoothing of ce_index_narrow<S, Coef::kOne>, operation for operation, on a block
// held in registers. ce_index_narrow's block passes through stack buffers (the transposed logits,
// the targets, the float64 lanes of the epilogue), and with a few classes those stores and
// reloads, not the arithmetic, set its time (one thread, float32, AVX-512, in cache: 0.63 of
// the time at 3 classes, 0.77 at 10, 0.84 at 16; with the gradient 0.45, 0.56, 0.71). Here a
// block is loaded and split into class vectors (load_small_block), reduced, and written back
// without leaving registers.
// ---------------------------------------------------------------------------------------------
template <class S> bool ce_small_applies(const CrossEntropyArgs<S>& a) {
  const int64_t n = a.lx.n1;
  // (two classes: ce_index_binary, which takes neither the focal term nor 16-bit inputs)
  const int64_t lo = a.focal || !std::is_same_v<S, compute_t<S>> ? 2 : 3;
  return n >= lo && n <= kSmallMaxClasses && a.target && !a.probs && !a.weight &&
         (a.label_smoothing == 0.0 || !a.focal) && a.z_loss == 0.0 && a.softcap == 0.0 &&
         !a.lse && !a.correct;
}

// The focal term of ce_index_narrow in float64 lanes, operation for operation: q = 1 - p_t,
// mod = (1 - p_t)^gamma, dmod = gamma (1 - p_t)^(gamma - 1) p_t (-log p_t), ce = -log p_t
// (std::pow lane by lane for a gamma other than 0, 1 and 2, as there).
inline void focal_lanes(f64v q, f64v pt, f64v ce, double gamma, f64v& mod, f64v& dmod) {
  const f64v zero{};
  const auto none = (q == zero) | (pt == zero);
  if (gamma == 2) {
    mod = vselect(q == zero, zero, q * q);
    dmod = vselect(none, zero, ((2 * q) * pt) * ce);
  } else if (gamma == 1) {
    mod = vselect(q == zero, zero, q);
    dmod = vselect(none, zero, (1.0 * pt) * ce);
  } else if (gamma == 0) {
    mod = zero + 1.0;
    dmod = zero;
  } else {
    mod = dmod = zero;
    for (int i = 0; i < vec_width<double>; ++i) {
      mod[i] = q[i] == 0 ? 0.0 : std::pow(q[i], gamma);
      dmod[i] = q[i] == 0 || pt[i] == 0 ? 0.0 : gamma * std::pow(q[i], gamma - 1) * pt[i] * ce[i];
    }
  }
}

// ce_index_small's modes: plain cross-entropy, the focal loss, label smoothing
constexpr int kModePlain = 0, kModeFocal = 1, kModeSmooth = 2;

template <class S, int N> void ce_index_small(const CrossEntropyArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>, K = W / WD;
  constexpr int64_t kGroupRows = 8 * W;  // (rows per group of the loss's deferred logs)
  const int64_t rows = a.lx.rows(), ignore_index = a.ignore_index;
  const double g = a.grad_scale;
  // rows [r, r + nb) (a short block: its targets padded with ignored rows)
  // (kGrad: the gradient; the mode: plain cross-entropy, the focal term (kFocal) or label
  // smoothing (kSmooth, ce_index_narrow<S, Coef::kOne>'s arithmetic); compile-time, so that
  // plain cross-entropy's body has neither the other modes' branches nor their registers)
  auto block = [&](int64_t r, int nb, auto grad_tag, auto mode_tag, double* defer)
                   __attribute__((always_inline)) {
    constexpr bool kGrad = decltype(grad_tag)::value;
    constexpr bool kFocal = decltype(mode_tag)::value == kModeFocal;
    constexpr bool kSmooth = decltype(mode_tag)::value == kModeSmooth;
    constexpr bool kDefer = !kFocal;  // (the focal term needs the log in the block)
    // label smoothing: eps, eps / C, and the sum of the class coefficients (C)
    const double eps = kSmooth ? a.label_smoothing : 0.0, eps_c = eps / double(N);
    constexpr double Wsum = double(N);
    V x[N];
    load_small_block<S, N>(a.x, a.lx, r, nb, x);
    alignas(64) int64_t tb[W];
    alignas(64) double lb[W];
    const int64_t* tp = a.target + r;
    double* lout = a.loss + r;
    if (nb < W) {
      for (int b = 0; b < W; ++b) tb[b] = b < nb ? a.target[r + b] : ignore_index;
      tp = tb, lout = lb;
    }
    const TargetLanes<T> tg = target_lanes<T>(tp, N, ignore_index);
    // lane_max's maximum (NaN skipped), and ce_index_narrow's class loop (the target's e and x
    // taken out by selects; partials of four classes flushed into float64 lanes). No NaN flag:
    // a NaN logit makes its exp NaN (vexp_capped propagates it), so the row's sum, loss and
    // gradient are NaN without one (a compare and a blend per class fewer).
    V m = vset<T>(-std::numeric_limits<T>::infinity());
    for (int j = 0; j < N; ++j) m = vselect(x[j] > m, x[j], m);
    V e[N], xt = vset<T>(0), et = vset<T>(0);
    LaneSum<T> se, scd;  // (scd: label smoothing's sum over the classes of m - x_c)
    auto term = [&](int j) {
      e[j] = vexp_capped(x[j] - m);
      const auto is_t = tg.t == vset<T>(T(j));
      xt = vselect(is_t, x[j], xt);
      et = vselect(is_t, e[j], et);
      if constexpr (kSmooth) scd.add(vset<T>(1) * (m - x[j]));
      return vselect(is_t, vset<T>(0), e[j]);
    };
    int j = 0;
    for (; j + 4 <= N; j += 4) {
      const V e0 = term(j), e1 = term(j + 1), e2 = term(j + 2), e3 = term(j + 3);
      se.add((e0 + e1) + (e2 + e3));
    }
    for (; j < N; ++j) se.add(term(j));
    f64v md[K], xt64[K], et64[K];
    if constexpr (std::is_same_v<T, float>) {
      widen(m, md[0], md[1]), widen(xt, xt64[0], xt64[1]), widen(et, et64[0], et64[1]);
    } else {
      md[0] = m, xt64[0] = xt, et64[0] = et;
    }
    [[maybe_unused]] f64v inv_s[K], omp[K], pt[K];
    // the gradient's coefficients of p_j and of -[j == t] (ce_index_narrow's ps and tc, w_t = 1)
    f64v ps[K], tc[K];
    for (int k = 0; k < K; ++k) {
      const f64v s_ex = se.v[k];
      const auto t_max = xt64[k] == md[k];
      const f64v e_t = vselect(t_max, f64v{} + 1.0, et64[k]);
      const auto bad = (md[k] - md[k] != md[k] - md[k]) | (tg.inv64[k] != 0.0);
      const auto ign = tg.ign64[k] != 0.0;
      if constexpr (kDefer) {
        // (the loss's two terms, md - x_t and log1p's argument; 0 and 0 for ignored rows, NaN
        // for bad ones: finish_loss_group adds them up as below)
        vstore(defer + k * WD, vselect(ign, f64v{}, vselect(bad, f64v{} + kNaN, md[k] - xt64[k])));
        vstore(defer + kGroupRows + k * WD,
               vselect(ign, f64v{}, vselect(t_max, s_ex, (s_ex - 1.0) + e_t)));
        if constexpr (kSmooth)  // (label smoothing: finish_smoothed_group)
          vstore(defer + 2 * kGroupRows + k * WD, vselect(ign, f64v{}, scd.v[k]));
      }
      ps[k] = f64v{} + g * ((1.0 - eps) * 1.0 + eps_c * Wsum);
      tc[k] = f64v{} + g * (1.0 - eps) * 1.0;
      if constexpr (kGrad || kFocal) {
        const f64v s = s_ex + e_t;
        inv_s[k] = 1.0 / s;
        omp[k] = s_ex * inv_s[k];  // 1 - p_t without cancellation
        pt[k] = e_t * inv_s[k];
      }
      if constexpr (kDefer) continue;
      const f64v log_sum = log1p_of_sum<T>(vselect(t_max, s_ex, (s_ex - 1.0) + e_t));
      const f64v c = (md[k] - xt64[k]) + log_sum;  // -log p_t
      f64v l = c;
      if constexpr (kSmooth) {  // (1 - eps) (-log p_t) + (eps / C) (sum_c (m - x_c) + C log S)
        l = (1.0 - eps) * c;
        l += eps_c * (scd.v[k] + Wsum * log_sum);
      }
      if constexpr (kFocal) {  // -(1 - p_t)^gamma log p_t, gradient g (mod + dmod) (p_j - [j == t])
        f64v mod, dmod;
        focal_lanes(omp[k], pt[k], c, a.focal_gamma, mod, dmod);
        l = mod * c;
        ps[k] = tc[k] = g * (mod + dmod);
      }
      vstore(lout + k * WD, vselect(ign, f64v{}, vselect(bad, f64v{} + kNaN, l)));
    }
    if constexpr (kGrad) {
      // ce_index_narrow's gradient with w_t = 1 (0 for ignored rows, which are filled):
      // (ps / S) e_j - g (eps / C) c_j, and at the target -tc (1 - p_t) + (ps - tc) p_t
      // - g (eps / C) c_t, with c_j = 1 for label smoothing and 0 otherwise
      constexpr double c_j = kSmooth ? 1.0 : 0.0;
      f64v gs64[K], gt64[K];
      for (int k = 0; k < K; ++k) {
        gs64[k] = ps[k] * inv_s[k];
        gt64[k] = -tc[k] * omp[k] + (ps[k] - tc[k]) * pt[k] - g * eps_c * c_j;
      }
      V vgs, vgt;
      if constexpr (std::is_same_v<T, float>)
        vgs = narrow(gs64[0], gs64[1]), vgt = narrow(gt64[0], gt64[1]);
      else
        vgs = gs64[0], vgt = gt64[0];
      // rows filled: ignored (0) and invalid targets or NaN losses (NaN)
      const auto bad_t = (m - m != m - m) | (tg.t < vset<T>(0));
      const V fill = vselect(tg.ign != vset<T>(0), vset<T>(0), vset<T>(T(kNaN)));
      V gr[N];
      for (int q = 0; q < N; ++q) {
        V out = vgs * e[q];
        if constexpr (kSmooth) out -= vset<T>(T(g * eps_c));
        gr[q] = vselect(bad_t, fill, vselect(tg.t == vset<T>(T(q)), vgt, out));
      }
      store_small_block<S, N>(a.grad, a.lg, r, nb, gr);
    }
    if (!kDefer && nb < W) std::memcpy(a.loss + r, lb, sizeof(double) * size_t(nb));
  };
  // Without the focal term: the float64 log1p of each row's sum (the loss's; the gradient does
  // not need it) is left out of the block and taken for a group of kGroupRows rows at a time
  // (loop fission; with label smoothing since it measured, one thread in cache, float32, 0.88
  // the time at 3 classes and 0.98-1.0 at 10 and 16 on AVX-512, 0.94, 1.0 and 0.95 on AVX2). A block is a long chain (loads, max, exp, sums, then the division and
  // polynomial of the log) with too many operations for the out-of-order window to overlap the
  // next block's; the group's logs are short, independent iterations that it does overlap. The
  // same operations on the same values: the same bits.
  // (One thread, float32, AVX2, in cache: see the changelog.)
  auto run = [&](auto grad_tag, auto mode_tag) {
    constexpr bool kGrad = decltype(grad_tag)::value;
    constexpr bool kPlain = decltype(mode_tag)::value == kModePlain;
    constexpr bool kSmooth = decltype(mode_tag)::value == kModeSmooth;
    parallel_row_groups(rows, N * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
      alignas(64) double defer[3 * kGroupRows];
      for (int64_t r = g0; r < g1; r += W) {
        // (4 blocks ahead, the targets and the gradient's lines too)
        prefetch_small_block<S, N>(a.x, a.lx, r);
        prefetch_bytes(a.target + r + 4 * W, r + 5 * W <= rows ? W * int64_t(sizeof(int64_t)) : 0);
        if constexpr (kGrad) prefetch_small_block<S, N>(a.grad, a.lg, r);
        block(r, int(g1 - r < W ? g1 - r : W), grad_tag, mode_tag, defer + (r - g0));
      }
      if constexpr (kPlain) finish_loss_group<T, kGroupRows>(defer, a.loss, g0, g1 - g0);
      if constexpr (kSmooth)
        finish_smoothed_group<T, kGroupRows>(defer, a.loss, g0, g1 - g0, a.label_smoothing,
                                             a.label_smoothing / double(N), double(N));
    });
  };
  auto with_mode = [&](auto grad_tag) {
    if (a.focal)
      run(grad_tag, std::integral_constant<int, kModeFocal>{});
    else if (a.label_smoothing > 0.0)
      run(grad_tag, std::integral_constant<int, kModeSmooth>{});
    else
      run(grad_tag, std::integral_constant<int, kModePlain>{});
  };
  if (a.grad)
    with_mode(std::true_type{});
  else
    with_mode(std::false_type{});
}


// ---------------------------------------------------------------------------------------------
// logsumexp, softmax and log_softmax of 2 to 16 classes, any layout and input type:
// logsumexp_narrow's and softmax_narrow's arithmetic, operation for operation, on a block held
// in registers (as ce_index_small; one thread, float32, AVX-512, in cache: softmax 0.35 of the
// time at 3 classes, 0.68 at 10, 0.88 at 16; at 2 classes, against the lane kernels: logsumexp
// 0.39, softmax 0.17, log_softmax 0.26).
// ---------------------------------------------------------------------------------------------

// lane_max (with the first maximum) of N class vectors, and lane_exp_sums' float64 sums of
// e_j = exp(x_j - m), the first maximum's term left out with skip_first.
template <class T, int N> struct SmallRowStats {
  vec_t<T> m, nan_seen, first, e[N];
  LaneSum<T> s;
};
template <class T, int N>
__attribute__((always_inline)) inline void small_row_stats(const vec_t<T> x[N], bool skip_first,
                                                           SmallRowStats<T, N>& st) {
  using V = vec_t<T>;
  st.m = vset<T>(-std::numeric_limits<T>::infinity());
  st.nan_seen = vset<T>(0);
  st.first = vset<T>(0);
  for (int j = 0; j < N; ++j) {
    st.nan_seen = vselect(x[j] != x[j], x[j], st.nan_seen);
    st.first = vselect(x[j] > st.m, vset<T>(T(j)), st.first);
    st.m = vselect(x[j] > st.m, x[j], st.m);
  }
  auto term = [&](int j) {
    st.e[j] = vexp_capped(x[j] - st.m);
    return skip_first ? vselect(st.first == vset<T>(T(j)), vset<T>(0), st.e[j]) : st.e[j];
  };
  int j = 0;
  for (; j + 4 <= N; j += 4) {
    const V e0 = term(j), e1 = term(j + 1), e2 = term(j + 2), e3 = term(j + 3);
    st.s.add((e0 + e1) + (e2 + e3));
  }
  for (; j < N; ++j) st.s.add(term(j));
}

// The rows [r, r + nb) of a softmax-family call as class vectors, and their statistics.
template <class S, int N, class T = compute_t<S>>
__attribute__((always_inline)) inline void small_block_stats(const SoftmaxArgs<S>& a, int64_t r,
                                                             int nb, bool skip_first,
                                                             vec_t<T> x[N],
                                                             SmallRowStats<T, N>& st) {
  prefetch_small_block<S, N>(a.x, a.lx, r);
  load_small_block<S, N>(a.x, a.lx, r, nb, x);
  small_row_stats<T, N>(x, skip_first, st);
}

template <class S, int N> void logsumexp_small(const SoftmaxArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int K = vec_width<T> / vec_width<double>;
  constexpr int W = vec_width<T>;
  constexpr int WD = vec_width<double>;
  // The float64 log1p of a group's row sums is taken after the group's blocks (loop fission,
  // as ce_index_small's loss): per row the base m (NaN for NaN rows; a non-finite maximum with
  // the argument 0, so that the result is that maximum) and log1p's argument.
  constexpr int64_t kGroupRows = 8 * W;
  parallel_row_groups(a.lx.rows(), N * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
    alignas(64) double defer[2 * kGroupRows];
    for (int64_t r = g0; r < g1; r += W) {
      V x[N];
      SmallRowStats<T, N> st;
      small_block_stats<S, N>(a, r, int(g1 - r < W ? g1 - r : W), true, x, st);
      f64v m64[K], nan64[K];
      lanes_f64<T>(st.m, m64);
      lanes_f64<T>(st.nan_seen, nan64);
      for (int k = 0; k < K; ++k) {
        // NaN rows NaN; +inf, or a row of -inf, its maximum
        const auto fin = m64[k] - m64[k] == m64[k] - m64[k];
        double* d = defer + (r - g0) + k * WD;
        vstore(d, vselect(nan64[k] != nan64[k], f64v{} + kNaN, m64[k]));
        vstore(d + kGroupRows, vselect(fin, st.s.v[k], f64v{}));
      }
    }
    alignas(64) double lse[kGroupRows];  // (whole blocks: a short one's padding lanes too)
    deferred_logs<T, kGroupRows>(defer, lse, (g1 - g0 + W - 1) / W * W);
    for (int64_t r = g0; r < g1; r += W) {
      f64v out[K];
      for (int k = 0; k < K; ++k) out[k] = vload(lse + (r - g0) + k * WD);
      const int nb = int(g1 - r < W ? g1 - r : W);
      if (nb == W) {
        vstore_as(a.out + r, lanes_from_f64<T>(out));
      } else {
        alignas(64) T yb[W];
        vstore(yb, lanes_from_f64<T>(out));
        for (int b = 0; b < nb; ++b) a.out[r + b] = from_compute<S>(yb[b]);
      }
    }
  });
}

template <class S, int N> void softmax_small(const SoftmaxArgs<S>& a, bool log) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int K = vec_width<T> / vec_width<double>;
  constexpr int W = vec_width<T>;
  parallel_row_blocks(a.lx.rows(), N * kExpWork, W, [&](int64_t r, int nb) {
    prefetch_small_block<S, N>(a.out, a.lo, r);  // (written in place: its lines are read first)
    V x[N];
    SmallRowStats<T, N> st;
    small_block_stats<S, N>(a, r, nb, log, x, st);
    const auto nan_row = st.nan_seen != st.nan_seen;
    const auto bad = nan_row | (st.m - st.m != st.m - st.m);  // NaN, or a non-finite maximum
    const V nan = vset<T>(T(kNaN));
    V y[N];
    f64v f64[K];
    if (log) {
      for (int k = 0; k < K; ++k) f64[k] = log1p_of_sum<T>(st.s.v[k]);
      const V vls = lanes_from_f64<T>(f64);
      // x_j - m for rows with a non-finite maximum (scipy's log_softmax); NaN rows NaN
      for (int j = 0; j < N; ++j) {
        const V d = x[j] - st.m;
        y[j] = vselect(nan_row, nan, vselect(bad, d, d - vls));
      }
    } else {
      for (int k = 0; k < K; ++k) f64[k] = 1.0 / st.s.v[k];
      const V f = lanes_from_f64<T>(f64);
      for (int j = 0; j < N; ++j) y[j] = vselect(bad, nan, st.e[j] * f);
    }
    store_small_block<S, N>(a.out, a.lo, r, nb, y);
  });
}

// (from 2 classes: cross-entropy's two take ce_index_binary where ce_small_applies says so)
template <class S> void ce_index_small_n(const CrossEntropyArgs<S>& a) {
  with_class_count_up_to_16<2>(a.lx.n1,
                               [&](auto kN) { ce_index_small<S, decltype(kN)::value>(a); });
}
constexpr int64_t kSmallMinSoftmax = 2;
template <class S> void logsumexp_small_n(const SoftmaxArgs<S>& a) {
  with_class_count_up_to_16<kSmallMinSoftmax>(
      a.lx.n1, [&](auto kN) { logsumexp_small<S, decltype(kN)::value>(a); });
}
template <class S> void softmax_small_n(const SoftmaxArgs<S>& a, bool log) {
  with_class_count_up_to_16<kSmallMinSoftmax>(
      a.lx.n1, [&](auto kN) { softmax_small<S, decltype(kN)::value>(a, log); });
}
