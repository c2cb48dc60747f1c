"""Embedding losses: contrastive pairs (Hadsell et al.), triplets (as PyTorch) and CLIP's
symmetric InfoNCE over a batch similarity matrix.

Rows are embeddings: the last axis is the embedding dimension. The pair and triplet losses
are O(rows * dim) and memory-bound, their row distances in float64. The triplet loss is one
C++ kernel call (``_core.triplet_margin``: distances, loss and the three gradients, row by
row); the contrastive loss uses vectorised NumPy, block of rows by block of rows (a few
hundred KB each, so every temporary stays in cache and a float32 input is never copied
whole). CLIP's loss is dominated by the ``(N, D) @ (D, N)`` similarity matrix, which goes to
BLAS; both cross-entropies over it run on fastloss's fused kernels, row-wise and column-wise
over the same array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._pointwise import real_array
from ._validation import (
    FloatInput,
    check_grad_out_given,
    check_real,
    check_reduction,
    check_temperature,
    deliver_grads,
    float_input,
    grad_buffers,
    mean_scale,
    reduce_rows,
)
from .classification import cross_entropy

__all__ = ["clip_loss", "contrastive_loss", "triplet_margin_loss"]

_F64 = np.dtype(np.float64)
_BLOCK_ELEMENTS = 1 << 16  # float64 elements per block of rows: 512 KB temporaries


def _row_blocks(rows: int, dim: int):
    """(start, stop) of consecutive blocks of rows of about _BLOCK_ELEMENTS elements."""
    step = max(1, _BLOCK_ELEMENTS // max(dim, 1))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def _embeddings(inputs: list[tuple[Any, str]]) -> tuple[list[FloatInput], tuple[int, ...]]:
    """Prepare same-shaped embedding arrays (at least 1-d; the last axis is the embedding)."""
    prepared = [float_input(x, name) for x, name in inputs]
    first, name0 = prepared[0].array, inputs[0][1]
    if first.ndim == 0:
        raise ValueError(f"{name0} must have at least one dimension (the last axis holds the "
                         "embedding)")
    for p, (_, name) in zip(prepared[1:], inputs[1:]):
        if p.array.shape != first.shape:
            raise ValueError(f"{name} has shape {p.array.shape} but must have {name0}'s shape "
                             f"{first.shape} (no broadcasting)")
    return prepared, first.shape


def _rows(x: FloatInput) -> np.ndarray:
    """(rows, dim) view (a copy only when the strides cannot express it)."""
    a = x.array
    return a.reshape(-1, a.shape[-1]) if a.shape[-1] else a.reshape(math.prod(a.shape[:-1]), 0)


def _loss_dtype(prepared: list[FloatInput]) -> np.dtype:
    dt = prepared[0].loss_dtype
    for p in prepared[1:]:
        dt = np.promote_types(dt, p.loss_dtype)
    return dt


def _check_margin(margin: Any, *, positive: bool) -> float:
    m = check_real(margin, "margin")
    if not math.isfinite(m) or (m <= 0 if positive else m < 0):
        need = "> 0 (as PyTorch)" if positive else ">= 0"
        raise ValueError(f"margin must be a finite number {need}, got {margin!r}")
    return m


def _binary_labels(label: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Labels in {0, 1} (bool, integer or float) of the per-pair ``shape``, as flat float64."""
    y = real_array(label, "label", _F64)  # (TypeError for strings, complex, objects)
    if y.shape != shape:
        raise ValueError(f"label has shape {y.shape} but must have the embeddings' shape "
                         f"without the last axis: {shape}")
    y = y.reshape(-1)
    bad = (y != 0) & (y != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"label must be 0 (dissimilar) or 1 (similar); label.flat[{i}] = "
                         f"{y[i]!r}")
    return y


