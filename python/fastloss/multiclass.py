"""Multi-class margin losses in optax's form: the Crammer-Singer hinge and the perceptron loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core, classification
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_real,
    check_reduction,
    float_input,
    normalize_axis,
    reduce_rows,
    reduce_total,
    row_losses,
)

__all__ = ["multiclass_hinge_loss", "multiclass_perceptron_loss"]


def index_targets(target: Any, shape: tuple, axis: int, name: str = "target") -> np.ndarray:
    """Integer class indices of ``shape`` without ``axis``, checked: a flat contiguous int64
    array (one entry per row, C order). TypeError for non-integers, ValueError for a wrong
    shape, IndexError for an index outside ``[0, C)``."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    expected = shape[:axis] + shape[axis + 1 :]
    n_classes = shape[axis]
    if t.shape != expected:
        raise ValueError(
            f"{name} has shape {t.shape} but class indices must have the predictions' shape "
            f"without the class axis (axis={axis}): {expected}"
        )
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        i = int(np.flatnonzero(t.ravel() > np.iinfo(np.int64).max)[0])
        raise IndexError(f"{name}.flat[{i}] is out of range for {n_classes} classes")
    flat = np.require(t, np.int64, ["C", "A"]).reshape(-1)
    # One parallel pass in the core (-1 counts there as an ignored entry: an earlier -1 is
    # then the first bad one) instead of NumPy's temporaries (10M targets: 1.4 ms, not 9.7).
    i, n_valid = _core.check_class_targets(flat, n_classes, -1)
    if i >= 0 or n_valid != flat.size:
        neg = np.flatnonzero(flat[: i if i >= 0 else flat.size] == -1)
        i = int(neg[0]) if neg.size else int(i)
        pos = tuple(int(k) for k in np.unravel_index(i, expected)) if expected else ()
        raise IndexError(
            f"{name}[{', '.join(map(str, pos))}] = {flat[i]} is out of range: class indices "
            f"must be in [0, {n_classes - 1}] (axis {axis} has {n_classes} classes)"
        )
    return flat


