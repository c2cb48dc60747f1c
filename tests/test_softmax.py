"""logsumexp, softmax and log_softmax against scipy.special and fastloss.reference."""

from __future__ import annotations

import itertools
import math

import ml_dtypes
import numpy as np
import pytest
import scipy
import scipy.special as sp
from conftest import LAYOUTS, layout, non_c_layouts
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss as fl
from fastloss import reference as ref

# The comparisons with scipy.special.logsumexp below follow SciPy >= 1.16. SciPy 1.13 (the
# newest for Python 3.9) gives float16 for int8 input, fails on bool and raises ValueError on
# an empty reduction; they are skipped there, the checks by hand are not.
SCIPY_1_16 = tuple(int(p) for p in scipy.__version__.split(".")[:2]) >= (1, 16)

assert_allclose = np.testing.assert_allclose
NINF = -np.inf

# (shape, axis): 1-d, 2-d, 3-d; None, int, negative int, tuple (also unsorted); long rows.
SHAPE_AXES = [
    ((7,), None),
    ((7,), 0),
    ((7,), -1),
    ((1,), 0),
    ((4, 5), None),
    ((4, 5), 0),
    ((4, 5), 1),
    ((4, 5), -1),
    ((4, 5), -2),
    ((4, 5), (0, 1)),
    ((3, 4, 5), None),
    ((3, 4, 5), 0),
    ((3, 4, 5), 1),
    ((3, 4, 5), 2),
    ((3, 4, 5), -2),
    ((3, 4, 5), (0, 2)),
    ((3, 4, 5), (2, 0)),
    ((3, 4, 5), (-1, -2)),
    ((3, 4, 5), (0, 1, 2)),
    ((2, 3, 1000), -1),
    ((2, 1000, 3), 1),
    ((5, 1), 1),
]

SOFTMAX_FUNCS = [
    pytest.param(fl.softmax, sp.softmax, ref.softmax, id="softmax"),
    pytest.param(fl.log_softmax, sp.log_softmax, ref.log_softmax, id="log_softmax"),
]


def _data(rng, shape, scale=3.0):
    return rng.normal(0.0, scale, size=shape)


def _ref_axis(axis):
    # fastloss.reference takes what np.max / np.sum take: None, int or tuple.
    return tuple(axis) if isinstance(axis, list) else axis


# --------------------------------------------------------------------------- logsumexp


