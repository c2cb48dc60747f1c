"""Overlap losses of segmentation: Dice, Tversky and generalized Dice (optax's semantics).

Inputs are ``(N, C, *spatial)`` batches: axis 0 is the batch, ``axis`` (1 by default) holds
the classes, every other axis is spatial. Per sample ``n`` and class ``c`` the kernel sums
over the spatial positions ``i``::

    I = sum_i p_i t_i,   P = sum_i p_i,   T = sum_i t_i

with ``p`` the softmax over classes of the logits (the sigmoid of a single channel), in one
pass over the input and the targets (``_core.overlap_stats``: the class axis is strided, so
a vector holds neighbouring pixels and the softmax over classes is one vector step per
class). The losses are then O(N * C) arithmetic on these sums here, and the gradient is a
second pass (``_core.overlap_grad``) given ``d loss / d p_i = A_nc t_i + B_nc``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from . import _core
from ._validation import (
    FloatInput,
    check_grad_out_given,
    check_real,
    check_reduction,
    float_input,
    grad_buffer,
    is_view_of,
    mean_scale,
    normalize_axis,
    same_memory_layout,
)

__all__ = ["dice_loss", "generalized_dice_loss", "tversky_loss"]

_CHUNK = 4096  # positions per partial sum of the statistics pass (a multiple of 64)
_ACT_NONE, _ACT_SOFTMAX, _ACT_SIGMOID = 0, 1, 2


def _ncs(a: np.ndarray, axis: int) -> np.ndarray:
    """View ``a`` as (N, C, S): batch, classes (``axis``), spatial positions (C order)."""
    b = np.moveaxis(a, axis, 1)
    return b.reshape(b.shape[0], b.shape[1], math.prod(b.shape[2:]))


class _Prepared:
    """Input, targets and options of one overlap-loss call, checked."""

    def __init__(self, input, target, axis, from_logits, smooth):
        self.x: FloatInput = float_input(input, "input")
        a = self.x.array
        if a.ndim < 2:
            raise ValueError(
                f"input must be at least 2-d: (N, C, *spatial) with the batch on axis 0 and "
                f"the classes on `axis`; got shape {a.shape} (add a batch axis: input[None])"
            )
        ax = normalize_axis(axis, a.ndim)
        if ax == 0:
            raise ValueError("axis 0 is the batch axis; the class axis must be another one "
                             "(axis=1 for (N, C, H, W), axis=-1 for (N, H, W, C))")
        self.axis = ax
        self.C = a.shape[ax]
        if self.C == 0:
            raise ValueError(f"the class axis (axis={axis}) of input is empty")
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be a bool, got {type(from_logits).__name__}")
        self.act = (_ACT_SIGMOID if self.C == 1 else _ACT_SOFTMAX) if from_logits else _ACT_NONE
        self.smooth = check_real(smooth, "smooth", 0.0)
        if not math.isfinite(self.smooth):
            raise ValueError(f"smooth must be finite, got {smooth!r}")
        self.x3 = _ncs(a, ax)
        self.N, self.S = self.x3.shape[0], self.x3.shape[2]
        self._targets(target)

    def _targets(self, target):
        a, ax = self.x.array, self.axis
        try:
            t = np.asarray(target)
        except Exception as exc:
            raise TypeError(f"target: cannot be converted to a numeric array ({exc})") from None
        if t.dtype.kind not in "biuf" and t.dtype.name != "bfloat16":
            raise TypeError(f"target: unsupported dtype {t.dtype}; use class indices (integers) "
                            "or one-hot / probabilities (numbers)")
        no_class = a.shape[:ax] + a.shape[ax + 1 :]
        self.dense = self.index = None
        cdt = self.x.compute_dtype
        if t.shape == a.shape:
            self.dense = _ncs(np.require(t, cdt, ["A"]), ax)
        elif t.shape == no_class and self.C == 1:  # a binary mask without the channel axis
            self.dense = _ncs(np.expand_dims(np.require(t, cdt, ["A"]), ax), ax)
        elif t.shape == no_class:
            if t.dtype.kind not in "iu":
                raise TypeError(
                    f"target of shape {t.shape} (the input's without the class axis) holds "
                    f"class indices and must be integers, got dtype {t.dtype}; pass one-hot "
                    f"or probability targets in the input's shape {a.shape}"
                )
            idx = np.moveaxis(np.expand_dims(t, ax), ax, 1)[:, 0]
            flat = np.require(idx, np.int64, ["C", "A"]).reshape(-1)
            bad = (flat < 0) | (flat >= self.C)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise IndexError(f"target holds the class index {flat[k]}, out of range for "
                                 f"{self.C} classes (axis {ax} of input)")
            self.index = flat
        else:
            raise ValueError(
                f"target has shape {t.shape}; expected the input's shape {a.shape} (one-hot or "
                f"probabilities) or {no_class} (class indices; a 0/1 mask when C = 1)"
            )

    def stats(self):
        """(N, C) float64 sums I = sum p t, P = sum p, T = sum t."""
        chunks = -(-self.S // _CHUNK)
        partial = np.empty((self.N, chunks, self.C, 3), dtype=np.float64)
        _core.overlap_stats(self.x3, self.dense, self.index, self.act, _CHUNK, partial)
        if chunks == 0:
            z = np.zeros((self.N, self.C))
            return z, z, z
        s = partial.sum(axis=1)
        return s[..., 0], s[..., 1], s[..., 2]

    def grad(self, A, B, grad_out):
        """The input's gradient for d loss / d p = A t + B ((N, C) each)."""
        x = self.x
        shape, core_dt = x.array.shape, x.array.dtype
        user = None if grad_out is None else grad_buffer(grad_out, shape, x.orig_dtype)
        result = user if user is not None else np.empty(shape, dtype=core_dt)
        # The kernel writes straight into the result when its (N, C, S) form is a view of it
        # (not when the class axis sits between spatial axes: then S cannot be one stride)
        # and it does not partly overlap an input; else into a temporary copied over after.
        g3 = _ncs(result, self.axis)
        direct = is_view_of(g3, result) and result.dtype == core_dt and not any(
            np.may_share_memory(result, o)
            and not (o is x.array and same_memory_layout(g3, self.x3))
            for o in [x.array] + ([] if self.dense is None else [self.dense])
        )
        temp = None
        if not direct:
            mshape = (shape[0], shape[self.axis]) + tuple(
                n for i, n in enumerate(shape) if i not in (0, self.axis))
            temp = np.empty(mshape, dtype=core_dt)
            g3 = temp.reshape(self.N, self.C, self.S)
        _core.overlap_grad(self.x3, self.dense, self.index, self.act,
                           np.ascontiguousarray(A, np.float64),
                           np.ascontiguousarray(B, np.float64), g3)
        if temp is not None:
            np.copyto(result, np.moveaxis(temp, 1, self.axis), casting="unsafe")
        if user is None and result.dtype != x.orig_dtype:
            return result.astype(x.orig_dtype)
        return result


