// Softmax family and softmax cross-entropy: logsumexp, softmax, log_softmax, cross_entropy,
// nll_loss.
//
// Every kernel works row by row (a row = the class axis of one sample). A row is read from
// main memory once; the passes after the first (max) re-read it from cache: a 50,257-class
// float32 row is 200 KB and stays in L2. Rows whose class stride is not 1 are first gathered
// into a per-thread buffer (a tile of neighbouring rows at a time, see read_row), so the
// arithmetic below always sees a contiguous row.
//
// Accumulation: sums of exp(x - max) and of coefficient-weighted terms are accumulated in
// float64 lanes (float32 exp values are widened before adding), so a float32 loss is rounded
// once, at the end, from a float64 result. Per-row scalars (max, log of the sum, the loss)
// are float64.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "kernels.hpp"
#include "lanes.hpp"
#include "rows.hpp"
#include "scale.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

template <class T> constexpr T kInf = std::numeric_limits<T>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Scratch slots (rows.hpp): read tiles of x and y, the write tile, exps and segment data of
// the gradient pass, the soft-capped row and its derivative.
enum Slot {
  kSlotX = 0, kSlotY = 1, kSlotG = kWriteSlot, kSlotE = 3, kSlotSegEnd = 4, kSlotSegRef = 5,
  kSlotCap = 6, kSlotCapD = 7
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

// Maximum of x[0:n). Comparisons drop NaN: a NaN is caught later, by the sums it turns to NaN
// (or, in a block whose maximum is not finite, by a scalar scan).
template <class S, class T = compute_t<S>> T row_max(const S* x, int64_t n) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V m0 = vset<T>(-kInf<T>), m1 = m0;
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    m0 = vmax<T>(m0, vload_as(x + j));
    m1 = vmax<T>(m1, vload_as(x + j + W));
  }
  for (; j < n; j += W)
    m0 = vmax<T>(m0, j + W <= n ? vload_as(x + j) : load_partial(x + j, n - j, -kInf<T>));
  return hmax<T>(vmax<T>(m0, m1));
}

template <class S> bool any_nan(const S* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    if (std::isnan(to_compute(x[j]))) return true;
  return false;
}

// Elements per block of the blockwise row statistics (8 KB of float, 16 KB of double: both sit
// in L1 with room to spare), and how far ahead the sum pass prefetches (one block).
template <class T> constexpr int64_t kBlock = 2048;
template <class T> constexpr int64_t kPrefetchAhead = kBlock<T>;
// How far above the reference a logit may be in a one-pass block sum (e^64 * 8 terms per float
// partial stays far below FLT_MAX).
template <class T> constexpr T kMaxShift = T(64);

struct RowSums {
  double exp = 0;  // sum_j exp(x_j - m)
  double cd = 0;   // sum_j c_j * (m - x_j), terms with c_j = 0 count as 0 (even if x_j = -inf)
  double c = 0;    // sum_j c_j
};

