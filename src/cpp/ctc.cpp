// Connectionist temporal classification loss (Graves et al., ICML 2006) with PyTorch's
// conventions (torch.nn.functional.ctc_loss and its CPU backward).
//
// Per sample, with T input steps, S labels and the extended sequence l' of length L = 2S + 1
// (blank, l_1, blank, l_2, ..., l_S, blank), log alpha and log beta both include the emission
// lp_t(l'_s) at their own step (as PyTorch), lse = log-sum-exp:
//   la_0(0) = lp_0(blank),  la_0(1) = lp_0(l_1)
//   la_t(s) = lse(la_{t-1}(s), la_{t-1}(s-1), [skip(s)] la_{t-1}(s-2)) + lp_t(l'_s)
//   skip(s): s odd, s >= 3 and l'_s != l'_{s-2} (repeated labels need a blank between them)
//   loss    = -lse(la_{T-1}(L-1), la_{T-1}(L-2))          (S = 0: -la_{T-1}(0))
//   lb_{T-1}(L-1) = lp_{T-1}(blank),  lb_{T-1}(L-2) = lp_{T-1}(l_S)
//   lb_t(s) = lse(lb_{t+1}(s), lb_{t+1}(s+1), [skip(s+2)] lb_{t+1}(s+2)) + lp_t(l'_s)
// Gradient, as PyTorch's ctc_loss_backward returns it (it assumes the log-probabilities are
// log_softmax outputs; the derivative w.r.t. free log-probabilities is the second term alone):
//   grad_t(c) = exp(lp_t(c)) - sum_{s: l'_s = c} exp(la_t(s) + lb_t(s) + loss - lp_t(c))
// where exp(la + lb + loss - lp) is the posterior occupancy of state s at t over p_t(c). Those
// terms are all positive and are summed in linear space (PyTorch sums them by log-sum-exp, then
// takes exp); the same up to rounding.
//
// The recursion is sequential in t, but one step is independent across the L states: a vector
// loop over s with three exps and a log per state, all in float64 (float32 log-probabilities
// are summed over hundreds of steps). That loop is why this file is compiled once per
// instruction set (AVX-512 does 8 states per instruction). Samples are independent: OpenMP
// over the batch with a dynamic schedule (lengths differ), each sample on one thread, so the
// results do not depend on the number of threads. Alpha is kept for every step only when the
// gradient is wanted (T x L float64 per thread); beta only for two steps, the gradient of a
// step being written as soon as its beta is known.
#include "ctc.hpp"

#include <atomic>
#include <cmath>
#include <limits>
#include <new>

#include "kernels.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "compile this file once per instruction set with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

