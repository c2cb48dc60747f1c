// fastloss._core: the thin pybind11 layer. It turns NumPy arrays into pointers and layouts,
// releases the GIL and calls a kernel. Argument checking that users see lives in Python; the
// checks here guard internal invariants only (a failure is a bug in the Python layer).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_util.hpp"

#include <cmath>
#include <optional>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctc.hpp"
#include "distributions.hpp"
#include "kernels.hpp"
#include "pairs.hpp"
#include "rowloss.hpp"
#include "scale.hpp"

namespace py = pybind11;
using namespace fastloss;
using namespace fastloss::bind;

namespace {

template <class T> const T* vector_ptr(const OptArray& a, int64_t n, const char* name) {
  if (!a) return nullptr;
  check_dtype<T>(*a, name);
  if (a->ndim() != 1 || a->shape(0) != n || !(a->flags() & py::array::c_style))
    throw std::invalid_argument(std::string("_core: ") + name + " must be contiguous 1-d of length " +
                                std::to_string(n));
  return const_ptr<T>(*a);
}

void logsumexp_py(const py::array& x, py::array out) {
  by_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxArgs<T> a;
    a.lx = layout3<T>(x, "x");
    a.x = const_ptr<T>(x);
    a.out = const_cast<T*>(vector_ptr<T>(out, a.lx.rows(), "out"));
    mutable_ptr<T>(out);  // raises if read-only
    py::gil_scoped_release nogil;
    fastloss::logsumexp(a);
  });
}

void softmax_py(const py::array& x, py::array out, bool log) {
  by_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxArgs<T> a;
    a.lx = layout3<T>(x, "x");
    a.lo = layout3<T>(out, "out");
    a.x = const_ptr<T>(x);
    a.out = mutable_ptr<T>(out);
    py::gil_scoped_release nogil;
    fastloss::softmax(a, log);
  });
}

void cross_entropy_py(const py::array& x, const OptArray& target, const OptArray& probs,
                      const OptArray& weight, int64_t ignore_index, double label_smoothing,
                      double grad_scale, py::array loss, OptArray grad, double z_loss,
                      double softcap, bool focal, double focal_gamma, OptArray lse,
                      OptArray correct, bool grad_fresh) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    using T = compute_t<S>;
    CrossEntropyArgs<S> a;
    a.z_loss = z_loss;
    a.softcap = softcap;
    a.focal = focal;
    a.focal_gamma = focal_gamma;
    a.lx = layout3<S>(x, "logits");
    a.x = const_ptr<S>(x);
    const int64_t rows = a.lx.rows();
    a.target = vector_ptr<int64_t>(target, rows, "target");
    if (probs) {
      a.lp = layout3<T>(*probs, "probs");
      a.probs = const_ptr<T>(*probs);
    }
    if (!a.target == !a.probs) throw std::invalid_argument("_core: give target or probs");
    a.weight = vector_ptr<T>(weight, a.lx.n1, "weight");
    a.ignore_index = ignore_index;
    a.label_smoothing = label_smoothing;
    a.grad_scale = grad_scale;
    vector_ptr<double>(loss, rows, "loss");
    a.loss = mutable_ptr<double>(loss);
    if (grad) {
      a.lg = layout3<S>(*grad, "grad");
      a.grad = mutable_ptr<S>(*grad);
      a.grad_fresh = grad_fresh;
    }
    if (lse) {
      vector_ptr<double>(lse, rows, "lse");
      a.lse = mutable_ptr<double>(*lse);
    }
    if (correct) {
      if (!a.target) throw std::invalid_argument("_core: correct needs index targets");
      vector_ptr<uint8_t>(correct, rows, "correct");
      a.correct = mutable_ptr<uint8_t>(*correct);
    }
    py::gil_scoped_release nogil;
    fastloss::cross_entropy(a);
  });
}

void nll_loss_py(const py::array& x, const py::array& target, const OptArray& weight,
                 int64_t ignore_index, double grad_scale, py::array loss, OptArray grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    using T = compute_t<S>;
    NllArgs<S> a;
    a.lx = layout3<S>(x, "log_probs");
    a.x = const_ptr<S>(x);
    const int64_t rows = a.lx.rows();
    a.target = vector_ptr<int64_t>(target, rows, "target");
    a.weight = vector_ptr<T>(weight, a.lx.n1, "weight");
    a.ignore_index = ignore_index;
    a.grad_scale = grad_scale;
    vector_ptr<double>(loss, rows, "loss");
    a.loss = mutable_ptr<double>(loss);
    if (grad) {
      a.lg = layout3<S>(*grad, "grad");
      a.grad = mutable_ptr<S>(*grad);
    }
    py::gil_scoped_release nogil;
    fastloss::nll_loss(a);
  });
}

py::tuple pointwise_py(int kind, const py::array& x, const py::array& y, const OptArray& w,
                       const OptArray& pos_weight, double p0, double p1, double grad_scale,
                       OptArray loss, OptArray grad) {
  return by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    using T = compute_t<S>;
    PointwiseArgs<S> a;
    a.kind = static_cast<PointwiseKind>(kind);
    check_dtype<S>(x, "x");
    if (!(x.flags() & py::array::c_style)) throw std::invalid_argument("_core: x must be contiguous");
    a.n = x.size();
    a.x = const_ptr<S>(x);
    a.y = vector_ptr<T>(y, a.n, "y");
    a.w = vector_ptr<T>(w, a.n, "w");
    a.pos_weight = vector_ptr<T>(pos_weight, a.n, "pos_weight");
    a.p0 = p0;
    a.p1 = p1;
    a.grad_scale = grad_scale;
    if (loss) {
      vector_ptr<T>(loss, a.n, "loss");
      a.loss = mutable_ptr<T>(*loss);
    }
    if (grad) {
      check_dtype<S>(*grad, "grad");
      if (!(grad->flags() & py::array::c_style) || grad->size() != a.n)
        throw std::invalid_argument("_core: grad must be contiguous with x's size");
      a.grad = mutable_ptr<S>(*grad);
    }
    double total;
    {
      py::gil_scoped_release nogil;
      total = fastloss::pointwise(a);
    }
    return py::make_tuple(total, a.label_counts[0], a.label_counts[1], a.label_counts[2]);
  });
}

