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
           "binary_cross_entropy", "sigmoid_focal_loss", "hinge_loss", "softmax_focal_loss",
           "multi_margin_loss", "perplexity", "bits_per_byte", "kl_div", "kl_div_with_logits",
           "gaussian_kl", "contrastive_loss", "triplet_margin_loss", "clip_loss",
           "ctc_loss", "cross_entropy_stats", "merge_cross_entropy_stats",
           "linear_cross_entropy"]


def _f64(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def _f64c(x) -> np.ndarray:
    """float64, or complex128 for complex input."""
    a = np.asarray(x)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """log(sum(b exp(a))) = m + log(sum(b exp(a - m))), m = max of the real parts of the terms
    with b != 0 (0 when not finite); terms with b == 0 are left out (even where a is inf or
    NaN). Real: res = log|s| + m, sign = sign(s) (a negative sum gives NaN without
    return_sign). Complex (complex128): res = log(s) + m, imaginary part in (-pi, pi]; with
    return_sign, res = log|s| + m (real) and sign = s / |s| (0 for s = 0)."""
    a = np.atleast_1d(_f64c(a))
    if b is not None:
        b = _f64c(b)
        a, b = np.broadcast_arrays(a, b)
    cplx = a.dtype.kind == "c" or (b is not None and b.dtype.kind == "c")
    if b is None:
        b = np.ones(a.shape)
    live = b != 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        re = np.where(live, a.real, -np.inf)
        m = np.max(re, axis=axis, keepdims=True) if a.size else np.zeros(())
        m = np.where(np.isfinite(m), m, 0.0)
        s = np.sum(np.where(live, b * np.exp(a - m), 0), axis=axis, keepdims=True)
        if cplx:
            mag = np.abs(s)
            sgn = np.where(mag == 0, 0, s / np.where(mag == 0, 1, mag))
            res = np.log(mag) + m if return_sign else np.log(s) + m
        else:
            sgn = np.sign(s)
            res = np.log(np.abs(s)) + m
            if not return_sign:
                res = np.where(s < 0, np.nan, res)
    if not keepdims:
        res, sgn = np.squeeze(res, axis=axis), np.squeeze(sgn, axis=axis)
    return (res, sgn) if return_sign else res


def softmax(x, axis=None):
    """p = exp(x - m) / sum(exp(x - m)) (complex input: complex128, m the largest element)."""
    x = _f64c(x)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=None):
    """log p = (x - m) - log(sum(exp(x - m))) (complex input: complex128, m the largest
    element, 0 where it is not finite)."""
    x = _f64c(x)
    m = np.max(x, axis=axis, keepdims=True)
    if x.dtype.kind == "c":
        m = np.where(np.isfinite(m), m, 0)
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


def _softcap(x, softcap):
    """(softcap * tanh(x / softcap), d/dx of it = sech^2(x / softcap)); -inf gives -softcap.

    sech^2(u) is evaluated as 4 e^(-2|u|) / (1 + e^(-2|u|))^2: no overflow, and relative
    accuracy where it is tiny (1 - tanh(u)^2 would round to 0 first)."""
    u = x / softcap
    e = np.exp(-2.0 * np.abs(u))
    return softcap * np.tanh(u), 4.0 * e / (1.0 + e) ** 2


def cross_entropy(logits, target, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, return_grad=False, z_loss=0.0, softcap=None):
    """PyTorch's cross-entropy, float64, with PaLM's z-loss and Gemma 2's logit soft-capping.

    softcap c (None: off; c > 0): the logits x are replaced by x' = c tanh(x / c) before
    anything else (-inf becomes -c, +-1e30 becomes +-c); everything below is a function of x'
    and the gradient w.r.t. the original logits is dl/dx' * (1 - tanh(x / c)^2).

    Class indices t:      l = (1-eps) w_t (-log p_t) + (eps/C) sum_c w_c (-log p_c)
                              + w_t z lse^2,   lse = logsumexp(x') over the class axis
                          mean divides by sum of w_t over non-ignored rows; ignored rows
                          count 0 (loss 0, gradient 0, not in the denominator)
                          dl/dx' = ((1-eps) w_t + (eps/C) sum_c w_c) p - (1-eps) w_t onehot(t)
                                   - (eps/C) w + 2 z w_t lse p
    Probabilities y:      y' = (1-eps) y + eps/C;  l = -sum_c w_c y'_c log p_c (0 log 0 = 0)
                              + z lse^2
                          mean divides by the number of rows
                          dl/dx' = (sum_c w_c y'_c) p - w y' + 2 z lse p
    (w_t = weight[t], 1 without weights; p = softmax(x'); z = z_loss >= 0.)
    """
    logits = _f64(logits)
    axis = axis % logits.ndim
    x, row_shape = _rows(logits, axis)
    n, C = x.shape
    dcap = None
    if softcap is not None:
        x, dcap = _softcap(x, float(softcap))
    w = np.ones(C) if weight is None else _f64(weight)
    eps = label_smoothing
    logp = log_softmax(x, axis=1)
    p = np.exp(logp)
    if z_loss:
        lse = logsumexp(x, axis=1) if n else np.zeros(0)
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
        if z_loss:
            per_row = per_row + w_t * z_loss * lse**2
        per_row = np.where(valid, per_row, 0.0)
        denom = w_t.sum()
        coef_p = (1 - eps) * w_t + (eps / C) * w.sum()
        if z_loss:
            coef_p = coef_p + 2 * z_loss * w_t * lse
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
        coef_p = c.sum(axis=1)
        if z_loss:
            per_row = per_row + z_loss * lse**2
            coef_p = coef_p + 2 * z_loss * lse
        grad = coef_p[:, None] * p - c
        # A row without target mass whose logits are all -inf: every term is 0 log 0 = 0, so
        # the loss is 0 for any logits and its gradient 0 (p itself is 0/0 there).
        empty = (c == 0).all(axis=1) & np.isneginf(x).all(axis=1)
        if not z_loss:
            per_row = np.where(empty, 0.0, per_row)
            grad = np.where(empty[:, None], 0.0, grad)
    if dcap is not None:
        grad = grad * dcap
    loss, scale = _reduce(per_row, denom, reduction, row_shape)
    if not return_grad:
        return loss
    return loss, _unrows(grad * scale, logits.shape, axis)


def cross_entropy_lse(logits, axis=-1, softcap=None):
    """cross_entropy's return_lse: per-row logsumexp of the (capped) logits, float64."""
    x = _f64(logits) if softcap is None else _softcap(_f64(logits), softcap)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        out = np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))
    return out


def token_accuracy(logits, target, axis=-1, ignore_index=-100, reduction="mean"):
    """cross_entropy's return_token_accuracy: [argmax_j x_j == t] per row (np.argmax: the
    first maximum, NaN the largest); 0 for rows with t == ignore_index. "mean": the fraction
    of rows not ignored (NaN if none); "sum": their number; "none": per row, float64."""
    t = np.asarray(target)
    hit = (np.argmax(_f64(logits), axis=axis) == t) & (t != ignore_index)
    if reduction == "none":
        return hit.astype(np.float64)
    if reduction == "sum":
        return float(hit.sum())
    n = int(np.count_nonzero(t != ignore_index))
    return hit.sum() / n if n else float("nan")


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
        l, g = h, np.where(z > 0, -yb, np.where(np.isnan(z), np.nan, 0.0))  # NaN stays NaN
    return _pointwise(l, g, x.shape, None, reduction, return_grad)


# ---------------------------------------------------------------------------------------------
# Multi-class extras: softmax focal loss, multi-margin loss, perplexity and bits per byte.
# ---------------------------------------------------------------------------------------------
def _row_reduce(per_row, reduction, row_shape, denom=None):
    """Reduce per-row losses: "none" -> array of ``row_shape``, "sum", or "mean" = sum / denom
    (default: the number of rows; 0 / 0 = nan). Returns (loss, scale of the gradient)."""
    n = per_row.size if denom is None else denom
    return _reduce(per_row, n, reduction, row_shape)


