"""fastloss losses on Dask arrays: lazy, chunked evaluation at scale, on any Dask scheduler.

``import fastloss.dask as fld`` (needs ``pip install 'fastloss[dask]'``; ``import fastloss``
itself never imports Dask). Every function takes :class:`dask.array.Array` operands (NumPy
operands are wrapped with :func:`dask.array.asarray`) and returns a **lazy** result: a Dask
array for ``reduction="none"``, a 0-d Dask array for ``"mean"`` and ``"sum"``. Nothing is
computed until ``.compute()`` (or ``dask.compute``), which works on every scheduler: the
synchronous and threaded ones, processes, and ``dask.distributed`` clusters. The results equal
the eager :mod:`fastloss` functions on the computed arrays, to float rounding.

Losses only: this module is for **evaluation** at scale (the loss of a model over a large
dataset, the perplexity of saved logits); it computes **no gradients** (no ``return_grad``).

Cross-entropy (:func:`cross_entropy`, :func:`perplexity`), logits ``(..., V)`` with the class
axis last and integer targets of the rows' shape ``(...)``:

- **classes in one chunk** (rows chunked any way): one task per row block runs
  :func:`fastloss.cross_entropy` with ``reduction="none"``; ``"mean"`` is the sum of the
  per-row losses divided by the number of non-ignored rows.
- **classes chunked** (several chunks along the last axis, e.g. a 50,257-token vocabulary cut
  into pieces): one task per block computes the vocabulary-shard statistics
  :func:`fastloss.cross_entropy_stats` (with the block's ``class_offset``); the statistics of
  the class blocks of each row block are combined by a pairwise tree of
  :func:`fastloss.reduce_cross_entropy_stats` tasks, then
  :func:`fastloss.merge_cross_entropy_stats` gives the exact per-row losses. Only the per-row
  statistics (a few float64 numbers per row and the targets) move between workers, never a
  logits block: the data moved is O(rows), independent of the vocabulary size.

Pointwise losses (:func:`mse_loss`, :func:`l1_loss`, :func:`huber_loss`,
:func:`smooth_l1_loss`, :func:`binary_cross_entropy_with_logits`,
:func:`binary_cross_entropy`, :func:`sigmoid_focal_loss`, :func:`hinge_loss`): the operands are
broadcast to a common shape and chunked like the first full-shape operand; one task per block
runs the fastloss function (``"none"``: the block's losses; ``"mean"``/``"sum"``: the block's
sum, then a sum over blocks in float64; ``"mean"`` divides by the number of broadcast
elements, as fastloss).

Row-wise losses (:func:`multiclass_hinge_loss`, :func:`multiclass_perceptron_loss`,
:func:`sparsemax_loss`, :func:`kl_div_with_logits`, :func:`jensen_shannon_with_logits`,
:func:`generalized_kl_div`, :func:`multilabel_soft_margin_loss`,
:func:`multilabel_margin_loss`, :func:`cosine_embedding_loss`,
:func:`ranking_softmax_loss`): the axis of a row (classes, list items, embedding) is gathered
into one chunk and the rows stay chunked as given; one task per block runs the fastloss
function on whole rows. :func:`margin_ranking_loss` and :func:`gaussian_nll_loss` are
elementwise, as the pointwise losses, with three operands. :func:`cosine_similarity` and
:func:`cosine_distance` reduce over their ``axis`` likewise. The batch losses that compare
every row with every other (:func:`fastloss.ntxent_loss`, the Dice family's reductions over
a whole batch, :func:`fastloss.ctc_loss`'s alignments) have no lazy form here.

Options are checked when the graph is built (an invalid ``reduction`` or ``label_smoothing``
raises at the call, as eager fastloss); errors that depend on the data (a class index out of
range, a probability outside [0, 1]) are raised by ``compute()``.

>>> import numpy as np, dask, dask.array as da, fastloss as fl, fastloss.dask as fld
>>> rng = np.random.default_rng(0)
>>> x, t = rng.normal(size=(6, 10)), rng.integers(0, 10, size=6)
>>> lazy = fld.cross_entropy(da.from_array(x, chunks=(3, 4)), da.from_array(t, chunks=3))
>>> with dask.config.set(scheduler="synchronous"):
...     bool(np.isclose(lazy.compute(), fl.cross_entropy(x, t), rtol=1e-14))
True
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "fastloss.dask needs Dask: pip install 'fastloss[dask]' (or 'dask[distributed]')"
    ) from exc

from . import binary as _binary
from . import classification as _classification
from . import regression as _regression
from . import scale as _scale
from ._pointwise import warn_if_broadcast

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "hinge_loss",
    "huber_loss",
    "l1_loss",
    "mse_loss",
    "perplexity",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
]

_REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------------------------
# Helpers (module-level functions: they are pickled into the tasks)
# ---------------------------------------------------------------------------------------------
def _check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}, "
                         f"got {reduction!r}")
    return reduction


def _as_dask(a: Any) -> da.Array:
    return a if isinstance(a, da.Array) else da.asarray(a)


def _finish(total: da.Array, denom: Any, reduction: str, dtype: np.dtype) -> da.Array:
    """A 0-d Dask array: ``total`` (float64, 0-d) or ``total / denom`` cast to ``dtype``."""
    if reduction == "sum":
        return da.map_blocks(_cast, total, dtype=dtype, meta=np.empty((), dtype), dt=dtype)
    denom = denom if isinstance(denom, da.Array) else da.asarray(np.float64(denom))
    return da.map_blocks(_divide, total, denom, dtype=dtype, meta=np.empty((), dtype), dt=dtype)


def _cast(total: np.ndarray, dt: np.dtype) -> np.ndarray:
    return np.asarray(total, dtype=np.float64).astype(dt)


def _divide(total: np.ndarray, denom: np.ndarray, dt: np.dtype) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # nothing to average: NaN, as eager
        return (np.float64(total) / np.float64(denom)).astype(dt).reshape(())


def _aligned(a: Any) -> Any:
    """``a``, or an aligned copy: arrays deserialised by dask.distributed can sit at unaligned
    addresses, which the C++ core rejects."""
    if isinstance(a, np.ndarray) and not a.flags.aligned:
        return a.copy()
    return a


def _exp(loss: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(loss)


# ---------------------------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------------------------
def _ce_block(x: np.ndarray, t: np.ndarray, **kw: Any) -> np.ndarray:
    return np.asarray(_classification.cross_entropy(_aligned(x), _aligned(t), reduction="none",
                                                    **kw))


def _stats_block(x: np.ndarray, t: np.ndarray, class_offset: int, ignore_index: int,
                 softcap: Any):
    return _scale.cross_entropy_stats(_aligned(x), _aligned(t), class_offset=class_offset,
                                      ignore_index=ignore_index, softcap=softcap)


def _merge_rows(st, label_smoothing: float, z_loss: float, ignore_index: int,
                dt: np.dtype) -> np.ndarray:
    loss = _scale.merge_cross_entropy_stats(st, label_smoothing=label_smoothing, z_loss=z_loss,
                                            reduction="none", ignore_index=ignore_index).loss
    return np.asarray(loss).astype(dt, copy=False)


def _tree_reduce(items: list) -> Any:
    """Pairwise tree of ``reduce_cross_entropy_stats`` tasks (depth log2 of the class blocks)."""
    reduce = dask.delayed(_scale.reduce_cross_entropy_stats, pure=True)
    while len(items) > 1:
        nxt = [reduce(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _ce_inputs(logits: Any, target: Any):
    x = _as_dask(logits)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis, last)")
    t = _as_dask(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype} "
                        "(probability targets are not supported on Dask arrays)")
    if t.shape != x.shape[:-1]:
        raise ValueError(f"target has shape {t.shape} but class indices must have the logits' "
                         f"shape without the class axis (the last): {x.shape[:-1]}")
    if any(math.isnan(n) for n in x.shape) or any(math.isnan(n) for n in t.shape):
        raise ValueError("logits and target must have known chunk sizes (call "
                         "compute_chunk_sizes() first)")
    return x, t.rechunk(x.chunks[:-1])


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    reduction: str = "mean",
) -> da.Array:
    """Softmax cross-entropy of a Dask array of logits, lazily: :func:`fastloss.cross_entropy`
    by blocks.

    Parameters
    ----------
    logits : dask.array.Array (or array_like), shape (..., V)
        Unnormalised scores, the class axis **last**, chunked any way along every axis.
        float32/float64 keep their dtype (16-bit computed in float32, integers in float64).
    target : dask.array.Array or array_like of int, shape (...)
        Class indices with the logits' shape without the class axis; rechunked to the logits'
        row chunks. Probability targets and class weights are not supported here.
    ignore_index, label_smoothing, z_loss, softcap
        As :func:`fastloss.cross_entropy` (z-loss ``z * lse**2`` per row; Gemma 2's
        soft-capping ``softcap * tanh(x / softcap)`` applied to the logits first).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of non-ignored rows (NaN if there are none).

    Returns
    -------
    dask.array.Array
        The per-row losses (shape ``(...)``, ``"none"``; 0 for ignored rows) or a 0-d array
        (``"mean"``, ``"sum"``), of the loss dtype. No gradient: evaluation only.

    Notes
    -----
    When the class axis is in one chunk, every row block is one
    :func:`fastloss.cross_entropy` task. When it is split into several chunks, every block
    becomes :func:`fastloss.cross_entropy_stats` of its classes (``class_offset`` = the
    block's first global class), the statistics of a row's blocks are reduced pairwise in a
    tree of :func:`fastloss.reduce_cross_entropy_stats` tasks and
    :func:`fastloss.merge_cross_entropy_stats` gives the per-row losses: only the per-row
    statistics move between workers (O(rows) float64 numbers per class block), never a logits
    block, and the result equals the one of the full rows to float64 rounding. A target past
    the vocabulary raises IndexError at ``compute()``.
    """
    reduction = _check_reduction(reduction)
    x, t = _ce_inputs(logits, target)
    opts = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                softcap=softcap)
    # Check the options now and find the loss dtype (a tiny eager call).
    probe = _classification.cross_entropy(np.zeros((1, 2), dtype=x.dtype),
                                          np.zeros(1, dtype=np.int64), reduction="none", **opts)
    dt = np.asarray(probe).dtype
    ignore_index = int(ignore_index)
    nd = x.ndim
    row_ind = tuple(range(nd - 1))

    if len(x.chunks[-1]) <= 1:  # classes in one chunk: one cross_entropy task per row block
        per_row = da.blockwise(_ce_block, row_ind, x, row_ind + (nd - 1,), t, row_ind,
                               dtype=dt, concatenate=True, meta=np.empty((0,) * (nd - 1), dt),
                               **opts)
    else:  # classes chunked: shard statistics, a tree reduction, a merge per row block
        offsets = np.concatenate([[0], np.cumsum(x.chunks[-1])[:-1]]).astype(int).tolist()
        xb, tb = x.to_delayed(), t.to_delayed()
        stats = dask.delayed(_stats_block, pure=True)
        merge = dask.delayed(_merge_rows, pure=True)
        blocks = np.empty(x.numblocks[:-1], dtype=object)
        for idx in np.ndindex(*x.numblocks[:-1]):
            tblock = tb[idx]
            parts = [stats(xb[idx + (j,)], tblock, off, ignore_index, softcap)
                     for j, off in enumerate(offsets)]
            rows = _merge_rows_shape(x.chunks, idx)
            blocks[idx] = da.from_delayed(
                merge(_tree_reduce(parts), float(label_smoothing), float(z_loss), ignore_index,
                      dt), shape=rows, dtype=dt, meta=np.empty((0,) * len(rows), dt))
        per_row = blocks[()] if blocks.ndim == 0 else da.block(blocks.tolist())

    if reduction == "none":
        return per_row
    total = per_row.sum(dtype=np.float64)
    count = (t != ignore_index).sum() if reduction == "mean" else None
    return _finish(total, count, reduction, dt)


def _merge_rows_shape(chunks: tuple, idx: tuple) -> tuple:
    return tuple(chunks[a][i] for a, i in enumerate(idx))


def perplexity(logits: Any, target: Any, **kwargs: Any) -> da.Array:
    """Perplexity, lazily: ``exp`` of the mean cross-entropy (nats) over the non-ignored rows.

    ``kwargs`` are the :func:`cross_entropy` options ``ignore_index``, ``label_smoothing``,
    ``z_loss`` and ``softcap`` (``reduction`` is not accepted: a TypeError). Returns a 0-d Dask
    array of the loss dtype, equal to :func:`fastloss.perplexity` of the computed arrays.
    """
    allowed = {"ignore_index", "label_smoothing", "z_loss", "softcap"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise TypeError(f"perplexity() got unexpected keyword argument(s) {', '.join(bad)}; it "
                        f"accepts {', '.join(sorted(allowed))}")
    loss = cross_entropy(logits, target, reduction="mean", **kwargs)
    return da.map_blocks(_exp, loss, dtype=loss.dtype, meta=np.empty((), loss.dtype))


# ---------------------------------------------------------------------------------------------
# Pointwise losses
# ---------------------------------------------------------------------------------------------
def _pointwise(fn, input: Any, target: Any, reduction: str, weight: Any = None,
               pos_weight: Any = None, **kw: Any) -> da.Array:
    """``fn(input, target[, weight=][, pos_weight=])`` by blocks (:func:`_elementwise`), with
    the eager losses' warning when ``target``'s shape differs from ``input``'s."""
    _check_reduction(reduction)
    named = [(n, a) for n, a in (("weight", weight), ("pos_weight", pos_weight)) if a is not None]
    x, t = _as_dask(input), _as_dask(target)
    warn_if_broadcast(x.shape, t.shape, stacklevel=3)  # as the eager losses
    return _elementwise(fn, [x, t] + [a for _, a in named], tuple(n for n, _ in named),
                        reduction, **kw)


_POINTWISE_DOC = """
    Lazily, on Dask arrays: :func:`fastloss.{name}` by blocks, with the same keyword options
    (``reduction`` ``"mean"``, ``"sum"`` or ``"none"``). The operands (Dask arrays or
    array_likes) broadcast by NumPy rules and are chunked like the first of ``{first}`` and
    ``target`` that has the broadcast shape. Returns a Dask array of the losses (``"none"``) or
    a 0-d Dask array (``"mean"``: the sum over all elements divided by their number; ``"sum"``),
    of the loss dtype; each block's sum is formed by fastloss, the block sums are added in
    float64. No gradient (evaluation only). Invalid values in the data raise at ``compute()``.{extra}
"""


def mse_loss(input: Any, target: Any, *, weight: Any = None,
             reduction: str = "mean") -> da.Array:
    """Mean squared error ``(input - target)**2``."""
    return _pointwise(_regression.mse_loss, input, target, reduction, weight)


def l1_loss(input: Any, target: Any, *, weight: Any = None,
            reduction: str = "mean") -> da.Array:
    """Mean absolute error ``|input - target|``."""
    return _pointwise(_regression.l1_loss, input, target, reduction, weight)


def huber_loss(input: Any, target: Any, *, delta: float = 1.0, weight: Any = None,
               reduction: str = "mean") -> da.Array:
    """Huber loss with threshold ``delta > 0``."""
    return _pointwise(_regression.huber_loss, input, target, reduction, weight, delta=delta)


def smooth_l1_loss(input: Any, target: Any, *, beta: float = 1.0, weight: Any = None,
                   reduction: str = "mean") -> da.Array:
    """Smooth L1 loss with threshold ``beta >= 0``."""
    return _pointwise(_regression.smooth_l1_loss, input, target, reduction, weight, beta=beta)


def binary_cross_entropy_with_logits(logits: Any, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None,
                                     reduction: str = "mean") -> da.Array:
    """Binary cross-entropy of ``sigmoid(logits)`` (stable for logits of any size)."""
    return _pointwise(_binary.binary_cross_entropy_with_logits, logits, target, reduction,
                      weight, pos_weight)


def binary_cross_entropy(probs: Any, target: Any, *, weight: Any = None,
                         reduction: str = "mean") -> da.Array:
    """Binary cross-entropy of probabilities in [0, 1] (logs clamped at -100)."""
    return _pointwise(_binary.binary_cross_entropy, probs, target, reduction, weight)


def sigmoid_focal_loss(logits: Any, target: Any, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean") -> da.Array:
    """Sigmoid focal loss (RetinaNet / DETR)."""
    return _pointwise(_binary.sigmoid_focal_loss, logits, target, reduction, alpha=alpha,
                      gamma=gamma)


def hinge_loss(input: Any, target: Any, *, margin: float = 1.0, squared: bool = False,
               reduction: str = "mean") -> da.Array:
    """Binary SVM hinge loss ``max(0, margin - y f)`` (``squared``: its square)."""
    return _pointwise(_binary.hinge_loss, input, target, reduction, margin=margin,
                      squared=squared)


# The elementwise losses of issue 16 (fastloss.pairs): mean over all elements, as eager.
from . import pairs as _pairs  # noqa: E402

__all__ += ["hinge_embedding_loss", "log_cosh_loss", "poisson_nll_loss", "soft_margin_loss"]


def poisson_nll_loss(input: Any, target: Any, *, log_input: bool = True, full: bool = False,
                     eps: float = 1e-8, reduction: str = "mean") -> da.Array:
    """Poisson negative log-likelihood (torch's ``poisson_nll_loss``)."""
    return _pointwise(_pairs.poisson_nll_loss, input, target, reduction, log_input=log_input,
                      full=full, eps=eps)


def hinge_embedding_loss(input: Any, target: Any, *, margin: float = 1.0,
                         reduction: str = "mean") -> da.Array:
    """Hinge embedding loss (torch's), labels in {-1, +1}."""
    return _pointwise(_pairs.hinge_embedding_loss, input, target, reduction, margin=margin)


def soft_margin_loss(input: Any, target: Any, *, reduction: str = "mean") -> da.Array:
    """Two-class logistic loss ``log(1 + exp(-target * input))`` (torch's)."""
    return _pointwise(_pairs.soft_margin_loss, input, target, reduction)


def log_cosh_loss(input: Any, target: Any, *, reduction: str = "mean") -> da.Array:
    """Log-cosh loss ``log(cosh(input - target))`` (optax's ``log_cosh``)."""
    return _pointwise(_pairs.log_cosh_loss, input, target, reduction)


for _f, _first, _extra in (
    (poisson_nll_loss, "input", ""), (hinge_embedding_loss, "input", ""),
    (soft_margin_loss, "input", ""), (log_cosh_loss, "input", ""),
    (mse_loss, "input", ""), (l1_loss, "input", ""), (huber_loss, "input", ""),
    (smooth_l1_loss, "input", ""),
    (binary_cross_entropy_with_logits, "logits", ""),
    (binary_cross_entropy, "probs", ""),
    (sigmoid_focal_loss, "logits", ""),
    (hinge_loss, "input",
     "\n\n    Labels are checked block by block: each block's labels must be all in "
     "{-1, +1} or all\n    in {0, 1} (eager fastloss also rejects a mix of -1 and 0 "
     "across the whole array)."),
):
    _f.__doc__ = _f.__doc__ + "\n" + _POINTWISE_DOC.format(
        name=_f.__name__, first=_first, extra=_extra)
del _f, _first, _extra


# ---------------------------------------------------------------------------------------------
# Issue 16: cosine similarity and distance over an axis (the vector axis in one chunk).
# ---------------------------------------------------------------------------------------------
from . import similarity as _similarity  # noqa: E402

__all__ += ["cosine_distance", "cosine_similarity"]


def _cos_none(x1, x2, axis, eps):
    return np.asarray(_similarity.cosine_similarity(_aligned(x1), _aligned(x2), axis=axis,
                                                    eps=eps))


def _cos_sum(x1, x2, axis, eps):
    d = _similarity.cosine_distance(_aligned(x1), _aligned(x2), axis=axis, eps=eps,
                                    reduction="none")
    return np.full((1,) * (np.ndim(x1) - 1), np.sum(d, dtype=np.float64))


def _cos_operands(x1: Any, x2: Any, axis: Any, eps: Any):
    """Broadcast Dask operands chunked alike with the vector axis in one chunk; the axis, the
    output dtype (a tiny eager call checks the options)."""
    a, b = _as_dask(x1), _as_dask(x2)
    _known([a, b])
    try:
        full = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"x1 and x2 cannot be broadcast together: shapes {a.shape} and "
                         f"{b.shape}") from None
    if not full:
        raise ValueError("x1 and x2 must have at least one dimension (the axis of the vectors)")
    probe = (1,) * len(full)
    dt = np.asarray(_similarity.cosine_similarity(
        np.zeros(probe, a.dtype), np.zeros(probe, b.dtype), axis=axis, eps=eps)).dtype
    ax = axis % len(full)
    ref = a if a.shape == full else da.broadcast_to(a, full)
    ref = ref.rechunk({ax: -1})
    b = (b if b.shape == full else da.broadcast_to(b, full)).rechunk(ref.chunks)
    return ref, b, ax, dt, full


def cosine_similarity(x1: Any, x2: Any, *, axis: int = -1, eps: float = 1e-8) -> da.Array:
    """Lazily, on Dask arrays: :func:`fastloss.cosine_similarity` by blocks.

    The operands broadcast by NumPy rules; they are chunked like ``x1`` (broadcast), with the
    vector ``axis`` gathered into one chunk. Returns a Dask array of the broadcast shape
    without ``axis``. No gradient (evaluation only).
    """
    a, b, ax, dt, full = _cos_operands(x1, x2, axis, eps)
    ind = tuple(range(len(full)))
    out = tuple(i for i in ind if i != ax)
    return da.blockwise(_cos_none, out, a, ind, b, ind, ax, None, eps, None, dtype=dt,
                        concatenate=True, meta=np.empty((0,) * len(out), dt))


def cosine_distance(x1: Any, x2: Any, *, axis: int = -1, eps: float = 1e-8,
                    reduction: str = "mean") -> da.Array:
    """Lazily, on Dask arrays: :func:`fastloss.cosine_distance` (``1 - cos``) by blocks.

    Chunked as :func:`cosine_similarity`. Returns a Dask array of the distances
    (``"none"``) or a 0-d Dask array (``"mean"`` over the vector pairs, ``"sum"``); block sums
    are added in float64. No gradient (evaluation only).

    >>> import numpy as np, dask, dask.array as da, fastloss as fl, fastloss.dask as fld
    >>> x = np.arange(24.0).reshape(6, 4) - 10
    >>> lazy = fld.cosine_distance(da.from_array(x, chunks=(2, 2)), np.ones(4))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     bool(np.isclose(lazy.compute(), fl.cosine_distance(x, np.ones(4)), rtol=1e-14))
    True
    """
    reduction = _check_reduction(reduction)
    a, b, ax, dt, full = _cos_operands(x1, x2, axis, eps)
    ind = tuple(range(len(full)))
    out = tuple(i for i in ind if i != ax)
    if reduction == "none":
        return da.blockwise(_cos_dist_none, out, a, ind, b, ind, ax, None, eps, None,
                            dtype=dt, concatenate=True, meta=np.empty((0,) * len(out), dt))
    partial = da.blockwise(_cos_sum, out, a, ind, b, ind, ax, None, eps, None,
                           dtype=np.float64, concatenate=True,
                           adjust_chunks={i: 1 for i in out},
                           meta=np.empty((0,) * len(out), np.float64))
    total = partial.sum(dtype=np.float64)
    return _finish(total, float(math.prod(full[:ax] + full[ax + 1:])), reduction, dt)


def _cos_dist_none(x1, x2, axis, eps):
    return np.asarray(_similarity.cosine_distance(_aligned(x1), _aligned(x2), axis=axis,
                                                  eps=eps, reduction="none"))


# ---------------------------------------------------------------------------------------------
# Issue 16: losses with three elementwise operands (margin ranking, Gaussian NLL), and the
# row-wise losses (one loss per row of a class / list / embedding axis).
# ---------------------------------------------------------------------------------------------
from . import distributions as _distributions  # noqa: E402
from . import jsd as _jsd  # noqa: E402
from . import multiclass as _multiclass  # noqa: E402
from . import multilabel as _multilabel  # noqa: E402
from . import ranking as _ranking  # noqa: E402
from .sparsemax import sparsemax_loss as _sparsemax_loss  # noqa: E402

__all__ += ["cosine_embedding_loss", "gaussian_nll_loss", "generalized_kl_div",
            "jensen_shannon_with_logits", "kl_div_with_logits", "margin_ranking_loss",
            "multiclass_hinge_loss", "multiclass_perceptron_loss", "multilabel_margin_loss",
            "multilabel_soft_margin_loss", "ranking_softmax_loss", "sparsemax_loss"]


def _known(ops: list) -> None:
    if any(math.isnan(n) for a in ops for n in a.shape):
        raise ValueError("operands must have known chunk sizes (call compute_chunk_sizes())")


def _call(fn, npos, names, kw, reduction, *arrays):
    """``fn`` on one block: the first ``npos`` arrays positional, the rest as ``names``."""
    arrays = [_aligned(a) for a in arrays]
    named = dict(zip(names, arrays[npos:]))
    return fn(*arrays[:npos], **named, reduction=reduction, **kw)


def _block_none(fn, npos, names, kw, *arrays):
    return np.asarray(_call(fn, npos, names, kw, "none", *arrays))


def _block_sum(fn, npos, names, kw, ndim, *arrays):
    s = np.float64(_call(fn, npos, names, kw, "sum", *arrays))
    return np.full((1,) * ndim, s)


def _elementwise(fn, ops: list, names: tuple, reduction: str, **kw: Any) -> da.Array:
    """``fn(*ops[:-len(names)], **dict(zip(names, ...)))`` by blocks of the broadcast shape,
    chunked like the first operand of that shape; ``"mean"`` over all broadcast elements."""
    reduction = _check_reduction(reduction)
    ops = [_as_dask(a) for a in ops]
    _known(ops)
    try:
        full = np.broadcast_shapes(*(a.shape for a in ops))
    except ValueError:
        raise ValueError("shapes do not broadcast together: "
                         + ", ".join(str(a.shape) for a in ops)) from None
    npos = len(ops) - len(names)
    probe = [np.ones((1,) * a.ndim, a.dtype) for a in ops]
    dt = np.asarray(_call(fn, npos, names, kw, "none", *probe)).dtype  # (checks the options)
    ref = next((a for a in ops if a.shape == full), None)
    chunks = ref.chunks if ref is not None else da.broadcast_to(ops[0], full).chunks
    ops = [(a if a.shape == full else da.broadcast_to(a, full)).rechunk(chunks) for a in ops]
    ind = tuple(range(len(full)))
    args = [x for a in ops for x in (a, ind)]
    if reduction == "none":
        return da.blockwise(_block_none, ind, fn, None, npos, None, names, None, kw, None,
                            *args, dtype=dt, meta=np.empty((0,) * len(full), dt))
    partial = da.blockwise(_block_sum, ind, fn, None, npos, None, names, None, kw, None,
                           len(full), None, *args, dtype=np.float64,
                           adjust_chunks={i: 1 for i in ind},
                           meta=np.empty((0,) * len(full), np.float64))
    return _finish(partial.sum(dtype=np.float64), float(math.prod(full)), reduction, dt)


def margin_ranking_loss(input1: Any, input2: Any, target: Any, *, margin: float = 0.0,
                        reduction: str = "mean") -> da.Array:
    """Margin ranking loss ``max(0, -target (input1 - input2) + margin)`` (torch's)."""
    return _elementwise(_pairs.margin_ranking_loss, [input1, input2, target], (), reduction,
                        margin=margin)


def gaussian_nll_loss(input: Any, target: Any, var: Any, *, full: bool = False,
                      eps: float = 1e-6, reduction: str = "mean") -> da.Array:
    """Gaussian negative log-likelihood (torch's ``gaussian_nll_loss``).

    ``var`` follows torch's rules, as eager: ``input``'s shape, or that shape with a last
    axis of 1, or without its last axis (one variance per sample, given as ``var[..., None]``),
    or any shape that broadcasts.
    """
    x, v = _as_dask(input), _as_dask(var)
    if v.ndim == x.ndim - 1 and x.ndim >= 1 and v.shape == x.shape[:-1]:
        v = v[..., None]  # torch: one fewer dimension is a homoscedastic variance per sample
    return _elementwise(_pairs.gaussian_nll_loss, [x, target, v], (), reduction, full=full,
                        eps=eps)


for _f in (margin_ranking_loss, gaussian_nll_loss):
    _f.__doc__ = _f.__doc__ + "\n" + _POINTWISE_DOC.format(
        name=_f.__name__, first="the operands", extra="")
del _f


def _rowwise(fn, x: Any, others: list, axis: Optional[int], reduction: str,
             reductions: tuple = _REDUCTIONS, means: Optional[dict] = None,
             count=None, kw: Optional[dict] = None) -> da.Array:
    """``fn`` by blocks of rows: ``x`` has the row axis ``axis`` (gathered into one chunk);
    ``others`` are ``(array_like or None, name or None, kind)``: ``name`` None passes it
    positionally (after ``x``), ``kind`` "full" broadcasts it to ``x``'s shape, "rows" takes
    it in the shape of ``x`` without ``axis`` (class indices), "either" takes it as "rows"
    where it has that shape and as "full" otherwise. The rows are chunked like ``x``.
    ``means``: for each mean-like reduction, the number of per-row losses each row counts
    for (1: the mean over rows); ``count``: a function of the blocks giving that number
    from the data instead (the divisor of ``"mean"``)."""
    kw = dict(kw or {})
    if not isinstance(reduction, str) or reduction not in reductions:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, reductions))}, "
                         f"got {reduction!r}")
    means = {"mean": 1} if means is None else means
    xa = _as_dask(x)
    ops = [(_as_dask(a), n, k) for a, n, k in others if a is not None]
    _known([xa] + [a for a, _, _ in ops])
    if xa.ndim == 0:
        raise ValueError("the input must have at least one dimension (the axis of the rows)")
    ax = -1 if axis is None else axis
    if not isinstance(ax, (int, np.integer)) or not -xa.ndim <= ax < xa.ndim:
        raise ValueError(f"axis {axis!r} is out of range for {xa.ndim} dimensions (an int axis "
                         "only, lazily)")
    ax = int(ax) % xa.ndim
    if axis is not None:
        kw["axis"] = ax - xa.ndim  # (negative: the same axis in a block and in the probe)
    rows_shape = xa.shape[:ax] + xa.shape[ax + 1:]
    xa = xa.rechunk({ax: -1})
    ind = tuple(range(xa.ndim))
    out = ind[:ax] + ind[ax + 1:]
    row_chunks = xa.chunks[:ax] + xa.chunks[ax + 1:]
    pos, named, names, probe = [], [], [], []
    probe_x = np.ones(tuple(2 if i == ax else 1 for i in range(xa.ndim)), xa.dtype)
    for a, name, kind in ops:
        if kind == "rows" or (kind == "either" and a.shape == rows_shape):
            a = a.rechunk(row_chunks)
            entry = (a, out)
            p = np.ones((1,) * len(rows_shape), a.dtype)
        else:
            try:
                shape = np.broadcast_shapes(a.shape, xa.shape)
            except ValueError:
                shape = None
            if shape != xa.shape:
                raise ValueError(f"{name or 'operand'} of shape {a.shape} does not broadcast "
                                 f"to the input's shape {xa.shape}")
            a = (a if a.shape == xa.shape else da.broadcast_to(a, xa.shape)).rechunk(xa.chunks)
            entry = (a, ind)
            p = np.zeros(probe_x.shape, a.dtype)
        if name is None:
            pos.append(entry)
            probe.insert(len(pos) - 1, p)
        else:
            named.append(entry)
            names.append(name)
            probe.append(p)
    npos, names = 1 + len(pos), tuple(names)
    args = [xa, ind] + [x for e in pos + named for x in e]
    dt = np.asarray(_call(fn, npos, names, kw, "none", probe_x, *probe)).dtype
    if reduction == "none":
        return da.blockwise(_block_none, out, fn, None, npos, None, names, None, kw, None,
                            *args, dtype=dt, concatenate=True,
                            meta=np.empty((0,) * len(out), dt))
    partial = da.blockwise(_block_sum, out, fn, None, npos, None, names, None, kw, None,
                           len(out), None, *args, dtype=np.float64, concatenate=True,
                           adjust_chunks={i: 1 for i in out},
                           meta=np.empty((0,) * len(out), np.float64))
    total = partial.sum(dtype=np.float64)
    if reduction == "sum":
        return _finish(total, 1.0, "sum", dt)
    if count is None:
        return _finish(total, float(math.prod(rows_shape)) * means[reduction], reduction, dt)
    counts = da.blockwise(_block_count, out, count, None, len(out), None, *args,
                          dtype=np.float64, concatenate=True, adjust_chunks={i: 1 for i in out},
                          meta=np.empty((0,) * len(out), np.float64))
    return da.map_blocks(_divide_or_zero, total, counts.sum(dtype=np.float64), dtype=dt,
                         meta=np.empty((), dt), dt=dt)


