"""binary_cross_entropy_with_logits, binary_cross_entropy, sigmoid_focal_loss and hinge_loss:
values and gradients against fastloss.reference (float64), central finite differences,
hand-computed values, exact formulas (np.logaddexp, scipy.special) and PyTorch; stability at
extreme logits, broadcasting, memory layouts, grad_out, 16-bit dtypes, NaN policy, bad input,
threads."""

from __future__ import annotations

import math
from functools import partial

import _contracts as contract
import ml_dtypes
import numpy as np
import pytest
from conftest import LAYOUTS, REDUCTIONS, read_only
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import fastloss as fl
from fastloss import reference as ref

# These tests broadcast target against input on purpose; the UserWarning that gives (as
# PyTorch's) is tested in test_fidelity.py.
pytestmark = pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")

assert_allclose = np.testing.assert_allclose
BCEL, BCE, FOCAL, HINGE = ("binary_cross_entropy_with_logits", "binary_cross_entropy",
                           "sigmoid_focal_loss", "hinge_loss")
FUNCS = (BCEL, BCE, FOCAL, HINGE)
WEIGHTED = (BCEL, BCE)  # the functions with an elementwise weight

# (name, scalar keyword options): every loss of the family with the options worth checking
CASES = [
    (BCEL, {}),
    (BCE, {}),
    (FOCAL, {}),
    (FOCAL, {"alpha": -1.0}),
    (FOCAL, {"gamma": 0.0}),
    (FOCAL, {"gamma": 1.0}),
    (FOCAL, {"alpha": 0.6, "gamma": 0.5}),
    (FOCAL, {"alpha": 1.0, "gamma": 3.0}),
    (HINGE, {}),
    (HINGE, {"margin": 0.5}),
    (HINGE, {"squared": True}),
    (HINGE, {"margin": 2.0, "squared": True}),
]
SHORT = {BCEL: "bcel", BCE: "bce", FOCAL: "focal", HINGE: "hinge"}
CASE_IDS = [f"{SHORT[n]}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
            for n, kw in CASES]

# tolerances against the float64 reference evaluated on the same (rounded) input values.
# atol is relative to max(1, |largest logit|): (1 - y) x + softplus(-x) is a difference of
# terms of the size of x, so its absolute error is a few ulp of x (see the dedicated
# relative-accuracy tests below).
TOL = {
    np.float64: dict(rtol=1e-12, grad_rtol=1e-12, atol=1e-15),
    np.float32: dict(rtol=1e-6, grad_rtol=2e-6, atol=5e-7),
}


# --------------------------------------------------------------------------- helpers


def data(rng, fn, xshape, yshape=None, dtype=np.float64, soft=True):
    """Random first argument and target of ``fn``: logits (BCE with logits, focal), probabilities
    in (0, 1) (BCE), scores (hinge); targets soft and hard in [0, 1], or labels in {-1, +1}."""
    yshape = xshape if yshape is None else yshape
    if fn == BCE:
        x = rng.uniform(0.02, 0.98, size=xshape)
    else:
        x = rng.normal(0.0, 3.0 if fn != HINGE else 2.0, size=xshape)
    if fn == HINGE:
        y = rng.choice([-1.0, 1.0], size=yshape)
    else:
        y = rng.integers(0, 2, size=yshape).astype(np.float64)
        if soft:
            soft_mask = rng.random(yshape) < 0.3
            y = np.where(soft_mask, rng.uniform(0, 1, size=yshape), y)
    return x.astype(dtype), y.astype(dtype)


def grid_data(rng, fn, xshape, yshape=None):
    """float64 data for central differences, away from every kink: for the hinge, scores are
    an integer plus a fraction in [0.25, 0.35], so ``margin - y f`` (margins 0.5, 1, 2) stays
    at least 0.15 from 0; the other losses are smooth on the data of :func:`data`."""
    x, y = data(rng, fn, xshape, yshape)
    if fn == HINGE:
        x = rng.integers(-3, 4, size=xshape) + rng.uniform(0.25, 0.35, size=xshape)
    if fn == BCE:
        x = rng.uniform(0.05, 0.95, size=xshape)
    return x, y


def check_vs_reference(fn, x, y, *, reduction="mean", rtol, grad_rtol, atol, f64=None, **kw):
    """fastloss (loss-only and fused paths) against the float64 reference on ``f64`` (the
    values fastloss computes on; default: the arguments themselves as float64)."""
    loss, grad, want_loss, want_grad, (rx, ry, rkw) = contract.reference_call(
        fn, x, y, reduction=reduction, f64=f64, kw=kw)
    xa = np.asarray(x)
    xscale = max(1.0, float(np.max(np.abs(np.asarray(rx, np.float64))))) if xa.size else 1.0
    assert_allclose(loss, want_loss, rtol=rtol, atol=atol * xscale)
    gscale = float(np.max(np.abs(want_grad))) if want_grad.size else 1.0
    # atol: the gradient is a difference of terms as large as weight * max(1, pos_weight)
    # (e.g. sigmoid(x) - 1 for y = 1), times 1/n for "mean", times the number of terms a
    # broadcast input sums over; its absolute error is a few ulp of that, not of the result
    n_full = math.prod(np.broadcast_shapes(xa.shape, np.shape(ry)))
    terms = n_full / max(xa.size, 1) / (n_full if reduction == "mean" and n_full else 1)
    for k in ("weight", "pos_weight"):
        if rkw.get(k) is not None and np.size(rkw[k]):
            terms *= max(1.0, float(np.max(np.abs(rkw[k]))))
    assert_allclose(grad.astype(np.float64), want_grad, rtol=grad_rtol,
                    atol=grad_rtol * max(gscale, terms))
    return loss, grad


# --------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(rng, fn, kw, dtype, reduction):
    x, y = data(rng, fn, (7, 13), dtype=dtype)
    check_vs_reference(fn, x, y, reduction=reduction, **TOL[dtype], **kw)


