// Run-time choice of the instruction set: the kernel file is compiled once per ISA into its own
// namespace (see CMakeLists.txt); here the best table the CPU supports is picked at load, unless
// the environment variable FASTLOSS_ISA names a lower one. Built without -march=native, so a
// wheel built on one x86-64 machine runs on any other; on other architectures only the portable
// baseline exists.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ctc.hpp"
#include "distributions.hpp"
#include "kernels.hpp"
#include "overlap.hpp"  // issue 16
#include "scale.hpp"

#if defined(FASTLOSS_X86)
#include <cpuid.h>
#endif

namespace fastloss {

namespace baseline {
extern const KernelTable table;
extern const PointwiseTable pointwise_table;
extern const DistributionTable distribution_table;
}
#if defined(FASTLOSS_X86)
namespace avx2 {
extern const KernelTable table;
extern const PointwiseTable pointwise_table;
extern const DistributionTable distribution_table;
}
namespace avx512 {
extern const KernelTable table;
extern const PointwiseTable pointwise_table;
extern const DistributionTable distribution_table;
}
#endif

namespace {

#if defined(FASTLOSS_X86)
// CPU features from CPUID itself rather than __builtin_cpu_supports, whose feature names
// differ between compilers (Clang 14 knows no "f16c"). A feature counts only if the operating
// system also saves its registers on a context switch (XCR0, read by xgetbv).
struct X86Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512dq = false, avx512bw = false, avx512vl = false;
};

X86Features detect_x86() {
  X86Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c >> 27 & 1, avx = c >> 28 & 1;
  if (!osxsave || !avx) return f;
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool os_avx = (xcr0_lo & 0x6) == 0x6;       // XMM and YMM state
  const bool os_avx512 = (xcr0_lo & 0xE6) == 0xE6;  // and opmask, ZMM0-15 high, ZMM16-31
  if (!os_avx) return f;
  f.fma = c >> 12 & 1;
  f.f16c = c >> 29 & 1;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = b >> 5 & 1;
  if (os_avx512) {
    f.avx512f = b >> 16 & 1;
    f.avx512dq = b >> 17 & 1;
    f.avx512bw = b >> 30 & 1;
    f.avx512vl = b >> 31 & 1;
  }
  return f;
}

const X86Features& x86() {
  static const X86Features f = detect_x86();
  return f;
}
#endif

struct Isa {
  const char* name;
  const KernelTable* table;
  const PointwiseTable* pointwise;
  const DistributionTable* distributions;
  bool (*cpu_has)();
};

const Isa kIsas[] = {  // best first
#if defined(FASTLOSS_X86)
    {"avx512", &avx512::table, &avx512::pointwise_table, &avx512::distribution_table,
     [] {
       const X86Features& f = x86();
       return f.avx512f && f.avx512dq && f.avx512bw && f.avx512vl && f.fma && f.f16c;
     }},
    {"avx2", &avx2::table, &avx2::pointwise_table, &avx2::distribution_table,
     [] {
       const X86Features& f = x86();
       return f.avx2 && f.fma && f.f16c;
     }},
#endif
    {"baseline", &baseline::table, &baseline::pointwise_table, &baseline::distribution_table,
     [] { return true; }},
};
constexpr int kNumIsas = sizeof(kIsas) / sizeof(kIsas[0]);

const char* const* names() {
  static const char* list[kNumIsas + 1] = {};
  for (int i = 0; i < kNumIsas; ++i) list[i] = kIsas[i].name;
  return list;
}

int find(const char* name) {
  for (int i = 0; i < kNumIsas; ++i)
    if (name && std::strcmp(kIsas[i].name, name) == 0) return i;
  return -1;
}

int initial_choice() {
  const int cap = find(std::getenv("FASTLOSS_ISA"));  // -1 (unset or unknown): no cap
  for (int i = cap < 0 ? 0 : cap; i < kNumIsas; ++i)
    if (kIsas[i].cpu_has()) return i;
  return kNumIsas - 1;
}

std::atomic<int> g_choice{initial_choice()};

const KernelTable& table() { return *kIsas[g_choice.load(std::memory_order_relaxed)].table; }
const PointwiseTable& pw_table() {
  return *kIsas[g_choice.load(std::memory_order_relaxed)].pointwise;
}
const DistributionTable& dist_table() {
  return *kIsas[g_choice.load(std::memory_order_relaxed)].distributions;
}

}  // namespace