def _block_count(count, ndim, *arrays):
    return np.full((1,) * ndim, np.float64(count(*arrays)))


def _divide_or_zero(total: np.ndarray, count: np.ndarray, dt: np.dtype) -> np.ndarray:
    """The mean over counted rows; 0 when none is counted (NaN stays NaN), as eager."""
    t, c = np.float64(total), np.float64(count)
    return np.asarray(t / c if c else (t if math.isnan(t) else 0.0), dtype=dt).reshape(())


_ROWWISE_DOC = """
    Lazily, on Dask arrays: :func:`fastloss.{name}` by blocks of rows, with the same keyword
    options. ``{first}`` is chunked along its other axes as given; its {axis} is gathered
    into one chunk (a row must be whole in a block). {others} Returns a Dask array of the
    per-row losses (``"none"``) or a 0-d Dask array ({mean}``"sum"``), of the loss dtype;
    each block's sum is formed by fastloss, the block sums are added in float64. No
    gradient (evaluation only). Invalid values in the data raise at ``compute()``.
"""


def multiclass_hinge_loss(scores: Any, target: Any, *, axis: int = -1, margin: float = 1.0,
                          reduction: str = "mean") -> da.Array:
    """Crammer-Singer multi-class hinge loss ``max(0, margin + max_{j != y} s_j - s_y)``."""
    return _rowwise(_multiclass.multiclass_hinge_loss, scores, [(target, None, "rows")], axis,
                    reduction, kw={"margin": margin})


