"""Listwise ranking losses: optax's ranking softmax loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_reduction,
    float_input,
    reduce_rows,
    row_losses,
)

__all__ = ["ranking_softmax_loss"]


def _broadcast_to_scores(a: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {a.shape}, which does not broadcast to the scores' shape {shape}"
        ) from None


def ranking_softmax_loss(
    scores: Any,
    labels: Any,
    *,
    where: Any = None,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Listwise softmax loss for ranking (``optax.losses.ranking_softmax_loss``, ListNet-style
    softmax cross-entropy with graded relevance labels).

    Per list (the last axis), over the items in ``where``::

        loss = -sum_i y_i log softmax(s)_i = -sum_i y_i (s_i - logsumexp_j s_j)

    The labels are not normalised (a label of 2 counts twice), as in optax.

    Parameters
    ----------
    scores : array_like
        Item scores ``(..., list_size)``. float32/float64 keep their dtype; float16/bfloat16
        are computed in float32 (float32 losses, gradient in the input dtype); integers give
        float64.
    labels : array_like
        Relevance labels (any real numbers, read in the compute dtype), broadcastable to
        ``scores``' shape.
    where : array_like of bool, optional
        Which items take part (broadcastable to ``scores``' shape); items outside it are left
        out of the softmax and the sum, as if the list did not contain them.
    reduction : {"mean", "sum", "none"}
        ``"mean"``: the mean over the lists with at least one item in ``where`` (0 when there
        is none), as optax's ``reduce_fn=jnp.mean``; ``"sum"``; ``"none"``: per-list losses of
        shape ``scores.shape[:-1]`` (0 for lists without items), as ``reduce_fn=None``.
    return_grad : bool
        Also return d(returned loss)/d(scores): ``sum(y) softmax(s) - y`` per list over its
        items, 0 outside ``where``.
    grad_out : ndarray, optional
        Where to write the gradient (``scores``' shape and dtype; may be ``scores`` itself).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        A 0-d ``scores``, ``labels`` or ``where`` that do not broadcast, an unknown
        ``reduction``, ``grad_out`` without ``return_grad``.
    TypeError
        Unsupported dtypes (``where`` must be boolean or integer).

    Notes
    -----
    Per list, with ``M`` the largest score in ``where``, ``S = sum exp(s_i - M)`` and
    ``Y = sum y_i`` over the items: ``loss = Y log S - sum_{y_i != 0} y_i (s_i - M)``, in
    float64 (so scores like 3.4e37 next to -2.1e26, optax's own extreme test, are exact). A
    list whose labels are all 0 has loss 0 and gradient 0; a list with no item in ``where``
    has loss 0 and gradient 0 and does not count in the mean. Differences from optax: a label
    0 counts 0 even where its score is ``-inf`` (optax gives NaN there, ``0 * -inf``); optax's
    ``weights=`` (per-item label weights) is not taken: pass ``labels * weights``. A list with a
    NaN or ``+inf`` score or a NaN label in ``where``, or whose scores there are all ``-inf``,
    gives NaN.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> s = np.array([0.0, 3.0, 1.0, 2.0])
    >>> y = np.array([0.0, 0.0, 1.0, 1.0])
    >>> round(float(fl.ranking_softmax_loss(s, y)), 6)  # -(log p_2 + log p_3)
    3.880379
    >>> w = np.array([True, True, True, False])  # the last item left out
    >>> round(float(fl.ranking_softmax_loss(s, y, where=w)), 6)  # -log(e / (1 + e^3 + e))
    2.169846
    """
    x = float_input(scores, "scores")
    arr = x.array
    if arr.ndim == 0:
        raise ValueError("scores must have at least one dimension (the list axis, the last)")
    reduction = check_reduction(reduction)
    want_grad = check_grad_out_given(grad_out, return_grad)
    lab = float_input(labels, "labels").array
    lab = _broadcast_to_scores(lab, arr.shape, "labels")
    if lab.dtype != x.compute_dtype:
        lab = lab.astype(x.compute_dtype)
    w3 = None
    out_shape = arr.shape[:-1]
    if where is not None:
        wa = np.asarray(where)
        if wa.dtype.kind not in "biu":
            raise TypeError(f"where must be boolean (or integer), got dtype {wa.dtype}")
        wb = _broadcast_to_scores(wa != 0, arr.shape, "where")
        w3 = as3d(wb.view(np.uint8), arr.ndim - 1)
        live = wb.any(axis=-1) if arr.shape[-1] else np.zeros(out_shape, bool)
        n_live = int(np.count_nonzero(live))
    else:
        n_live = int(np.prod(out_shape)) if arr.shape[-1] else 0
    last = arr.ndim - 1
    x3 = as3d(arr, last)
    y3 = as3d(lab, last)
    rows = x3.shape[0]
    scale = (1.0 / n_live if n_live else 0.0) if reduction == "mean" else 1.0
    inputs = (x3, y3) + ((w3,) if w3 is not None else ())
    grad = GradTarget(grad_out, x, last, inputs) if want_grad else None
    per_row = row_losses(rows, reduction)
    _core.ranking_softmax(x3, y3, w3, scale, per_row, grad.core if grad else None)
    if reduction == "mean":
        # optax: the mean over lists with an item; 0 when there is none (unless a NaN)
        total = float(np.sum(per_row))
        loss = x.loss_dtype.type(total / n_live if n_live else (total if math.isnan(total) else 0.0))
    else:
        loss = reduce_rows(per_row, reduction, 1.0, out_shape, x.loss_dtype)
    return (loss, grad.result()) if want_grad else loss
