"""ranking_softmax_loss (issue 16): optax's listwise softmax loss with a ``where`` mask.

Against optax in float64 (values and jax.grad, masked lists, all-zero labels, fully masked
lists), optax's own test examples, fastloss.reference, central differences, hand-computed
numbers; memory layouts, broadcasting, 16-bit dtypes, extreme inputs, bad input; every
instruction set (``isa``).
"""

from __future__ import annotations

import fastloss as fl
import ml_dtypes
import numpy as np
import pytest
from conftest import LAYOUTS, central_diff, layout
from fastloss import reference as ref

assert_allclose = np.testing.assert_allclose
BF16 = np.dtype(ml_dtypes.bfloat16)
log, exp = np.log, np.exp


@pytest.fixture
def jx():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        yield jax, optax


def graded(rng, shape):
    """Relevance labels 0..3, mostly 0; a list of all zeros and one fully masked list."""
    y = rng.integers(0, 4, size=shape) * (rng.random(shape) < 0.4)
    return y.astype(np.float64)


def mask_of(rng, shape):
    w = rng.random(shape) < 0.8
    w.reshape(-1, shape[-1])[0] = False  # a list without items
    return w


# ------------------------------------------------------------------ optax's own test examples


def test_optax_examples():
    s = np.array([0.0, 3.0, 1.0, 2.0])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    S = exp(0.0) + exp(3.0) + exp(1.0) + exp(2.0)
    assert_allclose(fl.ranking_softmax_loss(s, y, reduction="sum"),
                    -(log(exp(2.0) / S) + log(exp(1.0) / S)), rtol=1e-14)
    # extreme inputs (float32, as optax's test)
    s32 = np.array([0.0, -2.1e26, 3.4e37, 42.0], np.float32)
    want = -((-2.1e26 - (0.0 + -2.1e26 + 3.4e37 + 42.0)) + (3.4e37 - (0.0 + -2.1e26 + 3.4e37 + 42.0)))
    assert_allclose(fl.ranking_softmax_loss(s32, [0.0, 1.0, 1.0, 0.0], reduction="sum"), want,
                    rtol=1e-3)
    # all-zero labels
    assert fl.ranking_softmax_loss(s, np.zeros(4), reduction="sum") == 0.0
    # weighted (weights folded into the labels) and two lists
    s2 = np.array([[0.0, 3.0, 1.0, 2.0], [3.0, 1.0, 4.0, 2.0]])
    y2 = np.array([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 1.0, 0.0]])
    S1, S2 = S, exp(3.0) + exp(1.0) + exp(4.0) + exp(2.0)
    want = [-(log(exp(1.0) / S1) + log(exp(2.0) / S1)),
            -(2 * log(exp(3.0) / S2) + log(exp(4.0) / S2))]
    assert_allclose(fl.ranking_softmax_loss(s2, y2, reduction="none"), want, rtol=1e-14)
    # mean over lists
    s3 = np.array([[2.0, 1.0, 3.0], [1.0, 0.5, 1.5]])
    y3 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    e = [-log(exp(2.0) / (exp(2.0) + exp(1.0) + exp(3.0))),
         -log(exp(1.5) / (exp(1.0) + exp(0.5) + exp(1.5)))]
    assert_allclose(fl.ranking_softmax_loss(s3, y3), sum(e) / 2, rtol=1e-14)
    assert_allclose(fl.ranking_softmax_loss(s3, y3, reduction="sum"), sum(e), rtol=1e-14)
    none = fl.ranking_softmax_loss(s3, y3, reduction="none")
    assert none.shape == (2,) and none.sum() == fl.ranking_softmax_loss(s3, y3, reduction="sum")
    # where: the same as dropping the item
    w = np.array([True, True, True, False])
    assert_allclose(fl.ranking_softmax_loss(s, [0.0, 0.0, 2.0, 1.0], where=w),
                    fl.ranking_softmax_loss(s[:3], [0.0, 0.0, 2.0]), rtol=1e-15)
    # all masked: 0
    assert fl.ranking_softmax_loss(s, y, where=np.zeros(4, bool)) == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("masked", [False, True])
def test_vs_optax(rng, jx, reduction, masked):
    jax, optax = jx
    import jax.numpy as jnp

    shape = (3, 5, 9)
    s = rng.normal(0, 2, size=shape)
    y = graded(rng, shape)
    y[1, 2] = 0.0  # a list of all-zero labels
    w = mask_of(rng, shape) if masked else None
    fn = {"mean": jnp.mean, "sum": jnp.sum, "none": None}[reduction]
    want = np.asarray(optax.losses.ranking_softmax_loss(s, y, where=w, reduce_fn=fn))
    got = fl.ranking_softmax_loss(s, y, where=w, reduction=reduction)
    assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    if reduction == "none":
        fn_sum = lambda a: jnp.sum(optax.losses.ranking_softmax_loss(a, y, where=w, reduce_fn=None))
    else:
        fn_sum = lambda a: optax.losses.ranking_softmax_loss(a, y, where=w, reduce_fn=fn)
    gw = np.asarray(jax.grad(fn_sum)(s))
    _, g = fl.ranking_softmax_loss(s, y, where=w, reduction=reduction, return_grad=True)
    assert_allclose(g, gw, rtol=1e-11, atol=1e-14)