@pytest.mark.parametrize("n", [1, 3, 8, 17, 33, 8193])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_isa_and_tail_length(isa, rng, n, dtype):
    # vector tails (n not a multiple of the SIMD width) and chunk boundaries (8192)
    pw = rng.uniform(0.5, 3.0, size=n).astype(dtype)
    w = rng.uniform(0.0, 2.0, size=n).astype(dtype)
    for fn, kw in CASES + [(BCEL, {"weight": w, "pos_weight": pw}), (BCE, {"weight": w})]:
        x, y = data(rng, fn, (n,), dtype=dtype)
        for reduction in ("sum", "none"):
            check_vs_reference(fn, x, y, reduction=reduction, **TOL[dtype], **kw)


@pytest.mark.parametrize("fn", WEIGHTED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wshape", [(4, 6), (6,), (4, 1), ()], ids=str)
def test_weight(rng, fn, dtype, reduction, wshape):
    x, y = data(rng, fn, (4, 6), dtype=dtype)
    contract.check_weight(check_vs_reference, rng, fn, x, y, wshape, reduction, TOL[dtype])


PW_SHAPES = [(6,), (1,), (), (4, 6), (4, 1)]


@pytest.mark.parametrize("pwshape", PW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pos_weight(rng, pwshape, dtype, reduction):
    x, y = data(rng, BCEL, (4, 6), dtype=dtype)
    pw = rng.uniform(0.2, 5.0, size=pwshape).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=(4, 1)).astype(dtype)
    check_vs_reference(BCEL, x, y, pos_weight=pw, weight=w, reduction=reduction, **TOL[dtype])
    check_vs_reference(BCEL, x, y, pos_weight=pw, reduction=reduction, **TOL[dtype])


def test_pos_weight_formula(rng):
    # independent: -(p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))) with scipy's log_expit;
    # gradient (1 + (p - 1) y) sigmoid(x) - p y
    x, y = data(rng, BCEL, (5, 3))
    pw = np.array([0.5, 1.0, 4.0])
    loss, grad = fl.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none",
                                                      return_grad=True)
    want = -(pw * y * special.log_expit(x) + (1 - y) * special.log_expit(-x))
    assert_allclose(loss, want, rtol=1e-12, atol=1e-15)
    assert_allclose(grad, (1 + (pw - 1) * y) * special.expit(x) - pw * y, rtol=1e-13,
                    atol=1e-16)
    # pos_weight = 1 is the plain loss
    a = fl.binary_cross_entropy_with_logits(x, y, pos_weight=np.ones(3), reduction="none",
                                            return_grad=True)
    b = fl.binary_cross_entropy_with_logits(x, y, reduction="none", return_grad=True)
    # (to the last bit or two: the weighted path's multiply-adds may be contracted
    # differently, e.g. by Clang)
    assert_allclose(a[0], b[0], rtol=5e-16, atol=0)
    assert_allclose(a[1], b[1], rtol=5e-16, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("pos_weight", [None, 2.0])
def test_infinite_logits(dtype, pos_weight):
    # the limits: x = +inf costs (1 - y) * inf, x = -inf costs y * inf (0 * inf = NaN, as the
    # reference). Without pos_weight the loss was inf - inf = NaN for every label (found when
    # the property tests ran against the sanitizer build).
    x = np.array([np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf], dtype=dtype)
    y = np.array([0.0, 1.0, 0.6, 0.0, 1.0, 0.6], dtype=dtype)
    kw = {} if pos_weight is None else {"pos_weight": np.full(6, pos_weight)}
    loss = fl.binary_cross_entropy_with_logits(x, y, reduction="none", **kw)
    np.testing.assert_array_equal(loss, [np.inf, np.nan, np.inf, np.nan, np.inf, np.inf])
    np.testing.assert_array_equal(
        loss, ref.binary_cross_entropy_with_logits(x, y, reduction="none", **kw).astype(dtype))


# --------------------------------------------------------------------------- broadcasting

@pytest.mark.parametrize("xshape,yshape", contract.BROADCASTS, ids=str)
@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_broadcasting(rng, xshape, yshape, fn, kw, dtype, reduction):
    x, y = data(rng, fn, xshape, yshape, dtype=dtype)
    contract.check_broadcasting(check_vs_reference, fn, x, y, reduction, TOL[dtype], 1e-5, **kw)


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=4, min_dims=0, max_dims=3,
                                                max_side=4),
       fn=st.sampled_from(FUNCS), reduction=st.sampled_from(REDUCTIONS),
       seed=st.integers(0, 2**32 - 1))
def test_hypothesis_broadcast_shapes(shapes, fn, reduction, seed):
    rng = np.random.default_rng(seed)
    (xs, ys, ws, ps), _ = shapes
    x, y = data(rng, fn, xs, ys)
    kw = {}
    if fn in WEIGHTED:
        kw["weight"] = rng.uniform(0.0, 2.0, size=ws)
    if fn == BCEL:
        kw["pos_weight"] = rng.uniform(0.5, 3.0, size=ps)
    check_vs_reference(fn, x, y, reduction=reduction, **TOL[np.float64], **kw)


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_non_contiguous_inputs(rng, name, fn, dtype):
    x, y = data(rng, fn, (6, 5), dtype=dtype)
    kw = {}
    if fn in WEIGHTED:
        kw["weight"] = rng.uniform(0.5, 2.0, size=(6, 5)).astype(dtype)
    if fn == BCEL:
        kw["pos_weight"] = rng.uniform(0.5, 2.0, size=(6, 5)).astype(dtype)
    contract.check_layout(check_vs_reference, fn, x, y, name, TOL.get(dtype), **kw)


@pytest.mark.parametrize("fn", FUNCS)
def test_read_only_inputs(rng, fn):
    x, y = data(rng, fn, (4, 5))
    kw = {}
    if fn in WEIGHTED:
        kw["weight"] = rng.uniform(0.5, 2.0, size=5)
    if fn == BCEL:
        kw["pos_weight"] = rng.uniform(0.5, 2.0, size=5)
    contract.check_read_only(fn, x, y, **kw)


def test_array_likes_and_integer_inputs():
    # lists and integers are computed as float64; bool and integer targets are welcome
    loss, grad = fl.binary_cross_entropy_with_logits([[0, 2]], np.array([True, False]),
                                                      reduction="none", return_grad=True)
    assert loss.dtype == np.float64 and grad.dtype == np.float64
    assert_allclose(loss, [[math.log(2), math.log1p(math.exp(2))]], rtol=1e-15)
    assert_allclose(grad, [[-0.5, special.expit(2.0)]], rtol=1e-15)
    # max(0, 1 - 0) and max(0, 1 + 3) (label 0 is -1)
    assert fl.hinge_loss(np.array([0, 3], np.int64), np.array([1, 0], np.uint8)) == 2.5
    assert fl.binary_cross_entropy([1, 0], [1, 0]) == 0.0


