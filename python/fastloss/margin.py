"""Margin losses over a class axis: the multi-class hinge loss of PyTorch (multi_margin_loss)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_real,
    check_reduction,
    class_weight,
    float_input,
    grad_buffer,
    reduce_rows,
    row_losses,
)

__all__ = ["multi_margin_loss"]


def _check_p(p: Any) -> int:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be 1 or 2, got {type(p).__name__}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (as PyTorch's multi_margin_loss), got {p!r}")
    return int(p)


def _sample_targets(target: Any, input_shape: tuple, n_classes: int):
    """Integer class indices, one per sample: (flat int64 array, shape of the per-sample
    losses). A 1-d input (one sample) takes a 0-d target or, as PyTorch, one of shape (1,)."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    expected = input_shape[:-1]
    if t.shape != expected and not (len(input_shape) == 1 and t.shape == (1,)):
        raise ValueError(
            f"target has shape {t.shape} but must have the input's shape without the class "
            f"axis (the last one): {expected}"
        )
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        bad = np.flatnonzero(t.ravel() > np.iinfo(np.int64).max)[0]
        raise IndexError(
            f"target.flat[{bad}] = {t.ravel()[bad]} is out of range for {n_classes} classes"
        )
    flat = np.require(t, np.int64, ["C", "A"]).reshape(-1)  # (unaligned: a copy)
    bad = (flat < 0) | (flat >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        pos = tuple(int(k) for k in np.unravel_index(i, t.shape)) if t.ndim else ()
        raise IndexError(
            f"target[{', '.join(map(str, pos))}] = {flat[i]} is out of range: class indices "
            f"must be in [0, {n_classes - 1}] (the last axis of the input has {n_classes} "
            "classes)"
        )
    return flat, t.shape


def multi_margin_loss(
    input: Any,
    target: Any,
    *,
    p: int = 1,
    margin: float = 1.0,
    weight: Any = None,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Multi-class hinge loss, as :func:`torch.nn.functional.multi_margin_loss`.

    Per sample with scores ``x`` (the last axis, ``C`` classes) and target class ``y``::

        loss = sum_{j != y} w[y] * max(0, margin - x[y] + x[j])**p / C

    Parameters
    ----------
    input : array_like
        Scores of shape ``(N, C)``, ``(C,)`` (one sample) or generally ``(..., C)``; the class
        axis is the last one. A 0-d input is one sample with one class, as in PyTorch (its
        loss and gradient are 0; the target must be 0). float32/float64 keep their dtype;
        float16/bfloat16 are computed in float32 (float32 losses, gradient in the input
        dtype); integers give float64.
    target : array_like of int
        Class indices of shape ``input.shape[:-1]`` (any integer dtype); for a 1-d input a 0-d
        target or, as PyTorch, one of shape ``(1,)``.
    p : {1, 2}
        1: the hinge; 2: the squared hinge.
    margin : float
        The margin (any finite real).
    weight : array_like, optional
        Per-class weights of shape ``(C,)``; ``w[y]`` multiplies the sample's loss.
    reduction : {"mean", "sum", "none"}
        ``"mean"``: the plain mean over samples (not divided by the weights, as PyTorch);
        ``"sum"``; ``"none"``: per-sample losses of the target's shape.
    return_grad : bool
        Also return d(returned loss)/d(input) (``"mean"``: scaled by ``1 / N``).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (it may be
        ``input`` itself, for in-place use: the results are those of a call without
        ``grad_out``); needs ``return_grad=True``. Returned as the gradient. Nothing is
        written to it when the call raises (e.g. for a class index out of range).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        ``p`` not 1 or 2, a ``target`` or ``weight`` of the wrong shape, no classes, a
        non-finite ``margin``, an unknown ``reduction``; a ``grad_out`` of the wrong shape or
        read-only, or without ``return_grad``.
    TypeError
        A non-integer ``target``, unsupported dtypes; a ``grad_out`` that is not an ndarray
        or of the wrong dtype.
    IndexError
        A ``target`` class index outside ``[0, C)``.

    Notes
    -----
    With ``z_j = (margin - x[y]) + x[j]`` (PyTorch's order of operations, in the compute dtype)
    the gradient is ``w[y] / C`` (p = 1) or ``2 w[y] z_j / C`` (p = 2) where ``z_j > 0``
    strictly (0 at the kink, as PyTorch), and ``-sum`` of those at ``y``. As in PyTorch, a NaN
    ``z_j`` counts 0 (a NaN target score gives loss 0). Sums are accumulated in float64. No
    samples give NaN for ``"mean"`` and 0 for ``"sum"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.array([[0.1, 0.2, 0.4, 0.8]])
    >>> round(float(fl.multi_margin_loss(x, [3])), 6)  # (0.3 + 0.4 + 0.6) / 4
    0.325
    >>> loss, grad = fl.multi_margin_loss(x, [3], p=2, return_grad=True)
    >>> round(float(loss), 6)
    0.1525
    >>> grad
    array([[ 0.15,  0.2 ,  0.3 , -0.65]])
    """
    if (type(p) is int and p == 1 and type(margin) is float and margin == 1.0
            and weight is None):
        # the common small call (2-d scores, int64 targets), as cross_entropy's
        r = _core.class_rows_small(3, input, target, None, reduction, return_grad, 0.0, grad_out)
        if r is not None:
            return r
    return_grad = check_grad_out_given(grad_out, return_grad)
    x = float_input(input, "input")
    scalar = x.array.ndim == 0
    if grad_out is not None:
        grad_out = grad_buffer(grad_out, x.array.shape, x.orig_dtype)
    user = grad_out
    if scalar:  # one sample with one class, as PyTorch: loss 0, gradient 0
        x = x._replace(array=x.array.reshape(1))
        grad_out = None if grad_out is None else grad_out.reshape(1)  # (a view)
    arr = x.array
    n_classes = arr.shape[-1]
    if n_classes == 0:
        raise ValueError("input has a class axis (the last) of size 0: there are no classes")
    p = _check_p(p)
    margin = check_real(margin, "margin")
    if not math.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin!r}")
    reduction = check_reduction(reduction)
    w = class_weight(weight, n_classes, x.compute_dtype)
    flat, out_shape = _sample_targets(target, arr.shape, n_classes)
    last = arr.ndim - 1
    x3 = as3d(arr, last)
    rows = x3.shape[0]
    scale = (1.0 / rows if rows else 0.0) if reduction == "mean" else 1.0
    # (the core writes straight into grad_out where its layout allows, in place too; all the
    # checks are made before)
    grad = GradTarget(grad_out, x, last, (x3,)) if return_grad else None
    per_row = row_losses(rows, reduction)
    _core.multi_margin_loss(x3, flat, w, p, margin, scale, per_row, grad.core if grad else None)
    loss = reduce_rows(per_row, reduction, float(rows), out_shape, x.loss_dtype)
    if not return_grad:
        return loss
    g = grad.result()
    if user is not None:
        return loss, user
    return loss, (g.reshape(()) if scalar else g)
