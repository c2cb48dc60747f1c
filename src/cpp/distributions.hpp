// Entry points of the distribution losses (KL divergence of logits for distillation, the
// Gaussian KL term of a VAE) and of the multi-class margin loss; kernels in distributions.cpp.
// Pure C++, as kernels.hpp: raw pointers, extents and strides.
#pragma once

#include "kernels.hpp"

namespace fastloss {

// Distillation: per row of (n0, C, n2) logits (class axis 1), with q = softmax(teacher / tau),
// p = softmax(student / tau):  loss = tau^2 sum_j q_j (log q_j - log p_j),
// d loss / d student_j = tau (p_j - q_j), times grad_scale in the gradient.
template <class S>
struct KlLogitsArgs {
  const S* student = nullptr;
  Layout3 ls;
  const S* teacher = nullptr;  // same extents as the student (any strides)
  Layout3 lt;
  double temperature = 1.0;  // tau > 0, finite
  double grad_scale = 1.0;   // d(returned loss) / d(per-row loss)
  double* loss = nullptr;    // per-row loss (rows) contiguous, always written
  S* grad = nullptr;         // gradient with layout lg; or nullptr for loss only
  Layout3 lg;
};

// Gaussian KL of a diagonal Gaussian against N(0, 1), per row over axis 1 of (n0, C, 1):
//   loss = 0.5 sum_j (mu_j^2 + expm1(lv_j) - lv_j),
//   d / d mu = grad_scale mu,  d / d lv = grad_scale 0.5 expm1(lv).
template <class S>
struct GaussianKlArgs {
  const S* mu = nullptr;
  Layout3 lm;
  const S* logvar = nullptr;
  Layout3 lv;
  double grad_scale = 1.0;
  double* loss = nullptr;  // per-row loss (rows) contiguous
  S* grad_mu = nullptr;    // layout lgm; both gradients or neither
  Layout3 lgm;
  S* grad_logvar = nullptr;  // layout lgv
  Layout3 lgv;
};

// Multi-class margin loss (torch.nn.functional.multi_margin_loss), rows of (n0, C, n2) with
// class axis 1, target t:  loss = w_t / C sum_{j != t} max(0, margin - x_t + x_j)^p, p in {1, 2}.
template <class S>
struct MultiMarginArgs {
  using T = compute_t<S>;
  const S* x = nullptr;
  Layout3 lx;
  const int64_t* target = nullptr;  // (rows) contiguous, in [0, C) (checked before the call)
  const T* weight = nullptr;        // per-class weights (C) contiguous; or nullptr
  int p = 1;
  double margin = 1.0;
  double grad_scale = 1.0;
  double* loss = nullptr;
  S* grad = nullptr;
  Layout3 lg;
};

// One table per instruction set (distributions.cpp is compiled once for each, into namespace
// fastloss::<isa>); dispatch.cpp picks the one matching the kernel table in use.
struct DistributionTable {
#define FASTLOSS_DIST_ENTRIES(sfx, S)                       \
  void (*kl_div_with_logits_##sfx)(const KlLogitsArgs<S>&); \
  void (*gaussian_kl_##sfx)(const GaussianKlArgs<S>&);      \
  void (*multi_margin_loss_##sfx)(const MultiMarginArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DIST_ENTRIES)
#undef FASTLOSS_DIST_ENTRIES
};

#define FASTLOSS_DECLARE_DIST(sfx, S)                \
  void kl_div_with_logits(const KlLogitsArgs<S>& a); \
  void gaussian_kl(const GaussianKlArgs<S>& a);      \
  void multi_margin_loss(const MultiMarginArgs<S>& a);
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE_DIST)
#undef FASTLOSS_DECLARE_DIST

}  // namespace fastloss