# ---------------------------------------------------------------------------------------------
# Contrastive loss (Hadsell, Chopra & LeCun 2006)
# ---------------------------------------------------------------------------------------------
def contrastive_loss(
    x1: Any,
    x2: Any,
    label: Any,
    *,
    margin: float = 1.0,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Contrastive loss of embedding pairs (Hadsell, Chopra & LeCun, 2006).

    Per pair of rows (the last axis is the embedding), with ``d = ||x1 - x2||_2``::

        loss = y * d**2 + (1 - y) * max(0, margin - d)**2

    ``y = 1`` marks a similar pair (pulled together), ``y = 0`` a dissimilar one (pushed at
    least ``margin`` apart). No factor 1/2 (as the formula is usually written in PyTorch code;
    Hadsell et al. have one: divide the loss and gradients by 2 for theirs).

    Parameters
    ----------
    x1, x2 : array_like
        Embeddings of the same shape ``(..., D)``, at least 1-d. float32/float64 keep their
        dtype; float16/bfloat16 give float32 losses; integers give float64.
    label : array_like
        Shape ``x1.shape[:-1]``; every value 0 or 1 (bool, integer or float). Soft labels are
        rejected (a ValueError): the two terms are a hinge pair, not a mixture.
    margin : float >= 0
        How far apart dissimilar pairs are pushed.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over pairs; ``"none"``: one loss per pair, shape ``x1.shape[:-1]``.
    return_grad : bool
        Also return ``(d_x1, d_x2)``, each in its input's shape and dtype.
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
        Shapes differ, a label not in {0, 1}, ``margin`` negative or not finite, an unknown
        ``reduction``; a ``grad_out`` entry of the wrong shape or read-only, entries that
        share memory, a ``grad_out`` of the wrong length or without ``return_grad``.
    TypeError
        Unsupported dtypes; a ``grad_out`` that is not a tuple or list, an entry that is not
        an ndarray or of the wrong dtype.

    Notes
    -----
    ``d`` is the exact Euclidean distance (no ``eps``), accumulated in float64 whatever the
    input dtype. Gradient: ``d_x1 = -d_x2 = 2 * (y - (1 - y) * max(0, margin - d) / d) * (x1 -
    x2)``. At ``d = 0`` (identical embeddings) the similar term has loss and gradient 0 and
    the dissimilar term has loss ``margin**2`` and the subgradient 0 (every direction away
    from the other point is as good; PyTorch's norm backward also gives 0 there): finite, no
    NaN. An empty batch gives NaN for ``"mean"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x1 = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> x2 = np.array([[3.0, 4.0], [1.3, 1.4], [0.0, 0.0]])
    >>> fl.contrastive_loss(x1, x2, [1, 0, 0], margin=1.0, reduction="none")  # d = 5, 0.5, 0
    array([25.  ,  0.25,  1.  ])
    >>> loss, (d_x1, d_x2) = fl.contrastive_loss(x1, x2, [1, 0, 0], return_grad=True)
    >>> d_x1  # (2 d (x1 - x2) / d, -2 (1 - d) (x1 - x2) / d, 0) / 3
    array([[-2.        , -2.66666667],
           [ 0.2       ,  0.26666667],
           [ 0.        ,  0.        ]])
    """
    want_grad = check_grad_out_given(grad_out, return_grad)
    (a, b), shape = _embeddings([(x1, "x1"), (x2, "x2")])
    y = _binary_labels(label, shape[:-1])
    m = _check_margin(margin, positive=False)
    reduction = check_reduction(reduction)
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(shape, a.orig_dtype), (shape, b.orig_dtype)], ("x1", "x2"))
    a2, b2 = _rows(a), _rows(b)
    rows = a2.shape[0]
    scale = mean_scale(reduction, rows)
    per_row = np.empty(rows, dtype=np.float64)
    if want_grad:
        g1 = np.empty(a2.shape, dtype=a.orig_dtype)
        g2 = np.empty(b2.shape, dtype=b.orig_dtype)
    for s, e in _row_blocks(rows, a2.shape[1]):
        diff = a2[s:e].astype(np.float64)
        diff -= b2[s:e]
        d2 = np.einsum("ij,ij->i", diff, diff)
        d = np.sqrt(d2)
        ys = y[s:e]
        hinge = np.maximum(m - d, 0.0)
        per_row[s:e] = ys * d2 + (1.0 - ys) * hinge * hinge
        if want_grad:
            # dl/dd * dd/dx1 with dd/dx1 = (x1 - x2) / d: 2 y (x1 - x2) for a similar pair,
            # -2 max(0, margin - d) / d (x1 - x2) for a dissimilar one (0 at d = 0).
            over_d = np.divide(hinge, d, out=np.zeros_like(d), where=d > 0)
            diff *= (2.0 * scale * (ys - (1.0 - ys) * over_d))[:, None]
            g1[s:e] = diff
            diff *= -1.0
            g2[s:e] = diff
    loss = reduce_rows(per_row, reduction, rows, shape[:-1], _loss_dtype([a, b]))
    if not want_grad:
        return loss
    return loss, deliver_grads((g1.reshape(shape), g2.reshape(shape)), bufs)


# ---------------------------------------------------------------------------------------------
# Triplet margin loss (PyTorch's triplet_margin_loss)
# ---------------------------------------------------------------------------------------------
def _check_p(p: Any) -> float:
    v = check_real(p, "p", -math.inf, math.inf)
    if not v > 0:
        raise ValueError(f"p must be > 0 (the norm degree; math.inf for the max norm), got {p!r}")
    return v


def triplet_margin_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: bool = False,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Triplet margin loss, as :func:`torch.nn.functional.triplet_margin_loss`.

    Per triplet of rows (the last axis is the embedding)::

        loss = max(0, margin + d(a, p) - d(a, n)),   d(u, v) = ||u - v + eps||_p

    (PyTorch's ``pairwise_distance``: ``eps`` is added to every entry of the difference).
    With ``swap=True`` (Balntas et al.'s distance swap), ``d(a, n)`` is replaced by
    ``min(d(a, n), d(p, n))``.

    Parameters
    ----------
    anchor, positive, negative : array_like
        Embeddings of one shape ``(..., D)``, at least 1-d (no broadcasting). float32/float64
        keep their dtype; float16/bfloat16 give float32 losses; integers give float64.
    margin : float > 0
        As PyTorch (which rejects ``margin <= 0``).
    p : float > 0
        The norm degree; ``math.inf`` is the max norm. (PyTorch also accepts ``p <= 0``,
        which is no norm; that is a ValueError here.)
    eps : float
        Added to each entry of ``u - v`` before the norm (keeps the distance of identical
        rows away from the norm's kink at 0). Any finite number; 0 disables it.
    swap : bool
        Use ``min(d(a, n), d(p, n))`` as the negative distance.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over triplets; ``"none"``: one loss per triplet, shape ``anchor.shape[:-1]``.
    return_grad : bool
        Also return ``(d_anchor, d_positive, d_negative)``, each in its input's shape and dtype.
    grad_out : tuple (or list) of three entries, optional
        Preallocated arrays for ``(d_anchor, d_positive, d_negative)``, each an ndarray of its
        input's shape and dtype or None (that gradient is allocated); needs
        ``return_grad=True``. An entry may be its input itself (in-place use; the results are
        those of a call without ``grad_out``); no two entries may share memory. The returned
        tuple holds these arrays where given. Nothing is written to them when the call raises.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_anchor, d_positive, d_negative), only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes differ, ``margin <= 0``, ``p <= 0``, ``eps`` not finite, an unknown
        ``reduction``; a ``grad_out`` entry of the wrong shape or read-only, entries that
        share memory, a ``grad_out`` of the wrong length or without ``return_grad``.
    TypeError
        Unsupported dtypes; a ``grad_out`` that is not a tuple or list, an entry that is not
        an ndarray or of the wrong dtype.

    Notes
    -----
    Distances are computed in float64 whatever the input dtype (PyTorch computes them in the
    input dtype; float32 results agree to float32 rounding). The gradients follow PyTorch's
    autograd exactly at its conventions' points: the hinge passes the gradient where
    ``margin + d(a, p) - d(a, n) >= 0`` (``clamp_min``'s ``>=``), a norm of 0 has gradient 0,
    ``p = inf`` shares the gradient equally between tied maxima, and with ``swap`` a tie
    ``d(a, n) = d(p, n)`` sends half to each (``minimum``'s rule). With
    ``u = d||x||_p / dx`` of each difference::

        d_anchor   =  u(a - p) - w_an u(a - n)
        d_positive = -u(a - p) - w_pn u(p - n)
        d_negative =  w_an u(a - n) + w_pn u(p - n)

    times the reduction's scale on active triplets, with ``(w_an, w_pn) = (1, 0)`` without
    ``swap``. An empty batch gives NaN for ``"mean"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> a = np.zeros((3, 2))
    >>> p = np.array([[0.6, 0.8], [0.3, 0.4], [0.3, 0.4]])
    >>> n = np.array([[0.9, 1.2], [0.6, 0.8], [3.0, 4.0]])
    >>> fl.triplet_margin_loss(a, p, n, eps=0.0, reduction="none")  # 1 + d(a, p) - d(a, n)
    array([0.5, 0.5, 0. ])
    >>> loss, (d_a, d_p, d_n) = fl.triplet_margin_loss(a, p, n, eps=0.0, return_grad=True)
    >>> d_n[:2]  # -(a - n) / d(a, n) / 3: pushes n away from a
    array([[-0.2       , -0.26666667],
           [-0.2       , -0.26666667]])
    """
    want_grad = check_grad_out_given(grad_out, return_grad)
    (a, pp, n), shape = _embeddings([(anchor, "anchor"), (positive, "positive"),
                                      (negative, "negative")])
    m = _check_margin(margin, positive=True)
    p = _check_p(p)
    eps = check_real(eps, "eps")
    if not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number, got {eps!r}")
    reduction = check_reduction(reduction)
    swap = bool(swap)
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(shape, f.orig_dtype) for f in (a, pp, n)], ("anchor", "positive", "negative"))
    # one kernel call (_core.triplet_margin, float64 per row) on operands of one dtype
    arrs = [f.array for f in (a, pp, n)]
    common = arrs[0].dtype
    if any(x.dtype != common for x in arrs[1:]):
        common = np.result_type(*[f.compute_dtype for f in (a, pp, n)])
        arrs = [x.astype(common, copy=False) for x in arrs]
    a2, p2, n2 = (x.reshape(math.prod(shape[:-1]), shape[-1]) for x in arrs)
    rows = a2.shape[0]
    scale = mean_scale(reduction, rows)
    per_row = np.empty(rows, dtype=np.float64)
    grads = [np.empty(a2.shape, dtype=common) for _ in range(3)] if want_grad else [None] * 3
    _core.triplet_margin(a2, p2, n2, m, p, eps, swap, scale, per_row, *grads)
    loss = reduce_rows(per_row, reduction, rows, shape[:-1], _loss_dtype([a, pp, n]))
    if not want_grad:
        return loss
    return loss, deliver_grads([g.reshape(shape).astype(f.orig_dtype, copy=False)
                                for g, f in zip(grads, (a, pp, n))], bufs)