# --------------------------------------------------------------------------- grad_out


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_out_fresh_and_in_place(rng, fn, kw, dtype, reduction):
    x, y = data(rng, fn, (5, 7), dtype=dtype)
    contract.check_grad_out_fresh_and_in_place(fn, x, y, reduction, **kw)


@pytest.mark.parametrize("fn", FUNCS)
def test_grad_out_special_buffers(rng, fn):
    contract.check_grad_out_special_buffers(fn, lambda xs, ys=None: data(rng, fn, xs, ys))


def test_grad_out_is_pos_weight_or_weight(rng):
    x, y = data(rng, BCEL, (4, 6))
    w, pw = rng.uniform(0.5, 2, size=(4, 6)), rng.uniform(0.5, 2, size=(4, 6))
    want_loss, want_grad = ref.binary_cross_entropy_with_logits(
        x, y, weight=w, pos_weight=pw, reduction="sum", return_grad=True)
    for which in ("weight", "pos_weight"):
        kw = dict(weight=w.copy(), pos_weight=pw.copy())
        loss, grad = fl.binary_cross_entropy_with_logits(
            x, y, reduction="sum", return_grad=True, grad_out=kw[which], **kw)
        assert grad is kw[which]
        assert_allclose(loss, want_loss, rtol=1e-12)
        assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("fn", FUNCS)
def test_grad_out_errors(rng, fn):
    contract.check_grad_out_errors(fn, *data(rng, fn, (3, 4)))


BAD_CALLS = {
    BCEL: [dict(target=np.zeros(5)), dict(pos_weight=np.ones(5)), dict(reduction="avg")],
    # (probabilities outside [0, 1] likewise: see test_domain_error_in_place_keeps_the_input)
    BCE: [dict(target=np.zeros(5)), dict(weight=np.ones(5))],
    FOCAL: [dict(target=np.zeros(5)), dict(gamma=-1.0), dict(alpha=2.0)],
    # (hinge labels are checked in the kernel pass: on a label error grad_out may have been
    # written, as documented; see test_hinge_label_error_leaves_inputs_alone)
    HINGE: [dict(target=np.zeros(5)), dict(reduction="x"), dict(margin="1")],
}


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("in_place", [False, True])
def test_nothing_written_to_grad_out_on_error(rng, fn, in_place):
    for bad in BAD_CALLS[fn]:
        x, y = data(rng, fn, (3, 4))
        contract.check_nothing_written_on_error(fn, x, y, bad, in_place)


@pytest.mark.parametrize("fn", [BCE, HINGE])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_domain_error_in_place_keeps_the_input(rng, fn, dtype):
    # Out-of-domain values are found in the kernel's pass; in place, a write-free pass runs
    # first, so the input survives the error. A separate grad_out may be partly written.
    f = getattr(fl, fn)
    x, y = data(rng, fn, (64, 33))
    x, y = x.astype(dtype), y.astype(dtype)
    if fn == BCE:
        x[40, 7] = 1.5
    else:
        y[40, 7] = 3.0
    x0 = x.copy()
    with pytest.raises(ValueError, match="probs" if fn == BCE else "target"):
        f(x, y, return_grad=True, grad_out=x)
    np.testing.assert_array_equal(x, x0)
    go = np.zeros_like(x)
    with pytest.raises(ValueError, match="probs" if fn == BCE else "target"):
        f(x, y, return_grad=True, grad_out=go)
    np.testing.assert_array_equal(x, x0)


def test_hinge_label_error_leaves_inputs_alone(rng):
    x = rng.normal(size=(3, 4))
    y = np.ones((3, 4))
    y[2, 3] = 2.0
    x0, y0 = x.copy(), y.copy()
    with pytest.raises(ValueError, match="target"):
        fl.hinge_loss(x, y, return_grad=True, grad_out=np.zeros((3, 4)))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


# --------------------------------------------------------------------------- 16-bit

@pytest.mark.parametrize("dtype,grad_rtol", contract.LOW)
@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_16_bit_inputs(rng, dtype, grad_rtol, fn, kw, reduction):
    x, y = data(rng, fn, (6, 10), dtype=dtype)
    y = y.astype(np.float32)
    kw = dict(kw)
    if fn in WEIGHTED:
        kw["weight"] = rng.uniform(0.5, 2.0, size=10).astype(np.float32)
    if fn == BCEL:
        kw["pos_weight"] = rng.uniform(0.5, 2.0, size=10).astype(np.float32)
    contract.check_16_bit(check_vs_reference, fn, x, y, reduction,
                          dict(rtol=2e-6, atol=5e-7, grad_rtol=grad_rtol), **kw)


# --------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("xshape,yshape", [((3, 4), (3, 4)), ((3, 1), (3, 4)), ((4,), (2, 4))],
                         ids=str)
def test_gradient_finite_differences(rng, fn, kw, reduction, xshape, yshape):
    x, y = grid_data(rng, fn, xshape, yshape)
    kw = dict(kw)
    full = np.broadcast_shapes(xshape, yshape)
    if fn in WEIGHTED:
        kw["weight"] = rng.uniform(0.5, 2.0, size=full)
    if fn == BCEL:
        kw["pos_weight"] = rng.uniform(0.5, 3.0, size=full[-1:])
    contract.check_finite_differences(fn, x, y, reduction, **kw)


# --------------------------------------------------------------------------- PyTorch


