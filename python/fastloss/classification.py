"""Classification losses over a class axis: softmax cross-entropy and negative log-likelihood."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_int,
    check_real,
    check_reduction,
    check_target_chunk,
    class_targets,
    class_weight,
    float_input,
    normalize_axis,
    reduce_rows,
    reduce_total,
    row_losses,
)

__all__ = ["cross_entropy", "CrossEntropyResult", "nll_loss", "softmax_focal_loss", "perplexity",
           "bits_per_byte"]


class CrossEntropyResult(NamedTuple):
    """What :func:`cross_entropy` returns when ``return_lse`` or ``return_token_accuracy`` is
    set; the fields not asked for are None."""

    loss: Any
    grad: Any
    lse: Any
    token_accuracy: Any


def _class_input(x: Any, name: str, axis: Any):
    xi = float_input(x, name)
    if xi.array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, xi.array.ndim)
    if xi.array.shape[ax] == 0:
        raise ValueError(f"{name} has a class axis (axis={ax}) of size 0: there are no classes")
    return xi, ax


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    normalizer: Any = None,
    return_grad: bool = False,
    grad_out: Any = None,
    return_lse: bool = False,
    return_token_accuracy: bool = False,
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
    z_loss : float >= 0
        PaLM's auxiliary z-loss: adds ``z_loss * lse**2`` to each row's loss, ``lse`` the
        row's logsumexp (of the capped logits with ``softcap``); gradient
        ``2 * z_loss * lse * softmax``. With index targets the term is multiplied by the row's
        weight ``w[t]`` like the cross-entropy, so ``"mean"`` stays the weighted mean of the
        ``"none"`` values (Liger-Kernel's z-loss is unweighted; without class weights the two
        agree). Ignored rows get none.
    softcap : float > 0, optional
        Gemma 2's logit soft-capping: the logits pass through ``softcap * tanh(x / softcap)``
        before everything else (so ``-inf`` becomes ``-softcap``); the gradient includes the
        chain rule factor ``1 - tanh(x / softcap)**2``. At most the largest value of the type
        the logits are computed in (float32 for 16- and 32-bit logits: 3.4e38).
    normalizer : float > 0, optional
        Divide the summed loss and the gradient by this number instead of the mean's
        denominator, for example the token count of all the micro-batches of one
        gradient-accumulation step (so that their gradients add up to the gradient of the
        whole batch's mean). Only with ``reduction="mean"`` or ``"sum"`` (both then give
        ``sum / normalizer``; the sum is weighted with ``weight``).
    return_grad : bool
        Also return d(returned loss)/d(logits), computed in the same pass.
    grad_out : ndarray, optional
        Where to write the gradient: the logits' shape and dtype, writable. It may be
        ``logits`` itself (in place, no extra memory). Requires ``return_grad=True``. On an
        argument error nothing is written; it is written only once every check has passed.
    return_lse : bool
        Also return each row's log-sum-exp ``lse = log sum_j exp(x_j)`` (of the capped logits
        with ``softcap``), from the same pass: an array of the target's shape in the loss
        dtype, whatever the reduction, ignored rows included (so ``log_softmax = x - lse``
        can be rebuilt, or the z-loss term logged). scipy's conventions for non-finite rows.
    return_token_accuracy : bool
        Also return the token accuracy from the same pass: whether ``argmax`` of a row equals
        its target, NumPy's ``argmax`` (the first maximum; a NaN counts as the largest, as in
        PyTorch), of the logits as given (before ``softcap``). With ``"mean"`` the fraction
        of the rows not ignored (NaN when there are none), with ``"sum"`` their number, with
        ``"none"`` 1 or 0 per row (0 for ignored rows); unweighted by ``weight``, and not
        divided by ``normalizer``. As Liger-Kernel's ``return_token_accuracy``. Needs class
        index targets.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``
    result : CrossEntropyResult, instead of the above when ``return_lse`` or
        ``return_token_accuracy`` is set: the named tuple ``(loss, grad, lse,
        token_accuracy)``, with None for what was not asked for.

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
    contributes 0 even when its logit is ``-inf`` (``0 * log 0 = 0``; PyTorch gives NaN), so a
    row whose logits are all ``-inf`` and whose target mass is all zero has loss 0 and
    gradient 0 (NaN with ``z_loss > 0``, whose ``lse`` is ``-inf`` there).
    Probability targets are not checked to be non-negative or to sum to one (as PyTorch).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> loss, grad = fl.cross_entropy(logits, [0, 1], return_grad=True)
    >>> round(float(loss), 6)
    0.31854
    >>> r = fl.cross_entropy(logits, [0, 2], return_lse=True, return_token_accuracy=True)
    >>> r.lse.round(4), float(r.token_accuracy)
    (array([2.417, 2.72 ]), 0.5)
    """
    if (weight is None and softcap is None and normalizer is None
            and type(axis) is int and axis in (-1, 1)
            and type(label_smoothing) is float and label_smoothing == 0.0
            and type(z_loss) is float and z_loss == 0.0
            and return_lse is False and return_token_accuracy is False):
        # The common small call (2-d logits, int64 targets), checked and computed in one call
        # into the core (None: the general path below, which also raises every user-facing
        # error).
        r = _core.class_rows_small(0, logits, target, ignore_index, reduction, return_grad, 0.0,
                                   grad_out)
        if r is not None:
            return r
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction,
                          label_smoothing, z_loss, softcap, return_grad, grad_out,
                          normalizer=normalizer, return_lse=return_lse,
                          return_token_accuracy=return_token_accuracy)


