// Distribution losses and the multi-class margin loss: kl_div_with_logits (distillation),
// gaussian_kl (the VAE term), multi_margin_loss (torch's multi-class hinge).
//
// Row kernels in the manner of softmax_ce.cpp: a row (the class axis of one sample) is read
// from memory once; rows whose class stride is not 1 move through per-thread tiles (rows.hpp); sums are accumulated in float64 lanes (float32 terms in partials of at most 4 or 8
// terms, widened once per chunk); rows are independent, so results do not depend on the
// number of threads.
#include "distributions.hpp"

#include <cmath>
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

// Scratch slots (rows.hpp): read tiles of the two inputs, write tiles of the two gradients,
// kept exps and segments of kl_div_with_logits.
enum Slot {
  kSlotA = 0,
  kSlotB = 1,
  kSlotG = kWriteSlot,
  kSlotG2 = 3,
  kSlotES = 4,
  kSlotET = 5,
  kSlotSeg = 6
};
static_assert(kSlotSeg < kScratchSlots, "more scratch slots than threads.cpp provides");

// ---------------------------------------------------------------------------------------------
// kl_div_with_logits. Per row, student logits s, teacher logits t, temperature tau, and with
// a_j = s_j / tau, b_j = t_j / tau, q = softmax(b), p = softmax(a):
//   loss = tau^2 sum_j q_j (log q_j - log p_j) = tau^2 [ sum_j q_j (b_j - a_j) - lse(b) + lse(a) ]
//   with lse(a) = M_s + log S_s,  S_s = sum_j exp(a_j - M_s)                (likewise for b)
//   and  sum_j q_j (b_j - a_j) = D / S_t,  D = sum_j exp(b_j - M_t) (b_j - a_j):
//   loss = tau^2 [ D / S_t + (M_s - M_t) + log(S_s / S_t) ] = tau^2 [ D* / S_t + log(S_s / S_t) ]
//   with D* = sum_j exp(b_j - M_t) ((b_j - M_t) - (a_j - M_s)) (see kl_merge)
//   d loss / d s_j = tau (p_j - q_j)
// One pass over both rows from memory gathers all five statistics, block by block (blocks of
// 2048 elements, which stay in L1): the maxima of the block first, then its sums against them
// (re-reading it from L1); blocks are merged by rescaling in float64 (online softmax for two
// rows at once). Summing each block against its own maximum keeps the largest terms exact,
// which matters here: for nearly equal rows the loss is a small difference of two log-sums,
// and an exp rounded differently in the student and the teacher shows up in it. For the same
// reason b_j - a_j is taken as (b_j - r_t) - (a_j - r_s) + (r_t - r_s) from the exp arguments
// (relative to the block references r, small where the weight is) with the constant part
// folded in float64 into the differences of the references (kl_merge): a student equal to the
// teacher plus a constant gives 0, not the rounding of the constant, and logits of any size
// (1e30) only ever enter as differences.
// A term with q_j = 0 is 0, also where t_j = -inf (there b_j - a_j is -inf or NaN); a student
// -inf where q_j > 0 makes D, and the loss, +inf. With a gradient, the exp values of both rows
// are kept (in L2) with the reference of each block, so the gradient pass, p_j - q_j, needs
// no exp and does not read the logits again.
// ---------------------------------------------------------------------------------------------
template <class T>
constexpr int64_t kBlock = 2048;

struct KlSums {
  double s = 0, t = 0, d = 0;  // sum e_s, sum e_t, sum e_t (b - a) over a stretch
};

// Maxima of s[0:n) and t[0:n) in one pass. Comparisons drop NaN (caught later by the sums).
template <class S, class T = compute_t<S>>
void row_max2(const S* xs, const S* xt, int64_t n, T& max_s, T& max_t) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V s0 = vset<T>(-kInf<T>), s1 = s0, t0 = s0, t1 = s0;
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    s0 = vmax<T>(s0, vload_as(xs + j));
    t0 = vmax<T>(t0, vload_as(xt + j));
    s1 = vmax<T>(s1, vload_as(xs + j + W));
    t1 = vmax<T>(t1, vload_as(xt + j + W));
  }
  for (; j < n; j += W) {
    const bool full = j + W <= n;
    s0 = vmax<T>(s0, full ? vload_as(xs + j) : load_partial(xs + j, n - j, -kInf<T>));
    t0 = vmax<T>(t0, full ? vload_as(xt + j) : load_partial(xt + j, n - j, -kInf<T>));
  }
  max_s = hmax<T>(vmax<T>(s0, s1));
  max_t = hmax<T>(vmax<T>(t0, t1));
}

