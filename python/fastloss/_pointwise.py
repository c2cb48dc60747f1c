"""The shared driver of the pointwise losses (regression and binary families): broadcasting,
dtypes, reductions and gradients around one call into ``_core.pointwise``."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    REDUCTIONS,
    check_grad_out_given,
    check_reduction,
    float_input,
    grad_buffer,
)

KINDS = {"mse": 0, "l1": 1, "huber": 2, "smooth_l1": 3, "bce_with_logits": 4, "bce": 5,
         "sigmoid_focal": 6, "hinge": 7, "kl_div": 8}


def real_array(value: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """A target / weight operand as an array of the compute dtype (ints and bools welcome)."""
    try:
        a = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name}: cannot be converted to a numeric array ({exc})") from None
    if a.dtype.kind == "c":
        raise TypeError(f"{name}: complex values ({a.dtype}) are not supported")
    if a.dtype.kind not in "biuf" and a.dtype.name != "bfloat16":
        raise TypeError(f"{name}: unsupported dtype {a.dtype}")
    return a.astype(dtype, copy=False)


def _flat(a: np.ndarray, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``a`` broadcast to ``shape`` as a contiguous 1-d array (a copy only when needed)."""
    return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=dtype).reshape(-1)


def _sum_to(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient over the axes along which an operand of ``shape`` was broadcast."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, dtype=np.float64 if g.dtype == np.float64 else np.float32
                 ).reshape(shape) if axes else g.reshape(shape)


_CHECKED = ("bce", "hinge", "kl_div")  # losses whose inputs the kernel validates (counts it returns)
# losses that warn, as PyTorch's regression losses, when target's shape differs from input's
# (PyTorch's kl_div does not; its binary_cross_entropy(_with_logits) raise, fastloss
# broadcasts and warns)
_SHAPE_WARNING = ("mse", "l1", "huber", "smooth_l1", "bce_with_logits", "bce", "sigmoid_focal",
                  "hinge")


def warn_if_broadcast(input_shape: tuple, target_shape: tuple, stacklevel: int = 3) -> None:
    """PyTorch's UserWarning (its wording, NumPy shapes) when target and input differ in shape,
    so that broadcasting is used: (4,) against (4, 1) silently gives (4, 4) losses."""
    if tuple(target_shape) != tuple(input_shape):
        warnings.warn(
            f"Using a target size ({tuple(target_shape)}) that is different to the input size "
            f"({tuple(input_shape)}). This will likely lead to incorrect results due to "
            "broadcasting. Please ensure they have the same size.",
            UserWarning, stacklevel=stacklevel + 1)


def _raise_if_invalid(kind: str, x: np.ndarray, n_neg: int, n_zero: int, n_bad: int,
                      y: np.ndarray = None) -> None:
    if kind == "kl_div" and n_bad:
        i = int(np.flatnonzero(y < 0)[0])
        raise ValueError(f"target holds probabilities, which must be >= 0 (or pass "
                         f"log_target=True, or negative_target='nan' for PyTorch's NaN "
                         f"losses); target.flat[{i}] = {y[i]!r} (broadcast)")
    if kind == "bce" and n_bad:
        with np.errstate(invalid="ignore"):
            i = int(np.flatnonzero((x < 0) | (x > 1))[0])
        raise ValueError(f"probs must be in [0, 1]; probs.flat[{i}] = {x[i]!r}")
    if kind == "hinge" and (n_bad or (n_neg and n_zero)):
        raise ValueError("target labels must all be in {-1, +1} or all in {0, 1}; got "
                         + ("labels outside {-1, 0, +1}" if n_bad else "both -1 and 0"))


