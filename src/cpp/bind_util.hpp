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

}  // namespace bind
}  // namespace fastloss