def _log_softmax_rows(x):
    """log_softmax over the last axis of a 2-d float64 array as (x - m) - log1p(r), where m is
    the row maximum and r the sum of exp(x - m) over every class but the (first) maximum:
    keeps the relative accuracy of log p close to 0 (a confident row), which
    (x - m) - log(1 + r) would round to 0."""
    n, C = x.shape
    m = np.max(x, axis=1, keepdims=True) if C else np.zeros((n, 1))
    e = np.exp(x - m)
    k = np.argmax(x, axis=1) if C else np.zeros(n, dtype=np.int64)
    e[np.arange(n), k] = 0.0
    return (x - m) - np.log1p(e.sum(axis=1, keepdims=True))


def softmax_focal_loss(logits, target, axis=-1, alpha=None, gamma=2.0, ignore_index=-100,
                       reduction="mean", return_grad=False):
    """Multi-class focal loss (Lin et al.), float64.

    p = softmax(x) over ``axis``, t = target class, log p_t from log_softmax, and
    1 - p_t = -expm1(log p_t) (accurate when p_t is close to 1):

        l = -alpha_t (1 - p_t)^gamma log p_t
        dl/dx_j = F (p_j - [j == t]),
        F = alpha_t ((1 - p_t)^gamma - gamma p_t (1 - p_t)^(gamma - 1) log p_t)

    alpha: None (1), a number (every class), or an array of shape (C,) (alpha_t = alpha[t]).
    The second term of F is 0 for gamma = 0, where 1 - p_t = 0 (its limit for 0 < gamma < 1,
    where (1 - p_t)^(gamma - 1) is infinite and log p_t = 0) and where p_t = 0 (p log p -> 0).
    Rows whose target is ``ignore_index`` have loss 0 and gradient 0. Reduction "mean" is the
    sum over non-ignored rows divided by their number (alpha is not a normaliser; every row
    ignored or no rows: nan), "sum", "none" (per row, the logits' shape without ``axis``).
    gamma = 0 with alpha None is the cross-entropy.
    """
    logits = _f64(logits)
    axis = axis % logits.ndim
    x, row_shape = _rows(logits, axis)
    n, C = x.shape
    t = np.asarray(target).reshape(-1).astype(np.int64)
    valid = t != ignore_index
    tv = np.where(valid, t, 0)
    if alpha is None:
        a_t = np.ones(n)
    elif np.ndim(alpha) == 0:
        a_t = np.full(n, float(alpha))
    else:
        a_t = _f64(alpha)[tv]
    logp = _log_softmax_rows(x)
    p = np.exp(logp)
    lpt = logp[np.arange(n), tv]
    pt = np.exp(lpt)
    omp = -np.expm1(lpt)  # 1 - p_t
    gamma = float(gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        mod = omp**gamma  # 0^0 = 1
        per_row = a_t * mod * -lpt
        if gamma == 0:
            second = np.zeros(n)
        else:
            second = gamma * pt * omp ** (gamma - 1) * lpt
            second = np.where((omp == 0) | (pt == 0), 0.0, second)
    F = a_t * (mod - second)
    # a row holding +inf (or NaN) is NaN, as cross_entropy's
    bad_row = np.isposinf(x).any(axis=1) | np.isnan(x).any(axis=1)
    per_row = np.where(bad_row, np.nan, per_row)
    F = np.where(bad_row, np.nan, F)
    per_row = np.where(valid, per_row, 0.0)
    loss, scale = _row_reduce(per_row, reduction, row_shape, denom=float(valid.sum()))
    if not return_grad:
        return loss
    onehot = np.zeros_like(x)
    onehot[np.arange(n), tv] = 1.0
    grad = np.where(valid[:, None], F[:, None] * (p - onehot), 0.0)
    return loss, _unrows(grad * scale, logits.shape, axis)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean",
                      return_grad=False):
    """PyTorch's multi_margin_loss, float64; the class axis is the last one.

    input (..., C), target (...) of class indices y:
        l = sum_{j != y} w_y max(0, z_j)^p / C,  z_j = margin - x_y + x_j,  p in {1, 2}
        dl/dx_j = w_y p z_j^(p-1) / C where z_j > 0 (strictly: 0 at the kink, as PyTorch),
        dl/dx_y = -sum_{j != y} dl/dx_j
    w_y = weight[y] (1 without weights). "mean" is the plain mean over samples (not a weighted
    mean; no samples: nan), "sum", "none" (per sample, shape ``target.shape``). A 0-d input
    is one sample with one class (no j != y: loss 0, gradient 0).
    """
    x = _f64(input)
    in_shape = x.shape
    x = np.atleast_1d(x)
    row_shape = x.shape[:-1] if x.ndim > 1 else np.shape(target)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    n = x2.shape[0]
    y = np.asarray(target).reshape(-1).astype(np.int64)
    w = np.ones(C) if weight is None else _f64(weight)
    w_y = w[y]
    xy = x2[np.arange(n), y]
    z = margin - xy[:, None] + x2
    other = np.ones_like(x2, dtype=bool)
    other[np.arange(n), y] = False
    pos = other & (z > 0)
    h = np.where(pos, z, 0.0)
    per_row = w_y * (h**p).sum(axis=1) / C
    loss, scale = _row_reduce(per_row, reduction, row_shape)
    if not return_grad:
        return loss
    g = w_y[:, None] * (np.where(pos, 1.0, 0.0) if p == 1 else 2.0 * h) / C
    g[np.arange(n), y] = -g.sum(axis=1)
    return loss, (g * scale).reshape(in_shape)


_NO_CE_KWARGS = ("reduction", "return_grad", "grad_out")


def _ce_kwargs(kw, fn):
    for k in _NO_CE_KWARGS:
        if k in kw:
            raise TypeError(f"{fn}() got an unexpected keyword argument '{k}'")
    return kw


def perplexity(logits, target, **kw):
    """exp(mean cross-entropy): exp(cross_entropy(logits, target, reduction="mean", **kw)),
    kw among axis, weight, ignore_index, label_smoothing, z_loss, softcap (``reduction`` or
    ``return_grad`` raise TypeError). A NumPy float64 scalar."""
    return np.float64(np.exp(cross_entropy(logits, target, reduction="mean",
                                           **_ce_kwargs(kw, "perplexity"))))


def bits_per_byte(logits, target, n_bytes, **kw):
    """Total cross-entropy in nats over the (non-ignored) tokens divided by ln(2) * n_bytes:
    cross_entropy(logits, target, reduction="sum", **kw) / (ln 2 * n_bytes), n_bytes > 0."""
    total = cross_entropy(logits, target, reduction="sum", **_ce_kwargs(kw, "bits_per_byte"))
    return np.float64(total / (np.log(2.0) * float(n_bytes)))


