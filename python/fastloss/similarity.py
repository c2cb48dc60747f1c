"""Similarity losses: the cosine similarity and distance of two arrays over an axis, and
SimCLR's NT-Xent over a batch of embeddings (optax's ``ntxent``).

The cosine runs on a fused kernel (``_core.cosine_similarity``): one pass over both inputs
gathers ``x1 . x2``, ``|x1|^2`` and ``|x2|^2`` per row in float64 and, with a gradient, writes
both gradients from the same rows while they are in cache. NT-Xent is dominated by the
``(N, D) @ (D, N)`` similarity matrix, which goes to BLAS in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    FloatInput,
    as3d,
    check_grad_out_given,
    check_real,
    check_reduction,
    check_temperature,
    deliver_grads,
    float_input,
    grad_buffer,
    grad_buffers,
    is_bfloat16,
    mean_scale,
    normalize_axis,
    reduce_rows,
)

__all__ = ["cosine_distance", "cosine_similarity", "ntxent_loss"]

_F64 = np.dtype(np.float64)


def _kernel_dtype(a: FloatInput, b: FloatInput) -> np.dtype:
    """One storage dtype for both operands: theirs when they agree, else the wider of their
    compute dtypes (float16 with bfloat16: float32)."""
    if a.array.dtype == b.array.dtype:
        return a.array.dtype
    return np.promote_types(a.compute_dtype, b.compute_dtype)


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient of a broadcast shape back onto an operand of ``shape``."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    wide = np.float64 if g.dtype == _F64 else np.float32
    return np.sum(g, axis=axes, dtype=wide).reshape(shape)


def _cosine(x1, x2, axis, eps, want_grad, grad_sign=1.0, reduction="sum", grad_out=None):
    """Per-row cosines (float64, flat), the output shape, loss dtype and the gradients of
    ``grad_sign * cos`` under ``reduction`` (in the caller's ``grad_out`` where given, see
    :func:`cosine_similarity`)."""
    a, b = float_input(x1, "x1"), float_input(x2, "x2")
    try:  # (one shape: no broadcast, whose NumPy calls cost more than a small cosine)
        shape = a.array.shape if a.array.shape == b.array.shape else \
            np.broadcast_shapes(a.array.shape, b.array.shape)
    except ValueError:
        raise ValueError(
            f"x1 and x2 cannot be broadcast together: shapes {a.array.shape} and "
            f"{b.array.shape}"
        ) from None
    if len(shape) == 0:
        raise ValueError("x1 and x2 must have at least one dimension (the axis of the vectors)")
    ax = normalize_axis(axis, len(shape))
    e = check_real(eps, "eps", 0.0)
    if not math.isfinite(e):
        raise ValueError(f"eps must be finite, got {eps!r}")
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(a.array.shape, a.orig_dtype), (b.array.shape, b.orig_dtype)], ("x1", "x2"))
    dt = _kernel_dtype(a, b)
    if want_grad and dt.itemsize == 2 and (a.array.shape != shape or b.array.shape != shape):
        dt = np.dtype(np.float32)  # gradients summed over broadcast axes: sum float32 terms
    A, B = (as3d(u if u.shape == shape else np.broadcast_to(u, shape), ax)
            for u in (a.array.astype(dt, copy=False), b.array.astype(dt, copy=False)))
    out_shape = shape[:ax] + shape[ax + 1 :]
    grad_scale = grad_sign * mean_scale(reduction, math.prod(out_shape))
    cos = np.empty(A.shape[0] * A.shape[2], dtype=np.float64)
    g1 = g2 = None
    if want_grad:
        # the kernel writes straight into a caller's C-contiguous buffer of the broadcast shape
        # and the kernel's dtype that shares no memory with the inputs; other buffers (the
        # inputs themselves, for in-place use) get the gradient at the end
        g1, g2 = (
            u if u is not None and u.shape == shape and u.dtype == dt and u.flags.c_contiguous
            and not np.may_share_memory(u, a.array) and not np.may_share_memory(u, b.array)
            else np.empty(shape, dtype=dt)
            for u in (bufs or (None, None)))
    _core.cosine_similarity(
        A, B, e, grad_scale, cos,
        None if g1 is None else as3d(g1, ax), None if g2 is None else as3d(g2, ax),
    )
    loss_dtype = np.promote_types(a.loss_dtype, b.loss_dtype)
    grads = None
    if want_grad:
        grads = deliver_grads((
            _sum_to(g1, a.array.shape).astype(a.orig_dtype, copy=False),
            _sum_to(g2, b.array.shape).astype(b.orig_dtype, copy=False),
        ), bufs)
    return cos, out_shape, loss_dtype, grads


def cosine_similarity(x1: Any, x2: Any, *, axis: int = -1, eps: float = 1e-8,
                      return_grad: bool = False, grad_out: Any = None):
    """Cosine similarity of ``x1`` and ``x2`` along ``axis``, with NumPy broadcasting.

    As ``torch.nn.functional.cosine_similarity(x1, x2, dim=axis, eps=eps)``::

        cos = sum(x1 * x2, axis) / (max(||x1||_2, eps) * max(||x2||_2, eps))

    (optax's ``cosine_similarity(x1, x2, epsilon=e, axis=axis)`` clips the *squared* norms at
    ``e``: it equals this function with ``eps = sqrt(e)``; Keras's ``CosineSimilarity`` loss is
    ``-cos`` of L2-normalised inputs.)

    Parameters
    ----------
    x1, x2 : array_like
        Arrays whose shapes broadcast together, at least 1-d after broadcasting. float32 and
        float64 keep their dtype; float16/bfloat16 are computed in float32 (float32 results);
        integers give float64. Mixed dtypes are both read in the wider one.
    axis : int
        The axis of the vectors.
    eps : float
        Each norm is clamped below at ``eps >= 0`` (finite) before the division.
    return_grad : bool
        Also return the gradients of ``sum(cos)``: a tuple ``(d_x1, d_x2)`` in the inputs'
        own shapes (summed over broadcast axes) and dtypes.
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_x1, d_x2)``, each an ndarray of its input's shape and
        dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry may
        be its input itself (in-place use; the results are those of a call without
        ``grad_out``); the two entries must not share memory. The returned tuple holds these
        arrays where given. Nothing is written to them when the call raises.

    Returns
    -------
    cos : ndarray of the broadcast shape without ``axis`` (a NumPy scalar for 1-d inputs)
    grad : tuple (d_x1, d_x2), only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes that do not broadcast, 0-d inputs, ``eps`` negative or not finite; a
        ``grad_out`` entry of the wrong shape or read-only, entries that share memory, a
        ``grad_out`` of the wrong length or without ``return_grad``.
    numpy.exceptions.AxisError
        ``axis`` out of range.
    TypeError
        Complex, string or object inputs; a ``grad_out`` that is not a tuple or list, an
        entry that is not an ndarray or of the wrong dtype.

    Notes
    -----
    The sums ``x1 . x2``, ``|x1|^2`` and ``|x2|^2`` are accumulated in float64 in one pass over
    both arrays (rows of float64 values beyond ~1e150, whose squares overflow, are summed
    again scaled by their largest element). With ``c_k = max(|x_k|, eps)``::

        d cos / d x1 = (x2 / c2 - [|x1| > eps] cos x1 / |x1|) / c1     (likewise for x2)

    This is the derivative of the value computed: where a norm is below ``eps`` the clamp is
    constant, and the second term is 0 (PyTorch's backward keeps ``- cos x1 / |x1|`` there as
    if the norm were not clamped; the two agree wherever ``|x1| > eps``). A zero vector gives
    ``cos = 0`` and finite gradients.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x1 = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    >>> x2 = np.array([[0.0, 2.0], [6.0, 8.0], [0.0, -5.0]])
    >>> fl.cosine_similarity(x1, x2)
    array([ 0.,  1., -1.])
    >>> cos, (d_x1, d_x2) = fl.cosine_similarity(x1, np.array([0.0, 1.0]), return_grad=True)
    >>> cos
    array([0. , 0.8, 1. ])
    >>> d_x2.shape  # x2 was broadcast over the rows: its gradient is summed over them
    (2,)
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    cos, shape, dtype, grads = _cosine(x1, x2, axis, eps, return_grad, grad_out=grad_out)
    out = cos.reshape(shape).astype(dtype)
    out = out[()] if out.ndim == 0 else out
    return (out, grads) if return_grad else out


