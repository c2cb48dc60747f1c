// Entry points of issue 16's PyTorch-catalogue losses (kernels in pairs.cpp): elementwise losses
// of up to two differentiable operands (Poisson and Gaussian NLL, margin ranking, hinge
// embedding, soft margin, multilabel soft margin, log-cosh, generalized KL), fused loss and
// gradient in one pass; and the multilabel margin loss over rows. Pure C++, as kernels.hpp.
#pragma once

#include "kernels.hpp"

namespace fastloss {

// The elementwise losses; formulas in pairs.cpp above each functor.
enum class PairKind {
  kPoissonNll,           // x, y; p0 = eps, log_input, full
  kGaussianNll,          // x, x2 = var, y; p0 = eps, full
  kMarginRanking,        // x, x2, y; p0 = margin
  kHingeEmbedding,       // x, y in {-1, +1}; p0 = margin
  kSoftMargin,           // x, y
  kMultilabelSoftMargin, // x, y, optional w (BCE with logits, weighted)
  kLogCosh,              // x, y
  kGeneralizedKl,        // x (log-predictions), y (targets >= 0)
};

// Every operand contiguous with n elements (broadcast in Python). Differentiable operands (x,
// x2) in the storage type S; targets and weights in the compute type.
template <class S>
struct PairwiseArgs {
  using T = compute_t<S>;
  PairKind kind = PairKind::kLogCosh;
  int64_t n = 0;
  const S* x = nullptr;
  const S* x2 = nullptr;  // second differentiable operand (input2 / var), or nullptr
  const T* y = nullptr;   // target / label
  const T* w = nullptr;   // elementwise weights, or nullptr
  double p0 = 0.0;
  bool log_input = true;  // poisson_nll
  bool full = false;      // poisson_nll (Stirling term), gaussian_nll (0.5 log 2 pi)
  double grad_scale = 1.0;
  T* loss = nullptr;   // per-element (weighted) losses, or nullptr
  S* grad = nullptr;   // d / d x, or nullptr
  S* grad2 = nullptr;  // d / d x2 (only where x2 is differentiable), or nullptr
  // out: elements with an invalid operand (negative var, label not +-1, negative
  // generalized-KL target, negative Poisson rate); the caller raises after the call.
  int64_t n_bad = 0;
};

// multilabel_margin_loss (torch), rows of (rows, C) scores with strides (s0, s1), targets
// (rows, C) int64 contiguous: the row's target classes are its entries before the first -1
// (all checked in [-1, C) by the caller). Per row:
//   loss = sum_{j in targets} sum_{i not a target} max(0, 1 - (x_j - x_i)) / C
template <class S>
struct MultilabelMarginArgs {
  const S* x = nullptr;
  int64_t rows = 0, C = 0, s0 = 0, s1 = 0;
  const int64_t* target = nullptr;
  double grad_scale = 1.0;
  double* loss = nullptr;  // per-row (rows) contiguous
  S* grad = nullptr;       // (rows, C) with strides (g0, g1), or nullptr
  int64_t g0 = 0, g1 = 0;
};

// triplet_margin_loss (torch), per row of anchors a, positives p and negatives n (rows, D), each
// with its own strides, in float64 whatever the storage type:
//   d(u, v) = ||u - v + eps||_q (q = norm_p: 1, 2, inf or any q > 0, by |x| / max|x| for the
//   others), d_neg = swap ? min(d(a, n), d(p, n)) : d(a, n), loss = max(0, margin + d(a, p) - d_neg)
// and, with ga (then gp and gn too), the gradients as PyTorch's autograd (see
// embeddings.triplet_margin_loss), times grad_scale on rows with margin + d(a, p) - d_neg >= 0.
template <class S>
struct TripletArgs {
  const S *a = nullptr, *p = nullptr, *n = nullptr;
  int64_t rows = 0, D = 0;
  int64_t a0 = 0, a1 = 0, p0 = 0, p1 = 0, n0 = 0, n1 = 0;  // row and element strides
  double margin = 1.0, norm_p = 2.0, eps = 1e-6;
  bool swap = false;
  double grad_scale = 1.0;
  double* loss = nullptr;  // per-row (rows) contiguous
  S *ga = nullptr, *gp = nullptr, *gn = nullptr;  // (rows, D) C order, or all nullptr
};

struct PairTable {
#define FASTLOSS_PAIR_ENTRIES(sfx, S)                               \
  double (*pairwise_##sfx)(PairwiseArgs<S>&);                       \
  int64_t (*pairwise_count_invalid_##sfx)(const PairwiseArgs<S>&); \
  void (*multilabel_margin_##sfx)(const MultilabelMarginArgs<S>&);  \
  void (*triplet_margin_##sfx)(const TripletArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_PAIR_ENTRIES)
#undef FASTLOSS_PAIR_ENTRIES
};

// pairwise_count_invalid: only the check of pairwise's n_bad, reading only the operand checked
// (a check before a call that writes into a caller's buffer).
#define FASTLOSS_DECLARE_PAIR(sfx, S)                              \
  double pairwise(PairwiseArgs<S>& a); /* the sum of the losses */ \
  int64_t pairwise_count_invalid(const PairwiseArgs<S>& a);       \
  void multilabel_margin(const MultilabelMarginArgs<S>& a);       \
  void triplet_margin(const TripletArgs<S>& a);
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE_PAIR)
#undef FASTLOSS_DECLARE_PAIR

}  // namespace fastloss
