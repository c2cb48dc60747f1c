// Bindings of issue 16's PyTorch-catalogue losses (pairs.hpp): thin, as bindings.cpp. The user-
// facing checks live in Python (fastloss/pairs.py, fastloss/multilabel.py); the checks here
// guard internal invariants only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_util.hpp"

#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "pairs.hpp"

namespace py = pybind11;
using namespace fastloss;
using namespace fastloss::bind;

namespace {

// A contiguous 1-d-able operand of n elements of type T (any shape, C order), or nullptr.
template <class T> const T* flat_ptr(const OptArray& a, int64_t n, const char* name) {
  if (!a) return nullptr;
  check_dtype<T>(*a, name);
  if (a->size() != n || !(a->flags() & py::array::c_style))
    throw std::invalid_argument(std::string("_core: ") + name + " must be contiguous with " +
                                std::to_string(n) + " elements");
  return static_cast<const T*>(a->data());
}
template <class T> T* flat_mut(OptArray& a, int64_t n, const char* name) {
  if (!a) return nullptr;
  flat_ptr<T>(a, n, name);
  return static_cast<T*>(a->mutable_data());
}

py::tuple pairwise_py(int kind, const py::array& x, const OptArray& x2, const py::array& y,
                      const OptArray& w, double p0, bool log_input, bool full, double grad_scale,
                      OptArray loss, OptArray grad, OptArray grad2, bool count_only) {
  return by_dtype(x, [&](auto tag) -> py::tuple {
    using S = decltype(tag);
    using T = compute_t<S>;
    if (kind < 0 || kind > int(PairKind::kGeneralizedKl))
      throw std::invalid_argument("_core: unknown pairwise kind");
    PairwiseArgs<S> a;
    a.kind = static_cast<PairKind>(kind);
    a.n = x.size();
    a.x = flat_ptr<S>(OptArray(x), a.n, "x");
    a.x2 = flat_ptr<S>(x2, a.n, "x2");
    const bool two = a.kind == PairKind::kGaussianNll || a.kind == PairKind::kMarginRanking;
    if (two != (a.x2 != nullptr)) throw std::invalid_argument("_core: x2 given for the wrong kind");
    a.y = flat_ptr<T>(OptArray(y), a.n, "y");
    a.w = flat_ptr<T>(w, a.n, "w");
    a.p0 = p0;
    a.log_input = log_input;
    a.full = full;
    a.grad_scale = grad_scale;
    a.loss = flat_mut<T>(loss, a.n, "loss");
    a.grad = flat_mut<S>(grad, a.n, "grad");
    a.grad2 = flat_mut<S>(grad2, a.n, "grad2");
    if (a.grad2 && !two) throw std::invalid_argument("_core: grad2 given for the wrong kind");
    if (count_only) {
      {
        py::gil_scoped_release nogil;
        a.n_bad = fastloss::pairwise_count_invalid(a);
      }
      return py::tuple(py::make_tuple(0.0, a.n_bad));
    }
    double total;
    {
      py::gil_scoped_release nogil;
      total = fastloss::pairwise(a);
    }
    return py::tuple(py::make_tuple(total, a.n_bad));
  });
}

void multilabel_margin_py(const py::array& x, const py::array& target, double grad_scale,
                          py::array loss, OptArray grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    check_dtype<S>(x, "input");
    if (x.ndim() != 2) throw std::invalid_argument("_core: input must be 2-d");
    MultilabelMarginArgs<S> a;
    a.x = static_cast<const S*>(x.data());
    a.rows = x.shape(0);
    a.C = x.shape(1);
    a.s0 = x.strides(0) / ssize_t(sizeof(S));
    a.s1 = x.strides(1) / ssize_t(sizeof(S));
    check_dtype<int64_t>(target, "target");
    if (target.ndim() != 2 || target.shape(0) != a.rows || target.shape(1) != a.C ||
        !(target.flags() & py::array::c_style))
      throw std::invalid_argument("_core: target must be contiguous with the input's shape");
    a.target = static_cast<const int64_t*>(target.data());
    // (the core trusts the targets: every entry in [-1, C), checked in Python)
    a.grad_scale = grad_scale;
    OptArray l(loss);
    a.loss = flat_mut<double>(l, a.rows, "loss");
    if (grad) {
      check_dtype<S>(*grad, "grad");
      if (grad->ndim() != 2 || grad->shape(0) != a.rows || grad->shape(1) != a.C)
        throw std::invalid_argument("_core: grad must have the input's shape");
      a.grad = static_cast<S*>(grad->mutable_data());
      a.g0 = grad->strides(0) / ssize_t(sizeof(S));
      a.g1 = grad->strides(1) / ssize_t(sizeof(S));
    }
    py::gil_scoped_release nogil;
    fastloss::multilabel_margin(a);
  });
}

