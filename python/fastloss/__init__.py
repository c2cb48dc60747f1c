"""fastloss: numerically stable loss functions and fused gradients on NumPy arrays.

``import fastloss as fl``; every loss takes array-likes, follows ``torch.nn.functional``
semantics where PyTorch has the same loss, and can return its gradient in the same pass
(``return_grad=True``). Plain NumPy float64 references of every function live in
:mod:`fastloss.reference`.
"""

from __future__ import annotations

import operator
import os
import warnings

from . import _core
from ._config import config as _config_dict
from ._config import show_config
from .binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    hinge_loss,
    sigmoid_focal_loss,
)
from .classification import (
    CrossEntropyResult,
    bits_per_byte,
    cross_entropy,
    nll_loss,
    perplexity,
    softmax_focal_loss,
)
from .distributions import gaussian_kl, kl_div_with_logits
from .embeddings import clip_loss, contrastive_loss, triplet_margin_loss
from .evaluate import eval_file
from .kl import kl_div
from .margin import multi_margin_loss
from .regression import huber_loss, l1_loss, mse_loss, smooth_l1_loss
from .sequence import ctc_loss
from .scale import (
    cross_entropy_grad_from_stats,
    cross_entropy_stats,
    linear_cross_entropy,
    merge_cross_entropy_stats,
    reduce_cross_entropy_stats,
)
from .softmax import log_softmax, logsumexp, softmax

# Issue 16: sparsemax, ranking, JSD and the multi-class hinge / perceptron losses.
from .jsd import jensen_shannon_with_logits
from .multiclass import multiclass_hinge_loss, multiclass_perceptron_loss
from .ranking import ranking_softmax_loss
from .sparsemax import sparsemax, sparsemax_loss
# issue 16: PyTorch's missing losses, log-cosh and generalized KL (pairs.py, multilabel.py)
from .multilabel import multilabel_margin_loss, multilabel_soft_margin_loss
from .pairs import (
    cosine_embedding_loss,
    gaussian_nll_loss,
    generalized_kl_div,
    hinge_embedding_loss,
    log_cosh_loss,
    margin_ranking_loss,
    poisson_nll_loss,
    soft_margin_loss,
    triplet_margin_with_distance_loss,
)

__version__ = "0.1.0"

if os.environ.get("FASTLOSS_ISA") and os.environ["FASTLOSS_ISA"] not in _core.compiled_isas():
    warnings.warn(
        f"FASTLOSS_ISA={os.environ['FASTLOSS_ISA']!r} is not one of "
        f"{', '.join(_core.compiled_isas())}; using {_core.active_isa()}",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = [
    "binary_cross_entropy",
    "bits_per_byte",
    "perplexity",
    "softmax_focal_loss",
    "binary_cross_entropy_with_logits",
    "clip_loss",
    "contrastive_loss",
    "cross_entropy",
    "CrossEntropyResult",
    "eval_file",
    "ctc_loss",
    "gaussian_kl",
    "get_num_threads",
    "hinge_loss",
    "kl_div",
    "cross_entropy_stats",
    "reduce_cross_entropy_stats",
    "merge_cross_entropy_stats",
    "cross_entropy_grad_from_stats",
    "linear_cross_entropy",
    "huber_loss",
    "kl_div_with_logits",
    "l1_loss",
    "log_softmax",
    "logsumexp",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
    "set_num_threads",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "triplet_margin_loss",
    "show_config",
    "softmax",
    # Issue 16: sparsemax, ranking, JSD and the multi-class hinge / perceptron losses.
    "jensen_shannon_with_logits",
    "multiclass_hinge_loss",
    "multiclass_perceptron_loss",
    "ranking_softmax_loss",
    "sparsemax",
    "sparsemax_loss",
    # issue 16 (pairs.py, multilabel.py)
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "cosine_embedding_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "soft_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "triplet_margin_with_distance_loss",
    "log_cosh_loss",
    "generalized_kl_div",
]

# Issue 16: the overlap losses of segmentation, cosine similarity / distance, NT-Xent.
from .overlap import dice_loss, generalized_dice_loss, tversky_loss  # noqa: E402
from .similarity import cosine_distance, cosine_similarity, ntxent_loss  # noqa: E402

__all__ += ["cosine_distance", "cosine_similarity", "dice_loss", "generalized_dice_loss",
            "ntxent_loss", "tversky_loss"]


def __getattr__(name: str):
    if name == "__config__":  # a fresh snapshot: the ISA and thread count can change
        return _config_dict()
    raise AttributeError(f"module 'fastloss' has no attribute {name!r}")


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
