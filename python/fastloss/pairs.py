"""Issue 16's losses from PyTorch's catalogue that fastloss lacked, and two shared by optax and
Keras: elementwise losses of one or two differentiable operands (Poisson and Gaussian negative
log-likelihoods, margin ranking, hinge embedding, soft margin, log-cosh, generalized KL) on one
fused C++ kernel each (``_core.pairwise``: loss and gradients in one pass over the operands),
and the row-wise cosine embedding and triplet (any distance) losses.

The multilabel losses are in :mod:`fastloss.multilabel`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from ._pointwise import _flat, _sum_to, real_array
from ._validation import (
    FloatInput,
    check_grad_out_given,
    check_real,
    check_reduction,
    deliver_grads,
    float_input,
    grad_buffer,
    grad_buffers,
    mean_scale,
    normalize_axes,
    reduce_rows,
    row_losses,
)

__all__ = [
    "cosine_embedding_loss",
    "gaussian_nll_loss",
    "generalized_kl_div",
    "hinge_embedding_loss",
    "log_cosh_loss",
    "margin_ranking_loss",
    "poisson_nll_loss",
    "soft_margin_loss",
    "triplet_margin_with_distance_loss",
]

# PairKind in src/cpp/pairs.hpp
KINDS = {"poisson_nll": 0, "gaussian_nll": 1, "margin_ranking": 2, "hinge_embedding": 3,
         "soft_margin": 4, "multilabel_soft_margin": 5, "log_cosh": 6, "generalized_kl": 7}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _common_storage(xs: list[FloatInput]) -> tuple[np.dtype, np.dtype]:
    """(storage dtype, compute dtype) for several differentiable operands: their common dtype
    when all share one, else the promotion of their loss dtypes (float32 or float64)."""
    dts = {x.array.dtype for x in xs}
    if len(dts) == 1:
        return xs[0].array.dtype, xs[0].compute_dtype
    dt = xs[0].loss_dtype
    for x in xs[1:]:
        dt = np.promote_types(dt, x.loss_dtype)
    return dt, dt


def _broadcast(shapes: list[tuple[str, tuple]]) -> tuple:
    first = tuple(shapes[0][1])
    if all(tuple(s) == first for _, s in shapes):  # (one shape: no NumPy call)
        return first
    try:
        return tuple(np.broadcast_shapes(*(s for _, s in shapes)))
    except ValueError:
        desc = ", ".join(f"{n} {s}" for n, s in shapes)
        raise ValueError(f"shapes do not broadcast together: {desc}") from None


def run_pairwise(kind: str, xs: list[FloatInput], targets: list[tuple[Any, str]], *,
                 weight: Any = None, p0: float = 0.0, log_input: bool = True,
                 full: bool = False, reduction: str = "mean", return_grad: bool = False,
                 grad_out: Any = None, grads: int = 1, full_shape: Optional[tuple] = None,
                 denom: Optional[int] = None, loss_scale: float = 1.0, bad: Any = None,
                 names: tuple = ("input", "input2")):
    """One call of ``_core.pairwise`` with NumPy broadcasting over every operand.

    ``xs``: the differentiable operands (one, or two for kinds with a second one, in kernel
    order); ``targets``: the (value, name) of the target operand. Returns ``(total, per-element
    losses of the broadcast shape or None, gradients list or None, broadcast shape)``; every
    gradient summed back to its operand's shape, in its dtype. ``denom``: what ``"mean"``
    divides by (default: the number of broadcast elements); ``loss_scale`` multiplies the
    losses' gradients (the caller scales the losses). ``bad(n_bad, operands)`` raises for
    invalid operands the kernel counted.
    """
    sdt, ct = _common_storage(xs)
    (tval, tname), = targets
    y = real_array(tval, tname, ct)
    w = None if weight is None else real_array(weight, "weight", ct)
    shapes = [(n, x.array.shape) for n, x in zip(names, xs)]
    shapes += [(tname, y.shape)] + ([("weight", w.shape)] if w is not None else [])
    shape = _broadcast(shapes) if full_shape is None else full_shape
    n = math.prod(shape)
    xf = [_flat(x.array, shape, sdt) for x in xs]
    yf = _flat(y, shape, ct)
    wf = None if w is None else _flat(w, shape, ct)
    loss_buf = np.empty(n, dtype=ct) if reduction == "none" else None
    if denom is None:
        denom = n
    scale = mean_scale(reduction, denom) * loss_scale
    # the caller's gradient buffers: ``grad_out`` an ndarray (the first operand's, checked
    # here) or a list with an entry (checked by the caller, see grad_buffers; None: fresh) per
    # operand, each of that operand's array's shape
    users = [None] * len(xs)
    if return_grad and grad_out is not None:
        if isinstance(grad_out, (list, tuple)):
            users[: len(grad_out)] = grad_out
        else:
            users[0] = grad_buffer(grad_out, xs[0].array.shape, xs[0].orig_dtype)
    gbufs = [None, None]
    direct = [False, False]
    if return_grad:
        for k in range(grads):
            u = users[k]
            # the kernel writes straight into a caller's C-contiguous buffer of the operand's
            # (the broadcast) shape and the storage dtype, which shares no memory with another
            # operand or buffer, or is exactly the operand it differentiates (element i of the
            # gradient is written after element i of the operand is read)
            direct[k] = (
                u is not None and shape == xs[k].array.shape and u.dtype == sdt
                and u.flags.c_contiguous
                and not any(a is not None and np.may_share_memory(u, a)
                            for j, a in enumerate([yf, wf] + xf + users)
                            if j != 2 + k and j != 2 + len(xf) + k)
                and (not np.may_share_memory(u, xf[k])
                     or u.__array_interface__["data"][0] == xf[k].__array_interface__["data"][0]))
            gbufs[k] = u.reshape(-1) if direct[k] else np.empty(n, dtype=sdt)
    x2f = xf[1] if len(xf) > 1 else None
    args = (KINDS[kind], xf[0], x2f, yf, wf, float(p0), bool(log_input), bool(full), scale)
    if bad is not None and any(u is not None for u in users):
        # invalid operands are found in the same pass that writes the gradient: with a
        # caller's buffer (maybe the input itself) a count-only pass over the operand
        # checked comes first, so that nothing is written when a check fails
        bad(_core.pairwise(*args, None, None, None, count_only=True)[1], xf, yf)
    total, n_bad = _core.pairwise(*args, loss_buf, gbufs[0], gbufs[1])
    if bad is not None and n_bad:
        bad(n_bad, xf, yf)
    per_elem = None if loss_buf is None else loss_buf.reshape(shape)
    if not return_grad:
        return total, per_elem, None, shape
    out = []
    for k, (x, g) in enumerate(zip(xs, gbufs)):
        if g is None:
            break
        if direct[k]:
            out.append(users[k])
            continue
        g = g.reshape(shape)
        if shape != x.array.shape:
            g = _sum_to(g, x.array.shape)
        out.append(g.astype(x.orig_dtype, copy=False))
    out = list(deliver_grads(out, users[: len(out)]))
    return total, per_elem, out, shape


def _finish(total: float, per_elem: Optional[np.ndarray], reduction: str, denom: float,
            loss_dtype: np.dtype, loss_scale: float = 1.0):
    """The reduced loss from the kernel's float64 total, or the per-element losses."""
    if reduction == "none":
        out = per_elem if loss_scale == 1.0 else per_elem * loss_dtype.type(loss_scale)
        return out.astype(loss_dtype, copy=False)
    total = float(total) * loss_scale
    if reduction == "sum":
        return loss_dtype.type(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return loss_dtype.type(np.float64(total) / np.float64(denom))  # empty: NaN, as torch


def _loss_dtype(xs: list[FloatInput]) -> np.dtype:
    dt = xs[0].loss_dtype
    for x in xs[1:]:
        dt = np.promote_types(dt, x.loss_dtype)
    return dt




def _plain(a: Any) -> bool:
    """A float32/float64 ndarray: float_input takes it as it is and cannot fail on it, so a
    function may try the small-call fast path (``_core.pairwise_fast``: ndarrays of one shape,
    dtype and C order, checked in the core, None where it does not apply or finds invalid
    operands) before float_input, whose checks and cost then wait for the general path."""
    return type(a) is np.ndarray and a.dtype.char in "fd"


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# ---------------------------------------------------------------------------------------------
# Poisson negative log-likelihood
# ---------------------------------------------------------------------------------------------
def poisson_nll_loss(input: Any, target: Any, *, log_input: bool = True, full: bool = False,
                     eps: float = 1e-8, reduction: str = "mean", return_grad: bool = False,
                     grad_out: Any = None):
    """Poisson negative log-likelihood, as :func:`torch.nn.functional.poisson_nll_loss`.

    Per element, with the rate given as its log (``log_input=True``) or as is::

        log_input=True:   loss = exp(input) - target * input
        log_input=False:  loss = input - target * log(input + eps)

    plus, with ``full=True``, Stirling's approximation of ``log(target!)``,
    ``target * log(target) - target + 0.5 * log(2 pi target)``, where ``target > 1`` (0 else).

    Parameters
    ----------
    input : array_like
        Log-rates (``log_input=True``) or rates ``>= 0``. float32/float64 keep their dtype;
        float16/bfloat16 are computed in float32 (float32 losses, gradient in the input dtype);
        integers give float64.
    target : array_like
        Observed counts (any real numbers are accepted, as torch); broadcasts with ``input``
        by NumPy rules.
    log_input : bool
        Whether ``input`` holds log-rates.
    full : bool
        Add the Stirling term (constant in ``input``: no effect on the gradient).
    eps : float >= 0
        Keeps ``log(input + eps)`` finite at a rate of 0 (``log_input=False`` only).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over the broadcast elements; ``"none"``: the losses of the broadcast shape.
    return_grad : bool
        Also return d(returned loss)/d(input) (summed over broadcast axes).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (it may be
        ``input`` itself).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        A negative rate with ``log_input=False`` (torch gives NaN), ``eps`` negative or not
        finite, shapes that do not broadcast, an unknown ``reduction``.
    TypeError
        Non-bool ``log_input`` / ``full``, unsupported dtypes.

    Notes
    -----
    Gradient: ``exp(input) - target`` (``log_input=True``) or ``1 - target / (input + eps)``.
    Where ``target == 0`` the ``target * ...`` term is 0 (never ``0 * inf = NaN``, e.g. at a
    rate of 0 with ``eps=0``). A log-rate above ~88.7 (float32) or ~709.8 (float64)
    overflows ``exp`` to ``inf``, as in torch. Sums accumulate in float64.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> round(float(fl.poisson_nll_loss([0.0, np.log(2.0)], [1.0, 2.0])), 6)  # (3 - 2 log 2) / 2
    0.806853
    >>> loss, grad = fl.poisson_nll_loss([1.0, 2.0], [1.0, 4.0], log_input=False, eps=0.0,
    ...                                  reduction="sum", return_grad=True)
    >>> grad  # 1 - target / input
    array([ 0., -1.])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input)
    x = None if fast else float_input(input, "input")
    log_input = _check_bool(log_input, "log_input")
    full = _check_bool(full, "full")
    e = check_real(eps, "eps", 0.0)
    if not math.isfinite(e):
        raise ValueError(f"eps must be finite, got {eps!r}")
    reduction = check_reduction(reduction)
    if fast:
        r = _core.pairwise_fast(KINDS["poisson_nll"], input, None, target, e, log_input, full,
                                reduction, return_grad, False, grad_out)
        if r is not None:
            return r
        x = float_input(input, "input")

    def bad(n_bad, xf, yf):
        if n_bad:
            i = _first_bad(xf[0] < 0)
            raise ValueError(f"input holds rates (log_input=False), which must be >= 0; "
                             f"input.flat[{i}] = {xf[0][i]!r} (broadcast)")

    total, per, grads, shape = run_pairwise(
        "poisson_nll", [x], [(target, "target")], p0=e, log_input=log_input, full=full,
        reduction=reduction, return_grad=return_grad, grad_out=grad_out,
        bad=None if log_input else bad)
    loss = _finish(total, per, reduction, math.prod(shape), x.loss_dtype)
    return (loss, grads[0]) if return_grad else loss


# ---------------------------------------------------------------------------------------------
# Gaussian negative log-likelihood
# ---------------------------------------------------------------------------------------------
def _gaussian_var(var: Any, input_shape: tuple) -> tuple[FloatInput, bool, tuple]:
    """var as an operand of the kernel, by torch's rules: a Python number (one variance for
    all), input's shape, input's shape without the last axis (one per sample: a trailing axis
    is added) or input's number of axes with exactly one axis of size 1 where input's differs
    (e.g. (N, 1) against (N, D)). Returns (operand, was a number, the shape broadcast)."""
    if isinstance(var, numbers.Real) and not isinstance(var, (bool, np.bool_)):
        v = float(var)
        if v < 0:
            raise ValueError(f"var has negative entry/entries: var = {var!r}")
        return float_input(np.float64(v), "var"), True, ()
    vi = float_input(var, "var")
    vs = vi.array.shape
    if vs != input_shape:
        if vs == input_shape[:-1] and len(input_shape) >= 1:
            vi = vi._replace(array=vi.array[..., None])
        elif not (len(vs) == len(input_shape)
                  and sum(b for a, b in zip(input_shape, vs) if a != b) == 1):
            raise ValueError(
                f"var is of incorrect size: var has shape {vs}; for input of shape "
                f"{input_shape} it must have that shape, {input_shape[:-1]} (one variance per "
                "sample), or that shape with exactly one axis of size 1 (broadcast along it)")
    return vi, False, vs


def gaussian_nll_loss(input: Any, target: Any, var: Any, *, full: bool = False,
                      eps: float = 1e-6, reduction: str = "mean", return_grad: bool = False,
                      grad_out: Any = None):
    """Gaussian negative log-likelihood, as :func:`torch.nn.functional.gaussian_nll_loss`.

    Per element, with ``v = max(var, eps)``::

        loss = 0.5 * (log(v) + (input - target)**2 / v)   (+ 0.5 * log(2 pi) with full)

    Parameters
    ----------
    input : array_like
        Predicted means. float32/float64 keep their dtype; float16/bfloat16 are computed in
        float32; integers give float64.
    target : array_like
        Observations; broadcasts with ``input`` by NumPy rules (as torch's subtraction).
    var : array_like or float
        Predicted variances ``>= 0``, by torch's shape rules: ``input``'s shape; ``input``'s
        shape without the last axis (one variance per sample, homoscedastic); ``input``'s
        number of axes with exactly one axis of size 1 where ``input``'s differs (e.g.
        ``(N, 1)`` against ``(N, D)``); or a Python number (one variance for all).
    full : bool
        Add the constant ``0.5 * log(2 pi)`` per element.
    eps : float > 0
        Variances are clamped to at least ``eps`` (for stability, as torch).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over the broadcast elements; ``"none"``: the losses of the broadcast shape.
    return_grad : bool
        Also return ``(d_input, d_var)``, each in its operand's shape and dtype (a Python
        number ``var`` gets a 0-d float64 array: the sum over all elements).
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_input, d_var)``, each an ndarray of that gradient's shape
        and dtype (for a Python number ``var``: a 0-d float64 array) or None (that gradient is
        allocated); needs ``return_grad=True``. An entry may be its operand itself (in-place
        use; the results are those of a call without ``grad_out``); the two entries must not
        share memory. The returned tuple holds these arrays where given. Nothing is written to
        them when the call raises (e.g. for a negative variance).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_input, d_var), only with ``return_grad``

    Raises
    ------
    ValueError
        A negative variance, a ``var`` of a shape the rules above reject, ``eps`` not
        positive and finite, an unknown ``reduction``; a ``grad_out`` entry of the wrong shape
        or read-only, entries that share memory, a ``grad_out`` of the wrong length or
        without ``return_grad``.
    TypeError
        Non-bool ``full``, unsupported dtypes; a ``grad_out`` that is not a tuple or list, an
        entry that is not an ndarray or of the wrong dtype.

    Notes
    -----
    Gradients, with ``d = input - target``: ``d / v`` and ``0.5 * (1 / v - d**2 / v**2)``.
    As torch (which clamps under ``no_grad``), the clamp is not differentiated: where
    ``var < eps`` the variance gradient is the formula's value at ``v = eps``. The gradient
    with respect to ``target`` is ``-d_input`` (summed over broadcast axes) and is not
    returned. Sums accumulate in float64.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x, y = np.array([1.0, 2.0]), np.array([0.0, 2.0])
    >>> float(fl.gaussian_nll_loss(x, y, np.array([1.0, 1.0])))  # 0.5 (1 + 0) / 2
    0.25
    >>> loss, (d_x, d_var) = fl.gaussian_nll_loss(x, y, 1.0, reduction="sum", return_grad=True)
    >>> d_x, float(d_var)  # d / v; sum of 0.5 (1 - d**2)
    (array([1., 0.]), 0.5)
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input) and _plain(var) and var.shape == input.shape
    x = None if fast else float_input(input, "input")
    full = _check_bool(full, "full")
    e = check_real(eps, "eps")
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if not fast:
        vi, scalar_var, _ = _gaussian_var(var, x.array.shape)
    reduction = check_reduction(reduction)
    if fast:
        r = _core.pairwise_fast(KINDS["gaussian_nll"], input, var, target, e, True, full,
                                reduction, return_grad, False, grad_out)
        if r is not None:
            return r
        x = float_input(input, "input")
        vi, scalar_var, _ = _gaussian_var(var, x.array.shape)
    if scalar_var:  # (the number takes input's dtype, as torch's var * ones_like(input))
        vi = FloatInput(vi.array.astype(x.array.dtype), _F64, x.loss_dtype, x.compute_dtype)
    bufs = users = None
    if grad_out is not None:
        bufs = grad_buffers(grad_out, [(x.array.shape, x.orig_dtype),
                                       (np.shape(var) if not scalar_var else (), vi.orig_dtype)],
                            ("input", "var"))
        # (var's buffer seen in the operand's shape: one variance per sample has a trailing
        # axis added)
        users = [bufs[0], None if bufs[1] is None else bufs[1].reshape(vi.array.shape)]
        if users[1] is not None and not np.may_share_memory(users[1], bufs[1]):
            users[1] = None  # (not expressible as a view: written at the end)

    def bad(n_bad, xf, yf):
        if n_bad:
            i = _first_bad(xf[1] < 0)
            raise ValueError(f"var has negative entry/entries: var.flat[{i}] = {xf[1][i]!r} "
                             "(broadcast)")

    total, per, grads, shape = run_pairwise(
        "gaussian_nll", [x, vi], [(target, "target")], p0=e, full=full, reduction=reduction,
        return_grad=return_grad, grad_out=users, grads=2, bad=bad, names=("input", "var"))
    loss = _finish(total, per, reduction, math.prod(shape), _loss_dtype([x, vi]))
    if not return_grad:
        return loss
    gx, gv = grads
    if scalar_var:
        gv = np.asarray(gv.reshape(()), dtype=_F64)
    elif gv.shape != np.shape(var):  # the trailing axis added for one variance per sample
        gv = gv.reshape(np.shape(var))
    return loss, deliver_grads((gx, gv), bufs)


