// Entry points of the overlap losses (Dice, Tversky, generalized Dice: segmentation) and of
// the cosine similarity of two arrays over an axis; kernels in overlap.cpp. Pure C++, as
// kernels.hpp: raw pointers, extents and strides.
#pragma once

#include "kernels.hpp"

namespace fastloss {

// How class scores become probabilities in the overlap losses.
enum class OverlapActivation : int {
  kNone = 0,     // the input holds probabilities already
  kSoftmax = 1,  // softmax over the class axis
  kSigmoid = 2,  // sigmoid of each element (a single foreground channel)
};

// Overlap statistics and their gradient over an (N, C, S) input: class axis 1, S spatial
// positions per sample. With p the probabilities and t the targets of class c in sample n:
//   stats pass:    I_nc = sum_i p t,  P_nc = sum_i p,  T_nc = sum_i t
//   gradient pass: d loss / d p = A_nc t + B_nc (A, B from the caller, who turns the statistics
//                  into a loss), chained through the activation onto the input.
template <class S>
struct OverlapArgs {
  using T = compute_t<S>;
  const S* x = nullptr;  // scores or probabilities, layout lx (n0 = N, n1 = C, n2 = S)
  Layout3 lx;
  const T* target = nullptr;  // dense targets (one-hot or probabilities) with layout lt; or
  Layout3 lt;                 //   nullptr, and then
  const int64_t* index = nullptr;  // class indices (N * S) contiguous, index[n * S + i] in [0, C)
  OverlapActivation act = OverlapActivation::kSoftmax;
  int64_t chunk = 4096;       // positions per partial sum (a multiple of 64)
  double* partial = nullptr;  // stats pass: (N, ceil(S / chunk), C, 3) contiguous
  const double* coef_a = nullptr;  // gradient pass: (N, C) contiguous each
  const double* coef_b = nullptr;
  S* grad = nullptr;  // gradient pass: layout lg
  Layout3 lg;
};

// Cosine similarity over axis 1 of (n0, D, n2) arrays x1, x2 (already broadcast to one shape;
// strides may be 0): per row, with norms clamped below at eps,
//   cos = x1 . x2 / (max(|x1|, eps) max(|x2|, eps)),
// and with gradients, for grad_scale g:
//   d cos / d x1 = g [x2 / max(|x2|, eps) - [|x1| > eps] cos x1 / |x1|] / max(|x1|, eps)
// (likewise for x2). Rows whose float64 sums overflow (float64 values beyond ~1e150) are
// summed again scaled by their largest element; likewise rows below ~1e-150).
template <class S>
struct CosineArgs {
  const S* x1 = nullptr;
  Layout3 l1;
  const S* x2 = nullptr;
  Layout3 l2;
  double eps = 1e-8;
  double grad_scale = 1.0;
  double* cos = nullptr;  // per-row cosine (rows) contiguous, always written
  S* grad1 = nullptr;     // layout lg1; both gradients or neither
  Layout3 lg1;
  S* grad2 = nullptr;
  Layout3 lg2;
};

// One table per instruction set (overlap.cpp is compiled once for each, into namespace
// fastloss::<isa>); dispatch.cpp picks the one named like the kernel table in use.
struct OverlapTable {
#define FASTLOSS_OVERLAP_ENTRIES(sfx, S)                \
  void (*overlap_stats_##sfx)(const OverlapArgs<S>&); \
  void (*overlap_grad_##sfx)(const OverlapArgs<S>&);  \
  void (*cosine_similarity_##sfx)(const CosineArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_OVERLAP_ENTRIES)
#undef FASTLOSS_OVERLAP_ENTRIES
};

#define FASTLOSS_DECLARE_OVERLAP(sfx, S)      \
  void overlap_stats(const OverlapArgs<S>& a); \
  void overlap_grad(const OverlapArgs<S>& a);  \
  void cosine_similarity(const CosineArgs<S>& a);
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE_OVERLAP)
#undef FASTLOSS_DECLARE_OVERLAP

}  // namespace fastloss
