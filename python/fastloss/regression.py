"""Regression losses: mean squared error, mean absolute error, Huber and smooth L1."""

from __future__ import annotations

from typing import Any

from ._pointwise import pointwise
from ._validation import check_real

__all__ = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"]

_COMMON = """
    Arguments follow :func:`torch.nn.functional.{torch}`; ``input``, ``target`` and the optional
    elementwise ``weight`` broadcast by NumPy rules. ``reduction`` is ``"mean"`` (default: the
    sum of the weighted losses divided by the number of broadcast elements, PyTorch's
    convention for elementwise weights as in ``binary_cross_entropy``), ``"sum"`` or ``"none"``.
    ``return_grad=True`` also returns the gradient with respect to ``input`` (summed over the
    axes along which ``input`` was broadcast), computed in the same pass; ``grad_out`` takes a
    preallocated array of ``input``'s shape and dtype (it may be ``input`` itself). dtypes as
    every fastloss function: float32/float64 kept, 16-bit computed in float32 (float32 losses,
    gradient in the input dtype). NaN propagates to the affected elements only.
"""


def mse_loss(input: Any, target: Any, *, weight: Any = None, reduction: str = "mean",
             return_grad: bool = False, grad_out: Any = None):
    """Mean squared error: ``(input - target)**2``; gradient ``2 (input - target)``.
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> float(fl.mse_loss([4.0, 2.0, 3.0], [3.0, 5.0, 2.0]))  # (1 + 9 + 1) / 3
    3.6666666666666665
    """
    return pointwise("mse", input, target, weight=weight, reduction=reduction,
                     return_grad=return_grad, grad_out=grad_out)


def l1_loss(input: Any, target: Any, *, weight: Any = None, reduction: str = "mean",
            return_grad: bool = False, grad_out: Any = None):
    """Mean absolute error: ``|input - target|``; gradient ``sign(input - target)``, 0 where
    ``input == target`` (as ``torch.sign``).
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> float(fl.l1_loss([4.0, 2.0, 3.0], [3.0, 5.0, 2.0]))  # (1 + 3 + 1) / 3
    1.6666666666666667
    """
    return pointwise("l1", input, target, weight=weight, reduction=reduction,
                     return_grad=return_grad, grad_out=grad_out)


def huber_loss(input: Any, target: Any, *, delta: float = 1.0, weight: Any = None,
               reduction: str = "mean", return_grad: bool = False, grad_out: Any = None):
    """Huber loss: ``d**2 / 2`` where ``|d| <= delta``, else ``delta (|d| - delta / 2)``, with
    ``d = input - target``; gradient ``d`` or ``delta sign(d)``. ``delta > 0``.
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> float(fl.huber_loss([0.5, 3.0], [0.0, 0.0]))  # (0.125 + 2.5) / 2
    1.3125
    """
    d = check_real(delta, "delta")
    if not d > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    return pointwise("huber", input, target, weight=weight, p0=d, reduction=reduction,
                     return_grad=return_grad, grad_out=grad_out)


def smooth_l1_loss(input: Any, target: Any, *, beta: float = 1.0, weight: Any = None,
                   reduction: str = "mean", return_grad: bool = False, grad_out: Any = None):
    """Smooth L1 loss: ``d**2 / (2 beta)`` where ``|d| < beta``, else ``|d| - beta / 2``;
    gradient ``d / beta`` or ``sign(d)``. ``beta >= 0``; ``beta = 0`` is the L1 loss (as torch).
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> float(fl.smooth_l1_loss([0.5, 3.0], [0.0, 0.0]))  # (0.125 + 2.5) / 2
    1.3125
    """
    b = check_real(beta, "beta")
    if b < 0:
        raise ValueError(f"beta must be non-negative, got {beta!r}")
    return pointwise("smooth_l1", input, target, weight=weight, p0=b, reduction=reduction,
                     return_grad=return_grad, grad_out=grad_out)


for _f, _t in ((mse_loss, "mse_loss"), (l1_loss, "l1_loss"), (huber_loss, "huber_loss"),
               (smooth_l1_loss, "smooth_l1_loss")):
    _f.__doc__ = _f.__doc__.replace("{common}", _COMMON.format(torch=_t))