# ---------------------------------------------------------------------------------------------
# Distributions: KL divergences and the Gaussian (VAE) KL term.
# ---------------------------------------------------------------------------------------------
def kl_div(input, target, reduction="mean", log_target=False, negative_target="raise",
           return_grad=False):
    """PyTorch's kl_div, float64: ``input`` holds log-probabilities, broadcast with ``target``
    by NumPy rules.

    log_target False:  l = y (log y - x), exactly 0 where y == 0 whatever x is (-inf and NaN
                       included; PyTorch gives NaN for y = 0, x = -inf); dl/dx = -y
    log_target True:   l = exp(y) (y - x); dl/dx = -exp(y). (Reference choice, mirroring the
                       rule above: where y == -inf, i.e. probability 0, the term is 0, where
                       PyTorch gives NaN.)
    A negative y gives l = NaN (log of a negative) and dl/dx = -y, PyTorch's result, what
    fastloss gives with negative_target="nan" (it raises by default; the reference does not
    validate). Reductions: "none", "sum", "mean" (divide by the number of elements of the
    broadcast shape, as PyTorch), "batchmean" (divide by the first dimension of the broadcast shape;
    0-d: the sum). The gradient is summed over the axes along which ``input`` was broadcast.
    """
    x, _, xb, yb = _xy(input, target)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if log_target:
            ey = np.exp(yb)
            l = np.where(yb == -np.inf, 0.0, ey * (yb - xb))
            g = -ey
        else:
            l = np.where(yb == 0, 0.0, yb * (np.log(np.where(yb == 0, 1.0, yb)) - xb))
            g = -yb
    if reduction == "batchmean":
        full = l.shape
        if len(full) == 0:
            return _pointwise(l, g, x.shape, None, "sum", return_grad)
        out = _pointwise(l, g, x.shape, None, "sum", return_grad)
        k = full[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            if not return_grad:
                return out / k
            return out[0] / k, out[1] * (1.0 / k if k else 0.0)
    return _pointwise(l, g, x.shape, None, reduction, return_grad)


def kl_div_with_logits(student_logits, teacher_logits, axis=-1, temperature=1.0,
                       reduction="batchmean", return_grad=False):
    """Distillation loss, float64: per row (over ``axis``)

        l = T^2 sum_j q_j (log q_j - log p_j),  q = softmax(teacher / T), p = softmax(student / T)

    with the terms where q_j = 0 exactly 0 (a -inf teacher logit); dl/d student = T (p - q).
    Reductions: "batchmean" (sum / number of rows; rows = every position but the class axis),
    "mean" (sum / number of elements, PyTorch's kl_div "mean"), "sum", "none" (per-row losses
    of the logits' shape without ``axis``).
    """
    s = _f64(student_logits)
    axis = axis % s.ndim
    xs, row_shape = _rows(s, axis)
    xt, _ = _rows(teacher_logits, axis)
    n, C = xs.shape
    T = float(temperature)
    logp = log_softmax(xs / T, axis=1)
    logq = log_softmax(xt / T, axis=1)
    q, p = np.exp(logq), np.exp(logp)
    with np.errstate(invalid="ignore"):
        terms = np.where(q == 0, 0.0, q * (logq - logp))
    per_row = T * T * terms.sum(axis=1)
    denom = {"batchmean": n, "mean": n * C}.get(reduction, 1)
    loss, scale = _reduce(per_row, denom, "mean" if reduction == "batchmean" else reduction,
                          row_shape)
    if not return_grad:
        return loss
    return loss, _unrows(T * (p - q) * scale, s.shape, axis)


def gaussian_kl(mu, logvar, reduction="mean", return_grad=False):
    """KL(N(mu, exp(logvar)) || N(0, 1)) of a diagonal Gaussian (the VAE term), float64:
    per row over the last axis

        l = -0.5 sum(1 + logvar - mu^2 - exp(logvar)) = 0.5 sum(mu^2 + (exp(logvar) - 1 - logvar))

    (evaluated as expm1(logvar) - logvar); gradients (d_mu, d_logvar) = (mu,
    0.5 (exp(logvar) - 1)) times the reduction's scale. "none": per-row losses of shape
    mu.shape[:-1] (0-d array for 1-d inputs); "mean": mean over rows (none: nan); "sum".
    """
    m, v = _f64(mu), _f64(logvar)
    with np.errstate(over="ignore"):
        per = 0.5 * (m * m + (np.expm1(v) - v))
    per_row = per.sum(axis=-1)
    if reduction == "none":
        loss, scale = np.asarray(per_row).reshape(m.shape[:-1]), 1.0
    else:
        loss, scale = _row_reduce(per_row.reshape(-1), reduction, m.shape[:-1])
    if not return_grad:
        return loss
    with np.errstate(over="ignore"):
        return loss, (m * scale, 0.5 * np.expm1(v) * scale)


# ---------------------------------------------------------------------------------------------
# Embeddings: contrastive pairs, triplets, CLIP's symmetric InfoNCE.
# ---------------------------------------------------------------------------------------------
def _embedding_reduce(per_row, reduction, row_shape):
    """Per-row losses (flat) -> the reduction over rows, and d(returned loss)/d(row loss)."""
    if reduction == "none":
        return per_row.reshape(row_shape), 1.0
    return _row_reduce(per_row, reduction, row_shape)


def contrastive_loss(x1, x2, label, margin=1.0, reduction="mean", return_grad=False):
    """Hadsell et al.'s contrastive loss, float64, rows over the last axis:

        d = ||x1 - x2||_2,  l = y d^2 + (1 - y) max(0, margin - d)^2   (y = 1: similar pair)
        dl/dx1 = -dl/dx2 = 2 y (x1 - x2) - 2 (1 - y) max(0, margin - d) (x1 - x2) / d

    with the second term 0 at d = 0 (its subgradient there). Reductions over pairs.
    """
    a, b = _f64(x1), _f64(x2)
    y = _f64(label).reshape(-1)
    diff = (a - b).reshape(-1, a.shape[-1])
    d = np.sqrt((diff**2).sum(axis=1))
    h = np.maximum(margin - d, 0.0)
    per_row = y * d**2 + (1 - y) * h**2
    loss, scale = _embedding_reduce(per_row, reduction, a.shape[:-1])
    if not return_grad:
        return loss
    safe_d = np.where(d > 0, d, 1.0)
    coef = 2 * y - 2 * (1 - y) * np.where(d > 0, h / safe_d, 0.0)
    g = (coef[:, None] * diff * scale).reshape(a.shape)
    return loss, (g, -g)


def _pairwise_distance(u, v, p, eps):
    """PyTorch's pairwise_distance: ||u - v + eps||_p over the last axis of (rows, D) arrays,
    and the gradient of that norm with respect to u (PyTorch's norm backward: 0 where the
    norm is 0; p = inf: split between tied maxima)."""
    x = u - v + eps
    ax = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        if p == np.inf:
            d = ax.max(axis=1, initial=0.0)
            at_max = ax == d[:, None]
            g = np.sign(x) * at_max / np.maximum(at_max.sum(axis=1), 1)[:, None]
        else:
            d = (ax**p).sum(axis=1) ** (1.0 / p)
            # d||x||_p/dx_k = sign(x_k) |x_k|^(p-1) / ||x||_p^(p-1)
            g = np.sign(x) * ax ** (p - 1) / d[:, None] ** (p - 1)
            g = np.where((d[:, None] == 0) | (x == 0), 0.0, g)
    return d, g


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False,
                        reduction="mean", return_grad=False):
    """PyTorch's triplet_margin_loss, float64, rows over the last axis:

        l = max(0, margin + d(a, p) - d_neg),  d(u, v) = ||u - v + eps||_p,
        d_neg = d(a, n), or min(d(a, n), d(p, n)) with swap

    Gradient as PyTorch's autograd: passed where margin + d(a, p) - d_neg >= 0; with swap, the
    smaller distance gets it (half each on a tie). Returns (d_anchor, d_positive, d_negative).
    """
    a, pp, n = _f64(anchor), _f64(positive), _f64(negative)
    shape = a.shape
    rows = int(np.prod(shape[:-1], dtype=np.int64))  # (not -1: (0, 0) inputs have 0 rows of 0)
    a, pp, n = (t.reshape(rows, shape[-1]) for t in (a, pp, n))
    d_ap, u_ap = _pairwise_distance(a, pp, p, eps)
    d_an, u_an = _pairwise_distance(a, n, p, eps)
    d_pn, u_pn = _pairwise_distance(pp, n, p, eps)
    if swap:
        d_neg = np.minimum(d_an, d_pn)
        w_an = np.where(d_an < d_pn, 1.0, np.where(d_an == d_pn, 0.5, 0.0))
    else:
        d_neg, w_an = d_an, np.ones_like(d_an)
    w_pn = 1.0 - w_an if swap else np.zeros_like(d_an)
    z = margin + d_ap - d_neg
    per_row = np.maximum(z, 0.0)
    loss, scale = _embedding_reduce(per_row, reduction, shape[:-1])
    if not return_grad:
        return loss
    c = (np.where(z >= 0, 1.0, 0.0) * scale)[:, None]
    w_an, w_pn = w_an[:, None], w_pn[:, None]
    ga = c * (u_ap - w_an * u_an)
    gp = c * (-u_ap - w_pn * u_pn)
    gn = c * (w_an * u_an + w_pn * u_pn)
    return loss, (ga.reshape(shape), gp.reshape(shape), gn.reshape(shape))