const char* const* compiled_isas() { return names(); }
bool isa_supported(const char* name) {
  const int i = find(name);
  return i >= 0 && kIsas[i].cpu_has();
}
const char* active_isa() { return kIsas[g_choice.load()].name; }
bool set_isa(const char* name) {
  if (!isa_supported(name)) return false;
  g_choice.store(find(name));
  return true;
}

#define FASTLOSS_FORWARD(sfx, S)                                                           \
  void logsumexp(const SoftmaxArgs<S>& a) { table().logsumexp_##sfx(a); }                   \
  void softmax(const SoftmaxArgs<S>& a, bool log) { table().softmax_##sfx(a, log); }        \
  void cross_entropy(const CrossEntropyArgs<S>& a) { table().cross_entropy_##sfx(a); }      \
  void nll_loss(const NllArgs<S>& a) { table().nll_loss_##sfx(a); }                         \
  double pointwise(PointwiseArgs<S>& a) { return pw_table().pointwise_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD)
#undef FASTLOSS_FORWARD

void count_targets(const int64_t* t, int64_t n, int64_t n_classes, int64_t ignore_index,
                   int64_t* count, bool* any_bad) {
  table().count_targets(t, n, n_classes, ignore_index, count, any_bad);
}

#define FASTLOSS_FORWARD_DIST(sfx, S)                                                 \
  void kl_div_with_logits(const KlLogitsArgs<S>& a) {                                 \
    dist_table().kl_div_with_logits_##sfx(a);                                         \
  }                                                                                   \
  void gaussian_kl(const GaussianKlArgs<S>& a) { dist_table().gaussian_kl_##sfx(a); } \
  void multi_margin_loss(const MultiMarginArgs<S>& a) { dist_table().multi_margin_loss_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_DIST)
#undef FASTLOSS_FORWARD_DIST

// CTC (ctc.hpp): a table per instruction set, the one named like the ISA in use.
namespace baseline {
extern const CtcTable ctc_table;
}
#if defined(FASTLOSS_X86)
namespace avx2 {
extern const CtcTable ctc_table;
}
namespace avx512 {
extern const CtcTable ctc_table;
}
#endif
namespace {
const CtcTable& ctc_dispatch() {
#if defined(FASTLOSS_X86)
  const char* isa = active_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::ctc_table;
  if (std::strcmp(isa, "avx2") == 0) return avx2::ctc_table;
#endif
  return baseline::ctc_table;
}
}  // namespace
#define FASTLOSS_FORWARD_CTC(sfx, S) \
  void ctc_loss(const CtcArgs<S>& a) { ctc_dispatch().ctc_loss_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_CTC)
#undef FASTLOSS_FORWARD_CTC

// Sharded cross-entropy (scale.hpp): as CTC, the table of the ISA in use.
namespace baseline {
extern const ScaleTable scale_table;
}
#if defined(FASTLOSS_X86)
namespace avx2 {
extern const ScaleTable scale_table;
}
namespace avx512 {
extern const ScaleTable scale_table;
}
#endif
namespace {
const ScaleTable& scale_dispatch() {
#if defined(FASTLOSS_X86)
  const char* isa = active_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::scale_table;
  if (std::strcmp(isa, "avx2") == 0) return avx2::scale_table;
#endif
  return baseline::scale_table;
}
}  // namespace
#define FASTLOSS_FORWARD_SCALE(sfx, S)                                                         \
  void ce_shard_stats(const CeShardStatsArgs<S>& a) { scale_dispatch().ce_shard_stats_##sfx(a); } \
  void ce_shard_grad(const CeShardGradArgs<S>& a) { scale_dispatch().ce_shard_grad_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_SCALE)
#undef FASTLOSS_FORWARD_SCALE

// Issue 16: overlap losses and cosine similarity (overlap.hpp): as CTC, the table of the ISA
// in use.
namespace baseline {
extern const OverlapTable overlap_table;
}
#if defined(FASTLOSS_X86)
namespace avx2 {
extern const OverlapTable overlap_table;
}
namespace avx512 {
extern const OverlapTable overlap_table;
}
#endif
namespace {
const OverlapTable& overlap_dispatch() {
#if defined(FASTLOSS_X86)
  const char* isa = active_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::overlap_table;
  if (std::strcmp(isa, "avx2") == 0) return avx2::overlap_table;
#endif
  return baseline::overlap_table;
}
}  // namespace
#define FASTLOSS_FORWARD_OVERLAP(sfx, S)                                                     \
  void overlap_stats(const OverlapArgs<S>& a) { overlap_dispatch().overlap_stats_##sfx(a); } \
  void overlap_grad(const OverlapArgs<S>& a) { overlap_dispatch().overlap_grad_##sfx(a); }   \
  void cosine_similarity(const CosineArgs<S>& a) { overlap_dispatch().cosine_similarity_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_OVERLAP)
#undef FASTLOSS_FORWARD_OVERLAP
// (end of issue 16)

}  // namespace fastloss

// Issue 16: row losses (rowloss.hpp): as CTC, the table of the ISA in use.
#include "rowloss.hpp"
namespace fastloss {
namespace baseline {
extern const RowLossTable rowloss_table;
}
#if defined(FASTLOSS_X86)
namespace avx2 {
extern const RowLossTable rowloss_table;
}
namespace avx512 {
extern const RowLossTable rowloss_table;
}
#endif
namespace {
const RowLossTable& rowloss_dispatch() {
#if defined(FASTLOSS_X86)
  const char* isa = active_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::rowloss_table;
  if (std::strcmp(isa, "avx2") == 0) return avx2::rowloss_table;
#endif
  return baseline::rowloss_table;
}
}  // namespace
#define FASTLOSS_FORWARD_ROWLOSS(sfx, S)                                                        \
  void class_margin(const ClassMarginArgs<S>& a) { rowloss_dispatch().class_margin_##sfx(a); }  \
  void sparsemax(const SparsemaxArgs<S>& a) { rowloss_dispatch().sparsemax_##sfx(a); }          \
  void sparsemax_loss(const SparsemaxLossArgs<S>& a) {                                          \
    rowloss_dispatch().sparsemax_loss_##sfx(a);                                                 \
  }                                                                                             \
  void jensen_shannon(const JsdArgs<S>& a) { rowloss_dispatch().jensen_shannon_##sfx(a); }      \
  void ranking_softmax(const RankingSoftmaxArgs<S>& a) {                                        \
    rowloss_dispatch().ranking_softmax_##sfx(a);                                                \
  }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_ROWLOSS)
#undef FASTLOSS_FORWARD_ROWLOSS
}  // namespace fastloss

// issue 16: the PyTorch-catalogue pair losses (pairs.hpp), as CTC: the table of the ISA in use.
#include "pairs.hpp"
namespace fastloss {
namespace baseline {
extern const PairTable pair_table;
}
#if defined(FASTLOSS_X86)
namespace avx2 {
extern const PairTable pair_table;
}
namespace avx512 {
extern const PairTable pair_table;
}
#endif
namespace {
const PairTable& pair_dispatch() {
#if defined(FASTLOSS_X86)
  const char* isa = active_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::pair_table;
  if (std::strcmp(isa, "avx2") == 0) return avx2::pair_table;
#endif
  return baseline::pair_table;
}
}  // namespace
#define FASTLOSS_FORWARD_PAIR(sfx, S)                                                 \
  double pairwise(PairwiseArgs<S>& a) { return pair_dispatch().pairwise_##sfx(a); } \
  int64_t pairwise_count_invalid(const PairwiseArgs<S>& a) {                        \
    return pair_dispatch().pairwise_count_invalid_##sfx(a);                         \
  }                                                                                 \
  void multilabel_margin(const MultilabelMarginArgs<S>& a) {                        \
    pair_dispatch().multilabel_margin_##sfx(a);                                     \
  }                                                                                 \
  void triplet_margin(const TripletArgs<S>& a) { pair_dispatch().triplet_margin_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_PAIR)
#undef FASTLOSS_FORWARD_PAIR
}  // namespace fastloss