// Sums over x[begin:end) relative to a reference m (finite; exp(x_j - m) must not overflow, so
// x_j <= m + kMaxShift), and the maximum of the stretch (block_max).
// With kKeep, also stores e_j = exp(x_j - m) at e_row[j] (the gradient pass reuses them).
// skip: an index whose element is left out of the sums and the maximum (its e_j is stored as 0),
// or -1. Only the chunk or vector that holds it pays for the mask.
template <class S, Coef C, bool kKeep, class T = compute_t<S>>
RowSums row_sums(const S* x, int64_t begin, int64_t end, T m, const CoefRow<T, C>& coef,
                 T& block_max, T* e_row, int64_t skip = -1) {
  using V = vec_t<T>;
  using IV = typename Vec<T>::itype;
  constexpr int W = vec_width<T>;
  constexpr int kChunk = 8;  // vectors per chunk: two partials of 4 terms, then one flush
  Acc<T> se, scd, sc;
  const V vm = vset<T>(m), zero = vset<T>(0);
  V mx0 = vset<T>(-kInf<T>), mx1 = mx0;
  IV iota{};
  for (int i = 0; i < W; ++i) iota[i] = i;
  // The vector at j (n valid lanes, padded with -inf and c = 0); the skipped element, if it is
  // one of them (kMask), becomes -inf with c = 0.
  auto load = [&](int64_t j, int64_t n, V& xv, V& cv, auto kMask) {
    if (n == W) {
      xv = vload_as(x + j);
      cv = coef.load(j);
    } else {
      xv = load_partial(x + j, n, -kInf<T>);
      cv = coef.load_tail(j, n);
    }
    if constexpr (decltype(kMask)::value) {
      using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
      const auto hit = iota == IV{} + I(skip - j);
      xv = vselect(hit, vset<T>(-kInf<T>), xv);
      if constexpr (C != Coef::kNone) cv = vselect(hit, zero, cv);
    }
  };
  // One vector at j (n valid lanes): exp(x_j - m) into pe; c_j (m - x_j) and c_j into pcd, pc.
  auto step = [&](V xv, V cv, int64_t j, int64_t n, V& mx, V& pe, V& pcd, V& pc,
                  auto kStore) {
    mx = vmax<T>(mx, xv);
    const V e = vexp_capped(xv - vm);
    pe += e;
    if constexpr (kKeep && decltype(kStore)::value) {
      if (n == W)
        vstore(e_row + j, e);
      else
        store_partial(e_row + j, n, e);
    }
    if constexpr (C != Coef::kNone) {
      // c_j = 0 terms (zero target mass, and the padding of a row's tail) count 0 even when
      // x_j = -inf, where c_j * d would be 0 * inf = NaN.
      pcd += vselect(cv == zero, zero, cv * (vm - xv));
      pc += cv;
    }
    return e;
  };
  // bfloat16 sums without coefficients take a pair of vectors in one load (vload_bf16_pair:
  // even and odd elements; the order of the terms is free), kept exps stored back in order
  // (so the loss is the same bits with and without the gradient). AVX-512, one thread in
  // cache, the loss of 4,096 to 128,256 classes: 0.94-0.95 of the time of two widening loads.
  constexpr bool kPair = std::is_same_v<S, bfloat16> && C == Coef::kNone && kBf16PairLoad;
  auto chunk = [&](int64_t j, auto kMask) {
    V pe0 = zero, pe1 = zero, pcd0 = zero, pcd1 = zero, pc0 = zero, pc1 = zero;
    for (int k = 0; k < kChunk; k += 2) {
      const int64_t j0 = j + k * W, j1 = j0 + W;
      V x0, c0 = zero, x1, c1 = zero;
      if constexpr (kPair) {
        if constexpr (std::is_same_v<S, bfloat16>) vload_bf16_pair(x + j0, x0, x1);
        if constexpr (decltype(kMask)::value) {  // lane i: elements j0 + 2 i and j0 + 2 i + 1
          const auto pos = iota + iota - (IV{} + int32_t(skip - j0));
          x0 = vselect(pos == IV{}, vset<T>(-kInf<T>), x0);
          x1 = vselect(pos == IV{} - 1, vset<T>(-kInf<T>), x1);
        }
        const V e0 = step(x0, c0, j0, W, mx0, pe0, pcd0, pc0, std::false_type{});
        const V e1 = step(x1, c1, j1, W, mx1, pe1, pcd1, pc1, std::false_type{});
        if constexpr (kKeep) vstore_interleaved(e_row + j0, e0, e1);
      } else {
        load(j0, W, x0, c0, kMask);
        load(j1, W, x1, c1, kMask);
        step(x0, c0, j0, W, mx0, pe0, pcd0, pc0, std::true_type{});
        step(x1, c1, j1, W, mx1, pe1, pcd1, pc1, std::true_type{});
      }
    }
    se.add_partial(pe0 + pe1);
    if constexpr (C != Coef::kNone) {
      scd.add_partial(pcd0 + pcd1);
      sc.add_partial(pc0 + pc1);
    }
  };
  int64_t j = begin;
  for (; j + kChunk * W <= end; j += kChunk * W) {
    // Pull the next block in while this one is summed: memory traffic overlaps the exp
    // arithmetic. Prefetches past the end of the array cannot fault.
    for (int k = 0; k < kChunk * W * int(sizeof(S)); k += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(x + j + kPrefetchAhead<T>) + k, 0, 3);
    if (uint64_t(skip - j) < uint64_t(kChunk * W))
      chunk(j, std::true_type{});
    else
      chunk(j, std::false_type{});
  }
  if (j < end) {  // the last < kChunk vectors: two partials (at most 4 terms each), one flush
    // The same prefetch for the tail's lines, which were left to the hardware prefetchers:
    // float32 cross-entropy (the loss in spans, see row_stats_pending), 50M logits on two
    // threads, 480 and 500 classes: 1.06 to 1.2 the time of the row-by-row loop without this,
    // 0.75 to 0.81 with it.
    for (int64_t k = 0; k < (end - j) * int64_t(sizeof(S)); k += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(x + j + kPrefetchAhead<T>) + k, 0, 3);
    V pe0 = zero, pe1 = zero, pcd0 = zero, pcd1 = zero, pc0 = zero, pc1 = zero;
    for (; j < end; j += W) {
      const int64_t n = end - j < W ? end - j : W;
      V xv, cv;
      if (uint64_t(skip - j) < uint64_t(W))
        load(j, n, xv, cv, std::true_type{});
      else
        load(j, n, xv, cv, std::false_type{});
      step(xv, cv, j, n, mx0, pe0, pcd0, pc0, std::true_type{});
      std::swap(pe0, pe1);  // (the next vector goes to the other partial)
      if constexpr (C != Coef::kNone) {
        std::swap(pcd0, pcd1);
        std::swap(pc0, pc1);
      }
    }
    se.add_partial(pe0 + pe1);
    if constexpr (C != Coef::kNone) {
      scd.add_partial(pcd0 + pcd1);
      sc.add_partial(pc0 + pc1);
    }
  }
  block_max = hmax<T>(vmax<T>(mx0, mx1));
  RowSums s;
  s.exp = se.total();
  if constexpr (C != Coef::kNone) {
    s.cd = scd.total();
    s.c = sc.total();
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Blockwise row statistics. A row is cut into blocks that fit in L1; each block's maximum is
// found (reading it from memory) and its sums are taken relative to that maximum (re-reading it
// from L1), then blocks are merged. Memory reads and exp arithmetic thus alternate at L1 scale
// instead of a DRAM-bound max pass followed by a compute-bound sum pass.
// ---------------------------------------------------------------------------------------------
// Sums are relative to a reference m: the stretch's maximum, or a value at most kMaxShift below
// it (the running maximum of the blocks before); any such m gives the same final results.
struct RowStats {
  double m = -std::numeric_limits<double>::infinity();  // reference (-inf: empty or all -inf)
  double s = 0;    // sum_j exp(x_j - m)
  double cd = 0;   // sum_j c_j (m - x_j); +inf if some x_j = -inf has c_j != 0
  double c = 0;    // sum_j c_j
  bool nan = false;
};

// The same statistics relative to a larger reference m (m >= r.m, m finite).
inline RowStats rebase(const RowStats& r, double m) {
  RowStats o = r;
  o.m = m;
  if (r.m == m) return o;
  if (r.m == -std::numeric_limits<double>::infinity()) {
    o.s = 0;  // cd already counts c_j * (m - (-inf)) = inf
  } else {
    o.s = r.s * std::exp(r.m - m);
    if (r.c != 0) o.cd = r.cd + r.c * (m - r.m);  // adds non-negative amounts: no cancellation
  }
  return o;
}

// Combine the statistics of two disjoint stretches of one row (associative, commutative).
inline RowStats merge(const RowStats& a, const RowStats& b) {
  RowStats o;
  o.nan = a.nan || b.nan;
  o.m = a.m > b.m ? a.m : b.m;
  if (o.nan || !std::isfinite(o.m)) {  // the callers turn these into NaN / +-inf results
    o.c = a.c + b.c;
    o.cd = a.cd + b.cd;  // (all -inf so far: cd is inf exactly when some c_j != 0)
    return o;
  }
  const RowStats ra = rebase(a, o.m), rb = rebase(b, o.m);
  o.s = ra.s + rb.s;
  o.cd = ra.cd + rb.cd;
  o.c = ra.c + rb.c;
  return o;
}

// Where the exp values of a row are kept for the gradient pass: e[j] = exp(x_j - ref_k) for j in
// segment k (segments end at seg_end[k]; each block is summed against its own reference).
template <class T> struct ExpRow {
  T* e = nullptr;  // nullptr: loss only, nothing kept
  int64_t* seg_end = nullptr;
  double* seg_ref = nullptr;
  int64_t n_seg = 0;
  void add(int64_t end, double ref) {
    seg_end[n_seg] = end;
    seg_ref[n_seg++] = ref;
  }
};

template <class T> ExpRow<T> exp_row(int64_t V, bool keep) {
  ExpRow<T> er;
  if (!keep) return er;
  const int64_t max_seg = V / kBlock<T> + 3;
  er.e = static_cast<T*>(thread_scratch(kSlotE, size_t(V) * sizeof(T)));
  er.seg_end = static_cast<int64_t*>(thread_scratch(kSlotSegEnd, size_t(max_seg) * 8));
  er.seg_ref = static_cast<double*>(thread_scratch(kSlotSegRef, size_t(max_seg) * 8));
  return er;
}

// Statistics of x[begin:end) without x[skip] (skip: an index in the stretch, or -1), the careful
// way: the maximum first, then the sums relative to it.
template <class S, Coef C, class T = compute_t<S>>
RowStats block_stats(const S* x, int64_t begin, int64_t end, const CoefRow<T, C>& coef,
                     ExpRow<T>* er = nullptr, int64_t skip = -1) {
  RowStats st;
  const bool in = skip >= begin && skip < end;
  const T m = in ? std::max(row_max(x + begin, skip - begin),
                            row_max(x + skip + 1, end - skip - 1))
                 : row_max(x + begin, end - begin);
  st.m = m;
  if (!std::isfinite(m)) {  // rare: +inf, all -inf, or all NaN
    if (er && er->e) {  // all -inf: exp is 0 whatever the reference
      for (int64_t j = begin; j < end; ++j) er->e[j] = T(0);
      er->add(end, -std::numeric_limits<double>::infinity());  // scale exp(-inf - m) = 0
    }
    st.nan = in ? any_nan(x + begin, skip - begin) || any_nan(x + skip + 1, end - skip - 1)
                : any_nan(x + begin, end - begin);
    if (st.nan || m == kInf<T>) return st;
    if constexpr (C != Coef::kNone) {  // all -inf: no mass; any c_j != 0 makes cd infinite
      for (int64_t j = begin; j < end; ++j) {
        if (j == skip) continue;
        const double c = coef.at(j);
        st.c += c;
        if (c != 0) st.cd = std::numeric_limits<double>::infinity();
      }
    }
    return st;
  }
  T unused;
  const RowSums rs =
      er && er->e
          ? row_sums<S, C, true>(x, begin, end, m, coef, unused, er->e, skip)
          : row_sums<S, C, false>(x, begin, end, m, coef, unused, static_cast<T*>(nullptr), skip);
  if (er && er->e) er->add(end, double(m));
  st.s = rs.exp;
  st.cd = rs.cd;
  st.c = rs.c;
  st.nan = std::isnan(rs.exp);  // a NaN logit makes its exp, and so the sum, NaN
  return st;
}

// The sums of the block x[b:e) (without x[skip]) in one pass relative to m (finite): true, with
// its statistics relative to m in bs and its maximum in block_max, unless the block has to be
// redone the careful way (a logit more than kMaxShift above m, or a NaN). With er, its exps are
// kept and its segment added.
template <class S, Coef C, class T>
bool one_pass_block(const S* x, int64_t b, int64_t e, T m, const CoefRow<T, C>& coef,
                    ExpRow<T>* er, int64_t skip, RowStats& bs, T& block_max) {
  const RowSums rs =
      er && er->e
          ? row_sums<S, C, true>(x, b, e, m, coef, block_max, er->e, skip)
          : row_sums<S, C, false>(x, b, e, m, coef, block_max, static_cast<T*>(nullptr), skip);
  if (!(block_max <= m + kMaxShift<T> && !std::isnan(rs.exp) && !std::isnan(rs.cd))) return false;
  if (er && er->e) er->add(e, double(m));
  bs.m = double(m);
  bs.s = rs.exp;
  bs.cd = rs.cd;
  bs.c = rs.c;
  return true;
}

// Statistics of x[begin:end) without x[skip] (an index, or -1: none), block by block, continuing
// from `st` (the stretches before). Each block is summed in one pass relative to the running
// maximum m while its own maximum is taken; only when it turns out to exceed m by more than
// kMaxShift (exp could overflow), or has NaN or +-inf, is it redone the careful way (max first,
// then sums).
template <class S, Coef C, class T = compute_t<S>>
RowStats range_stats(const S* x, int64_t begin, int64_t end, const CoefRow<T, C>& coef,
                     RowStats st = {}, ExpRow<T>* er = nullptr, int64_t skip = -1) {
  for (int64_t b = begin; b < end; b += kBlock<T>) {
    const int64_t e = b + kBlock<T> < end ? b + kBlock<T> : end;
    // Before any finite logit (the first block of a row), float rows take the block's first
    // element (not the skipped one) as the reference (a block more than kMaxShift above it is
    // redone below), so short rows too are read in one pass. (The later rebase to the true
    // maximum is a float64 multiply: invisible in a float32 result; double rows keep the exact
    // max-first block.)
    T m = T(st.m);
    if constexpr (std::is_same_v<T, float>)
      if (st.m == -std::numeric_limits<double>::infinity())
        m = to_compute(x[b == skip && b + 1 < e ? b + 1 : b]);
    if (std::isfinite(m) && !st.nan) {
      T block_max;
      RowStats bs;
      if (one_pass_block<S, C>(x, b, e, m, coef, er, skip, bs, block_max)) {
        st = merge(st, bs);
        if (block_max > m) st = rebase(st, double(block_max));
        continue;
      }
    }
    st = merge(st, block_stats<S, C>(x, b, e, coef, er, skip));
  }
  return st;
}

// Kernels that write rows (gradients, softmax) take spans up to this many classes (see
// ce_index_rows for the measurements), and the staged streamed gradient spans of ce_index_rows
// up to kStagedMaxClasses.
constexpr int64_t kSpanMaxClasses = 400;
constexpr int64_t kStagedMaxClasses = 1024;
// Segments of kept exps a row of a span holds (rows of one block: one).
constexpr int64_t kSpanSegs = 2;

// range_stats of a whole row x[0:n) (without x[skip]) less the last step of a row of one block:
// the returned statistics may still be relative to the reference the float sums were taken
// against, and `to` is the maximum they move to (rebase(st, to) where to > st.m: a scalar exp).
// Row kernels without a gradient take these moves, and the logs after them, for a span of rows
// in one loop of independent iterations that the core overlaps; row by row, that chain of
// scalar exps and a log held up the next row's vector work (float32 cross-entropy, 300
// classes, one thread in cache: 91 ns a row that way, 75 in spans of 16).
// With er (er->e not nullptr), the exps are kept as range_stats keeps them.
template <class S, Coef C, class T = compute_t<S>>
RowStats row_stats_pending(const S* x, int64_t n, const CoefRow<T, C>& coef, int64_t skip,
                           double& to, ExpRow<T>* er = nullptr) {
  if constexpr (std::is_same_v<T, float>) {
    if (n <= kBlock<T> && n > 0) {  // range_stats' first (and only) block, as it does it
      const T m = to_compute(x[skip == 0 && n > 1 ? 1 : 0]);
      if (std::isfinite(m)) {
        T block_max;
        RowStats bs;
        if (one_pass_block<S, C>(x, 0, n, m, coef, er, skip, bs, block_max)) {
          const RowStats st = merge(RowStats{}, bs);
          to = block_max > m ? double(block_max) : st.m;
          return st;
        }
      }
    }
  }
  const RowStats st = range_stats<S, C>(x, 0, n, coef, {}, er, skip);
  to = st.m;
  return st;
}

// The gradient from kept exp values: g_j = a * exp(ref_k - m) * e_j - d * c_j, segment by
// segment (no exp per element), but g_t = gt for a target t >= 0: set in its vector where that
// vector is streamed (a scalar store after the row would hit a line just written by streaming
// stores, which the core then reads back from memory, a stall per row: float32 cross-entropy
// with the gradient out of cache took 1.8x the time at 300 classes, 1.2x at 1000, with it),
// else stored after the row (a test in the loop of ordinary stores cost 4-14% in cache).
// x_j for j in [0, n) are not read again.
template <class S, Coef C, class T = compute_t<S>>
void row_grad_kept(const ExpRow<T>& er, int64_t n, double m, double a, T d,
                   const CoefRow<T, C>& coef, S* g, bool stream, int64_t t = -1, T gt = T(0)) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const V vd = vset<T>(d);
  bool t_done = false;  // g_t written (in a streamed vector)
  int64_t begin = 0;
  for (int64_t k = 0; k < er.n_seg; ++k) {
    const int64_t end = er.seg_end[k];
    const V scale = vset<T>(T(a * std::exp(er.seg_ref[k] - m)));
    auto value = [&](V e, V cv) {
      V out = scale * e;
      if constexpr (C != Coef::kNone) out -= vd * cv;
      return out;
    };
    int64_t j = begin;
    if constexpr (std::is_same_v<S, T>) {
      if (stream && reinterpret_cast<uintptr_t>(g) % sizeof(T) == 0) {
        // Up to the first vector-aligned address of g with ordinary stores, then streaming.
        int64_t head = int64_t((sizeof(V) - reinterpret_cast<uintptr_t>(g + j) % sizeof(V)) %
                               sizeof(V) / sizeof(T));
        head = head < end - j ? head : end - j;
        if (head) store_partial(g + j, head, value(load_partial(er.e + j, head, T(0)), coef.load_tail(j, head)));
        for (j += head; j + W <= end; j += W) {
          V v = value(vload(er.e + j), coef.load(j));
          if (uint64_t(t - j) < uint64_t(W)) {
            v[t - j] = gt;
            t_done = true;
          }
          vstream(g + j, v);
        }
      }
    }
    for (; j + W <= end; j += W) vstore_as(g + j, value(vload(er.e + j), coef.load(j)));
    if (j < end) store_partial(g + j, end - j, value(load_partial(er.e + j, end - j, T(0)), coef.load_tail(j, end - j)));
    begin = end;
  }
  if (t >= 0 && !t_done) g[t] = from_compute<S>(gt);
  (void)n;
}


// dst[0:n) = src[0:n): streaming stores from dst's first vector-aligned element to its last
// whole vector, ordinary stores before and after.
template <class T> void stream_stretch(const T* src, int64_t n, T* dst) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  int64_t j = 0;
  if (reinterpret_cast<uintptr_t>(dst) % sizeof(T) == 0) {
    int64_t head = int64_t((sizeof(V) - reinterpret_cast<uintptr_t>(dst) % sizeof(V)) % sizeof(V) /
                           sizeof(T));
    head = head < n ? head : n;
    for (; j < head; ++j) dst[j] = src[j];
    for (; j + W <= n; j += W) vstream(dst + j, vload(src + j));
  }
  for (; j < n; ++j) dst[j] = src[j];
}