def clip_loss(image_emb, text_emb, temperature=0.07, normalize=True, reduction="mean",
              return_grad=False):
    """CLIP's symmetric InfoNCE, float64, for (N, D) image and text embeddings:

        x̂ = x / max(||x||, 1e-12) (normalize), L = Î T̂^T / temperature,
        l_i = (-log_softmax(L, rows)[i, i] - log_softmax(L, columns)[i, i]) / 2
        dl/dL = ((P_row - I) + (P_col - I)) / 2 (times the reduction's scale)
        dÎ = dL T̂ / temperature,  dT̂ = dL^T Î / temperature,
        dx = (I - x̂ x̂^T) dx̂ / ||x||  (dx̂ / 1e-12 where the norm was clamped)

    Reductions over the N pairs; returns (d_image, d_text).
    """
    img, txt = _f64(image_emb), _f64(text_emb)
    n = img.shape[0]

    def normalized(x):
        norm = np.sqrt((x**2).sum(axis=1))
        return x / np.maximum(norm, 1e-12)[:, None], norm

    if normalize:
        (ih, i_norm), (th, t_norm) = normalized(img), normalized(txt)
    else:
        ih, th = img, txt
    logits = ih @ th.T / temperature
    idx = np.arange(n)
    log_p_row = log_softmax(logits, axis=1) if n else logits
    log_p_col = log_softmax(logits, axis=0) if n else logits
    per_row = -(log_p_row[idx, idx] + log_p_col[idx, idx]) / 2
    loss, scale = _embedding_reduce(per_row, reduction, (n,))
    if not return_grad:
        return loss
    eye = np.eye(n)
    d_logits = ((np.exp(log_p_row) - eye) + (np.exp(log_p_col) - eye)) / 2 * scale
    d_ih = d_logits @ th / temperature
    d_th = d_logits.T @ ih / temperature
    if not normalize:
        return loss, (d_ih, d_th)

    def normalize_backward(g, xh, norm):
        # the Jacobian of x / ||x|| is (I - x̂ x̂^T) / ||x||, applied row by row
        projected = g - xh * (xh * g).sum(axis=1, keepdims=True)
        return np.where((norm < 1e-12)[:, None], g / 1e-12, projected / norm[:, None])

    return loss, (normalize_backward(d_ih, ih, i_norm), normalize_backward(d_th, th, t_norm))


# ---------------------------------------------------------------------------------------------
# Sequences: connectionist temporal classification.
# ---------------------------------------------------------------------------------------------
def _ctc_labels(targets, target_lengths):
    """Per-sample label arrays from padded (N, S) or concatenated 1-d targets."""
    t = np.asarray(targets).astype(np.int64)
    lengths = [int(v) for v in target_lengths]
    if t.ndim == 2:
        return [t[n, :k] for n, k in enumerate(lengths)]
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return [t[starts[n]:starts[n] + k] for n, k in enumerate(lengths)]


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False, return_grad=False):
    """CTC loss (Graves et al. 2006), float64, PyTorch's semantics and layouts.

    ``log_probs`` (T, N, C) or unbatched (T, C); targets padded (N, S) or concatenated 1-d
    (unbatched: (S,)). For each sample, with the extended labels l' (blanks interleaved,
    length L = 2S + 1), log alpha / log beta both including the emission at their step and
    lse = log-sum-exp:

        la_t(s) = lse(la_{t-1}(s), la_{t-1}(s-1), la_{t-1}(s-2) if l'_s != l'_{s-2}) + lp_t(l'_s)
        loss    = -lse(la_{T-1}(L-1), la_{T-1}(L-2))
        lb_t(s) = lse(lb_{t+1}(s), lb_{t+1}(s+1), lb_{t+1}(s+2) if l'_s != l'_{s+2}) + lp_t(l'_s)

    Gradient as PyTorch's backward returns it (log_probs taken as log_softmax outputs):
    ``exp(lp_t(c)) - sum_{s: l'_s = c} exp(la_t(s) + lb_t(s) + loss - lp_t(c))`` for t below the
    input length, 0 after; NaN for a sample with infinite (0 with ``zero_infinity``) or NaN loss.
    "mean": per-sample losses over max(target length, 1), then the mean over the batch.
    """
    lp = _f64(log_probs)
    unbatched = lp.ndim == 2
    if unbatched:
        lp, targets = lp[:, None, :], np.asarray(targets)[None]
    il = np.atleast_1d(np.asarray(input_lengths)).astype(np.int64)
    tl = np.atleast_1d(np.asarray(target_lengths)).astype(np.int64)
    _, N, C = lp.shape
    labels = _ctc_labels(targets, tl)
    nll = np.empty(N)
    grad = np.zeros_like(lp)
    for n in range(N):
        Tn, lab = int(il[n]), labels[n]
        L = 2 * len(lab) + 1
        ext = np.full(L, blank, dtype=np.int64)
        ext[1::2] = lab
        skip = np.zeros(L, dtype=bool)  # the s-2 -> s transition is allowed
        skip[3::2] = ext[3::2] != ext[1:-2:2]
        if Tn == 0:
            nll[n] = 0.0 if L == 1 else np.inf
            continue
        x = lp[:Tn, n, :]
        em = x[:, ext]  # (Tn, L): lp_t(l'_s)
        la = np.full((Tn, L), -np.inf)
        la[0, :2] = em[0, :2]
        for t in range(1, Tn):
            prev = np.concatenate([[-np.inf, -np.inf], la[t - 1]])
            terms = np.logaddexp(prev[2:], prev[1:-1])
            la[t] = np.logaddexp(terms, np.where(skip, prev[:-2], -np.inf)) + em[t]
        nll[n] = -(la[-1, 0] if L == 1 else np.logaddexp(la[-1, -1], la[-1, -2]))
        if not return_grad:
            continue
        if nll[n] == np.inf or np.isnan(nll[n]):
            grad[:Tn, n] = 0.0 if zero_infinity and nll[n] == np.inf else np.nan
            continue
        lb = np.full((Tn, L), -np.inf)
        lb[-1, -2:] = em[-1, -2:]
        skip_next = np.concatenate([skip, [False, False]])[2:]  # s -> s+2 allowed
        for t in range(Tn - 2, -1, -1):
            nxt = np.concatenate([lb[t + 1], [-np.inf, -np.inf]])
            terms = np.logaddexp(nxt[:-2], nxt[1:-1])
            lb[t] = np.logaddexp(terms, np.where(skip_next, nxt[2:], -np.inf)) + em[t]
        ab = la + lb
        with np.errstate(invalid="ignore", over="ignore"):
            post = np.where(ab == -np.inf, 0.0, np.exp(ab + nll[n] - em))
        occ = np.zeros((Tn, C))
        for s in range(L):
            occ[:, ext[s]] += post[:, s]
        grad[:Tn, n] = np.exp(x) - occ
    if zero_infinity:
        nll = np.where(nll == np.inf, 0.0, nll)
    if reduction == "mean":
        per = 1.0 / np.maximum(tl, 1) / N if N else np.zeros(0)
        with np.errstate(invalid="ignore"):
            loss = np.sum(nll * per) if N else np.float64(np.nan)
        scale = per
    elif reduction == "sum":
        loss, scale = nll.sum(), np.ones(N)
    else:
        loss, scale = (nll.reshape(()) if unbatched else nll), np.ones(N)
    if not return_grad:
        return loss
    grad = grad * scale[None, :, None]
    return loss, (grad[:, 0, :] if unbatched else grad)


# --- Scale: vocabulary-sharded statistics and the linear cross-entropy (fastloss.scale) -------
def cross_entropy_stats(logits, target, axis=-1, class_offset=0, ignore_index=-100, softcap=None):
    """Statistics of one shard (classes class_offset .. + V - 1), as a dict of float64 arrays
    of the rows' shape, with x the (capped) shard logits, m = max_j x_j, t the global target:
        max = m;  sumexp = sum_{j != t} exp(x_j - m);  target_logit = x_t (0 if t not here)
        has_target = t in the shard;  sum_logits = sum_j x_j;  n_classes = V;  target = t."""
    logits = _f64(logits)
    axis = axis % logits.ndim
    x, row_shape = _rows(logits, axis)
    if softcap is not None:
        x, _ = _softcap(x, float(softcap))
    n, V = x.shape
    t = np.asarray(target).reshape(-1).astype(np.int64)
    local = t - class_offset
    has = (t != ignore_index) & (local >= 0) & (local < V)
    li = np.where(has, local, 0)
    with np.errstate(invalid="ignore", over="ignore"):
        m = x.max(axis=1) if V else np.full(n, -np.inf)
        e = np.exp(x - m[:, None])
        e[has, li[has]] = 0.0
        sumexp = np.where(m == -np.inf, 0.0, e.sum(axis=1))
    tl = np.where(has, x[np.arange(n), li] if V else 0.0, 0.0)
    r = lambda a: a.reshape(row_shape)  # noqa: E731
    return dict(max=r(m), sumexp=r(sumexp), target_logit=r(tl), has_target=r(has),
                sum_logits=r(x.sum(axis=1)), n_classes=V, target=r(t))


