"""fastloss's losses for JAX arrays, differentiable and usable under ``jit`` and ``vmap``.

``import fastloss.jax as flj`` (needs ``pip install 'fastloss[jax]'``; ``import fastloss``
itself never imports JAX). The arguments follow optax where optax has the loss
(``logits, labels``; ``predictions, targets``; ``axis=-1``) and the result is per example
(``reduction="none"``, as optax) unless ``reduction="mean"`` or ``"sum"`` is asked for:

============================================  ==============================================
fastloss.jax                                  optax / JAX equivalent
============================================  ==============================================
``cross_entropy(logits, labels)``             ``softmax_cross_entropy_with_integer_labels``
                                              (integer labels) or ``softmax_cross_entropy``
                                              (probabilities); plus ``ignore_index``,
                                              ``label_smoothing``, ``z_loss``, ``softcap``,
                                              ``normalizer``
``mse_loss(predictions, targets)``            ``squared_error`` (not ``l2_loss``, which
                                              halves it)
``huber_loss(predictions, targets, delta=)``  ``huber_loss``
``binary_cross_entropy_with_logits``          ``sigmoid_binary_cross_entropy``
``kl_div_with_logits(student, teacher)``      ``T**2 * kl_divergence(log_softmax(s / T),
                                              softmax(t / T))``
``linear_cross_entropy(hidden, weight, y)``   cross-entropy of ``hidden @ weight.T + bias``
                                              without the logits (default ``"mean"``)
============================================  ==============================================

>>> import jax, jax.numpy as jnp, optax, fastloss.jax as flj
>>> logits = jax.random.normal(jax.random.key(0), (8, 100))
>>> labels = jnp.arange(8)
>>> loss_fn = lambda x: flj.cross_entropy(x, labels, reduction="mean")
>>> g = jax.jit(jax.grad(loss_fn))(logits)
>>> ref = jax.grad(lambda x: optax.softmax_cross_entropy_with_integer_labels(x, labels).mean())
>>> bool(jnp.allclose(g, ref(logits), atol=1e-7))
True

How it works. Each loss is a :func:`jax.custom_vjp` whose forward is a
:func:`jax.pure_callback` into the fastloss kernel on the host: the callback gets the arrays
as NumPy arrays (bfloat16 as ``ml_dtypes.bfloat16``) and, when the loss is differentiated,
returns the gradient computed in the same pass as the loss; the backward rule multiplies
that gradient by the cotangent. Losses that are not differentiated compute no gradient. The
callback runs on the CPU (arrays on an accelerator are copied to the host and back); JAX
copies the callback's results into its own buffers (one copy of the gradient).

``vmap``: with ``reduction="none"`` every row is independent, and a batch is handed to
fastloss in one call (``vmap_method="broadcast_all"``); ``"mean"`` and ``"sum"`` reduce over
the whole call, so a batch is evaluated one element after another
(``vmap_method="sequential"``), which is exact (each element gets its own mean) but runs the
kernel once per element.

Gradients are taken with respect to the predictions (``logits``, ``predictions``,
``student_logits``; ``hidden``, ``weight`` and ``bias`` of :func:`linear_cross_entropy`).
Differentiating with respect to probability labels, targets or the teacher raises a
``TypeError`` at trace time (fastloss does not compute those gradients; use optax there).
No second derivatives.
"""

from __future__ import annotations

import functools
import math
import mmap
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # pragma: no cover - exercised only without jax
    raise ImportError("fastloss.jax needs JAX: pip install 'fastloss[jax]' (or jax>=0.4.30)"
                      ) from exc

from . import binary as _binary
from . import classification as _classification
from .classification import CrossEntropyResult
from . import distributions as _distributions
from . import regression as _regression
from . import scale as _scale
from ._validation import REDUCTIONS, check_int, check_real, check_reduction, check_temperature

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div_with_logits",
    "linear_cross_entropy",
    "mse_loss",
]


