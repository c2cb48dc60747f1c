"""dice_loss, tversky_loss and generalized_dice_loss (issue 16): against the float64
reference, optax (values, and gradients by jax.grad), central differences, numbers worked out
by hand, and optax's own test cases."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import central_diff

import fastloss as fl
from fastloss import reference as ref

ml_dtypes = pytest.importorskip("ml_dtypes")


def _jax():
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("jax is not loaded into the sanitizer build's process")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    optax = pytest.importorskip("optax")
    return jax, jax.numpy, optax


def _onehot(labels, C, axis=1):
    return np.moveaxis(np.eye(C)[labels], -1, axis)


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------
def test_dice_hand_computed():
    # probabilities given (from_logits=False): one sample, 2 classes, 2 pixels
    p = np.array([[[0.9, 0.2], [0.1, 0.8]]])  # (N=1, C=2, S=2)
    t = np.array([[0, 1]])  # class indices: pixel 0 class 0, pixel 1 class 1
    # class 0: I = 0.9, P = 1.1, T = 1: 1 - (0.9 + 1) / ((1.1 + 1) / 2 + 1) = 1 - 1.9 / 2.05
    # class 1: I = 0.8, P = 0.9, T = 1: 1 - 1.8 / 1.95
    want = np.array([[1 - 1.9 / 2.05, 1 - 1.8 / 1.95]])
    got = fl.dice_loss(p, t, from_logits=False, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert abs(float(fl.dice_loss(p, t, from_logits=False)) - want.mean()) < 1e-15
    assert abs(float(fl.dice_loss(p, t, from_logits=False, reduction="sum")) - want.sum()) < 1e-15
    # Tversky alpha = 0.3, beta = 0.7, smooth 0: class 0 FP = 0.2, FN = 0.1
    got = fl.tversky_loss(p, t, alpha=0.3, beta=0.7, from_logits=False, smooth=0.0,
                          reduction="none")
    want0 = 1 - 0.9 / (0.9 + 0.3 * 0.2 + 0.7 * 0.1)
    want1 = 1 - 0.8 / (0.8 + 0.3 * 0.1 + 0.7 * 0.2)
    np.testing.assert_allclose(got, [[want0, want1]], rtol=1e-14)
    # class weights multiply the per-class losses
    got = fl.dice_loss(p, t, from_logits=False, class_weight=[2.0, 0.5], reduction="none")
    np.testing.assert_allclose(got, [[2 * (1 - 1.9 / 2.05), 0.5 * (1 - 1.8 / 1.95)]],
                               rtol=1e-14)
    # perfect prediction: exactly 0 (no 1 - 1 cancellation)
    assert fl.dice_loss(_onehot(np.array([[0, 1]]), 2), t, from_logits=False) == 0.0


@pytest.mark.parametrize("shape,axis", [
    ((2, 3, 5, 7), 1),       # (N, C, H, W)
    ((2, 5, 7, 3), -1),      # (N, H, W, C), channels last
    ((3, 4, 130), 1),        # several blocks of positions
    ((2, 3, 4000), 1),       # several partial-sum chunks? (4096 positions each): one
    ((1, 2, 9000), 1),       # three chunks
    ((4, 6), 1),             # no spatial axes: one position per sample
    ((2, 1, 6, 5), 1),       # binary, one channel: sigmoid
])
@pytest.mark.parametrize("from_logits", [True, False])
def test_matches_reference(rng, shape, axis, from_logits):
    x = rng.standard_normal(shape) * 2
    C = shape[axis]
    if not from_logits:
        x = ref.softmax(x, axis=axis) if C > 1 else 1 / (1 + np.exp(-x))
    no_class = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    idx = rng.integers(0, C, no_class)
    soft = rng.random(shape)
    w = rng.random(C) + 0.5
    for target in (idx, _onehot(idx, C, axis), soft):
        for red in ("mean", "sum", "none"):
            kw = dict(axis=axis, from_logits=from_logits, reduction=red)
            loss, g = fl.dice_loss(x, target, class_weight=w, return_grad=True, **kw)
            rl, rg = ref.dice_loss(x, target, class_weight=w, return_grad=True, **kw)
            np.testing.assert_allclose(loss, rl, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-15)
            loss, g = fl.tversky_loss(x, target, alpha=0.2, beta=0.9, smooth=0.5,
                                      return_grad=True, **kw)
            rl, rg = ref.tversky_loss(x, target, 0.2, 0.9, smooth=0.5, return_grad=True, **kw)
            np.testing.assert_allclose(loss, rl, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-15)
            loss, g = fl.generalized_dice_loss(x, target, return_grad=True, **kw)
            rl, rg = ref.generalized_dice_loss(x, target, return_grad=True, **kw)
            np.testing.assert_allclose(loss, rl, rtol=1e-11, atol=1e-15)
            np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-15)


def test_binary_mask_without_channel_axis(rng):
    x = rng.standard_normal((3, 1, 4, 5))
    mask = rng.random((3, 4, 5)) > 0.5
    a = fl.dice_loss(x, mask, reduction="none")
    b = fl.dice_loss(x, mask[:, None].astype(np.float64), reduction="none")
    np.testing.assert_allclose(a, b, rtol=1e-15)
    assert a.shape == (3, 1)
    np.testing.assert_allclose(a, ref.dice_loss(x, mask[:, None], reduction="none"), rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# optax
# ---------------------------------------------------------------------------------------------
def test_against_optax_random(rng):
    jax, jnp, optax = _jax()
    # optax: classes last, (N, H, W, C); fastloss with axis=-1 on the same arrays
    x = rng.standard_normal((2, 6, 5, 4)) * 3
    labels = rng.integers(0, 4, (2, 6, 5))
    t = np.eye(4)[labels]
    w = np.array([1.0, 2.0, 0.5, 1.5])
    for alpha, beta in ((0.5, 0.5), (0.3, 0.7), (1.0, 1.0)):
        def f(z, alpha=alpha, beta=beta):
            return jnp.mean(optax.losses.dice_loss(z, t, alpha=alpha, beta=beta, smooth=0.7,
                                                   class_weights=w))
        want, wg = f(x), jax.grad(f)(x)
        got, g = fl.tversky_loss(x, labels, alpha=alpha, beta=beta, axis=-1, smooth=0.7,
                                 return_grad=True) if alpha != 0.5 else (None, None)
        if alpha == 0.5:
            got, g = fl.dice_loss(x, labels, axis=-1, smooth=0.7, class_weight=w,
                                  return_grad=True)
            np.testing.assert_allclose(got, want, rtol=1e-13)
            np.testing.assert_allclose(g, wg, rtol=1e-10, atol=1e-16)
        else:
            def fu(z, alpha=alpha, beta=beta):
                return jnp.mean(optax.losses.dice_loss(z, t, alpha=alpha, beta=beta,
                                                       smooth=0.7))
            np.testing.assert_allclose(got, fu(x), rtol=1e-13)
            np.testing.assert_allclose(g, jax.grad(fu)(x), rtol=1e-10, atol=1e-16)
    # reduction="none": optax's per-class losses
    got = fl.dice_loss(x, t, axis=-1, reduction="none")
    np.testing.assert_allclose(got, optax.losses.dice_loss(x, t, reduction="none"), rtol=1e-13)
    # probabilities (apply_softmax=False) and the binary single channel (sigmoid)
    p = np.asarray(jax.nn.softmax(x, axis=-1))
    np.testing.assert_allclose(fl.dice_loss(p, labels, axis=-1, from_logits=False),
                               jnp.mean(optax.losses.dice_loss(p, t, apply_softmax=False)),
                               rtol=1e-13)
    xb, tb = x[..., :1], (labels[..., None] == 1).astype(np.float64)
    fb = lambda z: jnp.mean(optax.losses.dice_loss(z, tb))
    got, g = fl.dice_loss(xb, tb, axis=-1, return_grad=True)
    np.testing.assert_allclose(got, fb(xb), rtol=1e-13)
    np.testing.assert_allclose(g, jax.grad(fb)(xb), rtol=1e-10, atol=1e-16)
    # generalized Dice
    fg = lambda z: optax.losses.multiclass_generalized_dice_loss(z, t)
    got, g = fl.generalized_dice_loss(x, labels, axis=-1, return_grad=True)
    np.testing.assert_allclose(got, fg(x), rtol=1e-12)
    np.testing.assert_allclose(g, jax.grad(fg)(x), rtol=1e-9, atol=1e-16)
    # a class absent from the batch (volume 0: the largest weight)
    labels2 = np.where(labels == 3, 0, labels)
    t2 = np.eye(4)[labels2]
    np.testing.assert_allclose(
        fl.generalized_dice_loss(x, labels2, axis=-1),
        optax.losses.multiclass_generalized_dice_loss(x, t2), rtol=1e-12)


def test_optax_test_cases():
    # optax's losses/_segmentation_test.py: perfect / wrong binary and multi-class predictions
    targets = np.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])[..., None]
    assert fl.dice_loss(np.where(targets, 10.0, -10.0), targets, axis=-1) < 0.01
    assert fl.dice_loss(np.where(targets, -10.0, 10.0), targets, axis=-1) > 0.7
    labels = np.array([[0, 1, 2], [1, 0, 2], [2, 2, 1]])
    onehot = np.eye(3)[labels][None]
    assert fl.dice_loss(np.where(onehot, 10.0, -10.0), onehot, axis=-1) < 0.01
    # test_dice_loss_weighting_parameters: probabilities (1, 2, 2), spatial axis 1
    probs = np.array([[[0.1, 0.9], [0.8, 0.2]]])
    tg = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    inter, ps, ts = (probs * tg).sum(1), probs.sum(1), tg.sum(1)
    want = np.mean(1 - (inter + 1) / (inter + 0.3 * (ps - inter) + 0.7 * (ts - inter) + 1))
    got = fl.tversky_loss(probs, tg, alpha=0.3, beta=0.7, axis=-1, from_logits=False)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # bounds: 0 <= loss <= 1 for any smoothing
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 1))
    t = rng.random((2, 8, 8, 1)) > 0.5
    for smooth in (0.0, 1.0, 10.0):
        loss = fl.dice_loss(x, t, axis=-1, smooth=smooth, reduction="none")
        assert np.all(np.isfinite(loss)) and np.all((loss >= 0) & (loss <= 1))


# ---------------------------------------------------------------------------------------------
# Gradients, dtypes, layouts, extremes
# ---------------------------------------------------------------------------------------------
def test_finite_differences(rng):
    x = rng.standard_normal((2, 3, 3, 2))
    labels = rng.integers(0, 3, (2, 3, 2))
    for fn, kw in ((fl.dice_loss, {}), (fl.tversky_loss, dict(alpha=0.2, beta=0.8)),
                   (fl.generalized_dice_loss, {})):
        _, g = fn(x, labels, return_grad=True, **kw)
        np.testing.assert_allclose(g, central_diff(lambda z: fn(z, labels, **kw), x), atol=1e-9)
    xb = rng.standard_normal((2, 1, 4))
    mb = rng.random((2, 4))
    _, g = fl.dice_loss(xb, mb, reduction="sum", return_grad=True)
    np.testing.assert_allclose(
        g, central_diff(lambda z: fl.dice_loss(z, mb, reduction="sum"), xb), atol=1e-9)


def test_grad_out_and_in_place(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 4, 4))
    loss, g = fl.dice_loss(x, labels, return_grad=True)
    out = np.full_like(x, np.nan)
    loss2, g2 = fl.dice_loss(x, labels, return_grad=True, grad_out=out)
    assert g2 is out and loss2 == loss
    np.testing.assert_array_equal(out, g)
    xi = x.copy()
    loss3, g3 = fl.dice_loss(xi, labels, return_grad=True, grad_out=xi)
    assert g3 is xi and loss3 == loss
    np.testing.assert_array_equal(xi, g)
    # a non-contiguous grad_out (channels last seen through a transpose)
    xt = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    gt = np.empty_like(xt)
    fl.dice_loss(xt, labels, axis=-1, return_grad=True, grad_out=gt)
    np.testing.assert_allclose(np.moveaxis(gt, -1, 1), g, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="return_grad"):
        fl.dice_loss(x, labels, grad_out=out)
    with pytest.raises(TypeError, match="dtype"):
        fl.dice_loss(x, labels, return_grad=True, grad_out=out.astype(np.float64))
    bad = np.zeros((2, 3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="shape"):
        fl.dice_loss(x, labels, return_grad=True, grad_out=bad)


def test_layouts(rng):
    x = rng.standard_normal((3, 4, 6, 5))
    labels = rng.integers(0, 4, (3, 6, 5))
    want, wg = ref.tversky_loss(x, labels, 0.4, 0.6, return_grad=True)
    for v in (np.asfortranarray(x), x[:, :, ::-1][:, :, ::-1], np.ascontiguousarray(
            x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)):
        got, g = fl.tversky_loss(v, labels, alpha=0.4, beta=0.6, return_grad=True)
        np.testing.assert_allclose(got, want, rtol=1e-13)
        np.testing.assert_allclose(g, wg, rtol=1e-11, atol=1e-16)
    t = _onehot(labels, 4)
    got = fl.tversky_loss(x, np.asfortranarray(t), alpha=0.4, beta=0.6)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # the class axis between spatial axes: (N, H, C, W), the gradient through a temporary
    xm = np.ascontiguousarray(np.moveaxis(x, 1, 2))
    for out in (None, np.full_like(xm, np.nan), xm.copy()):
        got, g = fl.tversky_loss(out if out is not None and not np.isnan(out).any() else xm,
                                 np.moveaxis(t, 1, 2), alpha=0.4, beta=0.6, axis=2,
                                 return_grad=True, grad_out=out)
        np.testing.assert_allclose(got, want, rtol=1e-13)
        np.testing.assert_allclose(np.moveaxis(g, 2, 1), wg, rtol=1e-11, atol=1e-16)
        assert g.flags.c_contiguous and (out is None or g is out)


def test_huge_alpha_beta():
    p = np.array([[[0.9, 0.2], [0.1, 0.8]]])
    t = np.array([[0, 1]])
    for a, b in ((1e308, 0.5), (0.5, 1e308), (1e308, 1e308)):
        loss, g = fl.tversky_loss(p, t, alpha=a, beta=b, from_logits=False, reduction="none",
                                  return_grad=True)
        np.testing.assert_allclose(loss, ref.tversky_loss(p, t, a, b, from_logits=False,
                                                          reduction="none"), rtol=1e-12)
        assert np.isfinite(g).all()


@pytest.mark.parametrize("dt", [np.float16, "bfloat16", np.float32])
def test_low_precision(rng, dt):
    dt = np.dtype(getattr(ml_dtypes, dt) if isinstance(dt, str) else dt)
    x = (rng.standard_normal((2, 3, 17, 9)) * 2).astype(dt)
    labels = rng.integers(0, 3, (2, 17, 9))
    loss, g = fl.dice_loss(x, labels, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == dt
    rl, rg = ref.dice_loss(x.astype(np.float64), labels, return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=2e-6)
    tol = 1e-6 if dt.itemsize == 4 else 1e-2
    np.testing.assert_allclose(g.astype(np.float64), rg, rtol=tol, atol=tol * np.abs(rg).max())
    t = _onehot(labels, 3).astype(dt)  # a 16-bit dense target is read in float32
    np.testing.assert_allclose(fl.dice_loss(x, t), rl, rtol=2e-6)


def test_isas(rng):
    x = rng.standard_normal((2, 5, 70))
    labels = rng.integers(0, 5, (2, 70))
    want, wg = ref.dice_loss(x, labels, return_grad=True)
    active = fl._core.active_isa()
    try:
        for isa in fl._core.compiled_isas():
            if fl._core.set_isa(isa):
                for z in (x, x.astype(np.float32)):
                    loss, g = fl.dice_loss(z, labels, return_grad=True)
                    tol = 1e-6 if z.dtype == np.float32 else 1e-12
                    np.testing.assert_allclose(loss, want, rtol=tol)
                    np.testing.assert_allclose(g, wg, rtol=tol, atol=tol * 1e-3)
    finally:
        fl._core.set_isa(active)


def test_threads_give_the_same_bits(rng):
    x = rng.standard_normal((3, 4, 20000)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 20000))
    n = fl.get_num_threads()
    try:
        fl.set_num_threads(1)
        a, ga = fl.dice_loss(x, labels, return_grad=True)
        fl.set_num_threads(max(2, n))
        b, gb = fl.dice_loss(x, labels, return_grad=True)
    finally:
        fl.set_num_threads(n)
    assert a == b
    np.testing.assert_array_equal(ga, gb)


def test_extreme_logits():
    # logits far beyond exp's range: the softmax is taken against each pixel's max
    x = np.array([[[[1e30, -1e30]], [[-1e30, 1e30]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    labels = np.array([[[0, 1]]])
    loss, g = fl.dice_loss(x, labels, reduction="none", return_grad=True)
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    np.testing.assert_allclose(loss, ref.dice_loss(x, labels, reduction="none"), rtol=1e-14)
    xb = np.array([[[800.0, -800.0, 0.0]]], dtype=np.float32)  # sigmoid saturation
    loss, g = fl.dice_loss(xb, np.array([[[1.0, 0.0, 1.0]]], np.float32), return_grad=True)
    assert np.isfinite(loss) and np.isfinite(g).all()
    assert g[0, 0, 0] == 0 and g[0, 0, 1] == 0
    # a NaN stays NaN
    xn = np.zeros((1, 2, 3))
    xn[0, 1, 1] = np.nan
    assert np.isnan(fl.dice_loss(xn, np.array([[0, 1, 0]])))


def test_bad_input():
    x = np.zeros((2, 3, 4))
    labels = np.zeros((2, 4), np.int64)
    with pytest.raises(ValueError, match="2-d"):
        fl.dice_loss(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="batch axis"):
        fl.dice_loss(x, labels, axis=0)
    with pytest.raises(np.exceptions.AxisError):
        fl.dice_loss(x, labels, axis=3)
    with pytest.raises(ValueError, match="empty"):
        fl.dice_loss(np.zeros((2, 0, 4)), labels)
    with pytest.raises(ValueError, match="target has shape"):
        fl.dice_loss(x, np.zeros((2, 5), np.int64))
    with pytest.raises(IndexError, match="out of range"):
        fl.dice_loss(x, labels + 3)
    with pytest.raises(IndexError, match="out of range"):
        fl.dice_loss(x, labels - 1)
    with pytest.raises(TypeError, match="integers"):
        fl.dice_loss(x, labels.astype(np.float64))
    with pytest.raises(TypeError):
        fl.dice_loss(x, np.array([["a"] * 4] * 2))
    with pytest.raises(ValueError, match="smooth"):
        fl.dice_loss(x, labels, smooth=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        fl.tversky_loss(x, labels, alpha=-0.1)
    with pytest.raises(ValueError, match="alpha and beta"):
        fl.tversky_loss(x, labels, beta=np.inf)
    with pytest.raises(ValueError, match="class_weight"):
        fl.dice_loss(x, labels, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="reduction"):
        fl.dice_loss(x, labels, reduction="batchmean")
    with pytest.raises(TypeError, match="from_logits"):
        fl.dice_loss(x, labels, from_logits="yes")
    with pytest.raises(TypeError):
        fl.dice_loss(x.astype(complex), labels)
    # nothing is written into grad_out when a check fails
    out = np.full(x.shape, 7.0)
    with pytest.raises(IndexError):
        fl.dice_loss(x, labels + 3, return_grad=True, grad_out=out)
    assert (out == 7.0).all()
    # empty batch: mean is NaN, sum 0; no spatial positions: loss 0
    assert np.isnan(fl.dice_loss(np.zeros((0, 3, 4)), np.zeros((0, 4), np.int64)))
    assert fl.dice_loss(np.zeros((0, 3, 4)), np.zeros((0, 4), np.int64), reduction="sum") == 0
    assert fl.dice_loss(np.zeros((2, 3, 0)), np.zeros((2, 0), np.int64)) == 0


@pytest.mark.parametrize("name", ["fastloss.overlap", "fastloss.similarity"])
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