# ---------------------------------------------------------------------------------------------
# Margin ranking, hinge embedding, soft margin
# ---------------------------------------------------------------------------------------------
def _finite_margin(margin: Any) -> float:
    m = check_real(margin, "margin")
    if not math.isfinite(m):
        raise ValueError(f"margin must be finite, got {margin!r}")
    return m


def margin_ranking_loss(input1: Any, input2: Any, target: Any, *, margin: float = 0.0,
                        reduction: str = "mean", return_grad: bool = False,
                        grad_out: Any = None):
    """Margin ranking loss, as :func:`torch.nn.functional.margin_ranking_loss`.

    Per element, ``target = 1`` asking for ``input1`` to rank above ``input2`` and ``-1`` for
    the reverse::

        loss = max(0, -target * (input1 - input2) + margin)

    Parameters
    ----------
    input1, input2 : array_like
        Scores; float32/float64 keep their dtype (two different dtypes compute in their
        promotion); float16/bfloat16 are computed in float32; integers give float64.
    target : array_like
        Usually 1 or -1 (any real number is accepted, as torch: the formula is used as is).
        ``input1``, ``input2`` and ``target`` broadcast by NumPy rules (torch also asks them
        to have one number of axes; fastloss does not).
    margin : float
        Any finite number.
    reduction : {"mean", "sum", "none"}
    return_grad : bool
        Also return ``(d_input1, d_input2)``, each in its input's shape and dtype.
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_input1, d_input2)``, each an ndarray of its input's shape
        and dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry
        may be its input itself (in-place use; the results are those of a call without
        ``grad_out``); the two entries must not share memory. The returned tuple holds these
        arrays where given.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_input1, d_input2), only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes that do not broadcast, a non-finite ``margin``, an unknown ``reduction``; a
        ``grad_out`` entry of the wrong shape or read-only, entries that share memory, a
        ``grad_out`` of the wrong length or without ``return_grad``.
    TypeError
        Unsupported dtypes; a ``grad_out`` that is not a tuple or list, an entry that is not
        an ndarray or of the wrong dtype.

    Notes
    -----
    Gradients ``-target`` and ``target`` where ``z = margin - target * (input1 - input2) >=
    0``, else 0: the kink ``z = 0`` passes the gradient, as torch's ``clamp_min``.

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.margin_ranking_loss([1.0, 2.0, 0.5], [2.0, 1.0, 0.0], [1, 1, -1], margin=0.5,
    ...                        reduction="none")
    array([1.5, 0. , 1. ])
    >>> loss, (d1, d2) = fl.margin_ranking_loss([1.0, 2.0], [2.0, 1.0], [1, 1], return_grad=True)
    >>> d1, d2
    (array([-0.5,  0. ]), array([0.5, 0. ]))
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input1) and _plain(input2)
    if not fast:
        a, b = float_input(input1, "input1"), float_input(input2, "input2")
    m = _finite_margin(margin)
    reduction = check_reduction(reduction)
    if fast:
        r = _core.pairwise_fast(KINDS["margin_ranking"], input1, input2, target, m, True,
                                False, reduction, return_grad, False, grad_out)
        if r is not None:
            return r
        a, b = float_input(input1, "input1"), float_input(input2, "input2")
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(a.array.shape, a.orig_dtype), (b.array.shape, b.orig_dtype)],
        ("input1", "input2"))
    total, per, grads, shape = run_pairwise(
        "margin_ranking", [a, b], [(target, "target")], p0=m, reduction=reduction,
        return_grad=return_grad, grad_out=bufs, grads=2, names=("input1", "input2"))
    loss = _finish(total, per, reduction, math.prod(shape), _loss_dtype([a, b]))
    return (loss, tuple(grads)) if return_grad else loss


def _bad_labels(name: str):
    def bad(n_bad, xf, yf):
        if n_bad:
            i = _first_bad((yf != 1) & (yf != -1))
            raise ValueError(f"{name} must hold labels 1 or -1; {name}.flat[{i}] = {yf[i]!r} "
                             "(broadcast)")
    return bad


def hinge_embedding_loss(input: Any, target: Any, *, margin: float = 1.0,
                         reduction: str = "mean", return_grad: bool = False,
                         grad_out: Any = None):
    """Hinge embedding loss, as :func:`torch.nn.functional.hinge_embedding_loss`.

    Per element, ``input`` usually a distance and ``target`` 1 (similar) or -1 (dissimilar)::

        loss = input                      where target == 1
        loss = max(0, margin - input)     where target == -1

    Parameters
    ----------
    input : array_like
        float32/float64 keep their dtype; float16/bfloat16 are computed in float32 (float32
        losses, gradient in the input dtype); integers give float64.
    target : array_like
        Labels 1 or -1; broadcasts with ``input`` by NumPy rules. Other values are a
        ValueError (torch gives them the sum of both formulas).
    margin : float
        Any finite number.
    reduction : {"mean", "sum", "none"}
    return_grad : bool
        Also return d(returned loss)/d(input).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (may be ``input``).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        A label other than 1 or -1 (nothing is written to ``grad_out`` then), a non-finite
        ``margin``, shapes that do not broadcast, an unknown ``reduction``.

    Notes
    -----
    Gradient 1 (``target == 1``) or ``-[margin - input >= 0]`` (``target == -1``; the kink
    passes the gradient, as torch's ``clamp_min``).

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.hinge_embedding_loss([0.3, 0.3, 2.0], [1, -1, -1], reduction="none")
    array([0.3, 0.7, 0. ])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input)
    x = None if fast else float_input(input, "input")
    m = _finite_margin(margin)
    reduction = check_reduction(reduction)
    if fast:
        r = _core.pairwise_fast(KINDS["hinge_embedding"], input, None, target, m, True, False,
                                reduction, return_grad, False, grad_out)
        if r is not None:
            return r
        x = float_input(input, "input")
    total, per, grads, shape = run_pairwise(
        "hinge_embedding", [x], [(target, "target")], p0=m, reduction=reduction,
        return_grad=return_grad, grad_out=grad_out, bad=_bad_labels("target"))
    loss = _finish(total, per, reduction, math.prod(shape), x.loss_dtype)
    return (loss, grads[0]) if return_grad else loss