def merge_cross_entropy_stats(stats, label_smoothing=0.0, z_loss=0.0, reduction="none",
                              ignore_index=-100):
    """(loss, lse) of the full rows from a list of shard statistics (dicts as above), the
    textbook way: M = max_k m_k, S = sum_k s_k exp(m_k - M) + exp(x_t - M), lse = M + log S,
        l = (1 - eps) (lse - x_t) + eps (lse - sum_logits / C) + z lse^2
    (C = sum of the shard widths), 0 for ignored rows; "mean" over the non-ignored rows."""
    eps = label_smoothing
    M = np.max([s["max"] for s in stats], axis=0)
    C = sum(s["n_classes"] for s in stats)
    t = stats[0]["target"]
    has = np.any([s["has_target"] for s in stats], axis=0)
    xt = np.sum([np.where(s["has_target"], s["target_logit"], 0.0) for s in stats], axis=0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        S = np.sum([s["sumexp"] * np.exp(s["max"] - M) for s in stats], axis=0) + np.where(
            has, np.exp(xt - M), 0.0)
        lse = M + np.log(S)
        total = np.sum([s["sum_logits"] for s in stats], axis=0)
        per_row = (1 - eps) * (lse - xt) + (eps * (lse - total / C) if eps else 0.0) + (
            z_loss * lse**2)
    valid = t != ignore_index
    per_row = np.where(valid, per_row, 0.0)
    loss, _ = _reduce(per_row.reshape(-1), np.count_nonzero(valid), reduction, t.shape)
    return loss, lse


def linear_cross_entropy(hidden, weight, target, bias=None, class_weight=None, ignore_index=-100,
                         label_smoothing=0.0, z_loss=0.0, softcap=None, reduction="mean",
                         return_grad=False):
    """cross_entropy(logits, target, axis=1, weight=class_weight, ...) in float64 with the
    logits materialised: logits[n, c, k...] = hidden[n] . weight[c, k..., :] + bias[c, k...]
    for hidden (N, D) and weight (C, d1..dK, D) (a 1-d hidden is one sample, axis 0);
    gradients by the chain rule with G = dloss/dlogits:
        d_hidden = sum_{c,k} G[n, c, k] weight[c, k],  d_weight = sum_n G[n] hidden[n],
        d_bias = sum_n G[n]."""
    h, w = _f64(hidden), _f64(weight)
    one = h.ndim == 1
    h2 = h[None] if one else h
    C, D, pos = w.shape[0], w.shape[-1], w.shape[1:-1]
    wf = w.reshape(-1, D)  # (C * P, D): class c, position k at row c * P + k
    logits = (h2 @ wf.T).reshape((h2.shape[0], C) + pos)
    if bias is not None:
        logits = logits + _f64(bias)
    if one:
        logits = logits[0]
    out = cross_entropy(logits, target, axis=0 if one else 1, weight=class_weight,
                        ignore_index=ignore_index, reduction=reduction,
                        label_smoothing=label_smoothing, return_grad=return_grad,
                        z_loss=z_loss, softcap=softcap)
    if not return_grad:
        return out
    loss, G = out
    Gf = (G[None] if one else G).reshape(h2.shape[0], wf.shape[0])  # (N, C * P)
    d_h = Gf @ wf
    grads = (d_h[0] if one else d_h, (Gf.T @ h2).reshape(w.shape))
    grads += () if bias is None else (Gf.sum(axis=0).reshape(np.shape(bias)),)
    return loss, grads


# --- Issue 16: multi-class hinge / perceptron, sparsemax, JSD, ranking softmax -------------
__all__ += ["multiclass_hinge_loss", "multiclass_perceptron_loss", "sparsemax",
            "sparsemax_loss", "jensen_shannon_with_logits", "ranking_softmax_loss"]


def multiclass_hinge_loss(scores, target, axis=-1, margin=1.0, reduction="mean",
                          return_grad=False):
    """Crammer-Singer hinge, float64: per row, m = max_{j != y} s_j (-inf for one class),
    z = (m - s_y) + margin, loss = max(0, z). Gradient: the maximum's unit gradient shared
    among all maximisers K of (s_j + margin [j != y]) - s_y, as jax.grad of optax's
    max(s + margin (1 - onehot)) - s_y, with the ties decided exactly:
    K = {j != y : s_j = m} if z > 0, that set and y if z = 0, {y} if z < 0;
    grad_k = [k in K] / |K| - [k = y]."""
    s = _f64(scores)
    axis = axis % s.ndim
    x, row_shape = _rows(s, axis)
    y = np.asarray(target).reshape(-1).astype(np.int64)
    n = x.shape[0]
    onehot = np.zeros_like(x)
    onehot[np.arange(n), y] = 1.0
    sy = x[np.arange(n), y]
    rivals = np.where(onehot == 1, -np.inf, x)
    with np.errstate(invalid="ignore"):
        m = rivals.max(axis=1) if x.shape[1] else np.full(n, -np.inf)
        z = (m - sy) + margin
        per_row = np.maximum(z, 0.0)
        top = (rivals == m[:, None]) & (z >= 0)[:, None]
        K = top + onehot * (z <= 0)[:, None]
        g = K / K.sum(axis=1, keepdims=True) - onehot
    bad = np.isnan(x).any(axis=1) | np.isnan(z)
    per_row[bad] = np.nan
    g[bad] = np.nan
    loss, scale = _row_reduce(per_row, reduction, row_shape)
    if not return_grad:
        return loss
    return loss, _unrows(g * scale, s.shape, axis)


def multiclass_perceptron_loss(scores, target, axis=-1, reduction="mean", return_grad=False):
    """max_j s_j - s_y: the Crammer-Singer hinge with margin 0."""
    return multiclass_hinge_loss(scores, target, axis=axis, margin=0.0, reduction=reduction,
                                 return_grad=return_grad)


def _sparsemax_rows(x):
    """sparsemax of each row of a 2-d float64 array by sorting (Martins & Astudillo, Alg. 1):
    z sorted descending, k(z) = max{k : 1 + k z_(k) > sum_{i<=k} z_(i)},
    tau = (sum_{i<=k(z)} z_(i) - 1) / k(z), p = max(0, z - tau). Returns (p, tau)."""
    n, C = x.shape
    with np.errstate(invalid="ignore"):
        x = x - x.max(axis=1, keepdims=True)  # (shift-invariant; keeps huge logits exact)
    zs = -np.sort(-x, axis=1)
    with np.errstate(invalid="ignore"):
        csum = np.cumsum(zs, axis=1)
        k = np.arange(1, C + 1)
        support = 1 + k * zs > csum
    kz = support.sum(axis=1)
    tau = (csum[np.arange(n), np.maximum(kz, 1) - 1] - 1) / np.maximum(kz, 1)
    return np.maximum(0.0, x - tau[:, None]), tau


def sparsemax(x, axis=-1):
    """Euclidean projection of each row onto the probability simplex (float64, by sorting)."""
    a = _f64(x)
    axis = axis % a.ndim
    rows, _ = _rows(a, axis)
    p, _ = _sparsemax_rows(rows)
    # NaN or +inf anywhere, or no finite entry: NaN
    bad = np.isnan(rows).any(axis=1) | np.isposinf(rows).any(axis=1) | np.isneginf(rows).all(axis=1)
    p[bad] = np.nan
    return _unrows(p, a.shape, axis)


def sparsemax_loss(logits, target, axis=-1, reduction="mean", return_grad=False):
    """Sparsemax loss (Martins & Astudillo 2016, eq. 20), float64: per row z, p = sparsemax(z)
    with support S and threshold tau, target q (one-hot for class indices, else q itself):

        loss = -q . z + 0.5 sum_{j in S} (z_j^2 - tau^2) + 0.5 |q|^2,   grad = p - q.
    """
    z = _f64(logits)
    axis = axis % z.ndim
    x, row_shape = _rows(z, axis)
    t = np.asarray(target)
    if t.shape == z.shape:
        q, _ = _rows(t, axis)
    else:
        q = np.zeros_like(x)
        q[np.arange(x.shape[0]), t.reshape(-1).astype(np.int64)] = 1.0
    # relative to the row maximum (exact for rows of q summing to 1; the definition for others)
    with np.errstate(invalid="ignore"):
        x = x - x.max(axis=1, keepdims=True)
    p, tau = _sparsemax_rows(x)
    with np.errstate(invalid="ignore"):
        qz = np.where(q == 0, 0.0, q * x).sum(axis=1)
        sq = np.where(p > 0, x * x - tau[:, None] ** 2, 0.0).sum(axis=1)
    per_row = -qz + 0.5 * sq + 0.5 * (q * q).sum(axis=1)
    bad = (np.isnan(x).any(axis=1) | np.isposinf(_rows(z, axis)[0]).any(axis=1)
           | np.isneginf(_rows(z, axis)[0]).all(axis=1) | np.isnan(q).any(axis=1))
    per_row[bad] = np.nan
    p[bad] = np.nan
    loss, scale = _row_reduce(per_row, reduction, row_shape)
    if not return_grad:
        return loss
    return loss, _unrows((p - q) * scale, z.shape, axis)


def jensen_shannon_with_logits(student, teacher, axis=-1, beta=0.5, temperature=1.0,
                               reduction="batchmean", return_grad=False):
    """Liger-Kernel's generalized JSD of logits, float64: per row, P = softmax(teacher / T),
    Q = softmax(student / T), M = beta P + (1 - beta) Q:

        beta = 0: KL(P || Q);  beta = 1: KL(Q || P);
        else:     beta KL(P || M) + (1 - beta) KL(Q || M)

    (terms of zero weight count 0). Gradient w.r.t. the student, through the softmax:
    (g - Q sum_j g_j) / T with g_j = dloss/dQ_j Q_j. Reductions as kl_div_with_logits."""
    s = _f64(student)
    axis = axis % s.ndim
    xs, row_shape = _rows(s, axis)
    xt, _ = _rows(teacher, axis)
    n, C = xs.shape
    T = float(temperature)
    lq = log_softmax(xs / T, axis=1)
    lp = log_softmax(xt / T, axis=1)
    q, p = np.exp(lq), np.exp(lp)

    def kl(a, la, lb):  # sum a (log a - log b), 0 where a = 0
        with np.errstate(invalid="ignore"):
            t = np.where(a == 0, 0.0, a * (la - lb))
        return t, t.sum(axis=1)

    if beta == 0:
        _, per_row = kl(p, lp, lq)
        g = q - p
    elif beta == 1:
        t, per_row = kl(q, lq, lp)
        g = t - q * per_row[:, None]
    else:
        with np.errstate(divide="ignore"):
            lm = np.logaddexp(np.log(beta) + lp, np.log1p(-beta) + lq)
        _, kp = kl(p, lp, lm)
        tq, kq = kl(q, lq, lm)
        per_row = beta * kp + (1 - beta) * kq
        w = (1 - beta) * tq
        g = w - q * w.sum(axis=1, keepdims=True)
    denom = {"batchmean": n, "mean": n * C}.get(reduction, 1)
    loss, scale = _reduce(per_row, denom, "mean" if reduction == "batchmean" else reduction,
                          row_shape)
    if not return_grad:
        return loss
    return loss, _unrows(g / T * scale, s.shape, axis)


def ranking_softmax_loss(scores, labels, where=None, reduction="mean", return_grad=False):
    """optax's listwise softmax loss, float64, over the last axis: with items outside ``where``
    removed (score -inf, label 0), loss_row = -sum_i y_i log softmax(s)_i (terms with y_i = 0
    count 0); a row without items has loss 0 and gradient 0. "mean" averages over the rows
    with at least one item (0 when there are none); gradient sum(y) softmax(s) - y."""
    s = _f64(scores)
    y = np.broadcast_to(_f64(labels), s.shape)
    w = np.ones(s.shape, bool) if where is None else np.broadcast_to(np.asarray(where, bool),
                                                                     s.shape)
    row_shape = s.shape[:-1]
    n_rows = int(np.prod(row_shape))
    x = s.reshape(n_rows, s.shape[-1])
    yr = y.reshape(n_rows, s.shape[-1])
    wr = w.reshape(n_rows, s.shape[-1])
    x = np.where(wr, x, -np.inf)
    yr = np.where(wr, yr, 0.0)
    live = wr.any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ls = log_softmax(np.where(live[:, None], x, 0.0), axis=1) if x.size else x
        # a label 0 counts 0 (even at a -inf score), but a NaN log-softmax (a NaN or +inf
        # score, or all scores -inf) makes the row NaN, as optax's
        per_row = -np.where((yr == 0) & ~np.isnan(ls), 0.0, yr * ls).sum(axis=1)
        g = yr.sum(axis=1, keepdims=True) * np.exp(ls) - yr
    per_row = np.where(live, per_row, 0.0)
    g = np.where(wr & live[:, None], g, 0.0)
    n_live = int(live.sum())
    if reduction == "mean":
        loss = per_row.sum() / n_live if n_live else 0.0
        scale = 1.0 / n_live if n_live else 0.0
    else:
        loss, scale = _reduce(per_row, 1, reduction, row_shape)
    if not return_grad:
        return loss
    return loss, (g * scale).reshape(s.shape)
# ---------------------------------------------------------------------------------------------
# Issue 16: cosine similarity / distance, NT-Xent (optax's ntxent), Dice / Tversky /
# generalized Dice (optax's dice_loss, multiclass_generalized_dice_loss).
# ---------------------------------------------------------------------------------------------
__all__ += ["cosine_similarity", "cosine_distance", "ntxent_loss", "tversky_loss", "dice_loss",
            "generalized_dice_loss"]


def _sum_to_shape(g, shape):
    """Sum a gradient of a broadcast shape back onto an operand of ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def cosine_similarity(x1, x2, axis=-1, eps=1e-8, return_grad=False):
    """cos = sum(x1 x2) / (max(|x1|, eps) max(|x2|, eps)) along ``axis`` (broadcasting),
    float64; gradients of sum(cos):
        d/dx1 = x2 / (c1 c2) - [|x1| > eps] cos x1 / |x1|^2,  c_k = max(|x_k|, eps)."""
    a0, b0 = _f64(x1), _f64(x2)
    a, b = np.broadcast_arrays(a0, b0)
    n1 = np.sqrt((a * a).sum(axis=axis, keepdims=True))
    n2 = np.sqrt((b * b).sum(axis=axis, keepdims=True))
    c1, c2 = np.maximum(n1, eps), np.maximum(n2, eps)
    cos = (a * b).sum(axis=axis, keepdims=True) / (c1 * c2)
    out = np.squeeze(cos, axis=axis)
    if not return_grad:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = b / (c1 * c2) - np.where(n1 > eps, cos / (n1 * n1), 0.0) * a
        g2 = a / (c1 * c2) - np.where(n2 > eps, cos / (n2 * n2), 0.0) * b
    return out, (_sum_to_shape(g1, a0.shape), _sum_to_shape(g2, b0.shape))


def cosine_distance(x1, x2, axis=-1, eps=1e-8, reduction="mean", return_grad=False):
    """1 - cosine_similarity, reduced over the vector pairs."""
    r = cosine_similarity(x1, x2, axis=axis, eps=eps, return_grad=return_grad)
    cos = r[0] if return_grad else r
    per = 1.0 - np.asarray(cos)
    if reduction == "none":
        loss, scale = per, 1.0
    elif reduction == "sum":
        loss, scale = per.sum(), 1.0
    else:
        loss, scale = per.mean() if per.size else np.nan, 1.0 / max(per.size, 1)
    if not return_grad:
        return loss
    g1, g2 = r[1]
    return loss, (-scale * g1, -scale * g2)


def ntxent_loss(embeddings, labels, temperature=0.07, eps=None, return_grad=False):
    """optax's ntxent in float64, loop by loop: u_i = x_i / r_i, r_i = sqrt(max(|x_i|^2, eps))
    (eps: the machine epsilon of the input dtype), s_ij = u_i . u_j / T, and for every positive
    pair (i, j), j != i:  l_ij = -s_ij + log(exp(s_ij) + sum_{k: label_k != label_i} exp(s_ik)),
    loss = mean of l_ij over the positive pairs.
    Gradient by the chain rule, pair by pair: dl_ij/ds_ik = softmax of the pair's terms at k,
    minus 1 at k = j; dL/dU = (G + G^T) U / T with G = dL/dS; dL/dx_i = (g_i - u_i (u_i . g_i))
    / r_i where the norm is not clamped, g_i / r_i where it is (g_i = dL/du_i)."""
    x = np.asarray(embeddings)
    if eps is None:
        eps = float(np.finfo(x.dtype).eps) if x.dtype.kind == "f" else float(
            np.finfo(np.float64).eps)
    X = x.astype(np.float64)
    lab = np.asarray(labels)
    N = X.shape[0]
    sq = (X * X).sum(axis=1)
    r = np.sqrt(np.maximum(sq, eps))
    U = X / r[:, None]
    S = U @ U.T / temperature
    G = np.zeros_like(S)
    total, count = 0.0, 0
    for i in range(N):
        negs = [k for k in range(N) if lab[k] != lab[i]]
        for j in range(N):
            if j == i or lab[j] != lab[i]:
                continue
            cols = negs + [j]
            terms = S[i, cols]
            m = terms.max()
            e = np.exp(terms - m)
            total += -S[i, j] + m + np.log(e.sum())
            G[i, cols] += e / e.sum()
            G[i, j] -= 1.0
            count += 1
    loss = total / count if count else np.nan
    if not return_grad:
        return loss
    G = G / count if count else np.full_like(G, np.nan)
    gU = (G + G.T) @ U / temperature
    radial = np.where(sq > eps, (U * gU).sum(axis=1), 0.0)
    grad = (gU - U * radial[:, None]) / r[:, None]
    return loss, grad


def _overlap_pt(input, target, axis, from_logits):
    """Probabilities and targets as float64 (N, C, S) arrays (see fastloss.overlap)."""
    x = _f64(input)
    ax = axis % x.ndim
    C = x.shape[ax]
    xm = np.moveaxis(x, ax, 1)
    x3 = xm.reshape(xm.shape[0], C, int(np.prod(xm.shape[2:])))
    if not from_logits:
        p = x3
    elif C == 1:
        p = _sigmoid(x3)
    else:
        p = softmax(x3, axis=1)
    t = np.asarray(target)
    if t.shape == x.shape:
        t3 = np.moveaxis(t.astype(np.float64), ax, 1).reshape(x3.shape)
    elif C == 1:
        t3 = t.astype(np.float64).reshape(x3.shape)
    else:
        onehot = (np.arange(C) == t[..., None]).astype(np.float64)  # class axis last
        t3 = np.moveaxis(onehot, -1, 1).reshape(x3.shape)
    return x3, p, t3, xm.shape


def tversky_loss(input, target, alpha=0.5, beta=0.5, axis=1, from_logits=True, smooth=1.0,
                 class_weight=None, reduction="mean", return_grad=False):
    """Per (sample, class), sums over the spatial positions:
        loss_nc = w_c (1 - (I + s) / (I + alpha (P - I) + beta (T - I) + s)),
        I = sum p t, P = sum p, T = sum t;
    reductions over (N, C); gradient by the quotient rule and the softmax / sigmoid Jacobian."""
    x3, p, t, moved_shape = _overlap_pt(input, target, axis, from_logits)
    I, P, T = (p * t).sum(axis=2), p.sum(axis=2), t.sum(axis=2)
    num = I + smooth
    den = I + alpha * (P - I) + beta * (T - I) + smooth
    w = np.ones(I.shape[1]) if class_weight is None else _f64(class_weight)
    per = w * (1.0 - num / den)
    if reduction == "none":
        loss, scale = per, 1.0
    elif reduction == "sum":
        loss, scale = per.sum(), 1.0
    else:
        loss, scale = (per.mean() if per.size else np.nan), 1.0 / max(per.size, 1)
    if not return_grad:
        return loss
    # dL/dp_i = -w (t_i den - num ((1 - alpha - beta) t_i + alpha)) / den^2
    dden = (1 - alpha - beta) * t + alpha
    gp = -scale * w[None, :, None] * (t * den[..., None] - num[..., None] * dden) / (
        den[..., None] ** 2)
    C = x3.shape[1]
    if not from_logits:
        gx = gp
    elif C == 1:
        gx = gp * p * (1 - p)
    else:
        gx = p * (gp - (p * gp).sum(axis=1, keepdims=True))
    g = np.moveaxis(gx.reshape(moved_shape), 1, axis % np.ndim(input))
    return loss, g


def dice_loss(input, target, axis=1, from_logits=True, smooth=1.0, class_weight=None,
              reduction="mean", return_grad=False):
    """optax's Dice: w_c (1 - (I + s) / ((P + T) / 2 + s)) per (sample, class)."""
    return tversky_loss(input, target, 0.5, 0.5, axis, from_logits, smooth, class_weight,
                        reduction, return_grad)


def generalized_dice_loss(input, target, axis=1, from_logits=True, smooth=1.0,
                          reduction="mean", return_grad=False):
    """Dice with w_c = C u_c / sum u,  u_c = 1 / (V_c^2 + 1e-7),  V_c = sum_{n, i} t_nci."""
    _, _, t, _ = _overlap_pt(input, target, axis, from_logits)
    V = t.sum(axis=(0, 2))
    u = 1.0 / (V**2 + 1e-7)
    return dice_loss(input, target, axis, from_logits, smooth, u / u.sum() * len(u), reduction,
                     return_grad)


# ---------------------------------------------------------------------------------------------
# issue 16: PyTorch's missing losses, log-cosh and generalized KL (fastloss.pairs / .multilabel)
# ---------------------------------------------------------------------------------------------
__all__ += ["poisson_nll_loss", "gaussian_nll_loss", "cosine_embedding_loss",
            "margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss",
            "multilabel_margin_loss", "multilabel_soft_margin_loss",
            "triplet_margin_with_distance_loss", "log_cosh_loss", "generalized_kl_div"]


def _sum_to_shape(g, shape):
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, k in enumerate(shape)
                                      if k == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes).reshape(shape) if axes else g.reshape(shape)


