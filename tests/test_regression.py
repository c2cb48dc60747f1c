"""mse_loss, l1_loss, huber_loss and smooth_l1_loss: values and gradients against
fastloss.reference (float64), central finite differences, hand-computed values and PyTorch;
broadcasting, memory layouts, grad_out, 16-bit dtypes, NaN policy, bad input, threads."""

from __future__ import annotations

from functools import partial

import _contracts as contract
import ml_dtypes
import numpy as np
import pytest
from conftest import LAYOUTS, REDUCTIONS, read_only
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss as fl

# These tests broadcast target against input on purpose; the UserWarning that gives (as
# PyTorch's) is tested in test_fidelity.py.
pytestmark = pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")

assert_allclose = np.testing.assert_allclose

# (name, keyword options): every loss of the family with the parameters worth checking
CASES = [
    ("mse_loss", {}),
    ("l1_loss", {}),
    ("huber_loss", {}),
    ("huber_loss", {"delta": 0.5}),
    ("huber_loss", {"delta": 2.0}),
    ("smooth_l1_loss", {}),
    ("smooth_l1_loss", {"beta": 0.5}),
    ("smooth_l1_loss", {"beta": 0.0}),
]
CASE_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
            for n, kw in CASES]
FUNCS = sorted({n for n, _ in CASES})

# tolerances against the float64 reference evaluated on the same (rounded) input values
TOL = {
    np.float64: dict(rtol=1e-12, grad_rtol=1e-12),
    np.float32: dict(rtol=1e-6, grad_rtol=1e-6),
}


# --------------------------------------------------------------------------- helpers


def pair(rng, xshape, yshape=None, dtype=np.float64, n_equal=2):
    """Random predictions and targets; a few elements of equal shapes are made equal
    (``input == target``: the l1 gradient is 0 there)."""
    yshape = xshape if yshape is None else yshape
    x = rng.normal(0.0, 2.0, size=xshape).astype(dtype)
    y = rng.normal(0.0, 2.0, size=yshape).astype(dtype)
    if xshape == yshape and x.size > n_equal:
        x.reshape(-1)[:n_equal] = y.reshape(-1)[:n_equal]
    return x, y


def grid_pair(rng, xshape, yshape=None):
    """float64 inputs whose every broadcast difference ``x - y`` is an integer plus a fraction
    in [0.25, 0.35]: |x - y| stays at least 0.15 from every multiple of 0.5, so from 0 and from
    each delta / beta used here (the kinks), and central differences see a smooth function."""
    yshape = xshape if yshape is None else yshape
    y = rng.integers(-3, 4, size=yshape).astype(np.float64)
    x = rng.integers(-3, 4, size=xshape) + rng.uniform(0.25, 0.35, size=xshape)
    return x, y


def check_vs_reference(fn, x, y, *, reduction="mean", rtol, grad_rtol, f64=None, **kw):
    """fastloss (loss-only and fused paths) against the float64 reference on ``f64`` (the
    values fastloss computes on; default: ``x``, ``y`` and the options as float64)."""
    loss, grad, want_loss, want_grad, _ = contract.reference_call(
        fn, x, y, reduction=reduction, f64=f64, kw=kw)
    scale = float(np.max(np.abs(want_loss))) if np.size(want_loss) else 1.0
    assert_allclose(loss, want_loss, rtol=rtol, atol=rtol * scale * 1e-3)
    gscale = float(np.max(np.abs(want_grad))) if want_grad.size else 1.0
    # atol: a sum over broadcast axes may cancel; its error is relative to its largest terms
    assert_allclose(grad.astype(np.float64), want_grad, rtol=grad_rtol, atol=grad_rtol * gscale)
    return loss, grad


# --------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(rng, fn, kw, dtype, reduction):
    x, y = pair(rng, (7, 13), dtype=dtype)
    check_vs_reference(fn, x, y, reduction=reduction, **TOL[dtype], **kw)