// Sums over [begin, end) of e_s = exp(a'_j), e_t = exp(b'_j) and e_t (b'_j - a'_j), with
// a'_j = (s_j - rs) inv, b'_j = (t_j - rt) inv, for references rs >= max_j s_j, rt >= max_j t_j
// (unscaled logits). The difference comes first: a logit equal to its reference gives exactly
// 0 however large it is (s_j inv - rs inv would leave the rounding error of the product, ~1e13
// for logits ~1e30: found by the fuzzer, tests/fuzz). kKeep: also store e_s,
// e_t at es[j], et[j].
template <class S, bool kKeep, class T = compute_t<S>>
KlSums kl_sums(const S* xs, const S* xt, int64_t begin, int64_t end, T rs, T rt, T inv, T* es,
               T* et) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  constexpr int kChunk = 8;  // vectors per chunk: two partials of 4 terms, then one flush
  Acc<T> acc_s, acc_t, acc_d;
  const V vrs = vset<T>(rs), vrt = vset<T>(rt), vinv = vset<T>(inv), zero = vset<T>(0);
  auto step = [&](V s, V t, int64_t j, int64_t n, V& ps, V& pt, V& pd) {
    const V ds = s - vrs, dt = t - vrt, as = ds * vinv, bt = dt * vinv;
    const V e_s = vexp_capped(as), e_t = vexp_capped(bt);
    ps += e_s;
    pt += e_t;
    // q_j = 0 terms count 0, even where b'_j - a'_j is -inf or NaN (t_j = -inf, tail padding)
    // (b'_j - a'_j as (dt - ds) inv, with inv applied once to the block's sum: 0 for equal
    // rows whatever the compiler fuses; bt - as could become fma(dt, inv, -as), which keeps
    // the rounding error of as)
    pd += vselect(e_t == zero, zero, e_t * (dt - ds));
    if constexpr (kKeep) {
      if (n == W) {
        vstore(es + j, e_s);
        vstore(et + j, e_t);
      } else {
        store_partial(es + j, n, e_s);
        store_partial(et + j, n, e_t);
      }
    }
  };
  int64_t j = begin;
  for (; j + kChunk * W <= end; j += kChunk * W) {
    // Pull the next block in while this one is summed: memory traffic overlaps the exp
    // arithmetic (prefetches past the end of an array cannot fault).
    for (int k = 0; k < kChunk * W * int(sizeof(S)); k += 64) {
      __builtin_prefetch(reinterpret_cast<const char*>(xs + j + kBlock<T>) + k, 0, 3);
      __builtin_prefetch(reinterpret_cast<const char*>(xt + j + kBlock<T>) + k, 0, 3);
    }
    V ps0 = zero, ps1 = zero, pt0 = zero, pt1 = zero, pd0 = zero, pd1 = zero;
    for (int k = 0; k < kChunk; k += 2) {
      const int64_t j0 = j + k * W, j1 = j0 + W;
      step(vload_as(xs + j0), vload_as(xt + j0), j0, W, ps0, pt0, pd0);
      step(vload_as(xs + j1), vload_as(xt + j1), j1, W, ps1, pt1, pd1);
    }
    acc_s.add_partial(ps0 + ps1);
    acc_t.add_partial(pt0 + pt1);
    acc_d.add_partial(pd0 + pd1);
  }
  for (; j < end; j += W) {  // the last < kChunk vectors, one at a time
    V ps = zero, pt = zero, pd = zero;
    if (j + W <= end)
      step(vload_as(xs + j), vload_as(xt + j), j, W, ps, pt, pd);
    else  // padding -inf: e = 0 and a 0 term in D
      step(load_partial(xs + j, end - j, -kInf<T>), load_partial(xt + j, end - j, -kInf<T>), j,
           end - j, ps, pt, pd);
    acc_s.add_partial(ps);
    acc_t.add_partial(pt);
    acc_d.add_partial(pd);
  }
  return {acc_s.total(), acc_t.total(), acc_d.total() * double(inv)};
}

// Row statistics: S_s relative to ms, S_t and D relative to mt (the maxima so far of the
// unscaled logits; -inf: no finite logit yet, the sums are 0).
struct KlStats {
  double ms = -kInf<double>, ss = 0;
  double mt = -kInf<double>, st = 0, d = 0;
  bool nan = false;
};

// exp((from - to) inv), to >= from (unscaled logits); 0 for from = -inf (a stretch without
// finite logits).
inline double rescale(double from, double to, double inv) {
  return from == -kInf<double> ? 0.0 : std::exp((from - to) * inv);
}
// v f, with f = 0 giving 0 even for v = +inf: teacher mass that underflows counts as q = 0.
inline double scaled(double v, double f) { return f == 0 ? 0.0 : v * f; }

// d + shift w, where w = 0 adds nothing and an infinite d (teacher mass where the student is
// -inf: the loss is +inf) stays as it is (the shift may be infinite there).
inline double shifted(double d, double shift, double w) {
  return (w == 0 || std::isinf(d)) ? d : d + shift * w;
}

// Merge the sums of a stretch into the statistics; the references become the larger ones.
// rs, rt: the (unscaled) references the stretch's exps were taken against (ref_s, ref_t: the
// same, or -inf where that row has no finite logit in the stretch). D is kept relative to the
// running references: D = sum_j e_t,j ((b_j - mt inv) - (a_j - ms inv)), so the loss needs no
// (M_s - M_t) term and huge logits (|t| ~ 1e17 and more) lose nothing to cancellation: only
// differences of logits are ever scaled (found by the fuzzer, tests/fuzz).
inline void kl_merge(KlStats& st, double rs, double rt, double ref_s, double ref_t, double inv,
                     const KlSums& b) {
  const double ms_old = st.ms, mt_old = st.mt;
  const double ms = ms_old > ref_s ? ms_old : ref_s;
  const double mt = mt_old > ref_t ? mt_old : ref_t;
  if (ms != -kInf<double>) {
    // (explicit fma, as for S_t below: a contracted a * b + c * d may fuse either product, and
    // differently in the two statements, so equal rows would give S_s != S_t)
    st.ss = std::fma(st.ss, rescale(ms_old, ms, inv), b.s * rescale(ref_s, ms, inv));
    st.ms = ms;
  }
  if (mt != -kInf<double>) {
    const double f_old = rescale(mt_old, mt, inv), f_new = rescale(ref_t, mt, inv);
    // (differences first, scaled once: equal rows give exactly 0, and a * inv - b * inv could be
    // fused into fma(a, inv, -(b * inv)), which keeps the rounding error of b * inv)
    const double d_old = shifted(st.d, ((mt_old - mt) - (ms_old - ms)) * inv, st.st);
    const double d_new = shifted(b.d, ((rt - mt) - (rs - ms)) * inv, b.t);
    st.st = std::fma(st.st, f_old, b.t * f_new);
    st.d = scaled(d_old, f_old) + scaled(d_new, f_new);
    st.mt = mt;
  }
}

// Kept exp values of both rows, and per block (segment) the references they are relative to.
struct KlSeg {
  int64_t end;
  double rs, rt;  // unscaled; -inf: the segment's kept values are all 0
};
template <class T>
struct KlKept {
  T* es = nullptr;  // nullptr: loss only, nothing kept
  T* et = nullptr;
  KlSeg* seg = nullptr;
  int64_t n_seg = 0;
};

template <class T>
KlKept<T> kl_kept(int64_t n, bool keep) {
  KlKept<T> k;
  if (!keep) return k;
  k.es = scratch_row<T>(kSlotES, n);
  k.et = scratch_row<T>(kSlotET, n);
  k.seg = static_cast<KlSeg*>(thread_scratch(kSlotSeg, size_t(n / kBlock<T> + 2) * sizeof(KlSeg)));
  return k;
}