// Token accuracy: is t NumPy's argmax of x[0:n), the first maximum (a NaN counting as the
// largest value, as np.argmax and torch.argmax have it)? has_nan: the row holds a NaN. Two
// vector max passes over the row, which the loss pass has just brought into cache.
template <class S> bool argmax_is(const S* x, int64_t n, int64_t t, bool has_nan) {
  const auto xt = to_compute(x[t]);
  if (has_nan) {
    if (xt == xt) return false;
    for (int64_t j = 0; j < t; ++j)
      if (std::isnan(to_compute(x[j]))) return false;
    return true;
  }
  if (t > 0 && !(xt > row_max(x, t))) return false;  // strictly above every earlier entry
  return !(row_max(x + t + 1, n - t - 1) > xt);      // and not below a later one
}

// logsumexp of a row as the loss kernels see it (return_lse of an ignored row): m + log S, with
// scipy's non-finite cases (NaN: NaN; +inf: +inf; all -inf: -inf).
template <class S> double row_lse(const S* x, int64_t n) {
  const RowStats st = range_stats<S, Coef::kNone>(x, 0, n, {});
  if (st.nan) return kNaN;
  if (!std::isfinite(st.m)) return st.m;
  return st.m + std::log(st.s);
}

// S' of a row: sum_j exp(x_j - m) without the row's first maximum m (the row maximum, an element
// of the row exactly), relative to m, summed again: a sum that holds the maximum's own term 1
// cannot resolve a rest below about 1.1e-16 (float64) or 6e-8 (float32 partials), so log(sum)
// keeps that absolute error where log1p(S') keeps a relative one. -1 if no element equals m.
template <class S> double sum_without_first_max(const S* x, int64_t n, double m) {
  using T = compute_t<S>;
  int64_t j = 0;  // (a stretch of 64 by its vector maximum first)
  while (j + 64 <= n && double(row_max(x + j, 64)) != m) j += 64;
  while (j < n && double(to_compute(x[j])) != m) ++j;
  if (j == n) return -1.0;
  return rebase(range_stats<S, Coef::kNone>(x, 0, n, {}, {}, static_cast<ExpRow<T>*>(nullptr), j),
                m).s;
}