# ---------------------------------------------------------------------------------------------
# CLIP loss (Radford et al. 2021): symmetric InfoNCE over the batch similarity matrix
# ---------------------------------------------------------------------------------------------
_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default


def _scaled_rows(x: np.ndarray, dtype: np.dtype, normalize: bool, factor: float):
    """``factor * x / max(||x||, eps)`` (or ``factor * x``) as a new array of ``dtype``, and
    the per-row ``1 / max(||x||, eps)`` (float64; None without normalisation). Norms are
    accumulated in float64."""
    if not normalize:
        return np.multiply(x, factor, dtype=dtype), None
    xc = x if x.dtype.itemsize > 2 else x.astype(dtype)
    sq = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
    inv = 1.0 / np.maximum(np.sqrt(sq), _NORMALIZE_EPS)
    return np.multiply(xc, (factor * inv)[:, None].astype(dtype), dtype=dtype), inv


def _normalize_backward(g: np.ndarray, xhat: np.ndarray, xhat_scale: float, inv: np.ndarray):
    """In place: d x = (g - x̂ (x̂ · g)) / ||x|| for the rows of ``g`` = d x̂, where the stored
    ``xhat`` is ``x̂ / xhat_scale``. Rows whose norm was clamped to eps (x̂ = x / eps, a linear
    map) get g / eps, as torch.nn.functional.normalize."""
    # x̂ · g from x̂ itself (the stored rows times xhat_scale): xhat_scale**2 overflowed for a
    # temperature past 1e154 (inf * 0 = NaN), and xhat . g underflowed for one past 1e150
    # (found by the fuzzer)
    xs = xhat if xhat_scale == 1.0 else xhat * xhat.dtype.type(xhat_scale)
    dot = np.einsum("ij,ij->i", xs, g, dtype=np.float64) * xhat_scale
    del xs
    dot[inv >= 1.0 / _NORMALIZE_EPS] = 0.0
    g -= xhat * dot[:, None].astype(g.dtype)
    g *= inv[:, None].astype(g.dtype)