template <class S, class T = compute_t<S>>
KlStats kl_row_stats(const S* xs, const S* xt, int64_t n, T inv, KlKept<T>& kept) {
  KlStats st;
  for (int64_t b = 0; b < n; b += kBlock<T>) {
    const int64_t e = b + kBlock<T> < n ? b + kBlock<T> : n;
    T max_s, max_t;
    row_max2(xs + b, xt + b, e - b, max_s, max_t);
    if (max_s == kInf<T> || max_t == kInf<T>) {  // +inf: a NaN row
      st.nan = true;
      return st;
    }
    // References: the block maxima; a block without finite logits sums against 0 (its exps
    // are all 0) and is recorded as -inf.
    const T rs = max_s == -kInf<T> ? T(0) : max_s, rt = max_t == -kInf<T> ? T(0) : max_t;
    const KlSums sums = kept.es
                            ? kl_sums<S, true>(xs, xt, b, e, rs, rt, inv, kept.es, kept.et)
                            : kl_sums<S, false>(xs, xt, b, e, rs, rt, inv, static_cast<T*>(nullptr),
                                                static_cast<T*>(nullptr));
    if (std::isnan(sums.s) || std::isnan(sums.t) || std::isnan(sums.d)) {  // a NaN logit
      st.nan = true;
      return st;
    }
    const double ref_s = max_s == -kInf<T> ? -kInf<double> : double(rs);
    const double ref_t = max_t == -kInf<T> ? -kInf<double> : double(rt);
    if (kept.es) kept.seg[kept.n_seg++] = {e, ref_s, ref_t};
    kl_merge(st, double(rs), double(rt), ref_s, ref_t, double(inv), sums);
  }
  return st;
}

// g_j = gs (p_j - q_j) from the kept values: p_j = e_s,j exp(rs_k - ms) / S_s in segment k,
// likewise q_j. Ordinary or (stream, float/double output) non-temporal stores.
template <class S, class T = compute_t<S>>
void kl_grad_row(const KlKept<T>& kept, const KlStats& st, double inv, double gs, S* g,
                 bool stream) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  int64_t begin = 0;
  for (int64_t k = 0; k < kept.n_seg; ++k) {
    const int64_t end = kept.seg[k].end;
    const V cs = vset<T>(T(gs * rescale(kept.seg[k].rs, st.ms, inv) / st.ss));
    const V ct = vset<T>(T(gs * rescale(kept.seg[k].rt, st.mt, inv) / st.st));
    auto value = [&](V es, V et) { return cs * es - ct * et; };
    auto partial = [&](int64_t j, int64_t cnt) {
      store_partial(
          g + j, cnt,
          value(load_partial(kept.es + j, cnt, T(0)), load_partial(kept.et + j, cnt, T(0))));
    };
    int64_t j = begin;
    if constexpr (std::is_same_v<S, T>) {
      if (stream && reinterpret_cast<uintptr_t>(g) % sizeof(T) == 0) {
        // Up to the first vector-aligned address of g with ordinary stores, then streaming.
        int64_t head = int64_t((sizeof(V) - reinterpret_cast<uintptr_t>(g + j) % sizeof(V)) %
                               sizeof(V) / sizeof(T));
        head = head < end - j ? head : end - j;
        if (head) partial(j, head);
        for (j += head; j + W <= end; j += W)
          vstream(g + j, value(vload(kept.es + j), vload(kept.et + j)));
      }
    }
    for (; j + W <= end; j += W) vstore_as(g + j, value(vload(kept.es + j), vload(kept.et + j)));
    if (j < end) partial(j, end - j);
    begin = end;
  }
}

// kl_div_with_logits for rows of at most kKlNarrowMax classes, with the rows in SIMD lanes
// (lanes.hpp): the formulas above per lane, against the rows' own maxima (one block), so
// a'_j = (s_j - M_s) / tau and b'_j = (t_j - M_t) / tau, and the gradient
// tau (e_s / S_s - e_t / S_t) from the kept exps.
constexpr int64_t kKlNarrowMax = 100;  // (the row kernel is faster from about 128)