def _class_margin(scores, target, axis, margin, reduction, return_grad, grad_out, name):
    x = float_input(scores, "scores")
    arr = x.array
    if arr.ndim == 0:
        raise ValueError("scores must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, arr.ndim)
    if arr.shape[ax] == 0:
        raise ValueError(f"scores has a class axis (axis={ax}) of size 0: there are no classes")
    reduction = check_reduction(reduction)
    want_grad = check_grad_out_given(grad_out, return_grad)
    flat = index_targets(target, arr.shape, ax)
    x3 = as3d(arr, ax)
    rows = x3.shape[0] * x3.shape[2]
    scale = (1.0 / rows if rows else 0.0) if reduction == "mean" else 1.0
    grad = GradTarget(grad_out, x, ax, (x3,)) if want_grad else None
    out_shape = arr.shape[:ax] + arr.shape[ax + 1 :]
    if not want_grad and rows > classification._CHUNK_ROWS:  # (as cross_entropy's)
        def kernel(o0, o1, r0, r1, part):
            _core.class_margin(x3[o0:o1], flat[r0:r1], margin, scale, part, None)

        total, _ = classification._row_chunks(x3.shape[0], x3.shape[2], reduction,
                                              x.loss_dtype, kernel)
        if reduction == "none":
            return total.reshape(out_shape)
        return reduce_total(total, reduction, float(rows), x.loss_dtype)
    per_row = row_losses(rows, reduction)
    _core.class_margin(x3, flat, margin, scale, per_row, grad.core if grad else None)
    loss = reduce_rows(per_row, reduction, float(rows), out_shape, x.loss_dtype)
    return (loss, grad.result()) if want_grad else loss


def multiclass_hinge_loss(
    scores: Any,
    target: Any,
    *,
    axis: int = -1,
    margin: float = 1.0,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Multi-class hinge loss of Crammer and Singer (``optax.losses.multiclass_hinge_loss``).

    Per row (every position but ``axis``) with scores ``s`` and target class ``y``::

        loss = max(0, margin + max_{j != y} s_j - s_y)

    Also known as the multi-class SVM loss (Keras ``CategoricalHinge`` is the same loss on
    one-hot targets). PyTorch's :func:`fastloss.multi_margin_loss` is the Weston-Watkins
    variant, which sums over ``j`` instead of taking the maximum.

    Parameters
    ----------
    scores : array_like
        Class scores, the class axis at ``axis``. float32/float64 keep their dtype;
        float16/bfloat16 are computed in float32 (float32 losses, gradient in the input dtype);
        integers give float64.
    target : array_like of int
        Class indices of ``scores``' shape without ``axis`` (any integer dtype).
    axis : int
        The class axis.
    margin : float
        The margin (any finite real; optax's loss is ``margin=1``).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over rows, ``"sum"``, or ``"none"`` (per-row losses of the target's shape;
        optax returns these).
    return_grad : bool
        Also return d(returned loss)/d(scores).
    grad_out : ndarray, optional
        Where to write the gradient (``scores``' shape and dtype; may be ``scores`` itself).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        A 0-d or class-less ``scores``, a ``target`` of the wrong shape, a non-finite
        ``margin``, an unknown ``reduction``, ``grad_out`` without ``return_grad``.
    TypeError
        A non-integer ``target``, an unsupported dtype.
    IndexError
        A class index outside ``[0, C)``.

    Notes
    -----
    optax writes the loss as ``max_j (s_j + margin [j != y]) - s_y``, the same number; here the
    difference ``max_{j != y} s_j - s_y`` is formed first, in float64, so large scores lose no
    digits to ``s_j + 1`` (and ``margin`` is a parameter, optax's is 1). The gradient is that
    of ``jax.grad`` of optax's formula: with ``K`` the maximisers of
    ``(s_j - s_y) + margin`` (``j != y``) and ``0`` (``j = y``),
    ``d loss / d s_k = [k in K] / |K| - [k = y]`` -- ``+1`` at the strongest rival and ``-1`` at
    ``y`` when the margin is violated, 0 when it is met with room, and shared between the tied
    entries on a tie (so at ``z = 0`` exactly it is ``1/|K| - 1`` at ``y``, as JAX's). A NaN
    score gives NaN in its row.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> s = np.array([[2.0, 1.5, -1.0], [0.0, 1.0, 3.0]])
    >>> fl.multiclass_hinge_loss(s, [0, 1], reduction="none")  # max(0, 1 + 1.5 - 2), 1 + 3 - 1
    array([0.5, 3. ])
    >>> loss, grad = fl.multiclass_hinge_loss(s, [0, 1], return_grad=True)
    >>> grad
    array([[-0.5,  0.5,  0. ],
           [ 0. , -0.5,  0.5]])
    """
    m = check_real(margin, "margin")
    if not math.isfinite(m):
        raise ValueError(f"margin must be finite, got {margin!r}")
    return _class_margin(scores, target, axis, m, reduction, return_grad, grad_out,
                         "multiclass_hinge_loss")


def multiclass_perceptron_loss(
    scores: Any,
    target: Any,
    *,
    axis: int = -1,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Multi-class perceptron loss (``optax.losses.multiclass_perceptron_loss``, Collins 2002).

    Per row with scores ``s`` and target class ``y``::

        loss = max_j s_j - s_y  (= max(0, max_{j != y} s_j - s_y))

    :func:`multiclass_hinge_loss` with ``margin=0``; the arguments are the same, without
    ``margin``.

    Parameters
    ----------
    scores : array_like
        Class scores, the class axis at ``axis`` (dtypes as :func:`multiclass_hinge_loss`).
    target : array_like of int
        Class indices of ``scores``' shape without ``axis``.
    axis : int
        The class axis.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over rows, ``"sum"``, or ``"none"`` (per-row losses; optax returns these).
    return_grad : bool
        Also return d(returned loss)/d(scores).
    grad_out : ndarray, optional
        Where to write the gradient (``scores``' shape and dtype; may be ``scores`` itself).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError, TypeError, IndexError
        As :func:`multiclass_hinge_loss`.

    Notes
    -----
    The gradient is ``jax.grad``'s of optax's formula: ``+1`` at the highest-scoring class and
    ``-1`` at ``y`` when they differ; on ties the ``+1`` is shared among the tied classes, so
    all-equal scores (a perceptron at initialisation) give ``1/C - 1`` at ``y`` and ``1/C``
    elsewhere, as JAX does.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> s = np.array([[2.0, 1.5, -1.0], [0.0, 1.0, 3.0]])
    >>> fl.multiclass_perceptron_loss(s, [0, 1], reduction="none")
    array([0., 2.])
    """
    return _class_margin(scores, target, axis, 0.0, reduction, return_grad, grad_out,
                         "multiclass_perceptron_loss")