# Rows per chunk of a reduced cross-entropy (2 MB of per-row losses); at least the small-call
# path's 16,384 rows, so that both sum the same rows in the same order.
_CHUNK_ROWS = 1 << 18


def _row_chunks(n0, n2, reduction, loss_dtype, kernel, check=None):
    """A loss over many rows, (n0, C, n2) as axis-0 chunks of about ``_CHUNK_ROWS`` rows:
    ``kernel(o0, o1, r0, r1, part)`` writes the float64 losses of rows ``[r0, r1)`` (slice
    ``[o0, o1)`` of axis 0) into ``part``, then ``check(r0, r1)`` (if given) checks their
    targets and returns the count of rows not ignored. Each chunk's losses sit in one reused
    buffer that stays in cache, where they are summed or (reduction="none") rounded into the
    result: a fresh float64 per-row array (8 bytes a row) would cost as much as the logits of a
    2-class problem, and its first touch (page faults) more. float64 results take the kernel's
    losses directly. The chunks do not depend on the thread count. Returns (the float64 sum,
    or the flat array of losses for "none"; the count)."""
    step = max(1, _CHUNK_ROWS // n2)
    none = reduction == "none"
    out = np.empty(n0 * n2, dtype=loss_dtype) if none else None
    direct = none and out.dtype == np.float64
    per_row = None if direct else row_losses(step * n2, "sum")
    total, counted = 0.0, 0
    for o0 in range(0, n0, step):
        o1 = min(n0, o0 + step)
        r0, r1 = o0 * n2, o1 * n2
        part = out[r0:r1] if direct else per_row[: r1 - r0]
        kernel(o0, o1, r0, r1, part)
        if check is not None:
            counted += check(r0, r1)
        if not none:
            total += _core.sum_f64(part)  # (np.sum's order, over the cores)
        elif not direct:
            out[r0:r1] = part  # (astype's rounding)
    return (out if none else total), counted


def _check_z_softcap(z_loss: Any, softcap: Any, dtype: Any = None) -> tuple[float, float]:
    """z_loss >= 0 and softcap > 0 (0.0: none). With ``dtype`` (what the core computes in),
    both must also be finite in it: c tanh(x / c) and the z-loss coefficient are formed in that
    dtype, and a value past float32's maximum (3.4e38) would be inf there, making losses or
    gradients NaN (found by the fuzzer, tests/fuzz)."""
    z = check_real(z_loss, "z_loss", 0.0, math.inf)
    if not math.isfinite(z):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss!r}")
    if dtype is not None and z > float(np.finfo(dtype).max) / 2:  # (the gradient has 2 z)
        raise ValueError(f"z_loss {z_loss!r} exceeds half the largest {np.dtype(dtype).name} "
                         f"({float(np.finfo(dtype).max) / 2:.4g}), the type the logits are "
                         "computed in")
    if softcap is None:
        return z, 0.0
    c = check_real(softcap, "softcap")
    if not (0.0 < c < math.inf):
        raise ValueError(f"softcap must be a finite number > 0 (or None), got {softcap!r}")
    if dtype is not None and c > float(np.finfo(dtype).max):
        raise ValueError(f"softcap {softcap!r} exceeds the largest {np.dtype(dtype).name} "
                         f"({float(np.finfo(dtype).max):.4g}), the type the logits are "
                         "computed in")
    return z, c