double stream_read_py(const py::array& x) {
  check_dtype<float>(x, "x");
  if (!(x.flags() & py::array::c_style)) throw std::invalid_argument("_core: x must be contiguous");
  const float* p = const_ptr<float>(x);
  const int64_t n = x.size();
  py::gil_scoped_release nogil;
  return stream_read(p, n);
}

void stream_copy_py(const py::array& x, py::array y, bool nt) {
  check_dtype<float>(x, "x");
  check_dtype<float>(y, "y");
  if (!(x.flags() & py::array::c_style) || !(y.flags() & py::array::c_style) || x.size() != y.size())
    throw std::invalid_argument("_core: x and y must be contiguous and of one size");
  if (nt && reinterpret_cast<uintptr_t>(y.data()) % 64 != 0)
    throw std::invalid_argument("_core: y must be 64-byte aligned for non-temporal stores");
  const float* p = const_ptr<float>(x);
  float* q = mutable_ptr<float>(y);
  const int64_t n = x.size();
  py::gil_scoped_release nogil;
  stream_copy(p, q, n, nt);
}

}  // namespace

// Distribution losses and the multi-class margin loss (distributions.hpp).
namespace {
void kl_div_with_logits_py(const py::array& student, const py::array& teacher, double temperature,
                           double grad_scale, py::array loss, OptArray grad) {
  by_dtype(student, [&](auto tag) {
    using S = decltype(tag);
    KlLogitsArgs<S> a;
    a.ls = layout3<S>(student, "student_logits");
    a.lt = layout3<S>(teacher, "teacher_logits");
    if (a.lt.n0 != a.ls.n0 || a.lt.n1 != a.ls.n1 || a.lt.n2 != a.ls.n2)
      throw std::invalid_argument("_core: student and teacher logits differ in shape");
    if (!(temperature > 0) || !std::isfinite(temperature))
      throw std::invalid_argument("_core: temperature must be positive and finite");
    a.student = const_ptr<S>(student);
    a.teacher = const_ptr<S>(teacher);
    a.temperature = temperature;
    a.grad_scale = grad_scale;
    vector_ptr<double>(loss, a.ls.rows(), "loss");
    a.loss = mutable_ptr<double>(loss);
    if (grad) {
      a.lg = layout3<S>(*grad, "grad");
      if (a.lg.n0 != a.ls.n0 || a.lg.n1 != a.ls.n1 || a.lg.n2 != a.ls.n2)
        throw std::invalid_argument("_core: grad must have the logits' shape");
      a.grad = mutable_ptr<S>(*grad);
    }
    py::gil_scoped_release nogil;
    fastloss::kl_div_with_logits(a);
  });
}

void gaussian_kl_py(const py::array& mu, const py::array& logvar, double grad_scale,
                    py::array loss, OptArray grad_mu, OptArray grad_logvar) {
  by_dtype(mu, [&](auto tag) {
    using S = decltype(tag);
    GaussianKlArgs<S> a;
    a.lm = layout3<S>(mu, "mu");
    a.lv = layout3<S>(logvar, "logvar");
    auto same = [&](const Layout3& L) { return L.n0 == a.lm.n0 && L.n1 == a.lm.n1 && L.n2 == a.lm.n2; };
    if (!same(a.lv) || a.lm.n2 != 1)
      throw std::invalid_argument("_core: mu and logvar must be (rows, n, 1) of one shape");
    a.mu = const_ptr<S>(mu);
    a.logvar = const_ptr<S>(logvar);
    a.grad_scale = grad_scale;
    vector_ptr<double>(loss, a.lm.rows(), "loss");
    a.loss = mutable_ptr<double>(loss);
    if (bool(grad_mu) != bool(grad_logvar))
      throw std::invalid_argument("_core: give both gradients or neither");
    if (grad_mu) {
      a.lgm = layout3<S>(*grad_mu, "grad_mu");
      a.lgv = layout3<S>(*grad_logvar, "grad_logvar");
      if (!same(a.lgm) || !same(a.lgv))
        throw std::invalid_argument("_core: gradients must have mu's shape");
      a.grad_mu = mutable_ptr<S>(*grad_mu);
      a.grad_logvar = mutable_ptr<S>(*grad_logvar);
    }
    py::gil_scoped_release nogil;
    fastloss::gaussian_kl(a);
  });
}

void multi_margin_loss_py(const py::array& x, const py::array& target, const OptArray& weight,
                          int p, double margin, double grad_scale, py::array loss, OptArray grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    using T = compute_t<S>;
    MultiMarginArgs<S> a;
    a.lx = layout3<S>(x, "input");
    a.x = const_ptr<S>(x);
    const int64_t rows = a.lx.rows();
    a.target = vector_ptr<int64_t>(target, rows, "target");
    a.weight = vector_ptr<T>(weight, a.lx.n1, "weight");
    if (p != 1 && p != 2) throw std::invalid_argument("_core: p must be 1 or 2");
    a.p = p;
    a.margin = margin;
    a.grad_scale = grad_scale;
    vector_ptr<double>(loss, rows, "loss");
    a.loss = mutable_ptr<double>(loss);
    if (grad) {
      a.lg = layout3<S>(*grad, "grad");
      if (a.lg.n0 != a.lx.n0 || a.lg.n1 != a.lx.n1 || a.lg.n2 != a.lx.n2)
        throw std::invalid_argument("_core: grad must have the input's shape");
      a.grad = mutable_ptr<S>(*grad);
    }
    py::gil_scoped_release nogil;
    fastloss::multi_margin_loss(a);
  });
}

}  // namespace