def soft_margin_loss(input: Any, target: Any, *, reduction: str = "mean",
                     return_grad: bool = False, grad_out: Any = None):
    """Two-class logistic loss, as :func:`torch.nn.functional.soft_margin_loss`.

    Per element, ``target`` usually 1 or -1::

        loss = log(1 + exp(-target * input))

    Parameters
    ----------
    input : array_like
        Scores; float32/float64 keep their dtype; float16/bfloat16 are computed in float32
        (float32 losses, gradient in the input dtype); integers give float64.
    target : array_like
        Labels, usually 1 or -1 (any real number is accepted, as torch); broadcasts with
        ``input`` by NumPy rules.
    reduction : {"mean", "sum", "none"}
    return_grad : bool
        Also return d(returned loss)/d(input).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (may be ``input``).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes that do not broadcast, an unknown ``reduction``.

    Notes
    -----
    Computed as ``softplus(t) = max(t, 0) + log1p(exp(-|t|))`` with ``t = -target * input``
    (finite for every finite input); gradient ``-target * sigmoid(t)``.

    Examples
    --------
    >>> import fastloss as fl
    >>> round(float(fl.soft_margin_loss([0.0, 100.0], [1, 1])), 6)  # (log 2 + 0) / 2
    0.346574
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input)
    x = None if fast else float_input(input, "input")
    reduction = check_reduction(reduction)
    if fast:
        r = _core.pairwise_fast(KINDS["soft_margin"], input, None, target, 0.0, True, False,
                                reduction, return_grad, False, grad_out)
        if r is not None:
            return r
        x = float_input(input, "input")
    total, per, grads, shape = run_pairwise(
        "soft_margin", [x], [(target, "target")], reduction=reduction,
        return_grad=return_grad, grad_out=grad_out)
    loss = _finish(total, per, reduction, math.prod(shape), x.loss_dtype)
    return (loss, grads[0]) if return_grad else loss


# ---------------------------------------------------------------------------------------------
# log-cosh and generalized KL (optax's semantics)
# ---------------------------------------------------------------------------------------------
def log_cosh_loss(input: Any, target: Any, *, reduction: str = "mean",
                  return_grad: bool = False, grad_out: Any = None):
    """Log-cosh loss, as optax's ``log_cosh`` (Keras's ``LogCosh``, ``log_cosh``).

    Per element, with ``d = input - target``::

        loss = log(cosh(d))     (~ d**2 / 2 for small d, ~ |d| - log 2 for large d)

    Parameters
    ----------
    input : array_like
        Predictions; float32/float64 keep their dtype; float16/bfloat16 are computed in
        float32 (float32 losses, gradient in the input dtype); integers give float64.
    target : array_like
        Broadcasts with ``input`` by NumPy rules.
    reduction : {"mean", "sum", "none"}
        ``"none"`` is optax's ``log_cosh`` (per element); ``"mean"`` over all elements is
        Keras's (its mean over the last axis then over the batch gives the same number).
    return_grad : bool
        Also return d(returned loss)/d(input) (``tanh(d)`` per element).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (may be ``input``).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        Shapes that do not broadcast, an unknown ``reduction``.

    Notes
    -----
    Stable and accurate for any difference (within ~4 ulp of the exact value in float32 and
    float64): for ``|d| <= 0.7``, ``log1p(2 sinh(|d|/2)**2)`` with ``sinh`` and ``cosh`` by
    their Taylor series (no cancellation near 0, where ``|d| + log1p(exp(-2|d|)) - log 2``
    loses the small result); above, ``(|d| - log 2) + log1p(exp(-2|d|))`` with ``log 2`` in two
    parts (``|d| - log 2`` is then exact or without cancellation; no overflow for any ``d``).
    The gradient ``tanh(d)`` comes from the same terms.

    Examples
    --------
    >>> import fastloss as fl
    >>> fl.log_cosh_loss([0.0, 1.0, 100.0], [0.0, 0.0, 0.0], reduction="none")
    array([ 0.        ,  0.43378083, 99.30685282])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input)
    x = None if fast else float_input(input, "input")
    reduction = check_reduction(reduction)
    if fast:
        r = _core.pairwise_fast(KINDS["log_cosh"], input, None, target, 0.0, True, False,
                                reduction, return_grad, False, grad_out)
        if r is not None:
            return r
        x = float_input(input, "input")
    total, per, grads, shape = run_pairwise(
        "log_cosh", [x], [(target, "target")], reduction=reduction,
        return_grad=return_grad, grad_out=grad_out)
    loss = _finish(total, per, reduction, math.prod(shape), x.loss_dtype)
    return (loss, grads[0]) if return_grad else loss


