"""sparsemax and sparsemax_loss (issue 16), and the multi-class hinge / perceptron losses.

Against fastloss.reference (sorting-based sparsemax, Martins & Astudillo's unshifted loss
formula), optax/jax in float64 (values and jax.grad) where importable, optax's own test
examples, central differences, hand-computed numbers; any axis and memory layout, 16-bit
dtypes, extreme and non-finite inputs, bad input; every instruction set (``isa``).
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


@pytest.fixture
def jx():
    """jax and optax with float64 enabled for the test only."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        yield jax, optax


# --------------------------------------------------------------------------------- sparsemax


def test_sparsemax_hand_values():
    # support {0, 1}: tau = (1 + 0.8 - 1) / 2 = 0.4
    assert_allclose(fl.sparsemax([1.0, 0.8, -1.0]), [0.6, 0.4, 0.0], rtol=0, atol=1e-15)
    # a clear winner takes all; equal entries share
    assert_allclose(fl.sparsemax([5.0, 0.0, 3.9]), [1.0, 0.0, 0.0], atol=0)
    assert_allclose(fl.sparsemax(np.zeros(4)), np.full(4, 0.25), atol=0)
    # tau = (3 + 2.5 + 2.4 - 1) / 3 = 2.3
    assert_allclose(fl.sparsemax([3.0, 2.5, 2.4, 0.0]), [0.7, 0.2, 0.1, 0.0], atol=1e-15)


@pytest.mark.parametrize("shape,axis", [((7, 11), -1), ((3, 5, 4), 1), ((6, 3), 0), ((9,), 0),
                                        ((2, 300), -1), ((4, 1), -1)])
def test_sparsemax_vs_reference(rng, isa, shape, axis):
    for scale in (0.1, 1.0, 5.0):
        x = rng.normal(0, scale, size=shape)
        got = fl.sparsemax(x, axis=axis)
        assert got.dtype == np.float64
        assert_allclose(got, ref.sparsemax(x, axis=axis), rtol=1e-12, atol=1e-14)
        assert_allclose(got.sum(axis=axis), 1.0, rtol=1e-12)
        assert (got >= 0).all()


@pytest.mark.parametrize("name", LAYOUTS)
def test_sparsemax_layouts(rng, name):
    x = rng.normal(0, 1, size=(6, 9))
    for axis in (0, 1):
        assert_allclose(fl.sparsemax(layout(x, name), axis=axis), ref.sparsemax(x, axis=axis),
                        rtol=1e-12, atol=1e-14)


def test_sparsemax_vs_optax(rng, jx):
    jax, optax = jx
    x = rng.normal(0, 2, size=(16, 13))
    want = np.asarray(jax.vmap(optax.projections.projection_simplex)(x))
    assert_allclose(fl.sparsemax(x), want, rtol=1e-12, atol=1e-14)


def test_sparsemax_float32_and_16bit(rng):
    x = rng.normal(0, 2, size=(5, 40))
    got32 = fl.sparsemax(x.astype(np.float32))
    assert got32.dtype == np.float32
    assert_allclose(got32, ref.sparsemax(x.astype(np.float32)), atol=2e-7)
    for dt in (np.float16, BF16):
        xd = x.astype(dt)
        got = fl.sparsemax(xd)
        assert got.dtype == dt
        assert_allclose(got.astype(np.float64), ref.sparsemax(xd.astype(np.float64)),
                        atol=4e-3 if dt == np.float16 else 2e-2)
    assert_allclose(fl.sparsemax(np.array([1, 0, 0])), [1.0, 0.0, 0.0])  # integers: float64


def test_sparsemax_extreme_and_nonfinite():
    big = fl.sparsemax(np.array([1e30, 1e30 - 1e14, -1e30]))
    assert_allclose(big, [1.0, 0.0, 0.0])
    assert_allclose(fl.sparsemax(np.array([3e38, 3e38, -3e38], np.float32)), [0.5, 0.5, 0.0])
    assert_allclose(fl.sparsemax(np.array([0.0, -np.inf, 0.5])), [0.25, 0.0, 0.75])
    out = fl.sparsemax(np.array([[0.0, np.nan], [np.inf, 0.0], [-np.inf, -np.inf], [1.0, 2.0]]))
    assert np.isnan(out[:3]).all()
    assert_allclose(out[3], [0.0, 1.0])
    # a row of many nearly equal values (long Michelot support)
    x = np.linspace(0, 1e-3, 5000)
    assert_allclose(fl.sparsemax(x), ref.sparsemax(x), rtol=1e-9, atol=1e-15)


