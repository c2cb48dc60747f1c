"""kl_div, kl_div_with_logits and gaussian_kl: values and gradients against fastloss.reference
(float64), central finite differences, hand-computed values and PyTorch; broadcasting, zero and
infinite entries, NaN policy, memory layouts, 16-bit dtypes, empty inputs, bad input."""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import _contracts as contract
from conftest import LAYOUTS, central_diff, layout, read_only

import fastloss as fl
from fastloss import reference as ref

assert_allclose = np.testing.assert_allclose
REDUCTIONS = ("mean", "sum", "none")
KL_REDUCTIONS = ("mean", "sum", "none", "batchmean")
NINF = -np.inf
LN2, LN3 = math.log(2.0), math.log(3.0)

# tolerances against the float64 reference evaluated on the same input values; grad_atol is
# relative to max(1, largest |reference gradient|), loss_atol to max(1, |largest loss term|)
TOL = {
    np.float64: dict(loss_rtol=1e-12, loss_atol=1e-13, grad_rtol=1e-11, grad_atol=1e-14),
    np.float32: dict(loss_rtol=1e-5, loss_atol=1e-6, grad_rtol=1e-5, grad_atol=1e-6),
}
LOW = [pytest.param(np.float16, 2**-10, id="float16"),
       pytest.param(ml_dtypes.bfloat16, 2**-7, id="bfloat16")]
LOW_DTYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


# --------------------------------------------------------------------------- helpers


def _torch():
    return pytest.importorskip("torch")


def loss_dtype(x):
    x = np.asarray(x)
    return np.dtype(np.float32) if x.dtype in LOW_DTYPES else x.dtype


def _grads(g):
    return g if isinstance(g, tuple) else (g,)


def check(fn, args, *, reduction, n_diff=1, tol=None, **kw):
    """fastloss (loss-only and loss+grad calls) against the float64 reference on the same
    values; ``n_diff``: how many leading arguments get a gradient (a tuple when > 1).
    Returns the fastloss loss and gradient."""
    f, r = getattr(fl, fn), getattr(ref, fn)
    x = np.asarray(args[0])
    dt = loss_dtype(x)
    tol = tol or TOL[dt.type]
    loss_only = f(*args, reduction=reduction, **kw)
    loss, grad = f(*args, reduction=reduction, return_grad=True, **kw)
    want_loss, want_grad = r(*args, reduction=reduction, return_grad=True, **kw)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == np.shape(want_loss)
    else:
        assert isinstance(loss, np.floating) and not isinstance(loss, np.ndarray)
    assert np.asarray(loss).dtype == dt and np.asarray(loss_only).dtype == dt
    if n_diff > 1:
        assert isinstance(grad, tuple) and len(grad) == n_diff
    else:
        assert isinstance(grad, np.ndarray)
    for g, a in zip(_grads(grad), args[:n_diff]):
        assert g.shape == np.shape(a) and g.dtype == np.asarray(a).dtype
    assert_allclose(loss_only, loss, rtol=8 * np.finfo(dt).eps, atol=0, equal_nan=True)
    assert_allclose(loss, want_loss, rtol=tol["loss_rtol"], atol=tol["loss_atol"],
                    equal_nan=True)
    for g, w in zip(_grads(grad), _grads(want_grad)):
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        assert_allclose(g.astype(np.float64), w, rtol=tol["grad_rtol"],
                        atol=tol["grad_atol"] * scale)
    return loss, grad


def log_probs(rng, shape, axis=-1, dtype=np.float64):
    """log_softmax of random logits over ``axis`` (0-d: a random negative number)."""
    if len(shape) == 0:
        return np.asarray(-rng.uniform(0.1, 3.0)).astype(dtype)
    return ref.log_softmax(rng.normal(0.0, 2.0, size=shape), axis=axis).astype(dtype)


def probs(rng, shape, axis=-1, dtype=np.float64):
    if len(shape) == 0:
        return np.asarray(rng.uniform(0.05, 1.0)).astype(dtype)
    return ref.softmax(rng.normal(0.0, 2.0, size=shape), axis=axis).astype(dtype)


def kl_target(rng, shape, log_target, dtype=np.float64):
    y = probs(rng, shape, dtype=np.float64)
    return (np.log(y) if log_target else y).astype(dtype)


def torch_kl_div(x, y, reduction, log_target):
    """F.kl_div on explicitly broadcast float64 tensors; loss and d loss / d x (summed back over
    the broadcast axes by autograd)."""
    torch = _torch()
    X = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    Y = torch.tensor(np.asarray(y, dtype=np.float64))
    Xb, Yb = torch.broadcast_tensors(X, Y)
    with warnings.catch_warnings():  # torch warns that "mean" is not "batchmean"
        warnings.simplefilter("ignore")
        loss = torch.nn.functional.kl_div(Xb, Yb, reduction=reduction, log_target=log_target)
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), X.grad.numpy()


# =========================================================================== kl_div

KL_SHAPES = [((4, 5), (4, 5)), ((5,), (3, 5)), ((3, 1), (3, 5)), ((3, 5), (5,)), ((), ()),
             ((2, 3, 4), (2, 3, 4)), ((1, 6), (4, 6)), ((7,), (7,)), ((2, 200), (2, 200))]


