"""Two-class losses: binary cross-entropy (from logits and from probabilities), sigmoid focal
loss and the SVM hinge loss."""

from __future__ import annotations

from typing import Any

from ._pointwise import pointwise
from ._validation import check_real

__all__ = ["binary_cross_entropy_with_logits", "binary_cross_entropy", "sigmoid_focal_loss",
           "hinge_loss"]

_COMMON = """
    ``input``, ``target`` and the optional elementwise weights broadcast by NumPy rules.
    ``reduction`` is ``"mean"`` (default: the sum of the weighted losses divided by the number
    of broadcast elements, as PyTorch), ``"sum"`` or ``"none"``. ``return_grad=True`` also
    returns the gradient with respect to the first argument (summed over the axes along which it
    was broadcast), computed in the same pass; ``grad_out`` takes a preallocated array of its
    shape and dtype (it may be the input itself). float32/float64 are kept; 16-bit inputs are
    computed in float32 (float32 losses, gradient in the input dtype). NaN propagates to the
    affected elements only.
"""


def binary_cross_entropy_with_logits(logits: Any, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None, reduction: str = "mean",
                                     return_grad: bool = False, grad_out: Any = None):
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` in [0, 1] (soft targets
    allowed), as :func:`torch.nn.functional.binary_cross_entropy_with_logits`.

    Computed stably as ``(1 - y) x + (1 + (p - 1) y) softplus(-x)`` with
    ``softplus(-x) = log1p(exp(-|x|)) + max(-x, 0)`` and ``p = pos_weight`` (1 without it), so
    logits of any size (±1e4 in float32, ±1e300 in float64) give finite losses; the gradient is
    ``(1 + (p - 1) y) sigmoid(x) - p y`` (``sigmoid(x) - y`` without ``pos_weight``).
    ``pos_weight`` broadcasts like the other operands (typically one weight per class, along the
    last axis). Targets outside [0, 1] are not rejected (as in PyTorch); the loss is then a
    difference of large terms and only as accurate as that allows.
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> round(float(fl.binary_cross_entropy_with_logits([0.0, 2.0], [1.0, 0.0])), 6)
    1.410038
    """
    return pointwise("bce_with_logits", logits, target, input_name="logits", weight=weight,
                     pos_weight=pos_weight, reduction=reduction, return_grad=return_grad,
                     grad_out=grad_out)


def binary_cross_entropy(probs: Any, target: Any, *, weight: Any = None,
                         reduction: str = "mean", return_grad: bool = False,
                         grad_out: Any = None):
    """Binary cross-entropy of probabilities, as :func:`torch.nn.functional.binary_cross_entropy`:
    ``-(y log q + (1 - y) log(1 - q))`` with each log clamped at -100 (so ``q = 0`` or 1 gives
    a finite loss); gradient ``(q - y) / max(q (1 - q), 1e-12)`` (PyTorch's). Probabilities
    outside [0, 1] are a ValueError, found in the same pass that writes the gradient: a
    separate ``grad_out`` may then hold a partly written gradient; an in-place call
    (``grad_out`` overlapping ``probs``) is checked in a first pass that writes nothing, so
    the input is never destroyed. Targets that are all 0 or 1 take one logarithm per element.
    Prefer :func:`binary_cross_entropy_with_logits` when logits are at hand: it does not lose
    the digits that rounding to a probability does.
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> round(float(fl.binary_cross_entropy([0.01], [1.0])), 6)  # -log(0.01)
    4.60517
    """
    return pointwise("bce", probs, target, input_name="probs", weight=weight,
                     reduction=reduction, return_grad=return_grad, grad_out=grad_out)


def sigmoid_focal_loss(logits: Any, target: Any, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean", return_grad: bool = False,
                       grad_out: Any = None):
    """Focal loss of RetinaNet / DETR, as :func:`torchvision.ops.sigmoid_focal_loss`:
    ``alpha_t (1 - p_t)**gamma BCE(x, y)`` with ``p = sigmoid(x)``,
    ``p_t = p y + (1 - p)(1 - y)``, ``alpha_t = alpha y + (1 - alpha)(1 - y)`` (``alpha < 0``
    disables the weighting; ``alpha <= 1``), ``gamma >= 0``.

    Computed from the logits: ``1 - p_t`` is formed from ``sigmoid(x)`` and ``sigmoid(-x)``
    (never as 1 minus a rounded probability) and the BCE term stably, so the loss stays finite
    and accurate where the probability underflows. The gradient is analytic:
    ``alpha_t ((p - y)(1 - p_t)**gamma + BCE gamma (1 - p_t)**(gamma-1) p (1 - p)(1 - 2y))``.
    Targets belong in [0, 1]; others are not rejected (as in torchvision), and the loss is then
    a difference of large terms, only as accurate as that allows.
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> round(float(fl.sigmoid_focal_loss([0.0], [1.0], reduction="sum")), 6)  # .25*.25*log 2
    0.043322
    """
    a = check_real(alpha, "alpha")
    if a > 1:
        raise ValueError(f"alpha must be at most 1 (or negative to disable it), got {alpha!r}")
    g = check_real(gamma, "gamma")
    if g < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma!r}")
    return pointwise("sigmoid_focal", logits, target, input_name="logits", p0=a, p1=g,
                     reduction=reduction, return_grad=return_grad, grad_out=grad_out)


def hinge_loss(input: Any, target: Any, *, margin: float = 1.0, squared: bool = False,
               reduction: str = "mean", return_grad: bool = False, grad_out: Any = None):
    """Binary SVM hinge loss ``max(0, margin - y f)`` (``squared=True``: its square) for scores
    ``f = input`` and labels ``y`` in {-1, +1} or in {0, 1} (0 is read as -1); any other label
    is a ValueError. Gradient ``-y`` where the margin is violated, 0 elsewhere (0 at the kink,
    a subgradient); squared: ``-2 y max(0, margin - y f)``. The labels are checked in the
    pass that writes the gradient: on a label error a separate ``grad_out`` may hold a partly
    written gradient; an in-place call (``grad_out`` overlapping ``input``) is checked first
    in a pass that writes nothing, so the input is never destroyed.
    {common}
    Examples
    --------
    >>> import fastloss as fl
    >>> float(fl.hinge_loss([0.5, 2.0, -1.0], [1, 1, 0]))  # (0.5 + 0 + 0) / 3
    0.16666666666666666
    """
    m = check_real(margin, "margin")
    return pointwise("hinge", input, target, p0=m, p1=1.0 if squared else 0.0,
                     reduction=reduction, return_grad=return_grad, grad_out=grad_out)


for _f in (binary_cross_entropy_with_logits, binary_cross_entropy, sigmoid_focal_loss,
           hinge_loss):
    _f.__doc__ = _f.__doc__.replace("{common}", _COMMON)
