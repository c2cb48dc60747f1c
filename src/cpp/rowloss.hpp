// Entry points of the row losses of issue 16: the multi-class hinge (Crammer-Singer) and
// perceptron losses, sparsemax and the sparsemax loss, the generalized Jensen-Shannon divergence
// of logits, and the listwise ranking softmax loss; kernels in rowloss.cpp.
// Pure C++, as kernels.hpp: raw pointers, extents and strides. Every row is the axis 1 of a
// Layout3 (any axis of any N-d array, any strides); per-row losses are float64.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace fastloss {

// Multi-class hinge (Crammer-Singer), per row s with target y (margin 0: the perceptron loss):
//   z = (max_{j != y} s_j - s_y) + margin,  loss = max(0, z);
//   gradient: with K the maximisers of (z_j for j != y, 0 for y), z_j = (s_j - s_y) + margin,
//   d loss / d s_k = [k in K] / |K| - [k = y]  (jax.grad of optax's max formula, ties shared).
template <class S>
struct ClassMarginArgs {
  const S* x = nullptr;
  Layout3 lx;
  const int64_t* target = nullptr;  // (rows) contiguous, in [0, C) (checked before the call)
  double margin = 1.0;
  double grad_scale = 1.0;  // d(returned loss) / d(per-row loss)
  double* loss = nullptr;   // per-row loss (rows) contiguous
  S* grad = nullptr;        // layout lg; or nullptr for loss only
  Layout3 lg;
};

// sparsemax(x) = argmin_{p in simplex} ||p - x||^2 = max(0, x - tau), sum = 1, per row.
template <class S>
struct SparsemaxArgs {
  const S* x = nullptr;
  Layout3 lx;
  S* out = nullptr;  // layout lo
  Layout3 lo;
};

// Sparsemax loss (Martins & Astudillo 2016; the Fenchel-Young loss of the Gini negentropy), per
// row z with p = sparsemax(z) and target q (one-hot e_y for class indices):
//   loss = sum_j (p_j - q_j) z_j + 0.5 (sum_j q_j^2 - sum_j p_j^2),  d loss / d z = p - q.
template <class S>
struct SparsemaxLossArgs {
  using T = compute_t<S>;
  const S* x = nullptr;
  Layout3 lx;
  const int64_t* target = nullptr;  // class indices (rows) contiguous; or nullptr
  const T* probs = nullptr;         // target probabilities with layout lp; or nullptr
  Layout3 lp;
  double grad_scale = 1.0;
  double* loss = nullptr;
  S* grad = nullptr;
  Layout3 lg;
};

// Generalized Jensen-Shannon divergence (Liger-Kernel's), per row, P = softmax(teacher / T),
// Q = softmax(student / T), M = beta P + (1 - beta) Q:
//   beta = 0: KL(P || Q);  beta = 1: KL(Q || P);
//   else:     beta KL(P || M) + (1 - beta) KL(Q || M);   gradient w.r.t. the student logits.
template <class S>
struct JsdArgs {
  const S* student = nullptr;
  Layout3 ls;
  const S* teacher = nullptr;
  Layout3 lt;
  double beta = 0.5;
  double temperature = 1.0;
  double grad_scale = 1.0;
  double* loss = nullptr;
  S* grad = nullptr;
  Layout3 lg;
};

// Listwise ranking softmax loss (optax's), per row of scores s, graded labels y and a mask w
// (items with w = 0 are left out): loss = -sum_{w_i} y_i log softmax_{w}(s)_i; a row without
// any item in the mask has loss 0 and gradient 0.
template <class S>
struct RankingSoftmaxArgs {
  using T = compute_t<S>;
  const S* x = nullptr;
  Layout3 lx;
  const T* labels = nullptr;  // layout ly (may have zero strides: broadcast)
  Layout3 ly;
  const uint8_t* where = nullptr;  // layout lw; or nullptr (every item counts)
  Layout3 lw;
  double grad_scale = 1.0;
  double* loss = nullptr;
  S* grad = nullptr;
  Layout3 lg;
};

// One table per instruction set (rowloss.cpp is compiled once for each, into namespace
// fastloss::<isa>); dispatch.cpp picks the one matching the kernel table in use.
struct RowLossTable {
#define FASTLOSS_ROWLOSS_ENTRIES(sfx, S)                           \
  void (*class_margin_##sfx)(const ClassMarginArgs<S>&);           \
  void (*sparsemax_##sfx)(const SparsemaxArgs<S>&);                \
  void (*sparsemax_loss_##sfx)(const SparsemaxLossArgs<S>&);       \
  void (*jensen_shannon_##sfx)(const JsdArgs<S>&);                 \
  void (*ranking_softmax_##sfx)(const RankingSoftmaxArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_ROWLOSS_ENTRIES)
#undef FASTLOSS_ROWLOSS_ENTRIES
};

#define FASTLOSS_DECLARE_ROWLOSS(sfx, S)                 \
  void class_margin(const ClassMarginArgs<S>& a);        \
  void sparsemax(const SparsemaxArgs<S>& a);             \
  void sparsemax_loss(const SparsemaxLossArgs<S>& a);    \
  void jensen_shannon(const JsdArgs<S>& a);              \
  void ranking_softmax(const RankingSoftmaxArgs<S>& a);
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE_ROWLOSS)
#undef FASTLOSS_DECLARE_ROWLOSS

}  // namespace fastloss
