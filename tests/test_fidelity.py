"""Issue 14, drop-in fidelity: what scipy's and PyTorch's own suites found, as regression tests.

- logsumexp keeps its largest term apart (``log1p`` of the rest), with and without ``b``;
- complex input for logsumexp / softmax / log_softmax with scipy 1.17's semantics (checked
  against scipy itself and against ``fastloss.reference``);
- kl_div's ``negative_target`` option (PyTorch's NaN), against the reference and by hand;
- the regression and binary losses warn as PyTorch does when target and input differ in shape.

multi_margin_loss on a 0-d input is tested in test_classification_extras.py, the
linear_cross_entropy cases of torch 2.13 in test_scale.py.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy
import scipy.special as sp
from numpy.testing import assert_allclose, assert_array_equal

import fastloss as fl
from fastloss import reference as ref

# The comparisons with scipy.special.logsumexp's result dtypes and complex special values follow
# SciPy >= 1.16 (checked: 1.16.0 passes them, 1.15.0 and 1.14.1 fail, with other dtypes and
# special values and an error on bool input); the newest SciPy for Python 3.9 is 1.13.
SCIPY_LOGSUMEXP = pytest.mark.skipif(
    tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 16),
    reason="compares with scipy.special.logsumexp of SciPy >= 1.16")

# --- logsumexp: the largest term kept apart ----------------------------------------------------


def test_logsumexp_b_keeps_small_terms():
    # log(1 + e^-40) = log1p(e^-40) = 4.248e-18, which log(1 + e^-40) rounds to 0
    got = fl.logsumexp([0.0, -40.0], b=[1, 1])
    assert got == 4.248354255291589e-18 == np.logaddexp(0.0, -40.0)
    # -1e-17 + log1p(e^(-40 + 1e-17)) = -5.7516e-18 (the plain formula gives -1e-17)
    got = fl.logsumexp([-1e-17, -40.0], b=[1, 1])
    assert_allclose(got, -1e-17 + math.log1p(math.exp(-40.0 + 1e-17)), rtol=1e-15)
    assert_allclose(got, -5.751645744708412e-18, rtol=1e-15)
    # the largest term's weight counts: log(2 + 3 e^-40) = log 2 + log1p(1.5 e^-40)
    assert_allclose(fl.logsumexp([0.0, -40.0], b=[2.0, 3.0]),
                    math.log(2.0) + math.log1p(1.5 * math.exp(-40.0)), rtol=1e-15)
    # and along an axis, every row on its own
    a = np.array([[0.0, -40.0, -45.0], [-40.0, 3.0, 3.0 - 50.0]])
    want = [math.log1p(math.exp(-40) + math.exp(-45)), 3.0 + math.log1p(math.exp(-43) +
                                                                        math.exp(-50))]
    assert_allclose(fl.logsumexp(a, axis=1, b=np.ones(3)), want, rtol=1e-15)


def test_logsumexp_real_keeps_small_terms():
    # the real path without b is the C++ kernel (the lead's fix, issue 14)
    assert fl.logsumexp([0.0, -40.0]) == 4.248354255291589e-18
    assert_allclose(fl.logsumexp([-1e-17, -40.0]), -5.751645744708412e-18, rtol=1e-15)


def test_logsumexp_b_negative_sums_and_signs():
    # log|e^1 - e^1 - e^1| = 1, sign -1 (scipy's test_logsumexp_sign); without return_sign NaN
    r, s = fl.logsumexp([1, 1, 1], b=[1, -1, -1], return_sign=True)
    assert_allclose(r, 1.0, rtol=1e-15)
    assert s == -1.0
    assert np.isnan(fl.logsumexp([1, 1, 1], b=[1, -1, -1]))
    # the largest term's weight negative but the sum positive: no NaN (scipy gh-22903)
    a, b = [3.06409428, 0.37251854, 3.87471931], [1.88190708, 2.84174795, -0.85016884]
    direct = np.log(np.sum(np.multiply(b, np.exp(a))))
    assert_allclose(fl.logsumexp(a, b=b), direct, rtol=1e-14)
    # |1 + r| for r < -1: log(3 e^2 - 2 e^2 ... ) handled by log1p(-r - 2)
    r, s = fl.logsumexp([2.0, 2.0 - 1e-3], b=[1.0, -3.0], return_sign=True)
    total = math.exp(2.0) - 3.0 * math.exp(2.0 - 1e-3)
    assert s == -1.0
    assert_allclose(r, math.log(-total), rtol=1e-13)
    # an exact cancellation: -inf, sign 0
    r, s = fl.logsumexp([1.0, 1.0], b=[1, -1], return_sign=True)
    assert r == -np.inf and s == 0


def test_logsumexp_b_zero_masks_every_term():
    # b == 0 removes a term even where a is inf or NaN (a deliberate difference: scipy 1.17
    # gives NaN when a masked term is infinite and the result is infinite or all masked)
    assert fl.logsumexp([np.inf, 1.0], b=[0, 1]) == 1.0
    assert fl.logsumexp([np.nan, 1.0], b=[0, 1]) == 1.0
    assert fl.logsumexp([np.inf, np.inf], b=[0, 1]) == np.inf
    assert fl.logsumexp([np.inf, 1.0], b=[0, 0]) == -np.inf
    assert fl.logsumexp([1.0, 10000.0], b=[1, 0]) == 1.0
    r, s = fl.logsumexp([np.inf, 2.0], b=[0, 0], return_sign=True)
    assert r == -np.inf and s == 0


# --- dtypes, as scipy ----------------------------------------------------------------------------
DTYPES = ["bool", "int8", "int32", "int64", "uint8", "float16", "float32", "float64",
          "complex64", "complex128"]


@SCIPY_LOGSUMEXP
@pytest.mark.parametrize("da,db", itertools.product(DTYPES, DTYPES + [None]))
def test_logsumexp_result_dtype_is_scipys(da, db):
    a = np.array([1, 0], da)
    b = None if db is None else np.array([1, 1], db)
    got, want = fl.logsumexp(a, b=b), sp.logsumexp(a, b=b)
    assert got.dtype == want.dtype
    rtol = 1e-3 if np.finfo(got.dtype).bits <= 16 else 1e-6 if got.dtype in (
        np.float32, np.complex64) else 1e-14
    assert_allclose(got, want, rtol=rtol)
    r, s = fl.logsumexp(a, b=b, return_sign=True)
    wr, ws = sp.logsumexp(a, b=b, return_sign=True)
    assert r.dtype == wr.dtype and s.dtype == ws.dtype


def test_softmax_complex_dtypes():
    for dt in (np.complex64, np.complex128):
        x = np.array([1 + 2j, 3 - 1j], dt)
        for f in (fl.softmax, fl.log_softmax):
            assert f(x).dtype == dt
    # a 0-d complex input gives a NumPy scalar, as scipy
    assert isinstance(fl.log_softmax(3 + 1j), np.complex128) and fl.log_softmax(3 + 1j) == 0
    assert fl.softmax(np.complex64(3)) == 1 and fl.softmax(np.complex64(3)).dtype == np.complex64


# --- complex input against scipy and the reference ---------------------------------------------
def _complex(rng, shape, scale=5.0):
    return rng.normal(0, scale, shape) + 1j * rng.normal(0, scale, shape)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("bkind", [None, "real", "complex", "signed"])
def test_logsumexp_complex_matches_scipy_and_reference(rng, axis, keepdims, bkind):
    a = _complex(rng, (3, 4, 5))
    b = {None: None, "real": rng.uniform(0.1, 2, (4, 5)), "signed": rng.normal(size=(1, 5)),
         "complex": _complex(rng, (3, 4, 5), 1.0)}[bkind]
    got = fl.logsumexp(a, axis=axis, b=b, keepdims=keepdims)
    want = sp.logsumexp(a, axis=axis, b=b, keepdims=keepdims)
    assert np.shape(got) == np.shape(want) and got.dtype == np.complex128
    assert_allclose(got, want, rtol=1e-13)
    assert_allclose(got, ref.logsumexp(a, axis=axis, b=b, keepdims=keepdims), rtol=1e-13)
    assert np.all(np.abs(np.imag(got)) <= np.pi)
    r, s = fl.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    wr, ws = sp.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    assert r.dtype == np.float64 and s.dtype == np.complex128
    assert_allclose(r, wr, rtol=1e-13)
    assert_allclose(s, ws, rtol=1e-12, atol=1e-14)
    assert_allclose(np.abs(s), 1.0, rtol=1e-14)
    # the sign times exp(res) is the sum
    total = np.sum((1 if b is None else b) * np.exp(a), axis=axis, keepdims=keepdims)
    assert_allclose(s * np.exp(r), total, rtol=1e-12)


def test_logsumexp_complex_small_terms_and_phases():
    # the real part of log1p(r) for tiny complex r (NumPy's complex log1p gives 0)
    got = fl.logsumexp(np.array([0.0, -40.0 + 1.0j]))
    r = math.exp(-40.0) * complex(math.cos(1.0), math.sin(1.0))
    assert_allclose(got.real, r.real, rtol=1e-14)
    assert_allclose(got.imag, r.imag, rtol=1e-14)
    # scipy gh-21709: a tiny imaginary part keeps its digits
    got = fl.logsumexp(np.array([0, 0.0 + 2.2204460492503132e-17j]))
    assert_allclose(got.real, 0.6931471805599453, rtol=1e-15)
    assert_allclose(got.imag, 1.1102230246251566e-17, rtol=1e-15)
    # phases wrap into (-pi, pi]: log(e^{3i} + e^{3.5i}) has argument 3.25 - 2 pi
    got = fl.logsumexp(np.array([3.0j, 3.5j]))
    assert_allclose(got.imag, 3.25 - 2 * np.pi, rtol=1e-14)
    assert_allclose(got.real, math.log(2 * math.cos(0.25)), rtol=1e-14)


SPECIALS = [-np.inf, np.inf, np.nan, complex(-np.inf, 0.0), complex(-np.inf, 1.0),
            complex(np.inf, 0.0), complex(np.inf, -2.0), complex(np.inf, np.inf),
            complex(0.0, np.inf), complex(np.nan, 1.0), 1.0 + 1.0j, -3.0 - 2.0j]


@SCIPY_LOGSUMEXP
@pytest.mark.parametrize("x,y", itertools.product(SPECIALS, repeat=2))
def test_logsumexp_complex_specials_as_scipy(x, y):
    a = np.array([x, y], dtype=np.complex128)
    with np.errstate(all="ignore"):
        want = sp.logsumexp(a)
        wr, ws = sp.logsumexp(a, return_sign=True)
    assert_array_equal(fl.logsumexp(a), want)
    r, s = fl.logsumexp(a, return_sign=True)
    assert_array_equal(r, wr)
    assert_array_equal(s, ws)


def test_logsumexp_empty():
    # an empty reduction: -inf; its sign is 0 (a deliberate difference: scipy 1.17 gives
    # sign(-inf) = -1, and NaN for complex input)
    assert fl.logsumexp([]) == -np.inf
    r, s = fl.logsumexp([], return_sign=True)
    assert r == -np.inf and s == 0
    r, s = fl.logsumexp(np.zeros((2, 0), complex), axis=1, return_sign=True)
    assert_array_equal(r, [-np.inf, -np.inf]) and r.dtype == np.float64
    assert_array_equal(s, [0, 0]) and s.dtype == np.complex128
    got = fl.logsumexp(np.zeros((2, 0), np.complex64), axis=1, b=np.ones(0))
    assert_array_equal(got, [-np.inf, -np.inf]) and got.dtype == np.complex64


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
def test_softmax_complex_matches_scipy_and_reference(rng, fn, axis):
    x = _complex(rng, (4, 3, 2), 3.0)
    got = getattr(fl, fn)(x, axis=axis)
    assert got.shape == x.shape and got.dtype == np.complex128
    assert_allclose(got, getattr(sp, fn)(x, axis=axis), rtol=1e-12, atol=1e-15)
    assert_allclose(got, getattr(ref, fn)(x, axis=axis), rtol=1e-12, atol=1e-15)
    if fn == "softmax":  # sums to 1 along the axes
        assert_allclose(np.sum(got, axis=axis), 1.0, rtol=1e-13)
    else:  # exp gives the softmax
        assert_allclose(np.exp(got), fl.softmax(x, axis=axis), rtol=1e-12)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_complex_specials_as_scipy(fn):
    rows = [[1 + 2j, np.inf], [1 + 2j, -np.inf], [np.nan, 1j], [-np.inf, -np.inf],
            [complex(-np.inf, 1.0), 2.0], [3 + 0j, 3 + 5j]]
    for row in rows:
        x = np.array(row, dtype=np.complex128)
        with np.errstate(all="ignore"):
            want = getattr(sp, fn)(x)
        assert_array_equal(getattr(fl, fn)(x), want)
    assert getattr(fl, fn)(np.zeros((0, 3), complex), axis=1).shape == (0, 3)


def test_complex_and_b_bad_input():
    with pytest.raises(TypeError, match="a: unsupported dtype"):
        fl.logsumexp(np.zeros(3, np.clongdouble))
    with pytest.raises(TypeError, match="b: unsupported dtype"):
        fl.logsumexp(np.zeros(3), b=np.array(["x", "y", "z"]))
    with pytest.raises(TypeError, match="x: unsupported dtype"):
        fl.softmax(np.zeros(3, np.clongdouble))
    with pytest.raises(ValueError, match="b has shape"):
        fl.logsumexp(np.zeros((3, 2), complex), b=np.ones(3))
    with pytest.raises(np.exceptions.AxisError):
        fl.logsumexp(np.zeros(3, complex), axis=1)
    with pytest.raises(TypeError, match="b: cannot be converted"):
        fl.logsumexp(np.zeros(2), b=[[1.0], [1.0, 2.0]])


# --- kl_div with negative "probability" targets --------------------------------------------------
def test_kl_div_negative_targets_raise_by_default():
    with pytest.raises(ValueError, match="negative_target='nan'"):
        fl.kl_div(np.log([0.5, 0.5]), [0.5, -0.5])
    with pytest.raises(ValueError, match="negative_target must be"):
        fl.kl_div(np.log([0.5, 0.5]), [0.5, 0.5], negative_target="ignore")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
def test_kl_div_negative_target_nan_is_torchs(rng, reduction):
    # PyTorch: t log t - t x is NaN where t < 0; the gradient is -t everywhere
    x = np.log(rng.dirichlet(np.ones(4), 3))
    t = rng.dirichlet(np.ones(4), 3)
    t[1, 2] = -0.25
    t[2, 0] = 0.0
    loss, grad = fl.kl_div(x, t, reduction=reduction, negative_target="nan", return_grad=True)
    denom = {"none": 1, "sum": 1, "mean": t.size, "batchmean": 3}[reduction]
    assert_allclose(grad, -t / denom, rtol=1e-15)
    want, want_g = ref.kl_div(x, t, reduction=reduction, negative_target="nan", return_grad=True)
    assert_allclose(grad, want_g, rtol=1e-14)
    if reduction == "none":
        assert np.isnan(loss[1, 2]) and np.sum(np.isnan(loss)) == 1
        ok = ~np.isnan(loss)
        assert_allclose(loss[ok], want[ok], rtol=1e-14)
        assert loss[2, 0] == 0
    else:
        assert np.isnan(loss) and np.isnan(want)
    # without negative targets the option changes nothing
    clean = np.abs(t)
    assert_array_equal(fl.kl_div(x, clean, reduction=reduction, negative_target="nan"),
                       fl.kl_div(x, clean, reduction=reduction))


def test_kl_div_negative_target_nan_broadcast_and_grad_out(rng):
    x = np.log(rng.dirichlet(np.ones(3), 4))
    t = np.array([0.5, -0.25, 0.75])  # broadcast over the 4 rows
    g_out = np.empty_like(x)
    loss, grad = fl.kl_div(x, t, reduction="sum", negative_target="nan", return_grad=True,
                           grad_out=g_out)
    assert grad is g_out and np.isnan(loss)
    assert_allclose(grad, -np.broadcast_to(t, x.shape), rtol=1e-15)
    # input broadcast against the target: its gradient sums over the broadcast axis
    loss, grad = fl.kl_div(x[:1], np.stack([t, t]), reduction="none", negative_target="nan",
                           return_grad=True)
    assert loss.shape == (2, 3) and np.isnan(loss[:, 1]).all()
    assert_allclose(grad, -2 * t[None], rtol=1e-15)
    # log targets are never negative probabilities
    assert np.isfinite(fl.kl_div(x, np.log([0.5, 0.25, 0.25]), log_target=True,
                                 negative_target="nan"))


# --- shape-mismatch warnings, as PyTorch ----------------------------------------------------
def _torch_message(target_shape, input_shape):
    return (f"Using a target size ({target_shape}) that is different to the input size "
            f"({input_shape}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.")


WARNING_LOSSES = {
    "mse_loss": lambda x, t: fl.mse_loss(x, t),
    "l1_loss": lambda x, t: fl.l1_loss(x, t, reduction="sum"),
    "huber_loss": lambda x, t: fl.huber_loss(x, t, delta=0.5),
    "smooth_l1_loss": lambda x, t: fl.smooth_l1_loss(x, t, reduction="none"),
    "binary_cross_entropy": lambda x, t: fl.binary_cross_entropy(x * 0.5 + 0.25, t * 0 + 1),
    "binary_cross_entropy_with_logits":
        lambda x, t: fl.binary_cross_entropy_with_logits(x, t * 0 + 1, return_grad=True),
    "sigmoid_focal_loss": lambda x, t: fl.sigmoid_focal_loss(x, t * 0 + 1),
    "hinge_loss": lambda x, t: fl.hinge_loss(x, t * 0 + 1),
}


@pytest.mark.parametrize("name", WARNING_LOSSES)
def test_shape_mismatch_warns_as_torch(name):
    f = WARNING_LOSSES[name]
    x, t = np.linspace(0.1, 0.9, 4), np.linspace(0.0, 1.0, 4)
    # optax's shape-mismatch case: (4,) against (4, 1) broadcasts to (4, 4), with a warning
    with pytest.warns(UserWarning) as record:
        got = f(x, t[:, None])
    assert len(record) == 1
    assert str(record[0].message) == _torch_message((4, 1), (4,))
    assert record[0].filename == __file__  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = f(np.broadcast_to(x, (4, 4)), np.broadcast_to(t[:, None], (4, 4)))
    for g, s in zip(got if isinstance(got, tuple) else (got,),
                    same if isinstance(same, tuple) else (same,)):
        if np.shape(g) == np.shape(s):
            assert_allclose(g, s, rtol=1e-15)
    # a 0-d target is broadcasting too (PyTorch warns for it as well)
    with pytest.warns(UserWarning, match=r"target size \(\(\)\)"):
        f(x, np.float64(0.5))


def test_equal_shapes_and_kl_div_do_not_warn():
    x, t = np.full((2, 3), 0.5), np.full((2, 3), 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in WARNING_LOSSES.values():
            f(x, t)
            # shapes that do not broadcast are a ValueError, without a warning first
            with pytest.raises(ValueError, match="do not broadcast"):
                f(x, t[:, :2])
        fl.kl_div(np.log(x), t[:1])  # PyTorch's kl_div does not warn either


def test_dask_pointwise_losses_warn_on_mismatch():
    da = pytest.importorskip("dask.array")
    import fastloss.dask as fld

    x = da.from_array(np.linspace(0.0, 1.0, 4), chunks=2)
    with pytest.warns(UserWarning, match=r"target size \(\(4, 1\)\).*input size \(\(4,\)\)"):
        lazy = fld.mse_loss(x, np.zeros((4, 1)))
    assert_allclose(lazy.compute(), fl.mse_loss(np.broadcast_to(np.linspace(0, 1, 4), (4, 4)),
                                                np.zeros((4, 4))), rtol=1e-15)