def _elementwise(l, grads, shapes, reduction, return_grad, denom=None):
    """Elementwise losses l (broadcast shape) and their per-element derivatives with respect
    to operands of `shapes`: the reduction and the gradients summed back to each shape."""
    n = l.size if denom is None else denom
    if reduction == "none":
        loss, scale = l, 1.0
    elif reduction == "sum":
        loss, scale = l.sum(), 1.0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss, scale = l.sum() / n, (1.0 / n if n else 0.0)
    if not return_grad:
        return loss
    out = tuple(_sum_to_shape(np.broadcast_to(g * scale, l.shape), s)
                for g, s in zip(grads, shapes))
    return loss, (out[0] if len(out) == 1 else out)


def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean",
                     return_grad=False):
    """log_input: l = exp(x) - y x, dl/dx = exp(x) - y; else l = x - y log(x + eps),
    dl/dx = 1 - y / (x + eps); full adds y log y - y + log(2 pi y) / 2 where y > 1."""
    x, y = _f64(input), _f64(target)
    x_b, y_b = np.broadcast_arrays(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        if log_input:
            l, g = np.exp(x_b) - y_b * x_b, np.exp(x_b) - y_b
        else:
            l = x_b - np.where(y_b == 0, 0.0, y_b * np.log(x_b + eps))
            g = 1.0 - np.where(y_b == 0, 0.0, y_b / (x_b + eps))
        if full:
            ys = np.where(y_b > 1, y_b, 1.0)
            l = l + np.where(y_b > 1, ys * np.log(ys) - ys + 0.5 * np.log(2 * np.pi * ys), 0.0)
    return _elementwise(l, [g], [x.shape], reduction, return_grad)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean",
                      return_grad=False):
    """v = max(var, eps): l = (log v + (x - y)^2 / v) / 2 (+ log(2 pi) / 2 with full);
    dl/dx = (x - y) / v, dl/dvar = (1 / v - (x - y)^2 / v^2) / 2 (the clamp not
    differentiated, as torch). var of x's shape without the last axis gets a trailing axis.
    Returns (d_input, d_var)."""
    x, y = _f64(input), _f64(target)
    v0 = _f64(var)
    v = v0[..., None] if (v0.shape != x.shape and v0.shape == x.shape[:-1]) else v0
    vc = np.maximum(v, eps)
    d = x - y
    l = 0.5 * (np.log(vc) + d * d / vc) + (0.5 * np.log(2 * np.pi) if full else 0.0)
    l = np.broadcast_to(l, np.broadcast_shapes(l.shape, vc.shape))
    gx, gv = d / vc, 0.5 * (1.0 / vc - d * d / vc**2)
    r = _elementwise(l, [gx, gv], [x.shape, v.shape], reduction, return_grad)
    if not return_grad:
        return r
    return r[0], (r[1][0], r[1][1].reshape(v0.shape))


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean",
                        return_grad=False):
    """l = max(0, z), z = margin - y (x1 - x2); (dl/dx1, dl/dx2) = (-y, y) where z >= 0."""
    a, b, y = _f64(input1), _f64(input2), _f64(target)
    z = margin - y * (a - b)
    on = np.where(z >= 0, 1.0, 0.0)
    return _elementwise(np.maximum(z, 0.0), [-y * on, y * on], [a.shape, b.shape], reduction,
                        return_grad)


