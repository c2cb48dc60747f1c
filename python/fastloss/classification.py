"""Classification losses over a class axis: softmax cross-entropy and negative log-likelihood."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_int,
    check_real,
    check_reduction,
    class_targets,
    class_weight,
    float_input,
    normalize_axis,
    reduce_rows,
)

__all__ = ["cross_entropy", "nll_loss"]


def _class_input(x: Any, name: str, axis: Any):
    xi = float_input(x, name)
    if xi.array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, xi.array.ndim)
    if xi.array.shape[ax] == 0:
        raise ValueError(f"{name} has a class axis (axis={ax}) of size 0: there are no classes")
    return xi, ax


def _check_return_grad(return_grad: Any, grad_out: Any) -> bool:
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is given but return_grad is False; pass return_grad=True")
    return bool(return_grad)


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Softmax cross-entropy between ``logits`` and ``target``, optionally with its gradient.

    Semantics of :func:`torch.nn.functional.cross_entropy`, with the class axis given by
    ``axis`` (default: the last axis, the layout of saved language-model logits; PyTorch's
    ``(N, C, d1, ...)`` layout is ``axis=1``).

    Parameters
    ----------
    logits : array_like
        Unnormalised scores. float32/float64 keep their dtype; float16/bfloat16 are computed
        in float32 (float32 losses, gradient in the input dtype); integers give float64.
    target : array_like
        Either integer class indices with the logits' shape without ``axis`` (any integer
        dtype), or floating class probabilities with the logits' shape.
    axis : int
        The class axis of ``logits``.
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    ignore_index : int
        Class-index targets equal to this contribute neither loss nor gradient and are left
        out of the mean. Not used with probability targets.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` is PyTorch's weighted mean ``sum_i l_i / sum_i w[t_i]`` over non-ignored
        rows (probability targets: divided by the number of rows); ``"none"`` returns one
        loss per row.
    label_smoothing : float in [0, 1]
        Mixes the target with the uniform distribution (PyTorch's definition).
    return_grad : bool
        Also return d(returned loss)/d(logits), computed in the same pass.
    grad_out : ndarray, optional
        Where to write the gradient: the logits' shape and dtype, writable. It may be
        ``logits`` itself (in place, no extra memory). Requires ``return_grad=True``. On an
        argument error nothing is written; it is written only once every check has passed.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Notes
    -----
    Per row, with ``m`` the row maximum and ``S = sum_j exp(x_j - m)``:
    ``-log p_t = (m - x_t) + log S``; when the target is the maximum, ``log S`` is computed as
    ``log1p(sum_{j != t} exp(x_j - m))`` so a confident row keeps its small loss (1e-9, not 0).
    Sums are accumulated in float64. No finite logits overflow; ``-inf`` logits (masked
    classes) get probability 0 and a row whose target logit is ``-inf`` has loss ``+inf``.
    A row with NaN or ``+inf`` gives NaN in that row only. All rows ignored with
    ``"mean"`` gives NaN (as PyTorch); an empty batch gives NaN for ``"mean"`` and 0 for
    ``"sum"``. Probability targets: a class with zero (smoothed, weighted) target mass
    contributes 0 even when its logit is ``-inf`` (``0 * log 0 = 0``; PyTorch gives NaN).
    Probability targets are not checked to be non-negative or to sum to one (as PyTorch).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> loss, grad = fl.cross_entropy(logits, [0, 1], return_grad=True)
    >>> round(float(loss), 6)
    0.31854
    """
    x, ax = _class_input(logits, "logits", axis)
    reduction = check_reduction(reduction)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    ignore_index = check_int(ignore_index, "ignore_index")
    want_grad = _check_return_grad(return_grad, grad_out)
    arr = x.array
    n_classes = arr.shape[ax]
    w = class_weight(weight, n_classes, x.compute_dtype)

    t = np.asarray(target)
    target_flat = probs3 = None
    if t.dtype.kind in "iu":
        ct = class_targets(t, arr.shape, ax, ignore_index)
        target_flat, out_shape = ct.flat, ct.shape
        if w is None:
            denom = float(np.count_nonzero(ct.valid))
        else:
            denom = float(np.sum(w[ct.flat[ct.valid]], dtype=np.float64))
    elif t.dtype.kind == "f" or t.dtype.name == "bfloat16":
        if t.shape != arr.shape:
            raise ValueError(
                f"target has a floating dtype ({t.dtype}), so it is read as class probabilities "
                f"and must have the logits' shape {arr.shape}, got {t.shape}; class indices "
                "must have an integer dtype"
            )
        probs3 = as3d(np.asarray(t, dtype=x.compute_dtype), ax)
        out_shape = arr.shape[:ax] + arr.shape[ax + 1 :]
        denom = float(math.prod(out_shape))
    elif t.dtype.kind == "b":
        raise TypeError("target is boolean; class indices must be integers (or float probabilities)")
    else:
        raise TypeError(f"target has unsupported dtype {t.dtype}; use integer class indices "
                        "or float class probabilities")

    x3 = as3d(arr, ax)
    grad = GradTarget(grad_out, x, ax, (x3,) if probs3 is None else (x3, probs3)) if want_grad else None
    scale = (1.0 / denom if denom != 0 else 0.0) if reduction == "mean" else 1.0
    per_row = np.empty(x3.shape[0] * x3.shape[2], dtype=np.float64)
    _core.cross_entropy(x3, target_flat, probs3, w, ignore_index, eps, scale, per_row,
                        grad.core if grad else None)
    loss = reduce_rows(per_row, reduction, denom, out_shape, x.loss_dtype)
    return (loss, grad.result()) if want_grad else loss


def nll_loss(
    log_probs: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Negative log-likelihood of class indices under ``log_probs``.

    Semantics of :func:`torch.nn.functional.nll_loss` with the class axis given by ``axis``:
    per row ``-weight[t] * log_probs[t]``; ``"mean"`` divides by ``sum_i weight[t_i]`` over
    non-ignored rows. ``log_probs`` are used as given (no normalisation), so
    ``nll_loss(log_softmax(x, axis=-1), t)`` equals ``cross_entropy(x, t)``.
    Arguments, dtypes, ``return_grad`` and ``grad_out`` as :func:`cross_entropy`; the
    gradient is ``-weight[t] / denominator`` at the target and 0 elsewhere.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> float(fl.nll_loss(np.log([[0.7, 0.2, 0.1]]), [0]))  # -log(0.7)
    0.35667494393873245
    """
    x, ax = _class_input(log_probs, "log_probs", axis)
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    want_grad = _check_return_grad(return_grad, grad_out)
    arr = x.array
    w = class_weight(weight, arr.shape[ax], x.compute_dtype)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    ct = class_targets(t, arr.shape, ax, ignore_index)
    denom = float(np.count_nonzero(ct.valid)) if w is None else float(
        np.sum(w[ct.flat[ct.valid]], dtype=np.float64))
    x3 = as3d(arr, ax)
    grad = GradTarget(grad_out, x, ax, (x3,)) if want_grad else None
    scale = (1.0 / denom if denom != 0 else 0.0) if reduction == "mean" else 1.0
    per_row = np.empty(x3.shape[0] * x3.shape[2], dtype=np.float64)
    _core.nll_loss(x3, ct.flat, w, ignore_index, scale, per_row, grad.core if grad else None)
    loss = reduce_rows(per_row, reduction, denom, ct.shape, x.loss_dtype)
    return (loss, grad.result()) if want_grad else loss
