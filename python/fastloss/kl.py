"""Kullback-Leibler divergence between distributions given as (log-)probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._pointwise import _sum_to, pointwise, real_array
from ._validation import float_input

__all__ = ["kl_div"]

_NEGATIVE_TARGET = ("raise", "nan")


def kl_div(input: Any, target: Any, *, reduction: str = "mean", log_target: bool = False,
           negative_target: str = "raise", return_grad: bool = False, grad_out: Any = None):
    """Kullback-Leibler divergence ``KL(target || exp(input))`` summed elementwise, as
    :func:`torch.nn.functional.kl_div`: ``input`` holds log-probabilities, ``target``
    probabilities (or log-probabilities with ``log_target=True``).

    Elementwise ``target * (log(target) - input)`` (``log_target``:
    ``exp(target) * (target - input)``); gradient with respect to ``input``: ``-target``
    (``-exp(target)``). ``input`` and ``target`` broadcast by NumPy rules (the gradient is
    summed over the axes along which ``input`` was broadcast).

    ``reduction``: ``"mean"`` divides the sum by the number of elements (PyTorch's "mean",
    which is not the KL divergence per sample), ``"batchmean"`` by the size of the first axis
    (the KL divergence per sample, what the mathematics means; 0-d: the sum), ``"sum"``,
    ``"none"`` (elementwise). A zero target contributes exactly 0, even where ``input`` is
    ``-inf`` (``0 log 0 = 0``; PyTorch gives NaN there); a ``log_target`` of ``-inf`` likewise.
    NaN propagates to its element only. dtypes and ``grad_out`` as every pointwise loss.

    Negative probability targets (``log_target=False``) are not probabilities, and by default
    (``negative_target="raise"``) a ValueError, a deliberate difference from PyTorch (found in
    the pass that writes the gradient: a separate ``grad_out`` may be partly written; in place,
    a write-free pass checks first). ``negative_target="nan"`` gives PyTorch's result instead:
    the elements of negative target have loss NaN (``t log t`` of a negative ``t``), so every
    reduced loss is NaN, and their gradient is ``-target`` as everywhere else.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    >>> float(fl.kl_div(np.log(q), p, reduction="sum"))  # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
    0.14384103622589045
    >>> fl.kl_div(np.log(q), [0.5, -0.5], reduction="none", negative_target="nan")
    array([0.34657359,        nan])
    """
    if not isinstance(negative_target, str) or negative_target not in _NEGATIVE_TARGET:
        raise ValueError(f"negative_target must be 'raise' or 'nan', got {negative_target!r}")
    if negative_target == "nan" and not log_target:
        x = float_input(input, "input")
        y = real_array(target, "target", x.compute_dtype)
        with np.errstate(invalid="ignore"):
            negative = y < 0
        if negative.any():
            return _kl_div_negative_as_nan(input, y, negative, x, reduction, return_grad,
                                           grad_out)
    return pointwise("kl_div", input, target, weight=None, p0=1.0 if log_target else 0.0,
                     reduction=reduction, return_grad=return_grad, grad_out=grad_out)


def _kl_div_negative_as_nan(input, y, negative, x, reduction, return_grad, grad_out):
    """PyTorch's kl_div where some targets are negative: those elements count 0 in the kernel,
    then their loss becomes NaN and their gradient ``-target`` (scaled as the reduction's)."""
    out = pointwise("kl_div", input, np.where(negative, 0, y), weight=None, p0=0.0,
                    reduction=reduction, return_grad=return_grad, grad_out=grad_out)
    loss, grad = out if return_grad else (out, None)
    full = np.broadcast_shapes(x.array.shape, y.shape)
    if reduction == "none":
        loss = np.where(np.broadcast_to(negative, full), np.nan, loss).astype(loss.dtype)
    else:
        loss = loss.dtype.type(np.nan)
    if not return_grad:
        return loss
    n = int(np.prod(full))
    denom = {"mean": n, "batchmean": full[0] if full else 1}.get(reduction, 1)
    extra = np.broadcast_to(-np.where(negative, y, 0).astype(np.float64) / max(denom, 1), full)
    grad += _sum_to(np.ascontiguousarray(extra), x.array.shape).astype(grad.dtype)
    return loss, grad