def hinge_embedding_loss(input, target, margin=1.0, reduction="mean", return_grad=False):
    """y = 1: l = x (dl/dx = 1); y = -1: l = max(0, margin - x) (dl/dx = -1 where
    margin - x >= 0)."""
    x, y = _f64(input), _f64(target)
    z = margin - x
    l = np.where(y == 1, x, np.maximum(z, 0.0))
    g = np.where(y == 1, 1.0, np.where(z >= 0, -1.0, 0.0))
    return _elementwise(l, [g], [x.shape], reduction, return_grad)


def soft_margin_loss(input, target, reduction="mean", return_grad=False):
    """l = log(1 + exp(-y x)), dl/dx = -y sigmoid(-y x)."""
    x, y = _f64(input), _f64(target)
    t = -y * x
    return _elementwise(_softplus(t), [-y * _sigmoid(t)], [x.shape], reduction, return_grad)


def log_cosh_loss(input, target, reduction="mean", return_grad=False):
    """l = log(cosh(x - y)) = |d| + log1p(exp(-2|d|)) - log 2 (for |d| >= 1; for smaller |d|
    log1p(cosh(d) - 1) with cosh(d) - 1 = 2 sinh(d/2)^2), dl/dx = tanh(d)."""
    x, y = _f64(input), _f64(target)
    d = x - y
    a = np.abs(d)
    small = np.log1p(2.0 * np.sinh(np.minimum(a, 1.0) / 2) ** 2)
    large = a + np.log1p(np.exp(-2.0 * a)) - np.log(2.0)
    l = np.where(a < 1.0, small, large)
    return _elementwise(l, [np.tanh(d)], [x.shape], reduction, return_grad)