void triplet_margin_py(const py::array& anchor, const py::array& positive,
                       const py::array& negative, double margin, double norm_p, double eps,
                       bool swap, double grad_scale, py::array loss, OptArray ga, OptArray gp,
                       OptArray gn) {
  by_dtype(anchor, [&](auto tag) {
    using S = decltype(tag);
    TripletArgs<S> a;
    const py::array* in[3] = {&anchor, &positive, &negative};
    const char* names[3] = {"anchor", "positive", "negative"};
    const S* ptr[3];
    int64_t st[3][2];
    for (int k = 0; k < 3; ++k) {
      check_dtype<S>(*in[k], names[k]);
      if (in[k]->ndim() != 2 || in[k]->shape(0) != anchor.shape(0) ||
          in[k]->shape(1) != anchor.shape(1))
        throw std::invalid_argument("_core: anchor, positive and negative must be 2-d, one shape");
      ptr[k] = static_cast<const S*>(in[k]->data());
      st[k][0] = in[k]->strides(0) / ssize_t(sizeof(S));
      st[k][1] = in[k]->strides(1) / ssize_t(sizeof(S));
    }
    a.a = ptr[0], a.p = ptr[1], a.n = ptr[2];
    a.a0 = st[0][0], a.a1 = st[0][1], a.p0 = st[1][0], a.p1 = st[1][1];
    a.n0 = st[2][0], a.n1 = st[2][1];
    a.rows = anchor.shape(0), a.D = anchor.shape(1);
    if (!(norm_p > 0)) throw std::invalid_argument("_core: norm_p must be > 0");
    a.margin = margin, a.norm_p = norm_p, a.eps = eps, a.swap = swap, a.grad_scale = grad_scale;
    OptArray l(loss);
    a.loss = flat_mut<double>(l, a.rows, "loss");
    OptArray* g[3] = {&ga, &gp, &gn};
    S* gptr[3] = {nullptr, nullptr, nullptr};
    for (int k = 0; k < 3; ++k) {
      if (!*g[k]) continue;
      py::array& gk = **g[k];
      check_dtype<S>(gk, "grad");
      if (gk.ndim() != 2 || gk.shape(0) != a.rows || gk.shape(1) != a.D ||
          !(gk.flags() & py::array::c_style) || !gk.writeable())
        throw std::invalid_argument("_core: grad must be C-contiguous and writable, of the input's shape");
      gptr[k] = static_cast<S*>(gk.mutable_data());
    }
    if ((gptr[0] != nullptr) != (gptr[1] != nullptr) || (gptr[0] != nullptr) != (gptr[2] != nullptr))
      throw std::invalid_argument("_core: give all three gradients or none");
    a.ga = gptr[0], a.gp = gptr[1], a.gn = gptr[2];
    py::gil_scoped_release nogil;
    fastloss::triplet_margin(a);
  });
}