// CTC loss (ctc.hpp). The checks below keep every index in bounds whoever calls _core; the
// user-facing messages are raised in Python (fastloss/sequence.py) before this is reached.
namespace {
void ctc_loss_py(const py::array& log_probs, const py::array& targets,
                 const py::array& target_offset, const py::array& input_lengths,
                 const py::array& target_lengths, int64_t blank, bool zero_infinity,
                 py::array loss, const OptArray& grad_scale, OptArray grad) {
  by_dtype(log_probs, [&](auto tag) {
    using S = decltype(tag);
    CtcArgs<S> a;
    const Layout3 L = layout3<S>(log_probs, "log_probs");  // (T, N, C)
    a.log_probs = const_ptr<S>(log_probs);
    a.T = L.n0, a.N = L.n1, a.C = L.n2;
    a.st = L.s0, a.sn = L.s1, a.sc = L.s2;
    check_dtype<int64_t>(targets, "targets");
    if (targets.ndim() != 1 || !(targets.flags() & py::array::c_style))
      throw std::invalid_argument("_core: targets must be contiguous 1-d");
    a.targets = const_ptr<int64_t>(targets);
    a.target_offset = vector_ptr<int64_t>(target_offset, a.N, "target_offset");
    a.input_lengths = vector_ptr<int64_t>(input_lengths, a.N, "input_lengths");
    a.target_lengths = vector_ptr<int64_t>(target_lengths, a.N, "target_lengths");
    if (blank < 0 || blank >= a.C) throw std::invalid_argument("_core: blank out of range");
    const int64_t n_labels = targets.shape(0);
    for (int64_t n = 0; n < a.N; ++n) {
      const int64_t il = a.input_lengths[n], tl = a.target_lengths[n], off = a.target_offset[n];
      if (il < 0 || il > a.T || tl < 0 || off < 0 || off > n_labels || tl > n_labels - off)
        throw std::invalid_argument("_core: a length or target offset is out of range");
      for (int64_t k = 0; k < tl; ++k)
        if (a.targets[off + k] < 0 || a.targets[off + k] >= a.C)
          throw std::invalid_argument("_core: a target label is out of range");
    }
    a.blank = blank;
    a.zero_infinity = zero_infinity;
    vector_ptr<double>(loss, a.N, "loss");
    a.loss = mutable_ptr<double>(loss);
    if (grad) {
      const Layout3 G = layout3<S>(*grad, "grad");
      if (G.n0 != a.T || G.n1 != a.N || G.n2 != a.C)
        throw std::invalid_argument("_core: grad must have log_probs' shape");
      if (!grad_scale) throw std::invalid_argument("_core: grad needs grad_scale");
      a.grad_scale = vector_ptr<double>(grad_scale, a.N, "grad_scale");
      a.grad = mutable_ptr<S>(*grad);
      a.gt = G.s0, a.gn = G.s1, a.gc = G.s2;
    }
    py::gil_scoped_release nogil;
    fastloss::ctc_loss(a);
  });
}

}  // namespace

// Sharded cross-entropy (scale.hpp). The Python layer (fastloss/scale.py) validates targets
// and options; the per-row arrays are checked here for length.
namespace {
// The arguments every shard kernel takes; returns the number of rows.
template <class S, class Args>
int64_t shard_common(Args& a, const py::array& x, const py::array& target, int64_t class_offset,
                     int64_t ignore_index, double softcap) {
  a.lx = layout3<S>(x, "logits");
  a.x = const_ptr<S>(x);
  const int64_t rows = a.lx.rows();
  a.target = vector_ptr<int64_t>(target, rows, "target");
  if (class_offset < 0) throw std::invalid_argument("_core: class_offset must be >= 0");
  a.class_offset = class_offset;
  a.ignore_index = ignore_index;
  a.softcap = softcap;
  return rows;
}

void ce_shard_stats_py(const py::array& x, const py::array& target, int64_t class_offset,
                       int64_t ignore_index, double softcap, py::array max, py::array sumexp,
                       py::array target_logit, py::array sum_logits, py::array has_target) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    CeShardStatsArgs<S> a;
    const int64_t rows = shard_common<S>(a, x, target, class_offset, ignore_index, softcap);
    for (py::array* o : {&max, &sumexp, &target_logit, &sum_logits})
      vector_ptr<double>(*o, rows, "stats");
    vector_ptr<uint8_t>(has_target, rows, "has_target");
    a.max = mutable_ptr<double>(max);
    a.sumexp = mutable_ptr<double>(sumexp);
    a.target_logit = mutable_ptr<double>(target_logit);
    a.sum_logits = mutable_ptr<double>(sum_logits);
    a.has_target = mutable_ptr<uint8_t>(has_target);
    py::gil_scoped_release nogil;
    fastloss::ce_shard_stats(a);
  });
}

void ce_shard_grad_py(const py::array& x, const py::array& target, int64_t class_offset,
                      int64_t ignore_index, double softcap, const py::array& ref,
                      const py::array& p_coef, const py::array& t_value, double u,
                      py::array grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    CeShardGradArgs<S> a;
    const int64_t rows = shard_common<S>(a, x, target, class_offset, ignore_index, softcap);
    a.ref = vector_ptr<double>(ref, rows, "ref");
    a.p_coef = vector_ptr<double>(p_coef, rows, "p_coef");
    a.t_value = vector_ptr<double>(t_value, rows, "t_value");
    a.u = u;
    a.lg = layout3<S>(grad, "grad");
    if (a.lg.n0 != a.lx.n0 || a.lg.n1 != a.lx.n1 || a.lg.n2 != a.lx.n2)
      throw std::invalid_argument("_core: grad must have the logits' shape");
    a.grad = mutable_ptr<S>(grad);
    py::gil_scoped_release nogil;
    fastloss::ce_shard_grad(a);
  });
}

// ---------------------------------------------------------------------------------------------
// Small-call fast paths of fastloss.cross_entropy, mse_loss and l1_loss with default options: a
// loss in a loop is often a few hundred numbers, where NumPy-level checks cost ten times the
// arithmetic. The checks the common case needs are done here in one call; anything else
// (another dtype or layout, an invalid target, an empty batch) returns None and the Python
// layer takes its general path, which raises the user-facing errors. Nothing is written.
// ---------------------------------------------------------------------------------------------
// NumPy's summation order (its pairwise_sum for contiguous float64: 8 accumulators per block
// of up to 128, halves above), so a reduced loss equals np.sum of the per-row losses, as on
// the general path, bit for bit.
double numpy_pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double r = 0.0;
    for (int64_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_pairwise_sum(a, n2) + numpy_pairwise_sum(a + n2, n - n2);
}