def generalized_kl_div(input, target, axis=-1, reduction="mean", return_grad=False):
    """optax's generalized_kl_divergence: per row (over axis),
    sum(y (log y - x) + exp(x) - y) with y log y = 0 at y = 0; dl/dx = exp(x) - y.
    "mean" is over rows."""
    x, y = _f64(input), _f64(target)
    x_b, y_b = np.broadcast_arrays(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        l = np.where(y_b == 0, 0.0, y_b * (np.log(np.where(y_b > 0, y_b, 1.0)) - x_b))
    l = l + np.exp(x_b) - y_b
    per_row = l.sum(axis=axis)
    rows = per_row.size
    if reduction == "none":
        loss, scale = per_row, 1.0
    elif reduction == "sum":
        loss, scale = per_row.sum(), 1.0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss, scale = per_row.sum() / rows, (1.0 / rows if rows else 0.0)
    if not return_grad:
        return loss
    return loss, _sum_to_shape((np.exp(x_b) - y_b) * scale, x.shape)


def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean",
                                return_grad=False):
    """Per row (last axis, C classes): sum_c w_c BCE_with_logits(x_c, y_c) / C; dl/dx_c =
    w_c (sigmoid(x_c) - y_c) / C. "mean" over rows."""
    x, y = _f64(input), _f64(target)
    C = x.shape[-1]
    y = np.broadcast_to(y, x.shape)
    w = np.ones(x.shape) if weight is None else np.broadcast_to(_f64(weight), x.shape)
    l = w * (y * _softplus_neg(x) + (1 - y) * _softplus(x)) / C
    g = w * (_sigmoid(x) - y) / C
    per_row = l.sum(axis=-1).reshape(-1)
    loss, scale = _embedding_reduce(per_row, reduction, x.shape[:-1])
    return (loss, g * scale) if return_grad else loss


def multilabel_margin_loss(input, target, reduction="mean", return_grad=False):
    """Per row: sum over listed targets j (before the first -1) and non-targets i of
    max(0, 1 - (x_j - x_i)) / C; the gradient +1/C at i and -1/C at j where that is > 0."""
    x = _f64(input)
    shape = x.shape
    C = shape[-1]
    x2 = x.reshape(-1, C)
    t2 = np.asarray(target).reshape(-1, C)
    per_row = np.zeros(x2.shape[0])
    g = np.zeros_like(x2)
    for r in range(x2.shape[0]):
        listed = []
        for v in t2[r]:
            if v < 0:
                break
            listed.append(int(v))
        is_t = np.zeros(C, bool)
        is_t[listed] = True
        for j in listed:
            z = 1.0 - x2[r, j] + x2[r]
            on = (z > 0) & ~is_t
            per_row[r] += z[on].sum() / C
            g[r, on] += 1.0 / C
            g[r, j] -= on.sum() / C
    loss, scale = _embedding_reduce(per_row, reduction, shape[:-1])
    return (loss, (g * scale).reshape(shape)) if return_grad else loss


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean",
                          return_grad=False):
    """cos = <a, b> / sqrt((|a|^2 + 1e-12)(|b|^2 + 1e-12)) over the last axis;
    y = 1: 1 - cos; y = -1: max(0, cos - margin) (gradient where cos - margin >= 0)."""
    a, b = np.broadcast_arrays(_f64(input1), _f64(input2))
    shape = a.shape
    y = _f64(target).reshape(-1)
    a2, b2 = a.reshape(-1, shape[-1]), b.reshape(-1, shape[-1])
    dot = (a2 * b2).sum(axis=1)
    m1, m2 = (a2 * a2).sum(axis=1) + 1e-12, (b2 * b2).sum(axis=1) + 1e-12
    den = np.sqrt(m1 * m2)
    cos = dot / den
    per_row = np.where(y == 1, 1.0 - cos, np.maximum(cos - margin, 0.0))
    loss, scale = _embedding_reduce(per_row, reduction, shape[:-1])
    if not return_grad:
        return loss
    c = (np.where(y == 1, -1.0, np.where(cos - margin >= 0, 1.0, 0.0)) * scale)[:, None]
    ga = c * (b2 / den[:, None] - (cos / m1)[:, None] * a2)
    gb = c * (a2 / den[:, None] - (cos / m2)[:, None] * b2)
    return loss, (_sum_to_shape(ga.reshape(shape), np.shape(input1)),
                  _sum_to_shape(gb.reshape(shape), np.shape(input2)))


def triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=None,
                                      margin=1.0, swap=False, reduction="mean",
                                      return_grad=False):
    """max(0, margin + d(a, p) - d_neg), d_neg = d(a, n) or min(d(a, n), d(p, n)) with swap;
    the default d is torch's pairwise_distance (||u - v + 1e-6||_2)."""
    if distance_function is None:
        return triplet_margin_loss(anchor, positive, negative, margin=margin, p=2.0, eps=1e-6,
                                   swap=swap, reduction=reduction, return_grad=return_grad)
    a, p, n = (np.asarray(t) for t in (anchor, positive, negative))
    d_pos = _f64(distance_function(a, p))
    d_neg = _f64(distance_function(a, n))
    if swap:
        d_neg = np.minimum(d_neg, _f64(distance_function(p, n)))
    per = np.maximum(margin + d_pos - d_neg, 0.0)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()
