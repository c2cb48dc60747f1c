"""The softmax family: drop-in replacements for ``scipy.special.logsumexp``, ``softmax`` and
``log_softmax`` (scipy 1.17), real and complex inputs. Real inputs run in the C++ kernels;
``logsumexp(..., b=...)`` and complex inputs in NumPy."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from . import _core
from ._validation import float_input, is_bfloat16, normalize_axes, rows_last

__all__ = ["logsumexp", "softmax", "log_softmax"]


def _result_dtype(orig: np.dtype, work: np.dtype) -> np.dtype:
    # As scipy: the input's float dtype is kept (float16 and bfloat16 too); ints give float64.
    return orig if orig.kind == "f" or orig.name == "bfloat16" else work


def _array(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be converted to a numeric array ({exc})") from None


def _numeric_dtype(dt: np.dtype, name: str) -> np.dtype:
    """The dtype of an input of the NumPy paths (``b=``, complex): checked, native order."""
    if dt.kind == "c" and dt.itemsize in (8, 16) or dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return np.dtype(dt.newbyteorder("="))
    if dt.kind in "iub" or is_bfloat16(dt):
        return dt
    raise TypeError(f"{name}: unsupported dtype {dt}; use float16, bfloat16, float32, float64, "
                    "complex64, complex128 or integers")


def _promoted_dtype(da: np.dtype, db: np.dtype) -> np.dtype:
    """scipy's result dtype for ``a`` and ``b``: NumPy's promotion, integers and bools to
    float64. bfloat16 promotes as float16 does (kept with itself and small integers)."""
    subs = [np.dtype(np.float16) if is_bfloat16(d) else d for d in (da, db)]
    dt = np.result_type(*subs)
    if dt == np.float16 and any(is_bfloat16(d) for d in (da, db)):
        # bfloat16 with float16 has no 16-bit common type: float32
        dt = np.dtype(np.float32) if np.float16 in (da, db) else da if is_bfloat16(da) else db
    return np.dtype(np.float64) if dt.kind in "iub" else dt


def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False,
              return_sign: bool = False):
    """Log of the sum of exponentials, ``log(sum(b * exp(a), axis))``, computed stably.

    Drop-in for :func:`scipy.special.logsumexp` (scipy 1.17), real and complex inputs.

    Parameters
    ----------
    a : array_like
        Input values. float16/bfloat16/float32/float64 keep their dtype (16-bit inputs are
        computed in float32); integers and bools give float64; complex64 and complex128 give
        complex results.
    axis : None, int or tuple of ints
        Axes to reduce over; None (default) reduces over all of them.
    b : array_like, optional
        Scale factors for ``exp(a)``, broadcast against ``a`` (the result has the broadcast
        shape, reduced); may be negative, zero or complex. A zero removes its term, as a mask
        would, even where ``a`` is infinite or NaN. The result dtype is NumPy's promotion of
        ``a``'s and ``b``'s dtypes (integers and bools: float64), as in scipy.
    keepdims : bool
        Keep reduced axes with size one.
    return_sign : bool
        Also return the sign of the sum: +1, -1, or 0 for a sum of zero (an empty reduction
        included) for real inputs; for complex inputs the phase ``s / |s|`` as a unit complex
        number (0 for a zero sum), and ``res`` is then the real ``log|s|``. Without it a
        negative real sum gives NaN.

    Returns
    -------
    res : ndarray or NumPy scalar
    sgn : ndarray or NumPy scalar, only with ``return_sign``

    Notes
    -----
    The term of largest (real part of) ``a`` is kept apart: with ``m`` its ``b * exp(a)``
    and ``r`` the sum of the other terms divided by ``m``, ``res = a_max + log(m) +
    log1p(r)``, so ``logsumexp([0, -40]) = log1p(exp(-40)) = 4.2e-18`` keeps its digits and
    no finite input overflows. A complex result has its imaginary part in ``(-pi, pi]``.
    Where that is not finite, the result is ``log(sum(b * exp(a)))`` computed directly, so
    infinities and NaN follow ``np.exp`` and ``np.log`` (C99 for complex values), as scipy:
    a ``+inf`` entry gives ``+inf``, a row of ``-inf`` (or an empty reduction) gives ``-inf``,
    NaN gives NaN. Real inputs without ``b`` run in the C++ core (float64 accumulation);
    with ``b`` or complex values the reduction runs in NumPy in float64 (complex128) and is
    rounded to the result dtype.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> round(float(fl.logsumexp([1.0, 2.0, 3.0])), 12)
    3.407605964444
    >>> fl.logsumexp([[0.0, 0.0], [1e30, 1e30]], axis=1)
    array([6.93147181e-01, 1.00000000e+30])
    >>> float(fl.logsumexp([0.0, -40.0], b=[1.0, 1.0]))
    4.248354255291589e-18
    >>> r, s = fl.logsumexp([1.0, 2.0], b=[1, -2], return_sign=True)   # log|e - 2 e^2|
    >>> round(float(r), 12), float(s)
    (2.489880125645, -1.0)
    >>> z = fl.logsumexp(np.array([0.0, 1j * np.pi / 2]))   # log(1 + i)
    >>> round(float(z.real), 12), round(float(z.imag), 12)
    (0.34657359028, 0.785398163397)
    """
    if b is None and keepdims is False and return_sign is False:
        r = _core.softmax_small(0, a, axis)  # the common small call (None: the general path)
        if r is not None:
            return r
    a_arr = _array(a, "a")
    b_arr = None if b is None else _array(b, "b")
    if a_arr.dtype.kind == "c" or b_arr is not None:
        return _logsumexp_numpy(a_arr, b_arr, axis, keepdims, return_sign)
    x = float_input(a_arr, "a")
    arr = np.atleast_1d(x.array)
    axes = normalize_axes(axis, arr.ndim)
    out_dt = _result_dtype(x.orig_dtype, arr.dtype)
    kept = tuple(n for i, n in enumerate(arr.shape) if i not in axes)
    if math.prod(arr.shape[i] for i in axes) == 0:
        res = np.full(kept, -np.inf, dtype=arr.dtype)
    else:
        # A reduced axis with stride 0 (a broadcast view) repeats one value n times:
        # log(n e^x) = x + log n. It is read once instead of being copied whole.
        bcast = tuple(i for i in axes if arr.strides[i] == 0 and arr.shape[i] > 1)
        shift = sum(math.log(arr.shape[i]) for i in bcast)
        if bcast:
            arr = arr[tuple(slice(0, 1) if i in bcast else slice(None)
                            for i in range(arr.ndim))]
        x3 = rows_last(arr, axes)
        res = np.empty(x3.shape[0] * x3.shape[2], dtype=arr.dtype)
        _core.logsumexp(x3, res)
        res = res.reshape(kept)
        if bcast:
            with np.errstate(over="ignore"):
                res = (res.astype(np.float64) + shift).astype(arr.dtype)
    if keepdims:
        res = np.expand_dims(res, axes)
    res = res.astype(out_dt, copy=False)[()]
    if not return_sign:
        return res
    with np.errstate(invalid="ignore"):  # (only when asked: three passes over the result)
        sgn = np.where(np.isnan(res), np.nan, np.where(res == -np.inf, 0.0, 1.0))
    return res, sgn.astype(out_dt, copy=False)[()]


def _logsumexp_numpy(a: np.ndarray, b: Optional[np.ndarray], axis: Any, keepdims: bool,
                     return_sign: bool):
    """``logsumexp`` with ``b=`` or complex values: NumPy, in float64 or complex128."""
    da = _numeric_dtype(a.dtype, "a")
    out_dt = da if da.kind in "fc" or is_bfloat16(da) else np.dtype(np.float64)
    if b is not None:
        out_dt = _promoted_dtype(da, _numeric_dtype(b.dtype, "b"))
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise ValueError(f"b has shape {b.shape}, which does not broadcast against a's "
                             f"shape {a.shape}") from None
    work = np.dtype(np.complex128 if out_dt.kind == "c" else np.float64)
    a = np.atleast_1d(a).astype(work)
    b = None if b is None else np.atleast_1d(b).astype(work)
    axes = normalize_axes(axis, a.ndim)
    kept = tuple(n for i, n in enumerate(a.shape) if i not in axes)
    # the reduced axes last, flattened: (*kept, n)
    rest = [i for i in range(a.ndim) if i not in axes]
    n = math.prod(a.shape[i] for i in axes)
    a = a.transpose(rest + list(axes)).reshape(kept + (n,))
    if b is not None:
        b = b.transpose(rest + list(axes)).reshape(kept + (n,))
    res, sgn = _logsumexp_last(a, b, return_sign)
    if work.kind == "c":
        if return_sign:  # res is the real log|sum|; the phase is in sgn
            res = res.real
        else:
            res = res.real + 1j * _wrap_phase(res.imag)
    elif not return_sign:
        res = np.where(sgn < 0, np.nan, res)  # log of a negative sum
    res_dt = out_dt if not (return_sign and out_dt.kind == "c") else \
        np.dtype(np.float32 if out_dt == np.complex64 else np.float64)
    if keepdims:
        res = np.expand_dims(res, axes)
        sgn = np.expand_dims(sgn, axes)
    res = res.astype(res_dt, copy=False)[()]
    sgn = sgn.astype(out_dt, copy=False)[()]
    return (res, sgn) if return_sign else res


def _logsumexp_last(a: np.ndarray, b: Optional[np.ndarray], return_sign: bool):
    """log(sum(b * exp(a))) over the last axis and the sign (phase) of the sum, float64 or
    complex128; a complex result is ``log|s| + i arg`` with an unwrapped argument."""
    if a.shape[-1] == 0:
        res = np.full(a.shape[:-1], -np.inf, a.dtype)
        return res, np.zeros(a.shape[:-1], a.dtype)
    cplx = a.dtype.kind == "c"
    live = None if b is None else b != 0
    with np.errstate(all="ignore"):
        # the term of largest real part, kept apart: a_max and its weight m
        key = a.real if cplx else a
        if live is not None:
            key = np.where(live, key, -np.inf)
        top = np.argmax(key, axis=-1)[..., None]
        a_max = np.take_along_axis(a, top, axis=-1)
        m = np.ones_like(a_max) if b is None else np.take_along_axis(b, top, axis=-1)
        others = np.arange(a.shape[-1]) != top
        if live is not None:
            others &= live
        # r = sum over the other terms of b exp(a - a_max), relative to m
        terms = np.exp(a - a_max) if b is None else b * np.exp(a - a_max)
        r = np.sum(np.where(others, terms, 0), axis=-1, keepdims=True)
        r = np.where(r == 0, r, r / m)
        if cplx:
            # sum = m e^{a_max} (1 + r); the phase of e^{a_max} is e^{i Im a_max}
            res = _log1p_complex(r) + np.log(m) + a_max
            sgn = _phase(1 + r) * _phase(m) * np.exp(1j * a_max.imag)
        else:
            sgn = np.sign(1 + r) * np.sign(m)
            # log|1 + r| = log1p(r) for r >= -1, log1p(-r - 2) below
            res = np.log1p(np.where(r < -1, -r - 2, r)) + np.log(np.abs(m)) + a_max
        res, sgn = res[..., 0], sgn[..., 0]
        bad = ~np.isfinite(res.real if (cplx and return_sign) else res)
        if np.any(bad):
            # infinities and NaN: the direct formula, as np.exp and np.log give them
            terms = np.exp(a[bad]) if b is None else \
                np.where(live[bad], b[bad] * np.exp(a[bad]), 0)
            total = np.sum(terms, axis=-1)
            sgn[bad] = _phase(total) if cplx else np.sign(total)
            # (a negative real sum becomes NaN in the caller when the sign is not asked for)
            res[bad] = np.log(total) if cplx and not return_sign else np.log(np.abs(total))
    return res, sgn


def _phase(z: np.ndarray) -> np.ndarray:
    """z / |z| (0 where z == 0; NaN where z is not finite and has no direction)."""
    with np.errstate(all="ignore"):
        mag = np.abs(z)
        return np.where(mag == 0, 0, z / np.where(mag == 0, 1, mag))


def _log1p_complex(z: np.ndarray) -> np.ndarray:
    """log(1 + z) for complex z, accurate for small |z| (NumPy's complex log1p is
    log(1 + z), whose real part is 0 for |z| < 1e-17): log|1 + z| = log1p(2x + x^2 + y^2) / 2,
    arg(1 + z) = atan2(y, 1 + x)."""
    x, y = z.real, z.imag
    small = np.abs(z) < 0.5
    re = np.where(small, 0.5 * np.log1p(x * (2 + x) + y * y), np.log(np.abs(1 + z)))
    return re + 1j * np.arctan2(y, 1 + x)


def _wrap_phase(t: np.ndarray) -> np.ndarray:
    """An angle in (-pi, pi]; angles already inside keep every digit."""
    return np.where(np.abs(t) < np.pi, t, np.pi - np.mod(np.pi - t, 2 * np.pi))


def _softmax_complex(z: np.ndarray, axis: Any, log: bool):
    """softmax / log_softmax of complex values in complex128, as scipy: shifted by the
    largest element in NumPy's complex order (real part, then imaginary part)."""
    dt = _numeric_dtype(z.dtype, "x")
    scalar = z.ndim == 0
    z = np.atleast_1d(z).astype(np.complex128)
    axes = normalize_axes(axis, z.ndim)
    if z.size == 0:
        out = z
    else:
        with np.errstate(all="ignore"):
            shift = np.max(z, axis=axes, keepdims=True)
            if log:
                # log_softmax = (z - shift) - log(sum(exp(z - shift))); a non-finite shift
                # is replaced by 0 (a slice of infinities gives what np.exp and np.log give)
                shift = np.where(np.isfinite(shift), shift, 0)
                t = z - shift
                out = t - np.log(np.sum(np.exp(t), axis=axes, keepdims=True))
            else:
                e = np.exp(z - shift)
                out = e / np.sum(e, axis=axes, keepdims=True)
    out = out.astype(dt, copy=False)
    return out.reshape(())[()] if scalar else out


