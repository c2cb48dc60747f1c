"""Cross-entropy at scale: vocabulary-sharded statistics, and a linear cross-entropy that never
materialises the logits.

Vocabulary parallelism. When the class axis (the vocabulary) is split across devices or
processes, each one holds a shard of every row's logits. The cross-entropy of the full rows
needs only a few numbers per row from each shard (:func:`cross_entropy_stats`): the shard's
maximum, its sum of ``exp(x - max)``, the target's logit where the target falls in the shard,
and the sum of the logits (for label smoothing). Shards are combined by an associative,
commutative reduction (:func:`reduce_cross_entropy_stats`: the elementwise maximum of the
maxima, the other sums rescaled to it and added), so any all-reduce will do; then
:func:`merge_cross_entropy_stats` gives exact per-row losses and the per-row ``lse``, and
:func:`cross_entropy_grad_from_stats` gives each shard its slice of the gradient, one pass over
the shard. One all-reduce of O(rows) numbers per step; no shard ever sees another's logits.

With an all-reduce that takes only built-in operations (MPI, ``torch.distributed``), reduce in
two collectives: MAX of ``max``, then SUM of the rescaled sums (simulated here for two ranks):

>>> import numpy as np, fastloss as fl
>>> rng = np.random.default_rng(0)
>>> logits, target = rng.normal(size=(4, 10)), np.array([1, 9, 5, -100])
>>> local = [fl.cross_entropy_stats(logits[:, :6], target),
...          fl.cross_entropy_stats(logits[:, 6:], target, class_offset=6)]
>>> M = np.maximum(local[0].max, local[1].max)                     # all-reduce MAX
>>> def rescaled(st):  # the sums relative to M (a shard row of all -inf has sumexp 0)
...     f = np.where(st.max == M, 1.0, np.exp(st.max - M))
...     return np.stack([st.sumexp * f, st.target_logit, st.has_target, st.sum_logits])
>>> S = rescaled(local[0]) + rescaled(local[1])                    # all-reduce SUM
>>> mine = local[0]  # on each rank: its own statistics, replaced by the reduced ones
>>> reduced = mine._replace(max=M, sumexp=S[0], target_logit=S[1],
...                         has_target=S[2].astype(bool), sum_logits=S[3], n_classes=10)
>>> merged = fl.merge_cross_entropy_stats(reduced, reduction="mean")
>>> bool(np.isclose(merged.loss, fl.cross_entropy(logits, target), rtol=1e-14))
True

Linear cross-entropy. :func:`linear_cross_entropy` computes the cross-entropy of
``hidden @ weight.T`` (a language model's output layer) chunk by chunk over the vocabulary
with these statistics, so the (N, V) logits never exist at once.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import _core
from ._validation import (
    GradTarget,
    as3d,
    check_grad_out_given,
    check_int,
    check_real,
    check_reduction,
    class_targets,
    deliver_grads,
    float_input,
    grad_buffers,
    normalize_axis,
    reduce_rows,
)
from .classification import _check_z_softcap

__all__ = [
    "CrossEntropyStats",
    "MergedCrossEntropy",
    "cross_entropy_grad_from_stats",
    "cross_entropy_stats",
    "linear_cross_entropy",
    "merge_cross_entropy_stats",
    "reduce_cross_entropy_stats",
]

_INT64_MAX = np.iinfo(np.int64).max


class CrossEntropyStats(NamedTuple):
    """Per-row statistics of the logits of one or more shards of the class axis.

    Every array has the rows' shape (the logits' shape without the class axis). With ``x`` the
    shard's logits (after soft-capping, when ``softcap`` is given) and ``t`` the row's target:
    """

    max: np.ndarray
    """float64: the row's maximum over the shard's classes (-inf for a width-0 shard, NaN if
    the row has a NaN)."""
    sumexp: np.ndarray
    """float64: ``sum_j exp(x_j - max)`` over the shard's classes **other than the target**
    (over all of them where the target falls elsewhere or is ignored). The target's own term
    is ``exp(target_logit - max)``; it is kept apart so that a confident row (target = maximum)
    keeps its small loss to full relative accuracy (``log1p`` of the rest, as
    :func:`fastloss.cross_entropy`). The shard's logsumexp is
    ``max + log(sumexp + has_target * exp(target_logit - max))``."""
    target_logit: np.ndarray
    """float64: the target's logit where the target falls in the shard, else 0."""
    has_target: np.ndarray
    """bool: whether the row's target falls in the shard."""
    sum_logits: np.ndarray
    """float64: ``sum_j x_j`` over the shard's classes (-inf with a -inf logit)."""
    n_classes: int
    """The number of classes the statistics cover (the shard's width; summed by the reduce)."""
    target: np.ndarray
    """int64: the rows' global class indices, a private copy of the ``target`` given to
    :func:`cross_entropy_stats` (later changes to the caller's array do not reach it). Statistics
    are reduced only with statistics of the same targets."""