def test_sparsemax_bad_input():
    with pytest.raises(ValueError, match="at least one dimension"):
        fl.sparsemax(np.float64(1.0))
    with pytest.raises(ValueError, match="size 0"):
        fl.sparsemax(np.zeros((3, 0)))
    with pytest.raises(np.exceptions.AxisError):
        fl.sparsemax(np.zeros((3, 2)), axis=2)
    with pytest.raises(TypeError, match="complex"):
        fl.sparsemax(np.zeros(3, complex))


# ---------------------------------------------------------------------------- sparsemax_loss


def test_sparsemax_loss_hand_values():
    z = np.array([[1.0, 0.8, -1.0], [3.0, 0.0, 0.0]])
    loss, grad = fl.sparsemax_loss(z, [1, 0], reduction="none", return_grad=True)
    # p = (0.6, 0.4, 0): loss = p.(z - z_y) + (1 - |p|^2) / 2 = 0.6 * 0.2 + 0.24
    assert_allclose(loss, [0.36, 0.0], atol=1e-15)
    assert_allclose(grad, [[0.6, -0.6, 0.0], [0.0, 0.0, 0.0]], atol=1e-15)
    # soft target q = (0.5, 0.5, 0): loss = -q.z + (sum_S z^2 - 2 tau^2)/2 + |q|^2/2
    q = np.array([0.5, 0.5, 0.0])
    want = -0.9 + 0.5 * (1.0 + 0.64 - 2 * 0.16) + 0.25
    assert_allclose(fl.sparsemax_loss(z[0], q), want, rtol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,axis", [((8, 6), -1), ((3, 5, 4), 1), ((5, 7), 0)])
def test_sparsemax_loss_vs_reference(rng, isa, shape, axis, reduction):
    z = rng.normal(0, 1.5, size=shape)
    ax = axis % len(shape)
    t = rng.integers(0, shape[ax], size=shape[:ax] + shape[ax + 1:])
    got, g = fl.sparsemax_loss(z, t, axis=axis, reduction=reduction, return_grad=True)
    want, wg = ref.sparsemax_loss(z, t, axis=axis, reduction=reduction, return_grad=True)
    assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert_allclose(g, wg, rtol=1e-12, atol=1e-14)
    # the same with one-hot and with soft targets
    onehot = np.moveaxis(np.eye(shape[ax])[t], -1, ax)
    assert_allclose(fl.sparsemax_loss(z, onehot, axis=axis, reduction=reduction), want,
                    rtol=1e-12, atol=1e-14)
    soft = np.moveaxis(rng.dirichlet(np.ones(shape[ax]), size=t.shape), -1, ax)
    got, g = fl.sparsemax_loss(z, soft, axis=axis, reduction=reduction, return_grad=True)
    want, wg = ref.sparsemax_loss(z, soft, axis=axis, reduction=reduction, return_grad=True)
    assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    assert_allclose(g, wg, rtol=1e-12, atol=1e-14)


def test_sparsemax_loss_vs_optax(rng, jx):
    jax, optax = jx
    import jax.numpy as jnp

    z = rng.normal(0, 2, size=(12, 9))
    t = rng.integers(0, 9, size=12)
    want = np.asarray(optax.losses.multiclass_sparsemax_loss(z, t))
    assert_allclose(fl.sparsemax_loss(z, t, reduction="none"), want, rtol=1e-12, atol=1e-14)
    gwant = np.asarray(jax.grad(lambda s: jnp.mean(optax.losses.multiclass_sparsemax_loss(s, t)))(z))
    _, g = fl.sparsemax_loss(z, t, return_grad=True)
    assert_allclose(g, gwant, rtol=1e-12, atol=1e-14)
    # optax's binary sparsemax_loss is this loss on the logits [0, z]
    zb = rng.normal(0, 1.5, size=20)
    yb = rng.integers(0, 2, size=20)
    two = np.stack([np.zeros_like(zb), zb], axis=-1)
    assert_allclose(fl.sparsemax_loss(two, yb, reduction="none"),
                    np.asarray(optax.losses.sparsemax_loss(zb, yb)), rtol=1e-12, atol=1e-14)


def test_sparsemax_loss_optax_examples():
    # optax's SparsemaxTest: large scores on the right class give 0, grad = proj - onehot
    labels = np.array([1, 0, 2])
    scores = np.array([[0.0, 1e5, 0.0], [1e5, 0.0, 0.0], [0.0, 0.0, 1e5]])
    loss, g = fl.sparsemax_loss(scores, labels, reduction="none", return_grad=True)
    assert_allclose(loss, 0.0, atol=1e-4)
    assert_allclose(g, np.zeros((3, 3)), atol=1e-4)
    # binary examples (label 1 with score 10: 0; label 0 with score 20: 20)
    two = np.array([[0.0, 10.0], [0.0, 20.0]])
    assert_allclose(fl.sparsemax_loss(two, [1, 0], reduction="none"), [0.0, 20.0], atol=1e-12)


def test_sparsemax_loss_finite_differences(rng):
    z = rng.normal(0, 1, size=(4, 6))
    t = rng.integers(0, 6, size=4)
    _, g = fl.sparsemax_loss(z, t, reduction="sum", return_grad=True)
    assert_allclose(g, central_diff(lambda a: fl.sparsemax_loss(a, t, reduction="sum"), z),
                    atol=1e-7)


@pytest.mark.parametrize("dt", [np.float32, np.float16, BF16])
def test_sparsemax_loss_low_precision(rng, dt):
    z = rng.normal(0, 2, size=(10, 17)).astype(dt)
    t = rng.integers(0, 17, size=10)
    loss, g = fl.sparsemax_loss(z, t, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == dt
    want, wg = ref.sparsemax_loss(z.astype(np.float64), t, return_grad=True)
    assert_allclose(float(loss), want, rtol=1e-6 if dt == np.float32 else 1e-3)
    assert_allclose(g.astype(np.float64), wg, atol=1e-7 if dt == np.float32 else 2e-3)


def test_sparsemax_loss_grad_out_and_in_place(rng):
    z = rng.normal(0, 1, size=(5, 4))
    t = rng.integers(0, 4, size=5)
    want_l, want_g = fl.sparsemax_loss(z, t, return_grad=True)
    out = np.full_like(z, 7.0)
    loss, g = fl.sparsemax_loss(z, t, return_grad=True, grad_out=out)
    assert g is out and loss == want_l
    assert_allclose(out, want_g, rtol=0, atol=0)
    zz = np.asfortranarray(z)  # in place, strided class axis
    loss, g = fl.sparsemax_loss(zz, t, return_grad=True, grad_out=zz)
    assert g is zz
    assert_allclose(zz, want_g, rtol=0, atol=1e-17)


def test_sparsemax_loss_extreme():
    z = np.array([[1e30, 0.0, -1e30], [-np.inf, 0.0, 1.0], [0.0, 0.0, np.nan]])
    loss, g = fl.sparsemax_loss(z, [1, 2, 0], reduction="none", return_grad=True)
    assert_allclose(loss[:2], [1e30, 0.0])  # p = e_0, z_0 - z_1 = 1e30; a right answer
    assert_allclose(g[:2], [[1, -1, 0], [0, 0, 0]])
    assert np.isnan(loss[2]) and np.isnan(g[2]).all()
    loss = fl.sparsemax_loss(np.array([[-np.inf, 0.0]]), [0], reduction="none")
    assert loss[0] == np.inf
    f32 = fl.sparsemax_loss(np.array([[3e38, -3e38, 1.0]], np.float32), [0])
    assert float(f32) == 0.0


def test_sparsemax_loss_bad_input():
    z = np.zeros((3, 4))
    with pytest.raises(IndexError, match="out of range"):
        fl.sparsemax_loss(z, [0, 4, 1])
    with pytest.raises(IndexError, match="out of range"):
        fl.sparsemax_loss(z, [0, -1, 1])
    with pytest.raises(ValueError, match="target has shape"):
        fl.sparsemax_loss(z, [0, 1])
    with pytest.raises(TypeError, match="integer class indices"):
        fl.sparsemax_loss(z, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="reduction"):
        fl.sparsemax_loss(z, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="return_grad"):
        fl.sparsemax_loss(z, [0, 1, 2], grad_out=np.zeros((3, 4)))
    out = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="dtype"):
        fl.sparsemax_loss(z, [0, 1, 2], return_grad=True, grad_out=out)
    g = np.full((3, 4), 5.0)
    with pytest.raises(IndexError):
        fl.sparsemax_loss(z, [0, 9, 1], return_grad=True, grad_out=g)
    assert (g == 5.0).all()  # nothing written before the check failed


# ------------------------------------------------------------- multi-class hinge / perceptron


def test_multiclass_hinge_hand_values():
    s = np.array([[2.0, 1.5, -1.0], [0.0, 1.0, 3.0], [5.0, 0.0, 0.0]])
    loss, g = fl.multiclass_hinge_loss(s, [0, 1, 0], reduction="none", return_grad=True)
    assert_allclose(loss, [0.5, 3.0, 0.0])
    assert_allclose(g, [[-1, 1, 0], [0, -1, 1], [0, 0, 0]])
    assert_allclose(fl.multiclass_hinge_loss(s, [0, 1, 0], margin=2.0, reduction="none"),
                    [1.5, 4.0, 0.0])
    # ties: all-zero scores share the unit among the rivals (hinge) / all classes (perceptron)
    z = np.zeros((1, 4))
    _, g = fl.multiclass_hinge_loss(z, [2], return_grad=True)
    assert_allclose(g, [[1 / 3, 1 / 3, -1, 1 / 3]])
    loss, g = fl.multiclass_perceptron_loss(z, [2], return_grad=True)
    assert loss == 0.0
    assert_allclose(g, [[0.25, 0.25, -0.75, 0.25]])
    # one class: 0
    loss, g = fl.multiclass_hinge_loss(np.array([[4.0]]), [0], return_grad=True)
    assert loss == 0.0 and g[0, 0] == 0.0


@pytest.mark.parametrize("fn", ["hinge", "perceptron"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,axis", [((9, 5), -1), ((3, 6, 4), 1), ((5, 7), 0), ((4, 300), -1),
                                        ((70, 3), 0)])
def test_multiclass_vs_reference(rng, isa, fn, shape, axis, reduction):
    s = rng.normal(0, 1, size=shape)
    ax = axis % len(shape)
    t = rng.integers(0, shape[ax], size=shape[:ax] + shape[ax + 1:])
    f = getattr(fl, f"multiclass_{fn}_loss")
    r = getattr(ref, f"multiclass_{fn}_loss")
    got, g = f(s, t, axis=axis, reduction=reduction, return_grad=True)
    want, wg = r(s, t, axis=axis, reduction=reduction, return_grad=True)
    assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert_allclose(g, wg, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", LAYOUTS)
def test_multiclass_layouts(rng, name):
    s = rng.normal(0, 1, size=(6, 5))
    t = rng.integers(0, 5, size=6)
    want, wg = ref.multiclass_hinge_loss(s, t, return_grad=True)
    got, g = fl.multiclass_hinge_loss(layout(s, name), t, return_grad=True)
    assert_allclose(got, want, rtol=1e-14)
    assert_allclose(g, wg, atol=1e-16)


def test_multiclass_vs_optax(rng, jx):
    jax, optax = jx
    import jax.numpy as jnp

    s = rng.normal(0, 1, size=(20, 7))
    t = rng.integers(0, 7, size=20)
    for fn in ("hinge", "perceptron"):
        o = getattr(optax.losses, f"multiclass_{fn}_loss")
        f = getattr(fl, f"multiclass_{fn}_loss")
        assert_allclose(f(s, t, reduction="none"), np.asarray(o(s, t)), rtol=1e-12, atol=1e-14)
        gw = np.asarray(jax.grad(lambda a, o=o: jnp.mean(o(a, t)))(s))
        assert_allclose(f(s, t, return_grad=True)[1], gw, rtol=0, atol=1e-15)
        # ties, as jax.grad shares them
        z = np.zeros((3, 4))
        gw = np.asarray(jax.grad(lambda a, o=o: jnp.sum(o(a, np.array([0, 1, 3]))))(z))
        assert_allclose(f(z, [0, 1, 3], reduction="sum", return_grad=True)[1], gw, atol=1e-15)


def test_multiclass_optax_examples():
    # optax's HingeTest / PerceptronTest multi-class cases
    s = np.array([[10.0, 3.0], [11.0, -2.0]])
    assert_allclose(fl.multiclass_hinge_loss(s, [1, 0], reduction="none"), [8.0, 0.0])
    assert_allclose(fl.multiclass_perceptron_loss(s, [1, 0], reduction="none"), [7.0, 0.0])
    assert_allclose(fl.multiclass_hinge_loss(np.array([10.0, 3.0]), 1), 8.0)


def test_multiclass_dtypes_and_extremes(rng):
    s = rng.normal(0, 3, size=(8, 6))
    t = rng.integers(0, 6, size=8)
    for dt in (np.float32, np.float16, BF16):
        sd = s.astype(dt)
        loss, g = fl.multiclass_hinge_loss(sd, t, return_grad=True)
        assert loss.dtype == np.float32 and g.dtype == dt
        w2, wg2 = ref.multiclass_hinge_loss(sd.astype(np.float64), t, return_grad=True)
        assert_allclose(float(loss), w2, rtol=1e-6)
        assert_allclose(g.astype(np.float64), wg2, atol=1e-7)
    # huge float32 scores: the difference is taken in float64, before adding the margin
    x = np.array([[1.5e38, -1.5e38, 0.0], [1e8, 1e8, 0.0]], np.float32)
    loss = fl.multiclass_hinge_loss(x, [1, 0], reduction="none")
    assert np.isfinite(loss).all()
    assert_allclose(loss, [3e38, 1.0], rtol=1e-6)
    loss, g = fl.multiclass_hinge_loss(np.array([[np.nan, 0.0], [1.0, 2.0]]), [1, 0],
                                       reduction="none", return_grad=True)
    assert np.isnan(loss[0]) and np.isnan(g[0]).all() and loss[1] == 2.0


@pytest.mark.parametrize("margin", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("C", [2, 5, 16, 17, 64])
def test_multiclass_lanes_ties_and_bad_rows(rng, isa, C, margin):
    """The lane kernel's per-lane epilogue (up to 64 classes): small integer scores make z = 0
    and tied rivals common; NaN rows; full blocks and a short last one (37 rows), float32 and
    float64, against the reference exactly."""
    s = rng.integers(-2, 3, size=(37, C)).astype(np.float64)
    s[4, 0] = np.nan
    t = rng.integers(0, C, size=37)
    want, wg = ref.multiclass_hinge_loss(s, t, margin=margin, reduction="none", return_grad=True)
    for dt in (np.float64, np.float32):
        got, g = fl.multiclass_hinge_loss(s.astype(dt), t, margin=margin, reduction="none",
                                          return_grad=True)
        assert np.isnan(got[4]) and np.isnan(g[4]).all()
        ok = np.arange(37) != 4
        np.testing.assert_array_equal(got[ok], want[ok])
        np.testing.assert_array_equal(g[ok], wg[ok].astype(dt))
        np.testing.assert_array_equal(
            fl.multiclass_hinge_loss(s.astype(dt), t, margin=margin, reduction="none"), got)


def test_multiclass_bad_input():
    s = np.zeros((3, 4))
    with pytest.raises(IndexError, match="out of range"):
        fl.multiclass_hinge_loss(s, [0, 4, 1])
    with pytest.raises(TypeError, match="integer"):
        fl.multiclass_perceptron_loss(s, [0.5, 1, 1])
    with pytest.raises(ValueError, match="target has shape"):
        fl.multiclass_hinge_loss(s, [[0, 1, 2]])
    with pytest.raises(ValueError, match="margin"):
        fl.multiclass_hinge_loss(s, [0, 1, 2], margin=np.inf)
    with pytest.raises(TypeError, match="margin"):
        fl.multiclass_hinge_loss(s, [0, 1, 2], margin="1")
    with pytest.raises(ValueError, match="size 0"):
        fl.multiclass_hinge_loss(np.zeros((3, 0)), [0, 0, 0])
    # the first bad entry is the one reported, -1 (which the core's check reads as an ignored
    # entry) included, before and after another bad one
    t = np.zeros(10_000, np.int64)
    for bad in ([(70, -1), (900, 4)], [(70, 4), (900, -1)], [(70, -1)], [(9_999, -2**63)]):
        tt = t.copy()
        for i, v in bad:
            tt[i] = v
        i, v = bad[0]
        with pytest.raises(IndexError, match=rf"target\[{i}\] = {v} is out of range"):
            fl.multiclass_hinge_loss(np.zeros((10_000, 4)), tt)


@pytest.mark.parametrize("fn", [fl.multiclass_hinge_loss, fl.multiclass_perceptron_loss])
def test_multiclass_chunked_rows_are_one_call_bit_for_bit(rng, isa, monkeypatch, fn):
    """Many rows without the gradient run chunk by chunk (classification._row_chunks): the
    same bits for "none" as one call, the reduced losses the sum of the chunks' sums."""
    from fastloss import classification

    x = rng.normal(0.0, 2.0, (70, 10)).astype(np.float32)
    t = rng.integers(0, 10, 70)
    xs = np.moveaxis(x.reshape(7, 10, 10), -1, 1)  # (7, C, 10): the class axis strided
    want = [fn(x, t, reduction="none"), fn(xs, t.reshape(7, 10), axis=1, reduction="none")]
    monkeypatch.setattr(classification, "_CHUNK_ROWS", 16)
    got = [fn(x, t, reduction="none"), fn(xs, t.reshape(7, 10), axis=1, reduction="none")]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    for red in ("mean", "sum"):
        np.testing.assert_allclose(fn(x, t, reduction=red),
                                   getattr(np, red)(want[0].astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("name", ["fastloss.sparsemax", "fastloss.multiclass"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
