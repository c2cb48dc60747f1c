"""Kullback-Leibler divergence between distributions given as (log-)probabilities."""

from __future__ import annotations

from typing import Any

from ._pointwise import pointwise

__all__ = ["kl_div"]


def kl_div(input: Any, target: Any, *, reduction: str = "mean", log_target: bool = False,
           return_grad: bool = False, grad_out: Any = None):
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
    Negative probability targets are a ValueError (found in the pass that writes the
    gradient: a separate ``grad_out`` may be partly written; in place, a write-free pass checks
    first). NaN propagates to its element only. dtypes and ``grad_out`` as every pointwise loss.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    >>> float(fl.kl_div(np.log(q), p, reduction="sum"))  # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
    0.14384103622589045
    """
    return pointwise("kl_div", input, target, weight=None, p0=1.0 if log_target else 0.0,
                     reduction=reduction, return_grad=return_grad, grad_out=grad_out)
