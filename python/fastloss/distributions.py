"""Distribution losses: the distillation KL divergence of logits and the Gaussian (VAE) KL term."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _core
from ._validation import (
    FloatInput,
    GradTarget,
    as3d,
    check_grad_out_given,
    check_reduction,
    check_temperature,
    deliver_grads,
    float_input,
    grad_buffer,
    grad_buffers,
    mean_scale,
    normalize_axis,
    reduce_rows,
    row_losses,
)

__all__ = ["gaussian_kl", "kl_div_with_logits"]

_KL_REDUCTIONS = ("batchmean", "mean", "sum", "none")


def _kernel_dtype(a: FloatInput, b: FloatInput) -> np.dtype:
    """The one storage dtype the core reads both operands in: theirs when they agree, else
    the wider of their compute dtypes (float16 with bfloat16: float32)."""
    if a.array.dtype == b.array.dtype:
        return a.array.dtype
    return np.promote_types(a.compute_dtype, b.compute_dtype)


def _loss_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype.itemsize == 2 else np.dtype(dtype)


def kl_div_with_logits(
    student_logits: Any,
    teacher_logits: Any,
    *,
    axis: int = -1,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Knowledge-distillation loss: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    Per row (a row is every position but ``axis``), with ``q = softmax(teacher_logits / T)``
    and ``p = softmax(student_logits / T)`` over the class axis::

        loss_row = T**2 * sum_j q_j * (log q_j - log p_j)

    which is ``T**2 * torch.nn.functional.kl_div(log_softmax(student / T),
    log_softmax(teacher / T), log_target=True)`` for one row (Hinton et al.'s distillation
    term; the ``T**2`` keeps the gradient's scale independent of ``T``). Computed in one fused
    pass over both arrays; no ``(rows, classes)`` temporary is allocated.

    Parameters
    ----------
    student_logits : array_like
        The student's unnormalised scores; the gradient is taken with respect to these.
        float32/float64 keep their dtype; float16/bfloat16 are computed in float32 (float32
        losses, gradient in the input dtype); integers give float64.
    teacher_logits : array_like
        The teacher's unnormalised scores, the same shape as ``student_logits``. If the two
        dtypes differ, both are read in the wider compute dtype (a copy of the other one).
    axis : int
        The class axis.
    temperature : float
        ``T > 0`` (finite): both logits are divided by it before the softmax.
    reduction : {"batchmean", "mean", "sum", "none"}
        ``"batchmean"`` (default, the mathematically proper KL mean): sum over rows divided by
        the number of rows. ``"mean"``: divided by the total number of elements, classes
        included (PyTorch's ``kl_div`` ``"mean"``). ``"sum"``; ``"none"``: per-row losses of the
        logits' shape without ``axis``.
    return_grad : bool
        Also return d(returned loss)/d(student_logits): ``T * (p - q)`` per row times the
        reduction's scale (``1 / rows`` for ``"batchmean"``, ``1 / elements`` for ``"mean"``).
    grad_out : ndarray, optional
        Where to write the gradient: the student's shape and dtype, writable; it may be
        ``student_logits`` itself (in place). Requires ``return_grad=True``.

    Returns
    -------
    loss : NumPy scalar (``"batchmean"``, ``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes differ (``teacher_logits``), ``temperature`` not positive and finite, a 0-d
        input or an empty class axis, an unknown ``reduction``.

    Notes
    -----
    Per row, with maxima ``m_s``, ``m_t`` and ``S_s = sum_j exp((s_j - m_s) / T)`` (likewise
    ``S_t``)::

        loss_row / T**2 = D / (T S_t) + (m_s - m_t) / T + log(S_s / S_t),
        D = sum_j exp((t_j - m_t) / T) * (t_j - s_j)

    All five statistics are gathered in one pass over both rows from memory, block by block
    (each block summed against its own maxima, blocks merged by rescaling), with sums
    accumulated in float64. With a gradient, the exp values stay in cache and a second pass
    over them writes ``T * (p - q)``: no ``(rows, classes)`` temporary. Accuracy for float32
    (50,257-class rows): about 1e-7 relative for unrelated rows; as the rows approach each
    other the loss becomes a small difference of O(1) terms and the absolute error stays about
    1e-8 (1e-5 relative at a KL of 5e-3 per row); use float64 for more. A class whose teacher
    probability is 0 (``-inf`` teacher logit, or a probability that underflows) contributes 0,
    whatever the student logit; a ``-inf`` student logit where ``q_j > 0`` gives ``+inf``. A
    row with NaN or ``+inf``, or whose student or teacher logits are all ``-inf``, gives NaN
    in that row only. The loss is not clamped at 0: identical rows give exactly 0, nearly
    identical ones may give a rounding-sized negative value.
    An empty batch gives NaN for ``"batchmean"`` and ``"mean"``, 0 for ``"sum"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> teacher = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> student = np.array([[1.5, 1.2, 0.3], [0.1, 2.0, 0.9]])
    >>> loss, grad = fl.kl_div_with_logits(student, teacher, temperature=2.0, return_grad=True)
    >>> round(float(loss), 6)
    0.081071
    >>> np.round(grad, 4)
    array([[-0.0867,  0.0529,  0.0337],
           [-0.0194, -0.0787,  0.0981]])
    >>> float(fl.kl_div_with_logits(teacher, teacher))  # identical distributions
    0.0
    """
    # the common small call (2-d float32/float64 logits of one dtype, the class axis last, a
    # float temperature), checked and computed in one call into the core (None: the general
    # path below, which raises every user-facing error)
    r = _core.distill_small(0, student_logits, teacher_logits, axis, temperature, None,
                            reduction, return_grad, grad_out)
    if r is not None:
        return r
    s = float_input(student_logits, "student_logits")
    t = float_input(teacher_logits, "teacher_logits")
    shape = s.array.shape
    if s.array.ndim == 0:
        raise ValueError("student_logits must have at least one dimension (the class axis)")
    if t.array.shape != shape:
        raise ValueError(
            f"teacher_logits has shape {t.array.shape} but must have the student_logits' "
            f"shape {shape}"
        )
    ax = normalize_axis(axis, s.array.ndim)
    if shape[ax] == 0:
        raise ValueError(
            f"student_logits has a class axis (axis={ax}) of size 0: there are no classes"
        )
    tau = check_temperature(temperature)
    reduction = check_reduction(reduction, _KL_REDUCTIONS)
    want_grad = check_grad_out_given(grad_out, return_grad)

    kdt = _kernel_dtype(s, t)
    sa = s.array if s.array.dtype == kdt else s.array.astype(kdt)
    ta = t.array if t.array.dtype == kdt else t.array.astype(kdt)
    s3, t3 = as3d(sa, ax), as3d(ta, ax)
    rows, n_classes = s3.shape[0] * s3.shape[2], s3.shape[1]
    denom = {"batchmean": rows, "mean": rows * n_classes}.get(reduction, 1)
    mean_like = reduction in ("batchmean", "mean")
    scale = mean_scale(reduction, denom, ("batchmean", "mean"))

    grad: Optional[GradTarget] = None
    temp = None
    core_grad = None
    if want_grad:
        if sa is s.array:  # the core writes the student's dtype: straight into the result
            grad = GradTarget(grad_out, s, ax, (s3, t3))
            core_grad = grad.core
        else:  # computed in a wider dtype, cast back to the student's afterwards
            if grad_out is not None:
                grad_buffer(grad_out, shape, s.orig_dtype)
            temp = np.empty(shape, dtype=kdt)
            core_grad = as3d(temp, ax)
    per_row = row_losses(rows, reduction)
    _core.kl_div_with_logits(s3, t3, tau, scale, per_row, core_grad)
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


