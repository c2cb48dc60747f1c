// Run-time choice of the instruction set: the kernel files are compiled once per ISA into their
// own namespace (see CMakeLists.txt); here the best ISA the CPU supports is picked at load,
// unless the environment variable FASTLOSS_ISA names a lower one, and every call goes through
// that ISA's tables. Built without -march=native, so a wheel built on one x86-64 machine runs on
// any other; on other architectures only the portable baseline exists. FASTLOSS_AVX2 and
// FASTLOSS_AVX512 say which x86 ISAs this build compiled (all of them but in .ci/sanitize's
// instrumented build, which compiles only those its CPU can run).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ctc.hpp"
#include "distributions.hpp"
#include "kernels.hpp"
#include "overlap.hpp"
#include "pairs.hpp"
#include "rowloss.hpp"
#include "scale.hpp"

#if defined(FASTLOSS_X86)
#include <cpuid.h>
#endif

// The tables of one ISA's kernel files (defined there, in namespace fastloss::<isa>).
#define FASTLOSS_ISA_TABLES(isa)                     \
  namespace isa {                                    \
  extern const KernelTable table;                    \
  extern const PointwiseTable pointwise_table;       \
  extern const DistributionTable distribution_table; \
  extern const CtcTable ctc_table;                   \
  extern const ScaleTable scale_table;               \
  extern const OverlapTable overlap_table;           \
  extern const RowLossTable rowloss_table;           \
  extern const PairTable pair_table;                 \
  }
// An entry of kIsas: its name, tables and CPU check.
#define FASTLOSS_ISA_ENTRY(isa, cpu_has)                                                   \
  {#isa, &isa::table, &isa::pointwise_table, &isa::distribution_table, &isa::ctc_table,    \
   &isa::scale_table, &isa::overlap_table, &isa::rowloss_table, &isa::pair_table, cpu_has}

namespace fastloss {

FASTLOSS_ISA_TABLES(baseline)
#if defined(FASTLOSS_AVX2)
FASTLOSS_ISA_TABLES(avx2)
#endif
#if defined(FASTLOSS_AVX512)
FASTLOSS_ISA_TABLES(avx512)
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

[[maybe_unused]] const X86Features& x86() {
  static const X86Features f = detect_x86();
  return f;
}
#endif

struct Isa {
  const char* name;
  const KernelTable* table;
  const PointwiseTable* pointwise;
  const DistributionTable* distributions;
  const CtcTable* ctc;
  const ScaleTable* scale;
  const OverlapTable* overlap;
  const RowLossTable* rowloss;
  const PairTable* pairs;
  bool (*cpu_has)();
};

const Isa kIsas[] = {  // best first
#if defined(FASTLOSS_AVX512)
    FASTLOSS_ISA_ENTRY(avx512,
                       [] {
                         const X86Features& f = x86();
                         return f.avx512f && f.avx512dq && f.avx512bw && f.avx512vl && f.fma &&
                                f.f16c;
                       }),
#endif
#if defined(FASTLOSS_AVX2)
    FASTLOSS_ISA_ENTRY(avx2,
                       [] {
                         const X86Features& f = x86();
                         return f.avx2 && f.fma && f.f16c;
                       }),
#endif
    FASTLOSS_ISA_ENTRY(baseline, [] { return true; }),
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

const Isa& isa() { return kIsas[g_choice.load(std::memory_order_relaxed)]; }
const KernelTable& table() { return *isa().table; }
const PointwiseTable& pw_table() { return *isa().pointwise; }
const DistributionTable& dist_table() { return *isa().distributions; }
const CtcTable& ctc_dispatch() { return *isa().ctc; }
const ScaleTable& scale_dispatch() { return *isa().scale; }
const OverlapTable& overlap_dispatch() { return *isa().overlap; }
const RowLossTable& rowloss_dispatch() { return *isa().rowloss; }
const PairTable& pair_dispatch() { return *isa().pairs; }

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

#define FASTLOSS_FORWARD_CTC(sfx, S) \
  void ctc_loss(const CtcArgs<S>& a) { ctc_dispatch().ctc_loss_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_CTC)
#undef FASTLOSS_FORWARD_CTC

#define FASTLOSS_FORWARD_SCALE(sfx, S)                                                         \
  void ce_shard_stats(const CeShardStatsArgs<S>& a) { scale_dispatch().ce_shard_stats_##sfx(a); } \
  void ce_shard_grad(const CeShardGradArgs<S>& a) { scale_dispatch().ce_shard_grad_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_SCALE)
#undef FASTLOSS_FORWARD_SCALE

#define FASTLOSS_FORWARD_OVERLAP(sfx, S)                                                     \
  void overlap_stats(const OverlapArgs<S>& a) { overlap_dispatch().overlap_stats_##sfx(a); } \
  void overlap_grad(const OverlapArgs<S>& a) { overlap_dispatch().overlap_grad_##sfx(a); }   \
  void cosine_similarity(const CosineArgs<S>& a) { overlap_dispatch().cosine_similarity_##sfx(a); }
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_FORWARD_OVERLAP)
#undef FASTLOSS_FORWARD_OVERLAP

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
