"""Multi-label losses from PyTorch's catalogue (issue 16): the multilabel margin loss (a C++
kernel per row) and the multilabel soft margin loss (the fused elementwise kernel of
:mod:`fastloss.pairs`, with the 1/C of each row folded into the gradient's scale)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    check_grad_out_given,
    check_reduction,
    deliver_grads,
    float_input,
    grad_buffer,
    mean_scale,
    reduce_rows,
    row_losses,
)
from .pairs import _finish, run_pairwise

__all__ = ["multilabel_margin_loss", "multilabel_soft_margin_loss"]

_F64 = np.dtype(np.float64)


def multilabel_margin_loss(input: Any, target: Any, *, reduction: str = "mean",
                           return_grad: bool = False, grad_out: Any = None):
    """Multi-class multi-label hinge loss, as
    :func:`torch.nn.functional.multilabel_margin_loss`.

    Per sample with scores ``x`` (the last axis, ``C`` classes) and target classes ``J`` (the
    entries of the sample's target row before the first -1)::

        loss = sum_{j in J} sum_{i not in J} max(0, 1 - (x[j] - x[i])) / C

    Parameters
    ----------
    input : array_like
        Scores ``(N, C)``, ``(C,)`` (one sample) or generally ``(..., C)``, ``C >= 1``.
        float32/float64 keep their dtype; float16/bfloat16 are computed in float32 (float32
        losses, gradient in the input dtype); integers give float64.
    target : array_like of int
        ``input``'s shape: each row lists the sample's target classes, ended by -1 (or filling
        the row); what follows the first -1 is ignored. Every entry must be in ``[-1, C)``
        (as torch checks them all). A class listed twice counts twice (as torch).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over samples; ``"none"``: one loss per sample, shape ``input.shape[:-1]``.
    return_grad : bool
        Also return d(returned loss)/d(input).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (it may be
        ``input`` itself, for in-place use: the results are those of a call without
        ``grad_out``); needs ``return_grad=True``. Returned as the gradient. Nothing is
        written to it when the call raises (e.g. for a ``target`` entry out of range).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        ``input`` 0-d or with no classes, a ``target`` of another shape, an unknown
        ``reduction``; a ``grad_out`` of the wrong shape or read-only, or without
        ``return_grad``.
    TypeError
        A non-integer ``target``; a ``grad_out`` that is not an ndarray or of the wrong dtype.
    IndexError
        A ``target`` entry outside ``[-1, C)``.

    Notes
    -----
    Each pair with ``z = (1 - x[j]) + x[i] > 0`` (strictly, as torch's kernel; computed in the
    compute dtype) adds ``1 / C`` to the gradient at ``i`` and ``-1 / C`` at ``j``. A NaN
    ``z`` counts 0, as torch. Work is ``O(|J| C)`` per sample; per-sample sums in float64.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.array([[0.1, 0.2, 0.4, 0.8]])
    >>> y = np.array([[3, 0, -1, 1]])  # classes 3 and 0 (torch's example)
    >>> round(float(fl.multilabel_margin_loss(x, y)), 6)
    0.85
    >>> fl.multilabel_margin_loss(x, y, return_grad=True)[1]
    array([[-0.5,  0.5,  0.5, -0.5]])
    """
    # the common small call (2-d float32/float64 scores, int64 targets, a grad_out or not),
    # checked and computed in one call into the core (None: the general path below, which
    # raises every user-facing error)
    r = _core.multilabel_margin_small(input, target, reduction, return_grad, grad_out)
    if r is not None:
        return r
    return_grad = check_grad_out_given(grad_out, return_grad)
    x = float_input(input, "input")
    arr = x.array
    if arr.ndim == 0:
        raise ValueError("input must have at least one axis (the last holds the classes)")
    C = arr.shape[-1]
    if C == 0:
        raise ValueError("input has a class axis (the last) of size 0: there are no classes")
    reduction = check_reduction(reduction)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != arr.shape:
        raise ValueError(f"target has shape {t.shape} but must have the input's shape "
                         f"{arr.shape} (one row of class indices per sample, ended by -1)")
    rows = math.prod(arr.shape[:-1])
    if t.dtype == np.int64:  # (the first entry outside [-1, C) in one pass in the core)
        t2 = np.ascontiguousarray(t.reshape(rows, C))
        i = _core.check_class_targets(t2.reshape(-1), C, -1)[0]
    else:
        if t.size and t.dtype.kind == "u" and t.max() >= C:
            wrong = t >= C
        else:
            wrong = (t < -1) | (t >= C)
        i = int(np.flatnonzero(wrong.reshape(-1))[0]) if wrong.any() else -1
        if i < 0:
            t2 = np.ascontiguousarray(t.reshape(rows, C), dtype=np.int64)
    if i >= 0:
        raise IndexError(f"target.flat[{i}] = {t.reshape(-1)[i]} is out of range: entries "
                         f"must be class indices in [0, {C - 1}] or -1 (the end of a row)")
    x2 = arr.reshape(rows, C)
    per_row = row_losses(rows, reduction)
    buf = None if grad_out is None else grad_buffer(grad_out, arr.shape, x.orig_dtype)
    # the kernel writes straight into a caller's C-contiguous buffer that shares no memory
    # with the operands; others (the input itself, in place) get the gradient at the end
    direct = (buf is not None and buf.dtype == arr.dtype and buf.flags.c_contiguous
              and not np.may_share_memory(buf, arr) and not np.may_share_memory(buf, t2))
    grad = None
    if return_grad:
        grad = buf.reshape(rows, C) if direct else np.empty((rows, C), dtype=arr.dtype)
    _core.multilabel_margin(x2, t2, mean_scale(reduction, rows), per_row, grad)
    loss = reduce_rows(per_row, reduction, rows, arr.shape[:-1], x.loss_dtype)
    if not return_grad:
        return loss
    if direct:
        return loss, buf
    return loss, deliver_grads([grad.reshape(arr.shape).astype(x.orig_dtype, copy=False)],
                               [buf])[0]


def multilabel_soft_margin_loss(input: Any, target: Any, *, weight: Any = None,
                                reduction: str = "mean", return_grad: bool = False,
                                grad_out: Any = None):
    """Multi-label one-versus-all logistic loss, as
    :func:`torch.nn.functional.multilabel_soft_margin_loss`.

    Per sample with logits ``x`` (the last axis, ``C`` classes), targets ``y`` in [0, 1] and
    weights ``w``::

        loss = -sum_c w[c] * (y[c] log sigmoid(x[c]) + (1 - y[c]) log sigmoid(-x[c])) / C

    Parameters
    ----------
    input : array_like
        Logits ``(N, C)``, ``(C,)`` or generally ``(..., C)``. float32/float64 keep their
        dtype; float16/bfloat16 are computed in float32 (float32 losses, gradient in the
        input dtype); integers give float64.
    target : array_like
        Labels (0/1, or soft labels) broadcastable to ``input``'s shape.
    weight : array_like, optional
        Weights broadcastable to ``input``'s shape (e.g. one per class, ``(C,)``).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over samples; ``"none"``: one loss per sample, shape ``input.shape[:-1]``.
    return_grad : bool
        Also return d(returned loss)/d(input): ``w (sigmoid(x) - y) / C`` per element (over
        the number of samples for ``"mean"``).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (may be ``input``).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        ``input`` 0-d or with no classes, a ``target`` or ``weight`` that does not broadcast
        to ``input``'s shape, an unknown ``reduction``.

    Notes
    -----
    Each term is computed as ``binary_cross_entropy_with_logits``'s, ``[x >= 0 ? (1 - y) x :
    -y x] + log1p(exp(-|x|))``: finite for every finite logit. The same as
    ``binary_cross_entropy_with_logits(input, target, weight=weight)`` for ``"mean"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.array([[0.0, 2.0], [-1.0, 1.0]])
    >>> y = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> fl.multilabel_soft_margin_loss(x, y, reduction="none")
    array([0.4100376 , 0.31326169])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    x = float_input(input, "input")
    shape = x.array.shape
    if len(shape) == 0:
        raise ValueError("input must have at least one axis (the last holds the classes)")
    C = shape[-1]
    if C == 0:
        raise ValueError("input has a class axis (the last) of size 0: there are no classes")
    reduction = check_reduction(reduction)
    for value, name in ((target, "target"), (weight, "weight")):
        if value is None:
            continue
        s = np.shape(value)
        try:
            ok = np.broadcast_shapes(s, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} has shape {s}, which does not broadcast to the input's "
                             f"shape {shape}")
    rows = math.prod(shape[:-1])
    total, per, grads, _ = run_pairwise(
        "multilabel_soft_margin", [x], [(target, "target")], weight=weight,
        reduction=reduction, return_grad=return_grad, grad_out=grad_out, full_shape=shape,
        denom=rows, loss_scale=1.0 / C)
    if reduction == "none":
        loss = (per.sum(axis=-1, dtype=_F64) / C).astype(x.loss_dtype)
    else:
        loss = _finish(total, None, reduction, rows, x.loss_dtype, loss_scale=1.0 / C)
    return (loss, grads[0]) if return_grad else loss