def multiclass_perceptron_loss(scores: Any, target: Any, *, axis: int = -1,
                               reduction: str = "mean") -> da.Array:
    """Multi-class perceptron loss ``max_j s_j - s_y``."""
    return _rowwise(_multiclass.multiclass_perceptron_loss, scores, [(target, None, "rows")],
                    axis, reduction)


def sparsemax_loss(logits: Any, target: Any, *, axis: int = -1,
                   reduction: str = "mean") -> da.Array:
    """Sparsemax loss (optax's), class-index targets or target distributions."""
    return _rowwise(_sparsemax_loss, logits, [(target, None, "either")], axis,
                    reduction)


def kl_div_with_logits(student_logits: Any, teacher_logits: Any, *, axis: int = -1,
                       temperature: float = 1.0, reduction: str = "batchmean") -> da.Array:
    """Distillation loss ``T**2 KL(softmax(teacher / T) || softmax(student / T))`` per row."""
    return _rowwise(_distributions.kl_div_with_logits, student_logits,
                    [(teacher_logits, None, "full")], axis, reduction,
                    ("batchmean", "mean", "sum", "none"),
                    {"batchmean": 1, "mean": _axis_size(student_logits, axis)},
                    kw={"temperature": temperature})


def jensen_shannon_with_logits(student: Any, teacher: Any, *, beta: float = 0.5,
                               temperature: float = 1.0, reduction: str = "batchmean",
                               axis: int = -1) -> da.Array:
    """Generalized Jensen-Shannon divergence of two rows of logits (Liger-Kernel's)."""
    return _rowwise(_jsd.jensen_shannon_with_logits, student, [(teacher, None, "full")], axis,
                    reduction, ("batchmean", "mean", "sum", "none"),
                    {"batchmean": 1, "mean": _axis_size(student, axis)},
                    kw={"beta": beta, "temperature": temperature})


