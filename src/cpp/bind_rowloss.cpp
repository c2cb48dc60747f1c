// Bindings of the row losses of issue 16 (rowloss.hpp): sparsemax, the sparsemax loss, the
// multi-class hinge / perceptron, the generalized Jensen-Shannon divergence, the ranking
// softmax loss. As bindings.cpp: arrays to pointers and layouts, the GIL released, a kernel
// called; the checks here guard internal invariants only (users get theirs from Python).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_util.hpp"

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels.hpp"
#include "rowloss.hpp"

namespace py = pybind11;
using namespace fastloss;
using namespace fastloss::bind;

namespace {
template <class T> const T* vector_ptr(const py::array& a, int64_t n, const char* name) {
  check_dtype<T>(a, name);
  if (a.ndim() != 1 || a.shape(0) != n || !(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string("_core: ") + name +
                                " must be contiguous 1-d of length " + std::to_string(n));
  return static_cast<const T*>(a.data());
}

double* loss_ptr(py::array& loss, int64_t rows) {
  vector_ptr<double>(loss, rows, "loss");
  return static_cast<double*>(loss.mutable_data());
}

// An optional gradient of the prediction's layout.
template <class S> S* grad_ptr(OptArray& grad, const Layout3& lx, Layout3& lg) {
  if (!grad) return nullptr;
  lg = layout3<S>(*grad, "grad");
  if (!same_extents(lg, lx)) throw std::invalid_argument("_core: grad must have the input's shape");
  return static_cast<S*>(grad->mutable_data());
}

void class_margin_py(const py::array& x, const py::array& target, double margin,
                     double grad_scale, py::array loss, OptArray grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    ClassMarginArgs<S> a;
    a.lx = layout3<S>(x, "scores");
    a.x = static_cast<const S*>(x.data());
    a.target = vector_ptr<int64_t>(target, a.lx.rows(), "target");
    a.margin = margin;
    a.grad_scale = grad_scale;
    a.loss = loss_ptr(loss, a.lx.rows());
    a.grad = grad_ptr<S>(grad, a.lx, a.lg);
    py::gil_scoped_release nogil;
    fastloss::class_margin(a);
  });
}

void sparsemax_py(const py::array& x, py::array out) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    SparsemaxArgs<S> a;
    a.lx = layout3<S>(x, "x");
    a.lo = layout3<S>(out, "out");
    if (!same_extents(a.lx, a.lo)) throw std::invalid_argument("_core: out must have x's shape");
    a.x = static_cast<const S*>(x.data());
    a.out = static_cast<S*>(out.mutable_data());
    py::gil_scoped_release nogil;
    fastloss::sparsemax(a);
  });
}

void sparsemax_loss_py(const py::array& x, const OptArray& target, const OptArray& probs,
                       double grad_scale, py::array loss, OptArray grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    using T = compute_t<S>;
    SparsemaxLossArgs<S> a;
    a.lx = layout3<S>(x, "logits");
    a.x = static_cast<const S*>(x.data());
    if (bool(target) == bool(probs))
      throw std::invalid_argument("_core: give class indices or probabilities, not both");
    if (target) a.target = vector_ptr<int64_t>(*target, a.lx.rows(), "target");
    if (probs) {
      a.lp = layout3<T>(*probs, "probs");
      if (!same_extents(a.lp, a.lx))
        throw std::invalid_argument("_core: probs must have the logits' shape");
      a.probs = static_cast<const T*>(probs->data());
    }
    a.grad_scale = grad_scale;
    a.loss = loss_ptr(loss, a.lx.rows());
    a.grad = grad_ptr<S>(grad, a.lx, a.lg);
    py::gil_scoped_release nogil;
    fastloss::sparsemax_loss(a);
  });
}

void jensen_shannon_py(const py::array& student, const py::array& teacher, double beta,
                       double temperature, double grad_scale, py::array loss, OptArray grad) {
  by_dtype(student, [&](auto tag) {
    using S = decltype(tag);
    JsdArgs<S> a;
    a.ls = layout3<S>(student, "student");
    a.lt = layout3<S>(teacher, "teacher");
    if (!same_extents(a.ls, a.lt))
      throw std::invalid_argument("_core: student and teacher differ in shape");
    if (!(beta >= 0 && beta <= 1)) throw std::invalid_argument("_core: beta must be in [0, 1]");
    if (!(temperature > 0) || !std::isfinite(temperature))
      throw std::invalid_argument("_core: temperature must be positive and finite");
    a.student = static_cast<const S*>(student.data());
    a.teacher = static_cast<const S*>(teacher.data());
    a.beta = beta;
    a.temperature = temperature;
    a.grad_scale = grad_scale;
    a.loss = loss_ptr(loss, a.ls.rows());
    a.grad = grad_ptr<S>(grad, a.ls, a.lg);
    py::gil_scoped_release nogil;
    fastloss::jensen_shannon(a);
  });
}

void ranking_softmax_py(const py::array& x, const py::array& labels, const OptArray& where,
                        double grad_scale, py::array loss, OptArray grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    using T = compute_t<S>;
    RankingSoftmaxArgs<S> a;
    a.lx = layout3<S>(x, "scores");
    a.x = static_cast<const S*>(x.data());
    a.ly = layout3<T>(labels, "labels");
    if (!same_extents(a.ly, a.lx))
      throw std::invalid_argument("_core: labels must have the scores' shape");
    a.labels = static_cast<const T*>(labels.data());
    if (where) {
      a.lw = layout3<uint8_t>(*where, "where");
      if (!same_extents(a.lw, a.lx))
        throw std::invalid_argument("_core: where must have the scores' shape");
      a.where = static_cast<const uint8_t*>(where->data());
    }
    a.grad_scale = grad_scale;
    a.loss = loss_ptr(loss, a.lx.rows());
    a.grad = grad_ptr<S>(grad, a.lx, a.lg);
    py::gil_scoped_release nogil;
    fastloss::ranking_softmax(a);
  });
}

}  // namespace

// Row losses of issue 16: predictions (n0, classes, n2) with the row over axis 1; per-row
// float64 losses written to `loss`; the gradient (or sparsemax's output) of the input's shape.
void register_rowloss(py::module_& m) {
  m.def("class_margin", &class_margin_py, py::arg("scores"), py::arg("target"),
        py::arg("margin"), py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
  m.def("sparsemax", &sparsemax_py, py::arg("x"), py::arg("out"));
  m.def("sparsemax_loss", &sparsemax_loss_py, py::arg("logits"), py::arg("target"),
        py::arg("probs"), py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
  m.def("jensen_shannon", &jensen_shannon_py, py::arg("student"), py::arg("teacher"),
        py::arg("beta"), py::arg("temperature"), py::arg("grad_scale"), py::arg("loss"),
        py::arg("grad"));
  m.def("ranking_softmax", &ranking_softmax_py, py::arg("scores"), py::arg("labels"),
        py::arg("where"), py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
}