def torchvision_focal(alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss, written with torch ops."""
    torch = contract.torch_or_skip()
    F = torch.nn.functional

    def loss_fn(x, y, reduction):
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce * ((1 - p_t) ** gamma)
        if alpha >= 0:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
        return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]

    return loss_fn


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("xshape,yshape", [((6, 7), (6, 7)), ((6, 7), (7,)), ((6, 1), (6, 7)),
                                           ((7,), (3, 6, 7))], ids=str)
@pytest.mark.parametrize("wshape,pwshape", [(None, None), ((7,), None), (None, (7,)),
                                            ((6, 1), (7,)), ((6, 7), (1,))], ids=str)
def test_bce_with_logits_matches_torch(rng, reduction, xshape, yshape, wshape, pwshape):
    torch = contract.torch_or_skip()
    x, y = data(rng, BCEL, xshape, yshape)
    w = None if wshape is None else rng.uniform(0.0, 2.0, size=wshape)
    pw = None if pwshape is None else rng.uniform(0.2, 5.0, size=pwshape)
    T = (lambda a: None if a is None else torch.tensor(a))
    t_loss, t_grad = contract.torch_run(
        lambda X, Y, r: torch.nn.functional.binary_cross_entropy_with_logits(
            X, Y, weight=T(w), pos_weight=T(pw), reduction=r), x, y, reduction)
    loss, grad = fl.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw,
                                                      reduction=reduction, return_grad=True)
    assert np.shape(loss) == np.shape(t_loss)
    assert_allclose(loss, t_loss, rtol=1e-12, atol=1e-14)
    assert_allclose(grad, t_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("xshape,yshape", [((6, 7), (6, 7)), ((7,), (6, 7)), ((6, 7), (1, 7))],
                         ids=str)
@pytest.mark.parametrize("wshape", [None, (7,), (6, 1), (6, 7)], ids=str)
def test_bce_matches_torch(rng, reduction, xshape, yshape, wshape):
    torch = contract.torch_or_skip()
    x, y = data(rng, BCE, xshape, yshape)
    x.reshape(-1)[:2] = [0.0, 1.0]  # exact 0 and 1: the clamped logs and the 1e-12 floor
    w = None if wshape is None else rng.uniform(0.0, 2.0, size=wshape)
    T = (lambda a: None if a is None else torch.tensor(a))
    t_loss, t_grad = contract.torch_run(
        lambda X, Y, r: torch.nn.functional.binary_cross_entropy(X, Y, weight=T(w), reduction=r),
        x, y, reduction)
    loss, grad = fl.binary_cross_entropy(x, y, weight=w, reduction=reduction, return_grad=True)
    assert np.shape(loss) == np.shape(t_loss)
    assert_allclose(loss, t_loss, rtol=1e-13, atol=1e-15)
    # at q = 0 or 1 the gradient is divided by the 1e-12 floor, which torch holds as a float
    # (1e-12f = 1e-12 (1 - 4e-9)): equal there to 1e-8
    floor = np.broadcast_to(x * (1 - x) < 1e-12, t_grad.shape) if x.shape == t_grad.shape else \
        np.zeros(t_grad.shape, bool)
    assert_allclose(grad[floor], t_grad[floor], rtol=1e-8)
    if x.shape != t_grad.shape:  # summed over the broadcast axis, with the floored terms
        assert_allclose(grad, t_grad, rtol=1e-8)
    else:
        assert_allclose(grad[~floor], t_grad[~floor], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.6, 0.5), (0.25, 0.0),
                                         (1.0, 3.0), (0.0, 1.0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("xshape,yshape", [((6, 7), (6, 7)), ((6, 1), (6, 7))], ids=str)
def test_focal_matches_torchvision_formula(rng, alpha, gamma, reduction, soft, xshape, yshape):
    contract.torch_or_skip()
    x, y = data(rng, FOCAL, xshape, yshape, soft=soft)
    t_loss, t_grad = contract.torch_run(torchvision_focal(alpha, gamma), x, y, reduction)
    loss, grad = fl.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction,
                                       return_grad=True)
    assert np.shape(loss) == np.shape(t_loss)
    # 1 - p_t from a rounded probability (torchvision) costs a few digits at |x| ~ 10
    assert_allclose(loss, t_loss, rtol=1e-10, atol=1e-15)
    assert_allclose(grad, t_grad, rtol=1e-9, atol=1e-14)


def test_empty_matches_torch():
    torch = contract.torch_or_skip()
    F = torch.nn.functional
    x = np.zeros((0, 3))
    for reduction in REDUCTIONS:
        for fn, tf in ((BCEL, F.binary_cross_entropy_with_logits),
                       (BCE, F.binary_cross_entropy)):
            t = contract.torch_run(lambda X, Y, r: tf(X, Y, reduction=r), x, x, reduction)
            contract.check_empty_matches_torch(fn, x, reduction, t)


# --------------------------------------------------------------------------- hand values


def test_hand_values_cross_entropy_vs_squared_error():
    # a true label 1 predicted with probability 0.01: squared error 0.9801, cross-entropy
    # -log(0.01) = 4.605; the cross-entropy gradient is 50x larger (-100 vs -1.98)
    se, g_se = fl.mse_loss([0.01], [1.0], return_grad=True)
    ce, g_ce = fl.binary_cross_entropy([0.01], [1.0], return_grad=True)
    assert float(se) == pytest.approx(0.9801, rel=1e-14)
    assert float(ce) == pytest.approx(-math.log(0.01), rel=1e-15)
    assert round(float(ce), 3) == 4.605
    assert g_se[0] == pytest.approx(-1.98, rel=1e-14)
    assert g_ce[0] == pytest.approx(-1 / 0.01, rel=1e-13)  # -(1/q) for y = 1
    # the same from the logit of 0.01
    z = math.log(0.01 / 0.99)
    assert float(fl.binary_cross_entropy_with_logits([z], [1.0])) == pytest.approx(
        -math.log(0.01), rel=1e-14)


def test_hand_values_bce_with_logits():
    loss, grad = fl.binary_cross_entropy_with_logits([0.0, 2.0], [1.0, 0.0], reduction="none",
                                                      return_grad=True)
    assert_allclose(loss, [math.log(2), math.log1p(math.exp(2))], rtol=1e-15)
    assert_allclose(grad, [-0.5, 1 / (1 + math.exp(-2))], rtol=1e-15)
    assert float(fl.binary_cross_entropy_with_logits([0.0, 2.0], [1.0, 0.0])) == pytest.approx(
        (math.log(2) + math.log1p(math.exp(2))) / 2, rel=1e-15)
    assert round(float(fl.binary_cross_entropy_with_logits([0.0, 2.0], [1.0, 0.0])), 6) == \
        1.410038
    # pos_weight 3 at x = 0, y = 1: loss 3 log 2, gradient (1 + 2) / 2 - 3 = -1.5
    loss, grad = fl.binary_cross_entropy_with_logits([0.0], [1.0], pos_weight=[3.0],
                                                      reduction="sum", return_grad=True)
    assert float(loss) == pytest.approx(3 * math.log(2), rel=1e-15)
    assert grad[0] == -1.5
    # soft target 0.5 at x = 0: log 2, gradient 0
    loss, grad = fl.binary_cross_entropy_with_logits([0.0], [0.5], return_grad=True)
    assert float(loss) == pytest.approx(math.log(2), rel=1e-15) and grad[0] == 0.0


def test_hand_values_focal_and_hinge():
    assert float(fl.sigmoid_focal_loss([0.0], [1.0], reduction="sum")) == pytest.approx(
        0.25 * 0.25 * math.log(2), rel=1e-15)
    assert float(fl.sigmoid_focal_loss([0.0], [0.0], reduction="sum")) == pytest.approx(
        0.75 * 0.25 * math.log(2), rel=1e-15)
    # gradient at x = 0, y = 1: a_t ((p - y) q^2 + ce 2 q p (1 - p) (1 - 2y)) with p = q = 1/2
    _, g = fl.sigmoid_focal_loss([0.0], [1.0], reduction="sum", return_grad=True)
    assert g[0] == pytest.approx(0.25 * (-0.5 * 0.25 - math.log(2) * 2 * 0.5 * 0.25),
                                 rel=1e-15)
    assert float(fl.hinge_loss([0.5, 2.0, -1.0], [1, 1, 0])) == pytest.approx(0.5 / 3,
                                                                             rel=1e-15)
    assert float(fl.hinge_loss([0.5, 2.0, -1.0], [1, 1, -1])) == pytest.approx(0.5 / 3,
                                                                              rel=1e-15)
    loss, grad = fl.hinge_loss([0.5, 2.0, -1.0, 0.2], [1, 1, -1, -1], reduction="none",
                               return_grad=True)
    np.testing.assert_array_equal(loss, [0.5, 0.0, 0.0, 1.2])
    np.testing.assert_array_equal(grad, [-1.0, 0.0, 0.0, 1.0])
    loss, grad = fl.hinge_loss([0.5, 0.2], [1, 0], squared=True, margin=2.0, reduction="none",
                               return_grad=True)
    assert_allclose(loss, [1.5**2, 2.2**2], rtol=1e-15)
    assert_allclose(grad, [-3.0, 4.4], rtol=1e-15)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_hinge_subgradient_zero_at_kink(squared, dtype):
    # margin - y f == 0 exactly: loss 0 and (sub)gradient 0
    for margin, x, y in ((1.0, [1.0, -1.0], [1, -1]), (1.0, [1.0, -1.0], [1, 0]),
                         (0.5, [0.5, -0.5], [1, 0]), (0.0, [0.0, 0.0], [1, -1])):
        loss, grad = fl.hinge_loss(np.array(x, dtype), y, margin=margin, squared=squared,
                                   reduction="none", return_grad=True)
        np.testing.assert_array_equal(loss, 0.0)
        np.testing.assert_array_equal(grad.astype(np.float64), 0.0)


def test_hinge_zero_one_labels_equal_plus_minus_one(rng):
    x = rng.normal(size=(5, 6))
    y01 = rng.integers(0, 2, size=(5, 6))
    for kw in ({}, {"squared": True, "margin": 0.7}):
        for reduction in REDUCTIONS:
            a = fl.hinge_loss(x, y01, reduction=reduction, return_grad=True, **kw)
            b = fl.hinge_loss(x, 2.0 * y01 - 1, reduction=reduction, return_grad=True, **kw)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    # labels broadcast against the scores
    y6 = np.array([0, 1, 1, 0, 0, 1])
    a = fl.hinge_loss(x, y6, squared=True, reduction="sum", return_grad=True)
    b = fl.hinge_loss(x, np.where(y6 == 0, -1.0, 1.0), squared=True, reduction="sum",
                      return_grad=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # all labels 1: both conventions at once
    assert fl.hinge_loss([0.0, -1.0], [1, 1], reduction="sum") == 3.0


def test_focal_gamma_0_is_weighted_bce_with_logits(rng):
    x, y = data(rng, FOCAL, (6, 5))
    for reduction in REDUCTIONS:
        a = fl.sigmoid_focal_loss(x, y, alpha=-1.0, gamma=0.0, reduction=reduction,
                                  return_grad=True)
        b = fl.binary_cross_entropy_with_logits(x, y, reduction=reduction, return_grad=True)
        assert_allclose(a[0], b[0], rtol=1e-15, atol=1e-300)
        assert_allclose(a[1], b[1], rtol=1e-15, atol=1e-300)
        at = 0.3 * y + 0.7 * (1 - y)
        a = fl.sigmoid_focal_loss(x, y, alpha=0.3, gamma=0.0, reduction=reduction,
                                  return_grad=True)
        b = fl.binary_cross_entropy_with_logits(x, y, weight=at, reduction=reduction,
                                                return_grad=True)
        assert_allclose(a[0], b[0], rtol=1e-14, atol=1e-300)
        assert_allclose(a[1], b[1], rtol=1e-14, atol=1e-300)


def test_bce_with_logits_equals_bce_of_sigmoid(rng):
    x, y = data(rng, BCEL, (8, 5))
    x = np.clip(x, -6, 6)  # where rounding sigmoid(x) loses little
    w = rng.uniform(0.5, 2.0, size=5)
    for reduction in REDUCTIONS:
        a = fl.binary_cross_entropy_with_logits(x, y, weight=w, reduction=reduction)
        b = fl.binary_cross_entropy(special.expit(x), y, weight=w, reduction=reduction)
        assert_allclose(a, b, rtol=1e-12)
    # chain rule: d/dx = d/dq * q (1 - q)
    q = special.expit(x)
    _, gx = fl.binary_cross_entropy_with_logits(x, y, reduction="sum", return_grad=True)
    _, gq = fl.binary_cross_entropy(q, y, reduction="sum", return_grad=True)
    assert_allclose(gx, gq * q * (1 - q), rtol=1e-12, atol=1e-16)


# --------------------------------------------------------------------------- accuracy, stability


@pytest.mark.parametrize("dtype,big", [(np.float32, 1e4), (np.float32, 3e38),
                                       (np.float64, 1e300), (np.float64, 1.7e308),
                                       (np.float16, 6e4)])
def test_bce_with_logits_huge_logits(dtype, big):
    x = np.array([big, big, -big, -big], dtype)
    y = np.array([1.0, 0.0, 1.0, 0.0])
    loss, grad = fl.binary_cross_entropy_with_logits(x, y, reduction="none", return_grad=True)
    # loss 0 where the label agrees, |x| where it does not; gradient sigmoid(x) - y exactly
    want = np.array([0.0, big, big, 0.0], dtype).astype(loss.dtype)
    np.testing.assert_array_equal(loss, want)
    np.testing.assert_array_equal(grad.astype(np.float64), [0.0, 1.0, -1.0, 0.0])
    if big < 1e308:  # the sum of two huge losses is still finite
        assert np.isfinite(fl.binary_cross_entropy_with_logits(x, y))
    # pos_weight p: loss p |x| for a missed positive, gradient -p
    with np.errstate(over="ignore"):  # float32 3e38: the float64 sum 6e38 rounds to inf
        loss, grad = fl.binary_cross_entropy_with_logits(x[2:3], [1.0], pos_weight=[2.0],
                                                          reduction="sum", return_grad=True)
    if 2 * float(big) < float(np.finfo(loss.dtype).max):
        assert loss == loss.dtype.type(2 * float(np.asarray(big, dtype)))
    else:  # 2 |x| overflows the dtype: inf, not NaN
        assert np.isposinf(loss)
    assert grad[0] == -2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_relative_accuracy_hard_labels(dtype):
    # the stable form max(x, 0) - x y + log1p(exp(-|x|)) of the issue has no cancellation for
    # y in {0, 1}: the loss is softplus(x) (y = 0) or softplus(-x) (y = 1) to a few ulp, even
    # where it is tiny (np.logaddexp(0, x) is softplus computed that way in float64)
    lim = 80 if dtype == np.float32 else 700
    x = np.linspace(-lim, lim, 2 * lim + 1).astype(dtype)
    x64 = x.astype(np.float64)
    rtol = 8 * np.finfo(dtype).eps
    for y, want in ((0.0, np.logaddexp(0, x64)), (1.0, np.logaddexp(0, -x64))):
        loss = fl.binary_cross_entropy_with_logits(x, np.full_like(x, y), reduction="none")
        bad = ~np.isclose(loss, want, rtol=rtol, atol=0)
        i = np.flatnonzero(bad)[np.argsort(np.abs(x[bad]))][:3]  # the mildest failures
        assert not bad.any(), (f"y={y}: {bad.sum()} of {x.size} losses off by more than "
                               f"{rtol:.1e}, e.g. x={x[i]}: got {loss[i]}, want {want[i]}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_relative_accuracy_hard_labels(dtype):
    # exact focal loss for y in {0, 1}: a_t softplus(+-x) sigmoid(+-x)^gamma, from scipy
    lim = 20 if dtype == np.float32 else 200
    x = np.linspace(-lim, lim, 4 * lim + 1).astype(dtype)
    x64 = x.astype(np.float64)
    for y, alpha, gamma in ((0.0, 0.25, 2.0), (1.0, 0.25, 2.0), (0.0, 0.6, 0.5)):
        s = -1.0 if y else 1.0  # y = 0: softplus(x), q = sigmoid(x); y = 1: x -> -x
        at = alpha * y + (1 - alpha) * (1 - y)
        want = at * np.logaddexp(0, s * x64) * special.expit(s * x64) ** gamma
        loss = fl.sigmoid_focal_loss(x, np.full_like(x, y), alpha=alpha, gamma=gamma,
                                     reduction="none")
        assert np.all(np.isfinite(loss))
        bad = ~np.isclose(loss, want, rtol=2e-6 if dtype == np.float32 else 1e-13, atol=0)
        i = np.flatnonzero(bad)[np.argsort(np.abs(x[bad]))][:3]  # the mildest failures
        assert not bad.any(), (f"y={y}: {bad.sum()} of {x.size} losses off, e.g. "
                               f"x={x[i]}: got {loss[i]}, want {want[i]}")


@pytest.mark.parametrize("dtype,big", [(np.float32, 200.0), (np.float64, 1000.0),
                                       (np.float32, 1e30), (np.float64, 1e300)])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.6, 0.5), (0.25, 0.0)])
def test_focal_where_the_probability_underflows(dtype, big, alpha, gamma):
    # sigmoid(-big) underflows to 0: 1 - p_t is 0 or 1 and the loss is alpha_t * ce
    x = np.array([-big, big, big, -big], dtype)
    y = np.array([1.0, 0.0, 1.0, 0.0], dtype)
    loss, grad = fl.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none",
                                       return_grad=True)
    a1, a0 = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # missed positive: (1 - p_t) = 1, loss alpha * |x|, gradient -alpha; missed negative:
    # (1 - alpha) |x|, gradient 1 - alpha; correct answers: loss 0, gradient 0
    assert_allclose(loss, np.array([a1 * big, a0 * big, 0.0, 0.0], dtype), rtol=4e-7)
    assert_allclose(grad, [-a1, a0, 0.0, 0.0], rtol=4e-7, atol=0)
    if dtype == np.float32 and big == 200.0:
        assert loss[0] == pytest.approx(alpha * 200 if alpha >= 0 else 200, rel=1e-7)


@pytest.mark.parametrize("labels", ["hard", "soft"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_special_probability_leaves_its_neighbours_alone(isa, rng, labels, dtype):
    # A vector of normal probabilities in (0, 1) takes a shorter form than one with a 0, a 1, a
    # subnormal or a NaN in it (AVX2: the logs without their special cases); the two must give
    # the other elements of the vector the same bits, loss and gradient.
    n = 64
    q = rng.uniform(1e-6, 1 - 1e-6, n).astype(dtype)
    y = (rng.integers(0, 2, n) if labels == "hard" else rng.random(n)).astype(dtype)
    clean, clean_g = fl.binary_cross_entropy(q, y, reduction="none", return_grad=True)
    for value in (0.0, 1.0, 1e-40, np.nan):
        for at in (0, 5, 13, 31, 63):
            qs = q.copy()
            qs[at] = value
            loss, g = fl.binary_cross_entropy(qs, y, reduction="none", return_grad=True)
            keep = np.arange(n) != at
            np.testing.assert_array_equal(loss[keep], clean[keep], err_msg=f"{value} at {at}")
            np.testing.assert_array_equal(g[keep], clean_g[keep], err_msg=f"{value} at {at}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_bce_probabilities_exactly_0_and_1(dtype):
    q = np.array([0.0, 0.0, 1.0, 1.0, 0.0], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.3])
    loss, grad = fl.binary_cross_entropy(q, y, reduction="none", return_grad=True)
    # log clamped at -100: a certain wrong answer costs 100, not inf; soft 0.3 at q=0: 30
    assert_allclose(loss, [100.0, 0.0, 100.0, 0.0, 30.0], rtol=1e-6)
    # torch's backward: (q - y) / max(q (1 - q), 1e-12), rounded to the input dtype (float16:
    # beyond its range, so -inf / +inf)
    want = np.array([-1e12, 0.0, 1e12, 0.0, -0.3e12])
    with np.errstate(over="ignore"):
        want = want.astype(dtype).astype(np.float64)
    assert_allclose(grad.astype(np.float64), want, rtol=1e-6, atol=0)
    assert float(fl.binary_cross_entropy(q[:1], y[:1])) == pytest.approx(100.0, rel=1e-6)


def test_bce_log_clamp_at_minus_100():
    # log(1e-50) = -115 is clamped to -100; log(1e-40) = -92.1 is not
    loss = fl.binary_cross_entropy([1e-50, 1e-40], [1.0, 1.0], reduction="none")
    assert_allclose(loss, [100.0, -math.log(1e-40)], rtol=1e-14)


def test_bce_relative_accuracy_small_probabilities():
    # y = 0: the loss is -log(1 - q) = -log1p(-q), about q for small q; computing 1 - q in the
    # input precision first loses the low digits of q (a float32 q = 1e-4 keeps only ~3 of
    # them). The float64 reference on the same float32 values (1 - q exact in float64) is
    # -log1p(-q) to ~1e-9, so float32 must be within a few float32 ulp of it.
    dtype = np.float32
    q = np.geomspace(1e-7, 0.25, 60).astype(dtype)
    want = -np.log1p(-q.astype(np.float64))
    loss = fl.binary_cross_entropy(q, np.zeros_like(q), reduction="none")
    rtol = 8 * np.finfo(dtype).eps
    bad = ~np.isclose(loss, want, rtol=rtol, atol=0)
    i = np.flatnonzero(bad)[-3:]  # the mildest failures (largest q)
    assert not bad.any(), (f"{bad.sum()} of {q.size} losses off by more than {rtol:.1e}, e.g. "
                           f"q={q[i]}: got {loss[i]}, want {want[i]}")


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_bce_float32_few_ulp_over_the_whole_range(rng, labels):
    # Every float32 probability scale from subnormal to 1 - 2^-24, in vectors of hard labels
    # (one log per element) or soft ones (two logs): within 4 ulp of the float64 reference
    # evaluated on the same float32 values (NumPy's float64 log and log1p).
    q = np.concatenate([np.geomspace(1e-44, 0.5, 3000), 1 - np.geomspace(2**-24, 0.5, 3000),
                        [0.0, 1.0]]).astype(np.float32)
    y = (rng.integers(0, 2, q.size) if labels == "hard" else rng.random(q.size)).astype(np.float32)
    q64, y64 = q.astype(np.float64), y.astype(np.float64)
    with np.errstate(divide="ignore"):
        want = -(y64 * np.maximum(np.log(q64), -100) + (1 - y64) * np.maximum(np.log1p(-q64), -100))
    loss = fl.binary_cross_entropy(q, y, reduction="none")
    tol = 4 * np.finfo(np.float32).eps * np.abs(want) + np.finfo(np.float32).tiny
    bad = np.abs(loss - want) > tol
    assert not bad.any(), (f"{bad.sum()} losses off, e.g. q={q[bad][:3]}, y={y[bad][:3]}: "
                           f"got {loss[bad][:3]}, want {want[bad][:3]}")


# --------------------------------------------------------------------------- NaN policy


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_nan_affects_only_its_element(rng, fn, kw, dtype):
    x, y = data(rng, fn, (4, 5), dtype=dtype)
    contract.check_nan_affects_only_its_element(fn, x, y, **kw)


@pytest.mark.parametrize("fn", [BCEL, BCE, FOCAL])
def test_nan_target_affects_only_its_element(rng, fn):
    f = getattr(fl, fn)
    x, y = data(rng, fn, (3, 4))
    clean = f(x, y, reduction="none", return_grad=True)
    y[1, 1] = np.nan
    loss, grad = f(x, y, reduction="none", return_grad=True)
    mask = np.zeros((3, 4), bool)
    mask[1, 1] = True
    assert np.isnan(loss[1, 1]) and np.isnan(grad[1, 1])
    np.testing.assert_array_equal(loss[~mask], clean[0][~mask])
    np.testing.assert_array_equal(grad[~mask], clean[1][~mask])


# --------------------------------------------------------------------------- bad input

FIRST = {BCEL: "logits", BCE: "probs", FOCAL: "logits", HINGE: "input"}


@pytest.mark.parametrize("fn", FUNCS)
def test_shapes_that_do_not_broadcast(rng, fn):
    f = getattr(fl, fn)
    x, _ = data(rng, fn, (3,))
    y = data(rng, fn, (4,))[1]
    with pytest.raises(ValueError, match=rf"shapes do not broadcast.*{FIRST[fn]} \(3,\).*"
                                         r"target \(4,\)"):
        f(x, y)
    x, _ = data(rng, fn, (2, 3))
    y = data(rng, fn, (3, 2))[1]
    with pytest.raises(ValueError, match="target"):
        f(x, y)
    if fn in WEIGHTED:
        with pytest.raises(ValueError, match=r"weight \(2,\)"):
            f(x, data(rng, fn, (2, 3))[1], weight=np.ones(2))
    if fn == BCEL:
        with pytest.raises(ValueError, match=r"pos_weight \(2,\)"):
            f(x, np.zeros((2, 3)), pos_weight=np.ones(2))


@pytest.mark.parametrize("gamma", [-1.0, -1e-300, np.nan, -np.inf])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        fl.sigmoid_focal_loss([0.0], [1.0], gamma=gamma)


@pytest.mark.parametrize("alpha", [1.0 + 1e-15, 2.0, np.inf, np.nan])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        fl.sigmoid_focal_loss([0.0], [1.0], alpha=alpha)


def test_non_numeric_options():
    contract.check_non_numeric_options([0.0], [1.0], [(FOCAL, "alpha", "0.25"),
                                                      (FOCAL, "gamma", None),
                                                      (HINGE, "margin", "1")])


@pytest.mark.parametrize("probs", [[1.5], [-0.1], [0.5, 1.0 + 1e-15], [np.inf], [-np.inf],
                                   [0.2, -1e-300]], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_probabilities_out_of_range(probs, dtype):
    q = np.array(probs, dtype)
    if np.all((q >= 0) & (q <= 1)):  # rounded into range by the dtype: not an error there
        assert np.isfinite(fl.binary_cross_entropy(q, np.ones_like(q)))
        return
    with pytest.raises(ValueError, match="probs"):
        fl.binary_cross_entropy(q, np.ones_like(q))


@pytest.mark.parametrize("labels", [[2], [-1, 0, 1], [0.5, 1], [np.nan, 1], [-2, 2], [3, 0]],
                         ids=str)
def test_hinge_labels_out_of_domain(labels):
    x = np.zeros(len(labels))
    with pytest.raises(ValueError, match="target"):
        fl.hinge_loss(x, labels)
    with pytest.raises(ValueError, match="target"):
        fl.hinge_loss(x, labels, squared=True, return_grad=True)


@pytest.mark.parametrize("bad", ["mixed", "two", "nan"])
@pytest.mark.parametrize("where", [0, 150_000, 300_000])
def test_hinge_labels_checked_in_a_large_threaded_pass(restore_threads, bad, where):
    # labels are validated in the (multi-threaded) kernel pass: one bad label anywhere in a
    # 300,001-element target is found, and a -1 in one thread's chunk and a 0 in another's
    # is a mix
    fl.set_num_threads(2)
    y = np.ones(300_001)
    y[-1 if where == 0 else 0] = 0.0 if bad == "mixed" else 1.0
    y[where] = {"mixed": -1.0, "two": 2.0, "nan": np.nan}[bad]
    with pytest.raises(ValueError, match="target"):
        fl.hinge_loss(np.zeros(300_001), y)
    y[where] = 1.0  # all valid again: {0, 1} (or all +1)
    assert fl.hinge_loss(np.zeros(300_001), y, reduction="sum") == 300_001.0


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("reduction", contract.BAD_REDUCTIONS)
def test_unknown_reduction(rng, fn, reduction):
    x, y = data(rng, fn, (2,))
    with pytest.raises(ValueError, match="reduction"):
        getattr(fl, fn)(x, y, reduction=reduction)


@pytest.mark.parametrize("fn", FUNCS)
def test_bad_dtypes(rng, fn):
    f = getattr(fl, fn)
    x, y = data(rng, fn, (2,))
    with pytest.raises(TypeError, match=FIRST[fn]):
        f(x + 0j, y)
    with pytest.raises(TypeError, match=FIRST[fn]):
        f(["a", "b"], y)
    with pytest.raises(TypeError, match="target"):
        f(x, y + 1j)
    with pytest.raises(TypeError, match="target"):
        f(x, ["a", "b"])
    with pytest.raises(TypeError, match="target"):
        f(x, np.array([None, 1.0], dtype=object))
    if fn in WEIGHTED:
        with pytest.raises(TypeError, match="weight"):
            f(x, y, weight=np.array([1j, 1j]))
    if fn == BCEL:
        with pytest.raises(TypeError, match="pos_weight"):
            f(x, y, pos_weight=["a", "b"])


# --------------------------------------------------------------------------- empty


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", contract.EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_empty(fn, kw, shape, dtype):
    contract.check_empty(fn, shape, dtype, **kw)


# --------------------------------------------------------------------------- threads


@pytest.fixture(scope="module")
def big_data():
    rng = np.random.default_rng(12)
    n = 300_001  # above the threading threshold, and not a multiple of any vector width
    out = {fn: tuple(read_only(a) for a in data(rng, fn, (n,))) for fn in FUNCS}
    out["w"] = read_only(rng.uniform(0.5, 2.0, size=n))
    out["pw"] = read_only(rng.uniform(0.5, 3.0, size=n))
    return out


def _big_calls(big, dtype):
    w, pw = big["w"].astype(dtype), big["pw"].astype(dtype)
    for fn, kw in CASES + [(BCEL, {"weight": w, "pos_weight": pw}), (BCE, {"weight": w})]:
        x, y = (a.astype(dtype) for a in big[fn])
        yield fn, kw, x, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_input_matches_reference(big_data, dtype):
    for fn, kw, x, y in _big_calls(big_data, dtype):
        for reduction in ("mean", "none"):
            check_vs_reference(fn, x, y, reduction=reduction, **TOL[dtype], **kw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_and_two_threads_agree(restore_threads, big_data, dtype):
    def run_all():
        out = []
        for fn, kw, x, y in _big_calls(big_data, dtype):
            f = getattr(fl, fn)
            out += [f(x, y, reduction="none", **kw), f(x, y, return_grad=True, **kw)[1]]
        return out

    contract.check_one_and_two_threads_agree(run_all)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reductions_independent_of_thread_count(restore_threads, big_data, dtype):
    calls = [((fn, sorted(kw), r), partial(getattr(fl, fn), x, y, reduction=r, **kw))
             for fn, kw, x, y in _big_calls(big_data, dtype) for r in ("mean", "sum")]
    contract.check_reductions_independent_of_thread_count(calls, dtype)