def _check_normalizer(normalizer: Any, reduction: str) -> Any:
    """None, or a positive finite number (with reduction "mean" or "sum" only)."""
    if normalizer is None:
        return None
    n = check_real(normalizer, "normalizer")
    if not (0.0 < n < math.inf):
        raise ValueError(f"normalizer must be a positive finite number (or None), got "
                         f"{normalizer!r}")
    if reduction == "none":
        raise ValueError('normalizer is given with reduction="none"; it divides a summed '
                         'loss, so use reduction="mean" or "sum"')
    return n


def _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                   z_loss, softcap, return_grad, grad_out, focal_gamma=None, normalizer=None,
                   return_lse=False, return_token_accuracy=False):
    """cross_entropy, and softmax_focal_loss (``focal_gamma`` set, ``weight`` = alpha)."""
    focal = focal_gamma is not None
    x, ax = _class_input(logits, "logits", axis)
    reduction = check_reduction(reduction)
    normalizer = _check_normalizer(normalizer, reduction)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z, cap = _check_z_softcap(z_loss, softcap, x.compute_dtype)
    ignore_index = check_int(ignore_index, "ignore_index")
    want_grad = check_grad_out_given(grad_out, return_grad)
    want_lse = _check_flag(return_lse, "return_lse")
    want_acc = _check_flag(return_token_accuracy, "return_token_accuracy")
    arr = x.array
    n_classes = arr.shape[ax]
    w = class_weight(weight, n_classes, x.compute_dtype)

    t = np.asarray(target)
    target_flat = probs3 = None
    # A reduced loss without gradient over many rows (the chunked loop below): each chunk's
    # targets are checked right after the kernel has read them, in cache, instead of in a pass
    # of their own over memory (16 of 24 bytes a row of a 2-class problem), and the mean's
    # count is summed from the chunks. Every kernel takes any int64 target (an out-of-range
    # one makes its row NaN: no read outside the row), and before the check it has written
    # only this call's own per-row buffer, so nothing of the caller's is written before a
    # check fails. (Checked after rather than before the kernel: the kernel's read of the
    # targets from memory overlaps its arithmetic, and the check reads them from cache.)
    # reduction="none" defers too (its count is not needed, so class weights may be given).
    n_rows_all = math.prod(arr.shape) // n_classes if n_classes else 0
    deferred = (not want_grad and not want_acc and t.dtype.kind in "iu"
                and (reduction == "none" or w is None or focal) and normalizer is None
                and n_rows_all > _CHUNK_ROWS)
    if t.dtype.kind in "iu":
        ct = class_targets(t, arr.shape, ax, ignore_index, check=not deferred)
        deferred = ct.n_valid is None
        target_flat, out_shape = ct.flat, ct.shape
        if deferred:
            denom = 0.0  # (summed below)
        elif w is None or focal:  # (focal: alpha is not a normaliser)
            denom = float(ct.n_valid)
        else:
            denom = float(np.sum(w[ct.flat[ct.valid]], dtype=np.float64))
    elif focal:
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    elif t.dtype.kind == "f" or t.dtype.name == "bfloat16":
        if t.shape != arr.shape:
            raise ValueError(
                f"target has a floating dtype ({t.dtype}), so it is read as class probabilities "
                f"and must have the logits' shape {arr.shape}, got {t.shape}; class indices "
                "must have an integer dtype"
            )
        if want_acc:
            raise ValueError("return_token_accuracy needs class-index targets (an integer "
                             "target); with probability targets compare np.argmax of both")
        probs3 = as3d(np.asarray(t, dtype=x.compute_dtype), ax)
        out_shape = arr.shape[:ax] + arr.shape[ax + 1 :]
        denom = float(math.prod(out_shape))
    elif t.dtype.kind == "b":
        raise TypeError("target is boolean; class indices must be integers (or float probabilities)")
    else:
        raise TypeError(f"target has unsupported dtype {t.dtype}; use integer class indices "
                        "or float class probabilities")

    acc_reduction = reduction  # (the token accuracy ignores the normalizer)
    if normalizer is not None:  # sum / normalizer, whichever of "mean" and "sum"
        reduction, denom = "mean", normalizer
    x3 = as3d(arr, ax)
    grad = GradTarget(grad_out, x, ax, (x3,) if probs3 is None else (x3, probs3)) if want_grad else None
    scale = (1.0 / denom if denom != 0 else 0.0) if reduction == "mean" else 1.0
    n0, n2 = x3.shape[0], x3.shape[2]
    n_rows = n0 * n2
    lse = np.empty(n_rows, dtype=np.float64) if want_lse else None
    correct = np.empty(n_rows, dtype=np.uint8) if want_acc else None
    args = (w, ignore_index, eps, scale)
    opts = (z, cap, focal, float(focal_gamma) if focal else 0.0)
    gcore = grad.core if grad else None
    fresh = grad is not None and grad.temp is not None  # (a hint for the core: untouched pages)
    if n_rows <= _CHUNK_ROWS:
        per_row = row_losses(n_rows, reduction)
        _core.cross_entropy(x3, target_flat, probs3, *args, per_row, gcore, *opts, lse, correct,
                            fresh)
        loss = reduce_rows(per_row, reduction, denom, out_shape, x.loss_dtype)
    else:
        def kernel(o0, o1, r0, r1, part):
            _core.cross_entropy(
                x3[o0:o1], None if target_flat is None else target_flat[r0:r1],
                None if probs3 is None else probs3[o0:o1], *args, part,
                None if gcore is None else gcore[o0:o1], *opts,
                None if lse is None else lse[r0:r1], None if correct is None else correct[r0:r1],
                fresh)

        check = (lambda r0, r1: check_target_chunk(ct, r0, r1, n_classes, ax)) if deferred else None
        loss, counted = _row_chunks(n0, n2, reduction, x.loss_dtype, kernel, check)
        if reduction == "none":
            loss = loss.reshape(out_shape)
        else:
            loss = reduce_total(loss, reduction, denom + counted, x.loss_dtype)
    g = grad.result() if want_grad else None
    if not (want_lse or want_acc):
        return (loss, g) if want_grad else loss
    acc = None
    if want_acc:
        dt = x.loss_dtype
        if acc_reduction == "none":
            acc = correct.reshape(out_shape).astype(dt)
        else:
            hits = int(np.count_nonzero(correct))
            if acc_reduction == "sum":
                acc = dt.type(hits)
            else:
                counted = ct.n_valid
                acc = dt.type(hits / counted if counted else math.nan)
    lse_out = lse.reshape(out_shape).astype(x.loss_dtype, copy=False) if want_lse else None
    return CrossEntropyResult(loss, g, lse_out, acc)


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


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
    if weight is None and type(axis) is int and axis in (-1, 1):
        # the common small call (as cross_entropy's)
        r = _core.class_rows_small(1, log_probs, target, ignore_index, reduction, return_grad,
                                   0.0, grad_out)
        if r is not None:
            return r
    x, ax = _class_input(log_probs, "log_probs", axis)
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    want_grad = check_grad_out_given(grad_out, return_grad)
    arr = x.array
    w = class_weight(weight, arr.shape[ax], x.compute_dtype)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    # Many rows without the gradient: chunk by chunk, each chunk's targets checked after its
    # kernel (as cross_entropy's; the kernel takes any int64 target, making a bad one's row NaN
    # without reading outside the row).
    n_rows = math.prod(arr.shape) // arr.shape[ax] if arr.shape[ax] else 0
    deferred = (not want_grad and (reduction == "none" or w is None) and n_rows > _CHUNK_ROWS)
    ct = class_targets(t, arr.shape, ax, ignore_index, check=not deferred)
    deferred = ct.n_valid is None
    if deferred:
        denom = 0.0  # (counted below)
    else:
        denom = float(ct.n_valid) if w is None else float(
            np.sum(w[ct.flat[ct.valid]], dtype=np.float64))
    x3 = as3d(arr, ax)
    grad = GradTarget(grad_out, x, ax, (x3,)) if want_grad else None
    scale = (1.0 / denom if denom != 0 else 0.0) if reduction == "mean" else 1.0
    if n_rows <= _CHUNK_ROWS or want_grad:
        per_row = row_losses(n_rows, reduction)
        _core.nll_loss(x3, ct.flat, w, ignore_index, scale, per_row, grad.core if grad else None)
        loss = reduce_rows(per_row, reduction, denom, ct.shape, x.loss_dtype)
        return (loss, grad.result()) if want_grad else loss

    def kernel(o0, o1, r0, r1, part):
        _core.nll_loss(x3[o0:o1], ct.flat[r0:r1], w, ignore_index, scale, part, None)

    n_classes = arr.shape[ax]
    check = (lambda r0, r1: check_target_chunk(ct, r0, r1, n_classes, ax, "target")) \
        if deferred else None
    loss, counted = _row_chunks(x3.shape[0], x3.shape[2], reduction, x.loss_dtype, kernel, check)
    if reduction == "none":
        return loss.reshape(ct.shape)
    return reduce_total(loss, reduction, denom + counted, x.loss_dtype)