#include "softmax_narrow.hpp"

// ---------------------------------------------------------------------------------------------
// logsumexp: lse = m + log(sum_j exp(x_j - m)), m = max_j x_j. As scipy: a +inf entry gives
// +inf, an all -inf row gives -inf, NaN gives NaN.
// The sum holds the maximum's own term, exactly 1, so log(sum) cannot resolve a rest below
// 1.1e-16: when the result is near 0 (|lse| < 1, where that absolute error would be a large
// relative one) the row is summed again without its first maximum, lse = m + log1p(S')
// (logsumexp([0, -40]) = 4.25e-18, not 0).
// ---------------------------------------------------------------------------------------------
template <class S> void logsumexp_impl(const SoftmaxArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t V = a.lx.n1;
  if (V >= kSmallMinSoftmax && V <= kSmallMaxClasses) return logsumexp_small_n(a);
  if (V <= kNarrowMaxSoftmax) return logsumexp_narrow(a);
  // A span of rows' statistics, then their logs (see row_stats_pending).
  constexpr int64_t kSpan = 16;
  parallel_row_spans<S>(a.lx.rows(), V * kExpWork, kSpan, [&](int64_t r0, int64_t r1) {
    RowStats pending[kSpan];
    double to[kSpan];
    for (int64_t r = r0; r < r1; ++r) {
      const S* x = read_row(a.x, a.lx, r, kSlotX);
      pending[r - r0] = row_stats_pending<S, Coef::kNone>(x, V, {}, -1, to[r - r0]);
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t k = r - r0;
      const RowStats st = to[k] > pending[k].m ? rebase(pending[k], to[k]) : pending[k];
      double out;
      if (st.nan) {
        out = kNaN;
      } else if (!std::isfinite(st.m)) {
        out = st.m;
      } else {
        out = st.m + std::log(st.s);
        if (std::fabs(out) < 1.0) {
          // (read again: a strided row's tile may have moved on since)
          const double rest = sum_without_first_max(read_row(a.x, a.lx, r, kSlotX), V, st.m);
          if (rest >= 0) out = st.m + std::log1p(rest);
        }
      }
      a.out[r] = from_compute<S>(T(out));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// softmax:     p_j = exp(x_j - m) / sum_k exp(x_k - m)
// log_softmax: log p_j = (x_j - m) - log(sum_k exp(x_k - m))
// A row with NaN or a non-finite maximum gives NaN (softmax) or x_j - m (log_softmax), as scipy.
// ---------------------------------------------------------------------------------------------
template <class S> void softmax_impl(const SoftmaxArgs<S>& a, bool log) {
  using T = compute_t<S>;
  const int64_t V = a.lx.n1;
  if (V >= kSmallMinSoftmax && V <= kSmallMaxClasses) return softmax_small_n(a, log);
  if (V <= kNarrowMaxSoftmax) return softmax_narrow(a, log);
  const bool stream = a.lx.rows() * V * int64_t(sizeof(S)) >= kStreamBytes && a.lo.s1 == 1;
  // Row r's output from its statistics (final) and, for softmax, its kept exps.
  auto write = [&](int64_t r, const S* x, const RowStats& st, const ExpRow<T>& er) {
    S* out = write_row(a.out, a.lo, r);
    const T m = T(st.m);
    if (st.nan || !std::isfinite(st.m)) {
      for (int64_t j = 0; j < V; ++j)
        out[j] = from_compute<S>(log && !st.nan ? to_compute(x[j]) - m : T(kNaN));
    } else if (log) {
      // (x_j - m) - log(sum): subtract the max first so large logits keep their digits.
      const T log_sum = T(std::log(st.s));
      for (int64_t j = 0; j < V; ++j) out[j] = from_compute<S>((to_compute(x[j]) - m) - log_sum);
    } else {
      row_grad_kept<S, Coef::kNone>(er, V, st.m, 1.0 / st.s, T(0), {}, out, stream);
    }
    scatter_row(a.out, a.lo, r, out);
  };
  if (V <= kSpanMaxClasses && !stream) {
    // A span of rows' statistics (softmax: their exps kept), then their outputs (see
    // row_stats_pending). Float32, 257 to 400 classes, one thread in cache, time against row
    // by row: softmax 0.79-0.85, log_softmax 0.84-0.94. Outputs of 32 MB and more (streamed)
    // go row by row: two threads, 50M logits, spans took 0.96-1.08 the time (softmax) in
    // five runs.
    constexpr int64_t kSpan = 16;
    parallel_row_spans<S>(a.lx.rows(), V * kExpWork, kSpan, [&](int64_t r0, int64_t r1) {
      RowStats st[kSpan];
      double to[kSpan];
      ExpRow<T> er[kSpan];
      T* e0 = log ? nullptr : scratch_row<T>(kSlotE, kSpan * V);
      int64_t* seg_end = log ? nullptr : scratch_row<int64_t>(kSlotSegEnd, kSpan * kSpanSegs);
      double* seg_ref = log ? nullptr : scratch_row<double>(kSlotSegRef, kSpan * kSpanSegs);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r - r0;
        if (!log) {
          er[k].e = e0 + k * V;
          er[k].seg_end = seg_end + k * kSpanSegs;
          er[k].seg_ref = seg_ref + k * kSpanSegs;
        }
        st[k] = row_stats_pending<S, Coef::kNone>(read_row(a.x, a.lx, r, kSlotX), V, {}, -1,
                                                  to[k], &er[k]);
      }
      for (int64_t k = 0; k < r1 - r0; ++k)
        if (to[k] > st[k].m) st[k] = rebase(st[k], to[k]);
      // (read again: a strided row's tile may have moved on since)
      for (int64_t r = r0; r < r1; ++r) write(r, read_row(a.x, a.lx, r, kSlotX), st[r - r0], er[r - r0]);
    });
    return;
  }
  parallel_rows<S>(a.lx.rows(), V * kExpWork, [&](int64_t r) {
    const S* x = read_row(a.x, a.lx, r, kSlotX);
    ExpRow<T> er = exp_row<T>(V, !log);
    write(r, x, range_stats<S, Coef::kNone>(x, 0, V, {}, {}, &er), er);
  });
}

// ---------------------------------------------------------------------------------------------
// Soft-capping (Gemma 2): the row becomes cap_j = c tanh(x_j / c) (in the compute type, in a
// scratch row), and with a gradient dcap_j = 1 - tanh^2(x_j / c) for the chain rule.
// ---------------------------------------------------------------------------------------------
template <class S, class T = compute_t<S>>
T* softcap_row(const S* x, int64_t n, double c, T* dcap) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  T* cap = scratch_row<T>(kSlotCap, n);
  const V vc = vset<T>(T(c)), inv = vset<T>(T(1.0 / c));
  int64_t j = 0;
  for (; j < n; j += W) {
    const int64_t k = n - j < W ? n - j : W;
    const V z = (k == W ? vload_as(x + j) : load_partial(x + j, k, T(0))) * inv;
    V th, dth;
    vtanh_parts(z, th, dth);
    if (k == W) {
      vstore(cap + j, vc * th);
      if (dcap) vstore(dcap + j, dth);
    } else {
      store_partial(cap + j, k, vc * th);
      if (dcap) store_partial(dcap + j, k, dth);
    }
  }
  return cap;
}

// Row gradient g (compute type, computed on the capped row) through the cap: out_j = g_j dcap_j.
template <class S, class T = compute_t<S>>
void softcap_chain(const T* g, const T* dcap, int64_t n, S* out) {
  constexpr int W = vec_width<T>;
  int64_t j = 0;
  for (; j + W <= n; j += W) vstore_as(out + j, vload(g + j) * vload(dcap + j));
  if (j < n) store_partial(out + j, n - j, load_partial(g + j, n - j, T(0)) * load_partial(dcap + j, n - j, T(0)));
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
template <class S, Coef C> void ce_index_rows(const CrossEntropyArgs<S>& a, double W) {
  using T = compute_t<S>;
  const int64_t V = a.lx.n1;
  // In place (grad over the logits) the lines are already cached: ordinary stores then.
  const bool stream = a.lx.rows() * V * int64_t(sizeof(S)) >= kStreamBytes && a.lg.s1 == 1 &&
                      static_cast<const void*>(a.grad) != static_cast<const void*>(a.x);
  const double eps = a.label_smoothing, g = a.grad_scale;
  CoefRow<T, C> coef;
  coef.w = a.weight;
  const bool focal = a.focal;
  const double z = a.z_loss, gamma = a.focal_gamma;
  // What a row's gradient needs from its loss (filled: the row was filled with NaN instead).
  struct RowEnd {
    double md, sum, p_scale, t_coef, omp, p_t, c_t;
    bool filled;
  };
  // The loss (and lse) of row r from the statistics of the row without its target (excl, final)
  // and the target's logit xt. fill: a NaN row's gradient is filled here (else by the caller).
  auto row_end = [&](int64_t r, int64_t t, const RowStats& excl, double xt, bool fill = true) {
    RowEnd e{};
    const double md = excl.m > xt ? excl.m : xt;
    const bool has_nan = excl.nan || std::isnan(xt);
    if (has_nan || !std::isfinite(md)) {
      if (a.lse) a.lse[r] = has_nan ? kNaN : md;
      a.loss[r] = kNaN;
      if (a.grad && fill) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      e.filled = true;
      return e;
    }
    const RowStats rest = rebase(excl, md);
    const double e_t = std::exp(xt - md);
    const double s_excl = rest.s, sum = s_excl + e_t;
    const double log_sum = xt == md ? std::log1p(s_excl) : std::log(sum);
    const double w_t = a.weight ? double(a.weight[t]) : 1.0;
    const double ce = (md - xt) + log_sum;  // -log p_t
    double loss = (1.0 - eps) * w_t * ce;
    double c_t = 0.0;
    if constexpr (C != Coef::kNone) {
      c_t = coef.at(t);
      const double cd_t = c_t == 0.0 ? 0.0 : c_t * (md - xt);
      loss += (eps / double(V)) * (rest.cd + cd_t + W * log_sum);
    }
    // p_scale: the coefficient of p_j in the gradient; t_coef: that of -[j == t]
    double p_scale = g * ((1.0 - eps) * w_t + (eps / double(V)) * W), t_coef = g * (1.0 - eps) * w_t;
    const double omp = s_excl / sum, p_t = e_t / sum;  // 1 - p_t without cancellation, p_t
    if (focal) {
      // -alpha_t (1 - p_t)^gamma log p_t; gradient F (p_j - [j == t]) with
      // F = alpha_t ((1 - p_t)^gamma + gamma p_t (1 - p_t)^(gamma - 1) (-log p_t))
      const double mod = gamma == 0 ? 1.0 : (omp == 0 ? 0.0 : std::pow(omp, gamma));
      const double dmod = gamma == 0 || omp == 0 || p_t == 0 ? 0.0
                                                              : gamma * std::pow(omp, gamma - 1) * p_t * ce;
      loss = w_t * mod * ce;
      p_scale = t_coef = g * w_t * (mod + dmod);
    }
    const double lse = md + log_sum;
    if (a.lse) a.lse[r] = lse;
    if (z != 0) {  // z-loss: w_t z lse^2, gradient w_t 2 z lse p_j
      loss += w_t * z * lse * lse;
      p_scale += g * w_t * 2.0 * z * lse;
    }
    a.loss[r] = loss;
    e.md = md;
    e.sum = sum;
    e.p_scale = p_scale;
    e.t_coef = t_coef;
    e.omp = omp;
    e.p_t = p_t;
    e.c_t = c_t;
    return e;
  };
  // Row r's gradient from its kept exps er (its target t, row_end's e); dcap != nullptr: the
  // softcap chain.
  // into != nullptr: the row goes there (ordinary stores), not into a.grad.
  auto grad_row = [&](int64_t r, int64_t t, const RowEnd& e, const ExpRow<T>& er, T* dcap,
                      S* into = nullptr) {
    S* gr = into ? into : write_row(a.grad, a.lg, r);
    er.e[t] = T(0);  // (its segment skips t; the entry is set in closed form below)
    // The target entry in closed form: p_scale p_t - t_coef - (eps/C) g c_t, with
    // p_scale p_t - t_coef = -t_coef (1 - p_t) + (p_scale - t_coef) p_t (no cancellation).
    const double gt = -e.t_coef * e.omp + (e.p_scale - e.t_coef) * e.p_t - g * (eps / double(V)) * e.c_t;
    if (dcap) {
      T* gc = scratch_row<T>(kSlotCap, V);  // the capped row is no longer needed
      row_grad_kept<T, C>(er, V, e.md, e.p_scale / e.sum, T(g * eps / double(V)), coef, gc, false);
      gc[t] = T(gt);
      softcap_chain<S>(gc, dcap, V, gr);
    } else {
      row_grad_kept<S, C>(er, V, e.md, e.p_scale / e.sum, T(g * eps / double(V)), coef, gr,
                          stream && !into, t, T(gt));
    }
    if (!into) scatter_row(a.grad, a.lg, r, gr);
  };
  // One row: x is the logits row (or its capped copy, R = T); dcap != nullptr: softcap chain.
  auto row = [&](auto tag_ptr, int64_t r, T* dcap, const S* raw) {
    using R = std::remove_cv_t<std::remove_pointer_t<decltype(tag_ptr)>>;
    const R* x = tag_ptr;
    const int64_t t = a.target[r];
    // Statistics of the row without the target, then the target itself. With a gradient to
    // compute, the exp values are kept (in L2) so the gradient pass needs no exp.
    ExpRow<T> er = exp_row<T>(V, a.grad != nullptr);
    const RowStats excl = range_stats<R, C>(x, 0, V, coef, {}, &er, t);
    const double xt = to_compute(x[t]);
    // (argmax of the logits as given: soft-capping can tie what it saturates)
    if (a.correct) a.correct[r] = argmax_is(raw, V, t, excl.nan || std::isnan(xt));
    const RowEnd e = row_end(r, t, excl, xt);
    if (!e.filled && a.grad) grad_row(r, t, e, er, dcap);
  };
  // Ignored rows and invalid targets: true if row r is one (and is done; fill: its gradient
  // filled here, else by the caller).
  auto no_target = [&](int64_t r, bool fill = true) {
    const int64_t t = a.target[r];
    const bool ignored = t == a.ignore_index;
    if (!ignored && t >= 0 && t < V) return false;
    // (out-of-range targets are rejected before the call)
    if (a.lse) {  // an ignored row still has its log-sum-exp (read before an in-place fill)
      const S* xs = read_row(a.x, a.lx, r, kSlotX);
      a.lse[r] = a.softcap > 0 ? row_lse(softcap_row(xs, V, a.softcap, static_cast<T*>(nullptr)), V)
                               : row_lse(xs, V);
    }
    a.loss[r] = ignored ? 0.0 : kNaN;
    if (a.grad && fill) fill_row(a.grad, a.lg, r, from_compute<S>(ignored ? T(0) : T(kNaN)));
    if (a.correct) a.correct[r] = 0;
    return true;
  };
  // With a gradient, spans up to kSpanMaxClasses. Float32 cross-entropy with the gradient, spans
  // against row by row: one thread in cache (1 MB of logits) 0.79-0.84 of the time at 257 to
  // 500 classes, 0.95 at 1000; two threads, 8 and 24 MB of logits, 0.79-0.92 at 300 and 400
  // but 1.02-1.06 at 500 to 2000; 200 MB 0.93-0.98 at 257 and 300, 0.99 at 400, 1.02-1.09
  // from 500 to 2000 (the span's gradients go out in one burst of stores, its reads in another).
  // Streamed gradient rows back to back (S == T) are staged (below) up to kStagedMaxClasses:
  // two threads, 50M float32 logits, against row by row, 0.76-0.86 the time at 500 classes,
  // 0.80 at 777, 0.82-0.94 at 1000 and 0.97 at 2000 into a preallocated gradient (float64 0.81
  // and 0.92 at 500 and 1000; label smoothing 0.70 and 0.86), but 1.07-1.14 into a fresh one
  // (its pages are zeroed on first touch, which leaves the lines rows share in cache): not
  // where the caller says the gradient is fresh (grad_fresh).
  bool staged = false;
  if constexpr (std::is_same_v<S, T>)
    staged = a.grad && stream && !a.grad_fresh && a.lg.n2 == 1 && a.lg.s0 == V;
  if (a.softcap == 0 &&
      (!a.grad || V <= kSpanMaxClasses || (staged && V <= kStagedMaxClasses))) {
    // A span of rows' statistics first, then their exps and logs (see row_stats_pending),
    // then, with a gradient, their gradients from their kept exps (rows of one block: one
    // segment each; a span's exps stay within about 32 KB).
    constexpr int64_t kSpan = 16;
    int64_t span = kSpan;
    if (a.grad) {
      const int64_t fit = (int64_t(32) << 10) / (V * int64_t(sizeof(T)));
      span = fit < 1 ? 1 : fit < kSpan ? fit : kSpan;
    }
    // Staged (streamed gradient rows back to back, S == T): the span's rows go into an L1
    // buffer and out as one stretch (below); filled rows too, so they are not written twice.
    parallel_row_spans<S>(a.lx.rows(), V * kExpWork, span, [&](int64_t r0, int64_t r1) {
      RowStats st[kSpan];
      double to[kSpan], xt[kSpan];
      bool done[kSpan];
      ExpRow<T> er[kSpan];
      T* e0 = a.grad ? scratch_row<T>(kSlotE, span * V) : nullptr;
      int64_t* seg_end = a.grad ? scratch_row<int64_t>(kSlotSegEnd, span * kSpanSegs) : nullptr;
      double* seg_ref = a.grad ? scratch_row<double>(kSlotSegRef, span * kSpanSegs) : nullptr;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r - r0;
        done[k] = no_target(r, !staged);
        if (done[k]) continue;
        const int64_t t = a.target[r];
        const S* x = read_row(a.x, a.lx, r, kSlotX);
        if (a.grad) {
          er[k].e = e0 + k * V;
          er[k].seg_end = seg_end + k * kSpanSegs;
          er[k].seg_ref = seg_ref + k * kSpanSegs;
        }
        st[k] = row_stats_pending<S, C>(x, V, coef, t, to[k], &er[k]);
        xt[k] = to_compute(x[t]);
        if (a.correct) a.correct[r] = argmax_is(x, V, t, st[k].nan || std::isnan(xt[k]));
      }
      RowEnd e[kSpan];
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r - r0;
        if (done[k]) continue;
        e[k] = row_end(r, a.target[r], to[k] > st[k].m ? rebase(st[k], to[k]) : st[k], xt[k],
                       !staged);
      }
      if (!a.grad) return;
      if constexpr (std::is_same_v<S, T>) {
        if (staged) {
          // Streamed gradient rows back to back: the span's rows go into an L1 buffer, then
          // out as one stretch of streaming stores, so that only the stretch's partial first
          // and last lines take ordinary stores (row by row, the lines shared by two rows did,
          // and each was read from memory first: 50M float32 logits, two threads, 300
          // classes (rows not whole lines) cost 1.56x the read+write floor, 400 classes 0.99x).
          // Time against row by row, 257 to 400 classes: 0.72-0.76 into a preallocated
          // gradient (grad_out), 1.05-1.08 into a fresh one (whose pages the kernel zeroes on
          // first touch, so the shared lines are then in cache already).
          T* buf = scratch_row<T>(kSlotCap, (r1 - r0) * V);  // (no soft-capping here)
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t k = r - r0;
            if (!done[k] && !e[k].filled) {
              grad_row(r, a.target[r], e[k], er[k], nullptr, buf + k * V);
            } else {  // (the fill no_target and row_end leave to the caller here)
              const T fill = done[k] && a.target[r] == a.ignore_index ? T(0) : T(kNaN);
              for (int64_t j = 0; j < V; ++j) buf[k * V + j] = fill;
            }
          }
          stream_stretch(buf, (r1 - r0) * V, a.grad + a.lg.offset(r0));
          return;
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r - r0;
        if (!done[k] && !e[k].filled) grad_row(r, a.target[r], e[k], er[k], nullptr);
      }
    });
    return;
  }
  parallel_rows<S>(a.lx.rows(), V * kExpWork, [&](int64_t r) {
    if (no_target(r)) return;
    const S* xs = read_row(a.x, a.lx, r, kSlotX);
    if (a.softcap > 0) {
      T* dcap = a.grad ? scratch_row<T>(kSlotCapD, V) : nullptr;
      row(static_cast<const T*>(softcap_row(xs, V, a.softcap, dcap)), r, dcap, xs);
    } else {
      row(xs, r, static_cast<T*>(nullptr), xs);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with probability targets y (PyTorch: smoothed y'_c = (1 - eps) y_c + eps / C,
// c_j = w_j y'_j):
//   loss       = sum_c c_c * (-log p_c) = sum_c c_c (m - x_c) + (sum_c c_c) log S
//   dloss/dx_j = (sum_c c_c) p_j - c_j
// A class with c_j = 0 contributes 0 even if its logit is -inf (0 * log 0 = 0).
// ---------------------------------------------------------------------------------------------
template <class S, Coef C> void ce_probs_rows(const CrossEntropyArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t V = a.lx.n1;
  const bool stream = a.lx.rows() * V * int64_t(sizeof(S)) >= kStreamBytes && a.lg.s1 == 1 &&
                      static_cast<const void*>(a.grad) != static_cast<const void*>(a.x);
  const double eps = a.label_smoothing, g = a.grad_scale;
  const double z = a.z_loss;
  // Row r's target coefficients.
  auto coef_of = [&](int64_t r) {
    CoefRow<T, C> coef;
    coef.w = a.weight;
    coef.y = read_row(a.probs, a.lp, r, kSlotY);
    coef.a = T(1.0 - eps);
    coef.b = T(eps / double(V));
    return coef;
  };
  // The loss (and lse) of row r from its statistics (final); false: the row is done (its
  // loss 0 or NaN, its gradient filled), else its log-sum-exp in lse.
  // log S here is log of a sum that holds the maximum's own term 1, so a confident row's
  // small loss keeps an absolute error of about 6e-8 (float32); the lane kernel up to
  // kProbsNarrowMax classes takes log1p(S'). Summing such rows again without their maximum
  // (sum_without_first_max) cost 1.2-2.3 the time on confident one-hot rows of 300 to 4,000
  // classes, so it is not done.
  auto row_loss = [&](int64_t r, const RowStats& st, double& lse) {
    if (a.lse && (st.nan || !std::isfinite(st.m))) a.lse[r] = st.nan ? kNaN : st.m;
    if (!st.nan && st.m == -kInf<double> && st.c == 0 && st.cd == 0 && z == 0) {
      // Logits all -inf and no target mass: every term is 0 log 0 = 0, so the loss is 0
      // for any logits, and so is its gradient (p is 0/0 here).
      a.loss[r] = 0.0;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(0)));
      return false;
    }
    if (st.nan || !std::isfinite(st.m)) {
      a.loss[r] = kNaN;
      if (a.grad) fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return false;
    }
    const double log_sum = std::log(st.s);
    lse = st.m + log_sum;
    if (a.lse) a.lse[r] = lse;
    a.loss[r] = st.cd + st.c * log_sum + z * lse * lse;
    return true;
  };
  if (!a.grad && a.softcap == 0) {
    // The loss alone: a span of rows' statistics, then their exps and logs (see
    // row_stats_pending).
    constexpr int64_t kSpan = 16;
    parallel_row_spans<S>(a.lx.rows(), V * kExpWork, kSpan, [&](int64_t r0, int64_t r1) {
      RowStats st[kSpan];
      double to[kSpan];
      for (int64_t r = r0; r < r1; ++r) {
        const CoefRow<T, C> coef = coef_of(r);
        st[r - r0] = row_stats_pending<S, C>(read_row(a.x, a.lx, r, kSlotX), V, coef, -1, to[r - r0]);
      }
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r - r0;
        double lse;
        row_loss(r, to[k] > st[k].m ? rebase(st[k], to[k]) : st[k], lse);
      }
    });
    return;
  }
  parallel_rows<S>(a.lx.rows(), V * kExpWork, [&](int64_t r) {
    const CoefRow<T, C> coef = coef_of(r);
    auto row = [&](auto x, T* dcap) {
      using R = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
      ExpRow<T> er = exp_row<T>(V, a.grad != nullptr);
      const RowStats st = range_stats<R, C>(x, 0, V, coef, {}, &er);
      double lse;
      if (!row_loss(r, st, lse) || !a.grad) return;
      S* gr = write_row(a.grad, a.lg, r);
      const double p_scale = g * (st.c + 2.0 * z * lse);
      if (dcap) {
        T* gc = scratch_row<T>(kSlotCap, V);
        row_grad_kept<T, C>(er, V, st.m, p_scale / st.s, T(g), coef, gc, false);
        softcap_chain<S>(gc, dcap, V, gr);
      } else {
        row_grad_kept<S, C>(er, V, st.m, p_scale / st.s, T(g), coef, gr, stream);
      }
      scatter_row(a.grad, a.lg, r, gr);
    };
    const S* xs = read_row(a.x, a.lx, r, kSlotX);
    if (a.softcap > 0) {
      T* dcap = a.grad ? scratch_row<T>(kSlotCapD, V) : nullptr;
      row(static_cast<const T*>(softcap_row(xs, V, a.softcap, dcap)), dcap);
    } else {
      row(xs, static_cast<T*>(nullptr));
    }
  });
}

template <class S> void cross_entropy_impl(const CrossEntropyArgs<S>& a) {
  const bool smooth = a.label_smoothing > 0.0;
  if (a.probs) {
    if (a.lx.n1 >= 2 && a.lx.n1 <= kProbsSmallMax && a.softcap == 0) {  // in registers
      return with_class_count_to<2, kProbsSmallMax>(a.lx.n1, [&](auto kN) {
        if (a.weight)
          ce_probs_small<S, Coef::kWProbs, decltype(kN)::value>(a);
        else
          ce_probs_small<S, Coef::kProbs, decltype(kN)::value>(a);
      });
    }
    if (a.lx.n1 <= kProbsNarrowMax && a.softcap == 0) {  // rows in SIMD lanes
      if (a.weight)
        ce_probs_narrow<S, Coef::kWProbs>(a);
      else
        ce_probs_narrow<S, Coef::kProbs>(a);
      return;
    }
    if (a.weight)
      ce_probs_rows<S, Coef::kWProbs>(a);
    else
      ce_probs_rows<S, Coef::kProbs>(a);
    return;
  }
  double W = double(a.lx.n1);
  if (a.weight) {
    W = 0.0;
    for (int64_t j = 0; j < a.lx.n1; ++j) W += double(a.weight[j]);
  }
  if constexpr (std::is_same_v<S, compute_t<S>>) {  // float32, float64: two classes
    if (ce_binary_applies(a)) return ce_index_binary(a);
  }
  if (ce_small_applies(a)) return ce_index_small_n(a);
  if (a.lx.n1 <= kNarrowMaxClasses && a.softcap == 0) {  // rows in SIMD lanes
    if (!smooth)
      ce_index_narrow<S, Coef::kNone>(a, W);
    else if (a.weight)
      ce_index_narrow<S, Coef::kWeight>(a, W);
    else
      ce_index_narrow<S, Coef::kOne>(a, W);
    return;
  }
  if (!smooth)
    ce_index_rows<S, Coef::kNone>(a, W);
  else if (a.weight)
    ce_index_rows<S, Coef::kWeight>(a, W);
  else
    ce_index_rows<S, Coef::kOne>(a, W);
}

// ---------------------------------------------------------------------------------------------
// nll_loss: loss = -w_t * x_t; dloss/dx_j = -w_t [j == t].
// ---------------------------------------------------------------------------------------------
template <class S> void nll_loss_impl(const NllArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t V = a.lx.n1;
  if (a.lx.n2 == 1 && V > 0 && (!a.grad || a.lg.n2 == 1)) {
    // Rows a stride apart: a plain loop over each thread's rows with the arguments in locals
    // (one thread, float32 in cache, the loss alone against parallel_rows' per-row body: 0.48
    // of the time at 3 classes, 0.59 at 10, 0.67 at 100; the row body below with its arguments
    // copied in instead gained nothing). With the gradient, a chunk of rows at a time (about
    // 4 KB of gradient, at least 4 rows; its lines prefetched first): their losses (reading the
    // targets' logits), then the chunk's gradient rows zeroed (one memset where they are back
    // to back), then each valid row's -g w_t; an in-place gradient is read before it is
    // written. Against parallel_rows' body (a fill and a store per row), one thread, float32:
    // in cache 0.54 of the time at 2 classes, 0.41 at 3, 0.62 at 10, 0.96 at 32, 1.05-1.06 at
    // 100 and 1000; out of cache (20M logits) 0.53 at 2, 0.94 at 10, 0.82 at 100, 1.02-1.03
    // at 32 and 1000. (16 KB chunks without the prefetch: 1.08-1.12 out of cache at 10 and 32
    // classes; a fill per row in one loop with the loss: 0.90-0.99.)
    const S* x = a.x;
    const int64_t s0 = a.lx.s0, s1 = a.lx.s1, ign = a.ignore_index, rows = a.lx.rows();
    const int64_t* tg = a.target;
    const T* w = a.weight;
    double* loss = a.loss;
    S* gp = a.grad;
    const int64_t g0 = a.lg.s0, g1 = a.lg.s1;
    const double gs = a.grad_scale;
    const int64_t step = gp ? std::max<int64_t>(4, 4096 / (V * int64_t(sizeof(S)))) : rows;
    parallel_for(threads_for(gp ? rows * V : rows, rows), [=](int64_t th, int64_t n_th) {
      const int64_t lo = rows * th / n_th, hi = rows * (th + 1) / n_th;
      for (int64_t c0 = lo; c0 < hi; c0 += step) {
        const int64_t c1 = std::min(hi, c0 + step);
        if (gp && g1 == 1 && g0 == V)
          prefetch_bytes(gp + c0 * V, (c1 - c0) * V * int64_t(sizeof(S)));
        for (int64_t r = c0; r < c1; ++r) {
          const int64_t t = tg[r];
          const bool valid = uint64_t(t) < uint64_t(V) && t != ign;
          const int64_t tc = valid ? t : 0;  // (a load that is always in the row)
          const double w_t = w ? double(w[tc]) : 1.0;
          const double v = -w_t * double(to_compute(x[r * s0 + tc * s1]));
          loss[r] = valid ? v : (t == ign ? 0.0 : kNaN);
        }
        if (!gp) continue;
        // (every supported type's zero is all zero bits)
        if (g1 == 1 && g0 == V) {
          std::memset(static_cast<void*>(gp + c0 * V), 0, size_t((c1 - c0) * V) * sizeof(S));
        } else {
          const S zero = from_compute<S>(T(0));
          for (int64_t r = c0; r < c1; ++r)
            for (int64_t j = 0; j < V; ++j) gp[r * g0 + j * g1] = zero;
        }
        for (int64_t r = c0; r < c1; ++r) {
          const int64_t t = tg[r];
          if (uint64_t(t) >= uint64_t(V) || t == ign) continue;
          const double w_t = w ? double(w[t]) : 1.0;
          gp[r * g0 + t * g1] = from_compute<S>(T(-gs * w_t));
        }
      }
    });
    return;
  }
  parallel_rows<S>(a.lx.rows(), a.grad ? V : 1, [&](int64_t r) {
    const int64_t t = a.target[r];
    const bool valid = t != a.ignore_index && t >= 0 && t < V;
    const double w_t = valid ? (a.weight ? double(a.weight[t]) : 1.0) : 0.0;
    a.loss[r] = valid ? -w_t * double(to_compute(a.x[a.lx.offset(r) + t * a.lx.s1]))
                      : (t == a.ignore_index ? 0.0 : kNaN);
    if (!a.grad) return;
    fill_row(a.grad, a.lg, r, from_compute<S>(T(0)));
    if (valid) a.grad[a.lg.offset(r) + t * a.lg.s1] = from_compute<S>(T(-a.grad_scale * w_t));
  });
}

// (branch-free, so that it vectorises: AVX2 and AVX-512 compare 64-bit lanes)
void count_targets_impl(const int64_t* t, int64_t n, int64_t n_classes, int64_t ignore_index,
                        int64_t* count, bool* any_bad) {
  int64_t c = 0, bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = t[i];
    const int64_t kept = v != ignore_index;
    c += kept;
    bad |= kept & int64_t(uint64_t(v) >= uint64_t(n_classes));
  }
  *count = c;
  *any_bad = bad != 0;
}

}  // namespace

#define FASTLOSS_STR2(x) #x
#define FASTLOSS_STR(x) FASTLOSS_STR2(x)
extern const KernelTable table;
const KernelTable table = {
    FASTLOSS_STR(FASTLOSS_ISA_NS),
#define FASTLOSS_TABLE_ROW(sfx, S) \
  &logsumexp_impl<S>, &softmax_impl<S>, &cross_entropy_impl<S>, &nll_loss_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_TABLE_ROW)
#undef FASTLOSS_TABLE_ROW
    &count_targets_impl,
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss

// =============================================================================================
// Sharded cross-entropy (scale.hpp, fastloss/scale.py): per-row statistics of one shard of the
// class axis, and the shard's slice of the gradient once the statistics of every shard are
// merged. Same blockwise row statistics as above; a shard row is read once per kernel.
// =============================================================================================
namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

// Shard statistics. As in ce_index_rows, the target's term is left out of the sum of exps
// (the merge adds it back: log1p when the target is the maximum). The sum of the logits comes
// from the label-smoothing sums with c_j = 1, cd = sum_j (m - x_j), as sum_j x_j = V m - cd.
template <class S> void ce_shard_stats_impl(const CeShardStatsArgs<S>& a) {
  using T = compute_t<S>;
  const int64_t V = a.lx.n1;
  const CoefRow<T, Coef::kOne> coef{};
  auto row = [&](auto x, int64_t r) {  // x: the shard row, or its capped copy
    using R = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    const int64_t t = a.target[r];
    const bool in = t != a.ignore_index && t >= a.class_offset && t - a.class_offset < V;
    RowStats st;
    double xt = 0.0;
    if (in) {
      const int64_t k = t - a.class_offset;
      st = range_stats<R, Coef::kOne>(x, 0, V, coef, {}, static_cast<ExpRow<T>*>(nullptr), k);
      xt = to_compute(x[k]);
    } else {
      st = range_stats<R, Coef::kOne>(x, 0, V, coef);
    }
    const bool nan = st.nan || std::isnan(xt);
    const double m = in && xt > st.m ? xt : st.m;
    a.target_logit[r] = xt;
    a.has_target[r] = in ? 1 : 0;
    if (nan || !std::isfinite(m)) {  // rare: the plain sum, and no sum of exps
      double sum = 0.0;
      for (int64_t j = 0; j < V; ++j) sum += double(to_compute(x[j]));
      a.max[r] = nan ? kNaN : m;
      a.sumexp[r] = !nan && m == -kInf<double> ? 0.0 : kNaN;
      a.sum_logits[r] = sum;
      return;
    }
    const RowStats rest = rebase(st, m);
    a.max[r] = m;
    a.sumexp[r] = rest.s;
    // (a -inf logit makes cd, and so the sum, infinite: the sum of the logits is -inf)
    a.sum_logits[r] = double(V) * m - (rest.cd + (in ? m - xt : 0.0));
  };
  parallel_rows<S>(a.lx.rows(), V * kExpWork, [&](int64_t r) {
    const S* xs = read_row(a.x, a.lx, r, kSlotX);
    if (a.softcap > 0)
      row(static_cast<const T*>(softcap_row(xs, V, a.softcap, static_cast<T*>(nullptr))), r);
    else
      row(xs, r);
  });
}

// The shard's gradient slice, one pass: g_j = p_coef exp(x_j - ref) - u, the target's entry in
// closed form (t_value, computed by the caller without cancellation), then the soft-cap chain.
template <class S> void ce_shard_grad_impl(const CeShardGradArgs<S>& a) {
  using T = compute_t<S>;
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t n = a.lx.n1;
  parallel_rows<S>(a.lx.rows(), n * kExpWork, [&](int64_t r) {
    const int64_t t = a.target[r];
    if (t == a.ignore_index) {
      fill_row(a.grad, a.lg, r, from_compute<S>(T(0)));
      return;
    }
    const double ref = a.ref[r];
    if (!std::isfinite(ref)) {  // NaN, +inf or all -inf somewhere in the full row
      fill_row(a.grad, a.lg, r, from_compute<S>(T(kNaN)));
      return;
    }
    const bool in = t >= a.class_offset && t - a.class_offset < n;
    const int64_t k = in ? t - a.class_offset : 0;
    const S* xs = read_row(a.x, a.lx, r, kSlotX);
    S* gr = write_row(a.grad, a.lg, r);
    const V vref = vset<T>(T(ref)), vc = vset<T>(T(a.p_coef[r])), vu = vset<T>(T(a.u));
    auto value = [&](V xv) { return vc * vexp(xv - vref) - vu; };
    if (a.softcap > 0) {
      T* dcap = scratch_row<T>(kSlotCapD, n);
      T* g = softcap_row(xs, n, a.softcap, dcap);  // the capped row, overwritten by dl/dx'
      int64_t j = 0;
      for (; j + W <= n; j += W) vstore(g + j, value(vload(g + j)));
      if (j < n) store_partial(g + j, n - j, value(load_partial(g + j, n - j, T(0))));
      if (in) g[k] = T(a.t_value[r]);
      softcap_chain<S>(g, dcap, n, gr);
    } else {
      int64_t j = 0;
      for (; j + W <= n; j += W) vstore_as(gr + j, value(vload_as(xs + j)));
      if (j < n) store_partial(gr + j, n - j, value(load_partial(xs + j, n - j, T(0))));
      if (in) gr[k] = from_compute<S>(T(a.t_value[r]));
    }
    scatter_row(a.grad, a.lg, r, gr);
  });
}

}  // namespace

extern const ScaleTable scale_table;
const ScaleTable scale_table = {
#define FASTLOSS_SCALE_ROW(sfx, S) &ce_shard_stats_impl<S>, &ce_shard_grad_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_SCALE_ROW)
#undef FASTLOSS_SCALE_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