@pytest.mark.parametrize("n", [1, 3, 8, 17, 33, 8191, 8193])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_isa_and_tail_length(isa, rng, n, dtype):
    # vector tails (n not a multiple of the SIMD width) and chunk boundaries (8192)
    x, y = pair(rng, (n,), dtype=dtype)
    w = rng.uniform(0.0, 2.0, size=n).astype(dtype)
    for fn, kw in CASES:
        for reduction in ("sum", "none"):
            check_vs_reference(fn, x, y, reduction=reduction, weight=w, **TOL[dtype], **kw)


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wshape", [(4, 6), (6,), (4, 1), ()], ids=str)
def test_weight(rng, fn, kw, dtype, reduction, wshape):
    x, y = pair(rng, (4, 6), dtype=dtype)
    contract.check_weight(check_vs_reference, rng, fn, x, y, wshape, reduction, TOL[dtype], **kw)


def test_weight_mean_divides_by_element_count():
    # PyTorch's convention for elementwise weights: sum(w l) / n, not sum(w l) / sum(w)
    got = fl.mse_loss([1.0, 3.0], [0.0, 0.0], weight=[2.0, 0.0])
    assert got == pytest.approx((2 * 1 + 0 * 9) / 2, rel=1e-15)


# --------------------------------------------------------------------------- broadcasting

@pytest.mark.parametrize("xshape,yshape", contract.BROADCASTS + [((), (3, 4))], ids=str)
@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_broadcasting(rng, xshape, yshape, fn, kw, dtype, reduction):
    x, y = pair(rng, xshape, yshape, dtype=dtype)
    contract.check_broadcasting(check_vs_reference, fn, x, y, reduction, TOL[dtype],
                                TOL[dtype]["grad_rtol"] * 10, **kw)


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
def test_broadcast_weight_and_input(rng, fn, kw):
    x, y = pair(rng, (3, 1, 4), (5, 4))
    w = rng.uniform(0.5, 2.0, size=(5, 1))
    for reduction in REDUCTIONS:
        loss, grad = check_vs_reference(fn, x, y, weight=w, reduction=reduction,
                                        **TOL[np.float64], **kw)
        assert grad.shape == (3, 1, 4)
        if reduction == "none":
            assert loss.shape == (3, 5, 4)


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3,
                                                max_side=4),
       fi=st.integers(0, len(CASES) - 1), reduction=st.sampled_from(REDUCTIONS),
       seed=st.integers(0, 2**32 - 1))
def test_hypothesis_broadcast_shapes(shapes, fi, reduction, seed):
    rng = np.random.default_rng(seed)
    (xs, ys, ws), _ = shapes
    fn, kw = CASES[fi]
    x, y = pair(rng, xs, ys)
    w = rng.uniform(0.0, 2.0, size=ws)
    check_vs_reference(fn, x, y, weight=w, reduction=reduction, **TOL[np.float64], **kw)


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_non_contiguous_inputs(rng, name, fn, dtype):
    x, y = pair(rng, (6, 5), dtype=dtype)
    w = rng.uniform(0.5, 2.0, size=(6, 5)).astype(dtype)
    contract.check_layout(check_vs_reference, fn, x, y, name, TOL.get(dtype), weight=w)


@pytest.mark.parametrize("fn", FUNCS)
def test_read_only_inputs(rng, fn):
    x, y = pair(rng, (4, 5))
    contract.check_read_only(fn, x, y, weight=rng.uniform(0.5, 2.0, size=5))


def test_array_likes_and_integer_inputs():
    # lists and integers are computed as float64
    loss, grad = fl.mse_loss([[1, 2], [3, 4]], np.array([1, 1], dtype=np.int8), return_grad=True)
    assert loss.dtype == np.float64 and grad.dtype == np.float64
    assert loss == pytest.approx((0 + 1 + 4 + 9) / 4, rel=1e-15)
    assert_allclose(grad, [[0.0, 0.5], [1.0, 1.5]], rtol=1e-15)
    assert fl.l1_loss(np.array([True, False]), [0.5, 0.5], reduction="sum") == 1.0
    # a bool / integer target against float32 input keeps float32
    loss = fl.huber_loss(np.array([0.5, 3.0], np.float32), [0, 0])
    assert loss.dtype == np.float32 and loss == pytest.approx(1.3125, rel=1e-7)