@pytest.mark.parametrize("shape,axis", SHAPE_AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_float64_matches_scipy_and_reference(rng, shape, axis, keepdims):
    a = _data(rng, shape)
    got = fl.logsumexp(a, axis=axis, keepdims=keepdims)
    want = sp.logsumexp(a, axis=axis, keepdims=keepdims)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.float64
    assert_allclose(got, want, rtol=1e-13, atol=0)
    assert_allclose(got, ref.logsumexp(a, axis=_ref_axis(axis), keepdims=keepdims), rtol=1e-13)


@pytest.mark.parametrize("shape,axis", SHAPE_AXES)
def test_logsumexp_return_sign_without_b(rng, shape, axis):
    a = _data(rng, shape)
    res, sgn = fl.logsumexp(a, axis=axis, return_sign=True)
    want_res, want_sgn = sp.logsumexp(a, axis=axis, return_sign=True)
    assert_allclose(res, want_res, rtol=1e-13)
    np.testing.assert_array_equal(sgn, want_sgn)
    assert np.shape(sgn) == np.shape(want_sgn)


@pytest.mark.parametrize(
    "dtype,rtol",
    [(np.float32, 1e-6), (np.float16, 1e-3), (ml_dtypes.bfloat16, 8e-3)],
    ids=["float32", "float16", "bfloat16"],
)
@pytest.mark.parametrize(
    "shape,axis", [((40,), None), ((6, 50), 1), ((6, 50), 0), ((3, 4, 5), (0, 2))]
)
def test_logsumexp_low_precision_keeps_dtype(rng, dtype, rtol, shape, axis):
    a = _data(rng, shape).astype(dtype)
    got = fl.logsumexp(a, axis=axis)
    assert np.asarray(got).dtype == np.dtype(dtype)
    # exact answer on the same (rounded) input values; the result is one rounding away
    assert_allclose(np.asarray(got, dtype=np.float64), ref.logsumexp(a, axis=axis), rtol=rtol)
    if dtype is not ml_dtypes.bfloat16:  # scipy keeps float16/float32 (no bfloat16 in scipy)
        assert np.asarray(got).dtype == sp.logsumexp(a, axis=axis).dtype


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_logsumexp_integer_input_gives_float64(dtype):
    a = np.array([[1, 0, 1], [0, 1, 1]], dtype=dtype)
    got = fl.logsumexp(a, axis=1)
    assert got.dtype == np.float64
    # by hand: log(2e + 1)
    assert_allclose(got, [math.log(2 * math.e + 1)] * 2, rtol=1e-15)
    if SCIPY_1_16:
        want = sp.logsumexp(a, axis=1)
        assert want.dtype == np.float64
        assert_allclose(got, want, rtol=1e-15)


def test_logsumexp_hand_values():
    assert_allclose(fl.logsumexp([1.0, 2.0, 3.0]), math.log(math.e + math.e**2 + math.e**3),
                    rtol=1e-15)
    assert_allclose(fl.logsumexp([0.0, 0.0, 0.0, 0.0]), math.log(4.0), rtol=1e-15)
    assert float(fl.logsumexp([5.0])) == 5.0


def test_logsumexp_scalar_input():
    got = fl.logsumexp(3.0)
    assert np.ndim(got) == 0 and float(got) == 3.0
    assert np.ndim(sp.logsumexp(3.0)) == 0


# -- b weights


@pytest.mark.parametrize("shape,axis", [s for s in SHAPE_AXES if max(s[0]) < 100])
def test_logsumexp_b_with_negative_and_zero_weights(rng, shape, axis):
    a = _data(rng, shape)
    b = rng.normal(size=shape)
    b[rng.random(shape) < 0.2] = 0.0
    res, sgn = fl.logsumexp(a, axis=axis, b=b, return_sign=True)
    want_res, want_sgn = sp.logsumexp(a, axis=axis, b=b, return_sign=True)
    assert_allclose(res, want_res, rtol=1e-12)
    np.testing.assert_array_equal(sgn, want_sgn)
    # independent: log|sum(b e^a)| straight from the definition (the values are moderate)
    s = np.sum(b * np.exp(a), axis=axis)
    with np.errstate(divide="ignore"):
        assert_allclose(res, np.log(np.abs(s)), rtol=1e-11)
    np.testing.assert_array_equal(sgn, np.sign(s))
    # without return_sign a negative sum is NaN, as scipy
    with np.errstate(invalid="ignore"):
        plain = fl.logsumexp(a, axis=axis, b=b)
        assert_allclose(plain, sp.logsumexp(a, axis=axis, b=b), rtol=1e-12, equal_nan=True)
    assert np.array_equal(np.isnan(plain), np.asarray(s) < 0)


@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_b_broadcast_and_keepdims(rng, keepdims):
    a = _data(rng, (4, 5))
    b = np.array([1.0, 2.0, 0.0, 0.5, 3.0])  # broadcast along rows
    got = fl.logsumexp(a, axis=1, b=b, keepdims=keepdims)
    want = sp.logsumexp(a, axis=1, b=b, keepdims=keepdims)
    assert np.shape(got) == np.shape(want) == ((4, 1) if keepdims else (4,))
    assert_allclose(got, want, rtol=1e-13)
    assert_allclose(np.ravel(got), np.log(np.exp(a) @ b), rtol=1e-13)
    bcol = np.array([[2.0], [1.0], [0.5], [4.0]])
    assert_allclose(fl.logsumexp(a, axis=0, b=bcol), sp.logsumexp(a, axis=0, b=bcol), rtol=1e-13)


def test_logsumexp_b_all_zero_row():
    a = np.array([[1.0, 2.0], [0.0, 1.0]])
    b = np.array([[0.0, 0.0], [1.0, 1.0]])
    res, sgn = fl.logsumexp(a, axis=1, b=b, return_sign=True)
    assert res[0] == -np.inf and sgn[0] == 0.0
    assert_allclose(res[1], math.log(1 + math.e), rtol=1e-15) and sgn[1] == 1.0


def test_logsumexp_b_zero_masks_infinite_term():
    # A zero weight removes the term "as a mask would" (docstring; scipy: 1.0): the +inf
    # logit under b=0 must not turn the sum into NaN.
    a = np.array([1.0, np.inf])
    b = np.array([1.0, 0.0])
    assert float(sp.logsumexp(a, b=b)) == 1.0
    assert float(fl.logsumexp(a, b=b)) == 1.0


@pytest.mark.parametrize(
    "adt,bdt",
    [
        (np.float32, np.float32),
        (np.float32, np.float64),
        (np.float64, np.float32),
        (np.int64, np.float32),
        (np.float16, np.float16),
        (np.int32, np.int32),
    ],
)
def test_logsumexp_b_result_dtype_as_scipy(adt, bdt):
    a = np.array([1, 2, 3], dtype=adt)
    b = np.array([1, 2, 3], dtype=bdt)
    got = fl.logsumexp(a, b=b)
    want = sp.logsumexp(a, b=b)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    exact = math.log(math.e + 2 * math.e**2 + 3 * math.e**3)
    tol = 1e-3 if adt is np.float16 else 1e-6
    assert_allclose(float(got), exact, rtol=tol)


# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("fl_f,sp_f,ref_f", SOFTMAX_FUNCS)
@pytest.mark.parametrize("shape,axis", SHAPE_AXES)
def test_softmax_float64_matches_scipy_and_reference(rng, fl_f, sp_f, ref_f, shape, axis):
    x = _data(rng, shape)
    got = fl_f(x, axis=axis)
    want = sp_f(x, axis=axis)
    assert got.shape == want.shape == x.shape and got.dtype == np.float64
    assert_allclose(got, want, rtol=1e-13, atol=1e-300)
    assert_allclose(got, ref_f(x, axis=_ref_axis(axis)), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("shape,axis", SHAPE_AXES)
def test_softmax_sums_to_one_and_log_consistent(rng, shape, axis):
    x = _data(rng, shape)
    p = fl.softmax(x, axis=axis)
    assert_allclose(np.sum(p, axis=axis), 1.0, rtol=1e-13)
    assert_allclose(fl.log_softmax(x, axis=axis), np.log(p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fl_f,sp_f,ref_f", SOFTMAX_FUNCS)
@pytest.mark.parametrize(
    "dtype,rtol,atol",
    [(np.float32, 2e-6, 1e-7), (np.float16, 1e-3, 1e-6), (ml_dtypes.bfloat16, 8e-3, 1e-20)],
    ids=["float32", "float16", "bfloat16"],
)
@pytest.mark.parametrize(
    "shape,axis", [((30,), None), ((6, 50), -1), ((6, 50), 0), ((3, 4, 5), (1, 2))]
)
def test_softmax_low_precision_keeps_dtype(rng, fl_f, sp_f, ref_f, dtype, rtol, atol, shape, axis):
    x = _data(rng, shape).astype(dtype)
    got = fl_f(x, axis=axis)
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    if dtype is not ml_dtypes.bfloat16:
        assert got.dtype == sp_f(x, axis=axis).dtype
    # against the exact values of the same rounded inputs; log_softmax in absolute terms
    want = ref_f(x, axis=axis)
    if fl_f is fl.log_softmax:
        assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * 4)
    else:
        assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("fl_f,sp_f,ref_f", SOFTMAX_FUNCS)
@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint8, np.bool_])
def test_softmax_integer_input_gives_float64(fl_f, sp_f, ref_f, dtype):
    # The contract (API.md) says float64 for every integer and bool dtype. scipy agrees for
    # int64; it gives float32 for int16 and wraps around in unsigned arithmetic for uint8, so
    # the values are compared with scipy on the int64 (or float64) version of the input.
    x = np.array([[1, 0, 1], [0, 0, 1]], dtype=dtype)
    got = fl_f(x, axis=1)
    assert got.dtype == np.float64
    x64 = x.astype(np.float64)
    assert_allclose(got, sp_f(x64, axis=1), rtol=1e-15)
    assert_allclose(got, ref_f(x64, axis=1), rtol=1e-15)
    if dtype is np.int64:
        assert sp_f(x, axis=1).dtype == np.float64


def test_softmax_hand_value():
    got = fl.softmax(np.array([2.0, 1.0, 0.1]))
    assert_allclose(got, [0.65900114, 0.24243297, 0.09856589], rtol=1e-7)
    e = [math.exp(2.0), math.exp(1.0), math.exp(0.1)]
    assert_allclose(got, [v / sum(e) for v in e], rtol=1e-15)
    assert_allclose(fl.softmax(np.array([2.0, 1.0, 0.1], dtype=np.float32)),
                    [0.65900114, 0.24243297, 0.09856589], rtol=1e-6)


def test_log_softmax_hand_values():
    assert_allclose(fl.log_softmax([1000.0, 0.0]), [0.0, -1000.0], rtol=1e-15, atol=0)
    lse = math.log(math.e + math.e**2)
    assert_allclose(fl.log_softmax([1.0, 2.0]), [1 - lse, 2 - lse], rtol=1e-15)


@pytest.mark.parametrize("fl_f,sp_f,ref_f", SOFTMAX_FUNCS)
@pytest.mark.parametrize("x", [3.0, np.float64(-2.5)])
def test_softmax_scalar_input_shape_as_scipy(fl_f, sp_f, ref_f, x):
    got = fl_f(x)
    want = sp_f(x)
    assert np.shape(got) == np.shape(want) == ()
    assert float(got) == float(want)


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", LAYOUTS[1:])
@pytest.mark.parametrize("shape,axis", [((6, 7), -1), ((6, 7), 0), ((6, 7), None),
                                        ((3, 4, 5), 1), ((3, 4, 5), (0, 2)), ((3, 4, 5), -1)])
def test_non_contiguous_inputs(rng, name, shape, axis):
    x = _data(rng, shape)
    v = layout(x, name)
    assert_allclose(fl.logsumexp(v, axis=axis), sp.logsumexp(x, axis=axis), rtol=1e-13)
    for fl_f, sp_f in ((fl.softmax, sp.softmax), (fl.log_softmax, sp.log_softmax)):
        got = fl_f(v, axis=axis)
        assert got.shape == shape
        assert_allclose(got, sp_f(x, axis=axis), rtol=1e-13, atol=1e-300)
    np.testing.assert_array_equal(v, x)  # inputs untouched


def test_non_contiguous_b(rng):
    a = _data(rng, (5, 6))
    b = rng.normal(size=(5, 6))
    for name, bv in non_c_layouts(b):
        res, sgn = fl.logsumexp(layout(a, name), axis=1, b=bv, return_sign=True)
        want_res, want_sgn = sp.logsumexp(a, axis=1, b=b, return_sign=True)
        assert_allclose(res, want_res, rtol=1e-13)
        np.testing.assert_array_equal(sgn, want_sgn)


def test_read_only_input(rng):
    x = _data(rng, (4, 9))
    x.flags.writeable = False
    assert_allclose(fl.softmax(x, axis=1), sp.softmax(x, axis=1), rtol=1e-13)
    assert_allclose(fl.logsumexp(x, axis=1), sp.logsumexp(x, axis=1), rtol=1e-13)


def test_byte_swapped_input(rng):
    x = _data(rng, (4, 9))
    xs = x.astype(x.dtype.newbyteorder(">"))
    assert_allclose(fl.log_softmax(xs, axis=1), sp.log_softmax(x, axis=1), rtol=1e-13)
    assert_allclose(fl.logsumexp(xs, axis=0), sp.logsumexp(x, axis=0), rtol=1e-13)


# --------------------------------------------------------------------------- empty


@pytest.mark.parametrize(
    "shape,axis,want_shape",
    [((0, 3), 0, (3,)), ((0, 3), 1, (0,)), ((2, 0), 1, (2,)), ((2, 0, 4), (1, 2), (2,)),
     ((0,), 0, ())],
)
def test_logsumexp_empty(shape, axis, want_shape):
    a = np.zeros(shape)
    got = fl.logsumexp(a, axis=axis)
    assert np.shape(got) == want_shape
    assert np.all(np.asarray(got) == -np.inf)  # an empty sum is 0, its log -inf
    kd = fl.logsumexp(a, axis=axis, keepdims=True)
    assert np.shape(kd) == np.shape(np.sum(a, axis=axis, keepdims=True))
    # (scipy 1.17 raises IndexError for an empty tuple axis; 1.13 ValueError for any)
    if SCIPY_1_16 and not isinstance(axis, tuple):
        assert_allclose(got, sp.logsumexp(a, axis=axis))
        assert np.shape(kd) == np.shape(sp.logsumexp(a, axis=axis, keepdims=True))
    res, sgn = fl.logsumexp(a, axis=axis, return_sign=True)
    assert np.all(np.asarray(sgn) == 0.0)


def test_logsumexp_empty_all_axes_and_dtype():
    assert float(fl.logsumexp(np.zeros((0, 3)))) == -np.inf
    got = fl.logsumexp(np.zeros((0, 3), dtype=np.float32), axis=0)
    assert got.dtype == np.float32 and np.all(got == -np.inf)
    res, sgn = fl.logsumexp(np.zeros((0, 3)), axis=0, b=np.zeros((0, 3)), return_sign=True)
    assert res.shape == (3,) and np.all(res == -np.inf) and np.all(sgn == 0)


@pytest.mark.parametrize("fl_f,sp_f,ref_f", SOFTMAX_FUNCS)
@pytest.mark.parametrize("shape,axis", [((0, 3), 1), ((0, 3), 0), ((0, 3), None), ((2, 0), 1)])
def test_softmax_empty(fl_f, sp_f, ref_f, shape, axis):
    got = fl_f(np.zeros(shape, dtype=np.float32), axis=axis)
    assert got.shape == shape and got.dtype == np.float32


# --------------------------------------------------------------------------- stability


@pytest.mark.parametrize("big", [1e4, 1e30, 1e300])
def test_stability_huge_rows_float64(big):
    x = np.array([[big, big, big], [big, -big, 0.0], [-big, -big, -big], [big, big - 1, big - 2]])
    lse = fl.logsumexp(x, axis=1)
    assert np.all(np.isfinite(lse))
    assert_allclose(lse[0], big + math.log(3), rtol=1e-15)
    assert lse[1] == big
    assert_allclose(lse[2], -big + math.log(3), rtol=1e-15)
    assert_allclose(lse, ref.logsumexp(x, axis=1), rtol=1e-15)
    p = fl.softmax(x, axis=1)
    assert_allclose(p[0], [1 / 3] * 3, rtol=1e-15)
    assert_allclose(p[1], [1.0, 0.0, 0.0], rtol=0, atol=0)
    assert_allclose(p[2], [1 / 3] * 3, rtol=1e-15)
    assert_allclose(p, sp.softmax(x, axis=1), rtol=1e-14)
    lp = fl.log_softmax(x, axis=1)
    assert_allclose(lp[1], [0.0, -2 * big, -big], rtol=1e-15)
    assert_allclose(lp, sp.log_softmax(x, axis=1), rtol=1e-13)
    assert_allclose(lp, ref.log_softmax(x, axis=1), rtol=1e-13)
    if big == 1e4:  # the offset cancels: as the row [0, -1, -2]
        e = [1.0, math.exp(-1), math.exp(-2)]
        assert_allclose(p[3], [v / sum(e) for v in e], rtol=1e-12)


def test_stability_1e4_rows_float32(rng):
    x = (1e4 + rng.normal(0, 3, size=(4, 100))).astype(np.float32)
    assert_allclose(fl.logsumexp(x, axis=1), ref.logsumexp(x, axis=1), rtol=1e-7)
    assert_allclose(fl.softmax(x, axis=1), ref.softmax(x, axis=1), rtol=2e-6, atol=1e-9)
    # log_softmax keeps its digits: (x - max) is exact in float32 here
    assert_allclose(fl.log_softmax(x, axis=1), ref.log_softmax(x, axis=1), rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(fl.softmax(np.array([[3e38, -3e38]], np.float32), axis=1)))


def test_neg_inf_masks_and_all_neg_inf_row():
    ninf = -np.inf
    x = np.array([[ninf, 1.0, 2.0], [ninf, ninf, ninf], [0.0, ninf, 0.0]])
    with np.errstate(invalid="ignore"):
        p = fl.softmax(x, axis=1)
        lp = fl.log_softmax(x, axis=1)
        want_p = sp.softmax(x, axis=1)
        want_lp = sp.log_softmax(x, axis=1)
    lse = fl.logsumexp(x, axis=1)
    e1, e2 = math.e, math.e**2
    assert_allclose(p[0], [0.0, e1 / (e1 + e2), e2 / (e1 + e2)], rtol=1e-15)
    assert p[0, 0] == 0.0 and lp[0, 0] == -np.inf
    assert_allclose(lp[0, 1:], np.log([e1 / (e1 + e2), e2 / (e1 + e2)]), rtol=1e-15)
    assert lse[1] == -np.inf
    assert np.all(np.isnan(p[1]))  # as scipy: 0/0
    assert_allclose(p[2], [0.5, 0.0, 0.5], rtol=1e-15)
    assert_allclose(lse, [math.log(e1 + e2), -np.inf, math.log(2.0)], rtol=1e-15)
    assert_allclose(p, want_p, rtol=1e-15, equal_nan=True)
    assert_allclose(lp, want_lp, rtol=1e-15, equal_nan=True)
    assert_allclose(fl.logsumexp(x, axis=1), sp.logsumexp(x, axis=1), rtol=1e-15)


@pytest.mark.parametrize(
    "dtype,m", [(np.float64, 0.0), (np.float64, -710.0), (np.float32, 0.0), (np.float32, -90.0)]
)
@pytest.mark.parametrize("masked", ["leading_block", "all_but_two", "all_but_one_short"])
@pytest.mark.parametrize("axis", [1, 0])
def test_masked_entries_with_very_negative_maximum(dtype, m, masked, axis):
    # -inf entries have probability exactly 0 whatever the row maximum, also when the
    # maximum is so negative that exp(-max) overflows (m < -709 in float64, < -88 in float32)
    # and when whole blocks of the row are masked.
    V = 3 if masked == "all_but_one_short" else 4096
    x = np.full((2, V), NINF, dtype=dtype)
    if masked == "leading_block":
        x[:, 2048:] = m - np.arange(V - 2048) % 5
    elif masked == "all_but_two":
        x[:, 3000], x[:, 3001] = m, m - 1
    else:
        x[:, 0] = m
    xa = x if axis == 1 else x.T
    p = fl.softmax(xa, axis=axis)
    lp = fl.log_softmax(xa, axis=axis)
    lse = fl.logsumexp(xa, axis=axis)
    want_p = ref.softmax(xa, axis=axis)
    assert not np.any(np.isnan(p))
    assert np.all(p[np.isneginf(xa)] == 0)
    assert_allclose(p, want_p, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    assert_allclose(lp, ref.log_softmax(xa, axis=axis), rtol=1e-6, atol=0)
    assert_allclose(lse, ref.logsumexp(xa, axis=axis), rtol=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_and_inf_affect_only_their_row(rng, bad, dtype):
    x = rng.normal(size=(5, 8)).astype(dtype)
    x[2, 3] = bad
    clean = np.delete(x, 2, axis=0)
    lse = fl.logsumexp(x, axis=1)
    p = fl.softmax(x, axis=1)
    lp = fl.log_softmax(x, axis=1)
    if bad == np.inf:
        assert lse[2] == np.inf
    else:
        assert np.isnan(lse[2])
    assert np.all(np.isnan(p[2]))  # as scipy (inf/inf or nan)
    with np.errstate(invalid="ignore"):
        assert_allclose(p[2], sp.softmax(x[2].astype(np.float64)), equal_nan=True)
        assert_allclose(lp[2], sp.log_softmax(x[2].astype(np.float64)), equal_nan=True)
    rtol = 1e-14 if dtype == np.float64 else 2e-6
    assert_allclose(np.delete(lse, 2), ref.logsumexp(clean, axis=1), rtol=rtol)
    assert_allclose(np.delete(p, 2, axis=0), ref.softmax(clean, axis=1), rtol=rtol, atol=1e-30)
    assert_allclose(np.delete(lp, 2, axis=0), ref.log_softmax(clean, axis=1), rtol=rtol,
                    atol=1e-6 if dtype == np.float32 else 0)


# --------------------------------------------------------------------------- hypothesis


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
        elements=st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
    ),
    st.integers(-1, 2),
)
def test_hypothesis_finite_inputs_match_scipy(x, axis_seed):
    axis = None if axis_seed < 0 else axis_seed % x.ndim
    got = fl.logsumexp(x, axis=axis)
    assert np.all(np.isfinite(got))
    assert_allclose(got, sp.logsumexp(x, axis=axis), rtol=1e-13, atol=1e-300)
    p = fl.softmax(x, axis=axis)
    assert np.all(np.isfinite(p))
    assert_allclose(p, sp.softmax(x, axis=axis), rtol=1e-12, atol=1e-300)
    assert_allclose(np.sum(p, axis=axis), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("f", [fl.logsumexp, fl.softmax, fl.log_softmax])
def test_extended_precision_complex_input_is_type_error(f):
    # complex64 and complex128 are computed as scipy does (tests/test_fidelity.py); the
    # extended-precision complex type is refused, as float128 is
    with pytest.raises(TypeError, match="complex64, complex128"):
        f(np.array([1.0 + 1j, 2.0], dtype=np.clongdouble))


@pytest.mark.parametrize("f", [fl.logsumexp, fl.softmax, fl.log_softmax])
def test_object_and_string_input_is_type_error(f):
    with pytest.raises(TypeError):
        f(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        f(np.array([1.0, None], dtype=object))


@pytest.mark.parametrize("f", [fl.logsumexp, fl.softmax, fl.log_softmax])
@pytest.mark.parametrize("axis", [2, -3, (0, 2), (5,)])
def test_axis_out_of_range(f, axis):
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        f(np.ones((2, 3)), axis=axis)
    with pytest.raises(ValueError):  # AxisError is a ValueError, as in NumPy
        f(np.ones((2, 3)), axis=axis)


@pytest.mark.parametrize("f", [fl.logsumexp, fl.softmax, fl.log_softmax])
@pytest.mark.parametrize("axis", [(0, 0), (1, -1), (0, 1, 0)])
def test_repeated_axis(f, axis):
    with pytest.raises(ValueError, match="repeat"):
        f(np.ones((2, 3)), axis=axis)


@pytest.mark.parametrize("f", [fl.logsumexp, fl.softmax, fl.log_softmax])
def test_non_integer_axis(f):
    with pytest.raises(TypeError, match="axis"):
        f(np.ones((2, 3)), axis=1.0)


def test_logsumexp_b_not_broadcastable():
    with pytest.raises(ValueError):
        fl.logsumexp(np.ones((2, 3)), axis=1, b=np.ones(4))
    with pytest.raises(ValueError, match="b has shape"):
        fl.logsumexp(np.ones((2, 3)), axis=1, b=np.ones(4))
    with pytest.raises(TypeError, match="b"):
        fl.logsumexp(np.ones(3), b=np.array(["1", "1", "1"]))
    # a complex b makes the result complex, as scipy (tests/test_fidelity.py)
    assert_allclose(fl.logsumexp(np.ones(3), b=np.array([1j, 1, 1])),
                    sp.logsumexp(np.ones(3), b=np.array([1j, 1, 1])), rtol=1e-15)


# one combined sample over the option space, all against scipy
@pytest.mark.parametrize(
    "shape,axis,keepdims,with_b",
    list(itertools.product([(3, 4, 5)], [None, 0, -1, (0, 1)], [False, True], [False, True])),
)
def test_logsumexp_option_product(rng, shape, axis, keepdims, with_b):
    a = _data(rng, shape)
    b = rng.uniform(0.1, 2.0, size=shape) if with_b else None
    got = fl.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    want = sp.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w)
        assert_allclose(g, w, rtol=1e-13)