def _axis_size(x: Any, axis: int) -> int:
    shape = np.shape(x)
    return shape[axis] if shape and isinstance(axis, (int, np.integer)) and \
        -len(shape) <= axis < len(shape) else 1


def generalized_kl_div(input: Any, target: Any, *, axis: int = -1,
                       reduction: str = "mean") -> da.Array:
    """Generalized KL divergence of unnormalized measures (optax's), summed over ``axis``
    (an int, lazily)."""
    return _rowwise(_pairs.generalized_kl_div, input, [(target, None, "full")], axis,
                    reduction)


def multilabel_soft_margin_loss(input: Any, target: Any, *, weight: Any = None,
                                reduction: str = "mean") -> da.Array:
    """Multi-label one-versus-all logistic loss (torch's), classes on the last axis."""
    return _rowwise(_multilabel.multilabel_soft_margin_loss, input,
                    [(target, None, "full"), (weight, "weight", "full")], None, reduction)


def multilabel_margin_loss(input: Any, target: Any, *, reduction: str = "mean") -> da.Array:
    """Multi-class multi-label hinge loss (torch's), classes on the last axis."""
    return _rowwise(_multilabel.multilabel_margin_loss, input, [(target, None, "full")],
                    None, reduction)


def cosine_embedding_loss(input1: Any, input2: Any, target: Any, *, margin: float = 0.0,
                          reduction: str = "mean") -> da.Array:
    """Cosine embedding loss (torch's), embeddings on the last axis, a label per pair."""
    return _rowwise(_pairs.cosine_embedding_loss, input1,
                    [(input2, None, "full"), (target, None, "rows")], None, reduction,
                    kw={"margin": margin})