def pointwise(kind: str, input: Any, target: Any, *, input_name: str = "input",
              weight: Any = None, pos_weight: Any = None, p0: float = 0.0, p1: float = 0.0,
              reduction: str = "mean", return_grad: bool = False, grad_out: Any = None):
    """Run one pointwise loss (``kind`` is a key of KINDS) with the public arguments."""
    if weight is None and pos_weight is None:
        # The common small call (ndarrays of one shape, float dtype and C order; a grad_out of
        # that shape and dtype): checked and computed in one call into the core; None: the
        # general path below, which also raises every user-facing error (the core writes into
        # grad_out only once every check has passed).
        r = _core.pointwise_fast(KINDS[kind], input, target, p0, p1, reduction, return_grad,
                                 grad_out)
        if r is not None:
            return r
    x = float_input(input, input_name)
    batchmean = kind == "kl_div" and reduction == "batchmean"
    reduction = "mean" if batchmean else check_reduction(
        reduction, REDUCTIONS + (("batchmean",) if kind == "kl_div" else ()))
    check_grad_out_given(grad_out, return_grad)
    ct = x.compute_dtype
    y = real_array(target, "target", ct)
    w = None if weight is None else real_array(weight, "weight", ct)
    pw = None if pos_weight is None else real_array(pos_weight, "pos_weight", ct)
    shapes = [("input" if input_name == "input" else input_name, x.array.shape),
              ("target", y.shape)]
    shapes += [(n, a.shape) for n, a in (("weight", w), ("pos_weight", pw)) if a is not None]
    try:
        full = np.broadcast_shapes(*(s for _, s in shapes))
    except ValueError:
        desc = ", ".join(f"{n} {s}" for n, s in shapes)
        raise ValueError(f"shapes do not broadcast together: {desc}") from None
    if kind in _SHAPE_WARNING:  # (shapes that do not broadcast are an error, not a warning)
        warn_if_broadcast(x.array.shape, y.shape, stacklevel=3)

    n = math.prod(full)
    xf = _flat(x.array, full, x.array.dtype)
    yf = _flat(y, full, ct)
    wf = None if w is None else _flat(w, full, ct)
    pwf = None if pw is None else _flat(pw, full, ct)
    loss_buf = np.empty(n, dtype=ct) if reduction == "none" else None

    grad_core = user = None
    direct = False  # the kernel writes straight into the caller's grad_out
    if return_grad:
        if grad_out is not None:
            user = grad_buffer(grad_out, x.array.shape, x.orig_dtype)
        direct = (user is not None and full == x.array.shape and user.flags.c_contiguous
                  and not any(a is not None and np.may_share_memory(user, a)
                              for a in (yf, wf, pwf))
                  and (not np.may_share_memory(user, xf)
                       or user.__array_interface__["data"][0]
                       == xf.__array_interface__["data"][0]))
        grad_core = user.reshape(-1) if direct else np.empty(n, dtype=x.array.dtype)

    denom = (full[0] if full else 1) if batchmean else n  # "batchmean": the batch size
    scale = (1.0 / denom if denom else 0.0) if reduction == "mean" else 1.0
    args = (KINDS[kind], xf, yf, wf, pwf, float(p0), float(p1), scale)
    if kind in _CHECKED and user is not None and np.may_share_memory(user, x.array):
        # The kernel validates these inputs in the same pass that writes the gradient. When
        # grad_out overlaps the input (in place), a loss-only pass (which writes nothing)
        # checks them first, so that an invalid call never destroys its input; a separate
        # grad_out may be partly written before a ValueError (see the docstrings).
        _raise_if_invalid(kind, xf, *_core.pointwise(*args, None, None)[1:], y=yf)
    total, *counts = _core.pointwise(*args, loss_buf, grad_core)
    if kind in _CHECKED:
        _raise_if_invalid(kind, xf, *counts, y=yf)

    if reduction == "none":
        loss = loss_buf.reshape(full).astype(x.loss_dtype, copy=False)
    elif reduction == "sum":
        loss = x.loss_dtype.type(total)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = x.loss_dtype.type(np.float64(total) / np.float64(denom))  # empty: NaN, as torch
    if not return_grad:
        return loss
    if direct:
        return loss, user
    g = grad_core.reshape(full)
    if full != x.array.shape:
        g = _sum_to(g, x.array.shape)
    g = g.astype(x.orig_dtype, copy=False)
    if user is not None:
        np.copyto(user, g)
        return loss, user
    return loss, g