// np.sum of a contiguous float64 array, bit for bit (numpy_pairwise_sum's tree), the subtrees
// of its top levels summed over the cores: the sum of a chunk of per-row losses.
double sum_f64(const py::array& a) {
  if (a.ndim() != 1 || !plain_dtype(a, 'f', 8) || (a.shape(0) > 1 && a.strides(0) != 8))
    throw std::invalid_argument("_core: sum_f64 takes a contiguous 1-d float64 array");
  const double* p = static_cast<const double*>(a.data());
  const int64_t n = a.shape(0);
  if (n < 32768) return numpy_pairwise_sum(p, n);
  // the tree's nodes kDepth levels down (each split as numpy_pairwise_sum's: n2 = n / 2 rounded
  // down to a multiple of 8), summed in parallel, then added up the tree again
  constexpr int kDepth = 3, kLeaves = 1 << kDepth;
  int64_t lo[kLeaves], len[kLeaves];
  lo[0] = 0, len[0] = n;
  for (int d = 0, m = 1; d < kDepth; ++d, m *= 2)
    for (int i = m - 1; i >= 0; --i) {  // (in place, from the back: node i -> 2i, 2i + 1)
      int64_t n2 = len[i] / 2;
      n2 -= n2 % 8;
      const int64_t l = lo[i], r = len[i];
      lo[2 * i] = l, len[2 * i] = n2;
      lo[2 * i + 1] = l + n2, len[2 * i + 1] = r - n2;
    }
  double s[kLeaves];
  {
    py::gil_scoped_release nogil;
    const int nt = threads_for(n, kLeaves);
    parallel_for(nt, [&](int64_t k, int64_t m) {
      for (int64_t i = kLeaves * k / m; i < kLeaves * (k + 1) / m; ++i)
        s[i] = numpy_pairwise_sum(p + lo[i], len[i]);
    });
  }
  for (int w = kLeaves; w > 1; w /= 2)
    for (int i = 0; i < w / 2; ++i) s[i] = s[2 * i] + s[2 * i + 1];
  return s[0];
}

// The cross-entropy fast path takes up to this many rows (its target check and sum are serial).
constexpr int64_t kSmallRows = int64_t(1) << 14;

// Class-index targets (contiguous int64): the first entry that is neither ignore_index nor in
// [0, n_classes) (-1 if none) and the number of entries that are not ignore_index, in one pass
// over all cores with no temporaries (the NumPy checks it replaces made five passes and three
// boolean arrays: most of a 2-class cross-entropy's time).
py::tuple check_class_targets(const py::array& t, int64_t n_classes, int64_t ignore_index) {
  if (t.ndim() != 1 || !plain_dtype(t, 'i', 8) || (t.shape(0) > 1 && t.strides(0) != 8))
    throw std::invalid_argument("_core: targets must be contiguous 1-d int64");
  const int64_t n = t.shape(0);
  const int64_t* p = static_cast<const int64_t*>(t.data());
  constexpr int kMaxThreads = 256;
  int64_t count[kMaxThreads] = {}, bad[kMaxThreads];
  for (int64_t& b : bad) b = -1;
  {
    py::gil_scoped_release nogil;
    int nt = threads_for(n, n / 4096 + 1);
    nt = nt < kMaxThreads ? nt : kMaxThreads;
    parallel_for(nt, [&](int64_t k, int64_t m) {
      const int64_t lo = n * k / m, hi = n * (k + 1) / m;
      int64_t c = 0;
      bool any_bad = false;
      count_targets(p + lo, hi - lo, n_classes, ignore_index, &c, &any_bad);  // (per ISA)
      count[k] = c;
      if (any_bad)
        for (int64_t i = lo; i < hi; ++i)
          if (p[i] != ignore_index && uint64_t(p[i]) >= uint64_t(n_classes)) {
            bad[k] = i;
            break;
          }
    });
  }
  int64_t total = 0, first = -1;
  for (int k = 0; k < kMaxThreads; ++k) {
    total += count[k];
    if (first < 0 && bad[k] >= 0) first = bad[k];
  }
  return py::make_tuple(first, total);
}

// What a small call of a per-row loss returns, from its float64 per-row losses: "none" an
// (N,) array of S, "sum" / "mean" (over `count`) a NumPy scalar of np.sum's bits; with `g`
// (not null) the tuple (loss, g). None where a finite loss overflows S (the general path,
// whose NumPy cast warns).
template <class S>
py::object small_rows_result(const std::vector<double>& per_row, int red, double count,
                             const py::object& g) {
  const int64_t n = int64_t(per_row.size());
  py::object value;
  if (red == kFastNone) {  // per-row float64 losses in the input's dtype
    py::array_t<S> l(std::vector<ssize_t>{n});
    S* lp = l.mutable_data();
    for (int64_t i = 0; i < n; ++i) {
      lp[i] = static_cast<S>(per_row[size_t(i)]);
      if (std::isinf(lp[i]) && !std::isinf(per_row[size_t(i)])) return py::none();
    }
    value = l;
  } else {
    const double total = numpy_pairwise_sum(per_row.data(), n);
    value = numpy_scalar(red == kFastMean ? total / count : total, std::is_same_v<S, float>);
  }
  return g ? py::object(py::make_tuple(value, g)) : value;
}

// The grad_out of a small call on (N, C) input x with targets t (class_rows_small,
// multilabel_margin_small): an exact ndarray of x's dtype and shape, C order, writeable,
// sharing no memory with t, and with x only as x itself where same_ok (and x in C order: the
// gradient in place). Byte ranges: each array's extent from its strides.
bool small_grad_out_ok(py::handle grad_out, const py::array& x, const py::array& t,
                       bool same_ok) {
  if (!exact_ndarray(grad_out)) return false;
  const auto ga = py::reinterpret_borrow<py::array>(grad_out);
  if (!plain_float(ga) || ga.dtype().itemsize() != x.dtype().itemsize() || ga.ndim() != 2 ||
      ga.shape(0) != x.shape(0) || ga.shape(1) != x.shape(1) ||
      !(ga.flags() & py::array::c_style) || !ga.writeable())
    return false;
  auto extent = [](const py::array& a, const char*& lo, const char*& hi) {
    lo = hi = static_cast<const char*>(a.data());
    for (ssize_t d = 0; d < a.ndim(); ++d) {
      const ssize_t step = a.strides(d) * (a.shape(d) - 1);
      (step < 0 ? lo : hi) += step;
    }
    hi += a.itemsize();
  };
  const char *g0, *g1, *a0, *a1;
  extent(ga, g0, g1);
  extent(t, a0, a1);
  if (a0 < g1 && g0 < a1) return false;
  extent(x, a0, a1);
  const bool same = same_ok && a0 == g0 && (x.flags() & py::array::c_style);
  return !(a0 < g1 && g0 < a1 && !same);
}

