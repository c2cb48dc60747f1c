// Entry points of vocabulary-sharded cross-entropy (fastloss/scale.py); kernels in the "sharded
// cross-entropy" section of softmax_ce.cpp, which reuse its blockwise row statistics. Pure C++,
// as kernels.hpp: raw pointers, extents and strides.
#pragma once

#include "kernels.hpp"

namespace fastloss {

// Statistics of one shard of the class axis: the shard's logits are x (rows, V, n2 as Layout3)
// and hold the global classes class_offset .. class_offset + V - 1. Per row r, with t the
// row's (global) target, in the shard when t != ignore_index and 0 <= t - class_offset < V,
// x' the logits after soft-capping (softcap > 0) and m = max_j x'_j:
//   max[r]          m (NaN if the shard's row has a NaN)
//   sumexp[r]       sum_{j != target} exp(x'_j - m): the target's own term is left out, so that
//                   the merge can keep a confident row's small loss (see scale.py)
//   target_logit[r] x'_t where the target is in the shard, else 0; has_target[r] 1 / 0
//   sum_logits[r]   sum_j x'_j
// A shard row with no finite maximum gives sumexp 0 (all -inf) or NaN (+inf or NaN).
template <class S>
struct CeShardStatsArgs {
  const S* x = nullptr;
  Layout3 lx;
  const int64_t* target = nullptr;  // (rows) contiguous, global class indices
  int64_t class_offset = 0;
  int64_t ignore_index = -100;
  double softcap = 0.0;  // > 0: the logits pass through softcap * tanh(x / softcap) first
  double* max = nullptr;  // the outputs, (rows) contiguous each
  double* sumexp = nullptr;
  double* target_logit = nullptr;
  double* sum_logits = nullptr;
  uint8_t* has_target = nullptr;
};

// The shard's slice of the gradient of the full rows' loss, given the merged statistics:
//   grad_j = p_coef[r] * exp(x'_j - ref[r]) - u       (j not the target)
//   grad_t = t_value[r]                               (the target, when in the shard)
// times dx'_j/dx_j = 1 - tanh^2(x_j / softcap) with soft-capping. ref is the row's global
// maximum (so exp never overflows); the caller folds 1/sum, the reduction's scale, z-loss and
// label smoothing into p_coef, t_value and u. Rows whose target is ignore_index get 0; rows
// with a non-finite ref (NaN, +inf or all -inf somewhere in the full row) get NaN.
template <class S>
struct CeShardGradArgs {
  const S* x = nullptr;
  Layout3 lx;
  const int64_t* target = nullptr;
  int64_t class_offset = 0;
  int64_t ignore_index = -100;
  double softcap = 0.0;
  const double* ref = nullptr;  // (rows) each
  const double* p_coef = nullptr;
  const double* t_value = nullptr;
  double u = 0.0;
  S* grad = nullptr;  // layout lg; may be x itself
  Layout3 lg;
};

// One table per instruction set (softmax_ce.cpp is compiled once for each); dispatch.cpp picks
// the one of the instruction set in use.
struct ScaleTable {
#define FASTLOSS_SCALE_ENTRY(sfx, S)                                \
  void (*ce_shard_stats_##sfx)(const CeShardStatsArgs<S>&);        \
  void (*ce_shard_grad_##sfx)(const CeShardGradArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_SCALE_ENTRY)
#undef FASTLOSS_SCALE_ENTRY
};

#define FASTLOSS_DECLARE_SCALE(sfx, S)                 \
  void ce_shard_stats(const CeShardStatsArgs<S>& a);   \
  void ce_shard_grad(const CeShardGradArgs<S>& a);
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE_SCALE)
#undef FASTLOSS_DECLARE_SCALE

}  // namespace fastloss
