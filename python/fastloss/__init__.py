"""fastloss: numerically stable loss functions and fused gradients on NumPy arrays.

``import fastloss as fl``; every loss takes array-likes, follows ``torch.nn.functional``
semantics where PyTorch has the same loss, and can return its gradient in the same pass
(``return_grad=True``). Plain NumPy float64 references of every function live in
:mod:`fastloss.reference`.
"""

from __future__ import annotations

import operator

from . import _core
from .classification import cross_entropy, nll_loss
from .softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "get_num_threads",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "set_num_threads",
    "softmax",
]


def set_num_threads(n: int) -> None:
    """Set the number of threads the C++ kernels may use (n >= 1).

    The default follows ``OMP_NUM_THREADS`` or the number of cores. Small inputs always run
    on one thread whatever this says (starting threads would cost more than it saves).
    """
    if isinstance(n, bool):
        raise TypeError("n must be a positive integer, got a bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be a positive integer, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the C++ kernels use for large inputs."""
    return _core.get_num_threads()
