// Entry points of the C++ core. Pure C++: raw pointers, extents and strides; no Python here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace fastloss {

// Storage types, both computed in float32: float16 holds the bits of an IEEE half (NumPy's
// float16), bfloat16 those of the top half of a float32 (as ml_dtypes stores it). Bit patterns
// with explicit conversions (simd_math.hpp), not the compiler's _Float16: Clang 14 has no
// _Float16 on x86 and MSVC none at all, and without AVX512-FP16 GCC converts a scalar
// _Float16 through a libgcc call anyway.
struct float16 {
  uint16_t bits;
};
struct bfloat16 {
  uint16_t bits;
};
template <class S> struct ComputeType { using type = float; };
template <> struct ComputeType<double> { using type = double; };
template <class S> using compute_t = typename ComputeType<S>::type;

// A logical (n0, n1, n2) array whose axis 1 is the reduction (class) axis; strides are in
// elements. Row r = o * n2 + i (o < n0, i < n2) is the n1 elements at o*s0 + i*s2 + j*s1.
// Any axis of any N-d array maps onto this: n0 = prod(shape[:axis]), n1 = shape[axis],
// n2 = prod(shape[axis+1:]).
struct Layout3 {
  int64_t n0 = 0, n1 = 0, n2 = 0;
  int64_t s0 = 0, s1 = 0, s2 = 0;
  int64_t rows() const { return n0 * n2; }
  // (no division for the common n2 == 1: a 64-bit division per row costs more than a short row)
  int64_t offset(int64_t r) const { return n2 == 1 ? r * s0 : (r / n2) * s0 + (r % n2) * s2; }
};

// S is the storage type of the inputs and outputs named x/out/grad (float, double, float16,
// bfloat16); weights and probabilities are in the compute type compute_t<S>.
template <class S> struct SoftmaxArgs {
  const S* x = nullptr;
  Layout3 lx;
  S* out = nullptr;  // logsumexp: (rows) contiguous; softmax/log_softmax: layout lo
  Layout3 lo;
};

template <class S> struct CrossEntropyArgs {
  using T = compute_t<S>;
  const S* x = nullptr;  // logits
  Layout3 lx;
  const int64_t* target = nullptr;  // class indices, (rows) contiguous; or nullptr
  const T* probs = nullptr;         // class probabilities with layout lp; or nullptr
  Layout3 lp;
  const T* weight = nullptr;  // per-class weights (n1) contiguous; or nullptr
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  double grad_scale = 1.0;  // d(returned loss) / d(per-row loss), e.g. 1/sum(w) for "mean"
  double z_loss = 0.0;      // adds z_loss * lse^2 per row (times w_t for index targets)
  double softcap = 0.0;     // > 0: logits pass through softcap * tanh(x / softcap) first
  bool focal = false;       // softmax focal loss (index targets; weight = alpha per class)
  double focal_gamma = 0.0;
  double* loss = nullptr;   // per-row loss (rows) contiguous, always written
  S* grad = nullptr;        // gradient with layout lg; or nullptr for loss only
  Layout3 lg;
  bool grad_fresh = false;  // grad is a fresh allocation (pages not yet touched): a hint
  // Statistics from the same pass (return_lse, return_token_accuracy), (rows) contiguous:
  double* lse = nullptr;       // log-sum-exp of the (soft-capped) row, every row; or nullptr
  uint8_t* correct = nullptr;  // index targets: 1 where NumPy's argmax of the row is the
                               // target, 0 elsewhere (ignored rows: 0); or nullptr
};

template <class S> struct NllArgs {
  using T = compute_t<S>;
  const S* x = nullptr;  // log-probabilities
  Layout3 lx;
  const int64_t* target = nullptr;
  const T* weight = nullptr;
  int64_t ignore_index = -100;
  double grad_scale = 1.0;
  double* loss = nullptr;
  S* grad = nullptr;
  Layout3 lg;
};

// One table of kernels per instruction set (softmax_ce.cpp is compiled once for each, into
// namespace fastloss::<isa>); dispatch.cpp picks one at import by CPUID.
// Pointwise losses (pointwise.cpp): all operands contiguous, n elements, already broadcast.
enum class PointwiseKind {
  kMse, kL1, kHuber, kSmoothL1, kBceLogits, kBce, kSigmoidFocal, kHinge, kKlDiv
};
template <class S> struct PointwiseArgs {
  using T = compute_t<S>;
  PointwiseKind kind = PointwiseKind::kMse;
  int64_t n = 0;
  const S* x = nullptr;           // predictions (logits or probabilities)
  const T* y = nullptr;           // targets
  const T* w = nullptr;           // elementwise weights, or nullptr
  const T* pos_weight = nullptr;  // BCE with logits: positive-class weights, or nullptr
  double p0 = 0, p1 = 0;          // delta / beta / (alpha, gamma) / (margin, squared)
  double grad_scale = 1.0;
  T* loss = nullptr;  // per-element weighted losses (reduction "none"), or nullptr
  S* grad = nullptr;  // gradient, or nullptr
  // hinge: counts of labels equal to -1, equal to 0, and not in {-1, 0, +1} (label 0 is read
  // as -1); bce: [2] counts probabilities outside [0, 1]. The caller rejects them after the call.
  int64_t label_counts[3] = {0, 0, 0};
};