class MergedCrossEntropy(NamedTuple):
    """What :func:`merge_cross_entropy_stats` returns."""

    loss: Any
    """The loss for the chosen reduction: float64 per-row losses (``"none"``, the rows' shape;
    0 for ignored rows) or a float64 NumPy scalar."""
    lse: np.ndarray
    """float64, the rows' shape: the logsumexp of each full row (of the capped logits with
    ``softcap``), what the gradient step needs."""
    stats: CrossEntropyStats
    """The statistics of all shards, reduced into one."""


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _global_targets(target: Any, row_shape: tuple, ignore_index: int, name: str = "target"):
    """Integer class indices of the rows' shape as a fresh int64 array (flat, C order).

    A shard cannot tell an index past the vocabulary from one in another shard, so only
    negative indices (other than ignore_index) are rejected here; the merge rejects indices
    that fall in no shard."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.shape != row_shape:
        raise ValueError(f"{name} has shape {t.shape} but class indices must have the logits' "
                         f"shape without the class axis: {row_shape}")
    if t.dtype.kind == "u" and t.size and t.max() > _INT64_MAX:
        raise IndexError(f"{name} holds class indices too large for int64")
    flat = np.array(t, dtype=np.int64).reshape(-1)  # (np.array: always a copy)
    bad = (flat < 0) & (flat != ignore_index)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        pos = ", ".join(str(int(k)) for k in np.unravel_index(i, row_shape)) if row_shape else ""
        raise IndexError(f"{name}[{pos}] = {flat[i]} is negative: class indices must be >= 0 "
                         f"or equal ignore_index={ignore_index}")
    return flat


def _class_offset(class_offset: Any, width: int) -> int:
    off = check_int(class_offset, "class_offset")
    if off < 0:
        raise ValueError(f"class_offset must be >= 0 (the global index of the shard's first "
                         f"class), got {off}")
    if off > _INT64_MAX - width:
        raise ValueError(f"class_offset={off} is too large: the shard's classes must have int64 "
                         "indices")
    return off


def _shard_input(logits: Any, axis: Any):
    x = float_input(logits, "logits")
    if x.array.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, x.array.ndim)
    return x, ax, x.array.shape[:ax] + x.array.shape[ax + 1 :]


def _softcap(softcap: Any, dtype: Any = None) -> float:
    return _check_z_softcap(0.0, softcap, dtype)[1]


def _as_stats(s: Any, name: str) -> CrossEntropyStats:
    """Validate (and normalise the dtypes of) statistics given by the caller."""
    if not isinstance(s, CrossEntropyStats):
        raise TypeError(f"{name} must be a CrossEntropyStats (from cross_entropy_stats), got "
                        f"{type(s).__name__}")
    f = [np.asarray(getattr(s, k), dtype=np.float64)
         for k in ("max", "sumexp", "target_logit", "sum_logits")]
    has = np.asarray(s.has_target)
    target = np.asarray(s.target)
    if has.dtype != np.bool_:
        if not (np.issubdtype(has.dtype, np.number) and np.isin(has, (0, 1)).all()):
            raise ValueError(f"{name}.has_target must be boolean (or 0/1)")
        has = has.astype(bool)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}.target must hold integer class indices, got dtype {target.dtype}")
    shape = f[0].shape
    for k, a in zip(("sumexp", "target_logit", "sum_logits", "has_target", "target"),
                    (f[1], f[2], f[3], has, target)):
        if a.shape != shape:
            raise ValueError(f"{name}.{k} has shape {a.shape}, but {name}.max has {shape}: every "
                             "field must have the rows' shape")
    n = check_int(s.n_classes, f"{name}.n_classes")
    if n < 0:
        raise ValueError(f"{name}.n_classes must be >= 0, got {n}")
    return CrossEntropyStats(f[0], f[1], f[2], has, f[3], n, target.astype(np.int64, copy=False))


# ---------------------------------------------------------------------------------------------
# The statistics of one shard (C++), their reduction and merge (NumPy over rows)
# ---------------------------------------------------------------------------------------------
def _shard_stats(x3: np.ndarray, flat: np.ndarray, offset: int, ignore_index: int,
                 cap: float) -> tuple:
    """(max, sumexp, target_logit, has_target, sum_logits), flat, of a (n0, V, n2) shard."""
    rows = flat.size
    out = [np.empty(rows) for _ in range(4)]
    has = np.zeros(rows, dtype=np.uint8)
    if x3.shape[1] == 0:  # a shard without classes: the identity of the reduction
        out[0].fill(-np.inf)
        for a in out[1:]:
            a.fill(0.0)
    else:
        _core.ce_shard_stats(x3, flat, offset, ignore_index, cap, out[0], out[1], out[2],
                             out[3], has)
    return out[0], out[1], out[2], has.view(bool), out[3]


def _rescale(m_k: np.ndarray, m: np.ndarray) -> np.ndarray:
    """exp(m_k - m) for m >= m_k; 1 where they are equal (also both -inf); NaN propagates."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(m_k == m, 1.0, np.exp(m_k - m))


def _reduce(a: CrossEntropyStats, b: CrossEntropyStats) -> CrossEntropyStats:
    m = np.maximum(a.max, b.max)  # NaN propagates
    with np.errstate(invalid="ignore"):
        s = a.sumexp * _rescale(a.max, m) + b.sumexp * _rescale(b.max, m)
        return CrossEntropyStats(m, s, np.where(a.has_target, a.target_logit, b.target_logit),
                                 a.has_target | b.has_target, a.sum_logits + b.sum_logits,
                                 a.n_classes + b.n_classes, a.target)


