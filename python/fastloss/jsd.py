"""The generalized Jensen-Shannon divergence of logits (Liger-Kernel's), for distillation."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_real,
    check_reduction,
    check_temperature,
    float_input,
    grad_buffer,
    mean_scale,
    normalize_axis,
    reduce_rows,
    row_losses,
)
from .distributions import _kernel_dtype, _loss_dtype

__all__ = ["jensen_shannon_with_logits"]

_REDUCTIONS = ("batchmean", "mean", "sum", "none")


def jensen_shannon_with_logits(
    student: Any,
    teacher: Any,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    axis: int = -1,
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Generalized Jensen-Shannon divergence between the softmax distributions of two sets of
    logits, as Liger-Kernel's ``LigerJSD`` / ``LigerFusedLinearJSD`` (Agarwal et al.'s GKD).

    Per row (every position but ``axis``), with ``P = softmax(teacher / T)``,
    ``Q = softmax(student / T)`` and ``M = beta P + (1 - beta) Q``::

        beta = 0:  loss = KL(P || Q)                       (forward KL, as Liger)
        beta = 1:  loss = KL(Q || P)                       (reverse KL, as Liger)
        otherwise: loss = beta KL(P || M) + (1 - beta) KL(Q || M)

    ``beta = 0.5`` is the Jensen-Shannon divergence. The two ends are Liger's definitions,
    not the limits of the middle formula (which tends to 0 at both ends).

    Parameters
    ----------
    student : array_like
        The student's logits; the gradient is taken with respect to these. float32/float64
        keep their dtype; float16/bfloat16 are computed in float32 (float32 losses, gradient in
        the input dtype); integers give float64.
    teacher : array_like
        The teacher's logits, ``student``'s shape. If the dtypes differ both are read in the
        wider compute dtype.
    beta : float
        In ``[0, 1]``: the weight of the teacher in the mixture ``M``.
    temperature : float
        ``T > 0`` (finite): both logits are divided by it before the softmax. Unlike
        :func:`kl_div_with_logits`, the loss is not multiplied by ``T**2`` (as Liger).
    reduction : {"batchmean", "mean", "sum", "none"}
        ``"batchmean"`` (default; Liger's, the sum over rows divided by the number of rows),
        ``"mean"`` (divided by the number of elements, classes included), ``"sum"``, ``"none"``
        (per-row losses of the logits' shape without ``axis``).
    axis : int
        The class axis (an addition to the issue's signature, as :func:`kl_div_with_logits`).
    return_grad : bool
        Also return d(returned loss)/d(student).
    grad_out : ndarray, optional
        Where to write the gradient: ``student``'s shape and dtype, writable; it may be
        ``student`` itself.

    Returns
    -------
    loss : NumPy scalar (``"batchmean"``, ``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes differ, ``beta`` outside ``[0, 1]``, ``temperature`` not positive and finite, a
        0-d input or an empty class axis, an unknown ``reduction``, ``grad_out`` without
        ``return_grad``.
    TypeError
        Unsupported dtypes, a non-real ``beta``.

    Notes
    -----
    Per row, from ``a_j = (s_j - max s) / T``, ``b_j = (t_j - max t) / T`` and the sums
    ``S_s = sum_j exp(a_j)``, ``S_t``: ``delta_j = log Q_j - log P_j = (a_j - b_j) +
    (log S_t - log S_s)``, formed from the logits' differences (equal rows give exactly 0), and
    with ``A = log P - log M``, ``B = log Q - log M``::

        delta <= 0:  A = -log1p((1 - beta) expm1(delta)),  B = delta + A
        delta >  0:  B = -log1p(beta expm1(-delta)),        A = B - delta

    (``M`` is never formed, so it cannot underflow where ``P`` or ``Q`` is positive, and nearly
    equal ``P`` and ``Q`` lose nothing to cancellation). A term whose weight (``P_j`` or
    ``Q_j``) is 0 counts 0. Float32 accuracy: about 1e-7 relative for unrelated rows; for
    nearly equal rows (a divergence of 1e-5 over 50,257 classes) about 1e-10 absolute for
    ``0 < beta < 1`` and 1e-8 for the KL ends. The gradient, through the student's softmax, is::

        beta = 0: (Q - P) / T
        beta = 1: Q (log Q - log P - loss) / T
        else:     (w - Q sum_j w_j) / T,   w_j = (1 - beta) Q_j (log Q_j - log M_j)

    One call reads both rows from memory once (the maxima pass brings them into cache; the
    exps are kept for the term and gradient passes); sums are accumulated in float64. A row
    with NaN or ``+inf``, or whose student or teacher logits are all ``-inf``, gives NaN.
    Liger's ``shift_labels`` / ``ignore_index`` are not supported: select the rows first.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> s, t = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    >>> round(float(fl.jensen_shannon_with_logits(s, t)), 6)  # JSD of (0.5, 0.5), (0.9, 0.1)
    0.101749
    >>> round(float(fl.jensen_shannon_with_logits(s, t, beta=0.0)), 6)  # KL(P || Q)
    0.368064
    >>> loss, grad = fl.jensen_shannon_with_logits(s, t, return_grad=True)
    >>> np.round(grad, 6)
    array([[-0.105912,  0.105912]])
    """
    # the common small call (2-d float32/float64 logits of one dtype, the class axis last,
    # float beta and temperature), checked and computed in one call into the core (None: the
    # general path below, which raises every user-facing error)
    r = _core.distill_small(1, student, teacher, axis, temperature, beta, reduction,
                            return_grad, grad_out)
    if r is not None:
        return r
    s = float_input(student, "student")
    t = float_input(teacher, "teacher")
    shape = s.array.shape
    if s.array.ndim == 0:
        raise ValueError("student must have at least one dimension (the class axis)")
    if t.array.shape != shape:
        raise ValueError(
            f"teacher has shape {t.array.shape} but must have the student's shape {shape}"
        )
    ax = normalize_axis(axis, s.array.ndim)
    if shape[ax] == 0:
        raise ValueError(f"student has a class axis (axis={ax}) of size 0: there are no classes")
    b = check_real(beta, "beta", 0.0, 1.0)
    tau = check_temperature(temperature)
    reduction = check_reduction(reduction, _REDUCTIONS)
    want_grad = check_grad_out_given(grad_out, return_grad)

    kdt = _kernel_dtype(s, t)
    sa = s.array if s.array.dtype == kdt else s.array.astype(kdt)
    ta = t.array if t.array.dtype == kdt else t.array.astype(kdt)
    s3, t3 = as3d(sa, ax), as3d(ta, ax)
    rows, n_classes = s3.shape[0] * s3.shape[2], s3.shape[1]
    denom = {"batchmean": rows, "mean": rows * n_classes}.get(reduction, 1)
    mean_like = reduction in ("batchmean", "mean")
    scale = mean_scale(reduction, denom, ("batchmean", "mean"))

    grad: GradTarget | None = None
    temp = None
    core_grad = None
    if want_grad:
        if sa is s.array:
            grad = GradTarget(grad_out, s, ax, (s3, t3))
            core_grad = grad.core
        else:  # computed in a wider dtype, cast back to the student's afterwards
            if grad_out is not None:
                grad_buffer(grad_out, shape, s.orig_dtype)
            temp = np.empty(shape, dtype=kdt)
            core_grad = as3d(temp, ax)
    per_row = row_losses(rows, reduction)
    _core.jensen_shannon(s3, t3, b, tau, scale, per_row, core_grad)
    out_shape = shape[:ax] + shape[ax + 1 :]
    loss = reduce_rows(
        per_row, "mean" if mean_like else reduction, float(denom), out_shape, _loss_dtype(kdt)
    )
    if not want_grad:
        return loss
    if grad is not None:
        return loss, grad.result()
    if grad_out is None:
        return loss, temp.astype(s.orig_dtype)
    np.copyto(grad_out, temp, casting="unsafe")
    return loss, grad_out