def _live_lists(scores, labels, where=None):
    """The lists optax's mean counts: those with an item (``where`` true somewhere)."""
    if where is None:
        return int(np.prod(scores.shape[:-1])) if scores.shape[-1] else 0
    return int(np.count_nonzero(np.asarray(where).any(axis=-1)))


def ranking_softmax_loss(scores: Any, labels: Any, *, where: Any = None,
                         reduction: str = "mean") -> da.Array:
    """Listwise softmax ranking loss (optax's), lists on the last axis."""
    return _rowwise(_ranking.ranking_softmax_loss, scores,
                    [(labels, None, "full"), (where, "where", "full")], None, reduction,
                    count=_live_lists if where is not None else None)


# One example per lazy function of issue 16: the lazy result equals the eager one.
_EXAMPLE = """
    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, fastloss as fl, fastloss.dask as fld
    >>> x = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.5, -2.0, 0.25], [0.5, 0.5, 1.0]])
    >>> y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> X = da.from_array(x, chunks=(2, 3))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     bool(np.isclose(fld.{name}(X, {args}).compute(), fl.{name}(x, {args})))
    True
"""
_EXAMPLE_ARGS = {
    "margin_ranking_loss": "-x, np.sign(y - 0.5)",
    "gaussian_nll_loss": "y, y + 0.5",
    "multiclass_hinge_loss": "np.array([0, 2, 1, 0])",
    "multiclass_perceptron_loss": "np.array([0, 2, 1, 0])",
    "sparsemax_loss": "np.array([0, 2, 1, 0])",
    "kl_div_with_logits": "2 * y",
    "jensen_shannon_with_logits": "2 * y",
    "generalized_kl_div": "y",
    "multilabel_soft_margin_loss": "y",
    "multilabel_margin_loss": "np.array([[0, -1, -1], [2, 1, -1], [1, -1, -1], [0, 2, -1]])",
    "cosine_embedding_loss": "x[::-1], np.array([1, -1, 1, -1])",
    "ranking_softmax_loss": "y",
}