def clip_loss(
    image_emb: Any,
    text_emb: Any,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """CLIP's contrastive loss (Radford et al., 2021): symmetric InfoNCE over the batch.

    Image ``i`` and text ``i`` form the positive pair; every other pairing in the batch is a
    negative. With ``x̂ = x / max(||x||_2, 1e-12)`` per row (``normalize=True``)::

        logits = Î @ T̂.T / temperature                       # (N, N)
        loss_i = (CE(logits[i, :], i) + CE(logits[:, i], i)) / 2

    the mean of the image-to-text (rows) and text-to-image (columns) cross-entropies, as
    ``(F.cross_entropy(logits, arange(N)) + F.cross_entropy(logits.T, arange(N))) / 2``.

    Parameters
    ----------
    image_emb, text_emb : array_like
        Embeddings of shape ``(N, D)`` each (the same shape). float32/float64 keep their
        dtype; float16/bfloat16 are computed in float32 (float32 loss, gradients in the input
        dtype); integers give float64. Mixed dtypes are computed in the wider one.
    temperature : float > 0
        Divides the cosine similarities (CLIP learns ``1 / temperature``; 0.07 is its
        initial value). Pass ``1 / logit_scale`` for a learned scale.
    normalize : bool
        L2-normalise the rows first (as ``torch.nn.functional.normalize``, eps 1e-12). False:
        the embeddings are used as given (already normalised, or a dot-product variant).
    reduction : {"mean", "sum", "none"}
        ``"mean"``: the mean over the batch of ``loss_i`` (CLIP's loss); ``"sum"``; ``"none"``:
        the ``N`` values ``loss_i``, pair index by pair index.
    return_grad : bool
        Also return ``(d_image, d_text)``, each in its input's shape and dtype, through the
        similarity matrix and the normalisation.
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_image, d_text)``, each an ndarray of its input's shape
        and dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry
        may be its input itself (in-place use; the results are those of a call without
        ``grad_out``); the two entries must not share memory. The returned tuple holds these
        arrays where given (written once the gradients are computed: the ``(N, D)``
        temporaries stay). Nothing is written to them when the call raises.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray of shape (N,) (``"none"``)
    grad : tuple (d_image, d_text), only with ``return_grad``

    Raises
    ------
    ValueError
        Inputs not 2-d or of different shapes, ``temperature`` not positive and finite, an
        unknown ``reduction``; a ``grad_out`` entry of the wrong shape or read-only, entries
        that share memory, a ``grad_out`` of the wrong length or without ``return_grad``.
    TypeError
        Unsupported dtypes; a ``grad_out`` that is not a tuple or list, an entry that is not
        an ndarray or of the wrong dtype.

    Notes
    -----
    The work is three ``(N, D) x (D, N)`` matrix products (one for the loss, two more for the
    gradients), all in BLAS, in float32 for float32 and 16-bit inputs (float64 for float64),
    and two passes of fastloss's cross-entropy kernel over the one ``(N, N)`` logits array:
    over its rows, and over its columns (``axis=0``, no transposed copy); each softmax sum is
    accumulated in float64. With ``return_grad`` the column pass writes its gradient over the
    logits (in place), so the peak memory is two ``(N, N)`` arrays of the compute dtype
    (one without ``return_grad``), the inputs and O(N D) more. The temperature is applied to
    the ``(N, D)`` image rows before the product, not to the ``(N, N)`` logits.

    Gradients, with ``P_r``, ``P_c`` the row and column softmaxes of the logits and ``s``
    the reduction's scale (``1 / N`` for ``"mean"``)::

        G       = s / 2 * (P_r - I) + s / 2 * (P_c - I)       # d loss / d logits
        d Î     = G @ T̂ / temperature,    d T̂ = G.T @ Î / temperature
        d x     = (d x̂ - x̂ (x̂ · d x̂)) / ||x||                # through the normalisation

    (a row whose norm is below 1e-12 gets ``d x̂ / 1e-12``, as PyTorch's ``normalize``).
    An empty batch gives NaN for ``"mean"`` and 0 for ``"sum"``.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> img = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> txt = np.array([[2.0, 0.2], [0.1, 1.0], [1.0, 0.8]])
    >>> round(float(fl.clip_loss(img, txt, temperature=0.1)), 6)
    0.113083
    >>> np.round(fl.clip_loss(img, txt, temperature=1.0, reduction="none"), 6)
    array([0.794268, 0.76721 , 0.936779])
    >>> round(float(fl.clip_loss(5 * img, txt, temperature=0.1)), 6)  # rows are normalised
    0.113083
    >>> loss, (d_img, d_txt) = fl.clip_loss(img, txt, return_grad=True)
    >>> d_img.shape, d_txt.shape
    ((3, 2), (3, 2))
    """
    want_grad = check_grad_out_given(grad_out, return_grad)
    im = float_input(image_emb, "image_emb")
    tx = float_input(text_emb, "text_emb")
    if im.array.ndim != 2:
        raise ValueError(f"image_emb must be 2-d (N, D), got shape {im.array.shape}")
    if tx.array.shape != im.array.shape:
        raise ValueError(f"text_emb has shape {tx.array.shape} but must have image_emb's shape "
                         f"{im.array.shape} (N pairs of D-dimensional embeddings)")
    tau = check_temperature(temperature)
    reduction = check_reduction(reduction)
    normalize = bool(normalize)
    cdt = np.promote_types(im.compute_dtype, tx.compute_dtype)  # float32 or float64
    shape = im.array.shape
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(shape, im.orig_dtype), (shape, tx.orig_dtype)], ("image_emb", "text_emb"))
    n = shape[0]
    if n == 0:
        loss = reduce_rows(np.empty(0), reduction, 0, (0,), cdt)
        if not want_grad:
            return loss
        return loss, deliver_grads((np.zeros(shape, im.orig_dtype),
                                    np.zeros(shape, tx.orig_dtype)), bufs)

    # A = Î / temperature, B = T̂ (copies of the compute dtype; B is T itself when it can be)
    a, inv_a = _scaled_rows(im.array, cdt, normalize, 1.0 / tau)
    if normalize:
        b, inv_b = _scaled_rows(tx.array, cdt, True, 1.0)
    else:
        b, inv_b = tx.array.astype(cdt, copy=False), None
    logits = a @ b.T
    target = np.arange(n)
    if not want_grad:
        rows = cross_entropy(logits, target, reduction=reduction)
        cols = cross_entropy(logits, target, axis=0, reduction=reduction)
    else:
        g = np.empty_like(logits)
        rows, _ = cross_entropy(logits, target, reduction=reduction, return_grad=True,
                                grad_out=g)
        # the column pass overwrites the logits with its gradient: they are not needed again
        cols, _ = cross_entropy(logits, target, axis=0, reduction=reduction, return_grad=True,
                                grad_out=logits)
        g += logits  # 2 d loss / d logits
        del logits
    if reduction == "none":
        loss = ((rows.astype(np.float64) + cols) * 0.5).astype(cdt)
    else:
        loss = cdt.type((np.float64(rows) + np.float64(cols)) * 0.5)
    if not want_grad:
        return loss

    # d logits = g / 2; logits = A B^T with A = Î / tau: d Î = (g / 2) B / tau, d B = (g / 2)^T A
    d_a = g @ b
    d_a *= cdt.type(0.5 / tau)
    d_b = g.T @ a
    d_b *= cdt.type(0.5)
    del g
    if normalize:
        _normalize_backward(d_a, a, tau, inv_a)
        _normalize_backward(d_b, b, 1.0, inv_b)
    return loss, deliver_grads((d_a.astype(im.orig_dtype, copy=False),
                                d_b.astype(tx.orig_dtype, copy=False)), bufs)
