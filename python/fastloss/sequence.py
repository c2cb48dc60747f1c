"""Sequence losses: connectionist temporal classification (CTC)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._validation import (
    check_grad_out_given,
    check_int,
    check_reduction,
    deliver_grads,
    float_input,
    grad_buffer,
)

__all__ = ["ctc_loss"]

_INT64_MAX = np.iinfo(np.int64).max


def _int_array(x: Any, name: str) -> np.ndarray:
    """``x`` as an array of integers (any integer dtype; an empty list is fine)."""
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be converted to an integer array ({exc})") from None
    if a.size == 0 and a.dtype.kind == "f":  # np.asarray([]) is float64
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    return a


def _lengths(x: Any, name: str, n: int, unbatched: bool) -> np.ndarray:
    """Per-sample lengths as a contiguous int64 (n,) array, each >= 0."""
    a = _int_array(x, name)
    if unbatched:
        if a.size != 1 or a.ndim > 1:
            raise ValueError(
                f"{name} must be a single integer for unbatched (T, C) log_probs, got shape "
                f"{a.shape}"
            )
        a = a.reshape(1)
    elif a.ndim != 1 or a.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per sample: shape ({n},) for log_probs with batch size "
            f"N = {n} (log_probs.shape[1]), got shape {a.shape}"
        )
    if a.size and a.dtype.kind == "u" and a.max() > _INT64_MAX:
        raise ValueError(f"{name} has a value too large to be a length: {a.max()}")
    if a.size and a.min() < 0:
        i = int(np.argmin(a))
        raise ValueError(f"{name}[{i}] = {a[i]} is negative; lengths must be >= 0")
    return np.ascontiguousarray(a, dtype=np.int64)


def ctc_loss(
    log_probs: Any,
    targets: Any,
    input_lengths: Any,
    target_lengths: Any,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Connectionist temporal classification loss, optionally with its gradient.

    Semantics and layouts of :func:`torch.nn.functional.ctc_loss` (Graves et al., 2006): the
    negative log-likelihood of each target sequence, summed over every alignment of it to the
    input steps (blanks between and around the labels, repeated frames collapsed).

    Parameters
    ----------
    log_probs : array_like, shape (T, N, C) or (T, C)
        Log-probabilities of the C classes (blank included) at each of T steps for N samples
        (usually ``log_softmax`` outputs; they are used as given). ``(T, C)`` is one unbatched
        sample. float32/float64 keep their dtype; float16/bfloat16 give float32 losses and a
        gradient in the input dtype; integers give float64. Any strides. The recursions run in
        float64 for every dtype.
    targets : array_like of int
        Padded, shape ``(N, S)``: the labels of sample n are ``targets[n, :target_lengths[n]]``
        (the padding is not read); or concatenated, 1-d of length ``sum(target_lengths)``.
        Unbatched: shape ``(S,)``. Labels must be in ``[0, C)`` and differ from ``blank``.
    input_lengths, target_lengths : array_like of int, shape (N,)
        Steps of each sample (at most T) and labels of each target (at most S when padded).
        A single integer for unbatched input.
    blank : int
        The blank class, in ``[0, C)``.
    reduction : {"mean", "sum", "none"}
        ``"mean"``, as PyTorch: each sample's loss divided by its target length (at least 1),
        then the mean over the batch; ``"none"``: the (N,) per-sample losses (shape ``()``
        unbatched).
    zero_infinity : bool
        Give 0 loss and 0 gradient to samples with no possible alignment (their loss is
        ``+inf`` otherwise).
    return_grad : bool
        Also return the gradient with respect to ``log_probs`` (see Notes).
    grad_out : ndarray, optional
        A preallocated array of ``log_probs``' shape and dtype for the gradient (it may be
        ``log_probs`` itself, for in-place use: the results are those of a call without
        ``grad_out``); needs ``return_grad=True``. Returned as the gradient. Nothing is
        written to it when the call raises (e.g. for a label out of range).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray of log_probs' shape and dtype, only with ``return_grad``

    Raises
    ------
    ValueError
        ``log_probs`` not 2-d or 3-d, lengths of the wrong shape, negative or too long, a
        ``blank`` out of range or among the labels, ``targets`` of the wrong shape, an
        unknown ``reduction``; a ``grad_out`` of the wrong shape or read-only, or without
        ``return_grad``.
    TypeError
        Non-integer targets or lengths, unsupported dtypes; a ``grad_out`` that is not an
        ndarray or of the wrong dtype.
    IndexError
        A label outside ``[0, C)``.

    Notes
    -----
    With l' the target with blanks interleaved (length L = 2S + 1) and log alpha / log beta
    both including the emission of their step (PyTorch's convention):
    ``la_t(s) = lse(la_{t-1}(s), la_{t-1}(s-1), la_{t-1}(s-2)) + lp_t(l'_s)``, the ``s-2``
    term only between different labels (so a repeated label needs a blank between its copies,
    and more steps: a target needs ``S + (number of repeats)`` steps), and
    ``loss = -lse(la_{T-1}(L-1), la_{T-1}(L-2))``. Samples with fewer steps get ``+inf``.

    The gradient is the one PyTorch's ``ctc_loss`` backward returns, times the reduction's
    scale (``1 / (N * max(target_length, 1))`` for ``"mean"``)::

        grad[t, n, c] = exp(lp_t(c)) - sum_{s: l'_s = c} exp(la_t(s) + lb_t(s) + loss_n - lp_t(c))

    (``lp_t(c) = lp[t, n, c]``) for ``t < input_lengths[n]`` and 0 after. The second term
    alone is the derivative with respect to free log-probabilities; PyTorch adds ``exp(lp)``,
    which makes the result the gradient with respect to the logits when
    ``log_probs = log_softmax(logits)`` (and leaves it unchanged when chained through
    ``log_softmax`` again). As in PyTorch, a sample with
    infinite loss gets a NaN gradient for its ``t < input_lengths[n]`` unless
    ``zero_infinity`` (a NaN loss, from NaN log-probabilities on its paths, too). One
    deliberate difference: where ``lp[t, n, c] = -inf`` PyTorch's formula gives NaN
    (``-inf + inf``); here the term is 0, the limit.

    Computed in C++ with the log-space alpha and beta recursions in float64, the states of a
    step in SIMD lanes, the samples in parallel threads (the GIL is released); the result does
    not depend on the number of threads.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> lp = np.log(np.full((3, 1, 3), 1 / 3))  # 3 steps, 1 sample, uniform over 3 classes
    >>> # alignments of the target [1, 2] in 3 steps: 5 of the 27 paths (12, 112, 122, 012, ...)
    >>> loss = fl.ctc_loss(lp, [[1, 2]], [3], [2], reduction="sum")
    >>> round(float(loss), 6), round(float(-np.log(5 / 27)), 6)
    (1.686399, 1.686399)
    >>> loss, grad = fl.ctc_loss(lp, [[1, 2]], [3], [2], return_grad=True)
    >>> grad.shape
    (3, 1, 3)
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    x = float_input(log_probs, "log_probs")
    arr = x.array
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"log_probs must have shape (T, N, C) or, unbatched, (T, C); got {arr.ndim} "
            f"dimension(s), shape {arr.shape}"
        )
    unbatched = arr.ndim == 2
    lp3 = arr[:, None, :] if unbatched else arr
    T, N, C = lp3.shape
    reduction = check_reduction(reduction)
    blank = check_int(blank, "blank")
    if not 0 <= blank < C:
        raise ValueError(
            f"blank must be a class index in [0, C) with C = {C} (log_probs.shape[-1]), got {blank}"
        )
    il = _lengths(input_lengths, "input_lengths", N, unbatched)
    tl = _lengths(target_lengths, "target_lengths", N, unbatched)
    if il.size and il.max() > T:
        i = int(np.argmax(il))
        raise ValueError(
            f"input_lengths[{i}] = {il[i]} exceeds the number of steps T = {T} (log_probs.shape[0])"
        )

    t = _int_array(targets, "targets")
    if unbatched:
        if t.ndim != 1:
            raise ValueError(
                f"targets must be 1-d (S,) for unbatched (T, C) log_probs, got shape {t.shape}"
            )
        t = t[None, :]
    if t.ndim == 2:  # padded (N, S)
        if t.shape[0] != N:
            raise ValueError(
                f"targets has {t.shape[0]} rows (shape {t.shape}) but log_probs has batch size "
                f"N = {N}; padded targets must have shape (N, S)"
            )
        S = t.shape[1]
        if tl.size and tl.max() > S:
            i = int(np.argmax(tl))
            raise ValueError(
                f"target_lengths[{i}] = {tl[i]} exceeds the padded target length S = {S} "
                "(targets.shape[1])"
            )
        used = np.arange(S)[None, :] < tl[:, None]
        offsets = np.arange(N, dtype=np.int64) * S
        where = lambda i: "[{}, {}]".format(*np.unravel_index(i, t.shape))
    elif t.ndim == 1:  # concatenated
        total = int(tl.sum())
        if t.shape[0] != total:
            raise ValueError(
                f"targets is 1-d (concatenated) with {t.shape[0]} labels, but target_lengths "
                f"sum to {total}"
            )
        used = np.ones(t.shape, dtype=bool)
        offsets = np.concatenate([[0], np.cumsum(tl)[:-1]]).astype(np.int64) if N else tl
        where = lambda i: f"[{i}]"
    else:
        raise ValueError(f"targets must be padded (N, S) or concatenated 1-d, got shape {t.shape}")
    bad = used & ((t < 0) | (t >= C))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IndexError(
            f"targets{where(i)} = {t.reshape(-1)[i]} is out of range: labels must be class "
            f"indices in [0, {C - 1}] (C = {C})"
        )
    is_blank = used & (t == blank)
    if is_blank.any():
        i = int(np.flatnonzero(is_blank)[0])
        raise ValueError(f"targets{where(i)} = {blank} is the blank label (blank={blank})")
    flat = np.ascontiguousarray(t, dtype=np.int64).reshape(-1)
    buf = None if grad_out is None else grad_buffer(grad_out, arr.shape, x.orig_dtype)

    per_sample = np.empty(N, dtype=np.float64)
    scale = 1.0 / (N * np.maximum(tl, 1)) if reduction == "mean" else np.ones(N)
    grad = None
    if return_grad:
        # the core writes straight into a caller's C-contiguous buffer that shares no memory
        # with the operands; others (log_probs itself, in place) get the gradient at the end
        direct = (buf is not None and buf.dtype == arr.dtype and buf.flags.c_contiguous
                  and not np.may_share_memory(buf, arr) and not np.may_share_memory(buf, flat))
        grad = buf.reshape(lp3.shape) if direct else np.empty(lp3.shape, dtype=arr.dtype)
    _core.ctc_loss(
        lp3,
        flat,
        offsets,
        il,
        tl,
        blank,
        bool(zero_infinity),
        per_sample,
        np.ascontiguousarray(scale, dtype=np.float64) if return_grad else None,
        grad,
    )
    if zero_infinity:
        per_sample[per_sample == np.inf] = 0.0
    dtype = x.loss_dtype
    if reduction == "none":
        loss = per_sample.astype(dtype)
        loss = loss.reshape(()) if unbatched else loss
    elif reduction == "sum":
        loss = dtype.type(per_sample.sum())
    else:
        with np.errstate(invalid="ignore"):  # an empty batch: NaN, as PyTorch
            loss = dtype.type(np.mean(per_sample / np.maximum(tl, 1)) if N else np.nan)
    if not return_grad:
        return loss
    grad = grad.reshape(T, C) if unbatched else grad
    return loss, deliver_grads([grad.astype(x.orig_dtype, copy=False)], [buf])[0]