def softmax_focal_loss(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    alpha: Any = None,
    gamma: float = 2.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Multi-class focal loss from logits (Lin et al., RetinaNet's loss over a softmax):
    ``-alpha_t * (1 - p_t)**gamma * log p_t`` per row, ``p = softmax(logits)`` over ``axis``.

    Parameters
    ----------
    logits, target, axis, ignore_index, return_grad, grad_out
        As :func:`cross_entropy` with class-index targets (probability targets are a
        TypeError).
    alpha : None, float or array_like of shape (C,)
        Class balance factor: None is 1, a float applies to every class, an array gives one
        factor per class (``alpha_t`` is the target's).
    gamma : float >= 0
        Focusing parameter; ``gamma = 0`` with ``alpha=None`` is the cross-entropy.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the sum by the number of non-ignored rows (``alpha`` is a factor,
        not a normaliser, unlike the class weights of :func:`cross_entropy`).

    Notes
    -----
    Computed stably from the logits: ``log p_t`` as ``x_t - logsumexp(x)`` and ``1 - p_t`` as
    the sum of the other classes' probabilities (never ``1 -`` a rounded ``p_t``). The gradient
    is ``F * (softmax(x) - onehot(t))`` with
    ``F = alpha_t ((1 - p_t)**gamma - gamma p_t (1 - p_t)**(gamma - 1) log p_t)``, written in
    the same pass as the loss (the limit 0 is taken where ``p_t`` is 1 or 0).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> float(fl.softmax_focal_loss([[0.0, 0.0]], [0]))  # 0.5**2 * ln 2
    0.17328679513998632
    """
    if (alpha is None and type(axis) is int and axis in (-1, 1)
            and type(gamma) is float and 0.0 <= gamma < math.inf):
        # the common small call (as cross_entropy's)
        r = _core.class_rows_small(2, logits, target, ignore_index, reduction, return_grad,
                                   gamma, grad_out)
        if r is not None:
            return r
    g = check_real(gamma, "gamma", 0.0, math.inf)
    if not math.isfinite(g):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    xa = float_input(logits, "logits")
    if alpha is not None and np.ndim(alpha) == 0:
        a = check_real(alpha, "alpha")
        ax = normalize_axis(axis, max(xa.array.ndim, 1)) if xa.array.ndim else 0
        n = xa.array.shape[ax] if xa.array.ndim else 1
        alpha = np.full(n, a)
    elif alpha is not None:
        a_arr = np.asarray(alpha)
        if a_arr.ndim != 1:
            raise ValueError(f"alpha must be None, a number or a 1-d array of per-class factors, "
                             f"got shape {a_arr.shape}")
        if xa.array.ndim:
            n = xa.array.shape[normalize_axis(axis, xa.array.ndim)]
            if a_arr.shape != (n,):
                raise ValueError(f"alpha must have shape ({n},) (one factor per class), "
                                 f"got {a_arr.shape}")
    return _cross_entropy(logits, target, axis,
                          alpha, ignore_index, reduction, 0.0, 0.0, None, return_grad, grad_out,
                          focal_gamma=g)


def _ce_kwargs(kw: dict, fn: str) -> dict:
    allowed = {"axis", "weight", "ignore_index", "label_smoothing", "z_loss", "softcap"}
    bad = sorted(set(kw) - allowed)
    if bad:
        raise TypeError(f"{fn}() got unexpected keyword argument(s) {', '.join(bad)}; it "
                        f"accepts the cross_entropy options {', '.join(sorted(allowed))}")
    return kw


def perplexity(logits: Any, target: Any, **kwargs: Any):
    """Perplexity of a language model: ``exp`` of the mean cross-entropy in nats over the
    non-ignored tokens (weighted mean with ``weight``).

    ``kwargs`` are the :func:`cross_entropy` options ``axis``, ``weight``, ``ignore_index``,
    ``label_smoothing``, ``z_loss`` and ``softcap`` (``reduction`` and ``return_grad`` are not
    accepted: a TypeError). Returns a NumPy floating scalar of the loss dtype. A model that
    spreads its probability uniformly over ``C`` classes has perplexity ``C``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> float(fl.perplexity(np.zeros((3, 50)), [1, 2, 3]))  # uniform over 50 classes
    49.99999999999999
    """
    loss = cross_entropy(logits, target, reduction="mean", **_ce_kwargs(kwargs, "perplexity"))
    with np.errstate(over="ignore"):
        return np.exp(loss)


def bits_per_byte(logits: Any, target: Any, n_bytes: Any, **kwargs: Any):
    """Bits per byte: the total cross-entropy in nats over the non-ignored tokens divided by
    ``ln 2 * n_bytes``, where ``n_bytes`` is the number of bytes (of UTF-8 text, say) that the
    tokens cover.

    Per-token losses depend on the tokenizer: a tokenizer with longer tokens has fewer, harder
    tokens, so neither mean cross-entropy nor perplexity compares models with different
    vocabularies. The total information content of the text does not depend on how it was cut
    into tokens, so dividing the total by the number of bytes gives a per-byte figure that
    compares any two models on the same text (as in The Pile and the GPT-NeoX/Llama
    evaluations). ``kwargs``: the :func:`cross_entropy` options as in :func:`perplexity`.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> float(fl.bits_per_byte(np.zeros((4, 256)), [1, 2, 3, 4], n_bytes=4))  # 8 bits a byte
    8.0
    """
    if isinstance(n_bytes, (bool, np.bool_)) or not isinstance(n_bytes, (int, float, np.number)):
        raise TypeError(f"n_bytes must be a positive number, got {type(n_bytes).__name__}")
    nb = float(n_bytes)
    if not (0 < nb < math.inf):
        raise ValueError(f"n_bytes must be a positive finite number of bytes, got {n_bytes!r}")
    total = cross_entropy(logits, target, reduction="sum", **_ce_kwargs(kwargs, "bits_per_byte"))
    return total.dtype.type(np.float64(total) / (math.log(2) * nb))
