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
           "gaussian_kl"]


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
    if dcap is not None:
        grad = grad * dcap
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
    mean; no samples: nan), "sum", "none" (per sample, shape ``target.shape``).
    """
    x = _f64(input)
    row_shape = x.shape[:-1]
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
    return loss, (g * scale).reshape(x.shape)


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
def kl_div(input, target, reduction="mean", log_target=False, return_grad=False):
    """PyTorch's kl_div, float64: ``input`` holds log-probabilities, broadcast with ``target``
    by NumPy rules.

    log_target False:  l = y (log y - x), exactly 0 where y == 0 whatever x is (-inf and NaN
                       included; PyTorch gives NaN for y = 0, x = -inf); dl/dx = -y
    log_target True:   l = exp(y) (y - x); dl/dx = -exp(y). (Reference choice, mirroring the
                       rule above: where y == -inf, i.e. probability 0, the term is 0, where
                       PyTorch gives NaN.)
    Reductions: "none", "sum", "mean" (divide by the number of elements of the broadcast
    shape, as PyTorch), "batchmean" (divide by the first dimension of the broadcast shape;
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