def _row_parts(st: CrossEntropyStats):
    """Per row: M, x_t (-inf without target), e_t = exp(x_t - M), S = sum of all exps relative
    to M, log S (log1p of the rest when the target is the maximum), lse = M + log S."""
    m = st.max
    xt = np.where(st.has_target, st.target_logit, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e_t = np.where(st.has_target, np.exp(xt - m), 0.0)
        s = st.sumexp + e_t
        log_s = np.where(st.has_target & (xt == m), np.log1p(st.sumexp), np.log(s))
        lse = m + log_s
    return m, xt, e_t, s, log_s, lse


def _check_coverage(st: CrossEntropyStats, valid: np.ndarray, ignore_index: int) -> None:
    missing = valid & ~st.has_target
    if missing.any():
        i = int(np.flatnonzero(missing.reshape(-1))[0])
        shape = st.target.shape
        pos = ", ".join(str(int(k)) for k in np.unravel_index(i, shape)) if shape else ""
        raise IndexError(
            f"target[{pos}] = {st.target.reshape(-1)[i]} falls in no shard: the statistics cover "
            f"{st.n_classes} classes, so class indices must be in [0, {st.n_classes - 1}] or equal "
            f"ignore_index={ignore_index} (or a shard is missing from the reduction)")


def _merged_rows(st: CrossEntropyStats, valid: np.ndarray, eps: float, z: float):
    """Per-row losses (0 where not valid) and lse, from reduced statistics."""
    m, xt, _, _, log_s, lse = _row_parts(st)
    C = st.n_classes
    with np.errstate(invalid="ignore", over="ignore"):
        # -log p_t = (M - x_t) + log S
        loss = (1.0 - eps) * ((m - xt) + log_s)
        if eps and C:
            # (eps / C) sum_c -log p_c = (eps / C) (sum_c (M - x_c) + C log S),
            # sum_c (M - x_c) = C M - sum_logits (+inf with a -inf logit)
            loss = loss + (eps / C) * ((C * m - st.sum_logits) + C * log_s)
        if z:  # PaLM's z-loss: z lse^2
            loss = loss + z * lse * lse
        loss = np.where(np.isfinite(m), loss, np.nan)  # NaN, +inf or all -inf: NaN
    return np.where(valid, loss, 0.0), lse


def _grad_coefs(st: CrossEntropyStats, g: float, eps: float, z: float):
    """(ref, p_coef, t_value, u) of the C++ gradient kernel; see cross_entropy_grad_from_stats."""
    m, _, e_t, s, _, lse = _row_parts(st)
    C = st.n_classes
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        a = g * (1.0 + 2.0 * z * lse) if z else np.full(m.shape, g)  # coefficient of p_j
        b = g * (1.0 - eps)  # of -[j == t]
        a_b = g * (eps + 2.0 * z * lse) if z else g * eps  # a - b, without cancellation
        u = g * eps / C if C else 0.0  # of -1 (label smoothing)
        omp, p_t = st.sumexp / s, e_t / s  # 1 - p_t without cancellation, p_t
        # a p_t - b - u = -b (1 - p_t) + (a - b) p_t - u
        t_value = -b * omp + a_b * p_t - u
        p_coef = a / s
    flat = lambda v: np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    return flat(np.where(np.isfinite(m), m, np.nan)), flat(p_coef), flat(t_value), float(u)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def cross_entropy_stats(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    class_offset: int = 0,
    ignore_index: int = -100,
    softcap: Any = None,
) -> CrossEntropyStats:
    """Per-row cross-entropy statistics of one shard of the class axis.

    ``logits`` holds the classes ``class_offset`` to ``class_offset + logits.shape[axis] - 1``
    of every row; ``target`` holds the rows' *global* class indices. Computed in C++, one pass
    over each row (the blockwise online maximum and sum of exps of
    :func:`fastloss.cross_entropy`), float32 and 16-bit logits accumulated in float64, any
    dtype, strides and ``axis`` as :func:`fastloss.cross_entropy`.

    Parameters
    ----------
    logits : array_like
        The shard's logits; the class axis may have any width, including 0.
    target : array_like of int
        Global class indices, the logits' shape without ``axis``. Indices outside the shard
        are fine (they belong to other shards); negative ones other than ``ignore_index``
        raise IndexError (an index past the whole vocabulary is caught by the merge).
    axis : int
        The class axis.
    class_offset : int >= 0
        The global class index of the shard's first class.
    ignore_index : int
        Targets equal to this fall in no shard (the merge gives them loss 0).
    softcap : float > 0, optional
        Gemma 2's soft-capping, ``softcap * tanh(x / softcap)``, applied to the logits first
        (every statistic is of the capped logits; pass the same value to the gradient).

    Returns
    -------
    CrossEntropyStats
        ``max``, ``sumexp`` (without the target's own term, see :class:`CrossEntropyStats`),
        ``target_logit``, ``has_target``, ``sum_logits``, ``n_classes`` (the shard width) and
        ``target`` (a private int64 copy of ``target``).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> lo = fl.cross_entropy_stats(x[:, :2], [3])
    >>> hi = fl.cross_entropy_stats(x[:, 2:], [3], class_offset=2)
    >>> hi.max, hi.sumexp, hi.target_logit, hi.has_target   # 3 - 4 = -1: sumexp e^-1
    (array([4.]), array([0.36787944]), array([4.]), array([ True]))
    >>> merged = fl.merge_cross_entropy_stats([lo, hi])
    >>> float(merged.loss[0]) == float(fl.cross_entropy(x, [3]))
    True
    """
    x, ax, row_shape = _shard_input(logits, axis)
    ignore_index = check_int(ignore_index, "ignore_index")
    width = x.array.shape[ax]
    off = _class_offset(class_offset, width)
    cap = _softcap(softcap, x.compute_dtype)
    flat = _global_targets(target, row_shape, ignore_index)
    m, s, tl, has, sl = _shard_stats(as3d(x.array, ax), flat, off, ignore_index, cap)
    r = lambda a: a.reshape(row_shape)
    return CrossEntropyStats(r(m), r(s), r(tl), r(has), r(sl), width, r(flat))


def reduce_cross_entropy_stats(a: CrossEntropyStats, b: CrossEntropyStats) -> CrossEntropyStats:
    """Combine the statistics of two disjoint sets of classes of the same rows.

    ``max`` is the elementwise maximum; ``sumexp`` is ``a.sumexp * exp(a.max - max) +
    b.sumexp * exp(b.max - max)``; ``target_logit`` is the one of the side holding the target;
    ``has_target`` is ``a.has_target | b.has_target``; ``sum_logits`` and ``n_classes`` add.
    Associative and commutative (commutative exactly, associative to float64 rounding), with
    the statistics of a width-0 shard as identity, so it can be the operation of any reduction
    or all-reduce (``functools.reduce``, Dask's ``reduction``, an MPI user operation).

    Raises ValueError if ``a`` and ``b`` differ in shape or in targets, or if both hold the
    target of some row (overlapping shards, or a shard counted twice).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.array([[0.0, 5.0, -1.0, 2.0]])
    >>> a = fl.cross_entropy_stats(x[:, :2], [2])
    >>> b = fl.cross_entropy_stats(x[:, 2:], [2], class_offset=2)
    >>> ab = fl.reduce_cross_entropy_stats(a, b)
    >>> float(ab.max[0]), float(ab.target_logit[0]), ab.n_classes   # 5 and x[2] = -1
    (5.0, -1.0, 4)
    >>> bool(np.isclose(ab.sumexp[0], np.exp(-5) + 1 + np.exp(-3)))  # all but the target
    True
    """
    a, b = _as_stats(a, "a"), _as_stats(b, "b")
    if a.max.shape != b.max.shape:
        raise ValueError(f"a and b are statistics of rows of different shapes: {a.max.shape} "
                         f"and {b.max.shape}")
    if not np.array_equal(a.target, b.target):
        raise ValueError("a and b hold different targets: statistics can only be reduced with "
                         "statistics of the same rows and targets")
    both = a.has_target & b.has_target
    if both.any():
        i = int(np.flatnonzero(both.reshape(-1))[0])
        raise ValueError(f"the target of row {i} ({a.target.reshape(-1)[i]}) falls in both a "
                         "and b: the shards overlap, or one was counted twice")
    return _reduce(a, b)


def _reduce_all(stats: Any) -> CrossEntropyStats:
    if isinstance(stats, CrossEntropyStats):
        return _as_stats(stats, "stats")
    if not isinstance(stats, (list, tuple)) or not stats:
        raise TypeError("stats must be a CrossEntropyStats or a non-empty list of them, got "
                        f"{type(stats).__name__}" + (" (empty)" if isinstance(stats, (list, tuple)) else ""))
    return functools.reduce(reduce_cross_entropy_stats, stats)


def merge_cross_entropy_stats(
    stats: Union[CrossEntropyStats, Sequence[CrossEntropyStats]],
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "none",
    ignore_index: int = -100,
) -> MergedCrossEntropy:
    """Exact cross-entropy of the full rows from the statistics of all their shards.

    Equal, to float64 rounding, to ``fastloss.cross_entropy(full_logits, target,
    label_smoothing=..., z_loss=..., reduction=..., ignore_index=..., softcap=...)`` of the
    concatenated shards (with the ``softcap`` the statistics were computed with), without class
    weights. With ``M`` the rows' maximum, ``S' = sumexp`` and ``x_t`` the target logit,
    ``S = S' + exp(x_t - M)`` and ``log S = log1p(S')`` when ``x_t = M``:

    - ``-log p_t = (M - x_t) + log S``, ``lse = M + log S``
    - loss ``= (1 - eps) (-log p_t) + (eps / C) (C M - sum_logits + C log S) + z lse^2``

    Parameters
    ----------
    stats : CrossEntropyStats or list of them
        The statistics of every shard (reduced here with :func:`reduce_cross_entropy_stats`),
        or statistics already reduced (for instance all-reduced across processes). The shards
        must be disjoint and cover the vocabulary; ``C`` is the sum of their widths.
    label_smoothing : float in [0, 1]
    z_loss : float >= 0
        As :func:`fastloss.cross_entropy`.
    reduction : {"none", "mean", "sum"}
        ``"mean"`` divides by the number of non-ignored rows.
    ignore_index : int
        The value the statistics were computed with.

    Returns
    -------
    MergedCrossEntropy
        ``loss`` (float64; per row for ``"none"``), ``lse`` (float64 per-row logsumexp of the
        full rows, for the gradient) and ``stats`` (the reduced statistics).

    Raises IndexError when a non-ignored row's target falls in no shard (an index past the
    vocabulary, or a missing shard). Rows with NaN, ``+inf`` or only ``-inf`` logits have loss
    NaN; a ``-inf`` target logit gives ``+inf``, as :func:`fastloss.cross_entropy`.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x, t = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]), np.array([0, 1])
    >>> shards = [fl.cross_entropy_stats(x[:, :1], t),
    ...           fl.cross_entropy_stats(x[:, 1:], t, class_offset=1)]
    >>> m = fl.merge_cross_entropy_stats(shards, reduction="mean")
    >>> round(float(m.loss), 6), round(float(fl.cross_entropy(x, t)), 6)
    (0.31854, 0.31854)
    """
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z, _ = _check_z_softcap(z_loss, None)
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    st = _reduce_all(stats)
    valid = st.target != ignore_index
    _check_coverage(st, valid, ignore_index)
    per_row, lse = _merged_rows(st, valid, eps, z)
    denom = float(np.count_nonzero(valid))
    loss = reduce_rows(per_row.reshape(-1), reduction, denom, st.target.shape,
                       np.dtype(np.float64))
    return MergedCrossEntropy(loss, lse, st)


def cross_entropy_grad_from_stats(
    logits_shard: Any,
    target: Any,
    merged: Union[MergedCrossEntropy, CrossEntropyStats],
    *,
    axis: int = -1,
    class_offset: int = 0,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    reduction: str = "mean",
    grad_out: Any = None,
) -> np.ndarray:
    """This shard's slice of the gradient of the full rows' cross-entropy.

    The columns ``class_offset ..`` of ``fastloss.cross_entropy(full_logits, target, ...,
    return_grad=True)[1]``, from the shard's logits and the merged statistics of all shards,
    in one pass over the shard (C++). Per row, with ``p_j = exp(x_j - lse)`` and ``g`` the
    reduction's scale (``1 / (number of non-ignored rows)`` for ``"mean"``, else 1)::

        dloss/dx_j = g ((1 + 2 z lse) p_j - (1 - eps) [j == t] - eps / C)

    (times ``1 - tanh^2(x_j / softcap)`` with soft-capping), the target's entry computed
    without cancellation (``1 - p_t`` from the other classes' sum). Ignored rows get 0.

    Parameters
    ----------
    logits_shard : array_like
        The shard's logits, as given to :func:`cross_entropy_stats`.
    target : array_like of int
        The rows' global class indices (the same as in the statistics).
    merged : MergedCrossEntropy or CrossEntropyStats
        The result of :func:`merge_cross_entropy_stats`, or the already reduced statistics.
    axis, class_offset, ignore_index, softcap
        As :func:`cross_entropy_stats` for this shard.
    label_smoothing, z_loss, reduction
        The loss to differentiate, as :func:`merge_cross_entropy_stats` (``reduction``
        defaults to ``"mean"`` here, the training case).
    grad_out : ndarray, optional
        Where to write the gradient (the shard's shape and dtype); may be ``logits_shard``
        itself (in place).

    Returns
    -------
    ndarray
        The gradient slice, the shard's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x, t = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]), np.array([0, 1])
    >>> shards = [(x[:, :1], 0), (x[:, 1:], 1)]
    >>> m = fl.merge_cross_entropy_stats(
    ...     [fl.cross_entropy_stats(s, t, class_offset=o) for s, o in shards])
    >>> g = np.concatenate([fl.cross_entropy_grad_from_stats(s, t, m, class_offset=o)
    ...                     for s, o in shards], axis=1)
    >>> bool(np.allclose(g, fl.cross_entropy(x, t, return_grad=True)[1], rtol=1e-14))
    True
    """
    x, ax, row_shape = _shard_input(logits_shard, axis)
    ignore_index = check_int(ignore_index, "ignore_index")
    width = x.array.shape[ax]
    off = _class_offset(class_offset, width)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z, cap = _check_z_softcap(z_loss, softcap, x.compute_dtype)
    reduction = check_reduction(reduction)
    if grad_out is not None and not isinstance(grad_out, np.ndarray):
        raise TypeError(f"grad_out must be a numpy.ndarray, got {type(grad_out).__name__}")
    if isinstance(merged, MergedCrossEntropy):
        st = _as_stats(merged.stats, "merged.stats")
    elif isinstance(merged, CrossEntropyStats):
        st = _as_stats(merged, "merged")
    else:
        raise TypeError("merged must be the MergedCrossEntropy of merge_cross_entropy_stats (or "
                        f"reduced CrossEntropyStats), got {type(merged).__name__}")
    flat = _global_targets(target, row_shape, ignore_index)
    if st.target.shape != row_shape:
        raise ValueError(f"the merged statistics are of rows of shape {st.target.shape}, but the "
                         f"shard's rows have shape {row_shape}")
    if not np.array_equal(st.target.reshape(-1), flat):
        raise ValueError("target differs from the targets the statistics were computed with")
    if off + width > st.n_classes:
        raise ValueError(f"the shard's classes [{off}, {off + width}) extend past the "
                         f"{st.n_classes} classes of the merged statistics (class_offset or the "
                         "shard width is wrong, or a shard is missing from the statistics)")
    valid = st.target != ignore_index
    _check_coverage(st, valid, ignore_index)
    denom = np.count_nonzero(valid)
    g = (1.0 / denom if denom else 0.0) if reduction == "mean" else 1.0
    x3 = as3d(x.array, ax)
    grad = GradTarget(grad_out, x, ax, (x3,))
    if width:
        ref, p_coef, t_value, u = _grad_coefs(st, g, eps, z)
        _core.ce_shard_grad(x3, flat, off, ignore_index, cap, ref, p_coef, t_value, u, grad.core)
    return grad.result()


# ---------------------------------------------------------------------------------------------
# Linear cross-entropy
# ---------------------------------------------------------------------------------------------
# Default bound on the logits buffer, in elements (128 MB of float32): rows are taken in blocks
# of max(1, _BUFFER_ELEMENTS // min(chunk_size, V)).
_BUFFER_ELEMENTS = 1 << 25
# Classes per product when d_weight accumulates over row blocks (bounds its temporary).
_DW_BLOCK = 8192


class _LinearProblem(NamedTuple):
    """linear_cross_entropy's arguments, checked and flattened to the 2-d case."""

    H: np.ndarray  # (N, D), compute dtype
    W: np.ndarray  # (V, D) = weight (C, d1..dK, D) with its class and position axes flattened
    B: Optional[np.ndarray]  # (V,) or None
    n_classes: int  # C
    positions: int  # P = d1 * ... * dK (1 without out_features)
    row_shape: tuple  # the loss's shape with "none": (N, d1..dK), () for a 1-d hidden
    flat: Optional[np.ndarray]  # int64 class indices, (N * P,) in C order of row_shape
    valid: Optional[np.ndarray]  # bool, (N * P,): not ignore_index
    probs: Optional[np.ndarray]  # (N, C, P) class probabilities, compute dtype
    class_weight: Optional[np.ndarray]  # (C,), compute dtype
    denom: float  # the mean's denominator


def _linear_problem(hidden, weight, target, bias, class_weight, ignore_index) -> tuple:
    h = float_input(hidden, "hidden")
    w = float_input(weight, "weight")
    if h.array.ndim not in (1, 2):
        raise ValueError(f"hidden must be (D,) or (N, D), got shape {h.array.shape}")
    if w.array.ndim < 2:
        raise ValueError(f"weight must be (C, D) or (C, d1, ..., dK, D), got shape "
                         f"{w.array.shape}")
    D, C, out_features = h.array.shape[-1], w.array.shape[0], w.array.shape[1:-1]
    if w.array.shape[-1] != D:
        raise ValueError(f"hidden is (N, D) = {h.array.shape} and weight (C, ..., D) = "
                         f"{w.array.shape}: their D differ")
    if C == 0:
        raise ValueError("weight has 0 rows: there are no classes")
    if 0 in out_features:
        raise ValueError(f"weight has shape {w.array.shape}: its position axes "
                         f"d1, ..., dK = {out_features} must not be empty")
    if out_features and h.array.ndim == 1:
        raise ValueError(f"a weight with position axes ({w.array.shape}, K-dimensional loss) "
                         f"needs a batched hidden (N, D), got shape {h.array.shape}")
    P = math.prod(out_features)
    b = None
    if bias is not None:
        b = float_input(bias, "bias")
        if b.array.shape != (C, *out_features):
            raise ValueError(f"bias must have shape {(C, *out_features)} (one per class and "
                             f"position), got {b.array.shape}")
    inputs = [h, w] + ([b] if b is not None else [])
    cdt = np.dtype(np.float64 if any(i.compute_dtype == np.float64 for i in inputs)
                   else np.float32)
    cw = None
    if class_weight is not None:
        cw = float_input(class_weight, "class_weight").array
        if cw.shape != (C,):
            raise ValueError(f"class_weight must have shape ({C},) (one weight per class), got "
                             f"{cw.shape}")
        cw = np.require(cw, cdt, ["C", "A"])
    H = h.array.reshape(-1, D).astype(cdt, copy=False)
    N = H.shape[0]
    logits_shape = (N, C, *out_features) if h.array.ndim == 2 else (C,)
    row_shape = (N, *out_features) if h.array.ndim == 2 else ()
    t = np.asarray(target)
    flat = valid = probs = None
    if t.dtype.kind in "iu":
        ct = class_targets(t, logits_shape, 1 if h.array.ndim == 2 else 0, ignore_index)
        flat, valid = ct.flat, ct.valid
        denom = float(np.count_nonzero(valid) if cw is None
                      else np.sum(cw[flat[valid]], dtype=np.float64))
    elif t.dtype.kind == "f" or t.dtype.name == "bfloat16":
        if t.shape != logits_shape:
            raise ValueError(f"target has a floating dtype ({t.dtype}), so it is read as class "
                             f"probabilities and must have the logits' shape {logits_shape}, "
                             f"got {t.shape}; class indices must have an integer dtype")
        probs = np.asarray(t, dtype=cdt).reshape(N, C, P)
        denom = float(N * P)
    elif t.dtype.kind == "b":
        raise TypeError("target is boolean; class indices must be integers (or float "
                        "probabilities)")
    else:
        raise TypeError(f"target has unsupported dtype {t.dtype}; use integer class indices or "
                        "float class probabilities")
    W = w.array.reshape(C * P, D).astype(cdt, copy=False)
    B = b.array.reshape(C * P).astype(cdt, copy=False) if b is not None else None
    prob = _LinearProblem(H, W, B, C, P, row_shape, flat, valid, probs, cw, denom)
    return prob, (h, w, b)


def linear_cross_entropy(
    hidden: Any,
    weight: Any,
    target: Any,
    *,
    bias: Any = None,
    class_weight: Any = None,
    chunk_size: int = 8192,
    row_chunk_size: Optional[int] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` without materialising the logits.

    Equal, to float rounding, to ``fastloss.cross_entropy(hidden @ weight.T + bias, target,
    ...)``, for a language model's output layer: ``hidden`` (N, D), ``weight`` (V, D), the
    (N, V) logits never exist at once. Also the cases of PyTorch 2.13's
    ``F.linear_cross_entropy`` (with ``class_weight`` for its ``weight``): a 1-d ``hidden``
    (D,) (one sample: a 0-d target, a 0-d loss, a (D,) gradient), a multi-dimensional
    ``weight`` (C, d1, ..., dK, D) for a K-dimensional loss (logits (N, C, d1, ..., dK),
    ``logits[n, c, k] = hidden[n] . weight[c, k] + bias[c, k]``, the class axis 1, targets
    (N, d1, ..., dK)), class weights and probability targets.

    Rows are taken in blocks of ``R`` rows; for each block:

    1. for each chunk of ``chunk_size`` classes: the chunk's logits ``hidden_b @ W_c.T + b_c``
       by one BLAS matrix product (NumPy ``matmul``) into a reused buffer, then their
       statistics (:func:`cross_entropy_stats` with ``class_offset``), reduced across chunks;
    2. merge: the block's per-row losses and ``lse`` (:func:`merge_cross_entropy_stats`);
    3. with ``return_grad``, a second sweep: each chunk's logits are recomputed, turned into
       the chunk's gradient of the logits in place (:func:`cross_entropy_grad_from_stats`),
       and ``d_hidden_b += G_c @ W_c``, ``d_weight[c] += G_c.T @ hidden_b``,
       ``d_bias[c] += G_c.sum(0)``.

    When one chunk covers the vocabulary (``chunk_size >= V``), each block's logits are
    computed once and :func:`fastloss.cross_entropy` gives loss and gradient in one fused pass
    (Liger-Kernel's row-chunked strategy; no recomputation). With class weights, probability
    targets or a multi-dimensional ``weight``, the blocks always hold whole rows (all
    ``C * d1 * ... * dK`` logits of a sample) and go through that fused pass, with the rows
    per block cut so that the buffer keeps the size it would have had with ``chunk_size``
    (at least one row). Compute cost: loss only, one (N, D) x (D, V) product; with the
    gradient, four (three when whole rows are computed).

    Memory. Beyond the inputs and the returned arrays, at most:

    - the logits buffer: ``R * min(chunk_size, V)`` elements of the compute dtype, where
      ``R = row_chunk_size`` or, by default, ``min(N, max(1, 2**25 // min(chunk_size, V)))``
      (at most 128 MB of float32; one whole row, ``V`` elements, when that is more);
    - per-row statistics: a few dozen float64 arrays of ``R`` at the peak (the merge and the
      gradient coefficients are NumPy expressions over rows), and the ``N`` per-row losses;
    - with ``return_grad``: an ``(R, D)`` temporary for ``d_hidden``, and a
      ``(min(chunk_size, V, 8192), D)`` one for ``d_weight`` when there is more than one row
      block;
    - copies of ``hidden``/``weight``/``bias`` only where their dtype is not the compute dtype
      (16-bit or integer inputs, or float32 mixed with float64), and of probability targets
      in the compute dtype.

    So O(R * chunk + (R + min(chunk, 8192)) * D) scratch, plus the ``(N, D)``, ``(V, D)`` and
    ``(V,)`` gradients with ``return_grad``: O(N * chunk + V * D) in all, against ``N * V``
    for materialised logits (and their gradient, unless written over them).

    Parameters
    ----------
    hidden : array_like, (N, D) or (D,)
    weight : array_like, (C, D) or (C, d1, ..., dK, D)
        ``V = C * d1 * ... * dK`` logits per sample.
    target : array_like
        Integer class indices in ``[0, C)`` or ``ignore_index``, shape (N,), (N, d1, ..., dK),
        or () for a 1-d ``hidden``; or floating class probabilities of the logits' shape
        (N, C, d1, ..., dK), or (C,) for a 1-d ``hidden`` (not checked to be non-negative or
        to sum to one, as PyTorch).
    bias : array_like, (C,) or (C, d1, ..., dK), optional
    class_weight : array_like, (C,), optional
        Per-class weights (PyTorch's ``weight``): ``"mean"`` is then the weighted mean
        ``sum_i l_i / sum_i w[t_i]`` for class indices, as :func:`fastloss.cross_entropy`.
    chunk_size : int >= 1
        Classes per chunk.
    row_chunk_size : int >= 1, optional
        Rows per block (default: as above).
    ignore_index, label_smoothing, z_loss, softcap, reduction
        As :func:`fastloss.cross_entropy` (``ignore_index`` is not used with probability
        targets).
    return_grad : bool
        Also return the gradients of the returned loss.
    grad_out : tuple (or list), optional
        Preallocated arrays for ``(d_hidden, d_weight)``, or ``(d_hidden, d_weight, d_bias)``
        with a ``bias``: one entry per gradient, each an ndarray of its input's shape and
        dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry may
        be its input itself (in-place use; the results are those of a call without
        ``grad_out``); no two entries may share memory. The returned tuple holds these arrays
        where given. A C-contiguous buffer of the compute dtype that shares no memory with the
        inputs is accumulated into directly (no ``(V, D)`` temporary for ``d_weight``); other
        buffers are written at the end. Nothing is written to them when the call raises.

    Returns
    -------
    loss
        float32 when every input is float32 or 16-bit, float64 when any is float64 (the
        compute dtype; integer inputs are float64): a NumPy scalar, or with ``"none"`` an
        array of the targets' row shape ((N,), (N, d1, ..., dK), or 0-d for a 1-d ``hidden``).
    (d_hidden, d_weight) or (d_hidden, d_weight, d_bias)
        with ``return_grad``: ``(loss, grads)``, each gradient in its input's shape and dtype.

    Raises
    ------
    ValueError
        Shapes that do not fit together, ``chunk_size`` or ``row_chunk_size`` below 1, bad
        options (as :func:`fastloss.cross_entropy`); a ``grad_out`` entry of the wrong shape
        or read-only, entries that share memory, a ``grad_out`` of the wrong length (two
        entries, three with ``bias``) or without ``return_grad``.
    TypeError
        Unsupported dtypes, a boolean ``target``; a ``grad_out`` that is not a tuple or list,
        an entry that is not an ndarray or of the wrong dtype.
    IndexError
        A class index out of range (other than ``ignore_index``).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> rng = np.random.default_rng(0)
    >>> h, w = rng.normal(size=(6, 8)), rng.normal(size=(50, 8))
    >>> t = np.array([3, 49, 0, 7, -100, 21])
    >>> loss, (dh, dw) = fl.linear_cross_entropy(h, w, t, chunk_size=16, return_grad=True)
    >>> ref, g = fl.cross_entropy(h @ w.T, t, return_grad=True)
    >>> bool(np.isclose(loss, ref, rtol=1e-13)), bool(np.allclose(dh, g @ w, rtol=1e-12))
    (True, True)
    >>> cw = rng.uniform(0.5, 2.0, size=50)
    >>> bool(np.isclose(fl.linear_cross_entropy(h, w, t, class_weight=cw),
    ...                 fl.cross_entropy(h @ w.T, t, weight=cw), rtol=1e-13))
    True
    """
    want_grad = check_grad_out_given(grad_out, return_grad)
    ignore_index = check_int(ignore_index, "ignore_index")
    prob, (h, w, b) = _linear_problem(hidden, weight, target, bias, class_weight, ignore_index)
    H, W, B = prob.H, prob.W, prob.B
    cdt = H.dtype
    (N, D), V = H.shape, W.shape[0]
    chunk = check_int(chunk_size, "chunk_size")
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    vchunk = min(chunk, V)
    if row_chunk_size is None:
        rchunk = min(N, max(1, _BUFFER_ELEMENTS // vchunk))
    else:
        rchunk = check_int(row_chunk_size, "row_chunk_size")
        if rchunk < 1:
            raise ValueError(f"row_chunk_size must be >= 1, got {rchunk}")
        rchunk = min(rchunk, N)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z, cap = _check_z_softcap(z_loss, softcap, cdt)
    reduction = check_reduction(reduction)
    ops = [h, w] + ([b] if b is not None else [])
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(o.array.shape, o.orig_dtype) for o in ops],
        ("hidden", "weight", "bias")[: len(ops)])
    whole_rows = (vchunk == V or prob.probs is not None or prob.class_weight is not None
                  or prob.positions > 1 or len(w.array.shape) > 2)
    if whole_rows and vchunk < V:  # the same buffer, in blocks of whole rows
        rchunk = min(N, max(1, rchunk * vchunk // V))
    g_scale = (1.0 / prob.denom if prob.denom else 0.0) if reduction == "mean" else 1.0
    P = prob.positions

    per_row = np.empty(N * P, dtype=np.float64)
    buf = np.empty(max(rchunk, 1) * (V if whole_rows else vchunk), dtype=cdt)
    d_h = d_w = d_b = tmp_h = tmp_w = None
    if want_grad:
        # a caller's C-contiguous buffer of the compute dtype that shares no memory with the
        # operands is accumulated into directly; other buffers get the gradient at the end
        operands = [H, W, B, prob.flat, prob.probs, prob.class_weight] + [o.array for o in ops]

        def direct(k: int, shape: tuple) -> Optional[np.ndarray]:
            u = None if bufs is None else bufs[k]
            if (u is None or u.dtype != cdt or not u.flags.c_contiguous
                    or any(a is not None and np.may_share_memory(u, a) for a in operands)):
                return None
            return u.reshape(shape)

        d_h = direct(0, (N, D))
        d_h = np.empty((N, D), dtype=cdt) if d_h is None else d_h
        d_w = direct(1, (V, D))
        d_w = np.empty((V, D), dtype=cdt) if d_w is None else d_w
        if B is not None:
            d_b = direct(2, (V,))
            d_b = np.zeros(V, dtype=cdt) if d_b is None else d_b
            d_b.fill(0)
        tmp_h = np.empty((rchunk, D), dtype=cdt)
        tmp_w = np.empty((min(vchunk, _DW_BLOCK), D), dtype=cdt) if N > rchunk else None
        if N == 0:
            d_w.fill(0)

    def logits(r0: int, r1: int, v0: int, v1: int) -> np.ndarray:
        """hidden[r0:r1] @ weight[v0:v1].T (+ bias) in the buffer (contiguous: BLAS writes it
        directly)."""
        L = buf[: (r1 - r0) * (v1 - v0)].reshape(r1 - r0, v1 - v0)
        np.matmul(H[r0:r1], W[v0:v1].T, out=L)
        if B is not None:
            L += B[v0:v1]
        return L

    def accumulate(G: np.ndarray, r0: int, r1: int, v0: int, v1: int) -> None:
        """d_hidden_b += G_c @ W_c;  d_weight[c] += G_c.T @ hidden_b;  d_bias[c] += sum_i G_ic
        (G: the gradient of the logits of rows r0:r1, classes v0:v1)."""
        nb = r1 - r0
        if v0 == 0:
            np.matmul(G, W[v0:v1], out=d_h[r0:r1])
        else:
            np.matmul(G, W[v0:v1], out=tmp_h[:nb])
            d_h[r0:r1] += tmp_h[:nb]
        if r0 == 0:
            np.matmul(G.T, H[r0:r1], out=d_w[v0:v1])
        else:  # (in blocks of classes: the temporary stays small even for whole rows)
            for s0 in range(v0, v1, len(tmp_w)):
                s1 = min(v1, s0 + len(tmp_w))
                np.matmul(G[:, s0 - v0 : s1 - v0].T, H[r0:r1], out=tmp_w[: s1 - s0])
                d_w[s0:s1] += tmp_w[: s1 - s0]
        if d_b is not None:
            d_b[v0:v1] += G.sum(axis=0)

    for r0 in range(0, N, max(rchunk, 1)):
        r1 = min(N, r0 + rchunk)
        if whole_rows:  # whole rows in the buffer: one fused loss (+ gradient) pass
            # (R, C * P) logits seen as (R, C, P): the class axis is axis 1, rows (n, k)
            L3 = logits(r0, r1, 0, V).reshape(r1 - r0, prob.n_classes, P)
            tb = None if prob.flat is None else prob.flat[r0 * P : r1 * P]
            pb = None if prob.probs is None else prob.probs[r0:r1]
            _core.cross_entropy(L3, tb, pb, prob.class_weight, ignore_index, eps, g_scale,
                                per_row[r0 * P : r1 * P], L3 if want_grad else None, z, cap,
                                False, 0.0)
            if want_grad:
                accumulate(L3.reshape(r1 - r0, V), r0, r1, 0, V)
            continue
        tb, vb = prob.flat[r0:r1], prob.valid[r0:r1]
        # sweep 1: the statistics of every chunk, reduced; the block's losses
        st = None
        for v0 in range(0, V, vchunk):
            v1 = min(V, v0 + vchunk)
            m, s, tl, has, sl = _shard_stats(as3d(logits(r0, r1, v0, v1), 1), tb, v0,
                                             ignore_index, cap)
            chunk_st = CrossEntropyStats(m, s, tl, has, sl, v1 - v0, tb)
            st = chunk_st if st is None else _reduce(st, chunk_st)
        per_row[r0:r1], _ = _merged_rows(st, vb, eps, z)
        if not want_grad:
            continue
        # sweep 2: each chunk's logits again, their gradient in place, the products
        ref, p_coef, t_value, u = _grad_coefs(st, g_scale, eps, z)
        for v0 in range(0, V, vchunk):
            v1 = min(V, v0 + vchunk)
            L3 = as3d(logits(r0, r1, v0, v1), 1)
            _core.ce_shard_grad(L3, tb, v0, ignore_index, cap, ref, p_coef, t_value, u, L3)
            accumulate(L3[:, :, 0], r0, r1, v0, v1)

    loss = reduce_rows(per_row, reduction, prob.denom, prob.row_shape, cdt)
    if not want_grad:
        return loss
    grads = (d_h.reshape(h.array.shape).astype(h.orig_dtype, copy=False),
             d_w.reshape(w.array.shape).astype(w.orig_dtype, copy=False))
    if d_b is not None:
        grads += (d_b.reshape(b.array.shape).astype(b.orig_dtype, copy=False),)
    return loss, deliver_grads(grads, bufs)