// The storage types every kernel is instantiated for: X(suffix, type).
#define FASTLOSS_FOR_EACH_DTYPE(X) X(f32, float) X(f64, double) X(f16, float16) X(bf16, bfloat16)

struct KernelTable {
  const char* name;
#define FASTLOSS_TABLE_ENTRIES(sfx, S)                  \
  void (*logsumexp_##sfx)(const SoftmaxArgs<S>&);       \
  void (*softmax_##sfx)(const SoftmaxArgs<S>&, bool);   \
  void (*cross_entropy_##sfx)(const CrossEntropyArgs<S>&); \
  void (*nll_loss_##sfx)(const NllArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_TABLE_ENTRIES)
#undef FASTLOSS_TABLE_ENTRIES
  // class-index targets t[0:n): how many are not ignore_index, and whether any of those is
  // outside [0, n_classes) (one thread's range; compiled per ISA so that the 64-bit compares
  // are vector ones)
  void (*count_targets)(const int64_t* t, int64_t n, int64_t n_classes, int64_t ignore_index,
                        int64_t* count, bool* any_bad);
};

struct PointwiseTable {
#define FASTLOSS_PW_ENTRY(sfx, S) double (*pointwise_##sfx)(PointwiseArgs<S>&);
  FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_PW_ENTRY)
#undef FASTLOSS_PW_ENTRY
};

// Instruction sets: the ones this build has, best first; the one in use; choosing one (for
// tests: returns false if the machine or the build lacks it). FASTLOSS_ISA=avx2 (or baseline)
// in the environment caps the choice made at import.
const char* const* compiled_isas();  // nullptr-terminated
bool isa_supported(const char* name);
const char* active_isa();
bool set_isa(const char* name);

// Per-thread scratch memory (threads.cpp, baseline code): slot 0..kScratchSlots-1, at least
// `bytes`, valid until the same thread asks for the same slot again. 64-byte aligned.
constexpr int kScratchSlots = 9;
void* thread_scratch(int slot, size_t bytes);

#define FASTLOSS_DECLARE(sfx, S)                   \
  void logsumexp(const SoftmaxArgs<S>& a);         \
  void softmax(const SoftmaxArgs<S>& a, bool log); \
  void cross_entropy(const CrossEntropyArgs<S>& a); \
  void nll_loss(const NllArgs<S>& a);               \
  double pointwise(PointwiseArgs<S>& a);  /* returns the sum of the losses */
FASTLOSS_FOR_EACH_DTYPE(FASTLOSS_DECLARE)
#undef FASTLOSS_DECLARE

// KernelTable::count_targets of the active instruction set.
void count_targets(const int64_t* t, int64_t n, int64_t n_classes, int64_t ignore_index,
                   int64_t* count, bool* any_bad);

// Bandwidth floor (bandwidth.cpp): a streaming read (returns the sum) and a streaming copy with
// ordinary or non-temporal stores (y must be aligned to 64 bytes for nt).
double stream_read(const float* x, int64_t n);
void stream_copy(const float* x, float* y, int64_t n, bool nt);

// Threads (threads.cpp).
int get_num_threads();
void set_num_threads(int n);
// Threads to use for a job of `work` units: 1 below the size where starting a team costs more
// than it saves, never more than `max_parallel` (e.g. the number of rows). A unit is an element
// streamed with a few arithmetic operations; an element whose loss takes an exp or a log counts
// kExpWork units (those kernels spend about 1 ns of a core on each against 0.15 to 0.3 ns:
// AVX2, float32, in cache), so that they go parallel from about the same time per call.
int threads_for(int64_t work, int64_t max_parallel);
constexpr int64_t kExpWork = 4;
// "openmp" or "threadpool" (std::thread): how run_parallel runs a job (FASTLOSS_OPENMP).
const char* threading();

// The one place the kernels go parallel: body(ctx, t, n) once for every t < n, on n threads
// (t = 0 on the caller), returning when all have. n may be lower than asked (OpenMP's nesting
// and thread limits); a caller splits its work by (t, n), never by the number it asked for.
// The first exception thrown by a body is rethrown here once all have returned. An OpenMP
// team or a std::thread pool, by the build (threads.cpp); the kernels see only this, so both
// builds give the same bits.
using ParallelBody = void (*)(void* ctx, int t, int n);
void run_parallel(int n_threads, ParallelBody body, void* ctx);

namespace {  // (each instruction set's copy stays in its own translation unit)
// fn(t, n) for every thread t of n; n_threads <= 1 runs fn(0, 1) here, without a team.
template <class Fn> void parallel_for(int n_threads, Fn&& fn) {
  using F = std::remove_reference_t<Fn>;
  if (n_threads <= 1) return void(fn(0, 1));
  run_parallel(
      n_threads, [](void* ctx, int t, int n) { (*static_cast<F*>(ctx))(t, n); },
      const_cast<void*>(static_cast<const void*>(&fn)));
}
}  // namespace

}  // namespace fastloss
