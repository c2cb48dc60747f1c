"""Plain NumPy float64 references: the ground truth of the tests.

Each function is the textbook formula, written for clarity, not speed: every input is
converted to float64 and the class axis is moved last. Losses follow the same semantics as
the compiled functions of the same name; ``*_grad`` companions (or ``return_grad=True``)
give d(returned loss)/d(first input).
"""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp", "softmax", "log_softmax", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
           "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits",
           "binary_cross_entropy", "sigmoid_focal_loss", "hinge_loss"]


def _f64(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def logsumexp(a, axis=None, keepdims=False):
    """log(sum(exp(a))) = m + log(sum(exp(a - m))), m = max(a) (0 when m is not finite)."""
    a = np.atleast_1d(_f64(a))
    if a.size == 0:
        return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(x, axis=None):
    """p = exp(x - m) / sum(exp(x - m))."""
    x = _f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=None):
    """log p = (x - m) - log(sum(exp(x - m)))."""
    x = _f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    return (x - m) - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _rows(x, axis):
    """(rows, C) float64 view of x with the class axis last."""
    x = np.moveaxis(_f64(x), axis, -1)
    return x.reshape(-1, x.shape[-1]), x.shape[:-1]


def _unrows(g, shape, axis):
    """Inverse of _rows for a gradient of the input's shape."""
    moved = shape[:axis] + shape[axis + 1 :] + (shape[axis],) if shape else shape
    return np.moveaxis(g.reshape(moved), -1, axis)


def _reduce(per_row, denom, reduction, shape):
    if reduction == "none":
        return per_row.reshape(shape), 1.0
    if reduction == "sum":
        return per_row.sum(), 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return per_row.sum() / denom, (1.0 / denom if denom else 0.0)


def cross_entropy(logits, target, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, return_grad=False):
    """PyTorch's cross-entropy, float64.

    Class indices t:      l = (1-eps) w_t (-log p_t) + (eps/C) sum_c w_c (-log p_c)
                          mean divides by sum of w_t over non-ignored rows
                          dl/dx = ((1-eps) w_t + (eps/C) sum_c w_c) p - (1-eps) w_t onehot(t) - (eps/C) w
    Probabilities y:      y' = (1-eps) y + eps/C;  l = -sum_c w_c y'_c log p_c (0 log 0 = 0)
                          mean divides by the number of rows
                          dl/dx = (sum_c w_c y'_c) p - w y'
    """
    logits = _f64(logits)
    axis = axis % logits.ndim
    x, row_shape = _rows(logits, axis)
    n, C = x.shape
    w = np.ones(C) if weight is None else _f64(weight)
    eps = label_smoothing
    logp = log_softmax(x, axis=1)
    p = np.exp(logp)
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        t = t.reshape(-1).astype(np.int64)
        valid = t != ignore_index
        tv = np.where(valid, t, 0)
        w_t = np.where(valid, w[tv], 0.0)
        nll = -logp[np.arange(n), tv]
        per_row = (1 - eps) * w_t * nll
        if eps:  # (a -inf masked logit makes the smoothing term inf; 0 * inf would be NaN)
            per_row = per_row + (eps / C) * -(logp * w).sum(axis=1)
        per_row = np.where(valid, per_row, 0.0)
        denom = w_t.sum()
        coef_p = (1 - eps) * w_t + (eps / C) * w.sum()
        onehot = np.zeros_like(x)
        onehot[np.arange(n), tv] = 1.0
        grad = coef_p[:, None] * p - (1 - eps) * w_t[:, None] * onehot - (eps / C) * w
        grad = np.where(valid[:, None], grad, 0.0)
    else:
        y, _ = _rows(t, axis)
        c = w * ((1 - eps) * y + eps / C)
        with np.errstate(invalid="ignore"):
            per_row = -np.where(c == 0, 0.0, c * logp).sum(axis=1)
        denom = float(n)
        grad = c.sum(axis=1, keepdims=True) * p - c
    loss, scale = _reduce(per_row, denom, reduction, row_shape)
    if not return_grad:
        return loss
    return loss, _unrows(grad * scale, logits.shape, axis)