template <class S>
void kl_div_with_logits_narrow(const KlLogitsArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>;
  const int64_t n = a.ls.n1;
  const double tau = a.temperature;
  const V inv = vset<T>(T(1.0 / tau));
  const bool grad = a.grad != nullptr;
  parallel_row_blocks(a.ls.rows(), 2 * n * kExpWork, W, [&](int64_t r0, int nb) {
    alignas(64) T sb[kKlNarrowMax * W], tb[kKlNarrowMax * W];
    int64_t off[W] = {};
    // The rows one block ahead (four for blocks up to 1 KB), where the cross-entropy lane
    // kernel's go two. AVX-512, two threads, 50M float32 logits, against none: 0.54-0.61 the
    // time at 17 and 32 classes, 0.76 at 64, 0.91 at 100 (with the gradient 0.55-0.98). Two
    // blocks ahead (three arrays' blocks and the two tiles crowd L1) took 1.04-1.26 the time
    // of one from 24 to 100 classes, into L2 (prefetcht1) 1.02-1.38.
    prefetch_block(a.student, a.ls, r0, W, 1);
    prefetch_block(a.teacher, a.lt, r0, W, 1);
    if (grad) prefetch_block(a.grad, a.lg, r0, W, 1);  // (its lines are read first)
    load_block(a.student, a.ls, r0, nb, sb, off);
    load_block(a.teacher, a.lt, r0, nb, tb, off);
    const LaneMax<T> ms = lane_max(sb, n, false), mt = lane_max(tb, n, false);
    LaneSum<T> sum_s, sum_t, sum_d;
    for (int64_t j = 0; j < n; ++j) {
      // the differences first: a logit equal to its row maximum gives exactly 0
      const V as = (vload(sb + j * W) - ms.m) * inv, bt = (vload(tb + j * W) - mt.m) * inv;
      const V es = vexp_capped(as), et = vexp_capped(bt);
      sum_s.add(es);
      sum_t.add(et);
      sum_d.add(vselect(et == V{}, V{}, et * (bt - as)));  // q_j = 0: 0, even at -inf
      if (grad) {
        vstore(sb + j * W, es);
        vstore(tb + j * W, et);
      }
    }
    alignas(64) double ss[W], st[W], sd[W], m_s[W], m_t[W], nan_s[W], nan_t[W], out[W];
    sum_s.store(ss);
    sum_t.store(st);
    sum_d.store(sd);
    to_f64_lanes(ms.m, m_s);
    to_f64_lanes(mt.m, m_t);
    to_f64_lanes(ms.nan_seen, nan_s);
    to_f64_lanes(mt.nan_seen, nan_t);
    for (int k = 0; k < W; k += WD) {
      const f64v s_s = vload(ss + k), s_t = vload(st + k), a_s = vload(m_s + k),
                 a_t = vload(m_t + k), n_s = vload(nan_s + k), n_t = vload(nan_t + k);
      // NaN or +inf anywhere, or a row without any finite logit: NaN
      const auto bad = (n_s != n_s) | (n_t != n_t) | (a_s - a_s != a_s - a_s) |
                       (a_t - a_t != a_t - a_t);
      const f64v loss = (tau * tau) * (vload(sd + k) / s_t + vlog(s_s / s_t));
      vstore(out + k, vselect(bad, f64v{} + kNaN, loss));
    }
    for (int b = 0; b < nb; ++b) a.loss[r0 + b] = out[b];
    if (!grad) return;
    alignas(64) T fs[W], ft[W];
    bool fill_row[W];
    T fill[W];
    const double gt = a.grad_scale * tau;
    for (int b = 0; b < W; ++b) {
      fs[b] = T(gt / ss[b]);
      ft[b] = T(gt / st[b]);
      fill_row[b] = out[b] != out[b] && b < nb;
      fill[b] = T(kNaN);
    }
    const V vs = vload(fs), vt = vload(ft);
    for (int64_t j = 0; j < n; ++j)
      vstore(sb + j * W, vs * vload(sb + j * W) - vt * vload(tb + j * W));
    row_offsets(a.lg, r0, nb, off);
    scatter_lanes(a.grad, a.lg, off, nb, sb, fill_row, fill);
  });
}

// kl_div_with_logits_small takes the divisions and logs of the loss for a group of
// kKlGroupBlocks blocks after them (loop fission, as ce_index_small: the same operations, the
// same bits): each block leaves per row its three float64 sums, the teacher's NaN for a bad
// row, G values apart in `defer`; this takes the loss of the group's n rows from them. The
// loss alone and with the gradient (which needs no log; float32, one thread in cache, with the
// gradient against the logs in the block: 0.90-0.97 the time from 2 to 16 classes on AVX-512,
// 0.93-0.98 on AVX2). (kl_div_with_logits_narrow keeps the logs in the block: deferring them took, float32, one
// thread in cache, 0.99-1.03 the time of the loss from 17 to 100 classes and 1.01-1.05 with
// the gradient on AVX-512, 0.92-0.99 and 0.98-1.00 on AVX2.)
constexpr int64_t kKlGroupBlocks = 8;

template <int64_t G>
void finish_kl_group(const double* defer, double* loss, int64_t r0, int64_t n, double tau) {
  store_group_losses<G>(loss, r0, n, [&](int64_t i) {
    const f64v s_t = vload(defer + 2 * G + i);  // (NaN for a bad row)
    const f64v l = (tau * tau) * (vload(defer + i) / s_t + vlog(vload(defer + G + i) / s_t));
    return vselect(s_t != s_t, f64v{} + kNaN, l);
  });
}

// kl_div_with_logits of 2 to 16 classes, any layout and input type: kl_div_with_logits_narrow's
// arithmetic, operation for operation (so the same bits), with the block held in registers
// from load to store (as ce_index_small, softmax_narrow.hpp) instead of passing through the
// lane kernels' buffers.
template <class S, int N>
void kl_div_with_logits_small(const KlLogitsArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>, K = W / WD;
  const double tau = a.temperature;
  const V inv = vset<T>(T(1.0 / tau));
  const bool grad = a.grad != nullptr;
  // (the loss taken after a group of blocks: finish_kl_group)
  constexpr int64_t kGroupRows = kKlGroupBlocks * W;
  auto block = [&](int64_t r0, int nb, double* defer) __attribute__((always_inline)) {
    prefetch_small_block<S, N>(a.student, a.ls, r0);
    prefetch_small_block<S, N>(a.teacher, a.lt, r0);
    if (grad) prefetch_small_block<S, N>(a.grad, a.lg, r0);  // (its lines are read first)
    V xs[N], xt[N];
    load_small_block<S, N>(a.student, a.ls, r0, nb, xs);
    load_small_block<S, N>(a.teacher, a.lt, r0, nb, xt);
    // lane_max of each: the maximum and a NaN flag
    const V neg_inf = vset<T>(-std::numeric_limits<T>::infinity());
    V ms = neg_inf, mt = neg_inf, nan_s = vset<T>(0), nan_t = vset<T>(0);
    for (int j = 0; j < N; ++j) {
      nan_s = vselect(xs[j] != xs[j], xs[j], nan_s);
      ms = vselect(xs[j] > ms, xs[j], ms);
      nan_t = vselect(xt[j] != xt[j], xt[j], nan_t);
      mt = vselect(xt[j] > mt, xt[j], mt);
    }
    LaneSum<T> sum_s, sum_t, sum_d;
    V es[N], et[N];
    for (int j = 0; j < N; ++j) {
      const V as = (xs[j] - ms) * inv, bt = (xt[j] - mt) * inv;
      es[j] = vexp_capped(as), et[j] = vexp_capped(bt);
      sum_s.add(es[j]);
      sum_t.add(et[j]);
      sum_d.add(vselect(et[j] == V{}, V{}, et[j] * (bt - as)));  // q_j = 0: 0, even at -inf
    }
    f64v m_s[K], m_t[K], n_s[K], n_t[K], out[K];
    lanes_f64<T>(ms, m_s), lanes_f64<T>(mt, m_t), lanes_f64<T>(nan_s, n_s), lanes_f64<T>(nan_t, n_t);
    for (int k = 0; k < K; ++k) {
      const f64v s_s = sum_s.v[k], s_t = sum_t.v[k], a_s = m_s[k], a_t = m_t[k];
      // NaN or +inf anywhere, or a row without any finite logit: NaN
      const auto bad = (n_s[k] != n_s[k]) | (n_t[k] != n_t[k]) | (a_s - a_s != a_s - a_s) |
                       (a_t - a_t != a_t - a_t);
      double* d = defer + k * WD;
      vstore(d, sum_d.v[k]);
      vstore(d + kGroupRows, s_s);
      vstore(d + 2 * kGroupRows, vselect(bad, f64v{} + kNaN, s_t));
      out[k] = vselect(bad, f64v{} + kNaN, f64v{});  // (NaN: the row's gradient is NaN)
    }
    if (!grad) return;
    const double gt = a.grad_scale * tau;
    f64v fs64[K], ft64[K];
    for (int k = 0; k < K; ++k) fs64[k] = gt / sum_s.v[k], ft64[k] = gt / sum_t.v[k];
    V vs, vt, bad_row;
    if constexpr (std::is_same_v<T, float>) {
      vs = narrow(fs64[0], fs64[1]), vt = narrow(ft64[0], ft64[1]);
      bad_row = narrow(out[0], out[1]);
    } else {
      vs = fs64[0], vt = ft64[0], bad_row = out[0];
    }
    const auto fill = bad_row != bad_row;  // (NaN rows: NaN gradients)
    V g[N];
    for (int j = 0; j < N; ++j) g[j] = vselect(fill, vset<T>(T(kNaN)), vs * es[j] - vt * et[j]);
    store_small_block<S, N>(a.grad, a.lg, r0, nb, g);
  };
  parallel_row_groups(a.ls.rows(), 2 * N * kExpWork, W, kGroupRows, [&](int64_t g0, int64_t g1) {
    alignas(64) double defer[3 * kGroupRows];
    for (int64_t r = g0; r < g1; r += W) block(r, int(g1 - r < W ? g1 - r : W), defer + (r - g0));
    finish_kl_group<kGroupRows>(defer, a.loss, g0, g1 - g0, tau);
  });
}