def test_all_lists_masked(jx):
    jax, optax = jx
    s = np.array([[0.0, 1.0], [2.0, 3.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    w = np.zeros((2, 2), bool)
    for red, fn in (("mean", jax.numpy.mean), ("sum", jax.numpy.sum)):
        want = float(optax.losses.ranking_softmax_loss(s, y, where=w, reduce_fn=fn))
        loss, g = fl.ranking_softmax_loss(s, y, where=w, reduction=red, return_grad=True)
        assert loss == want == 0.0 and (g == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_vs_reference_and_isas(rng, isa, reduction):
    shape = (4, 6, 33)
    s = rng.normal(0, 3, size=shape)
    y = graded(rng, shape)
    w = mask_of(rng, shape)
    for where in (None, w):
        got, g = fl.ranking_softmax_loss(s, y, where=where, reduction=reduction, return_grad=True)
        want, wg = ref.ranking_softmax_loss(s, y, where=where, reduction=reduction,
                                            return_grad=True)
        assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        assert_allclose(g, wg, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("name", LAYOUTS)
def test_layouts_and_broadcasting(rng, name):
    s = rng.normal(0, 1, size=(6, 7))
    y = graded(rng, (6, 7))
    w = mask_of(rng, (6, 7))
    want, wg = ref.ranking_softmax_loss(s, y, where=w, return_grad=True)
    got, g = fl.ranking_softmax_loss(layout(s, name), layout(y, name), where=layout(w, name),
                                     return_grad=True)
    assert_allclose(got, want, rtol=1e-13)
    assert_allclose(g, wg, rtol=1e-12, atol=1e-16)
    # labels and mask broadcast along the lists
    yb, wb = y[:1], w[2]
    want = ref.ranking_softmax_loss(s, yb, where=wb)
    assert_allclose(fl.ranking_softmax_loss(s, yb, where=wb), want, rtol=1e-13)


def test_finite_differences(rng):
    s = rng.normal(0, 1, size=(3, 6))
    y = np.array([[0, 1, 2, 0, 0, 1], [0, 0, 0, 0, 0, 0], [3, 0, 0, 1, 0, 0]], float)
    w = np.ones((3, 6), bool)
    w[2, 4] = False
    _, g = fl.ranking_softmax_loss(s, y, where=w, return_grad=True)
    fd = central_diff(lambda a: fl.ranking_softmax_loss(a, y, where=w), s)
    assert_allclose(g, fd, atol=1e-8)


def test_hand_gradient():
    s = np.array([0.0, np.log(3.0)])  # softmax (1/4, 3/4)
    loss, g = fl.ranking_softmax_loss(s, [2.0, 0.0], reduction="sum", return_grad=True)
    assert_allclose(loss, 2 * np.log(4.0), rtol=1e-15)
    assert_allclose(g, [2 * 0.25 - 2, 2 * 0.75], rtol=1e-15)


@pytest.mark.parametrize("dt", [np.float32, np.float16, BF16])
def test_low_precision(rng, dt):
    s = rng.normal(0, 2, size=(6, 50)).astype(dt)
    y = graded(rng, (6, 50))
    loss, g = fl.ranking_softmax_loss(s, y, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == dt
    want, wg = ref.ranking_softmax_loss(s.astype(np.float64), y, return_grad=True)
    assert_allclose(float(loss), want, rtol=1e-6)
    assert_allclose(g.astype(np.float64), wg, atol=1e-7 if dt == np.float32 else 1e-2)


def test_grad_out_and_in_place(rng):
    s = rng.normal(0, 1, size=(4, 5))
    y = graded(rng, (4, 5))
    want, wg = fl.ranking_softmax_loss(s, y, return_grad=True)
    out = np.empty_like(s)
    _, g = fl.ranking_softmax_loss(s, y, return_grad=True, grad_out=out)
    assert g is out
    assert_allclose(out, wg, rtol=0, atol=0)
    ss = np.asfortranarray(s)
    loss, g = fl.ranking_softmax_loss(ss, y, return_grad=True, grad_out=ss)
    assert g is ss and loss == want
    assert_allclose(ss, wg, rtol=0, atol=1e-17)


def test_nonfinite():
    s = np.array([[-np.inf, 0.0, 1.0], [np.nan, 0.0, 0.0], [-np.inf, -np.inf, 0.0]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    per, g = fl.ranking_softmax_loss(s, y, reduction="none", return_grad=True)
    assert_allclose(per[0], -np.log(1 / (1 + np.e)))  # label 0 at -inf counts 0
    assert np.isfinite(g[0]).all()
    assert np.isnan(per[1]) and np.isnan(g[1]).all()
    assert per[2] == np.inf  # a relevant item with score -inf
    # a NaN row propagates to the mean
    assert np.isnan(fl.ranking_softmax_loss(s[:2], y[:2]))
    # a NaN score outside the mask does not matter
    w = np.array([[True, True, True], [False, True, True]])
    assert np.isfinite(fl.ranking_softmax_loss(s[:2], y[:2], where=w))


def test_bad_input():
    s = np.zeros((2, 3))
    with pytest.raises(ValueError, match="labels"):
        fl.ranking_softmax_loss(s, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="where"):
        fl.ranking_softmax_loss(s, np.zeros((2, 3)), where=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="where"):
        fl.ranking_softmax_loss(s, np.zeros((2, 3)), where=np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least one dimension"):
        fl.ranking_softmax_loss(np.float64(0.0), 0.0)
    with pytest.raises(ValueError, match="reduction"):
        fl.ranking_softmax_loss(s, s, reduction="batchmean")
    with pytest.raises(TypeError, match="labels"):
        fl.ranking_softmax_loss(s, np.zeros((2, 3), complex))
    with pytest.raises(ValueError, match="return_grad"):
        fl.ranking_softmax_loss(s, s, grad_out=np.zeros((2, 3)))


@pytest.mark.parametrize("name", ["fastloss.ranking"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