// The elementwise pair losses without weights: elementwise_fast (bind_util.hpp). x2 (None for
// the one-operand kinds) is the second differentiable operand; rows_mean: "mean" divides by the
// rows of the last axis (generalized_kl_div, whose "none" then gives the per-element losses,
// summed over that axis by the caller).
py::object pairwise_fast(int kind, py::handle x, py::handle x2, py::handle y, double p0,
                         bool log_input, bool full, py::handle reduction,
                         py::handle return_grad, bool rows_mean, py::handle grad_out) {
  if (kind < 0 || kind > int(PairKind::kGeneralizedKl))
    throw std::invalid_argument("_core: unknown pairwise kind");
  const bool two = kind == int(PairKind::kGaussianNll) || kind == int(PairKind::kMarginRanking);
  if (two == x2.is_none()) throw std::invalid_argument("_core: x2 given for the wrong kind");
  const FastMean rule = rows_mean ? kMeanRowsOfLastAxis : kMeanElements;
  auto run = [&](auto& c, double& total) {
    using S = typename std::decay_t<decltype(c)>::type;
    PairwiseArgs<S> a;
    a.kind = static_cast<PairKind>(kind);
    a.n = c.n, a.x = c.in[0];
    a.x2 = two ? c.in[1] : nullptr;
    a.y = c.in[two ? 2 : 1];
    a.p0 = p0, a.log_input = log_input, a.full = full, a.grad_scale = c.grad_scale;
    a.loss = c.loss, a.grad = c.grad[0], a.grad2 = two ? c.grad[1] : nullptr;
    total = fastloss::pairwise(a);
    return a.n_bad == 0;  // (invalid operands: the general path raises, or ignores them)
  };
  // (grad_out: an array, or for gaussian_nll and margin_ranking a pair; soft_margin, log_cosh
  // and margin_ranking find no invalid input)
  const bool checks = kind != int(PairKind::kSoftMargin) && kind != int(PairKind::kLogCosh) &&
                      kind != int(PairKind::kMarginRanking);
  return two ? elementwise_fast({x, x2, y}, 2, reduction, return_grad, rule, run, grad_out, checks)
             : elementwise_fast({x, y}, 1, reduction, return_grad, rule, run, grad_out, checks);
}

}  // namespace

void register_pairs(py::module_& m) {
  // Elementwise losses of issue 16 (kind: PairKind's order in pairs.hpp); every operand
  // contiguous and of one size (broadcast in Python). Returns (sum of losses, invalid count);
  // count_only: only the count (reads only the operand checked; writes nothing).
  m.def("pairwise", &pairwise_py, py::arg("kind"), py::arg("x"), py::arg("x2"), py::arg("y"),
        py::arg("w"), py::arg("p0"), py::arg("log_input"), py::arg("full"),
        py::arg("grad_scale"), py::arg("loss"), py::arg("grad"), py::arg("grad2"),
        py::arg("count_only") = false);
  // Small-call fast path: what the public function returns, or None (bind_util.hpp).
  m.def("pairwise_fast", &pairwise_fast, py::arg("kind"), py::arg("x"), py::arg("x2"),
        py::arg("y"), py::arg("p0"), py::arg("log_input"), py::arg("full"),
        py::arg("reduction"), py::arg("return_grad"), py::arg("rows_mean"),
        py::arg("grad_out") = py::none());
  // multilabel_margin_loss: input (rows, C) any strides, target (rows, C) int64 C order,
  // per-row float64 losses into `loss`.
  m.def("multilabel_margin", &multilabel_margin_py, py::arg("input"), py::arg("target"),
        py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
  // triplet_margin_loss: anchor, positive, negative (rows, D) of one dtype, any strides;
  // per-row float64 losses into `loss`; the three gradients (C order) or none.
  m.def("triplet_margin", &triplet_margin_py, py::arg("anchor"), py::arg("positive"),
        py::arg("negative"), py::arg("margin"), py::arg("norm_p"), py::arg("eps"),
        py::arg("swap"), py::arg("grad_scale"), py::arg("loss"), py::arg("grad_anchor"),
        py::arg("grad_positive"), py::arg("grad_negative"));
}