def cosine_distance(x1: Any, x2: Any, *, axis: int = -1, eps: float = 1e-8,
                    reduction: str = "mean", return_grad: bool = False, grad_out: Any = None):
    """Cosine distance ``1 - cosine_similarity(x1, x2)`` along ``axis``, reduced.

    optax's ``cosine_distance`` (with ``reduction="none"``; its ``epsilon`` is ``eps**2``, see
    :func:`cosine_similarity`); PyTorch's ``cosine_embedding_loss`` of a similar pair
    (``target = 1``) with ``eps`` on the norms.

    Parameters
    ----------
    x1, x2 : array_like
        Arrays whose shapes broadcast together (see :func:`cosine_similarity`).
    axis : int
        The axis of the vectors.
    eps : float
        Each norm is clamped below at ``eps >= 0``.
    reduction : {"mean", "sum", "none"}
        Over the distances (the broadcast shape without ``axis``).
    return_grad : bool
        Also return ``(d_x1, d_x2)``, the gradients of the returned loss, in the inputs'
        shapes and dtypes.
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_x1, d_x2)``, each an ndarray of its input's shape and
        dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry may
        be its input itself (in-place use; the results are those of a call without
        ``grad_out``); the two entries must not share memory. The returned tuple holds these
        arrays where given. Nothing is written to them when the call raises.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_x1, d_x2), only with ``return_grad``

    Raises
    ------
    ValueError
        As :func:`cosine_similarity`, and an unknown ``reduction``.
    TypeError
        As :func:`cosine_similarity` (also for ``grad_out``).

    Notes
    -----
    ``loss = 1 - cos`` per vector pair, in [0, 2]; computed as ``1 - cos`` in float64. An
    empty batch gives NaN for ``"mean"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x1 = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    >>> x2 = np.array([[0.0, 2.0], [6.0, 8.0], [0.0, -5.0]])
    >>> fl.cosine_distance(x1, x2, reduction="none")
    array([1., 0., 2.])
    >>> float(fl.cosine_distance(x1, x2))
    1.0
    """
    want = check_grad_out_given(grad_out, return_grad)
    reduction = check_reduction(reduction)
    cos, shape, dtype, grads = _cosine(x1, x2, axis, eps, want, -1.0, reduction, grad_out)
    per = 1.0 - cos
    loss = reduce_rows(per, reduction, per.size, shape, dtype)
    return (loss, grads) if want else loss