def gaussian_kl(mu: Any, logvar: Any, *, reduction: str = "mean", return_grad: bool = False,
                grad_out: Any = None):
    """KL divergence of a diagonal Gaussian from the standard normal (the VAE latent term).

    Per row over the last axis::

        loss_row = KL(N(mu, exp(logvar)) || N(0, I))
                 = -0.5 * sum(1 + logvar - mu**2 - exp(logvar))

    Parameters
    ----------
    mu : array_like
        Means, at least 1-d; the last axis is the latent dimension. float32/float64 keep their
        dtype; float16/bfloat16 give float32 losses; integers give float64.
    logvar : array_like
        Log-variances, the same shape as ``mu``. If the two dtypes differ, both are read in
        the wider compute dtype.
    reduction : {"mean", "sum", "none"}
        ``"mean"``: the mean over rows (the sum over the last axis is kept, as VAE losses
        are written); ``"sum"``; ``"none"``: per-row losses of shape ``mu.shape[:-1]`` (a 0-d
        array for 1-d inputs).
    return_grad : bool
        Also return ``(d_mu, d_logvar) = (mu, 0.5 * expm1(logvar))`` times the reduction's scale
        (``1 / rows`` for ``"mean"``), each in its input's shape and dtype.
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_mu, d_logvar)``, each an ndarray of its input's shape and
        dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry may
        be its input itself (in-place use; the results are those of a call without
        ``grad_out``); the two entries must not share memory. The returned tuple holds these
        arrays where given. Nothing is written to them when the call raises.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_mu, d_logvar), only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes differ (``logvar``), a 0-d input, an unknown ``reduction``; a ``grad_out``
        entry of the wrong shape or read-only, entries that share memory, a ``grad_out`` of
        the wrong length or without ``return_grad``.
    TypeError
        Unsupported dtypes; a ``grad_out`` that is not a tuple or list, an entry that is not
        an ndarray or of the wrong dtype.

    Notes
    -----
    Evaluated as ``0.5 * sum(mu**2 + (exp(logvar) - 1 - logvar))`` in float64 whatever the
    input dtype, with ``exp(x) - 1 - x`` computed without cancellation (``x**2 / 2`` for tiny
    ``x``), so every term is non-negative and accurate where the posterior is close to the
    prior. ``logvar = +inf`` gives NaN (``inf - inf``, as the formula), ``-inf`` gives
    ``+inf``; NaN propagates to its row. An empty last axis gives 0 per row; no rows gives
    NaN for ``"mean"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> mu = np.array([[0.0, 1.0], [0.5, -0.5]])
    >>> logvar = np.array([[0.0, 0.0], [np.log(2.0), -1.0]])
    >>> float(fl.gaussian_kl(mu, np.zeros((2, 2)), reduction="sum"))  # 0.5 * sum(mu**2)
    0.75
    >>> np.round(fl.gaussian_kl(mu, logvar, reduction="none"), 6)
    array([0.5     , 0.587366])
    >>> loss, (d_mu, d_logvar) = fl.gaussian_kl(mu, logvar, return_grad=True)
    >>> d_logvar
    array([[ 0.        ,  0.        ],
           [ 0.25      , -0.15803014]])
    """
    m = float_input(mu, "mu")
    v = float_input(logvar, "logvar")
    shape = m.array.shape
    if m.array.ndim == 0:
        raise ValueError("mu must have at least one dimension (the last axis is summed over)")
    if v.array.shape != shape:
        raise ValueError(f"logvar has shape {v.array.shape} but must have mu's shape {shape}")
    reduction = check_reduction(reduction)
    want_grad = check_grad_out_given(grad_out, return_grad)
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(shape, m.orig_dtype), (shape, v.orig_dtype)], ("mu", "logvar"))

    kdt = _kernel_dtype(m, v)
    ma = m.array if m.array.dtype == kdt else m.array.astype(kdt)
    va = v.array if v.array.dtype == kdt else v.array.astype(kdt)
    last = len(shape) - 1
    m3, v3 = as3d(ma, last), as3d(va, last)
    rows = m3.shape[0]
    scale = mean_scale(reduction, rows)
    g_mu = g_lv = None
    if want_grad:
        # the core writes straight into a caller's C-contiguous buffer of the kernel's dtype
        # that shares no memory with the inputs; others (an input itself, in place) get the
        # gradient at the end
        g_mu, g_lv = (
            u if u is not None and u.dtype == kdt and u.flags.c_contiguous
            and not np.may_share_memory(u, ma) and not np.may_share_memory(u, va)
            else np.empty(shape, dtype=kdt)
            for u in (bufs or (None, None)))
    per_row = row_losses(rows, reduction)
    _core.gaussian_kl(
        m3,
        v3,
        scale,
        per_row,
        None if g_mu is None else as3d(g_mu, last),
        None if g_lv is None else as3d(g_lv, last),
    )
    loss = reduce_rows(per_row, reduction, float(rows), shape[:-1], _loss_dtype(kdt))
    if not want_grad:
        return loss
    return loss, deliver_grads((g_mu.astype(m.orig_dtype, copy=False),
                                g_lv.astype(v.orig_dtype, copy=False)), bufs)