// Whether a small call of two 2-d operands x and t of one (n, C) shape applies
// (multilabel_margin_small, distill_small): not empty, at most kSmallRows rows and 64 times
// as many elements, and a grad_out (if given: with return_grad only) that small_grad_out_ok
// takes, not in place of x.
bool small_pair_call(const py::array& x, const py::array& t, int grad, py::handle grad_out) {
  const int64_t n = x.shape(0), C = x.shape(1);
  if (t.shape(0) != n || t.shape(1) != C || n == 0 || C == 0 || n > kSmallRows ||
      n * C > kSmallRows * 64)
    return false;
  return grad_out.is_none() || (grad == 1 && small_grad_out_ok(grad_out, x, t, false));
}

// f() for a small call: with the GIL released from kSmallWork elements of work on (below
// that, releasing and taking it back costs more than other threads gain).
template <class F> void small_call(int64_t work, F&& f) {
  if (work >= kSmallWork) {
    py::gil_scoped_release nogil;
    f();
  } else {
    f();
  }
}

// The gradient array of a small (n, C) call with return_grad: the caller's grad_out (checked
// by small_grad_out_ok) or a fresh C-order array; into g the object returned for it.
template <class S>
S* small_grad_array(py::handle grad_out, bool user_grad, int64_t n, int64_t C, py::object& g) {
  if (user_grad) {
    g = py::reinterpret_borrow<py::object>(grad_out);
    return static_cast<S*>(py::reinterpret_borrow<py::array>(grad_out).mutable_data());
  }
  py::array_t<S> a(std::vector<ssize_t>{n, C});
  S* p = a.mutable_data();
  g = std::move(a);
  return p;
}

// The layout of a 2-d array as the general path's as3d view, (N, C, 1), and of a C-order
// (n, C) gradient.
template <class S> Layout3 rows_layout(const py::array& a) {
  Layout3 l;
  l.n0 = a.shape(0), l.n1 = a.shape(1), l.n2 = 1;
  l.s0 = a.strides(0) / ssize_t(sizeof(S)), l.s1 = a.strides(1) / ssize_t(sizeof(S));
  l.s2 = 1;
  return l;
}
inline Layout3 c_rows_layout(int64_t n, int64_t C) {
  Layout3 l;
  l.n0 = n, l.n1 = C, l.n2 = 1, l.s0 = C, l.s1 = 1, l.s2 = 1;
  return l;
}

// cross_entropy (kind 0), nll_loss (kind 1), softmax_focal_loss (kind 2, p0 = gamma, no alpha)
// or multi_margin_loss (kind 3, p = 1, margin 1, no weight; no ignore_index: pass None) of
// logits / log-probabilities / scores (N, C) and class-index targets (N,) contiguous int64 or
// int32, without class weights: the loss ("mean", "sum" as a NumPy scalar, "none" an (N,) array)
// and with return_grad the gradient, as the public function returns them; None where the
// general path applies (anything else, a target out of range, an empty or large batch, an
// ignore_index outside int64). cross_entropy also takes probability targets: (N, C) of the
// logits' dtype (ignore_index unused, the mean over all N rows). grad_out (None: none): the
// caller's gradient array, (N, C) of the logits' dtype, C order, writeable, sharing no memory
// with the targets, and with the logits only as the logits themselves (C order: the gradient in
// place), which the kernel writes (every check is made before) and which is returned.
py::object class_rows_small(int kind, py::handle logits, py::handle target,
                            py::handle ignore_index_, py::handle reduction,
                            py::handle return_grad, double p0, py::handle grad_out) {
  const int red = fast_reduction(reduction);
  const int grad = fast_flag(return_grad);
  const bool margin = kind == 3;
  if (kind < 0 || kind > 3 || red < 0 || grad < 0 || !exact_ndarray(logits) ||
      !exact_ndarray(target) || (!margin && !PyLong_CheckExact(ignore_index_.ptr())))
    return py::none();
  int overflow = 0;
  // (multi_margin_loss: no index is ignored; -1 is never a valid class)
  const int64_t ignore_index =
      margin ? -1 : PyLong_AsLongLongAndOverflow(ignore_index_.ptr(), &overflow);
  if (overflow) return py::none();
  const auto x = py::reinterpret_borrow<py::array>(logits);
  const auto t = py::reinterpret_borrow<py::array>(target);
  if (x.ndim() != 2 || !plain_float(x)) return py::none();
  const bool probs = kind == 0 && t.ndim() == 2 && plain_float(t) &&
                     t.dtype().itemsize() == x.dtype().itemsize();
  // (class indices: int64, or int32 (JAX's default integer), widened below)
  const bool i32 = !probs && t.ndim() == 1 && plain_dtype(t, 'i', 4);
  if (!probs && (t.ndim() != 1 || !(i32 || plain_dtype(t, 'i', 8)) ||
                 t.strides(0) != t.itemsize()))
    return py::none();
  const int64_t n = x.shape(0), C = x.shape(1);
  // (large calls: the general path, whose checks and reduction run over all cores)
  if (t.shape(0) != n || (probs && t.shape(1) != C) || n == 0 || C == 0 || n > kSmallRows)
    return py::none();
  const bool user_grad = !grad_out.is_none();
  if (user_grad && (grad != 1 || !small_grad_out_ok(grad_out, x, t, true))) return py::none();
  std::vector<int64_t> t64;
  if (i32) {
    const int32_t* p32 = static_cast<const int32_t*>(t.data());
    t64.assign(p32, p32 + n);
  }
  const int64_t* tp = probs ? nullptr : i32 ? t64.data() : static_cast<const int64_t*>(t.data());
  int64_t count = probs ? n : 0;
  for (int64_t i = 0; i < n && !probs; ++i) {
    const int64_t v = tp[i];
    if (v == ignore_index && !margin) continue;
    if (v < 0 || v >= C) return py::none();  // the general path names the bad index
    ++count;
  }
  const bool mean = red == kFastMean;
  // (every row ignored: the mean's gradient scale 0 and its loss 0 / 0 = NaN, as in Python)
  const double scale = mean ? (count ? 1.0 / double(count) : 0.0) : 1.0;
  std::vector<double> per_row(size_t(n), 0.0);
  auto run = [&](auto tag) -> py::object {
    using S = decltype(tag);
    const Layout3 lx = rows_layout<S>(x), lg = c_rows_layout(n, C);
    py::object g;  // (null without return_grad: a default py::array_t allocates one)
    S* gp = grad ? small_grad_array<S>(grad_out, user_grad, n, C, g) : nullptr;
    auto call = [&] {
      if (kind == 0 || kind == 2) {
        CrossEntropyArgs<S> a;
        a.x = static_cast<const S*>(x.data()), a.lx = lx;
        a.target = tp, a.ignore_index = ignore_index, a.grad_scale = scale;
        if (probs) {
          a.probs = static_cast<const S*>(t.data());
          a.lp.n0 = n, a.lp.n1 = C, a.lp.n2 = 1, a.lp.s2 = 1;
          a.lp.s0 = t.strides(0) / ssize_t(sizeof(S)), a.lp.s1 = t.strides(1) / ssize_t(sizeof(S));
        }
        a.loss = per_row.data();
        if (grad) a.grad = gp, a.lg = lg, a.grad_fresh = !user_grad;
        if (kind == 2) a.focal = true, a.focal_gamma = p0;
        fastloss::cross_entropy(a);
      } else if (kind == 3) {
        MultiMarginArgs<S> a;
        a.x = static_cast<const S*>(x.data()), a.lx = lx;
        a.target = tp, a.p = 1, a.margin = 1.0, a.grad_scale = scale;
        a.loss = per_row.data();
        if (grad) a.grad = gp, a.lg = lg;
        fastloss::multi_margin_loss(a);
      } else {
        NllArgs<S> a;
        a.x = static_cast<const S*>(x.data()), a.lx = lx;
        a.target = tp, a.ignore_index = ignore_index, a.grad_scale = scale;
        a.loss = per_row.data();
        if (grad) a.grad = gp, a.lg = lg;
        fastloss::nll_loss(a);
      }
    };
    small_call(n * C, call);
    return small_rows_result<S>(per_row, red, double(count), g);
  };
  return x.dtype().itemsize() == 4 ? run(float{}) : run(double{});
}