class _Spec(NamedTuple):
    """What one call computes (static under jit: hashable)."""

    name: str  # the public function, for messages
    run: Callable  # run(*numpy arrays, return_grad) -> loss or (loss, grad or grads)
    arg_names: tuple  # of the array arguments
    diff: tuple  # positions of the arrays fastloss differentiates
    loss_shape: tuple
    loss_dtype: Any
    row_axes: tuple  # reduction "none": where the cotangent gets axes to meet the gradient
    per_row: bool  # reduction "none": rows are independent, a vmap batch is more rows
    grad_out: bool = True  # the fastloss function takes grad_out (one gradient)
    # Statistics returned beside the loss, not differentiable: ((shape, dtype), ...); run then
    # returns (its usual result, tuple of the statistics).
    extras: tuple = ()


def _loss_dtype(*dtypes: Any) -> np.dtype:
    """fastloss's loss dtype: float64 if any input is float64, else float32 (16-bit inputs are
    computed in float32)."""
    return np.dtype(np.float64 if any(np.dtype(d) == np.float64 for d in dtypes)
                    else np.float32)


def _runner(fn: Callable, **options: Any) -> Callable:
    """``functools.partial(fn, **options)``, the same object for the same options: specs
    that compare equal let JAX reuse what it compiled for an earlier call (eager calls
    included), instead of compiling a new callback for every call."""
    return _cached_partial(fn, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=256)
def _cached_partial(fn: Callable, options: tuple) -> Callable:
    return functools.partial(fn, **dict(options))