for _f, _first, _axis, _others, _mean in (
    (multiclass_hinge_loss, "scores", "class ``axis``",
     "``target`` (class indices) has the shape of the rows and is chunked like them.",
     "``\"mean\"`` over rows; "),
    (multiclass_perceptron_loss, "scores", "class ``axis``",
     "``target`` (class indices) has the shape of the rows and is chunked like them.",
     "``\"mean\"`` over rows; "),
    (sparsemax_loss, "logits", "class ``axis``",
     "``target``: class indices in the shape of the rows, or distributions that broadcast "
     "to ``logits``.", "``\"mean\"`` over rows; "),
    (kl_div_with_logits, "student_logits", "class ``axis``",
     "``teacher_logits`` broadcasts to ``student_logits``.",
     "``\"batchmean\"`` over rows, ``\"mean\"`` over elements; "),
    (jensen_shannon_with_logits, "student", "class ``axis``",
     "``teacher`` broadcasts to ``student``.",
     "``\"batchmean\"`` over rows, ``\"mean\"`` over elements; "),
    (generalized_kl_div, "input", "``axis``", "``target`` broadcasts to ``input``.",
     "``\"mean\"`` over rows; "),
    (multilabel_soft_margin_loss, "input", "last (class) axis",
     "``target`` and ``weight`` broadcast to ``input``.", "``\"mean\"`` over rows; "),
    (multilabel_margin_loss, "input", "last (class) axis",
     "``target`` has ``input``'s shape.", "``\"mean\"`` over rows; "),
    (cosine_embedding_loss, "input1", "last (embedding) axis",
     "``input2`` broadcasts to ``input1``; ``target`` has the shape of the rows.",
     "``\"mean\"`` over pairs; "),
    (ranking_softmax_loss, "scores", "last (list) axis",
     "``labels`` and ``where`` broadcast to ``scores``.",
     "``\"mean\"`` over the lists with an item, 0 if none; "),
):
    _f.__doc__ = _f.__doc__ + "\n" + _ROWWISE_DOC.format(
        name=_f.__name__, first=_first, axis=_axis, others=_others, mean=_mean)
del _f, _first, _axis, _others, _mean
for _f in (margin_ranking_loss, gaussian_nll_loss, multiclass_hinge_loss,
           multiclass_perceptron_loss, sparsemax_loss, kl_div_with_logits,
           jensen_shannon_with_logits, generalized_kl_div, multilabel_soft_margin_loss,
           multilabel_margin_loss, cosine_embedding_loss, ranking_softmax_loss):
    _f.__doc__ += _EXAMPLE.format(name=_f.__name__, args=_EXAMPLE_ARGS[_f.__name__])
del _f
