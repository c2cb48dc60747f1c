// Bindings of the row losses of issue 16 (rowloss.hpp): sparsemax, the sparsemax loss, the
// multi-class hinge / perceptron, the generalized Jensen-Shannon divergence, the ranking
// softmax loss. As bindings.cpp: arrays to pointers and layouts, the GIL released, a kernel
// called; the checks here guard internal invariants only (users get theirs from Python).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels.hpp"
#include "rowloss.hpp"

namespace py = pybind11;
using namespace fastloss;

namespace {

using OptArray = std::optional<py::array>;

// (the same recognition of float16 / bfloat16 as bindings.cpp: kind, size and name)
template <class T> bool holds(const py::array& a) {
  const py::dtype dt = a.dtype();
  if constexpr (std::is_same_v<T, float16>) return dt.kind() == 'f' && dt.itemsize() == 2;
  else if constexpr (std::is_same_v<T, bfloat16>)
    return dt.itemsize() == 2 && py::str(dt.attr("name")).cast<std::string>() == "bfloat16";
  else return py::isinstance<py::array_t<T>>(a);
}

template <class T> void check_dtype(const py::array& a, const char* name) {
  if (!holds<T>(a) || !(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) ||
      !a.dtype().attr("isnative").cast<bool>())
    throw std::invalid_argument(std::string("_core: ") + name +
                                " has the wrong dtype or is unaligned");
}

template <class T> Layout3 layout3(const py::array& a, const char* name) {
  check_dtype<T>(a, name);
  if (a.ndim() != 3) throw std::invalid_argument(std::string("_core: ") + name + " must be 3-d");
  Layout3 L;
  L.n0 = a.shape(0), L.n1 = a.shape(1), L.n2 = a.shape(2);
  L.s0 = a.strides(0) / ssize_t(sizeof(T));
  L.s1 = a.strides(1) / ssize_t(sizeof(T));
  L.s2 = a.strides(2) / ssize_t(sizeof(T));
  return L;
}

bool same_shape(const Layout3& a, const Layout3& b) {
  return a.n0 == b.n0 && a.n1 == b.n1 && a.n2 == b.n2;
}

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

template <class Fn> void by_dtype(const py::array& x, Fn&& fn) {
  if (holds<float>(x)) return fn(float{});
  if (holds<double>(x)) return fn(double{});
  if (holds<float16>(x)) return fn(float16{});
  if (holds<bfloat16>(x)) return fn(bfloat16{});
  throw std::invalid_argument("_core: only float16/bfloat16/float32/float64 arrays reach the core");
}

// An optional gradient of the prediction's layout.
template <class S> S* grad_ptr(OptArray& grad, const Layout3& lx, Layout3& lg) {
  if (!grad) return nullptr;
  lg = layout3<S>(*grad, "grad");
  if (!same_shape(lg, lx)) throw std::invalid_argument("_core: grad must have the input's shape");
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
    if (!same_shape(a.lx, a.lo)) throw std::invalid_argument("_core: out must have x's shape");
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
      if (!same_shape(a.lp, a.lx))
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
    if (!same_shape(a.ls, a.lt))
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
    if (!same_shape(a.ly, a.lx))
      throw std::invalid_argument("_core: labels must have the scores' shape");
    a.labels = static_cast<const T*>(labels.data());
    if (where) {
      a.lw = layout3<uint8_t>(*where, "where");
      if (!same_shape(a.lw, a.lx))
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