// multilabel_margin_loss of (N, C) scores and (N, C) C-order int64 targets (every entry in
// [-1, C), checked here): the loss and with return_grad the gradient, as the public function
// returns them; None where the general path applies (anything else, a target out of range, an
// empty or large call). grad_out (None: none): the caller's gradient array as
// small_grad_out_ok says (not in place of the scores: a row's gradient depends on the whole
// row), which the kernel writes after every check and which is returned.
py::object multilabel_margin_small(py::handle input, py::handle target, py::handle reduction,
                                   py::handle return_grad, py::handle grad_out) {
  const int red = fast_reduction(reduction);
  const int grad = fast_flag(return_grad);
  if (red < 0 || grad < 0 || !exact_ndarray(input) || !exact_ndarray(target)) return py::none();
  const auto x = py::reinterpret_borrow<py::array>(input);
  const auto t = py::reinterpret_borrow<py::array>(target);
  if (x.ndim() != 2 || t.ndim() != 2 || !plain_float(x) || !plain_dtype(t, 'i', 8) ||
      !(t.flags() & py::array::c_style))
    return py::none();
  if (!small_pair_call(x, t, grad, grad_out)) return py::none();
  const int64_t n = x.shape(0), C = x.shape(1);
  const bool user_grad = !grad_out.is_none();
  const int64_t* tp = static_cast<const int64_t*>(t.data());
  for (int64_t i = 0; i < n * C; ++i)
    if (tp[i] < -1 || tp[i] >= C) return py::none();  // the general path names the entry
  std::vector<double> per_row(size_t(n), 0.0);
  auto run = [&](auto tag) -> py::object {
    using S = decltype(tag);
    MultilabelMarginArgs<S> a;
    a.x = static_cast<const S*>(x.data());
    a.rows = n, a.C = C;
    a.s0 = x.strides(0) / ssize_t(sizeof(S)), a.s1 = x.strides(1) / ssize_t(sizeof(S));
    a.target = tp;
    a.grad_scale = red == kFastMean ? 1.0 / double(n) : 1.0;
    a.loss = per_row.data();
    py::object g;  // (null without return_grad)
    if (grad) a.grad = small_grad_array<S>(grad_out, user_grad, n, C, g), a.g0 = C, a.g1 = 1;
    small_call(n * C, [&] { fastloss::multilabel_margin(a); });
    return small_rows_result<S>(per_row, red, double(n), g);
  };
  return x.dtype().itemsize() == 4 ? run(float{}) : run(double{});
}