template <class S>
void kl_div_with_logits_impl(const KlLogitsArgs<S>& a) {
  if (a.ls.n1 >= 2 && a.ls.n1 <= kSmallMaxClasses)
    return with_class_count_up_to_16<2>(
        a.ls.n1, [&](auto kN) { kl_div_with_logits_small<S, decltype(kN)::value>(a); });
  if (a.ls.n1 <= kKlNarrowMax) return kl_div_with_logits_narrow(a);
  using T = compute_t<S>;
  const int64_t n = a.ls.n1;
  const double tau = a.temperature;
  const T inv = T(1.0 / tau);
  const void* g = a.grad;
  // In place (over the student or teacher) the lines are cached already: ordinary stores then.
  const bool stream =
      a.ls.rows() * n * int64_t(sizeof(S)) >= kStreamBytes && g != a.student && g != a.teacher;
  parallel_rows<S>(a.ls.rows(), 2 * n * kExpWork, [&](int64_t r) {
    const S* xs = read_row(a.student, a.ls, r, kSlotA);
    const S* xt = read_row(a.teacher, a.lt, r, kSlotB);
    KlKept<T> kept = kl_kept<T>(n, a.grad != nullptr);
    const KlStats st = kl_row_stats<S>(xs, xt, n, inv, kept);
    // NaN or +inf anywhere, or a row without any finite logit: NaN (loss and gradient)
    if (st.nan || st.ms == -kInf<double> || st.mt == -kInf<double>) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    a.loss[r] = tau * tau * (st.d / st.st + std::log(st.ss / st.st));
    if (!a.grad) return;
    S* gr = write_row(a.grad, a.lg, r, kSlotG);
    kl_grad_row<S>(kept, st, double(inv), a.grad_scale * tau, gr, stream);
    scatter_row(a.grad, a.lg, r, gr);
  });
}

// ---------------------------------------------------------------------------------------------
// gaussian_kl. Per row, mu and lv = logvar:
//   loss = -0.5 sum_j (1 + lv_j - mu_j^2 - exp(lv_j)) = 0.5 sum_j (mu_j^2 + g(lv_j)),
//   g(x) = exp(x) - 1 - x >= 0 (no cancellation near x = 0, see below);
//   d loss / d mu_j = mu_j,  d loss / d lv_j = 0.5 expm1(lv_j).
// Computed in float64 lanes whatever the input (a VAE latent is small; accuracy is free).
// ---------------------------------------------------------------------------------------------
// (expm1_minus_r: simd_math.hpp)

// em1 = expm1(x) and g = expm1(x) - x, each to a few ulp. x = n ln2 + r, |r| <= ln2/2, h = 2^(n-1):
//   expm1(x) = 2^n (1 + expm1(r)) - 1 = 2 (h expm1(r) + (h - 1/2))
//   g        = 2 (h expm1(r) + ((h - 1/2) - x/2))      (n = 0: g = expm1(r) - r directly)
// (h - 1/2 and (h - 1/2) - x/2 are exact or nearly so; the sum cancels by at most a factor 4.)
// x > 709.78: em1 = +inf, g = +inf - x (+inf, or NaN for x = +inf, as the float64 formula);
// x < -40: em1 = -1, g = -1 - x. NaN propagates.
inline void vexpm1_parts(f64v x, f64v& em1, f64v& g) {
  const f64v hi = vset<double>(709.782712893383973), lo = vset<double>(-40.0);
  f64v xc = vselect(x > hi, hi, x);
  xc = vselect(xc < lo, lo, xc);
  const f64v shifter = vset<double>(6755399441055744.0);  // 1.5 * 2^52: round to nearest
  const f64v t = xc * vset<double>(1.4426950408889634074) + shifter;
  const f64v n = t - shifter;
  f64v r = xc - n * vset<double>(6.93147180369123816490e-01);
  r = r - n * vset<double>(1.90821492927058770002e-10);
  const f64v q = expm1_minus_r(r), er = q + r;
  const i64v bits = (i64v(t) - i64v(shifter) + 1022) << 52;  // 2^(n-1), n in [-58, 1024]
  f64v h;
  std::memcpy(&h, &bits, sizeof(h));
  const f64v half = vset<double>(0.5), hm = h - half;
  em1 = (h * er + hm) * vset<double>(2.0);
  g = vselect(n == f64v{}, q, (h * er + (hm - half * x)) * vset<double>(2.0));
  const f64v inf = vset<double>(kInf<double>), minus_one = vset<double>(-1.0);
  em1 = vselect(x > hi, inf, em1);
  g = vselect(x > hi, inf - x, g);
  em1 = vselect(x < lo, minus_one, em1);
  g = vselect(x < lo, minus_one - x, g);
}

