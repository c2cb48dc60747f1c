// Entry point of the connectionist temporal classification loss (torch.nn.functional.ctc_loss);
// kernel in ctc.cpp. Pure C++, as kernels.hpp: raw pointers, extents and strides.
#pragma once

#include "kernels.hpp"

namespace fastloss {

// log_probs is (T, N, C) with element strides (st, sn, sc) (any sign). Sample n uses the time
// steps t < input_lengths[n] and the labels targets[target_offset[n] + k], k < target_lengths[n]
// (checked before the call: 0 <= lengths, input_lengths <= T, labels in [0, C); the Python
// layer also rejects labels equal to the blank).
// Per sample, loss[n] = -log p(target | log_probs) in float64 (+inf when no alignment exists).
// The gradient is PyTorch's (ctc_loss_backward):
//   grad[t, n, c] = grad_scale[n] * (exp(lp_t(c)) - sum_{s: l'_s = c} exp(la_t(s) + lb_t(s)
//                                                     + loss[n] - lp_t(c)))
// for t < input_lengths[n], 0 after; lp_t(c) = lp[t, n, c]; la, lb the log alpha and beta of
// the extended labels l' (ctc.cpp).
// An infinite loss gives NaN there (as PyTorch), or 0 everywhere with zero_infinity.
template <class S>
struct CtcArgs {
  const S* log_probs = nullptr;
  int64_t T = 0, N = 0, C = 0;
  int64_t st = 0, sn = 0, sc = 0;
  const int64_t* targets = nullptr;         // labels, contiguous
  const int64_t* target_offset = nullptr;   // (N): where sample n's labels start in targets
  const int64_t* input_lengths = nullptr;   // (N)
  const int64_t* target_lengths = nullptr;  // (N)
  int64_t blank = 0;
  bool zero_infinity = false;
  double* loss = nullptr;              // (N) contiguous, always written
  const double* grad_scale = nullptr;  // (N): d(returned loss) / d(loss[n]); with grad only
  S* grad = nullptr;                   // (T, N, C) with strides (gt, gn, gc); or nullptr
  int64_t gt = 0, gn = 0, gc = 0;
};

// One table per instruction set (ctc.cpp is compiled once for each, into fastloss::<isa>);
// dispatch.cpp picks the one of the instruction set in use.
struct CtcTable {
#define FASTLOSS_CTC_ENTRY(sfx, S) void (*ctc_loss_##sfx)(const CtcArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_CTC_ENTRY)
#undef FASTLOSS_CTC_ENTRY
};

#define FASTLOSS_DECLARE_CTC(sfx, S) void ctc_loss(const CtcArgs<S>& a);
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE_CTC)
#undef FASTLOSS_DECLARE_CTC

}  // namespace fastloss