def ntxent_loss(embeddings: Any, labels: Any, *, temperature: float = 0.07,
                return_grad: bool = False, grad_out: Any = None):
    """NT-Xent, SimCLR's normalised temperature-scaled cross-entropy (optax's ``ntxent``).

    For embeddings ``x_i`` (rows) with integer ``labels`` (equal labels mark positive pairs),
    ``s_ij = cos(x_i, x_j) / temperature`` and, for every ordered positive pair ``(i, j)``,
    ``j != i``, with ``Neg(i)`` the rows whose label differs from ``labels[i]``::

        l_ij = -s_ij + log(exp(s_ij) + sum_{k in Neg(i)} exp(s_ik))
        loss = sum_{(i, j) positive} l_ij / (number of positive pairs)

    (the denominator holds the pair's own positive and the anchor's negatives only, as in
    optax). Also known as the NT-Xent / InfoNCE loss of pytorch-metric-learning's
    ``NTXentLoss``.

    Parameters
    ----------
    embeddings : array_like
        ``(N, D)`` embeddings. Any float dtype; computed in float64.
    labels : array_like
        ``(N,)`` integers (or bools); rows with equal labels are positive pairs.
    temperature : float
        ``> 0`` and finite.
    return_grad : bool
        Also return d(loss)/d(embeddings), in the embeddings' shape and dtype.
    grad_out : ndarray, optional
        A preallocated array of ``embeddings``' shape and dtype for the gradient (it may be
        ``embeddings`` itself, for in-place use: the results are those of a call without
        ``grad_out``); needs ``return_grad=True``. Returned as the gradient. Nothing is
        written to it when the call raises.

    Returns
    -------
    loss : NumPy scalar (float64 for float64 input, float32 otherwise)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        ``embeddings`` not 2-d, ``labels`` not of shape ``(N,)``, a bad ``temperature``; a
        ``grad_out`` of the wrong shape or read-only, or without ``return_grad``.
    TypeError
        Non-integer labels; a ``grad_out`` that is not an ndarray or of the wrong dtype.

    Notes
    -----
    Cosines as optax: ``u_i = x_i / sqrt(max(|x_i|^2, e))`` with ``e`` the machine epsilon of
    the embeddings' dtype (a zero row has cosine 0 with every row), ``s = u u^T / tau`` by
    BLAS in float64, and each pair's ``log`` of its sum taken against that sum's largest term
    (finite for any temperature).
    Gradient: with ``G_ij = d loss / d s_ij`` (``(p_ij - 1) / M`` for a positive pair,
    ``sum_{j positive} e^{s_ik} / D_ij / M`` for a negative ``k``, ``D_ij`` the pair's
    denominator, ``M`` the number of pairs), ``d loss / d u = (G + G^T) u / tau``, then through
    the normalisation. No positive pair at all gives NaN (0 / 0), as optax.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> round(float(fl.ntxent_loss(x, [0, 0, 1, 1], temperature=0.5)), 6)
    0.29646
    >>> loss, grad = fl.ntxent_loss(x, [0, 0, 1, 1], return_grad=True)
    >>> grad.shape
    (4, 2)
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    x = float_input(embeddings, "embeddings")
    X = x.array
    if X.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (N, D), got shape {X.shape}")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.shape != (X.shape[0],):
        raise ValueError(f"labels must have shape ({X.shape[0]},) (one per embedding), got "
                         f"{lab.shape}")
    tau = check_temperature(temperature)
    buf = None if grad_out is None else grad_buffer(grad_out, X.shape, x.orig_dtype)
    # optax's epsilon: the machine epsilon of the embeddings' dtype (bfloat16: 2**-7)
    e = 2.0**-7 if is_bfloat16(x.orig_dtype) else float(np.finfo(x.orig_dtype).eps)
    Xf = X.astype(np.float64)
    sq = np.einsum("ij,ij->i", Xf, Xf)
    clipped = sq <= e
    norm = np.sqrt(np.maximum(sq, e))
    U = Xf / norm[:, None]
    S = (U @ U.T) / tau
    N = X.shape[0]
    same = lab[:, None] == lab[None, :]
    pos = same & ~np.eye(N, dtype=bool)
    neg = ~same
    n_pairs = int(pos.sum())
    # Each pair's denominator against its own largest term m_ij = max(s_ij, nmax_i), with
    # nmax_i the anchor's largest negative (-inf: none) and the negatives summed against it:
    #   l_ij = (m_ij - s_ij) + log(exp(s_ij - m_ij) + negsum_i exp(nmax_i - m_ij)),
    #   negsum_i = sum_{k in Neg(i)} exp(s_ik - nmax_i);  the log's argument is in [1, N].
    nmax = np.max(np.where(neg, S, -np.inf), axis=1, initial=-np.inf)
    has_neg = np.isfinite(nmax)
    nref = np.where(has_neg, nmax, 0.0)
    En = np.where(neg, np.exp(np.minimum(S - nref[:, None], 0.0)), 0.0)
    negsum = En.sum(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        M = np.where(pos, np.maximum(S, nmax[:, None]), 0.0)
        scale_neg = np.where(pos & has_neg[:, None], np.exp(np.minimum(nref[:, None] - M, 0.0)),
                             0.0)  # exp(nmax_i - m_ij)
        e_pos = np.where(pos, np.exp(np.minimum(S - M, 0.0)), 0.0)
        Dm = np.where(pos, e_pos + negsum[:, None] * scale_neg, 1.0)
        terms = np.where(pos, (M - S) + np.log(Dm), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.float64(terms.sum()) / np.float64(n_pairs)
    out_dtype = x.loss_dtype
    loss = out_dtype.type(loss)
    if not return_grad:
        return loss
    if n_pairs == 0:
        return loss, deliver_grads([np.zeros(X.shape, dtype=x.orig_dtype)], [buf])[0]
    # d l_ij / d s_ij = p_ij - 1 (p_ij = e_pos / D); d l_ij / d s_ik = exp(s_ik - m_ij) / D
    # for a negative k, summed over the anchor's positives j: En_ik w_i,
    # w_i = sum_j exp(nmax_i - m_ij) / D_ij
    Pij = np.where(pos, e_pos / Dm, 0.0)
    w = np.where(pos, scale_neg / Dm, 0.0).sum(axis=1)
    G = np.where(pos, Pij - 1.0, 0.0) + En * w[:, None]
    G /= n_pairs
    dU = (G + G.T) @ U / tau
    # u = x / n: du = (dx - u (u . dx)) / |x| for |x|^2 > e, dx / sqrt(e) where clipped
    radial = np.einsum("ij,ij->i", dU, U)
    dX = (dU - np.where(clipped, 0.0, radial)[:, None] * U) / norm[:, None]
    return loss, deliver_grads([dX.astype(x.orig_dtype, copy=False)], [buf])[0]