def _page_buffer(shape: tuple, dtype: Any) -> np.ndarray:
    """An uninitialised array for a gradient, in anonymous memory of ordinary pages (freed
    with the array). NumPy asks the kernel for transparent huge pages for large arrays; where
    the kernel defragments memory on that request (``defrag=madvise``, a common default), the
    first touch of a fresh 800 MB gradient stalled for seconds on a busy machine here (a
    GPT-2 output-layer step: 12-13 s against 9 s with ordinary pages)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < (1 << 22):
        return np.empty(shape, dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


@functools.lru_cache(maxsize=256)
def _host(spec: _Spec, want_grad: bool, grad_dtypes: tuple) -> Callable:
    def call(*arrays: Any):
        # (the callback is handed jax.Arrays: as NumPy arrays (views of the host buffers) the
        # fastloss functions take their one-call fast paths, which take ndarrays only)
        arrays = tuple(np.asarray(a) for a in arrays)
        extra = {}
        if want_grad and spec.grad_out:
            extra["grad_out"] = _page_buffer(arrays[spec.diff[0]].shape, grad_dtypes[0])
        out = spec.run(*arrays, want_grad, **extra)
        if spec.extras:
            out, stats = out
            stats = tuple(np.asarray(v, dt) for v, (_, dt) in zip(stats, spec.extras))
        if not want_grad:
            result = np.asarray(out, spec.loss_dtype)
        else:
            loss, grads = out
            grads = grads if isinstance(grads, tuple) else (grads,)
            result = (np.asarray(loss, spec.loss_dtype),
                      tuple(np.asarray(g, dt) for g, dt in zip(grads, grad_dtypes)))
        return (result, stats) if spec.extras else result
    return call


def _callback(spec: _Spec, arrays: tuple, want_grad: bool):
    loss = jax.ShapeDtypeStruct(spec.loss_shape, spec.loss_dtype)
    grads = tuple(jax.ShapeDtypeStruct(arrays[i].shape, arrays[i].dtype) for i in spec.diff)
    result = (loss, grads) if want_grad else loss
    if spec.extras:
        result = (result, tuple(jax.ShapeDtypeStruct(sh, dt) for sh, dt in spec.extras))
    out = jax.pure_callback(_host(spec, want_grad, tuple(g.dtype for g in grads)), result,
                            *arrays, vmap_method="broadcast_all" if spec.per_row
                            else "sequential")
    if not spec.extras:
        return out
    # with statistics, the primal output is (loss, statistics) and the residuals the gradients
    (loss, grads), stats = out if want_grad else ((out[0], None), out[1])
    return ((loss, stats), grads) if want_grad else (loss, stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _apply(spec: _Spec, *arrays):
    return _callback(spec, arrays, want_grad=False)


def _apply_fwd(spec: _Spec, *primals):
    for i, p in enumerate(primals):
        if p.perturbed and i not in spec.diff:
            raise TypeError(
                f"fastloss.jax.{spec.name} gives no gradient with respect to "
                f"{spec.arg_names[i]}; wrap it in jax.lax.stop_gradient, or use optax / "
                "jax.numpy to differentiate with respect to it")
    loss, grads = _callback(spec, tuple(p.value for p in primals), want_grad=True)
    return loss, grads


def _apply_bwd(spec: _Spec, grads: tuple, cotangent):
    out = [None] * len(spec.arg_names)
    if spec.extras:  # (the statistics' cotangents are dropped: they have no gradient)
        cotangent = cotangent[0]
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        return tuple(out)
    ct = cotangent
    for axis in spec.row_axes:
        ct = jnp.expand_dims(ct, axis)
    for i, g in zip(spec.diff, grads):
        out[i] = (g * ct).astype(g.dtype)
    return tuple(out)


_apply.defvjp(_apply_fwd, _apply_bwd, symbolic_zeros=True)


def _array(x: Any, name: str, fn: str) -> jax.Array:
    a = jnp.asarray(x)
    if a.dtype == jnp.complex64 or a.dtype == jnp.complex128:
        raise TypeError(f"fastloss.jax.{fn}: {name} is complex ({a.dtype}); pass real numbers")
    return a


def _float(x: Any, name: str, fn: str) -> jax.Array:
    a = _array(x, name, fn)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"fastloss.jax.{fn}: {name} must be a floating array (float16, "
                        f"bfloat16, float32 or float64), got {a.dtype}")
    return a


def _reduced(reduction: str, shape: tuple) -> tuple:
    return tuple(shape) if reduction == "none" else ()


# --- classification ---------------------------------------------------------------------

def cross_entropy(logits: Any, labels: Any, *, axis: int = -1, ignore_index: int = -100,
                  label_smoothing: float = 0.0, z_loss: float = 0.0,
                  softcap: Optional[float] = None, normalizer: Optional[float] = None,
                  reduction: str = "none", return_lse: bool = False,
                  return_token_accuracy: bool = False) -> Any:
    """Softmax cross-entropy (:func:`fastloss.cross_entropy`) of ``logits`` and ``labels``.

    ``labels``: integer class indices (``logits``' shape without ``axis``; as
    ``optax.softmax_cross_entropy_with_integer_labels``; ``ignore_index`` rows get loss 0 and
    are left out of ``"mean"``) or class probabilities (``logits``' shape; as
    ``optax.softmax_cross_entropy``). ``reduction="none"`` (default) gives one loss per row;
    ``"mean"`` is PyTorch's mean over non-ignored rows; ``"sum"``. ``label_smoothing``,
    ``z_loss`` (``z_loss * logsumexp**2`` per row), ``softcap`` (``softcap * tanh(x /
    softcap)`` first) and ``normalizer`` (the summed loss divided by it, only with ``"mean"``
    or ``"sum"``) as :func:`fastloss.cross_entropy`. Differentiable with respect to
    ``logits``; 16-bit logits give float32 losses and a gradient in their own dtype.
    ``return_lse`` / ``return_token_accuracy`` (each row's log-sum-exp; the fraction of rows
    whose argmax is the label, as :func:`fastloss.cross_entropy`) make it return a
    :class:`fastloss.CrossEntropyResult` ``(loss, None, lse, token_accuracy)``, computed in
    the same call as the loss; only the loss is differentiable.
    """
    fn = "cross_entropy"
    x = _float(logits, "logits", fn)
    y = _array(labels, "labels", fn)
    reduction = check_reduction(reduction)
    ax = _normalize_axis(axis, x.ndim, fn)
    ignore_index = check_int(ignore_index, "ignore_index")
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z, cap = _classification._check_z_softcap(z_loss, softcap)
    norm = _classification._check_normalizer(normalizer, reduction)
    rows = x.shape[:ax] + x.shape[ax + 1:]
    neg = ax - x.ndim  # (a negative axis stays right when vmap adds leading axes)
    stats = bool(return_lse) or bool(return_token_accuracy)
    run = _runner(_run_cross_entropy_stats if stats else _run_cross_entropy,
                  **({"want": (bool(return_lse), bool(return_token_accuracy))} if stats else {}),
                  axis=neg, ignore_index=ignore_index,
                            label_smoothing=eps, z_loss=z, softcap=cap or None,
                            normalizer=norm, reduction=reduction)
    want = (_classification._check_flag(return_lse, "return_lse"),
            _classification._check_flag(return_token_accuracy, "return_token_accuracy"))
    dtype = _loss_dtype(x.dtype)
    extras = (((rows, dtype),) if want[0] else ()) + (
        ((_reduced(reduction, rows), dtype),) if want[1] else ())
    if want[1] and jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError("fastloss.jax.cross_entropy: return_token_accuracy needs integer "
                         "labels (class indices)")
    spec = _Spec(fn, run, ("logits", "labels"), (0,), _reduced(reduction, rows), dtype,
                 (neg,) if reduction == "none" else (), reduction == "none", extras=extras)
    if not extras:
        return _apply(spec, x, y)
    loss, stats = _apply(spec, x, y)
    stats = list(stats)
    lse = stats.pop(0) if want[0] else None
    return CrossEntropyResult(loss, None, lse, stats.pop(0) if want[1] else None)


def _run_cross_entropy(logits, labels, return_grad, **options):
    return _classification.cross_entropy(logits, labels, return_grad=return_grad, **options)


def _run_cross_entropy_stats(logits, labels, return_grad, want=(False, False), **options):
    r = _classification.cross_entropy(logits, labels, return_grad=return_grad,
                                      return_lse=want[0], return_token_accuracy=want[1],
                                      **options)
    out = (r.loss, r.grad) if return_grad else r.loss
    return out, tuple(v for v in (r.lse, r.token_accuracy) if v is not None)


def _normalize_axis(axis: Any, ndim: int, fn: str) -> int:
    ax = check_int(axis, "axis")
    if not -ndim <= ax < ndim:
        raise ValueError(f"fastloss.jax.{fn}: axis {axis} is out of range for {ndim}-d logits")
    return ax % ndim


# --- pointwise --------------------------------------------------------------------------

def _pointwise(fn: str, numpy_fn: Callable, predictions: Any, targets: Any, reduction: str,
               pred_name: str, target_name: str, **options: Any) -> jax.Array:
    x = _float(predictions, pred_name, fn)
    y = _array(0.0 if targets is None else targets, target_name, fn)
    reduction = check_reduction(reduction)
    shape = jnp.broadcast_shapes(x.shape, y.shape)
    if reduction == "none" and shape != x.shape:  # each element's gradient gets its own
        x = jnp.broadcast_to(x, shape)  # cotangent; autodiff sums over the broadcast axes
    run = _runner(_run_pointwise, numpy_fn=numpy_fn, reduction=reduction, **options)
    spec = _Spec(fn, run, (pred_name, target_name), (0,), _reduced(reduction, shape),
                 _loss_dtype(x.dtype), (), reduction == "none")
    return _apply(spec, x, y)


def _run_pointwise(x, y, return_grad, numpy_fn, **options):
    return numpy_fn(x, y, return_grad=return_grad, **options)


def mse_loss(predictions: Any, targets: Any = None, *, reduction: str = "none") -> jax.Array:
    """Squared error ``(predictions - targets)**2`` (``optax.squared_error``; ``targets=None``
    is 0), computed by :func:`fastloss.mse_loss`; NumPy broadcasting."""
    return _pointwise("mse_loss", _regression.mse_loss, predictions, targets, reduction,
                      "predictions", "targets")


def huber_loss(predictions: Any, targets: Any = None, *, delta: float = 1.0,
               reduction: str = "none") -> jax.Array:
    """Huber loss (``optax.huber_loss``: ``d**2 / 2`` for ``|d| <= delta``, else
    ``delta * (|d| - delta / 2)``), computed by :func:`fastloss.huber_loss`."""
    d = check_real(delta, "delta")
    if not d > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    return _pointwise("huber_loss", _regression.huber_loss, predictions, targets, reduction,
                      "predictions", "targets", delta=d)


def binary_cross_entropy_with_logits(logits: Any, labels: Any, *,
                                     reduction: str = "none") -> jax.Array:
    """Sigmoid binary cross-entropy (``optax.sigmoid_binary_cross_entropy``), computed stably
    by :func:`fastloss.binary_cross_entropy_with_logits`."""
    return _pointwise("binary_cross_entropy_with_logits",
                      _binary.binary_cross_entropy_with_logits, logits, labels, reduction,
                      "logits", "labels")


# --- distillation and the output layer --------------------------------------------------

def kl_div_with_logits(student_logits: Any, teacher_logits: Any, *, axis: int = -1,
                       temperature: float = 1.0, reduction: str = "none") -> jax.Array:
    """Distillation loss ``T**2 * KL(softmax(teacher / T) || softmax(student / T))`` per row,
    fused (:func:`fastloss.kl_div_with_logits`); equal to ``T**2 *
    optax.kl_divergence(jax.nn.log_softmax(s / T), jax.nn.softmax(t / T))``. Reductions
    ``"none"`` (default), ``"batchmean"`` (sum / rows), ``"mean"`` (sum / elements), ``"sum"``.
    Differentiable with respect to ``student_logits``."""
    fn = "kl_div_with_logits"
    s = _float(student_logits, "student_logits", fn)
    t = _float(teacher_logits, "teacher_logits", fn)
    reduction = check_reduction(reduction, REDUCTIONS + ("batchmean",))
    T = check_temperature(temperature)
    ax = _normalize_axis(axis, s.ndim, fn)
    neg = ax - s.ndim
    run = _runner(_run_kl_logits, axis=neg, temperature=T, reduction=reduction)
    spec = _Spec(fn, run, ("student_logits", "teacher_logits"), (0,),
                 _reduced(reduction, s.shape[:ax] + s.shape[ax + 1:]),
                 _loss_dtype(s.dtype, t.dtype), (neg,) if reduction == "none" else (),
                 reduction == "none")
    return _apply(spec, s, t)


def _run_kl_logits(s, t, return_grad, **options):
    return _distributions.kl_div_with_logits(s, t, return_grad=return_grad, **options)


def linear_cross_entropy(hidden: Any, weight: Any, labels: Any, *, bias: Any = None,
                         ignore_index: int = -100, label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: Optional[float] = None,
                         reduction: str = "mean") -> jax.Array:
    """Cross-entropy of ``hidden @ weight.T + bias`` without the logits
    (:func:`fastloss.linear_cross_entropy`): ``hidden (N, D)``, ``weight (V, D)`` (a Flax
    ``Dense`` kernel is ``(D, V)``: pass ``kernel.T``), integer ``labels (N,)``, ``bias
    (V,)``. Differentiable with respect to ``hidden``, ``weight`` and ``bias``.

    The default reduction is ``"mean"`` (not optax's per-example default): fastloss gives the
    gradient of a summed loss only, because ``weight``'s gradient sums over rows and cannot
    be rescaled per row afterwards. ``reduction="none"`` therefore computes the logits with
    ``jnp`` and applies :func:`cross_entropy` (materialising them).
    """
    fn = "linear_cross_entropy"
    h = _float(hidden, "hidden", fn)
    w = _float(weight, "weight", fn)
    b = None if bias is None else _float(bias, "bias", fn)
    y = _array(labels, "labels", fn)
    reduction = check_reduction(reduction)
    if reduction == "none":
        logits = h @ w.T if b is None else h @ w.T + b
        return cross_entropy(logits, y, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
    if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[1]:
        raise ValueError(f"fastloss.jax.{fn}: hidden must be (N, D) and weight (V, D), got "
                         f"{h.shape} and {w.shape}")
    ignore_index = check_int(ignore_index, "ignore_index")
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z, cap = _classification._check_z_softcap(z_loss, softcap)
    run = _runner(_run_linear_cross_entropy, ignore_index=ignore_index,
                            label_smoothing=eps, z_loss=z, softcap=cap or None,
                            reduction=reduction)
    arrays = (h, w, y) + (() if b is None else (b,))
    names = ("hidden", "weight", "labels") + (() if b is None else ("bias",))
    diff = (0, 1) + (() if b is None else (3,))
    spec = _Spec(fn, run, names, diff, (), _loss_dtype(*(a.dtype for a in arrays
                                                          if a is not y)), (), False,
                 grad_out=False)
    return _apply(spec, *arrays)


def _run_linear_cross_entropy(*args, **options):
    *arrays, return_grad = args  # (hidden, weight, labels[, bias], return_grad)
    bias = arrays[3] if len(arrays) == 4 else None
    return _scale.linear_cross_entropy(*arrays[:3], bias=bias, return_grad=return_grad,
                                       **options)