def _check_weights(weight: Any, C: int) -> Optional[np.ndarray]:
    if weight is None:
        return None
    w = np.asarray(weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"class_weight: unsupported dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (C,):
        raise ValueError(f"class_weight must have shape ({C},) (one weight per class), got "
                         f"{w.shape}")
    return w


def _tversky(prep: _Prepared, alpha: float, beta: float, weight, reduction: str,
             return_grad: bool, grad_out):
    """Loss (reduced) and gradient of ``w_c (1 - (I + s) / (I + a FP + b FN + s))``."""
    I, P, T = prep.stats()
    if weight is not None and callable(weight):
        weight = weight(T)
    s = prep.smooth
    # D = I + alpha (P - I) + beta (T - I) + s;  loss = (alpha (P - I) + beta (T - I)) / D,
    # i.e. 1 - (I + s) / D without the cancellation of 1 - (nearly 1)
    fp, fn = P - I, T - I
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        num = alpha * fp + beta * fn
        D = I + num + s
        # (alpha, beta near the float64 limit: num overflows, and the loss is 1 - (I + s) / D)
        per = np.where(np.isinf(num) & np.isfinite(I), 1.0 - (I + s) / D, num / D)
    if weight is not None:
        per = per * weight
    loss_dtype = prep.x.loss_dtype
    count = per.size
    if reduction == "none":
        loss = per.astype(loss_dtype)
    elif reduction == "sum":
        loss = loss_dtype.type(per.sum())
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = loss_dtype.type(np.float64(per.sum()) / np.float64(count))
    if not return_grad:
        return loss
    scale = mean_scale(reduction, count)
    w = scale if weight is None else scale * weight
    # d loss / d p_i = A t_i + B:  A = -1/D + (1 - a - b)(I + s)/D^2,  B = a (I + s)/D^2
    # (the products with a and b taken apart: no inf * 0 for a, b near the float64 limit)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = (I + s) / D / D
        A = w * (-1.0 / D + (q - alpha * q - beta * q))
        B = w * (alpha * q)
    return loss, prep.grad(A, B, grad_out)


_SHARED_PARAMS = """    input : array_like
        ``(N, C, *spatial)`` scores: logits (``from_logits=True``) or probabilities. Axis 0
        is the batch, ``axis`` the classes, the others are spatial (summed over per sample
        and class). float32/float64 keep their dtype; float16/bfloat16 are computed in float32
        (float32 losses, gradient in the input dtype); integers give float64.
    target : array_like
        Either the input's shape: one-hot or class probabilities (any real dtype, used as
        given: soft labels are allowed, values are not checked); or the input's shape without
        the class axis: integer class indices in ``[0, C)`` (for ``C = 1``: a 0/1 (or
        probability) mask of the foreground).
    axis : int
        The class axis (not 0, the batch axis).
    from_logits : bool
        ``True``: probabilities are the softmax of ``input`` over the class axis, or, for a
        single channel (``C = 1``, binary segmentation), its sigmoid. ``False``: ``input``
        holds probabilities already (not checked to sum to 1, so per-class sigmoid outputs
        of multi-label segmentation can be given as they are).
    smooth : float
        ``s >= 0``, added to numerator and denominator (finite)."""

_SHARED_RETURNS = """    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray ``(N, C)`` (``"none"``)
    grad : ndarray, only with ``return_grad``: d(loss)/d(input) in the input's shape and dtype"""


def tversky_loss(input: Any, target: Any, *, alpha: float = 0.5, beta: float = 0.5,
                 axis: int = 1, from_logits: bool = True, smooth: float = 1.0,
                 reduction: str = "mean", return_grad: bool = False, grad_out: Any = None):
    """Tversky loss of a segmentation batch (optax's ``dice_loss`` with ``alpha``, ``beta``).

    Per sample ``n`` and class ``c``, with sums over the spatial positions ``i``,
    ``I = sum p t``, false positives ``FP = sum p (1 - t) = P - I`` and false negatives
    ``FN = sum (1 - p) t = T - I``::

        loss_nc = 1 - (I + s) / (I + alpha FP + beta FN + s)

    ``alpha = beta = 0.5`` is :func:`dice_loss`; ``alpha = beta = 1`` the Jaccard (IoU) loss;
    ``beta > alpha`` weighs missed foreground more (Salehi et al., 2017).

    Parameters
    ----------
{params}
    alpha, beta : float
        Weights ``>= 0`` of the false positives and false negatives (finite).
    reduction : {{"mean", "sum", "none"}}
        Over the ``(N, C)`` per-sample, per-class losses.
    return_grad : bool
        Also return d(returned loss)/d(input), through the softmax or sigmoid.
    grad_out : ndarray, optional
        Where to write the gradient: the input's shape and dtype, writable; it may be
        ``input`` itself (in place). Requires ``return_grad=True``.

    Returns
    -------
{returns}

    Raises
    ------
    ValueError
        An input of fewer than 2 dimensions, ``axis`` 0, an empty class axis, a target of
        another shape, negative or non-finite ``alpha``, ``beta``, ``smooth``, an unknown
        ``reduction``.
    IndexError
        A class index outside ``[0, C)``.
    TypeError
        Non-integer class indices, a non-bool ``from_logits``, complex or object input.

    Notes
    -----
    ``reduction="mean"`` is the mean over samples and classes, which is
    ``jnp.mean(optax.losses.dice_loss(...))`` with the classes last. The loss is computed as
    ``(alpha FP + beta FN) / (I + alpha FP + beta FN + s)`` from float64 sums (no
    cancellation for nearly perfect predictions). Gradient: ``d loss / d p_i = A t_i + B``
    with ``D`` the denominator, ``A = -1/D + (1 - alpha - beta)(I + s) / D^2`` and
    ``B = alpha (I + s) / D^2``, then through the activation
    (softmax: ``p_c (g_c - sum_k p_k g_k)``; sigmoid: ``g p (1 - p)``). With ``s = 0`` an
    empty class that is also predicted empty gives 0 / 0 = NaN. Logits of any finite size are
    safe (the softmax is taken against each pixel's largest logit).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> logits = np.array([[[[2.0, -1.0], [0.5, 3.0]], [[-2.0, 1.0], [0.0, -3.0]]]])
    >>> labels = np.array([[[0, 1], [1, 0]]])  # (N, H, W) class indices
    >>> round(float(fl.tversky_loss(logits, labels, alpha=0.3, beta=0.7)), 6)
    0.13117
    >>> loss, grad = fl.tversky_loss(logits, labels, return_grad=True)
    >>> grad.shape
    (1, 2, 2, 2)
    """
    return _call(input, target, alpha, beta, None, axis, from_logits, smooth, reduction,
                 return_grad, grad_out)


def dice_loss(input: Any, target: Any, *, axis: int = 1, from_logits: bool = True,
              smooth: float = 1.0, class_weight: Any = None, reduction: str = "mean",
              return_grad: bool = False, grad_out: Any = None):
    """Soft Dice loss of a segmentation batch (optax's ``dice_loss``), binary or multi-class.

    Per sample ``n`` and class ``c``, with sums over the spatial positions ``i`` of
    ``I = sum p t``, ``P = sum p``, ``T = sum t``::

        loss_nc = w_c * (1 - (2 I + 2 s) / (P + T + 2 s))

    which is optax's ``1 - (I + s) / (I + (FP + FN) / 2 + s)`` (:func:`tversky_loss` with
    ``alpha = beta = 0.5``). MONAI's ``DiceLoss`` and segmentation_models_pytorch's
    ``DiceLoss`` write ``(2 I + s') / (P + T + s')``: theirs with ``s'`` is this one with
    ``smooth = s' / 2``.

    Parameters
    ----------
{params}
    class_weight : array_like, optional
        ``(C,)`` weights ``w_c`` of the per-class losses (as optax's ``class_weights``: they
        multiply the losses; ``"mean"`` still divides by ``N * C``).
    reduction : {{"mean", "sum", "none"}}
        Over the ``(N, C)`` weighted per-sample, per-class losses.
    return_grad : bool
        Also return d(returned loss)/d(input), through the softmax or sigmoid.
    grad_out : ndarray, optional
        Where to write the gradient: the input's shape and dtype, writable; it may be
        ``input`` itself (in place). Requires ``return_grad=True``.

    Returns
    -------
{returns}

    Raises
    ------
    ValueError
        As :func:`tversky_loss`, and ``class_weight`` not of shape ``(C,)``.
    IndexError
        A class index outside ``[0, C)``.
    TypeError
        Non-integer class indices, a non-bool ``from_logits``, complex or object input.

    Notes
    -----
    ``reduction="mean"`` equals ``jnp.mean(optax.losses.dice_loss(...))`` (optax's own
    ``"mean"`` averages over classes only and returns one loss per sample). Binary
    segmentation: a single channel ``(N, 1, H, W)`` of logits (sigmoid) with a ``(N, H, W)``
    or ``(N, 1, H, W)`` mask; or two channels with class indices (softmax). See
    :func:`tversky_loss` for the computation and the gradient.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> logits = np.array([[[[2.0, -1.0], [0.5, 3.0]], [[-2.0, 1.0], [0.0, -3.0]]]])
    >>> labels = np.array([[[0, 1], [1, 0]]])  # (N, H, W) class indices
    >>> np.round(fl.dice_loss(logits, labels, reduction="none"), 6)  # (N, C)
    array([[0.113391, 0.144374]])
    >>> mask = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # binary: one channel, sigmoid
    >>> round(float(fl.dice_loss(logits[:, :1], mask)), 6)
    0.157333
    """
    return _call(input, target, 0.5, 0.5, class_weight, axis, from_logits, smooth, reduction,
                 return_grad, grad_out)


def generalized_dice_loss(input: Any, target: Any, *, axis: int = 1, from_logits: bool = True,
                          smooth: float = 1.0, reduction: str = "mean",
                          return_grad: bool = False, grad_out: Any = None):
    """Generalized Dice loss: Dice with inverse-squared-volume class weights (optax's
    ``multiclass_generalized_dice_loss``).

    The weights come from the targets of the whole batch: with ``V_c = sum_{{n, i}} t_nci`` the
    volume of class ``c``::

        w_c = C * u_c / sum_k u_k,   u_c = 1 / (V_c**2 + 1e-7)

    and the loss is :func:`dice_loss` with ``class_weight=w`` (Sudre et al., 2017, with
    optax's per-class form and normalisation; rare classes weigh more).

    Parameters
    ----------
{params}
    reduction : {{"mean", "sum", "none"}}
        Over the ``(N, C)`` weighted per-sample, per-class losses; ``"mean"`` (default) is
        optax's value.
    return_grad : bool
        Also return d(returned loss)/d(input) (the weights depend on the targets only).
    grad_out : ndarray, optional
        Where to write the gradient: the input's shape and dtype, writable; it may be
        ``input`` itself (in place). Requires ``return_grad=True``.

    Returns
    -------
{returns}

    Raises
    ------
    ValueError, IndexError, TypeError
        As :func:`dice_loss`.

    Notes
    -----
    The signature is :func:`dice_loss`'s without ``class_weight`` (the weights are computed).
    MONAI's ``GeneralizedDiceLoss`` instead pools the classes into one ratio per sample,
    ``1 - 2 sum_c w_c I_c / sum_c w_c (P_c + T_c)``; this follows optax.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> logits = np.array([[[[2.0, -1.0], [0.5, 3.0]], [[-2.0, 1.0], [0.0, -3.0]]]])
    >>> labels = np.array([[[0, 0], [0, 1]]])  # class 1 is rare: it weighs more
    >>> round(float(fl.generalized_dice_loss(logits, labels)), 6)
    0.50773
    >>> round(float(fl.dice_loss(logits, labels)), 6)  # unweighted
    0.412959
    """

    def weights(T):
        V = T.sum(axis=0)
        u = 1.0 / (V * V + 1e-7)
        return u / u.sum() * len(u)

    return _call(input, target, 0.5, 0.5, weights, axis, from_logits, smooth, reduction,
                 return_grad, grad_out)


def _call(input, target, alpha, beta, weight, axis, from_logits, smooth, reduction,
          return_grad, grad_out):
    want = check_grad_out_given(grad_out, return_grad)
    reduction = check_reduction(reduction)
    a = check_real(alpha, "alpha", 0.0)
    b = check_real(beta, "beta", 0.0)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"alpha and beta must be finite, got {alpha!r}, {beta!r}")
    prep = _Prepared(input, target, axis, from_logits, smooth)
    if weight is not None and not callable(weight):
        weight = _check_weights(weight, prep.C)
    return _tversky(prep, a, b, weight, reduction, want, grad_out)


for _f in (tversky_loss, dice_loss, generalized_dice_loss):
    if _f.__doc__:  # (None under python -OO)
        _f.__doc__ = _f.__doc__.format(params=_SHARED_PARAMS, returns=_SHARED_RETURNS)
del _f