def generalized_kl_div(input: Any, target: Any, *, axis: Any = -1, reduction: str = "mean",
                       return_grad: bool = False, grad_out: Any = None):
    """Generalized Kullback-Leibler divergence of unnormalized measures, as optax's
    ``generalized_kl_divergence`` (formerly ``convex_kl_divergence``; the I-divergence).

    Per row (the elements along ``axis``), with ``input`` the log of the predicted measure::

        loss = sum(target * (log(target) - input) + exp(input) - target)

    (``target * log(target)`` is 0 where ``target == 0``). It is the KL divergence of
    ``target`` from ``exp(input)`` plus ``sum(exp(input) - target)``: non-negative, 0 only
    where ``exp(input) == target``, for measures that need not sum to 1.

    Parameters
    ----------
    input : array_like
        Log-predictions; float32/float64 keep their dtype; float16/bfloat16 are computed in
        float32 (float32 losses, gradient in the input dtype); integers give float64.
    target : array_like
        Non-negative measures; broadcasts with ``input`` by NumPy rules.
    axis : int, tuple of ints or None
        The axis (axes) summed over, of the broadcast shape; ``None``: all.
    reduction : {"mean", "sum", "none"}
        ``"none"``: optax's result, one value per row (the broadcast shape without ``axis``);
        ``"mean"``: the mean over rows; ``"sum"``.
    return_grad : bool
        Also return d(returned loss)/d(input) (``exp(input) - target`` per element, over the
        number of rows for ``"mean"``).
    grad_out : ndarray, optional
        A preallocated array of ``input``'s shape and dtype for the gradient (may be ``input``).

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : ndarray, only with ``return_grad``

    Raises
    ------
    ValueError
        A negative ``target`` (optax gives NaN; nothing is written to ``grad_out`` then), a
        bad ``axis``, shapes that do not broadcast, an unknown ``reduction``.

    Notes
    -----
    optax's ``where`` mask is not offered: pass ``target = 0`` and ``input = -inf`` for
    elements to leave out (their loss and gradient are 0). ``exp(input)`` overflows for
    log-predictions above ~88.7 (float32) or ~709.8 (float64). Sums accumulate in float64.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x = np.log(np.array([[1.0, 2.0], [0.5, 0.5]]))
    >>> fl.generalized_kl_div(x, [[1.0, 2.0], [1.0, 0.0]], reduction="none")
    array([0.        , 0.69314718])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    fast = _plain(input) and type(axis) is int and axis == -1
    x = None if fast else float_input(input, "input")
    reduction = check_reduction(reduction)
    if fast:  # (mean over the rows of the last axis; "none": the per-element losses)
        r = _core.pairwise_fast(KINDS["generalized_kl"], input, None, target, 0.0, True, False,
                                reduction, return_grad, True, grad_out)
        if r is not None:
            if reduction != "none":
                return r
            per, g = r if return_grad else (r, None)
            loss = np.add.reduce(per, axis=-1, dtype=_F64).astype(per.dtype)  # (as below)
            return (loss, g) if return_grad else loss
        x = float_input(input, "input")
    y = real_array(target, "target", x.compute_dtype)
    shape = _broadcast([("input", x.array.shape), ("target", y.shape)])
    axes = normalize_axes(axis, len(shape))
    rows_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    rows = math.prod(rows_shape)

    def bad(n_bad, xf, yf):
        if n_bad:
            i = _first_bad(yf < 0)
            raise ValueError(f"target must be >= 0 (a measure); target.flat[{i}] = {yf[i]!r} "
                             "(broadcast)")

    total, per, grads, _ = run_pairwise(
        "generalized_kl", [x], [(y, "target")], reduction=reduction, return_grad=return_grad,
        grad_out=grad_out, full_shape=shape, denom=rows, bad=bad)
    if reduction == "none":
        loss = per.sum(axis=axes, dtype=_F64).astype(x.loss_dtype)
    else:
        loss = _finish(total, None, reduction, rows, x.loss_dtype)
    return (loss, grads[0]) if return_grad else loss


# ---------------------------------------------------------------------------------------------
# Row-wise: cosine embedding, triplet with any distance
# ---------------------------------------------------------------------------------------------
_BLOCK_ELEMENTS = 1 << 16  # float64 elements per block of rows: 512 KB temporaries
_COS_EPS = 1e-12  # torch's EPSILON in cosine_embedding_loss


def cosine_embedding_loss(input1: Any, input2: Any, target: Any, *, margin: float = 0.0,
                          reduction: str = "mean", return_grad: bool = False,
                          grad_out: Any = None):
    """Cosine embedding loss, as :func:`torch.nn.functional.cosine_embedding_loss`.

    Per pair of rows (the last axis is the embedding), with
    ``cos = <x1, x2> / sqrt((|x1|**2 + 1e-12) * (|x2|**2 + 1e-12))`` (torch's form)::

        loss = 1 - cos                    where target == 1
        loss = max(0, cos - margin)       where target == -1

    Parameters
    ----------
    input1, input2 : array_like
        Embeddings ``(..., D)``, at least 1-d; they broadcast by NumPy rules (torch takes
        ``(N, D)`` or ``(D,)``). float32/float64 keep their dtype; float16/bfloat16 give
        float32 losses; integers give float64.
    target : array_like
        Labels 1 or -1 of the broadcast shape without the last axis (a 0-d target for 1-d
        inputs). Other values are a ValueError (torch gives them loss 0).
    margin : float
        In [-1, 1] is meaningful (torch suggests [0, 0.5]); any finite number is accepted.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over pairs; ``"none"``: one loss per pair.
    return_grad : bool
        Also return ``(d_input1, d_input2)``, each in its input's shape and dtype.
    grad_out : tuple (or list) of two entries, optional
        Preallocated arrays for ``(d_input1, d_input2)``, each an ndarray of its input's shape
        and dtype or None (that gradient is allocated); needs ``return_grad=True``. An entry
        may be its input itself (in-place use; the results are those of a call without
        ``grad_out``); the two entries must not share memory. The returned tuple holds these
        arrays where given. Nothing is written to them when the call raises.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_input1, d_input2), only with ``return_grad``

    Raises
    ------
    ValueError
        Inputs without an axis or of shapes that do not broadcast, a target of the wrong
        shape or with a label other than 1 or -1, a non-finite ``margin``, an unknown
        ``reduction``; a ``grad_out`` entry of the wrong shape or read-only, entries that
        share memory, a ``grad_out`` of the wrong length or without ``return_grad``.
    TypeError
        Unsupported dtypes; a ``grad_out`` that is not a tuple or list, an entry that is not
        an ndarray or of the wrong dtype.

    Notes
    -----
    Computed in float64 by blocks of rows (memory-bound: three dot products per row).
    ``d cos / d x1 = x2 / sqrt(m1 m2) - cos x1 / m1`` with ``m = |x|**2 + 1e-12``; the loss's
    gradient is ``-d cos`` (target 1) or ``d cos`` where ``cos - margin >= 0`` (target -1;
    the kink passes the gradient, as torch's ``clamp_min``). Zero vectors give ``cos = 0``,
    finite.

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> x1 = np.array([[1.0, 0.0], [1.0, 1.0]])
    >>> x2 = np.array([[0.0, 1.0], [1.0, 1.0]])
    >>> np.round(fl.cosine_embedding_loss(x1, x2, [1, -1], reduction="none"), 6)
    array([1., 1.])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    a, b = float_input(input1, "input1"), float_input(input2, "input2")
    for p, name in ((a, "input1"), (b, "input2")):
        if p.array.ndim == 0:
            raise ValueError(f"{name} must have at least one axis (the last holds the "
                             "embedding)")
    shape = _broadcast([("input1", a.array.shape), ("input2", b.array.shape)])
    m = _finite_margin(margin)
    reduction = check_reduction(reduction)
    y = real_array(target, "target", _F64)
    if y.shape != shape[:-1]:
        raise ValueError(f"target has shape {y.shape} but must have the inputs' (broadcast) "
                         f"shape without the last axis: {shape[:-1]}")
    y = y.reshape(-1)
    wrong = (y != 1) & (y != -1)
    if wrong.any():
        i = _first_bad(wrong)
        raise ValueError(f"target must hold labels 1 or -1; target.flat[{i}] = {y[i]!r}")
    bufs = None if grad_out is None else grad_buffers(
        grad_out, [(a.array.shape, a.orig_dtype), (b.array.shape, b.orig_dtype)],
        ("input1", "input2"))
    D = shape[-1]
    rows = math.prod(shape[:-1])
    a2, b2 = ((u if u.shape == shape else np.broadcast_to(u, shape)).reshape(rows, D)
              for u in (a.array, b.array))
    scale = mean_scale(reduction, rows)
    per_row = row_losses(rows, reduction)
    if return_grad:
        g1 = np.empty((rows, D), dtype=_F64 if shape != a.array.shape else a.orig_dtype)
        g2 = np.empty((rows, D), dtype=_F64 if shape != b.array.shape else b.orig_dtype)
    step = max(1, _BLOCK_ELEMENTS // max(D, 1))
    for s in range(0, rows, step):
        e = min(s + step, rows)
        u, v = a2[s:e].astype(_F64), b2[s:e].astype(_F64)
        dot = np.einsum("ij,ij->i", u, v)
        m1 = np.einsum("ij,ij->i", u, u) + _COS_EPS
        m2 = np.einsum("ij,ij->i", v, v) + _COS_EPS
        den = np.sqrt(m1 * m2)
        cos = dot / den
        ys = y[s:e]
        pos = ys == 1
        per_row[s:e] = np.where(pos, 1.0 - cos, np.maximum(cos - m, 0.0))
        if return_grad:
            # d loss / d cos: -1 (target 1), [cos - margin >= 0] (target -1)
            c = np.where(pos, -1.0, (cos - m >= 0).astype(_F64)) * scale
            g1[s:e] = c[:, None] * (v / den[:, None] - (cos / m1)[:, None] * u)
            g2[s:e] = c[:, None] * (u / den[:, None] - (cos / m2)[:, None] * v)
    loss = reduce_rows(per_row, reduction, rows, shape[:-1], _loss_dtype([a, b]))
    if not return_grad:
        return loss
    out = []
    for g, p in ((g1, a), (g2, b)):
        g = g.reshape(shape)
        if shape != p.array.shape:
            g = _sum_to(g, p.array.shape)
        out.append(g.astype(p.orig_dtype, copy=False))
    return loss, deliver_grads(out, bufs)


def triplet_margin_with_distance_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    distance_function: Optional[Callable[[np.ndarray, np.ndarray], Any]] = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_out: Any = None,
):
    """Triplet margin loss with any distance, as
    :func:`torch.nn.functional.triplet_margin_with_distance_loss`.

    Per triplet::

        loss = max(0, margin + d(anchor, positive) - d(anchor, negative))

    With ``swap=True`` (Balntas et al.'s distance swap) ``d(anchor, negative)`` is replaced by
    ``min(d(anchor, negative), d(positive, negative))``.

    Parameters
    ----------
    anchor, positive, negative : array_like
        Embeddings with one number of axes (as torch). For the default distance: one shape
        ``(..., D)``, at least 1-d; float32/float64 keep their dtype, float16/bfloat16 give
        float32 losses, integers give float64.
    distance_function : callable, optional
        ``distance_function(x1, x2)`` of two NumPy arrays (the embeddings as given, converted
        by ``np.asarray``) returning the distances (array_like of real numbers) of the
        triplets; the losses take the shape the distances broadcast to. Default (``None``):
        torch's ``pairwise_distance``, ``||x1 - x2 + 1e-6||_2`` over the last axis, computed
        by :func:`fastloss.triplet_margin_loss` (``p=2, eps=1e-6``).
    margin : float > 0
        As torch (which rejects ``margin <= 0``).
    swap : bool
        Use ``min(d(a, n), d(p, n))`` as the negative distance.
    reduction : {"mean", "sum", "none"}
    return_grad : bool
        Also return ``(d_anchor, d_positive, d_negative)``, each in its input's shape and
        dtype. Only for the default distance: fastloss cannot differentiate an arbitrary
        Python callable, so a ``distance_function`` with ``return_grad=True`` is a
        ValueError (use :func:`fastloss.triplet_margin_loss` with ``p`` for other norms).
    grad_out : tuple (or list) of three entries, optional
        Preallocated arrays for ``(d_anchor, d_positive, d_negative)`` (default distance),
        each an ndarray of its input's shape and dtype or None (that gradient is allocated);
        needs ``return_grad=True``. An entry may be its input itself (in-place use; the
        results are those of a call without ``grad_out``); no two entries may share memory.
        The returned tuple holds these arrays where given. Nothing is written to them when the
        call raises.

    Returns
    -------
    loss : NumPy scalar (``"mean"``, ``"sum"``) or ndarray (``"none"``)
    grad : tuple (d_anchor, d_positive, d_negative), only with ``return_grad``

    Raises
    ------
    ValueError
        ``margin <= 0``, inputs with different numbers of axes (torch: RuntimeError), shapes
        that differ (default distance), distances that are not real or do not broadcast,
        ``return_grad`` with a ``distance_function``, an unknown ``reduction``; a ``grad_out``
        entry of the wrong shape or read-only, entries that share memory, a ``grad_out`` of
        the wrong length or without ``return_grad``.
    TypeError
        A ``distance_function`` that is not callable; a ``grad_out`` that is not a tuple or
        list, an entry that is not an ndarray or of the wrong dtype.

    Notes
    -----
    Gradients (default distance) as torch's autograd, see :func:`fastloss.triplet_margin_loss`.
    With a ``distance_function`` the hinge and the reduction run in float64 on its results
    and the loss takes the anchor's loss dtype (float64 for non-float inputs).

    Examples
    --------
    >>> import numpy as np, fastloss as fl
    >>> a, p, n = np.zeros((2, 2)), np.array([[0.6, 0.8], [0.3, 0.4]]), np.ones((2, 2))
    >>> l1 = lambda x, y: np.abs(x - y).sum(axis=-1)
    >>> fl.triplet_margin_with_distance_loss(a, p, n, distance_function=l1, reduction="none")
    array([0.4, 0.  ])
    """
    return_grad = check_grad_out_given(grad_out, return_grad)
    if reduction not in ("mean", "sum", "none"):
        check_reduction(reduction)
    m = check_real(margin, "margin")
    if not (math.isfinite(m) and m > 0):
        raise ValueError(f"margin must be a finite number > 0 (as torch), got {margin!r}")
    swap = _check_bool(swap, "swap")
    arrays = [np.asarray(t) for t in (anchor, positive, negative)]
    if not arrays[0].ndim == arrays[1].ndim == arrays[2].ndim:
        raise ValueError(
            "anchor, positive and negative must have the same number of axes, got "
            f"{arrays[0].ndim}, {arrays[1].ndim} and {arrays[2].ndim}")
    if distance_function is None:
        from .embeddings import triplet_margin_loss
        return triplet_margin_loss(anchor, positive, negative, margin=m, p=2.0, eps=1e-6,
                                   swap=swap, reduction=reduction, return_grad=return_grad,
                                   grad_out=grad_out)
    if not callable(distance_function):
        raise TypeError(f"distance_function must be callable, got "
                        f"{type(distance_function).__name__}")
    if return_grad:
        raise ValueError("return_grad=True needs the default distance (distance_function="
                         "None): fastloss cannot differentiate a Python callable")
    a = float_input(arrays[0], "anchor")

    def dist(u, v, what):
        d = real_array(distance_function(u, v), f"distance_function({what})", _F64)
        return d

    d_pos = dist(arrays[0], arrays[1], "anchor, positive")
    d_neg = dist(arrays[0], arrays[2], "anchor, negative")
    if swap:
        d_neg = np.minimum(d_neg, dist(arrays[1], arrays[2], "positive, negative"))
    shape = _broadcast([("d(anchor, positive)", d_pos.shape),
                        ("d(anchor, negative)", d_neg.shape)])
    per = np.maximum(m + d_pos - d_neg, 0.0)
    per = np.where(np.isnan(d_pos) | np.isnan(d_neg), np.nan, per)
    per = np.broadcast_to(per, shape)
    return reduce_rows(per.reshape(-1), reduction, per.size, shape, a.loss_dtype)