@pytest.mark.parametrize("xshape,yshape", KL_SHAPES, ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_matches_reference(rng, xshape, yshape, log_target, reduction, dtype):
    x = log_probs(rng, xshape, dtype=dtype)
    y = kl_target(rng, yshape, log_target, dtype)
    check("kl_div", (x, y), reduction=reduction, log_target=log_target)


@pytest.mark.parametrize("xshape,yshape", KL_SHAPES, ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
def test_kl_div_matches_torch(rng, xshape, yshape, log_target, reduction):
    _torch()
    x = log_probs(rng, xshape)
    y = kl_target(rng, yshape, log_target)
    if not log_target and y.ndim:
        y.reshape(-1)[0] = 0.0  # a zero target with a finite input: 0 in torch too
    t_loss, t_grad = torch_kl_div(x, y, reduction, log_target)
    loss, grad = fl.kl_div(x, y, reduction=reduction, log_target=log_target, return_grad=True)
    assert np.shape(loss) == np.shape(t_loss)
    assert_allclose(loss, t_loss, rtol=1e-13, atol=1e-16)
    assert_allclose(grad, t_grad, rtol=1e-13, atol=1e-16)


def test_kl_div_hand_values():
    x = np.log([[0.5, 0.5]])
    y = np.array([[0.25, 0.75]])
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # 0.1308...
    assert_allclose(fl.kl_div(x, y, reduction="sum"), kl, rtol=1e-15)
    assert_allclose(fl.kl_div(x, y, reduction="batchmean"), kl, rtol=1e-15)
    assert_allclose(fl.kl_div(x, y), kl / 2, rtol=1e-15)  # "mean" divides by every element
    assert_allclose(fl.kl_div(x, y, reduction="none"),
                    [[0.25 * math.log(0.5), 0.75 * math.log(1.5)]], rtol=1e-15)
    # the same with log-probability targets
    assert_allclose(fl.kl_div(x, np.log(y), reduction="sum", log_target=True), kl, rtol=1e-14)
    # gradient: -y (-exp(y)), times the reduction's scale
    _, g = fl.kl_div(x, y, reduction="mean", return_grad=True)
    assert_allclose(g, -y / 2, rtol=1e-15)
    _, g = fl.kl_div(x, np.log(y), reduction="batchmean", log_target=True, return_grad=True)
    assert_allclose(g, -y, rtol=1e-15)
    # batchmean divides by the first dimension of the broadcast shape: 2 rows here
    x2 = np.log([0.5, 0.5])
    y2 = np.array([[0.25, 0.75], [0.5, 0.5]])
    assert_allclose(fl.kl_div(x2, y2, reduction="batchmean"), kl / 2, rtol=1e-15)
    _, g = fl.kl_div(x2, y2, reduction="batchmean", return_grad=True)
    assert g.shape == (2,)
    assert_allclose(g, -(y2[0] + y2[1]) / 2, rtol=1e-15)
    # 0-d: batchmean is the sum
    assert_allclose(fl.kl_div(np.log(0.5), 0.25, reduction="batchmean"),
                    0.25 * math.log(0.5), rtol=1e-15)
    # identical distributions: 0
    p = np.array([[0.2, 0.3, 0.5]])
    assert abs(fl.kl_div(np.log(p), p, reduction="sum")) < 1e-16


@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_zero_target_with_neg_inf_input_is_zero(reduction, dtype):
    # documented difference from torch (NaN there): a zero target contributes exactly 0
    x = np.array([[NINF, np.log(0.5), np.log(0.5)], [np.log(0.25), NINF, np.log(0.75)]],
                 dtype=dtype)
    y = np.array([[0.0, 0.5, 0.5], [0.25, 0.0, 0.75]], dtype=dtype)
    loss, grad = fl.kl_div(x, y, reduction=reduction, return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert_allclose(loss, ref.kl_div(x, y, reduction=reduction), atol=1e-7)
    assert_allclose(loss, 0.0 * np.asarray(loss), atol=1e-7)  # input equals log(target)
    assert np.all(grad[y == 0] == 0)
    if reduction == "none":
        assert loss[0, 0] == 0 and loss[1, 1] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_kl_div_infinite_target_is_infinite(dtype):
    # inf (log inf - x) = inf for finite x, as torch and the reference; the float32 table log
    # gave NaN there (found by the property harness, float16 input)
    x = np.array([2.738, -4.605, 1.0], dtype=dtype)
    y = np.array([np.inf, 0.2698, 0.5], dtype=dtype)
    loss = fl.kl_div(x, y, reduction="none")
    assert loss[0] == np.inf
    assert_allclose(loss[1:], ref.kl_div(x, y, reduction="none")[1:], rtol=1e-3)
    assert fl.kl_div(x, y, reduction="sum") == np.inf


def test_kl_div_log_target_large_negative():
    # exp(y) underflows to 0 for y = -1000: the term is 0, the gradient 0
    x = np.array([-1.0, -2.0])
    y = np.array([-1000.0, np.log(0.5)])
    loss, grad = fl.kl_div(x, y, log_target=True, reduction="none", return_grad=True)
    assert loss[0] == 0 and grad[0] == 0
    assert_allclose(loss[1], 0.5 * (np.log(0.5) + 2.0), rtol=1e-15)


@pytest.mark.parametrize("xshape,yshape", [((3, 4), (3, 4)), ((4,), (3, 4)), ((3, 1), (3, 4)),
                                           ((), ())], ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
def test_kl_div_finite_differences(rng, xshape, yshape, log_target, reduction):
    x = log_probs(rng, xshape)
    y = kl_target(rng, yshape, log_target)

    def total(v):
        return np.sum(fl.kl_div(v, y, reduction=reduction, log_target=log_target))

    _, grad = fl.kl_div(x, y, reduction=reduction, log_target=log_target, return_grad=True)
    assert grad.shape == np.shape(x)
    assert_allclose(grad, central_diff(total, x), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("where", ["input", "target"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_nan_only_affects_its_element(rng, where, log_target, dtype):
    x = log_probs(rng, (4, 5), dtype=dtype)
    y = kl_target(rng, (4, 5), log_target, dtype)
    (x if where == "input" else y)[1, 2] = np.nan
    loss, grad = fl.kl_div(x, y, reduction="none", log_target=log_target, return_grad=True)
    assert np.isnan(loss[1, 2])
    ok = np.ones(loss.shape, bool)
    ok[1, 2] = False
    want_loss, want_grad = ref.kl_div(x, y, reduction="none", log_target=log_target,
                                      return_grad=True)
    assert_allclose(loss[ok], want_loss[ok], rtol=TOL[dtype]["loss_rtol"])
    assert_allclose(grad[ok], want_grad[ok], rtol=TOL[dtype]["grad_rtol"])
    # the gradient -y (-exp(y)) does not depend on the input: NaN only for a NaN target
    assert np.isnan(grad[1, 2]) == (where == "target")
    for reduction in ("mean", "sum", "batchmean"):
        assert np.isnan(fl.kl_div(x, y, reduction=reduction, log_target=log_target))


def test_kl_div_negative_target():
    with pytest.raises(ValueError, match="target"):
        fl.kl_div(np.zeros(3), [0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match="target"):
        fl.kl_div(np.zeros((2, 3)), np.array([[0.5, 0.5, 0.0], [0.0, 1.0, -1e-300]]),
                  return_grad=True)
    # negative log-probability targets are fine with log_target=True
    fl.kl_div(np.zeros(3), [-0.5, -0.1, -3.0], log_target=True)


def test_kl_div_bad_shapes():
    with pytest.raises(ValueError):
        fl.kl_div(np.zeros((3, 4)), np.full((3, 5), 0.2))  # not broadcastable
    with pytest.raises(ValueError):
        fl.kl_div(np.zeros((2, 4)), np.full((3, 4), 0.25))


# =========================================================================== kl_div_with_logits

TEMPERATURES = (0.5, 1.0, 2.0, 4.0)
KLL_SHAPES = [((6, 7), -1), ((6, 7), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((5,), 0),
              ((2, 3, 1), -1), ((4, 64), -1)]


@pytest.mark.parametrize("shape,axis", KLL_SHAPES, ids=str)
@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_with_logits_matches_reference(rng, shape, axis, T, reduction, dtype):
    s = rng.normal(0.0, 2.0, size=shape).astype(dtype)
    t = rng.normal(0.0, 2.0, size=shape).astype(dtype)
    check("kl_div_with_logits", (s, t), reduction=reduction, axis=axis, temperature=T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_div_with_logits_deferred_logs_across_groups(rng, isa, dtype):
    """The lane kernels (up to 100 classes) take the float64 divisions and log of a group of 8
    blocks after the blocks, with and without the gradient: several groups and a partial one,
    with NaN, +inf and all -inf rows in every group, agree with the reference and, bit for bit,
    with the loss computed alongside the gradient and with a column-major copy's; the
    gradient is NaN in exactly the NaN rows and near the reference elsewhere."""
    rows = 2 * 128 + 8 * 16 + 37
    for C in (2, 3, 4, 10, 16, 17, 33, 100):
        s = rng.normal(0.0, 3.0, (rows, C)).astype(dtype)
        t = rng.normal(0.0, 3.0, (rows, C)).astype(dtype)
        for g in range(0, rows, 41):
            s[g, rng.integers(0, C)] = np.nan
            t[g + 1] = -np.inf
            s[g + 2, 0] = np.inf
            t[g + 3, rng.integers(0, C)] = -np.inf
            s[g + 4] += 1e4
        for T in (1.0, 2.0):
            loss = fl.kl_div_with_logits(s, t, temperature=T, reduction="none")
            loss_g, grad = fl.kl_div_with_logits(s, t, temperature=T, reduction="none",
                                                 return_grad=True)
            np.testing.assert_array_equal(loss, loss_g)
            bad = np.isnan(loss)
            assert np.isnan(grad[bad]).all() and not np.isnan(grad[~bad]).any()
            with np.errstate(invalid="ignore", over="ignore"):
                _, want_g = ref.kl_div_with_logits(s, t, temperature=T, reduction="none",
                                                   return_grad=True)
            np.testing.assert_allclose(grad[~bad], want_g[~bad],
                                       rtol=1e-4 if dtype == np.float32 else 1e-10,
                                       atol=1e-6 if dtype == np.float32 else 1e-12)
            np.testing.assert_array_equal(
                loss, fl.kl_div_with_logits(np.asfortranarray(s), t, temperature=T,
                                            reduction="none"))
            with np.errstate(invalid="ignore"):
                want = ref.kl_div_with_logits(s, t, temperature=T, reduction="none")
            np.testing.assert_allclose(loss, want, rtol=2e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-6 if dtype == np.float32 else 1e-12)
            assert np.isnan(loss[0::41]).all() and np.isnan(loss[1::41]).all()
            assert np.isnan(loss[2::41]).all()


def _torch_distill(s, t, axis, T, reduction):
    torch = _torch()
    F = torch.nn.functional
    S = torch.tensor(np.asarray(s, np.float64), requires_grad=True)
    Tt = torch.tensor(np.asarray(t, np.float64))
    ax = axis % s.ndim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = T**2 * F.kl_div(F.log_softmax(S / T, dim=ax), F.log_softmax(Tt / T, dim=ax),
                               log_target=True, reduction=reduction)
    if reduction == "none":
        loss = loss.sum(dim=ax)
    elif reduction == "batchmean":  # torch divides by size(0); rows are every other axis
        loss = loss * S.shape[0] / (S.numel() // S.shape[ax])
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), S.grad.numpy()


@pytest.mark.parametrize("shape,axis", [((6, 7), -1), ((6, 7), 0), ((3, 4, 5), 1)], ids=str)
@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
def test_kl_div_with_logits_matches_torch(rng, shape, axis, T, reduction):
    _torch()
    s = rng.normal(0.0, 2.0, size=shape)
    t = rng.normal(0.0, 2.0, size=shape)
    t_loss, t_grad = _torch_distill(s, t, axis, T, reduction)
    loss, grad = fl.kl_div_with_logits(s, t, axis=axis, temperature=T, reduction=reduction,
                                       return_grad=True)
    assert np.shape(loss) == np.shape(t_loss)
    assert_allclose(loss, t_loss, rtol=1e-12, atol=1e-15)
    assert_allclose(grad, t_grad, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("shape,axis", [((3, 4), -1), ((3, 4), 0), ((2, 3, 2), 1)], ids=str)
def test_kl_div_with_logits_finite_differences(rng, T, reduction, shape, axis):
    s = rng.normal(0.0, 1.5, size=shape)
    t = rng.normal(0.0, 1.5, size=shape)

    def total(v):
        return np.sum(fl.kl_div_with_logits(v, t, axis=axis, temperature=T, reduction=reduction))

    _, grad = fl.kl_div_with_logits(s, t, axis=axis, temperature=T, reduction=reduction,
                                    return_grad=True)
    assert_allclose(grad, central_diff(total, s), rtol=1e-6, atol=1e-8)


def test_kl_div_with_logits_hand_values():
    # teacher (0, ln 3): q = (1/4, 3/4); student (0, 0): p = (1/2, 1/2)
    s = np.array([[0.0, 0.0]])
    t = np.array([[0.0, LN3]])
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    loss, grad = fl.kl_div_with_logits(s, t, return_grad=True)
    assert_allclose(loss, kl, rtol=1e-14)
    assert_allclose(grad, [[0.25, -0.25]], rtol=1e-14)
    # T = 2 with the teacher logits doubled: the same q, p; the loss times T^2, grad times T
    loss, grad = fl.kl_div_with_logits(s, 2 * t, temperature=2.0, return_grad=True)
    assert_allclose(loss, 4 * kl, rtol=1e-14)
    assert_allclose(grad, [[0.5, -0.5]], rtol=1e-14)
    # "mean" divides by every element (2), "sum" and "batchmean" of one row are the row
    assert_allclose(fl.kl_div_with_logits(s, t, reduction="mean"), kl / 2, rtol=1e-14)
    assert_allclose(fl.kl_div_with_logits(s, t, reduction="sum"), kl, rtol=1e-14)
    none = fl.kl_div_with_logits(s, t, reduction="none")
    assert none.shape == (1,)
    assert_allclose(none, [kl], rtol=1e-14)
    # 1-d logits: one row; "none" gives a 0-d array
    none = fl.kl_div_with_logits(s[0], t[0], reduction="none")
    assert isinstance(none, np.ndarray) and none.shape == ()
    assert_allclose(none, kl, rtol=1e-14)


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_with_logits_equal_inputs_are_zero(rng, T, dtype):
    s = rng.normal(0.0, 3.0, size=(5, 9)).astype(dtype)
    for reduction in KL_REDUCTIONS:
        loss, grad = fl.kl_div_with_logits(s, s.copy(), temperature=T, reduction=reduction,
                                           return_grad=True)
        tiny = 1e-15 if dtype == np.float64 else 1e-6
        assert np.all(np.abs(loss) <= tiny * T * T)
        assert np.all(np.abs(grad) <= tiny * T)


def test_kl_div_with_logits_teacher_neg_inf():
    # a -inf teacher logit: q = 0 there, the term is 0 whatever the student says
    s = np.array([[0.0, 1.0, 2.0], [NINF, 0.0, 1.0], [0.5, 0.5, 0.5]])
    t = np.array([[NINF, 0.0, 0.0], [NINF, 0.0, 1.0], [NINF, NINF, 0.0]])
    for reduction in KL_REDUCTIONS:
        loss, grad = fl.kl_div_with_logits(s, t, reduction=reduction, return_grad=True)
        want_loss, want_grad = ref.kl_div_with_logits(s, t, reduction=reduction,
                                                      return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        assert_allclose(loss, want_loss, rtol=1e-13, atol=1e-16)
        assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16)
    per = fl.kl_div_with_logits(s, t, reduction="none")
    assert abs(per[1]) < 1e-16  # student = teacher, -inf at the same place
    # row 0: q = (0, 1/2, 1/2), log p = x - logsumexp(x)
    lse = math.log(1 + math.e + math.e**2)
    assert_allclose(per[0], 0.5 * (math.log(0.5) - (1 - lse)) + 0.5 * (math.log(0.5) - (2 - lse)),
                    rtol=1e-14)
    # row 2: q one-hot on class 2, p uniform: log 3
    assert_allclose(per[2], LN3, rtol=1e-14)
    # a -inf student logit where the teacher puts mass: +inf
    inf = fl.kl_div_with_logits(np.array([[NINF, 0.0]]), np.array([[0.0, 0.0]]), reduction="sum")
    assert inf == np.inf


@pytest.mark.parametrize("n", [5, 3000, 10000])  # one block, and several (blocks of 2048)
@pytest.mark.parametrize("shift_t, shift_s", [(2.0**49, 0.0), (0.0, -(2.0**49)),
                                              (2.0**49, 2.0**48), (-(2.0**49), 2.0**49)])
def test_kl_div_with_logits_huge_offsets(rng, n, shift_t, shift_s):
    # Softmax ignores a constant per row, so KL(s + c1, t + c2) = KL(s, t). The logits are
    # multiples of 1/8 and the shifts 2^48..2^49, so the shifted logits are exact in float64.
    # Found by the fuzzer: the loss was a difference of the two row maxima plus a small rest,
    # so a teacher row of equal huge logits gave -log(C) T^2 instead of KL(uniform || p).
    s = np.round(8 * rng.normal(0.0, 3.0, size=(3, n))) / 8
    t = np.round(8 * rng.normal(0.0, 3.0, size=(3, n))) / 8
    t[2] = 0.0  # a uniform teacher row
    for reduction in ("none", "sum"):
        loss, grad = fl.kl_div_with_logits(s + shift_s, t + shift_t, reduction=reduction,
                                           return_grad=True)
        want, want_grad = ref.kl_div_with_logits(s, t, reduction=reduction, return_grad=True)
        assert_allclose(loss, want, rtol=1e-12)
        assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-17)
        assert_allclose(fl.kl_div_with_logits(s + shift_s, t + shift_t, reduction=reduction),
                        want, rtol=1e-12)


@pytest.mark.parametrize("big", [1e17, -1e17, 1e30, -1e30, -9.2e18 * 1000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_with_logits_equal_huge_teacher_row(big, dtype):
    # every teacher logit the same huge value: q is uniform, the loss is KL(uniform || p)
    s = np.array([[0.0, 5.0, -1.0, 2.0]], dtype=dtype)
    t = np.full((1, 4), big, dtype=dtype)
    for T in (1.0, 0.001, 3.0):
        want = ref.kl_div_with_logits(s, np.zeros((1, 4)), temperature=T, reduction="sum")
        got = fl.kl_div_with_logits(s, t, temperature=T, reduction="sum")
        assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-5)


def test_kl_div_with_logits_float32_50257(rng):
    V = 50257
    s = rng.normal(0.0, 3.0, size=(2, V)).astype(np.float32)
    t = (s + rng.normal(0.0, 1.0, size=(2, V))).astype(np.float32)
    for T in (1.0, 2.0):
        per = fl.kl_div_with_logits(s, t, temperature=T, reduction="none")
        loss, grad = fl.kl_div_with_logits(s, t, temperature=T, return_grad=True)
        want_per, want_grad = ref.kl_div_with_logits(s, t, temperature=T, reduction="none",
                                                     return_grad=True)
        assert per.dtype == np.float32 and grad.dtype == np.float32
        assert_allclose(per, want_per, rtol=1e-5)
        assert_allclose(loss, want_per.mean(), rtol=1e-5)
        assert np.abs(grad.astype(np.float64) * 2 - want_grad).max() < 1e-6


def test_kl_div_with_logits_bad_input():
    s = np.zeros((3, 4))
    for t in (np.zeros((3, 5)), np.zeros((4, 3)), np.zeros(4), np.zeros((1, 4))):
        with pytest.raises(ValueError, match="teacher_logits"):
            fl.kl_div_with_logits(s, t)
    for T in (0.0, -1.0, float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            fl.kl_div_with_logits(s, s, temperature=T)
        with pytest.raises(ValueError, match="temperature"):
            fl.kl_div_with_logits(s, s, temperature=T, return_grad=True)


# =========================================================================== gaussian_kl

GKL_SHAPES = [(4, 3), (5,), (2, 3, 4), (6, 1), (1, 64), (3, 0)]


@pytest.mark.parametrize("shape", GKL_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gaussian_kl_matches_reference(rng, shape, reduction, dtype):
    mu = rng.normal(0.0, 1.0, size=shape).astype(dtype)
    lv = rng.normal(0.0, 1.0, size=shape).astype(dtype)
    loss, grad = check("gaussian_kl", (mu, lv), reduction=reduction, n_diff=2)
    if reduction == "none":
        assert loss.shape == shape[:-1]


def test_gaussian_kl_hand_values():
    assert fl.gaussian_kl([0.0], [0.0]) == 0
    loss, (g_mu, g_lv) = fl.gaussian_kl(np.zeros((2, 3)), np.zeros((2, 3)), return_grad=True)
    assert loss == 0 and np.all(g_mu == 0) and np.all(g_lv == 0)
    assert_allclose(fl.gaussian_kl([1.0], [0.0]), 0.5, rtol=1e-15)
    # logvar ln 2: -0.5 (1 + ln 2 - 2) = 0.5 (1 - ln 2)
    assert_allclose(fl.gaussian_kl([0.0], [LN2]), 0.5 * (1 - LN2), rtol=1e-14)
    # rows: per row sums over the last axis; mean over rows
    mu = np.array([[1.0, 0.0], [0.0, 2.0]])
    lv = np.array([[0.0, LN2], [0.0, 0.0]])
    rows = [0.5 + 0.5 * (1 - LN2), 2.0]
    assert_allclose(fl.gaussian_kl(mu, lv, reduction="none"), rows, rtol=1e-14)
    assert_allclose(fl.gaussian_kl(mu, lv), sum(rows) / 2, rtol=1e-14)
    assert_allclose(fl.gaussian_kl(mu, lv, reduction="sum"), sum(rows), rtol=1e-14)
    # gradients (mu, (exp(logvar) - 1) / 2), times 1/rows for the mean
    _, (g_mu, g_lv) = fl.gaussian_kl(mu, lv, return_grad=True)
    assert_allclose(g_mu, mu / 2, rtol=1e-15)
    assert_allclose(g_lv, [[0.0, 0.25], [0.0, 0.0]], rtol=1e-14, atol=1e-17)
    # 1-d input, "none": a 0-d array
    none = fl.gaussian_kl([1.0, 0.0], [0.0, 0.0], reduction="none")
    assert isinstance(none, np.ndarray) and none.shape == ()
    assert_allclose(none, 0.5, rtol=1e-15)


@pytest.mark.parametrize("shape", [(3, 4), (5,), (2, 2, 3)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_kl_finite_differences(rng, shape, reduction):
    mu = rng.normal(size=shape)
    lv = rng.normal(size=shape)
    _, (g_mu, g_lv) = fl.gaussian_kl(mu, lv, reduction=reduction, return_grad=True)
    fd_mu = central_diff(lambda m: np.sum(fl.gaussian_kl(m, lv, reduction=reduction)), mu)
    fd_lv = central_diff(lambda v: np.sum(fl.gaussian_kl(mu, v, reduction=reduction)), lv)
    assert_allclose(g_mu, fd_mu, rtol=1e-7, atol=1e-9)
    assert_allclose(g_lv, fd_lv, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("shape", [(4, 3), (5,), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_kl_matches_torch(rng, shape, reduction):
    torch = _torch()
    mu = rng.normal(size=shape)
    lv = rng.normal(size=shape)
    M = torch.tensor(mu, requires_grad=True)
    V = torch.tensor(lv, requires_grad=True)
    per = -0.5 * torch.sum(1 + V - M**2 - V.exp(), dim=-1)
    t_loss = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    t_loss.backward(torch.ones_like(t_loss))
    loss, (g_mu, g_lv) = fl.gaussian_kl(mu, lv, reduction=reduction, return_grad=True)
    assert np.shape(loss) == tuple(t_loss.shape)
    assert_allclose(loss, t_loss.detach().numpy(), rtol=1e-13)
    assert_allclose(g_mu, M.grad.numpy(), rtol=1e-14)
    assert_allclose(g_lv, V.grad.numpy(), rtol=1e-13, atol=1e-16)


def test_gaussian_kl_large_and_small_logvar():
    mu = np.array([[0.0, 1.0]])
    lv = np.array([[80.0, -80.0]])
    loss, (g_mu, g_lv) = fl.gaussian_kl(mu, lv, reduction="sum", return_grad=True)
    assert np.isfinite(loss) and np.all(np.isfinite(g_lv))
    want = 0.5 * (math.exp(80.0) - 1 - 80.0) + 0.5 * (1.0 + math.exp(-80.0) - 1 + 80.0)
    assert_allclose(loss, want, rtol=1e-14)
    assert_allclose(g_lv, [[0.5 * math.expm1(80.0), 0.5 * math.expm1(-80.0)]], rtol=1e-14)
    # tiny logvar: exp(v) - 1 - v ~ v^2/2 is positive; the loss never goes below 0
    lv = np.array([1e-6, -1e-6, 1e-9])
    assert fl.gaussian_kl(np.zeros(3), lv, reduction="sum") >= 0


def test_gaussian_kl_bad_input():
    for lv in (np.zeros((3, 5)), np.zeros((4, 3)), np.zeros(4), np.zeros((1, 4))):
        with pytest.raises(ValueError, match="logvar"):
            fl.gaussian_kl(np.zeros((3, 4)), lv)
    with pytest.raises(ValueError):
        fl.gaussian_kl(np.float64(0.0), np.float64(0.0))  # 0-d: no last axis
    with pytest.raises(ValueError):
        fl.gaussian_kl(0.0, 0.0, return_grad=True)


# =========================================================================== every function
# return_grad, dtypes, reductions, empty inputs, memory layouts, read-only inputs


def _kl_case(rng, shape, dtype):
    return (log_probs(rng, shape, dtype=dtype), kl_target(rng, shape, False, dtype)), {}, 1


def _kl_log_case(rng, shape, dtype):
    return ((log_probs(rng, shape, dtype=dtype), kl_target(rng, shape, True, dtype)),
            dict(log_target=True), 1)


def _distill_case(rng, shape, dtype):
    s = rng.normal(0.0, 2.0, size=shape).astype(dtype)
    t = rng.normal(0.0, 2.0, size=shape).astype(dtype)
    return (s, t), dict(temperature=2.0), 1


def _gauss_case(rng, shape, dtype):
    mu = rng.normal(size=shape).astype(dtype)
    lv = rng.normal(size=shape).astype(dtype)
    return (mu, lv), {}, 2


CASES = {"kl_div": _kl_case, "kl_div-log_target": _kl_log_case,
         "kl_div_with_logits": _distill_case, "gaussian_kl": _gauss_case}
FN = {"kl_div-log_target": "kl_div"}


def _fn(case):
    return FN.get(case, case)


def _reductions(case):
    return REDUCTIONS if _fn(case) == "gaussian_kl" else KL_REDUCTIONS


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_return_grad_and_dtypes(rng, case, dtype):
    args, kw, n_diff = CASES[case](rng, (5, 6), dtype)
    f = getattr(fl, _fn(case))
    for reduction in _reductions(case):
        loss = f(*args, reduction=reduction, **kw)
        assert np.asarray(loss).dtype == dtype
        out = f(*args, reduction=reduction, return_grad=True, **kw)
        assert isinstance(out, tuple) and len(out) == 2
        for g, a in zip(_grads(out[1]), args[:n_diff]):
            assert g.shape == a.shape and g.dtype == dtype
        check(_fn(case), args, reduction=reduction, n_diff=n_diff, **kw)
    # the default reduction: "mean" (kl_div, gaussian_kl) or "batchmean" (kl_div_with_logits)
    default = "batchmean" if _fn(case) == "kl_div_with_logits" else "mean"
    assert_allclose(f(*args, **kw), f(*args, reduction=default, **kw), rtol=0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,grad_rtol", LOW)
def test_16_bit_inputs(rng, case, dtype, grad_rtol):
    args, kw, n_diff = CASES[case](rng, (5, 6), np.float64)
    args = tuple(a.astype(dtype) for a in args)
    args64 = tuple(a.astype(np.float64) for a in args)
    f, r = getattr(fl, _fn(case)), getattr(ref, _fn(case))
    for reduction in _reductions(case):
        loss, grad = f(*args, reduction=reduction, return_grad=True, **kw)
        assert np.asarray(loss).dtype == np.float32
        want_loss, want_grad = r(*args64, reduction=reduction, return_grad=True, **kw)
        assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-6)
        for g, w, a in zip(_grads(grad), _grads(want_grad), args):
            assert g.dtype == np.dtype(dtype) and g.shape == a.shape
            scale = float(np.max(np.abs(w)))
            assert_allclose(g.astype(np.float64), w, rtol=grad_rtol, atol=scale * 2**-10)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", None, "batch_mean"])
def test_unknown_reduction(rng, case, reduction):
    args, kw, _ = CASES[case](rng, (3, 4), np.float64)
    with pytest.raises(ValueError, match="reduction"):
        getattr(fl, _fn(case))(*args, reduction=reduction, **kw)
    if _fn(case) == "gaussian_kl":  # no batchmean for gaussian_kl
        with pytest.raises(ValueError, match="reduction"):
            fl.gaussian_kl(*args, reduction="batchmean")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty(case, dtype):
    f = getattr(fl, _fn(case))
    x = np.zeros((0, 5), dtype=dtype)
    _, kw, n_diff = CASES[case](np.random.default_rng(0), (1, 5), dtype)
    for reduction in _reductions(case):
        with np.errstate(invalid="ignore", divide="ignore"):
            loss, grad = f(x, x, reduction=reduction, return_grad=True, **kw)
        for g in _grads(grad):
            assert g.shape == (0, 5) and g.dtype == dtype
        if reduction == "none":
            want_shape = (0, 5) if _fn(case) == "kl_div" else (0,)
            assert isinstance(loss, np.ndarray) and loss.shape == want_shape
            assert loss.dtype == dtype
        elif reduction == "sum":
            assert loss == 0 and isinstance(loss, np.floating)
        else:  # mean or batchmean of nothing: NaN, as torch
            assert np.isnan(loss) and isinstance(loss, np.floating)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", LAYOUTS[1:])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_contiguous_inputs(rng, case, name, dtype):
    args, kw, n_diff = CASES[case](rng, (6, 7), dtype)
    f = getattr(fl, _fn(case))
    views = tuple(layout(a, name) for a in args)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    for reduction in _reductions(case):
        loss, grad = f(*views, reduction=reduction, return_grad=True, **kw)
        c_loss, c_grad = f(*args, reduction=reduction, return_grad=True, **kw)
        assert_allclose(loss, c_loss, rtol=rtol, atol=1e-300)
        for g, cg in zip(_grads(grad), _grads(c_grad)):
            assert_allclose(g, cg, rtol=rtol, atol=1e-9 if dtype == np.float32 else 1e-17)
        check(_fn(case), views, reduction=reduction, n_diff=n_diff, **kw)
    # a mix: the first argument reversed on its last axis, the second a plain C copy
    mixed = (args[0][:, ::-1],) + tuple(np.ascontiguousarray(a[:, ::-1]) for a in args[1:])
    plain = tuple(np.ascontiguousarray(a) for a in mixed)
    for reduction in _reductions(case):
        a_loss, a_grad = f(*mixed, reduction=reduction, return_grad=True, **kw)
        b_loss, b_grad = f(*plain, reduction=reduction, return_grad=True, **kw)
        assert_allclose(a_loss, b_loss, rtol=rtol, atol=1e-300)
        for g, h in zip(_grads(a_grad), _grads(b_grad)):
            assert_allclose(g, h, rtol=rtol, atol=1e-9 if dtype == np.float32 else 1e-17)
    for a, v in zip(args, views):
        np.testing.assert_array_equal(v, a)  # inputs untouched


@pytest.mark.parametrize("case", CASES)
def test_read_only_inputs(rng, case):
    args, kw, n_diff = CASES[case](rng, (5, 6), np.float64)
    args = tuple(read_only(a) for a in args)
    for reduction in _reductions(case):
        check(_fn(case), args, reduction=reduction, n_diff=n_diff, **kw)


@pytest.mark.parametrize("case", CASES)
def test_list_and_integer_inputs(case):
    a = [[-1.0, -0.5, -2.0], [-0.25, -3.0, -1.5]]
    b = [[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]]
    if case == "kl_div-log_target":
        b = np.log(b).tolist()
    _, kw, _ = CASES[case](np.random.default_rng(0), (1, 3), np.float64)
    f, r = getattr(fl, _fn(case)), getattr(ref, _fn(case))
    got = f(a, b, reduction="none", **kw)
    assert got.dtype == np.float64
    assert_allclose(got, r(np.array(a), np.array(b), reduction="none", **kw), rtol=1e-14)
    ai = np.array(a, dtype=np.float64).round().astype(np.int32)  # integer first argument
    got = f(ai, b, reduction="sum", **kw)
    assert np.asarray(got).dtype == np.float64
    assert_allclose(got, r(ai.astype(np.float64), np.array(b), reduction="sum", **kw),
                    rtol=1e-14)


# --------------------------------------------------------------------- gaussian_kl grad_out
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gaussian_kl_grad_out(rng, dt, reduction):
    for shape in ((5, 4), (2, 3, 6), (7,)):
        mu, lv = rng.normal(size=shape).astype(dt), rng.normal(size=shape).astype(dt)
        contract.check_tuple_grad_out(fl.gaussian_kl, (mu, lv), (0, 1), reduction=reduction)
    other = np.float64 if dt == np.float32 else np.float32  # two dtypes: each its own
    mu, lv = rng.normal(size=(5, 4)).astype(dt), rng.normal(size=(5, 4)).astype(other)
    contract.check_tuple_grad_out(fl.gaussian_kl, (mu, lv), (0, 1), reduction=reduction)
    # crossed: each input receives the other's gradient; Fortran-order buffers
    mu, lv = rng.normal(size=(5, 4)).astype(dt), rng.normal(size=(5, 4)).astype(dt)
    want_loss, (gm, gv) = fl.gaussian_kl(mu, lv, reduction=reduction, return_grad=True)
    a, b = mu.copy(), lv.copy()
    loss, got = fl.gaussian_kl(a, b, reduction=reduction, return_grad=True, grad_out=(b, a))
    assert got[0] is b and got[1] is a
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(b, gm)
    np.testing.assert_array_equal(a, gv)
    go = (np.zeros((5, 4), dt, order="F"), np.zeros((10, 8), dt)[::2, ::2])
    _, got = fl.gaussian_kl(mu, lv, reduction=reduction, return_grad=True, grad_out=go)
    np.testing.assert_array_equal(go[0], gm)
    np.testing.assert_array_equal(go[1], gv)


def test_gaussian_kl_grad_out_errors(rng):
    mu, lv = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    contract.check_tuple_grad_out_errors(fl.gaussian_kl, (mu, lv), (0, 1))
    contract.check_tuple_grad_out_untouched(fl.gaussian_kl, (mu, lv), (0, 1), ValueError,
                                            reduction="avg")
    contract.check_tuple_grad_out_untouched(fl.gaussian_kl, (mu, lv.T.copy()), (0, 1),
                                            ValueError)  # shapes differ
