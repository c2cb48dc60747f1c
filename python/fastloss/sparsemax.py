"""Sparsemax (the Euclidean projection onto the simplex) and the sparsemax loss."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_reduction,
    float_input,
    normalize_axis,
    reduce_rows,
    row_losses,
)
from .multiclass import index_targets

__all__ = ["sparsemax", "sparsemax_loss"]


def _rows_input(x: Any, axis: Any, name: str):
    f = float_input(x, name)
    if f.array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, f.array.ndim)
    if f.array.shape[ax] == 0:
        raise ValueError(f"{name} has a class axis (axis={ax}) of size 0: there are no classes")
    return f, ax


def sparsemax(x: Any, axis: int = -1) -> np.ndarray:
    """Sparsemax (Martins & Astudillo, 2016): the Euclidean projection of each row onto the
    probability simplex, a softmax whose outputs can be exactly 0.

    Per row (the entries along ``axis``)::

        sparsemax(x)_j = max(0, x_j - tau),   tau such that sum_j sparsemax(x)_j = 1

    The same as ``optax.projections.projection_simplex`` (and ``jax.nn``'s sparse
    activations in one dimension).

    Parameters
    ----------
    x : array_like
        Input; float16/bfloat16/float32/float64 keep their dtype (16-bit inputs are computed in
        float32); integers give float64.
    axis : int
        The axis to project along.

    Returns
    -------
    ndarray
        Of ``x``'s shape: non-negative, each row sums to 1.

    Raises
    ------
    ValueError
        A 0-d ``x``, or an empty ``axis``.
    TypeError
        An unsupported dtype.

    Notes
    -----
    ``tau`` is found without sorting, by Michelot's iteration on the candidates
    ``x_j > max(x) - 1``: from ``tau = max(x) - 1`` (below the root),
    ``tau <- (sum_{x_j > tau} x_j - 1) / #{x_j > tau}`` rises monotonically and stops, exactly,
    when the support no longer changes (Newton's method on the piecewise-linear
    ``sum_j max(0, x_j - tau) - 1``; a few steps in practice). The arithmetic is in float64
    relative to the row maximum, so logits of any magnitude work. ``-inf`` entries get 0; a row
    with NaN or ``+inf``, or whose entries are all ``-inf``, gives NaN.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> fl.sparsemax(np.array([1.0, 0.8, -1.0]))  # tau = 0.4
    array([0.6, 0.4, 0. ])
    >>> fl.sparsemax(np.array([[3.0, 0.0], [0.1, 0.2]]), axis=-1)
    array([[1.  , 0.  ],
           [0.45, 0.55]])
    """
    f, ax = _rows_input(x, axis, "x")
    out = np.empty(f.array.shape, dtype=f.array.dtype)
    _core.sparsemax(as3d(f.array, ax), as3d(out, ax))
    return out if f.orig_dtype == out.dtype else out.astype(f.orig_dtype)


def sparsemax_loss(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Multi-class sparsemax loss (Martins & Astudillo, 2016): the Fenchel-Young loss whose
    prediction map is :func:`sparsemax`, as ``optax.losses.multiclass_sparsemax_loss``.

    Per row with logits ``z``, ``p = sparsemax(z)`` (support ``S``, threshold ``tau``) and
    target distribution ``q`` (one-hot ``e_y`` for a class index ``y``)::

        loss = -q . z + 0.5 sum_{j in S} (z_j**2 - tau**2) + 0.5 |q|**2
             = (p - q) . z + 0.5 (|q|**2 - |p|**2)
        d loss / d z = p - q

    It is 0 exactly when ``sparsemax(z) == q``, and convex in ``z``.

    Parameters
    ----------
    logits : array_like
        The scores, the class axis at ``axis``. float32/float64 keep their dtype;
        float16/bfloat16 are computed in float32 (float32 losses, gradient in the input dtype);
        integers give float64.
    target : array_like
        Either integer class indices of ``logits``' shape without ``axis`` (as optax's
        ``multiclass_sparsemax_loss`` takes them), or a target distribution of ``logits``' shape
        (one-hot, or soft labels; each row should sum to 1; integer or bool one-hot arrays are
        read as probabilities).
    axis : int
        The class axis.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over rows, ``"sum"``, or ``"none"`` (per-row losses; optax returns these).
    return_grad : bool
        Also return d(returned loss)/d(logits) = ``p - q`` (``"mean"``: divided by the rows).
    grad_out : ndarray, optional
        Where to write the gradient (``logits``' shape and dtype; may be ``logits`` itself).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        A 0-d or class-less ``logits``, a ``target`` of neither shape, an unknown
        ``reduction``, ``grad_out`` without ``return_grad``.
    TypeError
        Float class indices (a target of the index shape must be integers), unsupported dtypes.
    IndexError
        A class index outside ``[0, C)``.

    Notes
    -----
    Names: optax 0.2.8 has ``multiclass_sparsemax_loss(scores, labels)`` with integer
    labels, which this is; its ``optax.losses.sparsemax_loss(logits, labels)`` is the *binary*
    sparsemax loss (labels 0/1 elementwise, ``jax.nn.sparse_plus(-z)`` for label 1), which
    equals this loss on the two-class logits ``[0, z]``.

    Computed relative to the row maximum ``M`` (``d = z - M``):
    ``loss = sum_{p_j > 0} p_j d_j - sum_{q_j != 0} q_j d_j + 0.5 (|q|**2 - |p|**2)``, in float64,
    which equals the formula above when each target row sums to 1 (the shift cancels then) and
    keeps huge logits exact. A target of 0 counts 0 even where ``z_j = -inf``; a ``-inf`` logit
    where the target is positive gives ``+inf``. ``tau`` as in :func:`sparsemax`. A row with
    NaN or ``+inf`` logits (or a NaN target) gives NaN.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> z = np.array([[1.0, 0.8, -1.0], [3.0, 0.0, 0.0]])
    >>> loss, grad = fl.sparsemax_loss(z, [1, 0], reduction="none", return_grad=True)
    >>> loss  # 0.6*0.2 + 0.5*(1 - 0.52), and a confident right answer
    array([0.36, 0.  ])
    >>> grad
    array([[ 0.6, -0.6,  0. ],
           [ 0. ,  0. ,  0. ]])
    >>> float(fl.sparsemax_loss(z, np.eye(3)[[1, 0]]))  # one-hot targets: the same
    0.18
    """
    x, ax = _rows_input(logits, axis, "logits")
    arr = x.array
    reduction = check_reduction(reduction)
    want_grad = check_grad_out_given(grad_out, return_grad)
    t = np.asarray(target)
    index_shape = arr.shape[:ax] + arr.shape[ax + 1 :]
    if t.shape == arr.shape:
        if t.dtype.kind not in "biuf" and t.dtype.name != "bfloat16":
            raise TypeError(f"target: unsupported dtype {t.dtype}")
        flat, probs = None, as3d(np.require(t, x.compute_dtype, ["A"]), ax)
    elif t.shape == index_shape:
        flat, probs = index_targets(t, arr.shape, ax), None
    else:
        raise ValueError(
            f"target has shape {t.shape}: give class indices of shape {index_shape} (logits' "
            f"shape without axis {ax}) or a distribution of the logits' shape {arr.shape}"
        )
    x3 = as3d(arr, ax)
    rows = x3.shape[0] * x3.shape[2]
    scale = (1.0 / rows if rows else 0.0) if reduction == "mean" else 1.0
    grad = GradTarget(grad_out, x, ax, (x3,) + ((probs,) if probs is not None else ())) \
        if want_grad else None
    per_row = row_losses(rows, reduction)
    _core.sparsemax_loss(x3, flat, probs, scale, per_row, grad.core if grad else None)
    loss = reduce_rows(per_row, reduction, float(rows), index_shape, x.loss_dtype)
    return (loss, grad.result()) if want_grad else loss