using V = f64v;
constexpr int W = vec_width<double>;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Scratch buffers from thread_scratch (no STL container: no STL template may be instantiated
// in a per-ISA file, or the linker could keep this file's AVX-512 copy for every caller).
enum Slot {
  kSlotAlpha = 0,  // log alpha rows (T rows with a gradient, else 2)
  kSlotBeta = 1,   // log beta, two rows
  kSlotEm = 2,     // lp_t(l'_s) of the current step
  kSlotSkip = 3,   // 0 where the s-2 -> s transition is allowed, -inf elsewhere
  kSlotLab = 4,    // l'_s
  kSlotOcc = 5,    // per-class sums of the occupancy terms, then the gradient row
  kSlotRow = 6,    // lp_t(c) of the current step (float64)
  kSlotPost = 7    // occupancy terms per state
};
static_assert(kSlotPost < kScratchSlots, "more scratch slots than threads.cpp provides");

template <class T>
T* scratch(Slot slot, int64_t n) {
  return static_cast<T*>(thread_scratch(slot, size_t(n) * sizeof(T)));
}

inline int64_t round_up(int64_t n, int64_t w) { return (n + w - 1) / w * w; }

// log(exp(a) + exp(b)), NaN propagating.
inline double log_add(double a, double b) {
  if (a != a || b != b) return a + b;
  const double m = a > b ? a : b;
  if (m == -kInf) return -kInf;
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

// One step of either recursion over the states [0, Lv):
//   out[s] = lse(a1[s], a2[s], [skip[s] == 0] a3[s]) + em[s]
// (alpha: a1, a2, a3 = prev + 0, -1, -2; beta: next + 0, +1, +2 with skip shifted by 2).
// With the terms sorted as hi >= mid, lo: lse = hi + log(1 + exp(mid - hi) + exp(lo - hi)),
// two exps (the max's own is 1). Where hi = -inf (every term -inf, or NaN), the sum of the
// terms and em is the result, as in PyTorch: -inf, or NaN when a term or em is NaN. Otherwise
// a NaN term lands in mid or lo and makes the sum NaN.
inline void lse3_step(const double* a1, const double* a2, const double* a3, const double* skip,
                      const double* em, double* out, int64_t Lv) {
  const V neg_inf = vset<double>(-kInf), zero = vset<double>(0.0), one = vset<double>(1.0);
  for (int64_t s = 0; s < Lv; s += W) {
    const V x1 = vload(a1 + s), x2 = vload(a2 + s);
    const V x3 = vselect(vload(skip + s) == zero, vload(a3 + s), neg_inf);
    const auto gt = x1 > x2;
    const V top2 = vselect(gt, x1, x2), lo = vselect(gt, x2, x1);
    const auto gt3 = top2 > x3;
    const V hi = vselect(gt3, top2, x3), mid = vselect(gt3, x3, top2);
    const auto dead = hi == neg_inf;
    const V ref = vselect(dead, zero, hi), e = vload(em + s);
    const V sum = one + vexp_capped(mid - ref) + vexp_capped(lo - ref);
    vstore(out + s, vselect(dead, ((x1 + x2) + x3) + e, ref + vlog(sum) + e));
  }
}

template <class S>
void ctc_sample(const CtcArgs<S>& a, int64_t n) {
  const int64_t Tn = a.input_lengths[n], Sn = a.target_lengths[n];
  const int64_t L = 2 * Sn + 1, Lv = round_up(L, W), R = Lv + 4;  // row: 2 pads, Lv, 2 pads
  const S* x = a.log_probs + n * a.sn;
  S* g = a.grad ? a.grad + n * a.gn : nullptr;
  auto put_grad = [&](int64_t t, int64_t c, double v) {
    g[t * a.gt + c * a.gc] = from_compute<S>(compute_t<S>(v));
  };
  if (g)  // steps past the input length get no gradient
    for (int64_t t = Tn; t < a.T; ++t)
      for (int64_t c = 0; c < a.C; ++c) put_grad(t, c, 0.0);
  if (Tn == 0) {  // the empty input emits only the empty target
    a.loss[n] = Sn == 0 ? 0.0 : kInf;
    return;
  }

  int64_t* lab = scratch<int64_t>(kSlotLab, Lv);
  double* skip = scratch<double>(kSlotSkip, Lv + 2);
  double* em = scratch<double>(kSlotEm, Lv);
  const int64_t* labels = a.targets + a.target_offset[n];
  for (int64_t s = 0; s < Lv; ++s) lab[s] = (s < L && s % 2 == 1) ? labels[s / 2] : a.blank;
  for (int64_t s = 0; s < Lv + 2; ++s)
    skip[s] = (s < L && s % 2 == 1 && s >= 3 && lab[s] != lab[s - 2]) ? 0.0 : -kInf;

  // Forward: alpha rows of R doubles, state s at row + 2 + s; the pads read as -inf.
  const int64_t n_rows = g ? Tn : 2;
  double* alpha = scratch<double>(kSlotAlpha, n_rows * R);
  for (int64_t r = 0; r < n_rows; ++r) {
    double* p = alpha + r * R;
    p[0] = p[1] = p[Lv + 2] = p[Lv + 3] = -kInf;
  }
  auto alpha_row = [&](int64_t t) { return alpha + (g ? t : (t & 1)) * R + 2; };
  auto gather_emissions = [&](int64_t t) {
    const S* row = x + t * a.st;
    for (int64_t s = 0; s < L; ++s) em[s] = double(to_compute(row[lab[s] * a.sc]));
    for (int64_t s = L; s < Lv; ++s) em[s] = -kInf;
  };
  gather_emissions(0);
  double* first = alpha_row(0);
  for (int64_t s = 0; s < Lv; ++s) first[s] = -kInf;
  first[0] = em[0];
  if (L > 1) first[1] = em[1];
  for (int64_t t = 1; t < Tn; ++t) {
    gather_emissions(t);
    const double* prev = alpha_row(t - 1);
    lse3_step(prev, prev - 1, prev - 2, skip, em, alpha_row(t), Lv);
  }
  const double* last = alpha_row(Tn - 1);
  const double nll = -(Sn == 0 ? last[0] : log_add(last[L - 1], last[L - 2]));
  a.loss[n] = nll;
  if (!g) return;

  // No alignment (+inf): PyTorch's backward gives NaN, or 0 with zero_infinity; a NaN loss
  // gives NaN (exp(lp) - exp(NaN)) in every entry.
  if (nll == kInf || nll != nll) {
    const double v = nll == kInf && a.zero_infinity ? 0.0 : kNaN;
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t c = 0; c < a.C; ++c) put_grad(t, c, v);
    return;
  }

  // Backward, and the gradient of each step as soon as its beta is known.
  const int64_t C = a.C, Cv = round_up(C, W);
  double* lp_row = scratch<double>(kSlotRow, Cv);
  double* occ = scratch<double>(kSlotOcc, Cv);
  double* post = scratch<double>(kSlotPost, Lv);
  double* beta = scratch<double>(kSlotBeta, 2 * R);
  for (int64_t r = 0; r < 2; ++r) {
    double* p = beta + r * R;
    p[0] = p[1] = p[Lv + 2] = p[Lv + 3] = -kInf;
  }
  const double scale = a.grad_scale[n];
  const V vnll = vset<double>(nll), neg_inf = vset<double>(-kInf), zero = vset<double>(0.0);
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const S* row = x + t * a.st;
    for (int64_t c = 0; c < C; ++c) lp_row[c] = double(to_compute(row[c * a.sc]));
    for (int64_t c = C; c < Cv; ++c) lp_row[c] = -kInf;
    for (int64_t s = 0; s < L; ++s) em[s] = lp_row[lab[s]];
    for (int64_t s = L; s < Lv; ++s) em[s] = -kInf;

    double* b = beta + (t & 1) * R + 2;
    if (t == Tn - 1) {
      for (int64_t s = 0; s < Lv; ++s) b[s] = -kInf;
      b[L - 1] = em[L - 1];
      if (L > 1) b[L - 2] = em[L - 2];
    } else {
      const double* next = beta + ((t + 1) & 1) * R + 2;
      lse3_step(next, next + 1, next + 2, skip + 2, em, b, Lv);
    }

    // post[s] = exp(la_t(s) + lb_t(s) + loss - lp_t(l'_s)), 0 for unreachable states.
    const double* al = alpha_row(t);
    for (int64_t s = 0; s < Lv; s += W) {
      const V ab = vload(al + s) + vload(b + s);
      vstore(post + s, vselect(ab == neg_inf, zero, vexp(ab + vnll - vload(em + s))));
    }
    for (int64_t c = 0; c < Cv; ++c) occ[c] = 0.0;
    double blank_sum[4] = {0.0, 0.0, 0.0, 0.0};  // every even state is the blank
    for (int64_t s = 0; s < L; s += 2) blank_sum[(s / 2) & 3] += post[s];
    for (int64_t s = 1; s < L; s += 2) occ[lab[s]] += post[s];
    occ[a.blank] += (blank_sum[0] + blank_sum[1]) + (blank_sum[2] + blank_sum[3]);

    // grad_t(c) = scale * (exp(lp_t(c)) - occ(c)), written over occ.
    const V vscale = vset<double>(scale);
    for (int64_t c = 0; c < Cv; c += W)
      vstore(occ + c, (vexp(vload(lp_row + c)) - vload(occ + c)) * vscale);
    for (int64_t c = 0; c < C; ++c) put_grad(t, c, occ[c]);
  }
}

template <class S>
void ctc_loss_impl(const CtcArgs<S>& a) {
  // Work estimate for the thread count: a state costs about four transcendental functions,
  // weighed as 16 streamed elements; the gradient adds a row of C per step.
  int64_t work = 0;
  for (int64_t n = 0; n < a.N; ++n)
    work += (a.input_lengths[n] + 1) * (2 * a.target_lengths[n] + 1 + (a.grad ? a.C : 0));
  const int nt = threads_for(16 * work, a.N);
  // Samples one at a time to whichever thread is free (their lengths differ); run_parallel
  // rethrows a failed scratch allocation.
  std::atomic<int64_t> next{0};
  parallel_for(nt, [&](int, int) {
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < a.N;) ctc_sample(a, n);
  });
}

}  // namespace

extern const CtcTable ctc_table;
const CtcTable ctc_table = {
#define FASTLOSS_CTC_ROW(sfx, S) &ctc_loss_impl<S>,
    FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_CTC_ROW)
#undef FASTLOSS_CTC_ROW
};

}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