# --------------------------------------------------------------------------- grad_out


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_out_fresh_and_in_place(rng, fn, kw, dtype, reduction):
    x, y = pair(rng, (5, 7), dtype=dtype)
    contract.check_grad_out_fresh_and_in_place(fn, x, y, reduction, **kw)


@pytest.mark.parametrize("fn", FUNCS)
def test_grad_out_special_buffers(rng, fn):
    contract.check_grad_out_special_buffers(fn, lambda xs, ys=None: pair(rng, xs, ys))


@pytest.mark.parametrize("fn", FUNCS)
def test_grad_out_errors(rng, fn):
    contract.check_grad_out_errors(fn, *pair(rng, (3, 4)))


@pytest.mark.parametrize("fn", FUNCS)
def test_nothing_written_to_grad_out_on_error(rng, fn):
    x, y = pair(rng, (3, 4))
    for bad in (dict(target=np.zeros(5)), dict(reduction="avg"), dict(weight=np.ones(5)),
                dict(target=np.array(["a"] * 4))):
        contract.check_nothing_written_on_error(fn, x, y, bad)


# --------------------------------------------------------------------------- 16-bit

@pytest.mark.parametrize("dtype,grad_rtol", contract.LOW)
@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_16_bit_inputs(rng, dtype, grad_rtol, fn, kw, reduction):
    x, y = pair(rng, (6, 10), dtype=dtype)
    w = rng.uniform(0.5, 2.0, size=10).astype(np.float32)
    contract.check_16_bit(check_vs_reference, fn, x, y, reduction,
                          dict(rtol=2e-6, grad_rtol=grad_rtol), weight=w, **kw)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_16_bit_sum_is_accumulated_wide(dtype):
    # 4096 losses of 1: a 16-bit accumulator would stop at 2048 (float16) or 256 (bfloat16)
    x = np.ones(4096, dtype=dtype)
    assert fl.mse_loss(x, np.zeros(4096, dtype), reduction="sum") == 4096.0
    assert fl.l1_loss(x, np.zeros(4096, dtype), reduction="mean") == 1.0


# --------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("xshape,yshape", [((3, 4), (3, 4)), ((3, 1), (3, 4)), ((4,), (2, 4))],
                         ids=str)
def test_gradient_finite_differences(rng, fn, kw, reduction, xshape, yshape):
    x, y = grid_pair(rng, xshape, yshape)
    w = rng.uniform(0.5, 2.0, size=np.broadcast_shapes(xshape, yshape))
    contract.check_finite_differences(fn, x, y, reduction, weight=w, **kw)


# --------------------------------------------------------------------------- PyTorch


def torch_loss(fn, x, y, reduction, weight=None, **kw):
    """Loss and d loss / d input (upstream gradient all ones) from torch.nn.functional in
    float64; operands broadcast explicitly (torch's autograd sums the gradient back)."""
    torch = contract.torch_or_skip()
    tf = getattr(torch.nn.functional, fn)

    def loss_fn(Xb, Yb, r):
        if weight is None:
            return tf(Xb, Yb, reduction=r, **kw)
        # elementwise weights: the weighted per-element losses, reduced as fastloss does
        per = tf(Xb, Yb, reduction="none", **kw) * torch.tensor(np.asarray(weight, np.float64))
        return {"none": per, "sum": per.sum(), "mean": per.sum() / per.numel()}[r]

    return contract.torch_run(loss_fn, x, y, reduction)


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("xshape,yshape", [((6, 7), (6, 7)), ((6, 7), (7,)), ((6, 1), (6, 7)),
                                           ((7,), (3, 6, 7))], ids=str)