// The distillation losses of (N, C) student and teacher logits of one float dtype (any
// strides): kind 0 kl_div_with_logits (beta None), 1 jensen_shannon_with_logits (beta a
// Python float in [0, 1]); axis -1 or 1 (an exact int), a Python float temperature (positive,
// finite); as the public function returns it: the loss and with return_grad the gradient;
// None where the general path applies (anything else, an empty or large call). grad_out
// (None: none): the caller's gradient array as small_grad_out_ok says (not in place of the
// student: a row's gradient depends on the whole row; sharing nothing with the teacher),
// which the kernel writes and which is returned (the kernels reject nothing: NaN rows are NaN).
py::object distill_small(int kind, py::handle student, py::handle teacher, py::handle axis,
                         py::handle temperature, py::handle beta_, py::handle reduction,
                         py::handle return_grad, py::handle grad_out) {
  const int red = fast_reduction(reduction, true);
  const int grad = fast_flag(return_grad);
  const bool jsd = kind == 1;
  if ((kind != 0 && !jsd) || red < 0 || grad < 0 || !exact_ndarray(student) ||
      !exact_ndarray(teacher) || !PyLong_CheckExact(axis.ptr()) ||
      !PyFloat_CheckExact(temperature.ptr()) || (jsd && !PyFloat_CheckExact(beta_.ptr())))
    return py::none();
  const long ax = PyLong_AsLong(axis.ptr());
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return py::none();
  }
  const double tau = PyFloat_AS_DOUBLE(temperature.ptr());
  const double beta = jsd ? PyFloat_AS_DOUBLE(beta_.ptr()) : 0.0;
  if ((ax != -1 && ax != 1) || !(tau > 0) || !std::isfinite(tau) || !(beta >= 0 && beta <= 1))
    return py::none();
  const auto s = py::reinterpret_borrow<py::array>(student);
  const auto t = py::reinterpret_borrow<py::array>(teacher);
  if (s.ndim() != 2 || t.ndim() != 2 || !plain_float(s) || !plain_float(t) ||
      s.dtype().itemsize() != t.dtype().itemsize())
    return py::none();
  if (!small_pair_call(s, t, grad, grad_out)) return py::none();
  const int64_t n = s.shape(0), C = s.shape(1);
  const bool user_grad = !grad_out.is_none();
  // (batchmean: over the rows; mean: over every element)
  const double count = red == kFastMean ? double(n) * double(C) : double(n);
  const bool mean = red == kFastMean || red == kFastBatchMean;
  std::vector<double> per_row(size_t(n), 0.0);
  auto run = [&](auto tag) -> py::object {
    using S = decltype(tag);
    py::object g;  // (null without return_grad)
    S* gp = grad ? small_grad_array<S>(grad_out, user_grad, n, C, g) : nullptr;
    const Layout3 lg = c_rows_layout(n, C);
    auto call = [&](auto& a) {  // (KlLogitsArgs or JsdArgs: the same fields but beta)
      a.student = static_cast<const S*>(s.data()), a.ls = rows_layout<S>(s);
      a.teacher = static_cast<const S*>(t.data()), a.lt = rows_layout<S>(t);
      a.temperature = tau;
      a.grad_scale = mean ? 1.0 / count : 1.0;
      a.loss = per_row.data();
      a.grad = gp, a.lg = lg;
      auto kernel = [&] {
        if constexpr (std::is_same_v<std::decay_t<decltype(a)>, JsdArgs<S>>)
          fastloss::jensen_shannon(a);
        else
          fastloss::kl_div_with_logits(a);
      };
      small_call(n * C, kernel);
    };
    if (jsd) {
      JsdArgs<S> a;
      a.beta = beta;
      call(a);
    } else {
      KlLogitsArgs<S> a;
      call(a);
    }
    return small_rows_result<S>(per_row, mean ? int(kFastMean) : red, count, g);
  };
  return s.dtype().itemsize() == 4 ? run(float{}) : run(double{});
}

// The pointwise losses (kind as _core.pointwise), no weights: elementwise_fast (bind_util.hpp).
py::object pointwise_fast(int kind, py::handle x, py::handle y, double p0, double p1,
                          py::handle reduction, py::handle return_grad, py::handle grad_out) {
  if (kind < 0 || kind > int(PointwiseKind::kKlDiv))
    throw std::invalid_argument("_core: unknown pointwise kind");
  const FastMean rule = kind == int(PointwiseKind::kKlDiv) ? kMeanOrBatchMean : kMeanElements;
  // (bce, hinge and kl_div check their inputs in the kernel)
  const bool checks = kind == int(PointwiseKind::kBce) || kind == int(PointwiseKind::kHinge) ||
                      kind == int(PointwiseKind::kKlDiv);
  return elementwise_fast({x, y}, 1, reduction, return_grad, rule, [&](auto& c, double& total) {
    using S = typename std::decay_t<decltype(c)>::type;
    PointwiseArgs<S> a;
    a.kind = static_cast<PointwiseKind>(kind);
    a.n = c.n, a.x = c.in[0], a.y = c.in[1], a.p0 = p0, a.p1 = p1;
    a.grad_scale = c.grad_scale, a.loss = c.loss, a.grad = c.grad[0];
    total = fastloss::pointwise(a);
    // what the general path raises for (bce, kl_div: [2]; hinge: [2], or both -1 and 0)
    const int64_t* k = a.label_counts;
    return k[2] == 0 && !(a.kind == PointwiseKind::kHinge && k[0] && k[1]);
  }, grad_out, checks);
}

// logsumexp (op 0), softmax (1), log_softmax (2) of a C-order float32/float64 ndarray (at least
// 1-d, not empty) along one axis (an exact int) or all (None), as the public functions return
// them (logsumexp of one row: a NumPy scalar); None where the general path applies.
py::object softmax_small(int op, py::handle x_, py::handle axis) {
  if (!exact_ndarray(x_)) return py::none();
  const auto x = py::reinterpret_borrow<py::array>(x_);
  const ssize_t nd = x.ndim();
  if (nd == 0 || x.size() == 0 || !plain_float(x) || !(x.flags() & py::array::c_style))
    return py::none();
  Layout3 L;  // (the general path's rows_last view of a C-order array)
  std::vector<ssize_t> kept;
  if (axis.is_none()) {
    L.n0 = 1, L.n1 = x.size(), L.n2 = 1;
  } else {
    if (!PyLong_CheckExact(axis.ptr())) return py::none();
    int overflow = 0;
    long long ax = PyLong_AsLongLongAndOverflow(axis.ptr(), &overflow);
    if (overflow || ax < -nd || ax >= nd) return py::none();
    if (ax < 0) ax += nd;
    L.n0 = L.n1 = L.n2 = 1;
    for (ssize_t d = 0; d < nd; ++d) {
      if (d < ax) L.n0 *= x.shape(d);
      else if (d > ax) L.n2 *= x.shape(d);
      if (d != ax) kept.push_back(x.shape(d));
    }
    L.n1 = x.shape(ssize_t(ax));
  }
  L.s2 = 1, L.s1 = L.n2, L.s0 = L.n1 * L.n2;
  auto run = [&](auto tag) -> py::object {
    using S = decltype(tag);
    SoftmaxArgs<S> a;
    a.x = static_cast<const S*>(x.data());
    a.lx = L;
    py::array_t<S> out(op == 0 ? kept : std::vector<ssize_t>(x.shape(), x.shape() + nd));
    a.out = out.mutable_data();
    a.lo = L;
    auto call = [&] {
      if (op == 0) fastloss::logsumexp(a);
      else fastloss::softmax(a, op == 2);
    };
    small_call(x.size(), call);
    if (op == 0 && kept.empty()) return numpy_scalar(double(a.out[0]), std::is_same_v<S, float>);
    return out;
  };
  return x.dtype().itemsize() == 4 ? run(float{}) : run(double{});
}

}  // namespace

