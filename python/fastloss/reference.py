"""Plain NumPy float64 references: the ground truth of the tests.

Each function is the textbook formula, written for clarity, not speed: every input is
converted to float64 and the class axis is moved last. Losses follow the same semantics as
the compiled functions of the same name; ``*_grad`` companions (or ``return_grad=True``)
give d(returned loss)/d(first input).
"""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp", "softmax", "log_softmax", "cross_entropy", "nll_loss"]


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
