// What every binding file needs to turn NumPy arrays into the core's pointers and layouts
// (bindings.cpp, bind_pairs.cpp, bind_overlap.cpp, bind_rowloss.cpp). The checks guard internal
// invariants only: users get their errors from the Python layer.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#include <initializer_list>

#include "kernels.hpp"

namespace fastloss {
namespace bind {

namespace py = pybind11;

using OptArray = std::optional<py::array>;

// Does the array hold elements of type T? (float16 and ml_dtypes.bfloat16 have no pybind11
// type, so they are recognised by kind, size and name.)
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

inline bool same_extents(const Layout3& a, const Layout3& b) {
  return a.n0 == b.n0 && a.n1 == b.n1 && a.n2 == b.n2;
}

template <class T> T* mutable_ptr(py::array& a) { return static_cast<T*>(a.mutable_data()); }
template <class T> const T* const_ptr(const py::array& a) { return static_cast<const T*>(a.data()); }

// Calls fn(S{}) with S the storage type of `x`: float, double, float16 or bfloat16.
template <class Fn> auto by_dtype(const py::array& x, Fn&& fn) {
  if (holds<float>(x)) return fn(float{});
  if (holds<double>(x)) return fn(double{});
  if (holds<float16>(x)) return fn(float16{});
  if (holds<bfloat16>(x)) return fn(bfloat16{});
  throw std::invalid_argument("_core: only float16/bfloat16/float32/float64 arrays reach the core");
}

// ---------------------------------------------------------------------------------------------
// Small-call fast paths (issue 13): a loss in a loop is often a few hundred numbers, where the
// Python layer's checks cost ten times the arithmetic. A fast-path binding checks the common
// case (exact ndarrays of one float dtype and layout, default options) itself and returns None
// when anything differs, or when the kernel finds invalid input; the Python layer then takes
// its general path, which raises the user-facing errors. A fast path writes only into arrays
// it creates, or into the caller's grad_out once every check has passed, so nothing the
// caller owns is written before a check fails.
// ---------------------------------------------------------------------------------------------
// Work below this many elements runs with the GIL held (releasing it costs more than it gives).
constexpr int64_t kSmallWork = int64_t(1) << 15;

// An aligned array of native byte order whose dtype has this kind and item size.
inline bool plain_dtype(const py::array& a, char kind, ssize_t itemsize) {
  const py::dtype dt = a.dtype();
  const char order = dt.byteorder();
  return dt.kind() == kind && dt.itemsize() == itemsize && (order == '=' || order == '|') &&
         (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_);
}
inline bool plain_float(const py::array& a) {
  return plain_dtype(a, 'f', 4) || plain_dtype(a, 'f', 8);
}

// Is h a numpy.ndarray (not a subclass, not something convertible)?
inline bool exact_ndarray(py::handle h) {
  return Py_TYPE(h.ptr()) == py::detail::npy_api::get().PyArray_Type_;
}

// The reduction argument, exactly a str: 0 "none", 1 "mean", 2 "sum", 3 "batchmean" (only
// where allowed); -1 for anything else (the general path raises or handles it).
enum FastReduction { kFastNone = 0, kFastMean = 1, kFastSum = 2, kFastBatchMean = 3 };
inline int fast_reduction(py::handle r, bool batchmean_ok = false) {
  PyObject* o = r.ptr();
  if (!PyUnicode_CheckExact(o)) return -1;
  if (PyUnicode_CompareWithASCIIString(o, "mean") == 0) return kFastMean;
  if (PyUnicode_CompareWithASCIIString(o, "sum") == 0) return kFastSum;
  if (PyUnicode_CompareWithASCIIString(o, "none") == 0) return kFastNone;
  if (batchmean_ok && PyUnicode_CompareWithASCIIString(o, "batchmean") == 0) return kFastBatchMean;
  return -1;
}

// return_grad exactly True (1) or False (0); -1 otherwise.
inline int fast_flag(py::handle f) {
  return f.ptr() == Py_True ? 1 : f.ptr() == Py_False ? 0 : -1;
}

// A NumPy scalar of float32 (f32) or float64 holding v rounded to it, as np.float32(v).
inline py::object numpy_scalar(double v, bool f32) {
  // (the types, looked up once and kept for the life of the process)
  static const py::handle t32 = py::object(py::module_::import("numpy").attr("float32")).release();
  static const py::handle t64 = py::object(py::module_::import("numpy").attr("float64")).release();
  return (f32 ? t32 : t64)(v);
}

// What a fast elementwise call hands its kernel: n elements of every operand (contiguous, of
// storage type S), where to write per-element losses (reduction "none") and gradients.
template <class S> struct FastCall {
  using type = S;
  int64_t n = 0;
  const S* in[3] = {};    // the operands, in the order given
  double grad_scale = 1.0;
  S* loss = nullptr;      // per-element losses ("none"), or nullptr
  S* grad[2] = {};        // gradients of the first n_grads operands, or nullptr
};

// What "mean" divides by: the number of elements, or (kl_div) that with "batchmean" allowed
// (the size of the first axis), or (generalized_kl_div) the number of rows of the last axis.
enum FastMean { kMeanElements, kMeanOrBatchMean, kMeanRowsOfLastAxis };

// The shared fast path of the elementwise losses (_core.pointwise_fast, _core.pairwise_fast):
// every operand an exact ndarray of one shape, float32 or float64 (all one), C order, not
// empty; `reduction` and `return_grad` as the user gave them. run(FastCall<S>&, double& total)
// calls the kernel and returns false where it found invalid input. Returns None (the general
// path applies), or what the public function returns: the loss (a NumPy scalar, or an array
// of the operands' shape for "none") and, with return_grad, the gradient of the first operand
// (n_grads 1) or a tuple of the first two operands' (n_grads 2).
// grad_out (None or a null handle: none): the caller's gradient array (n_grads 1), or an exact
// tuple or list of two entries, each such an array or None (n_grads 2: that gradient is a
// fresh array). An array is an exact ndarray of the operands' dtype and shape, C order,
// writeable, sharing no memory with the other entry nor with the operands but its own one
// itself (gradient j in place of operand j), and it is then the gradient returned. Where the
// kernel checks its input (checks_input: run may return false), the gradients go into fresh
// arrays copied into grad_out once run has returned true (calls of at most kSmallWork
// elements; larger ones and in-place ones take the general path): without this, a training
// loop that passes its gradient buffers paid the general path on every call (1,024 float32
// elements: 11 us against 1.1 us; gaussian_nll_loss of 128 with two buffers 25 us).
template <class Run>
py::object elementwise_fast(std::initializer_list<py::handle> operands, int n_grads,
                            py::handle reduction, py::handle return_grad, FastMean mean_rule,
                            Run&& run, py::handle grad_out = py::handle(),
                            bool checks_input = true) {
  const int red = fast_reduction(reduction, mean_rule == kMeanOrBatchMean);
  const int grad = fast_flag(return_grad);
  const bool user_grad = grad_out && !grad_out.is_none();
  if (red < 0 || grad < 0 || operands.size() > 3 || n_grads < 1 || n_grads > 2) return py::none();
  py::handle gout[2];  // (the caller's arrays; null: a fresh one)
  if (user_grad) {
    if (grad != 1) return py::none();
    if (n_grads == 1) {
      gout[0] = grad_out;
    } else {  // (exactly a tuple or list of two)
      PyObject* o = grad_out.ptr();
      const bool tup = PyTuple_CheckExact(o), lst = PyList_CheckExact(o);
      if (!(tup || lst) || (tup ? PyTuple_GET_SIZE(o) : PyList_GET_SIZE(o)) != 2)
        return py::none();
      for (int j = 0; j < 2; ++j) {
        PyObject* e = tup ? PyTuple_GET_ITEM(o, j) : PyList_GET_ITEM(o, j);
        if (e != Py_None) gout[j] = e;
      }
    }
    for (int j = 0; j < n_grads; ++j)
      if (gout[j] && !exact_ndarray(gout[j])) return py::none();
  }
  // (handles, not py::array: a default-constructed py::array allocates an empty array)
  py::handle hs[3];
  size_t k = 0;
  for (py::handle h : operands) {
    if (!exact_ndarray(h)) return py::none();
    hs[k++] = h;
  }
  auto op = [&](size_t i) { return py::reinterpret_borrow<py::array>(hs[i]); };
  const py::array x = op(0);
  const ssize_t nd = x.ndim();
  if (!plain_float(x) || !(x.flags() & py::array::c_style) || x.size() == 0) return py::none();
  for (size_t i = 1; i < k; ++i) {
    const py::array a = op(i);
    if (!plain_float(a) || a.dtype().itemsize() != x.dtype().itemsize() || a.ndim() != nd ||
        !(a.flags() & py::array::c_style))
      return py::none();
    for (ssize_t d = 0; d < nd; ++d)
      if (a.shape(d) != x.shape(d)) return py::none();
  }
  const int64_t n = x.size();
  for (int j = 0; j < n_grads; ++j) {
    if (!gout[j]) continue;
    const auto ga = py::reinterpret_borrow<py::array>(gout[j]);
    if (!plain_float(ga) || ga.dtype().itemsize() != x.dtype().itemsize() || ga.ndim() != nd ||
        !(ga.flags() & py::array::c_style) || !ga.writeable() ||
        (checks_input && n > kSmallWork))
      return py::none();
    for (ssize_t d = 0; d < nd; ++d)
      if (ga.shape(d) != x.shape(d)) return py::none();
    // (C-order arrays of one shape and item size: byte ranges; operand j may be gradient j
    // itself, where no check can follow the writes; the two gradients share nothing)
    const char* g0 = static_cast<const char*>(ga.data());
    const char* g1 = g0 + ga.nbytes();
    for (size_t i = 0; i < k; ++i) {
      const py::array a = op(i);
      const char* a0 = static_cast<const char*>(a.data());
      if (a0 < g1 && g0 < a0 + a.nbytes() && !(int(i) == j && a0 == g0 && !checks_input))
        return py::none();
    }
    if (j == 1 && gout[0]) {
      const auto gb = py::reinterpret_borrow<py::array>(gout[0]);
      const char* b0 = static_cast<const char*>(gb.data());
      if (b0 < g1 && g0 < b0 + gb.nbytes()) return py::none();
    }
  }
  int64_t denom = n;
  if (red == kFastBatchMean) denom = nd ? x.shape(0) : 1;
  if (mean_rule == kMeanRowsOfLastAxis) {
    if (nd == 0) return py::none();
    denom = n / x.shape(nd - 1);
  }
  const bool mean = red == kFastMean || red == kFastBatchMean;
  const std::vector<ssize_t> shape(x.shape(), x.shape() + nd);
  auto go = [&](auto tag) -> py::object {
    using S = decltype(tag);
    FastCall<S> c;
    c.n = n;
    for (size_t i = 0; i < k; ++i) c.in[i] = static_cast<const S*>(op(i).data());
    c.grad_scale = mean ? 1.0 / double(denom) : 1.0;
    py::object loss, g[2];  // (null until made)
    if (red == kFastNone) {
      py::array_t<S> a(shape);
      c.loss = a.mutable_data();
      loss = std::move(a);
    }
    const bool direct = !checks_input;  // (the kernel writes the caller's arrays)
    for (int j = 0; grad && j < n_grads; ++j) {
      if (gout[j] && direct) {
        c.grad[j] = static_cast<S*>(py::reinterpret_borrow<py::array>(gout[j]).mutable_data());
        continue;
      }
      py::array_t<S> a(shape);
      c.grad[j] = a.mutable_data();
      g[j] = std::move(a);
    }
    double total = 0.0;
    bool ok;
    if (n >= kSmallWork) {
      py::gil_scoped_release nogil;
      ok = run(c, total);
    } else {
      ok = run(c, total);
    }
    if (!ok) return py::none();
    for (int j = 0; j < n_grads; ++j) {
      if (!gout[j]) continue;
      if (!direct) std::memcpy(py::reinterpret_borrow<py::array>(gout[j]).mutable_data(),
                               c.grad[j], sizeof(S) * size_t(n));
      g[j] = py::reinterpret_borrow<py::object>(gout[j]);
    }
    py::object value = red == kFastNone ? loss
                       : numpy_scalar(mean ? total / double(denom) : total,
                                      std::is_same_v<S, float>);
    if (!grad) return value;
    if (n_grads == 1) return py::make_tuple(value, g[0]);
    return py::make_tuple(value, py::make_tuple(g[0], g[1]));
  };
  return x.dtype().itemsize() == 4 ? go(float{}) : go(double{});
}

}  // namespace bind
}  // namespace fastloss