void register_pairs(py::module_& m);  // issue 16: bind_pairs.cpp

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastloss C++ core (private; use the fastloss package)";
  // Issue 16: overlap losses and the cosine similarity (bind_overlap.cpp).
  void register_overlap(py::module_ & m);
  register_overlap(m);
  // Softmax family: x is (n0, n1, n2) with the reduction over axis 1.
  m.def("logsumexp", &logsumexp_py, py::arg("x"), py::arg("out"));
  m.def("softmax", &softmax_py, py::arg("x"), py::arg("out"), py::arg("log"));
  m.def("cross_entropy", &cross_entropy_py, py::arg("logits"), py::arg("target"), py::arg("probs"),
        py::arg("weight"), py::arg("ignore_index"), py::arg("label_smoothing"),
        py::arg("grad_scale"), py::arg("loss"), py::arg("grad"), py::arg("z_loss") = 0.0,
        py::arg("softcap") = 0.0, py::arg("focal") = false, py::arg("focal_gamma") = 0.0,
        py::arg("lse") = py::none(), py::arg("correct") = py::none(),
        py::arg("grad_fresh") = false);
  m.def("nll_loss", &nll_loss_py, py::arg("log_probs"), py::arg("target"), py::arg("weight"),
        py::arg("ignore_index"), py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
  // Small-call fast paths (see there and bind_util.hpp): what the public function returns,
  // or None where its general path applies.
  m.def("class_rows_small", &class_rows_small, py::arg("kind"), py::arg("logits"),
        py::arg("target"), py::arg("ignore_index"), py::arg("reduction"), py::arg("return_grad"),
        py::arg("p0"), py::arg("grad_out") = py::none());
  m.def("distill_small", &distill_small, py::arg("kind"), py::arg("student"),
        py::arg("teacher"), py::arg("axis"), py::arg("temperature"), py::arg("beta"),
        py::arg("reduction"), py::arg("return_grad"), py::arg("grad_out") = py::none());
  m.def("multilabel_margin_small", &multilabel_margin_small, py::arg("input"), py::arg("target"),
        py::arg("reduction"), py::arg("return_grad"), py::arg("grad_out") = py::none());
  m.def("pointwise_fast", &pointwise_fast, py::arg("kind"), py::arg("x"), py::arg("y"),
        py::arg("p0"), py::arg("p1"), py::arg("reduction"), py::arg("return_grad"),
        py::arg("grad_out") = py::none());
  m.def("softmax_small", &softmax_small);
  m.def("sum_f64", &sum_f64, py::arg("a"));
  m.def("check_class_targets", &check_class_targets, py::arg("target"), py::arg("n_classes"),
        py::arg("ignore_index"));
  // Pointwise losses: every operand contiguous and of one size (broadcast in Python);
  // kind: 0 mse, 1 l1, 2 huber, 3 smooth_l1, 4 bce_with_logits, 5 bce, 6 sigmoid_focal, 7 hinge.
  // Returns (sum of losses, hinge label counts: == -1, == 0, invalid).
  m.def("pointwise", &pointwise_py, py::arg("kind"), py::arg("x"), py::arg("y"), py::arg("w"),
        py::arg("pos_weight"), py::arg("p0"), py::arg("p1"), py::arg("grad_scale"),
        py::arg("loss"), py::arg("grad"));
  // Bandwidth floor (benchmarks).
  m.def("stream_read", &stream_read_py, py::arg("x"));
  m.def("stream_copy", &stream_copy_py, py::arg("x"), py::arg("y"), py::arg("nt"));
  // Threads.
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  // Instruction sets (run-time dispatch).
  m.def("compiled_isas", [] {
    py::list out;
    for (const char* const* p = compiled_isas(); *p; ++p) out.append(*p);
    return out;
  });
  m.def("isa_supported", [](const std::string& n) { return isa_supported(n.c_str()); }, py::arg("name"));
  m.def("active_isa", [] { return std::string(active_isa()); });
  m.def("set_isa", [](const std::string& n) { return set_isa(n.c_str()); }, py::arg("name"));
  m.attr("compiler") = py::str(__VERSION__);
  m.attr("threading") = py::str(threading());  // "openmp" or "threadpool" (FASTLOSS_OPENMP)
  // Distribution losses (x: (n0, classes, n2), reduction over axis 1; per-row float64 losses)
  // and the multi-class margin loss (input: (rows, classes, 1)).
  m.def("kl_div_with_logits", &kl_div_with_logits_py, py::arg("student"), py::arg("teacher"),
        py::arg("temperature"), py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
  m.def("gaussian_kl", &gaussian_kl_py, py::arg("mu"), py::arg("logvar"), py::arg("grad_scale"),
        py::arg("loss"), py::arg("grad_mu"), py::arg("grad_logvar"));
  m.def("multi_margin_loss", &multi_margin_loss_py, py::arg("input"), py::arg("target"),
        py::arg("weight"), py::arg("p"), py::arg("margin"), py::arg("grad_scale"), py::arg("loss"),
        py::arg("grad"));
  // CTC loss: log_probs (T, N, C); labels of sample n at targets[target_offset[n]:][:target_lengths[n]];
  // per-sample float64 losses written to `loss`.
  m.def("ctc_loss", &ctc_loss_py, py::arg("log_probs"), py::arg("targets"),
        py::arg("target_offset"), py::arg("input_lengths"), py::arg("target_lengths"),
        py::arg("blank"), py::arg("zero_infinity"), py::arg("loss"), py::arg("grad_scale"),
        py::arg("grad"));
  // Sharded cross-entropy: logits (n0, shard classes, n2); per-row float64 statistics written
  // to max/sumexp/target_logit/sum_logits and uint8 has_target (scale.hpp).
  m.def("ce_shard_stats", &ce_shard_stats_py, py::arg("logits"), py::arg("target"),
        py::arg("class_offset"), py::arg("ignore_index"), py::arg("softcap"), py::arg("max"),
        py::arg("sumexp"), py::arg("target_logit"), py::arg("sum_logits"),
        py::arg("has_target"));
  m.def("ce_shard_grad", &ce_shard_grad_py, py::arg("logits"), py::arg("target"),
        py::arg("class_offset"), py::arg("ignore_index"), py::arg("softcap"), py::arg("ref"),
        py::arg("p_coef"), py::arg("t_value"), py::arg("u"), py::arg("grad"));
  // Issue 16: the row losses (sparsemax, ranking, JSD, multi-class hinge), bind_rowloss.cpp.
  void register_rowloss(py::module_ & m);
  register_rowloss(m);
  register_pairs(m);  // issue 16: the PyTorch-catalogue pair losses (bind_pairs.cpp)
}
