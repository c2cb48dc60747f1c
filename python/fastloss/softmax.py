"""The softmax family: drop-in replacements for ``scipy.special.logsumexp``, ``softmax`` and
``log_softmax`` on real inputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._validation import float_input, normalize_axes, rows_last

__all__ = ["logsumexp", "softmax", "log_softmax"]


def _result_dtype(orig: np.dtype, work: np.dtype) -> np.dtype:
    # As scipy: the input's float dtype is kept (float16 and bfloat16 too); ints give float64.
    return orig if orig.kind == "f" or orig.name == "bfloat16" else work


def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False,
              return_sign: bool = False):
    """Log of the sum of exponentials, ``log(sum(b * exp(a), axis))``, computed stably.

    Drop-in for :func:`scipy.special.logsumexp` on real inputs.

    Parameters
    ----------
    a : array_like
        Input values. float16/bfloat16/float32/float64 keep their dtype (16-bit inputs are
        computed in float32); integers and bools give float64; complex is a TypeError.
    axis : None, int or tuple of ints
        Axes to reduce over; None (default) reduces over all of them.
    b : array_like, optional
        Scale factors for ``exp(a)``, broadcast against ``a``; may be negative or zero
        (a zero removes the term, as a mask would).
    keepdims : bool
        Keep reduced axes with size one.
    return_sign : bool
        Also return the sign of the sum (+1, -1, or 0 for an empty sum). Without it a
        negative sum gives NaN.

    Returns
    -------
    res : ndarray or NumPy scalar
    sgn : ndarray or NumPy scalar, only with ``return_sign``

    Notes
    -----
    The row maximum is subtracted before exponentiating, so no finite input overflows.
    A ``+inf`` entry gives ``+inf``, a row of ``-inf`` (or an empty reduction) gives ``-inf``,
    NaN gives NaN. Without ``b`` the reduction runs in the C++ core (float64 accumulation);
    with ``b`` it runs in NumPy.

    Examples
    --------
    >>> import fastloss as fl
    >>> round(float(fl.logsumexp([1.0, 2.0, 3.0])), 12)
    3.407605964444
    >>> fl.logsumexp([[0.0, 0.0], [1e30, 1e30]], axis=1)
    array([6.93147181e-01, 1.00000000e+30])
    """
    x = float_input(a, "a")
    arr = np.atleast_1d(x.array)
    axes = normalize_axes(axis, arr.ndim)
    out_dt = _result_dtype(x.orig_dtype, arr.dtype)
    if b is not None:  # NumPy path, in the compute dtype; the result dtype promotes with b's
        bi = float_input(b, "b")
        out_dt = np.result_type(out_dt, _result_dtype(bi.orig_dtype, bi.array.dtype))
        res, sgn = _logsumexp_weighted(arr.astype(x.compute_dtype, copy=False),
                                       bi.array.astype(bi.compute_dtype, copy=False), axes,
                                       return_sign)
    else:
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
        with np.errstate(invalid="ignore"):
            sgn = np.where(np.isnan(res), np.nan, np.where(res == -np.inf, 0.0, 1.0))
        sgn = sgn.astype(arr.dtype)
    if keepdims:
        res = np.expand_dims(res, axes)
        sgn = np.expand_dims(sgn, axes)
    res = res.astype(out_dt, copy=False)[()]
    sgn = sgn.astype(out_dt, copy=False)[()]
    return (res, sgn) if return_sign else res


def _logsumexp_weighted(a: np.ndarray, b: np.ndarray, axes, return_sign: bool):
    """log|sum(b * exp(a))| and its sign; terms with b == 0 are left out of the maximum."""
    a, b = np.broadcast_arrays(a, b)
    dt = np.result_type(a.dtype, b.dtype)
    a, b = a.astype(dt), b.astype(dt)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if a.size == 0:
            kept = tuple(n for i, n in enumerate(a.shape) if i not in axes)
            return np.full(kept, -np.inf, dt), np.zeros(kept, dt)
        masked = np.where(b != 0, a, -np.inf)
        m = np.max(masked, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        # b == 0 removes a term even where exp(a - m) is inf (0 * inf would be NaN)
        s = np.sum(np.where(b != 0, b * np.exp(a - m), 0), axis=axes, keepdims=True)
        sgn = np.sign(s)
        if return_sign:
            s = np.abs(s)
        res = np.log(s) + m
    return np.squeeze(res, axes), np.squeeze(sgn, axes)


def _softmax(x: Any, axis: Any, log: bool, name: str):
    xi = float_input(x, "x")
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

    Drop-in for :func:`scipy.special.softmax` on real inputs: ``axis=None`` (default) takes
    the softmax over all elements; an int or tuple of ints over those axes. dtypes as
    :func:`logsumexp`. A slice containing NaN or ``+inf``, or only ``-inf``, gives NaN there
    (as scipy). An empty input gives an empty result.

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.softmax([2.0, 1.0, 0.1])
    array([0.65900114, 0.24243297, 0.09856589])
    """
    return _softmax(x, axis, False, "softmax")


def log_softmax(x: Any, axis: Any = None) -> np.ndarray:
    """Log of the softmax, ``x - logsumexp(x, axis)``, computed stably.

    Drop-in for :func:`scipy.special.log_softmax` on real inputs; arguments and dtypes as
    :func:`softmax`. Computed as ``(x - max) - log(sum(exp(x - max)))`` so large inputs keep
    their digits; ``-inf`` entries give ``-inf``.

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.log_softmax([1000.0, 0.0])
    array([    0., -1000.])
    """
    return _softmax(x, axis, True, "log_softmax")