def test_matches_torch(rng, fn, kw, reduction, xshape, yshape):
    pytest.importorskip("torch")
    x, y = pair(rng, xshape, yshape)
    tkw = {k: v for k, v in kw.items()}
    t_loss, t_grad = torch_loss(fn, x, y, reduction, **tkw)
    loss, grad = getattr(fl, fn)(x, y, reduction=reduction, return_grad=True, **kw)
    assert np.shape(loss) == np.shape(t_loss)
    assert_allclose(loss, t_loss, rtol=1e-13, atol=1e-300)
    assert_allclose(grad, t_grad, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch_weighted(rng, fn, kw, reduction):
    pytest.importorskip("torch")
    x, y = pair(rng, (5, 4))
    w = rng.uniform(0.0, 2.0, size=(5, 1))
    t_loss, t_grad = torch_loss(fn, x, y, reduction, weight=w, **kw)
    loss, grad = getattr(fl, fn)(x, y, weight=w, reduction=reduction, return_grad=True, **kw)
    assert_allclose(loss, t_loss, rtol=1e-13, atol=1e-300)
    assert_allclose(grad, t_grad, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
def test_empty_matches_torch(fn, kw):
    pytest.importorskip("torch")
    x = np.zeros((0, 3))
    for reduction in REDUCTIONS:
        t = torch_loss(fn, x, x, reduction, **kw)
        contract.check_empty_matches_torch(fn, x, reduction, t, **kw)


# --------------------------------------------------------------------------- hand values


def test_hand_values_mse():
    assert float(fl.mse_loss([4.0, 2.0, 3.0], [3.0, 5.0, 2.0])) == pytest.approx(11 / 3,
                                                                                 rel=1e-15)
    assert float(fl.mse_loss([0.01], [1.0])) == pytest.approx(0.9801, rel=1e-14)
    assert float(fl.mse_loss([2.1, 2.9, 5.0], [2, 3, 5])) == pytest.approx(0.02 / 3, rel=1e-13)
    loss, grad = fl.mse_loss([4.0, 2.0, 3.0], [3.0, 5.0, 2.0], reduction="sum", return_grad=True)
    assert loss == 11.0
    np.testing.assert_array_equal(grad, [2.0, -6.0, 2.0])
    f32 = fl.mse_loss(np.array([4.0, 2.0, 3.0], np.float32), [3.0, 5.0, 2.0])
    assert f32.dtype == np.float32 and f32 == np.float32(11 / 3)


def test_hand_values_l1_huber_smooth_l1():
    x, y = [4.0, 2.0, 3.0, 1.0], [3.0, 5.0, 2.5, 1.0]
    loss, grad = fl.l1_loss(x, y, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [1.0, 3.0, 0.5, 0.0])
    np.testing.assert_array_equal(grad, [1.0, -1.0, 1.0, 0.0])  # 0 where input == target
    # huber(delta=1): 0.5, 1*(3-0.5), 0.125, 0
    loss, grad = fl.huber_loss(x, y, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [0.5, 2.5, 0.125, 0.0])
    np.testing.assert_array_equal(grad, [1.0, -1.0, 0.5, 0.0])
    # huber(delta=2): 0.5, 2*(3-1), 0.125, 0; gradient d or 2 sign(d)
    loss, grad = fl.huber_loss(x, y, delta=2.0, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [0.5, 4.0, 0.125, 0.0])
    np.testing.assert_array_equal(grad, [1.0, -2.0, 0.5, 0.0])
    # smooth_l1(beta=2): 1/4, 3-1, 1/16, 0
    loss, grad = fl.smooth_l1_loss(x, y, beta=2.0, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [0.25, 2.0, 0.0625, 0.0])
    np.testing.assert_array_equal(grad, [0.5, -1.0, 0.25, 0.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_l1_gradient_zero_where_equal(rng, dtype):
    y = rng.normal(size=(5, 8)).astype(dtype)
    x = y.copy()
    x[::2] += 1
    for fn in ("l1_loss", "smooth_l1_loss"):
        kw = {"beta": 0.0} if fn == "smooth_l1_loss" else {}
        _, grad = getattr(fl, fn)(x, y, reduction="sum", return_grad=True, **kw)
        assert np.all(grad[1::2] == 0) and np.all(grad[::2] == 1)
    _, grad = fl.huber_loss(x, y, reduction="sum", return_grad=True)
    assert np.all(grad[1::2] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_smooth_l1_beta_0_is_l1(rng, dtype):
    x, y = pair(rng, (9, 11), dtype=dtype)
    w = rng.uniform(0.5, 2, size=11).astype(dtype)
    for reduction in REDUCTIONS:
        a, ga = fl.smooth_l1_loss(x, y, beta=0.0, weight=w, reduction=reduction,
                                  return_grad=True)
        b, gb = fl.l1_loss(x, y, weight=w, reduction=reduction, return_grad=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ga, gb)


@pytest.mark.parametrize("b", [0.5, 1.0, 2.5])
def test_huber_is_delta_times_smooth_l1(rng, b):
    # huber(delta=b) == b * smooth_l1(beta=b) (PyTorch's documented identity)
    x, y = pair(rng, (40,))
    for reduction in REDUCTIONS:
        h, gh = fl.huber_loss(x, y, delta=b, reduction=reduction, return_grad=True)
        s, gs = fl.smooth_l1_loss(x, y, beta=b, reduction=reduction, return_grad=True)
        assert_allclose(h, b * s, rtol=1e-14, atol=1e-300)
        assert_allclose(gh, b * gs, rtol=1e-14, atol=1e-300)


def test_exactly_at_the_kinks():
    # |d| == delta: quadratic side (torch: |d| <= delta); |d| == beta: linear side (|d| < beta)
    loss, grad = fl.huber_loss([1.0, -1.0], [0.0, 0.0], reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [0.5, 0.5])
    np.testing.assert_array_equal(grad, [1.0, -1.0])
    loss, grad = fl.smooth_l1_loss([1.0, -1.0], [0.0, 0.0], reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [0.5, 0.5])
    np.testing.assert_array_equal(grad, [1.0, -1.0])


def test_large_values():
    # no overflow beyond what the formula itself implies
    x = np.array([1e150, -1e150, 1e300])
    y = np.zeros(3)
    loss = fl.l1_loss(x, y, reduction="none")
    np.testing.assert_array_equal(loss, np.abs(x))
    loss, grad = fl.huber_loss(x, y, reduction="none", return_grad=True)
    assert_allclose(loss, np.abs(x) - 0.5, rtol=1e-15)
    np.testing.assert_array_equal(grad, np.sign(x))
    x32 = np.array([3e19, -3e19], np.float32)  # d^2 = 9e38 > float32 max: inf, as torch
    assert np.all(np.isinf(fl.mse_loss(x32, np.zeros(2, np.float32), reduction="none")))
    assert np.isfinite(fl.mse_loss(x32[:1] / 2, np.zeros(1, np.float32)))


# --------------------------------------------------------------------------- NaN policy


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("where", ["input", "target"])
def test_nan_affects_only_its_element(rng, fn, kw, dtype, where):
    x, y = pair(rng, (4, 5), dtype=dtype)
    contract.check_nan_affects_only_its_element(fn, x, y, where, **kw)


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
def test_inf_input(fn, kw):
    f = getattr(fl, fn)
    loss, grad = f([np.inf, -np.inf, 1.0], [0.0, 0.0, 0.0], reduction="none", return_grad=True,
                   **kw)
    assert np.all(np.isposinf(loss[:2])) and np.isfinite(loss[2])
    slope = {"mse_loss": np.inf, "huber_loss": kw.get("delta", 1.0)}.get(fn, 1.0)
    np.testing.assert_array_equal(grad[:2], [slope, -slope])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", FUNCS)
def test_shapes_that_do_not_broadcast(fn):
    f = getattr(fl, fn)
    with pytest.raises(ValueError, match=r"shapes do not broadcast.*input \(3,\).*target \(4,\)"):
        f(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"weight \(2,\)"):
        f(np.zeros(3), np.zeros(3), weight=np.ones(2))
    with pytest.raises(ValueError, match="target"):
        f(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("delta", [0.0, -0.0, -1.0, -1e-300, np.nan, -np.inf])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        fl.huber_loss([1.0], [0.0], delta=delta)


@pytest.mark.parametrize("beta", [-1.0, -1e-300, np.nan, -np.inf])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        fl.smooth_l1_loss([1.0], [0.0], beta=beta)


def test_infinite_delta_and_beta_are_limits():
    # delta = inf: always quadratic (d^2 / 2); beta = inf: d^2 / (2 beta) = 0 (as torch)
    x, y = np.array([0.5, 3.0, -2.0]), np.zeros(3)
    loss, grad = fl.huber_loss(x, y, delta=np.inf, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, 0.5 * x**2)
    np.testing.assert_array_equal(grad, x)
    loss, grad = fl.smooth_l1_loss(x, y, beta=np.inf, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, np.zeros(3))
    np.testing.assert_array_equal(grad, np.zeros(3))


def test_non_numeric_options():
    contract.check_non_numeric_options([1.0], [0.0], [("huber_loss", "delta", "1"),
                                                      ("huber_loss", "delta", None),
                                                      ("smooth_l1_loss", "beta", [1.0]),
                                                      ("smooth_l1_loss", "beta", 1j)])


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("reduction", contract.BAD_REDUCTIONS)
def test_unknown_reduction(fn, reduction):
    with pytest.raises(ValueError, match="reduction"):
        getattr(fl, fn)([1.0], [0.0], reduction=reduction)


@pytest.mark.parametrize("fn", FUNCS)
def test_bad_dtypes(fn):
    f = getattr(fl, fn)
    with pytest.raises(TypeError, match="input"):
        f(np.array([1 + 2j, 3j]), [0.0, 0.0])
    with pytest.raises(TypeError, match="target"):
        f([1.0, 2.0], np.array([1j, 2j]))
    with pytest.raises(TypeError, match="target"):
        f([1.0, 2.0], ["a", "b"])
    with pytest.raises(TypeError, match="target"):
        f([1.0, 2.0], np.array([None, 1.0], dtype=object))
    with pytest.raises(TypeError, match="input"):
        f(["a", "b"], [1.0, 2.0])
    with pytest.raises(TypeError, match="input"):
        f([[1.0], [2.0, 3.0]], [1.0])  # ragged
    with pytest.raises(TypeError, match="weight"):
        f([1.0, 2.0], [1.0, 2.0], weight=np.array([1j, 1j]))
    with pytest.raises(TypeError, match="weight"):
        f([1.0, 2.0], [1.0, 2.0], weight=["x", "y"])


# --------------------------------------------------------------------------- empty


@pytest.mark.parametrize("fn,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", contract.EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_empty(fn, kw, shape, dtype):
    contract.check_empty(fn, shape, dtype, **kw)


def test_empty_broadcast():
    loss, grad = fl.mse_loss(np.ones((1, 3)), np.ones((0, 3)), reduction="sum", return_grad=True)
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros((1, 3)))


# --------------------------------------------------------------------------- threads


@pytest.fixture(scope="module")
def big_pair():
    rng = np.random.default_rng(11)
    n = 300_001  # above the threading threshold, and not a multiple of any vector width
    x = read_only(rng.normal(0.0, 2.0, size=n))
    y = read_only(rng.normal(0.0, 2.0, size=n))
    w = read_only(rng.uniform(0.5, 2.0, size=n))
    return x, y, w


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_input_matches_reference(big_pair, dtype):
    x, y, w = (a.astype(dtype) for a in big_pair)
    for fn, kw in CASES:
        for reduction in ("mean", "none"):
            check_vs_reference(fn, x, y, weight=w, reduction=reduction, **TOL[dtype], **kw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_and_two_threads_agree(restore_threads, big_pair, dtype):
    x, y, w = (a.astype(dtype) for a in big_pair)

    def run_all():
        out = []
        for fn, kw in CASES:
            f = getattr(fl, fn)
            out += [f(x, y, weight=w, reduction="none", **kw),
                    *f(x, y, weight=w, return_grad=True, **kw)[1:]]
        return out

    contract.check_one_and_two_threads_agree(run_all)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reductions_independent_of_thread_count(restore_threads, big_pair, dtype):
    x, y, w = (a.astype(dtype) for a in big_pair)
    calls = [((fn, kw, r), partial(getattr(fl, fn), x, y, weight=w, reduction=r, **kw))
             for fn, kw in CASES for r in ("mean", "sum")]
    contract.check_reductions_independent_of_thread_count(calls, dtype)
