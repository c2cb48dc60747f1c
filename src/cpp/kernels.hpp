// Entry points of the C++ core. Pure C++: raw pointers, extents and strides; no Python here.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastloss {

// A logical (n0, n1, n2) array whose axis 1 is the reduction (class) axis; strides are in
// elements. Row r = o * n2 + i (o < n0, i < n2) is the n1 elements at o*s0 + i*s2 + j*s1.
// Any axis of any N-d array maps onto this: n0 = prod(shape[:axis]), n1 = shape[axis],
// n2 = prod(shape[axis+1:]).
struct Layout3 {
  int64_t n0 = 0, n1 = 0, n2 = 0;
  int64_t s0 = 0, s1 = 0, s2 = 0;
  int64_t rows() const { return n0 * n2; }
  int64_t offset(int64_t r) const { return (r / n2) * s0 + (r % n2) * s2; }
};

template <class T> struct SoftmaxArgs {
  const T* x = nullptr;
  Layout3 lx;
  T* out = nullptr;  // logsumexp: (rows) contiguous; softmax/log_softmax: layout lo
  Layout3 lo;
};

template <class T> struct CrossEntropyArgs {
  const T* x = nullptr;  // logits
  Layout3 lx;
  const int64_t* target = nullptr;  // class indices, (rows) contiguous; or nullptr
  const T* probs = nullptr;         // class probabilities with layout lp; or nullptr
  Layout3 lp;
  const T* weight = nullptr;  // per-class weights (n1) contiguous; or nullptr
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  double grad_scale = 1.0;  // d(returned loss) / d(per-row loss), e.g. 1/sum(w) for "mean"
  double* loss = nullptr;   // per-row loss (rows) contiguous, always written
  T* grad = nullptr;        // gradient with layout lg; or nullptr for loss only
  Layout3 lg;
};

template <class T> struct NllArgs {
  const T* x = nullptr;  // log-probabilities
  Layout3 lx;
  const int64_t* target = nullptr;
  const T* weight = nullptr;
  int64_t ignore_index = -100;
  double grad_scale = 1.0;
  double* loss = nullptr;
  T* grad = nullptr;
  Layout3 lg;
};

// One table of kernels per instruction set (softmax_ce.cpp is compiled once for each, into
// namespace fastloss::<isa>); dispatch.cpp picks one at import by CPUID.
struct KernelTable {
  const char* name;
  void (*logsumexp_f32)(const SoftmaxArgs<float>&);
  void (*logsumexp_f64)(const SoftmaxArgs<double>&);
  void (*softmax_f32)(const SoftmaxArgs<float>&, bool);
  void (*softmax_f64)(const SoftmaxArgs<double>&, bool);
  void (*cross_entropy_f32)(const CrossEntropyArgs<float>&);
  void (*cross_entropy_f64)(const CrossEntropyArgs<double>&);
  void (*nll_loss_f32)(const NllArgs<float>&);
  void (*nll_loss_f64)(const NllArgs<double>&);
};

// Instruction sets: the ones this build has, best first; the one in use; choosing one (for
// tests: returns false if the machine or the build lacks it). FASTLOSS_ISA=avx2 (or baseline)
// in the environment caps the choice made at import.
const char* const* compiled_isas();  // nullptr-terminated
bool isa_supported(const char* name);
const char* active_isa();
bool set_isa(const char* name);

// Per-thread scratch memory (threads.cpp, baseline code): slot 0..3, at least `bytes`, valid
// until the same thread asks for the same slot again. 64-byte aligned.
void* thread_scratch(int slot, size_t bytes);

#define FASTLOSS_DECLARE(T)                                 \
  void logsumexp(const SoftmaxArgs<T>& a);                  \
  void softmax(const SoftmaxArgs<T>& a, bool log);          \
  void cross_entropy(const CrossEntropyArgs<T>& a);         \
  void nll_loss(const NllArgs<T>& a);
FASTLOSS_DECLARE(float)
FASTLOSS_DECLARE(double)
#undef FASTLOSS_DECLARE

// Bandwidth floor (bandwidth.cpp): a streaming read (returns the sum) and a streaming copy with
// ordinary or non-temporal stores (y must be aligned to 64 bytes for nt).
double stream_read(const float* x, int64_t n);
void stream_copy(const float* x, float* y, int64_t n, bool nt);

// Threads (threads.cpp).
int get_num_threads();
void set_num_threads(int n);
// Threads to use for a job touching `work` elements: 1 below the size where starting a team
// costs more than it saves, never more than `max_parallel` (e.g. the number of rows).
int threads_for(int64_t work, int64_t max_parallel);

}  // namespace fastloss