def nll_loss(log_probs, target, axis=-1, weight=None, ignore_index=-100, reduction="mean",
             return_grad=False):
    """PyTorch's nll_loss, float64: l = -w_t * log_probs[t]; dl/dx = -w_t onehot(t)."""
    log_probs = _f64(log_probs)
    axis = axis % log_probs.ndim
    x, row_shape = _rows(log_probs, axis)
    n, C = x.shape
    w = np.ones(C) if weight is None else _f64(weight)
    t = np.asarray(target).reshape(-1).astype(np.int64)
    valid = t != ignore_index
    tv = np.where(valid, t, 0)
    w_t = np.where(valid, w[tv], 0.0)
    per_row = -w_t * x[np.arange(n), tv]
    loss, scale = _reduce(per_row, w_t.sum(), reduction, row_shape)
    if not return_grad:
        return loss
    grad = np.zeros_like(x)
    grad[np.arange(n), tv] = -w_t
    return loss, _unrows(grad * scale, log_probs.shape, axis)


# ---------------------------------------------------------------------------------------------
# Pointwise losses. Each returns the reduced loss and, with return_grad, d(loss)/d(input) summed
# over the axes along which input was broadcast. Elementwise weights multiply the losses;
# "mean" divides by the number of broadcast elements (PyTorch's convention for weights).
# ---------------------------------------------------------------------------------------------
def _pointwise(l, g, x_shape, weight, reduction, return_grad):
    if weight is not None:
        w = _f64(weight)
        l, g = l * w, g * w
    full = np.broadcast_shapes(l.shape, g.shape)
    l, g = np.broadcast_to(l, full), np.broadcast_to(g, full)
    n = l.size
    if reduction == "none":
        loss, scale = l.copy(), 1.0
    elif reduction == "sum":
        loss, scale = l.sum(), 1.0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss, scale = l.sum() / n, (1.0 / n if n else 0.0)
    if not return_grad:
        return loss
    g = g * scale
    lead = g.ndim - len(x_shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, k in enumerate(x_shape)
                                      if k == 1 and g.shape[lead + i] != 1)
    return loss, g.sum(axis=axes).reshape(x_shape) if axes else g.reshape(x_shape)


def _xy(input, target):
    x, y = _f64(input), _f64(target)
    full = np.broadcast_shapes(x.shape, y.shape)
    return x, y, np.broadcast_to(x, full), np.broadcast_to(y, full)


def mse_loss(input, target, weight=None, reduction="mean", return_grad=False):
    """l = (x - y)^2, dl/dx = 2 (x - y)."""
    x, _, xb, yb = _xy(input, target)
    d = xb - yb
    return _pointwise(d * d, 2 * d, x.shape, weight, reduction, return_grad)


def l1_loss(input, target, weight=None, reduction="mean", return_grad=False):
    """l = |x - y|, dl/dx = sign(x - y) (0 at 0)."""
    x, _, xb, yb = _xy(input, target)
    d = xb - yb
    return _pointwise(np.abs(d), np.sign(d), x.shape, weight, reduction, return_grad)


def huber_loss(input, target, delta=1.0, weight=None, reduction="mean", return_grad=False):
    """l = d^2/2 if |d| <= delta else delta (|d| - delta/2); dl/dx = d or delta sign(d)."""
    x, _, xb, yb = _xy(input, target)
    d = xb - yb
    quad = np.abs(d) <= delta
    l = np.where(quad, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
    g = np.where(quad, d, delta * np.sign(d))
    return _pointwise(l, g, x.shape, weight, reduction, return_grad)


def smooth_l1_loss(input, target, beta=1.0, weight=None, reduction="mean", return_grad=False):
    """l = d^2/(2 beta) if |d| < beta else |d| - beta/2; dl/dx = d/beta or sign(d)."""
    x, _, xb, yb = _xy(input, target)
    d = xb - yb
    if beta == 0:
        return _pointwise(np.abs(d), np.sign(d), x.shape, weight, reduction, return_grad)
    quad = np.abs(d) < beta
    l = np.where(quad, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)
    g = np.where(quad, d / beta, np.sign(d))
    return _pointwise(l, g, x.shape, weight, reduction, return_grad)


def _softplus_neg(x):
    """log(1 + exp(-x)), stably."""
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)