def _softmax(x: Any, axis: Any, log: bool, name: str):
    r = _core.softmax_small(2 if log else 1, x, axis)  # the common small call (None: below)
    if r is not None:
        return r
    z = _array(x, "x")
    if z.dtype.kind == "c":
        return _softmax_complex(z, axis, log)
    xi = float_input(z, "x")
    arr = xi.array
    out_dt = _result_dtype(xi.orig_dtype, arr.dtype)
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr)
    axes = normalize_axes(axis, arr.ndim)
    out = np.empty(arr.shape, dtype=arr.dtype)
    if out.size:
        if len(axes) == 1:
            _core.softmax(rows_last(arr, axes), rows_last(out, axes), log)
        else:  # reduced axes moved last: compute in that order, then move back
            rest = [i for i in range(arr.ndim) if i not in axes]
            perm = rest + list(axes)
            tmp = np.empty(arr.transpose(perm).shape, dtype=arr.dtype)
            _core.softmax(rows_last(arr, axes), rows_last(tmp, tuple(range(len(rest), arr.ndim))),
                          log)
            out = tmp.transpose(np.argsort(perm))
    out = out.astype(out_dt, copy=False)
    return out.reshape(())[()] if scalar else out


def softmax(x: Any, axis: Any = None) -> np.ndarray:
    """Softmax, ``exp(x) / sum(exp(x), axis)``, computed stably.

    Drop-in for :func:`scipy.special.softmax`: ``axis=None`` (default) takes the softmax
    over all elements; an int or tuple of ints over those axes. dtypes as :func:`logsumexp`.
    A slice containing NaN or ``+inf``, or only ``-inf``, gives NaN there (as scipy). An
    empty input gives an empty result. Complex input (complex64, complex128) gives complex
    results, computed in NumPy as scipy does: ``exp(x - x_max) / sum(exp(x - x_max))`` with
    ``x_max`` the largest element in NumPy's order (real part first).

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.softmax([2.0, 1.0, 0.1])
    array([0.65900114, 0.24243297, 0.09856589])
    """
    return _softmax(x, axis, False, "softmax")


def log_softmax(x: Any, axis: Any = None) -> np.ndarray:
    """Log of the softmax, ``x - logsumexp(x, axis)``, computed stably.

    Drop-in for :func:`scipy.special.log_softmax`; arguments and dtypes as :func:`softmax`.
    Computed as ``(x - max) - log(sum(exp(x - max)))`` so large inputs keep their digits;
    ``-inf`` entries give ``-inf``. For complex input the imaginary parts are those of
    ``x - max`` less the argument of the sum, not wrapped into ``(-pi, pi]`` (as scipy).

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.log_softmax([1000.0, 0.0])
    array([    0., -1000.])
    """
    return _softmax(x, axis, True, "log_softmax")