// Loss terms and gradients of one float64 vector; hg = 0.5 grad_scale.
inline void gaussian_terms(f64v mu, f64v lv, f64v gs, f64v hg, f64v& term, f64v& dmu, f64v& dlv) {
  f64v em1, g;
  vexpm1_parts(lv, em1, g);
  term = vset<double>(0.5) * (mu * mu + g);
  dmu = gs * mu;
  dlv = hg * em1;
}

template <class S>
void gaussian_kl_impl(const GaussianKlArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t n = a.lm.n1;
  const f64v gs = vset<double>(a.grad_scale), hg = vset<double>(0.5 * a.grad_scale);
  parallel_rows<S>(a.lm.rows(), 2 * n * kExpWork, [&](int64_t r) {
    const S* mu = read_row(a.mu, a.lm, r, kSlotA);
    const S* lv = read_row(a.logvar, a.lv, r, kSlotB);
    S* gm = a.grad_mu ? write_row(a.grad_mu, a.lgm, r, kSlotG) : nullptr;
    S* gv = a.grad_logvar ? write_row(a.grad_logvar, a.lgv, r, kSlotG2) : nullptr;
    f64v acc{};  // terms are >= 0: plain float64 lane sums
    for (int64_t j = 0; j < n; j += W) {
      const int64_t cnt = n - j < W ? n - j : W;
      // (tail padding mu = lv = 0 gives a 0 term)
      const V m = cnt == W ? vload_as(mu + j) : load_partial(mu + j, cnt, T(0));
      const V l = cnt == W ? vload_as(lv + j) : load_partial(lv + j, cnt, T(0));
      V dm, dl;
      if constexpr (std::is_same_v<T, float>) {
        f64v m0, m1, l0, l1, t0, t1, dm0, dm1, dl0, dl1;
        widen(m, m0, m1);
        widen(l, l0, l1);
        gaussian_terms(m0, l0, gs, hg, t0, dm0, dl0);
        gaussian_terms(m1, l1, gs, hg, t1, dm1, dl1);
        acc += t0 + t1;
        if (gm) {
          dm = narrow(dm0, dm1);
          dl = narrow(dl0, dl1);
        }
      } else {
        f64v t;
        gaussian_terms(m, l, gs, hg, t, dm, dl);
        acc += t;
      }
      if (!gm) continue;
      if (cnt == W) {
        vstore_as(gm + j, dm);
        vstore_as(gv + j, dl);
      } else {
        store_partial(gm + j, cnt, dm);
        store_partial(gv + j, cnt, dl);
      }
    }
    a.loss[r] = hsum(acc);
    if (gm) {
      scatter_row(a.grad_mu, a.lgm, r, gm);
      scatter_row(a.grad_logvar, a.lgv, r, gv, kSlotG2);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// multi_margin_loss (torch). Per row x with target t, weight w_t (1 without weights), C classes:
//   z_j = (margin - x_t) + x_j  (torch's order of operations), h_j = max(0, z_j) for j != t
//   loss = w_t / C sum_{j != t} h_j^p
//   d loss / d x_j = w_t / C * (p = 1: [z_j > 0];  p = 2: 2 h_j),   j != t
//   d loss / d x_t = -sum_{j != t} d loss / d x_j
// z > 0 strictly (gradient 0 at the kink), and a NaN z counts 0, as in torch.
// ---------------------------------------------------------------------------------------------
struct MarginSums {
  double hp = 0;  // sum h^p
  double dh = 0;  // sum dh^p/dh / p: p = 1, the count of z > 0; p = 2, sum h
};

// Sums over [begin, end) of the row, and (kGrad) g_j = k dh_j / dz at g[j]; vc = margin - x_t.
template <int kP, bool kGrad, class S, class T = compute_t<S>>
MarginSums margin_range(const S* x, int64_t begin, int64_t end, T c, T k, S* g) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  constexpr int kChunk = 8;  // float partials of at most 8 terms, then widened
  Acc<T> acc_hp, acc_dh;
  const V vc = vset<T>(c), zero = vset<T>(0), one = vset<T>(1);
  const V vk = vset<T>(kP == 1 ? k : T(2) * k);
  int64_t j = begin;
  while (j < end) {
    V php = zero, pdh = zero;
    for (int u = 0; u < kChunk && j < end; ++u, j += W) {
      const int64_t cnt = end - j < W ? end - j : W;
      // (tail padding -inf: z = -inf or NaN, which count 0)
      const V z = vc + (cnt == W ? vload_as(x + j) : load_partial(x + j, cnt, -kInf<T>));
      const auto pos = z > zero;
      const V h = vselect(pos, z, zero);
      V gv;
      if constexpr (kP == 1) {
        php += h;
        pdh += vselect(pos, one, zero);
        gv = vselect(pos, vk, zero);
      } else {
        php += h * h;
        pdh += h;
        gv = vk * h;
      }
      if constexpr (kGrad) {
        if (cnt == W)
          vstore_as(g + j, gv);
        else
          store_partial(g + j, cnt, gv);
      }
    }
    acc_hp.add_partial(php);
    acc_dh.add_partial(pdh);
  }
  return {acc_hp.total(), acc_dh.total()};
}

// The same for rows of at most kMarginNarrowMax classes, with the rows in SIMD lanes
// (lanes.hpp): the target's logit is picked per lane, z_j = (margin - x_t) + x_j over the
// block's transposed classes, and the target's own gradient entry set once the sums are known.
constexpr int64_t kMarginNarrowMax = 64;  // (the row kernel's gradient is faster from about 100)

// A block's per-lane constants (rows [r0, r0 + nb) of n classes; padding lanes take class 0):
// the target as a compute-type lane (-1 for a bad one), its coefficient w_t / n (0 there), the
// gradient's factor grad_scale coef p, and whether the row is bad.
template <int kP, class S, class T = compute_t<S>>
__attribute__((always_inline)) inline void margin_lanes(const MultiMarginArgs<S>& a, int64_t r0,
                                                        int nb, int64_t n, T* tgt, T* kv,
                                                        double* coef, bool* bad) {
  for (int b = 0; b < vec_width<T>; ++b) {
    const int64_t t = b < nb ? a.target[r0 + b] : 0;
    bad[b] = t < 0 || t >= n;  // rejected before the call; a NaN row if one slips through
    tgt[b] = bad[b] ? T(-1) : T(t);
    coef[b] = bad[b] ? 0.0 : (a.weight ? double(a.weight[t]) : 1.0) / double(n);
    kv[b] = T(a.grad_scale * coef[b] * (kP == 1 ? 1.0 : 2.0));
  }
}

// Class j's term of a block: z = c + x_j, its hinge (power p) added to sum_hp and its
// derivative's count or size to sum_dh; returns the class's gradient entry (target lanes
// fixed later).
template <int kP, class T>
__attribute__((always_inline)) inline vec_t<T> margin_term(vec_t<T> c, vec_t<T> xj, vec_t<T> tv,
                                                           T j, vec_t<T> k, LaneSum<T>& sum_hp,
                                                           LaneSum<T>& sum_dh) {
  using V = vec_t<T>;
  const V zero{}, z = c + xj;
  const auto pos = (z > zero) & (tv != vset<T>(j));  // (a NaN z counts 0)
  const V h = vselect(pos, z, zero);
  if constexpr (kP == 1) {
    sum_hp.add(h);
    sum_dh.add(vselect(pos, vset<T>(1), zero));
    return vselect(pos, k, zero);
  } else {
    sum_hp.add(h * h);
    sum_dh.add(h);
    return k * h;
  }
}

template <class S, int kP, bool kGrad>
void multi_margin_narrow(const MultiMarginArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t n = a.lx.n1;
  parallel_row_blocks(a.lx.rows(), n, W, [&](int64_t r0, int nb) {
    alignas(64) T xb[kMarginNarrowMax * W];
    int64_t off[W] = {};
    // (as kl_div_with_logits_narrow; AVX-512, two threads, 50M float32 logits, against none:
    // 0.60-0.78 the time from 17 to 64 classes, 1.00 at 100; with the gradient 0.64-0.99)
    prefetch_block(a.x, a.lx, r0, W);
    if (a.lx.n2 == 1) prefetch_bytes(a.target + r0 + 4 * W, W * int64_t(sizeof(int64_t)));
    if (kGrad) prefetch_block(a.grad, a.lg, r0, W);
    load_block(a.x, a.lx, r0, nb, xb, off);
    alignas(64) T tgt[W], kv[W];
    alignas(64) double coef[W];
    bool bad[W];
    margin_lanes<kP>(a, r0, nb, n, tgt, kv, coef, bad);
    const V tv = vload(tgt), k = vload(kv);
    V xt{};
    for (int64_t j = 0; j < n; ++j) xt = vselect(tv == vset<T>(T(j)), vload(xb + j * W), xt);
    const V c = vset<T>(T(a.margin)) - xt;
    LaneSum<T> sum_hp, sum_dh;
    for (int64_t j = 0; j < n; ++j) {
      const V gj = margin_term<kP>(c, vload(xb + j * W), tv, T(j), k, sum_hp, sum_dh);
      if constexpr (kGrad) vstore(xb + j * W, gj);
    }
    alignas(64) double hp[W], dh[W];
    sum_hp.store(hp);
    sum_dh.store(dh);
    for (int b = 0; b < nb; ++b) a.loss[r0 + b] = bad[b] ? kNaN : coef[b] * hp[b];
    if constexpr (kGrad) {
      alignas(64) T gt[W];
      T fill[W];
      for (int b = 0; b < W; ++b) {
        // d loss / d x_t = -sum_{j != t} d loss / d x_j
        gt[b] = T(-a.grad_scale * coef[b] * double(kP) * dh[b]);
        fill[b] = T(kNaN);
      }
      const V vgt = vload(gt);
      for (int64_t j = 0; j < n; ++j)
        vstore(xb + j * W, vselect(tv == vset<T>(T(j)), vgt, vload(xb + j * W)));
      row_offsets(a.lg, r0, nb, off);
      scatter_lanes(a.grad, a.lg, off, nb, xb, bad, fill);
    }
  });
}

// 2 to 16 classes: multi_margin_narrow's arithmetic, operation for operation (so the same
// bits), with the block held in registers from load to store (as ce_index_small) instead of
// passing through the lane kernels' buffer.
// (GCC 12 warns that coef64 / bad64 may be read uninitialised: they are set and read only
// when vec. Initialising them instead cost the SSE2 build 12% at 16 classes with the gradient.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <class S, int N, int kP, bool kGrad>
void multi_margin_small(const MultiMarginArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>, WD = vec_width<double>, K = W / WD;
  parallel_row_blocks(a.lx.rows(), N, W, [&](int64_t r0, int nb) {
    prefetch_small_block<S, N>(a.x, a.lx, r0);
    if (kGrad) prefetch_small_block<S, N>(a.grad, a.lg, r0);  // (its lines are read first)
    V x[N];
    load_small_block<S, N>(a.x, a.lx, r0, nb, x);
    // The per-lane constants of margin_lanes: for a full block without weights as vectors
    // (the same operations in float64 lanes, so the same values; lane by lane, their stores
    // and reloads as vectors stall: one thread, float32, in cache, see the changelog)
    const bool vec = nb == W && !a.weight;
    alignas(64) T tgt[W], kv[W];
    alignas(64) double coef[W];
    bool bad[W];
    f64v coef64[K], bad64[K];
    V tv, k;
    if (vec) {
      // (no index is ignored: -1 as ignore_index marks it bad, as every target outside [0, N))
      const TargetLanes<T> tl = target_lanes<T>(a.target + r0, N, -1);
      f64v kv64[K];
      for (int q = 0; q < K; ++q) {
        bad64[q] = tl.ign64[q] + tl.inv64[q];
        coef64[q] = vselect(bad64[q] != 0.0, f64v{}, f64v{} + 1.0 / double(N));
        kv64[q] = (a.grad_scale * coef64[q]) * (kP == 1 ? 1.0 : 2.0);
      }
      tv = tl.t;
      if constexpr (std::is_same_v<T, float>) k = narrow(kv64[0], kv64[1]);
      else k = kv64[0];
    } else {
      margin_lanes<kP>(a, r0, nb, N, tgt, kv, coef, bad);
      tv = vload(tgt), k = vload(kv);
    }
    V xt{};
    for (int j = 0; j < N; ++j) xt = vselect(tv == vset<T>(T(j)), x[j], xt);
    const V c = vset<T>(T(a.margin)) - xt;
    LaneSum<T> sum_hp, sum_dh;
    V g[N];
    for (int j = 0; j < N; ++j) g[j] = margin_term<kP>(c, x[j], tv, T(j), k, sum_hp, sum_dh);
    alignas(64) double hp[W], dh[W];
    if (vec) {
      for (int q = 0; q < K; ++q)
        vstore(a.loss + r0 + q * WD,
               vselect(bad64[q] != 0.0, f64v{} + kNaN, coef64[q] * sum_hp.v[q]));
    } else {
      sum_hp.store(hp);
      for (int b = 0; b < nb; ++b) a.loss[r0 + b] = bad[b] ? kNaN : coef[b] * hp[b];
    }
    if constexpr (kGrad) {
      // d loss / d x_t = -sum_{j != t} d loss / d x_j
      V vgt;
      if (vec) {
        f64v gt64[K];
        for (int q = 0; q < K; ++q)
          gt64[q] = ((-a.grad_scale * coef64[q]) * double(kP)) * sum_dh.v[q];
        if constexpr (std::is_same_v<T, float>) vgt = narrow(gt64[0], gt64[1]);
        else vgt = gt64[0];
      } else {
        sum_dh.store(dh);
        alignas(64) T gt[W];
        for (int b = 0; b < W; ++b) gt[b] = T(-a.grad_scale * coef[b] * double(kP) * dh[b]);
        vgt = vload(gt);
      }
      const V nan = vset<T>(T(kNaN));
      const auto fill = tv < V{};  // (bad rows: NaN)
      for (int j = 0; j < N; ++j)
        g[j] = vselect(fill, nan, vselect(tv == vset<T>(T(j)), vgt, g[j]));
      store_small_block<S, N>(a.grad, a.lg, r0, nb, g);
    }
  });
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

template <class S, int kP, bool kGrad>
void multi_margin_rows(const MultiMarginArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t n = a.lx.n1;
  parallel_rows<S>(a.lx.rows(), n, [&](int64_t r) {
    const int64_t t = a.target[r];
    if (t < 0 || t >= n) {  // rejected before the call; a NaN row if one slips through
      a.loss[r] = kNaN;
      if (kGrad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    const S* x = read_row(a.x, a.lx, r, kSlotA);
    S* g = kGrad ? write_row(a.grad, a.lg, r, kSlotG) : nullptr;
    const double coef = (a.weight ? double(a.weight[t]) : 1.0) / double(n);
    const double k = a.grad_scale * coef;
    const T c = T(a.margin) - to_compute(x[t]);
    const MarginSums lo = margin_range<kP, kGrad>(x, 0, t, c, T(k), g);
    const MarginSums hi = margin_range<kP, kGrad>(x, t + 1, n, c, T(k), g);
    a.loss[r] = coef * (lo.hp + hi.hp);
    if constexpr (kGrad) {
      g[t] = from_compute<S>(T(-k * double(kP) * (lo.dh + hi.dh)));
      scatter_row(a.grad, a.lg, r, g);
    }
  });
}

template <class S>
void multi_margin_loss_impl(const MultiMarginArgs<S>& a) {
  if (a.lx.n1 >= 2 && a.lx.n1 <= kSmallMaxClasses) {  // a block in registers
    with_class_count_up_to_16<2>(a.lx.n1, [&](auto kN) {
      constexpr int N = decltype(kN)::value;
      if (a.p == 2)
        a.grad ? multi_margin_small<S, N, 2, true>(a) : multi_margin_small<S, N, 2, false>(a);
      else
        a.grad ? multi_margin_small<S, N, 1, true>(a) : multi_margin_small<S, N, 1, false>(a);
    });
    return;
  }
  if (a.lx.n1 <= kMarginNarrowMax) {  // rows in SIMD lanes
    if (a.p == 2)
      a.grad ? multi_margin_narrow<S, 2, true>(a) : multi_margin_narrow<S, 2, false>(a);
    else
      a.grad ? multi_margin_narrow<S, 1, true>(a) : multi_margin_narrow<S, 1, false>(a);
    return;
  }
  if (a.p == 2) {
    if (a.grad)
      multi_margin_rows<S, 2, true>(a);
    else
      multi_margin_rows<S, 2, false>(a);
  } else {
    if (a.grad)
      multi_margin_rows<S, 1, true>(a);
    else
      multi_margin_rows<S, 1, false>(a);
  }
}

}  // namespace

extern const DistributionTable distribution_table;
const DistributionTable distribution_table = {
#define FASTLOSS_DIST_ROW(sfx, S) \
  &kl_div_with_logits_impl<S>, &gaussian_kl_impl<S>, &multi_margin_loss_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DIST_ROW)
#undef FASTLOSS_DIST_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