def _softplus(x):
    """log(1 + exp(x)), stably."""
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None,
                                     reduction="mean", return_grad=False):
    """l = (1 - y) x + (1 + (p - 1) y) log(1 + exp(-x)) = p y softplus(-x) + (1 - y) softplus(x)
    (the second form adds non-negative terms, nothing cancels);
    dl/dx = (1 + (p-1) y) sigmoid(x) - p y."""
    x, _, xb, yb = _xy(logits, target)
    p = 1.0 if pos_weight is None else _f64(pos_weight)
    c = 1 + (p - 1) * yb
    l = p * yb * _softplus_neg(xb) + (1 - yb) * _softplus(xb)
    g = c * _sigmoid(xb) - p * yb
    return _pointwise(l, g, x.shape, weight, reduction, return_grad)


def binary_cross_entropy(probs, target, weight=None, reduction="mean", return_grad=False):
    """l = -(y max(log q, -100) + (1 - y) max(log(1 - q), -100));
    dl/dq = (q - y) / max(q (1 - q), 1e-12) (PyTorch's backward)."""
    q, _, qb, yb = _xy(probs, target)
    with np.errstate(divide="ignore"):
        l = -(yb * np.maximum(np.log(qb), -100) + (1 - yb) * np.maximum(np.log1p(-qb), -100))
    g = (qb - yb) / np.maximum(qb * (1 - qb), 1e-12)
    return _pointwise(l, g, q.shape, weight, reduction, return_grad)


def sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="mean",
                       return_grad=False):
    """torchvision: p = sigmoid(x), ce = BCE(x, y), p_t = p y + (1 - p)(1 - y),
    l = a_t (1 - p_t)^gamma ce with a_t = alpha y + (1 - alpha)(1 - y) (alpha < 0: 1);
    dl/dx = a_t ((p - y)(1 - p_t)^gamma + ce gamma (1 - p_t)^(gamma - 1) p (1 - p)(1 - 2y))."""
    x, _, xb, yb = _xy(logits, target)
    p, pn = _sigmoid(xb), _sigmoid(-xb)
    ce = yb * _softplus_neg(xb) + (1 - yb) * _softplus(xb)
    q = p * (1 - yb) + pn * yb
    at = 1.0 if alpha < 0 else alpha * yb + (1 - alpha) * (1 - yb)
    with np.errstate(divide="ignore", invalid="ignore"):
        mod = q ** gamma
        dmod = np.where(q > 0, gamma * q ** (gamma - 1), 0.0) if gamma else np.zeros_like(q)
    l = at * ce * mod
    g = at * ((p - yb) * mod + ce * dmod * p * pn * (1 - 2 * yb))
    return _pointwise(l, g, x.shape, None, reduction, return_grad)


def hinge_loss(input, target, margin=1.0, squared=False, reduction="mean", return_grad=False):
    """y in {-1, +1} (0 read as -1): l = max(0, margin - y f) (squared: its square);
    dl/df = -y where margin - y f > 0, else 0 (squared: -2 y max(0, margin - y f))."""
    y = _f64(target)
    y = np.where(y == 0, -1.0, y)
    x, _, xb, yb = _xy(input, y)
    z = margin - yb * xb
    h = np.maximum(z, 0)
    if squared:
        l, g = h * h, -2 * yb * h
    else:
        l, g = h, np.where(z > 0, -yb, 0.0)
    return _pointwise(l, g, x.shape, None, reduction, return_grad)
