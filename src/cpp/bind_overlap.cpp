// Bindings of the overlap losses and the cosine similarity (overlap.hpp): NumPy arrays to
// pointers and layouts, the GIL released around the kernel. Argument checking that users see
// lives in Python (fastloss/overlap.py, fastloss/similarity.py); the checks here guard
// internal invariants only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_util.hpp"

#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels.hpp"
#include "overlap.hpp"

namespace py = pybind11;
using namespace fastloss;
using namespace fastloss::bind;

namespace {

template <class T> const T* contiguous(const py::array& a, int64_t n, const char* name) {
  check_dtype<T>(a, name);
  if (a.size() != n || !(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string("_core: ") + name + " must be contiguous of size " +
                                std::to_string(n));
  return static_cast<const T*>(a.data());
}

// The parts of OverlapArgs both passes share: input, targets, activation.
template <class S>
OverlapArgs<S> overlap_args(const py::array& x, const OptArray& target, const OptArray& index,
                            int act) {
  using T = compute_t<S>;
  OverlapArgs<S> a;
  a.lx = layout3<S>(x, "input");
  a.x = static_cast<const S*>(x.data());
  if (bool(target) == bool(index))
    throw std::invalid_argument("_core: give dense targets or class indices, not both");
  if (target) {
    a.lt = layout3<T>(*target, "target");
    if (!same_extents(a.lt, a.lx))
      throw std::invalid_argument("_core: target must have the input's shape");
    a.target = static_cast<const T*>(target->data());
  } else {
    a.index = contiguous<int64_t>(*index, a.lx.n0 * a.lx.n2, "index");
  }
  if (act < 0 || act > 2 || (act == 2 && a.lx.n1 != 1))
    throw std::invalid_argument("_core: activation 0 (none), 1 (softmax) or 2 (sigmoid, C = 1)");
  a.act = OverlapActivation(act);
  return a;
}

void overlap_stats_py(const py::array& x, const OptArray& target, const OptArray& index, int act,
                      int64_t chunk, py::array partial) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    OverlapArgs<S> a = overlap_args<S>(x, target, index, act);
    if (chunk <= 0 || chunk % 64 != 0)
      throw std::invalid_argument("_core: chunk must be a positive multiple of 64");
    a.chunk = chunk;
    const int64_t chunks = (a.lx.n2 + chunk - 1) / chunk;
    contiguous<double>(partial, a.lx.n0 * chunks * a.lx.n1 * 3, "partial");
    a.partial = static_cast<double*>(partial.mutable_data());
    py::gil_scoped_release nogil;
    fastloss::overlap_stats(a);
  });
}

void overlap_grad_py(const py::array& x, const OptArray& target, const OptArray& index, int act,
                     const py::array& coef_a, const py::array& coef_b, py::array grad) {
  by_dtype(x, [&](auto tag) {
    using S = decltype(tag);
    OverlapArgs<S> a = overlap_args<S>(x, target, index, act);
    a.coef_a = contiguous<double>(coef_a, a.lx.n0 * a.lx.n1, "coef_a");
    a.coef_b = contiguous<double>(coef_b, a.lx.n0 * a.lx.n1, "coef_b");
    a.lg = layout3<S>(grad, "grad");
    if (!same_extents(a.lg, a.lx))
      throw std::invalid_argument("_core: grad must have the input's shape");
    a.grad = static_cast<S*>(grad.mutable_data());
    py::gil_scoped_release nogil;
    fastloss::overlap_grad(a);
  });
}

void cosine_similarity_py(const py::array& x1, const py::array& x2, double eps,
                          double grad_scale, py::array cos, OptArray grad1, OptArray grad2) {
  by_dtype(x1, [&](auto tag) {
    using S = decltype(tag);
    CosineArgs<S> a;
    a.l1 = layout3<S>(x1, "x1");
    a.l2 = layout3<S>(x2, "x2");
    if (!same_extents(a.l1, a.l2))
      throw std::invalid_argument("_core: x1 and x2 must have one (broadcast) shape");
    a.x1 = static_cast<const S*>(x1.data());
    a.x2 = static_cast<const S*>(x2.data());
    a.eps = eps;
    a.grad_scale = grad_scale;
    contiguous<double>(cos, a.l1.rows(), "cos");
    a.cos = static_cast<double*>(cos.mutable_data());
    if (bool(grad1) != bool(grad2))
      throw std::invalid_argument("_core: give both gradients or neither");
    if (grad1) {
      a.lg1 = layout3<S>(*grad1, "grad1");
      a.lg2 = layout3<S>(*grad2, "grad2");
      if (!same_extents(a.lg1, a.l1) || !same_extents(a.lg2, a.l1))
        throw std::invalid_argument("_core: gradients must have the inputs' shape");
      a.grad1 = static_cast<S*>(grad1->mutable_data());
      a.grad2 = static_cast<S*>(grad2->mutable_data());
    }
    py::gil_scoped_release nogil;
    fastloss::cosine_similarity(a);
  });
}

}  // namespace

void register_overlap(py::module_& m) {
  // Overlap losses: input (N, C, S) with the class axis 1; dense targets (compute dtype, the
  // input's shape) or class indices (N * S int64); act 0 none, 1 softmax, 2 sigmoid (C = 1).
  // Stats: per (sample, chunk of positions, class) [sum p t, sum p, sum t] into `partial`.
  m.def("overlap_stats", &overlap_stats_py, py::arg("input"), py::arg("target"),
        py::arg("index"), py::arg("act"), py::arg("chunk"), py::arg("partial"));
  // Gradient: d loss / d p = coef_a[n, c] t + coef_b[n, c], through the activation.
  m.def("overlap_grad", &overlap_grad_py, py::arg("input"), py::arg("target"),
        py::arg("index"), py::arg("act"), py::arg("coef_a"), py::arg("coef_b"), py::arg("grad"));
  // Cosine similarity over axis 1 of (n0, D, n2) arrays of one shape; per-row float64 cosines.
  m.def("cosine_similarity", &cosine_similarity_py, py::arg("x1"), py::arg("x2"),
        py::arg("eps"), py::arg("grad_scale"), py::arg("cos"), py::arg("grad1"),
        py::arg("grad2"));
}
