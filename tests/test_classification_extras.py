"""cross_entropy's z_loss and softcap, softmax_focal_loss, multi_margin_loss, perplexity and
bits_per_byte: values and gradients against fastloss.reference (float64), central finite
differences, hand-computed values and PyTorch (composed from torch ops where PyTorch has no such
option); stability, memory layouts, 16-bit dtypes, empty inputs, bad input."""

from __future__ import annotations

import itertools
import math

import ml_dtypes
import numpy as np
import pytest
import _contracts as contract
from conftest import LAYOUTS, REDUCTIONS, central_diff, layout, read_only
from conftest import assert_grad_matches_central_diff, fd_case_inputs, index_target, logits_of
from conftest import prob_target, torch_case_inputs

import fastloss as fl
from fastloss import reference as ref

assert_allclose = np.testing.assert_allclose
NINF = -np.inf
LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)

# tolerances against the float64 reference evaluated on the same input values; grad_atol is
# relative to max(1, largest |reference gradient|)
TOL = {
    np.float64: dict(loss_rtol=1e-12, grad_rtol=1e-11, grad_atol=1e-14),
    np.float32: dict(loss_rtol=1e-5, grad_rtol=1e-5, grad_atol=1e-6),
}
LOW = [pytest.param(np.float16, 2**-10, id="float16"),
       pytest.param(ml_dtypes.bfloat16, 2**-7, id="bfloat16")]
LOW_DTYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


# --------------------------------------------------------------------------- helpers


def _torch():
    return pytest.importorskip("torch")


def loss_dtype(x):
    """The dtype of the loss for a first argument ``x`` (16-bit: float32)."""
    x = np.asarray(x)
    return np.dtype(np.float32) if x.dtype in LOW_DTYPES else x.dtype


def check(fn, args, *, reduction="mean", tol=None, ref_args=None, **kw):
    """fastloss (loss-only and loss+grad calls) against the float64 reference on the same
    values; returns the fastloss loss and gradient."""
    f, r = getattr(fl, fn), getattr(ref, fn)
    x = np.asarray(args[0])
    tol = tol or TOL[np.dtype(loss_dtype(x)).type]
    loss_only = f(*args, reduction=reduction, **kw)
    loss, grad = f(*args, reduction=reduction, return_grad=True, **kw)
    want_loss, want_grad = r(*(ref_args or args), reduction=reduction, return_grad=True, **kw)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == np.shape(want_loss)
    else:
        assert isinstance(loss, np.floating) and not isinstance(loss, np.ndarray)
    dt = loss_dtype(x)
    assert np.asarray(loss).dtype == dt and np.asarray(loss_only).dtype == dt
    assert grad.shape == x.shape and grad.dtype == x.dtype
    # the loss-only pass and the fused pass agree to the last bit or two
    assert_allclose(loss_only, loss, rtol=8 * np.finfo(dt).eps, atol=0, equal_nan=True)
    assert_allclose(loss, want_loss, rtol=tol["loss_rtol"], atol=1e-300, equal_nan=True)
    scale = max(1.0, float(np.max(np.abs(want_grad)))) if want_grad.size else 1.0
    assert_allclose(grad.astype(np.float64), want_grad, rtol=tol["grad_rtol"],
                    atol=tol["grad_atol"] * scale)
    return loss, grad


# =========================================================================== cross_entropy
# z_loss (PaLM) and softcap (Gemma 2)

Z_LOSSES = (0.0, 1e-3, 0.5)
SOFTCAPS = (None, 30.0, 2.5)


def _weight(rng, kind, C):
    return None if kind == "none" else rng.uniform(0.5, 2.0, size=C)


@pytest.mark.parametrize(
    "z,cap,eps,wkind,ignore,reduction",
    list(itertools.product(Z_LOSSES, SOFTCAPS, (0.0, 0.1), ("none", "positive"), (None, -100),
                           REDUCTIONS)),
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ce_zloss_softcap_option_product(rng, z, cap, eps, wkind, ignore, reduction, dtype):
    shape = (9, 5)
    x = logits_of(rng, shape, dtype)
    t = index_target(rng, shape, -1, ignore_index=ignore)
    kw = dict(weight=_weight(rng, wkind, 5), label_smoothing=eps, z_loss=z, softcap=cap)
    loss, grad = check("cross_entropy", (x, t), reduction=reduction, **kw)
    if ignore is not None:  # ignored rows: no loss, no gradient
        ignored = t == ignore
        assert ignored.any()
        assert np.all(grad[ignored] == 0)
        if reduction == "none":
            assert np.all(loss[ignored] == 0)


@pytest.mark.parametrize("z,cap", [(1e-3, None), (0.5, None), (0.0, 2.5), (1e-3, 30.0),
                                   (0.5, 2.5)])
@pytest.mark.parametrize("wkind", ["none", "positive"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ce_zloss_softcap_prob_targets(rng, z, cap, wkind, eps, reduction, dtype):
    shape = (7, 5)
    x = logits_of(rng, shape, dtype)
    y = prob_target(rng, shape, -1, dtype)
    y[0] = [0, 0, 1, 0, 0]  # a one-hot row and a row with a zero entry
    y[1, 3] = 0.0
    check("cross_entropy", (x, y), reduction=reduction, weight=_weight(rng, wkind, 5),
          label_smoothing=eps, z_loss=z, softcap=cap)


def test_ce_zloss_softcap_defaults_are_plain_cross_entropy(rng):
    x = logits_of(rng, (6, 7))
    t = index_target(rng, x.shape, -1, ignore_index=-100)
    for reduction in REDUCTIONS:
        a = fl.cross_entropy(x, t, reduction=reduction, return_grad=True)
        b = fl.cross_entropy(x, t, reduction=reduction, return_grad=True, z_loss=0.0,
                             softcap=None)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # z_loss adds z lse^2 to every non-ignored row
    none = fl.cross_entropy(x, t, reduction="none", z_loss=0.25)
    lse = ref.logsumexp(x, axis=1)
    want = np.where(t == -100, 0.0, ref.cross_entropy(x, t, reduction="none") + 0.25 * lse**2)
    assert_allclose(none, want, rtol=1e-13)


def test_ce_zloss_equals_probability_one_hot(rng):
    # index targets and one-hot probability targets agree for "sum" and "none" (unweighted)
    x = logits_of(rng, (6, 5))
    t = rng.integers(0, 5, size=6)
    onehot = np.eye(5)[t]
    for reduction in ("sum", "none", "mean"):
        a, ga = fl.cross_entropy(x, t, reduction=reduction, z_loss=0.1, softcap=4.0,
                                 return_grad=True)
        b, gb = fl.cross_entropy(x, onehot, reduction=reduction, z_loss=0.1, softcap=4.0,
                                 return_grad=True)
        assert_allclose(a, b, rtol=1e-13)
        assert_allclose(ga, gb, rtol=1e-12, atol=1e-16)


CE_SHAPES = [((6, 7), 0), ((3, 4, 5), 1), ((3, 4, 5), 0), ((2, 3, 4), -1), ((5,), 0),
             ((2, 7, 3, 4), 1)]


@pytest.mark.parametrize("shape,axis", CE_SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ce_zloss_softcap_axes_and_3d(rng, shape, axis, kind, reduction, dtype):
    x = logits_of(rng, shape, dtype)
    if kind == "index":
        t = index_target(rng, shape, axis, ignore_index=-100)
    else:
        t = prob_target(rng, shape, axis, dtype)
    check("cross_entropy", (x, t), reduction=reduction, axis=axis, z_loss=0.01, softcap=3.0,
          weight=rng.uniform(0.5, 2.0, size=shape[axis]), label_smoothing=0.05)


def test_ce_zloss_softcap_float32_50257(rng):
    B, V = 2, 50257
    x = logits_of(rng, (B, V), np.float32)
    x[1, :100] = 200.0  # some logits well past the cap
    t = rng.integers(0, V, size=B)
    kw = dict(z_loss=1e-4, softcap=30.0, label_smoothing=0.1)
    per_row = fl.cross_entropy(x, t, reduction="none", **kw)
    loss, grad = fl.cross_entropy(x, t, return_grad=True, **kw)
    want_rows, want_grad = ref.cross_entropy(x, t, reduction="none", return_grad=True, **kw)
    assert per_row.dtype == np.float32 and grad.dtype == np.float32
    assert_allclose(per_row, want_rows, rtol=1e-5)
    assert_allclose(loss, want_rows.mean(), rtol=1e-5)
    assert np.abs(grad.astype(np.float64) * B - want_grad).max() < 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("big", [1e30, np.inf])
def test_softcap_makes_huge_logits_finite(dtype, big):
    c = 5.0
    x = np.array([[big, -big, 0.0, 1.0], [0.0, big, -big, 2.0], [-big, -big, 0.0, 0.5]],
                 dtype=dtype)
    t = np.array([1, 0, 1])  # targets at +big, 0 and -big
    for reduction in REDUCTIONS:
        loss, grad = fl.cross_entropy(x, t, reduction=reduction, softcap=c, z_loss=1e-2,
                                      return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        # the capped logits are +-c exactly at +-big: the same loss as those logits (the cap
        # leaves c * tanh(+-1) at the others, so compare with the capped input)
        capped = c * np.tanh(x.astype(np.float64) / c)
        want = ref.cross_entropy(capped, t, reduction=reduction, z_loss=1e-2)
        assert_allclose(loss, want, rtol=TOL[dtype]["loss_rtol"] * 10)
        # tanh is flat out there: no gradient reaches the huge logits
        assert np.all(grad[np.abs(x) == big] == 0)
        want_loss, want_grad = ref.cross_entropy(x, t, reduction=reduction, softcap=c,
                                                 z_loss=1e-2, return_grad=True)
        assert_allclose(grad, want_grad, rtol=TOL[dtype]["grad_rtol"],
                        atol=TOL[dtype]["grad_atol"])


def test_softcap_neg_inf_mask_becomes_minus_cap():
    # -inf logits become -c: they get probability mass again (by design, as Gemma 2)
    c = 2.0
    x = np.array([[NINF, 0.0, 1.0]])
    got = fl.cross_entropy(x, [1], softcap=c, reduction="none")
    capped = np.array([-c, 0.0, c * math.tanh(0.5)])
    want = math.log(np.exp(capped).sum()) - 0.0
    assert_allclose(got, [want], rtol=1e-14)


def test_ce_hand_value_zloss():
    # logits [0, ln 3]: p = (1/4, 3/4), lse = ln 4
    x = np.array([[0.0, LN3]])
    z = 0.1
    loss, grad = fl.cross_entropy(x, [1], z_loss=z, return_grad=True)
    assert_allclose(loss, math.log(4 / 3) + z * LN4**2, rtol=1e-15)  # 0.47986...
    p = np.array([0.25, 0.75])
    assert_allclose(grad[0], p - [0, 1] + 2 * z * LN4 * p, rtol=1e-14)
    # target 0: ln 4 + z ln(4)^2; with class weight 3 on class 0: both terms times 3
    assert_allclose(fl.cross_entropy(x, [0], z_loss=z, reduction="sum"), LN4 + z * LN4**2,
                    rtol=1e-15)
    assert_allclose(fl.cross_entropy(x, [0], z_loss=z, weight=[3.0, 1.0], reduction="sum"),
                    3 * (LN4 + z * LN4**2), rtol=1e-15)
    # the weighted mean divides by the weight: the same as one unweighted row
    assert_allclose(fl.cross_entropy(x, [0], z_loss=z, weight=[3.0, 1.0]), LN4 + z * LN4**2,
                    rtol=1e-15)
    # probability target (1/2, 1/2): (ln 4 + ln 4/3)/2 + z ln(4)^2
    assert_allclose(fl.cross_entropy(x, np.array([[0.5, 0.5]]), z_loss=z),
                    (LN4 + math.log(4 / 3)) / 2 + z * LN4**2, rtol=1e-15)


def test_ce_hand_value_softcap():
    # c = 2, x = (0, 2 artanh(1/2)): the capped logits are (0, 1)
    c = 2.0
    x = np.array([[0.0, c * math.atanh(0.5)]])
    loss, grad = fl.cross_entropy(x, [0], softcap=c, return_grad=True)
    s = 1 + math.e
    assert_allclose(loss, math.log(s), rtol=1e-15)
    # d/dx' = p - onehot = (1/s - 1, e/s); dx'/dx = 1 - tanh^2 = (1, 3/4)
    assert_allclose(grad[0], [(1 / s - 1) * 1.0, (math.e / s) * 0.75], rtol=1e-14)


FD_CE_CASES = [
    ("z", (3, 4), -1, "index", dict(z_loss=0.3)),
    ("cap", (3, 4), -1, "index", dict(softcap=1.0)),
    ("z+cap+weight+ignore+smooth", (4, 4), -1, "index",
     dict(z_loss=0.2, softcap=1.5, weight=[0.5, 2.0, 1.0, 1.5], ignore_index=1,
          label_smoothing=0.2)),
    ("probs z+cap", (3, 4), -1, "probs", dict(z_loss=0.2, softcap=1.5,
                                              weight=[0.5, 2.0, 1.0, 1.5])),
    ("axis1_3d", (2, 3, 2), 1, "index", dict(z_loss=0.1, softcap=2.0)),
    ("axis0_probs", (3, 4), 0, "probs", dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)),
]


@pytest.mark.parametrize("name,shape,axis,kind,kw", FD_CE_CASES, ids=[c[0] for c in FD_CE_CASES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_zloss_softcap_finite_differences(rng, name, shape, axis, kind, kw, reduction):
    x, t = fd_case_inputs(rng, shape, axis, kind, kw)
    assert_grad_matches_central_diff(fl.cross_entropy, x, t, axis=axis, reduction=reduction, **kw)
    # the reference's gradient passes the same check
    assert_grad_matches_central_diff(ref.cross_entropy, x, t, axis=axis, reduction=reduction,
                                     **kw)


def _torch_ce(x, t, *, axis=-1, weight=None, ignore_index=-100, reduction="mean",
              label_smoothing=0.0, z_loss=0.0, softcap=None):
    """cross_entropy with z_loss and softcap composed from torch ops, float64 autograd."""
    torch = _torch()
    F = torch.nn.functional
    cax = 1 if x.ndim > 1 else 0
    X = torch.tensor(np.ascontiguousarray(np.moveaxis(x, axis, cax)), dtype=torch.float64,
                     requires_grad=True)
    Xc = softcap * torch.tanh(X / softcap) if softcap is not None else X
    W = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    lse = torch.logsumexp(Xc, dim=cax)
    if np.asarray(t).dtype.kind == "f":
        T = torch.tensor(np.ascontiguousarray(np.moveaxis(t, axis, cax)))
        per = F.cross_entropy(Xc, T, weight=W, reduction="none", label_smoothing=label_smoothing)
        per = per + z_loss * lse**2
        denom = per.numel()
    else:
        T = torch.tensor(np.asarray(t, dtype=np.int64))
        per = F.cross_entropy(Xc, T, weight=W, ignore_index=ignore_index, reduction="none",
                              label_smoothing=label_smoothing)
        valid = T != ignore_index
        tv = torch.where(valid, T, 0)
        w_t = torch.ones_like(lse) if W is None else W[tv]
        w_t = torch.where(valid, w_t, 0.0)
        per = per + w_t * z_loss * lse**2
        denom = w_t.sum()
    loss = {"none": per, "sum": per.sum(), "mean": per.sum() / denom}[reduction]
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), np.moveaxis(X.grad.numpy(), cax, axis)


TORCH_CE_CASES = [
    ("z", (6, 5), -1, "index", dict(z_loss=1e-3)),
    ("big z", (6, 5), -1, "index", dict(z_loss=0.5)),
    ("cap", (6, 5), -1, "index", dict(softcap=2.5)),
    ("cap30", (6, 5), -1, "index", dict(softcap=30.0)),
    ("all", (8, 5), -1, "index", dict(z_loss=0.1, softcap=2.5, weight="w", ignore_index=-100,
                                      label_smoothing=0.1)),
    ("all custom ignore", (8, 5), -1, "index", dict(z_loss=0.1, softcap=4.0, weight="w",
                                                    ignore_index=3)),
    ("probs", (6, 5), -1, "probs", dict(z_loss=0.1, softcap=2.5, weight="w",
                                        label_smoothing=0.1)),
    ("NCd1d2", (3, 5, 2, 4), 1, "index", dict(z_loss=0.01, softcap=3.0, weight="w",
                                              ignore_index=-100)),
    ("NCd1d2 probs", (3, 5, 2, 4), 1, "probs", dict(z_loss=0.01, softcap=3.0)),
    ("1d", (5,), 0, "index", dict(z_loss=0.2, softcap=1.0, weight="w")),
]


@pytest.mark.parametrize("name,shape,axis,kind,kw", TORCH_CE_CASES,
                         ids=[c[0] for c in TORCH_CE_CASES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_zloss_softcap_matches_torch(rng, name, shape, axis, kind, kw, reduction):
    _torch()
    x, t, kw = torch_case_inputs(rng, shape, axis, kind, kw)
    loss, grad = fl.cross_entropy(x, t, axis=axis, reduction=reduction, return_grad=True, **kw)
    t_loss, t_grad = _torch_ce(x, t, axis=axis, reduction=reduction, **kw)
    assert np.shape(loss) == np.shape(t_loss)
    assert_allclose(loss, t_loss, rtol=1e-12)
    assert_allclose(grad, t_grad, rtol=1e-11, atol=1e-15)
    r_loss, r_grad = ref.cross_entropy(x, t, axis=axis, reduction=reduction, return_grad=True,
                                       **kw)
    assert_allclose(r_loss, t_loss, rtol=1e-12)
    assert_allclose(r_grad, t_grad, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("name", LAYOUTS[1:])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_ce_zloss_softcap_grad_out_in_place(rng, name, kind):
    x = logits_of(rng, (6, 7))
    t = index_target(rng, x.shape, -1, -100) if kind == "index" else prob_target(rng, x.shape, -1)
    kw = dict(z_loss=0.05, softcap=3.0, label_smoothing=0.1)
    want_loss, want_grad = ref.cross_entropy(x, t, return_grad=True, **kw)
    xv = layout(x, name)
    loss, grad = fl.cross_entropy(xv, t, return_grad=True, grad_out=xv, **kw)
    assert grad is xv
    assert_allclose(loss, want_loss, rtol=1e-12)
    assert_allclose(xv, want_grad, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("dtype,grad_rtol", LOW)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_zloss_softcap_16_bit(rng, dtype, grad_rtol, reduction):
    x = logits_of(rng, (6, 40)).astype(dtype)
    t = index_target(rng, x.shape, -1, -100)
    kw = dict(z_loss=1e-2, softcap=5.0, reduction=reduction)
    loss, grad = fl.cross_entropy(x, t, return_grad=True, **kw)
    want_loss, want_grad = ref.cross_entropy(x.astype(np.float64), t, return_grad=True, **kw)
    assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.dtype(dtype)
    assert_allclose(loss, want_loss, rtol=2e-5)
    scale = float(np.max(np.abs(want_grad)))
    assert_allclose(grad.astype(np.float64), want_grad, rtol=grad_rtol, atol=scale * 2**-10)


@pytest.mark.parametrize("z", [-1e-3, -1.0, float("nan"), -float("inf")])
def test_ce_bad_z_loss(z):
    with pytest.raises(ValueError, match="z_loss"):
        fl.cross_entropy(np.zeros((2, 3)), [0, 1], z_loss=z)
    with pytest.raises(ValueError, match="z_loss"):
        fl.cross_entropy(np.zeros((2, 3)), np.full((2, 3), 1 / 3), z_loss=z, return_grad=True)


@pytest.mark.parametrize("c", [0.0, -1.0, -0.0, float("nan"), float("inf"), -float("inf")])
def test_ce_bad_softcap(c):
    with pytest.raises(ValueError, match="softcap"):
        fl.cross_entropy(np.zeros((2, 3)), [0, 1], softcap=c)
    with pytest.raises(ValueError, match="softcap"):
        fl.cross_entropy(np.zeros((2, 3)), np.full((2, 3), 1 / 3), softcap=c, return_grad=True)


# =========================================================================== softmax focal loss

GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.7)
ALPHAS = ("none", "scalar", "array")


def _alpha(rng, kind, C):
    if kind == "none":
        return None
    if kind == "scalar":
        return 0.25
    return rng.uniform(0.1, 1.0, size=C)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("akind", ALPHAS)
@pytest.mark.parametrize("ignore", [None, -100, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_focal_matches_reference(rng, gamma, akind, ignore, reduction, dtype):
    shape = (9, 6)
    x = logits_of(rng, shape, dtype)
    t = index_target(rng, shape, -1, ignore_index=ignore)
    kw = dict(alpha=_alpha(rng, akind, 6), gamma=gamma)
    if ignore is not None:
        kw["ignore_index"] = ignore
    loss, grad = check("softmax_focal_loss", (x, t), reduction=reduction, **kw)
    if ignore is not None:
        ignored = t == ignore
        assert np.all(grad[ignored] == 0)
        if reduction == "none":
            assert np.all(loss[ignored] == 0)


FOCAL_SHAPES = [((3, 4, 5), 1), ((3, 4, 5), -1), ((6, 7), 0), ((5,), 0), ((2, 300), -1),
                ((16, 2), -1), ((4, 1), -1)]


@pytest.mark.parametrize("shape,axis", FOCAL_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_focal_shapes_and_axes(rng, shape, axis, reduction, dtype):
    x = logits_of(rng, shape, dtype)
    t = index_target(rng, shape, axis, ignore_index=-100)
    check("softmax_focal_loss", (x, t), reduction=reduction, axis=axis, gamma=1.5,
          alpha=rng.uniform(0.2, 1.0, size=shape[axis]))


@pytest.mark.parametrize("dtype,grad_rtol", LOW)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_focal_16_bit(rng, dtype, grad_rtol, reduction, gamma):
    x = logits_of(rng, (6, 40)).astype(dtype)
    t = index_target(rng, x.shape, -1, -100)
    kw = dict(reduction=reduction, gamma=gamma, alpha=0.5)
    loss, grad = fl.softmax_focal_loss(x, t, return_grad=True, **kw)
    want_loss, want_grad = ref.softmax_focal_loss(x.astype(np.float64), t, return_grad=True, **kw)
    assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.dtype(dtype)
    assert grad.shape == x.shape
    assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-7)
    scale = float(np.max(np.abs(want_grad)))
    assert_allclose(grad.astype(np.float64), want_grad, rtol=grad_rtol, atol=scale * 2**-10)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("akind", ALPHAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_finite_differences(rng, gamma, akind, reduction):
    x = logits_of(rng, (4, 5), scale=1.5)
    t = np.array([0, 4, -100, 2])
    kw = dict(alpha=_alpha(rng, akind, 5), gamma=gamma)

    def total(v):
        return np.sum(fl.softmax_focal_loss(v, t, reduction=reduction, **kw))

    _, grad = fl.softmax_focal_loss(x, t, reduction=reduction, return_grad=True, **kw)
    assert_allclose(grad, central_diff(total, x), rtol=1e-6, atol=1e-8)
    _, rgrad = ref.softmax_focal_loss(x, t, reduction=reduction, return_grad=True, **kw)

    def rtotal(v):
        return np.sum(ref.softmax_focal_loss(v, t, reduction=reduction, **kw))

    assert_allclose(rgrad, central_diff(rtotal, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_focal_hand_values(dtype):
    # two classes, equal logits: p_t = 1/2; gamma 2: (1/2)^2 * ln 2
    x = np.zeros((1, 2), dtype=dtype)
    rtol = 1e-15 if dtype == np.float64 else 1e-6
    loss, grad = fl.softmax_focal_loss(x, [0], gamma=2.0, return_grad=True)
    assert_allclose(loss, 0.25 * LN2, rtol=rtol)
    # F = (1-p)^2 - 2 p (1-p) ln p = 1/4 + ln(2)/2; grad = F (p - onehot) = F (-1/2, 1/2)
    F = 0.25 + LN2 / 2
    assert_allclose(grad, [[-F / 2, F / 2]], rtol=rtol * 10)
    assert_allclose(fl.softmax_focal_loss(x, [0], gamma=2.0, alpha=0.25), 0.0625 * LN2,
                    rtol=rtol)
    assert_allclose(fl.softmax_focal_loss(x, [1], gamma=2.0, alpha=np.array([0.1, 0.9])),
                    0.9 * 0.25 * LN2, rtol=rtol)
    # gamma 1, p_t = 3/4 (logits 0, ln 3): -(1/4) ln(3/4)
    y = np.array([[0.0, LN3]], dtype=dtype)
    assert_allclose(fl.softmax_focal_loss(y, [1], gamma=1.0), -0.25 * math.log(0.75),
                    rtol=rtol * 10)
    # gamma 0.5, p_t = 1/4: -(3/4)^0.5 ln(1/4)
    assert_allclose(fl.softmax_focal_loss(y, [0], gamma=0.5), math.sqrt(0.75) * LN4,
                    rtol=rtol * 10)
    # rows: mean over non-ignored rows (alpha is no normaliser)
    two = np.zeros((3, 2), dtype=dtype)
    assert_allclose(fl.softmax_focal_loss(two, [0, -100, 1], alpha=[0.5, 2.0]),
                    (0.5 + 2.0) / 2 * 0.25 * LN2, rtol=rtol * 10)
    assert_allclose(fl.softmax_focal_loss(two, [0, -100, 1], alpha=[0.5, 2.0], reduction="sum"),
                    (0.5 + 2.0) * 0.25 * LN2, rtol=rtol * 10)


def test_focal_gamma_zero_is_cross_entropy(rng):
    x = logits_of(rng, (3, 4, 5))
    t = index_target(rng, x.shape, 1, ignore_index=-100)
    for reduction in REDUCTIONS:
        a, ga = fl.softmax_focal_loss(x, t, axis=1, gamma=0.0, reduction=reduction,
                                      return_grad=True)
        b, gb = fl.cross_entropy(x, t, axis=1, reduction=reduction, return_grad=True)
        assert_allclose(a, b, rtol=1e-13)
        assert_allclose(ga, gb, rtol=1e-12, atol=1e-16)
        # alpha a constant: a times that; a constant array: the same as the float
        c, gc = fl.softmax_focal_loss(x, t, axis=1, gamma=0.0, alpha=0.3, reduction=reduction,
                                      return_grad=True)
        assert_allclose(c, 0.3 * np.asarray(b), rtol=1e-13)
        assert_allclose(gc, 0.3 * gb, rtol=1e-12, atol=1e-16)
        d, gd = fl.softmax_focal_loss(x, t, axis=1, gamma=2.0, alpha=np.full(4, 0.3),
                                      reduction=reduction, return_grad=True)
        e, ge = fl.softmax_focal_loss(x, t, axis=1, gamma=2.0, alpha=0.3, reduction=reduction,
                                      return_grad=True)
        assert_allclose(d, e, rtol=1e-14)
        assert_allclose(gd, ge, rtol=1e-14, atol=0)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_confident_row_relative_accuracy(gamma):
    # p_t = 1 / (1 + 2 e^-40): 1 - p_t ~ 8.5e-18 must come from expm1, not 1 - p_t (0.0)
    x = np.array([[0.0, -40.0, -40.0]])
    tail = 2 * math.exp(-40.0)
    nll = math.log1p(tail)
    omp = tail / (1 + tail)
    want = omp**gamma * nll
    loss, grad = fl.softmax_focal_loss(x, [0], gamma=gamma, return_grad=True)
    assert loss > 0
    assert_allclose(loss, want, rtol=1e-12)
    assert_allclose(ref.softmax_focal_loss(x, [0], gamma=gamma), want, rtol=1e-12)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_focal_stability_huge_and_masked_logits(gamma, dtype):
    x = np.array([[1e30, -1e30, 0.0, NINF],  # target dominant: loss 0, grad 0
                  [0.0, NINF, 3.0, 1.0],  # masked non-target class
                  [-1e30, 1e30, 0.0, 0.0],  # target hopeless: loss 2e30 (times (1-0)^g)
                  [NINF, NINF, 0.0, NINF]],  # one finite class, the target: p_t = 1
                 dtype=dtype)
    t = np.array([0, 2, 0, 2])
    for reduction in REDUCTIONS:
        loss, grad = fl.softmax_focal_loss(x, t, gamma=gamma, reduction=reduction,
                                           return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        want_loss, want_grad = ref.softmax_focal_loss(x, t, gamma=gamma, reduction=reduction,
                                                      return_grad=True)
        assert_allclose(loss, want_loss, rtol=TOL[dtype]["loss_rtol"])
        assert_allclose(grad, want_grad, rtol=TOL[dtype]["grad_rtol"], atol=1e-7)
    per, grad = fl.softmax_focal_loss(x, t, gamma=gamma, reduction="none", return_grad=True)
    assert per[0] == 0 and per[3] == 0
    assert np.all(grad[[0, 3]] == 0)
    assert_allclose(per[2], 2e30, rtol=1e-6)
    assert grad[1, 1] == 0  # masked: probability 0


def _torch_focal(x, t, *, axis=-1, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean"):
    torch = _torch()
    F = torch.nn.functional
    X = torch.tensor(np.moveaxis(np.asarray(x, np.float64), axis, -1).copy(), requires_grad=True)
    T = torch.tensor(np.asarray(t, dtype=np.int64))
    valid = T != ignore_index
    tv = torch.where(valid, T, 0)
    logp_t = F.log_softmax(X, dim=-1).gather(-1, tv[..., None])[..., 0]
    p_t = logp_t.exp()
    if alpha is None:
        a = 1.0
    elif np.ndim(alpha) == 0:
        a = float(alpha)
    else:
        a = torch.tensor(np.asarray(alpha, np.float64))[tv]
    per = torch.where(valid, -a * (1 - p_t) ** gamma * logp_t, 0.0)
    loss = {"none": per, "sum": per.sum(), "mean": per.sum() / valid.sum()}[reduction]
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), np.moveaxis(X.grad.numpy(), -1, axis)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("akind", ALPHAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,axis", [((8, 5), -1), ((3, 5, 4), 1)], ids=str)
def test_focal_matches_torch(rng, gamma, akind, reduction, shape, axis):
    _torch()
    x = logits_of(rng, shape)
    t = index_target(rng, shape, axis, ignore_index=-100)
    alpha = _alpha(rng, akind, shape[axis])
    loss, grad = fl.softmax_focal_loss(x, t, axis=axis, alpha=alpha, gamma=gamma,
                                       reduction=reduction, return_grad=True)
    t_loss, t_grad = _torch_focal(x, t, axis=axis, alpha=alpha, gamma=gamma, reduction=reduction)
    assert np.shape(loss) == np.shape(t_loss)
    # torch's 1 - p_t from a rounded p_t loses digits when p_t is close to 1
    assert_allclose(loss, t_loss, rtol=1e-9, atol=1e-15)
    assert_allclose(grad, t_grad, rtol=1e-8, atol=1e-14)


def test_focal_all_ignored_and_empty():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    with np.errstate(invalid="ignore"):
        loss, grad = fl.softmax_focal_loss(x, [-100, -100], return_grad=True)
    assert np.isnan(loss) and np.all(grad == 0)
    assert fl.softmax_focal_loss(x, [-100, -100], reduction="sum") == 0
    np.testing.assert_array_equal(fl.softmax_focal_loss(x, [-100, -100], reduction="none"),
                                  [0.0, 0.0])


def test_focal_bad_input():
    x = np.zeros((3, 4))
    with pytest.raises(IndexError, match="target"):
        fl.softmax_focal_loss(x, [0, 4, 1])
    with pytest.raises(IndexError, match="target"):
        fl.softmax_focal_loss(x, [0, -1, 1])  # negative and not the ignore_index
    with pytest.raises(IndexError, match="target"):
        fl.softmax_focal_loss(x, [0, -100, 1], ignore_index=-1)
    for g in (-0.5, -1e-12, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            fl.softmax_focal_loss(x, [0, 1, 2], gamma=g)
    for a in (np.ones(3), np.ones(5), np.ones((4, 1)), [0.5, 0.5]):
        with pytest.raises(ValueError, match="alpha"):
            fl.softmax_focal_loss(x, [0, 1, 2], alpha=a)
    with pytest.raises(ValueError, match="target"):
        fl.softmax_focal_loss(x, [0, 1])
    # the ignore_index is no bad index
    fl.softmax_focal_loss(x, [0, -1, 1], ignore_index=-1)


# =========================================================================== multi_margin_loss

MARGINS = (1.0, 0.5, 2.0)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("wkind", ["none", "positive"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multi_margin_matches_reference(rng, p, margin, wkind, reduction, dtype):
    x = logits_of(rng, (9, 6), dtype, scale=1.0)
    t = rng.integers(0, 6, size=9)
    check("multi_margin_loss", (x, t), reduction=reduction, p=p, margin=margin,
          weight=_weight(rng, wkind, 6))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 5), (1, 64), (7, 1), (3, 2)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multi_margin_shapes(rng, shape, reduction, dtype):
    x = logits_of(rng, shape, dtype, scale=1.0)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    loss, _ = check("multi_margin_loss", (x, t), reduction=reduction, p=2, margin=0.7)
    if reduction == "none":
        assert np.shape(loss) == shape[:-1]  # 1-d input: a 0-d array


def _away_from_kinks(rng, shape, margin, t):
    """Scores whose hinge arguments margin - x_y + x_j all lie at least 0.02 from 0."""
    while True:
        x = rng.normal(0.0, 1.0, size=shape)
        xy = np.take_along_axis(x, t[..., None], axis=-1)
        z = margin - xy + x
        z = np.where(np.arange(shape[-1]) == t[..., None], 1.0, z)
        if np.min(np.abs(z)) > 0.02:
            return x


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_finite_differences(rng, p, margin, reduction):
    t = np.array([0, 3, 1, 3])
    x = _away_from_kinks(rng, (4, 5), margin, t)
    w = rng.uniform(0.5, 2.0, size=5)

    def total(v):
        return np.sum(fl.multi_margin_loss(v, t, p=p, margin=margin, weight=w,
                                           reduction=reduction))

    _, grad = fl.multi_margin_loss(x, t, p=p, margin=margin, weight=w, reduction=reduction,
                                   return_grad=True)
    assert_allclose(grad, central_diff(total, x), rtol=1e-7, atol=1e-9)


def test_multi_margin_hand_values():
    # the PyTorch documentation's example: (0.3 + 0.4 + 0.6) / 4 = 0.325
    x = np.array([[0.1, 0.2, 0.4, 0.8]])
    loss, grad = fl.multi_margin_loss(x, [3], return_grad=True)
    assert_allclose(loss, 0.325, rtol=1e-15)
    assert_allclose(grad, [[0.25, 0.25, 0.25, -0.75]], rtol=1e-15)
    loss, grad = fl.multi_margin_loss(x, [3], p=2, return_grad=True)
    assert_allclose(loss, (0.09 + 0.16 + 0.36) / 4, rtol=1e-14)
    assert_allclose(grad, [[0.15, 0.2, 0.3, -0.65]], rtol=1e-14)
    # 1-d input, 0-d target; "none" gives a 0-d array
    none = fl.multi_margin_loss(x[0], np.array(3), reduction="none")
    assert isinstance(none, np.ndarray) and none.shape == ()
    assert_allclose(none, 0.325, rtol=1e-15)
    # margin 0.5: only the class with x_j > x_y - 0.5 = 0.3 counts: (0.5 - 0.8 + 0.4) / 4
    assert_allclose(fl.multi_margin_loss(x, [3], margin=0.5), 0.025, rtol=1e-14)
    # weight[y] multiplies; the mean is a plain mean over samples
    w = np.array([1.0, 1.0, 1.0, 4.0])
    two = np.array([[0.1, 0.2, 0.4, 0.8], [0.1, 0.2, 0.4, 0.8]])
    assert_allclose(fl.multi_margin_loss(two, [3, 0], weight=w),
                    (4 * 0.325 + (1.1 + 1.3 + 1.7) / 4) / 2, rtol=1e-14)


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_kink_has_zero_gradient(p):
    # margin - x_y + x_j == 0 exactly: subgradient 0 there (as PyTorch)
    x = np.array([[0.0, 1.0, 0.0], [0.5, 1.5, -3.0]])
    loss, grad = fl.multi_margin_loss(x, [1, 1], p=p, reduction="sum", return_grad=True)
    assert loss == 0
    np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("wkind", ["none", "positive"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7, 5), (5,)], ids=str)
def test_multi_margin_matches_torch(rng, p, margin, wkind, reduction, shape):
    torch = _torch()
    x = logits_of(rng, shape, scale=1.0)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    w = _weight(rng, wkind, shape[-1])
    X = torch.tensor(x, requires_grad=True)
    t_loss = torch.nn.functional.multi_margin_loss(
        X, torch.tensor(t), p=p, margin=margin, reduction=reduction,
        weight=None if w is None else torch.tensor(w))
    t_loss.backward(torch.ones_like(t_loss))
    loss, grad = fl.multi_margin_loss(x, t, p=p, margin=margin, weight=w, reduction=reduction,
                                      return_grad=True)
    assert np.shape(loss) == tuple(t_loss.shape)
    assert_allclose(loss, t_loss.detach().numpy(), rtol=1e-13, atol=1e-16)
    assert_allclose(grad, X.grad.numpy(), rtol=1e-13, atol=1e-16)


def test_multi_margin_mean_is_not_weighted(rng):
    x = logits_of(rng, (8, 4), scale=1.0)
    t = rng.integers(0, 4, size=8)
    w = rng.uniform(0.1, 3.0, size=4)
    none = fl.multi_margin_loss(x, t, weight=w, reduction="none")
    assert_allclose(fl.multi_margin_loss(x, t, weight=w), none.mean(), rtol=1e-14)
    assert_allclose(fl.multi_margin_loss(x, t, weight=w, reduction="sum"), none.sum(),
                    rtol=1e-14)


def test_multi_margin_bad_input():
    x = np.zeros((3, 4))
    t = [0, 1, 2]
    for p in (0, 3, 1.5, -1):
        with pytest.raises(ValueError, match="p"):
            fl.multi_margin_loss(x, t, p=p)
    with pytest.raises(IndexError, match="target"):
        fl.multi_margin_loss(x, [0, 4, 1])
    with pytest.raises(IndexError, match="target"):
        fl.multi_margin_loss(x, [0, -1, 1])
    for w in ([1.0, 2.0, 3.0], np.ones(5)):
        with pytest.raises(ValueError, match="weight"):
            fl.multi_margin_loss(x, t, weight=w)
    with pytest.raises(ValueError, match="target"):
        fl.multi_margin_loss(x, [0, 1])
    with pytest.raises(IndexError, match="target"):  # a 0-d input has the one class 0
        fl.multi_margin_loss(np.float64(0.5), np.array(1))


@pytest.mark.parametrize("target", [np.array(0), np.array([0])], ids=["0d", "1"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multi_margin_zero_d_input_is_one_sample_of_one_class(target, reduction):
    # as PyTorch: a 0-d input is one sample with one class; no other class j != y, so the loss
    # and the gradient are 0; "none" has the target's shape, the gradient the input's
    for x in (np.float64(0.5), np.array(-3.0), 7):
        for w in (None, [2.5]):
            loss, grad = fl.multi_margin_loss(x, target, weight=w, p=2, reduction=reduction,
                                              return_grad=True)
            assert np.shape(loss) == (target.shape if reduction == "none" else ())
            assert np.shape(grad) == () and grad == 0 and np.all(loss == 0)
            want, want_g = ref.multi_margin_loss(x, target, weight=w, p=2, reduction=reduction,
                                                 return_grad=True)
            assert np.shape(want) == np.shape(loss) and np.all(want == 0) and want_g == 0
    # the same as the (1,) input it stands for
    one = fl.multi_margin_loss(np.array([0.5]), target, reduction=reduction)
    assert_allclose(fl.multi_margin_loss(0.5, target, reduction=reduction), one)


# =========================================================================== perplexity, bpb


@pytest.mark.parametrize("C", [2, 7, 256, 50257])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_perplexity_uniform_is_class_count(rng, C, dtype, rtol):
    x = np.full((2, C), 1.5, dtype=dtype)
    t = rng.integers(0, C, size=2)
    ppl = fl.perplexity(x, t)
    assert isinstance(ppl, np.floating) and not isinstance(ppl, np.ndarray)
    assert_allclose(ppl, C, rtol=rtol)
    assert_allclose(ref.perplexity(x, t), C, rtol=1e-13)


def test_perplexity_hand_values():
    x = np.array([[0.0, LN3], [0.0, 0.0]])
    assert_allclose(fl.perplexity(x[:1], [1]), 4 / 3, rtol=1e-15)
    # exp of the mean: sqrt(4/3 * 2)
    assert_allclose(fl.perplexity(x, [1, 0]), math.sqrt(8 / 3), rtol=1e-15)
    # the ignored row does not count
    assert_allclose(fl.perplexity(x, [1, -100]), 4 / 3, rtol=1e-15)
    assert_allclose(fl.perplexity(x, [1, 0], ignore_index=0), 4 / 3, rtol=1e-15)
    # class axis 0
    assert_allclose(fl.perplexity(x.T, [1, 0], axis=0), math.sqrt(8 / 3), rtol=1e-15)


@pytest.mark.parametrize(
    "kw",
    [{}, dict(weight="w"), dict(label_smoothing=0.1), dict(z_loss=1e-2), dict(softcap=3.0),
     dict(ignore_index=2), dict(axis=0), dict(weight="w", label_smoothing=0.2, z_loss=0.1,
                                               softcap=2.0, ignore_index=-100)],
    ids=lambda kw: "-".join(kw) or "default",
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_perplexity_and_bpb_consistent_with_cross_entropy(rng, kw, dtype):
    kw = dict(kw)
    axis = kw.get("axis", -1)
    shape = (6, 5)
    x = logits_of(rng, shape, dtype)
    t = index_target(rng, shape, axis, ignore_index=kw.get("ignore_index"))
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, size=shape[axis])
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    ce = fl.cross_entropy(x, t, **kw)
    ppl = fl.perplexity(x, t, **kw)
    assert isinstance(ppl, np.floating) and not isinstance(ppl, np.ndarray)
    assert_allclose(ppl, np.exp(np.float64(ce)), rtol=rtol)
    assert_allclose(ppl, ref.perplexity(x, t, **kw), rtol=max(rtol, 1e-5 if dtype ==
                                                             np.float32 else 0))
    total = fl.cross_entropy(x, t, reduction="sum", **kw)
    bpb = fl.bits_per_byte(x, t, 11, **kw)
    assert isinstance(bpb, np.floating) and not isinstance(bpb, np.ndarray)
    assert_allclose(bpb, np.float64(total) / (LN2 * 11), rtol=rtol)
    assert_allclose(bpb, ref.bits_per_byte(x, t, 11, **kw), rtol=max(rtol, 1e-5 if dtype ==
                                                                     np.float32 else 0))


def test_bits_per_byte_hand_values(rng):
    # uniform over 256 byte values, one byte per token: 8 bits per byte
    x = np.zeros((10, 256))
    t = rng.integers(0, 256, size=10)
    assert_allclose(fl.bits_per_byte(x, t, 10), 8.0, rtol=1e-14)
    assert_allclose(ref.bits_per_byte(x, t, 10), 8.0, rtol=1e-14)
    # 4 bytes per token: 2 bits per byte; n_bytes needs not be an integer
    assert_allclose(fl.bits_per_byte(x, t, 40), 2.0, rtol=1e-14)
    assert_allclose(fl.bits_per_byte(x, t, 2.5), 32.0, rtol=1e-14)
    assert_allclose(fl.bits_per_byte(x, t, np.int64(40)), 2.0, rtol=1e-14)
    # ignored tokens add nothing
    t2 = t.copy()
    t2[:5] = -100
    assert_allclose(fl.bits_per_byte(x, t2, 5), 8.0, rtol=1e-14)
    # a single token of probability 1/4 over 2 bytes: 2 bits / 2 bytes
    assert_allclose(fl.bits_per_byte(np.zeros((1, 4)), [3], 2), 1.0, rtol=1e-15)


@pytest.mark.parametrize("bad", [0, 0.0, -1, -2.5, float("nan")])
def test_bits_per_byte_bad_n_bytes(bad):
    with pytest.raises(ValueError, match="n_bytes"):
        fl.bits_per_byte(np.zeros((2, 3)), [0, 1], bad)


@pytest.mark.parametrize("fn", ["perplexity", "bits_per_byte"])
@pytest.mark.parametrize("kw", [dict(reduction="sum"), dict(reduction="mean"),
                                dict(return_grad=True), dict(return_grad=False)],
                         ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_perplexity_bpb_reject_reduction_and_return_grad(fn, kw):
    args = (np.zeros((2, 3)), [0, 1]) + ((2,) if fn == "bits_per_byte" else ())
    with pytest.raises(TypeError):
        getattr(fl, fn)(*args, **kw)


def test_perplexity_bpb_empty_and_all_ignored():
    e = np.zeros((0, 5))
    with np.errstate(invalid="ignore"):
        assert np.isnan(fl.perplexity(e, np.zeros(0, dtype=np.int64)))
        assert np.isnan(fl.perplexity(np.zeros((2, 5)), [-100, -100]))
    assert fl.bits_per_byte(e, np.zeros(0, dtype=np.int64), 3) == 0.0
    assert fl.bits_per_byte(np.zeros((2, 5)), [-100, -100], 3) == 0.0


@pytest.mark.parametrize("name", LAYOUTS[1:])
def test_perplexity_bpb_layouts_and_read_only(rng, name):
    x = logits_of(rng, (6, 7))
    t = index_target(rng, x.shape, -1, ignore_index=-100)
    want_p, want_b = fl.perplexity(x, t, z_loss=0.1), fl.bits_per_byte(x, t, 9, softcap=3.0)
    assert_allclose(fl.perplexity(layout(x, name), layout(t, name), z_loss=0.1), want_p,
                    rtol=1e-14)
    assert_allclose(fl.bits_per_byte(layout(x, name), layout(t, name), 9, softcap=3.0), want_b,
                    rtol=1e-14)
    assert_allclose(fl.perplexity(read_only(x), read_only(t)), fl.perplexity(x, t), rtol=1e-15)


# =========================================================================== every function
# return_grad, dtypes, reductions, empty inputs, memory layouts, read-only inputs

def _ce_case(rng, shape, dtype):
    x = logits_of(rng, shape, dtype)
    return (x, index_target(rng, shape, -1, ignore_index=-100)), dict(z_loss=0.05, softcap=4.0)


def _focal_case(rng, shape, dtype):
    x = logits_of(rng, shape, dtype)
    return ((x, index_target(rng, shape, -1, ignore_index=-100)),
            dict(gamma=2.0, alpha=rng.uniform(0.2, 1.0, size=shape[-1])))


def _margin_case(rng, shape, dtype):
    x = logits_of(rng, shape, dtype, scale=1.0)
    return ((x, rng.integers(0, shape[-1], size=shape[:-1])),
            dict(p=2, margin=0.8, weight=rng.uniform(0.5, 2.0, size=shape[-1])))


CASES = {"cross_entropy": _ce_case, "softmax_focal_loss": _focal_case,
         "multi_margin_loss": _margin_case}


@pytest.mark.parametrize("fn", CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_return_grad_and_dtypes(rng, fn, reduction, dtype):
    args, kw = CASES[fn](rng, (5, 6), dtype)
    loss = getattr(fl, fn)(*args, reduction=reduction, **kw)
    assert np.asarray(loss).dtype == dtype
    out = getattr(fl, fn)(*args, reduction=reduction, return_grad=True, **kw)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[1].shape == args[0].shape and out[1].dtype == dtype
    check(fn, args, reduction=reduction, **kw)


@pytest.mark.parametrize("fn", CASES)
@pytest.mark.parametrize("dtype,grad_rtol", LOW)
def test_16_bit_inputs(rng, fn, dtype, grad_rtol):
    args, kw = CASES[fn](rng, (5, 6), np.float64)
    args = (args[0].astype(dtype),) + args[1:]
    x64 = args[0].astype(np.float64)
    for reduction in REDUCTIONS:
        loss, grad = getattr(fl, fn)(*args, reduction=reduction, return_grad=True, **kw)
        assert np.asarray(loss).dtype == np.float32
        assert grad.dtype == np.dtype(dtype) and grad.shape == x64.shape
        want_loss, want_grad = getattr(ref, fn)(x64, *args[1:], reduction=reduction,
                                                return_grad=True, **kw)
        assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-7)
        scale = float(np.max(np.abs(want_grad)))
        assert_allclose(grad.astype(np.float64), want_grad, rtol=grad_rtol,
                        atol=scale * 2**-10)


@pytest.mark.parametrize("fn", CASES)
@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", None, "batchmean"])
def test_unknown_reduction(rng, fn, reduction):
    args, kw = CASES[fn](rng, (3, 4), np.float64)
    with pytest.raises(ValueError, match="reduction"):
        getattr(fl, fn)(*args, reduction=reduction, **kw)


@pytest.mark.parametrize("fn", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch(fn, dtype):
    f = getattr(fl, fn)
    x = np.zeros((0, 5), dtype=dtype)
    t = np.zeros(0, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        loss, grad = f(x, t, return_grad=True)
    assert np.isnan(loss)  # mean of nothing: NaN, as torch
    assert grad.shape == (0, 5) and grad.dtype == dtype
    loss = f(x, t, reduction="sum")
    assert loss == 0 and isinstance(loss, np.floating) and not isinstance(loss, np.ndarray)
    none, grad = f(x, t, reduction="none", return_grad=True)
    assert isinstance(none, np.ndarray) and none.shape == (0,) and none.dtype == dtype
    assert grad.shape == (0, 5)
    with np.errstate(invalid="ignore"):
        assert np.isnan(getattr(ref, fn)(x, t))
    assert getattr(ref, fn)(x, t, reduction="sum") == 0


@pytest.mark.parametrize("fn", CASES)
@pytest.mark.parametrize("name", LAYOUTS[1:])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_contiguous_inputs(rng, fn, name, dtype):
    args, kw = CASES[fn](rng, (6, 7), dtype)
    x, t = args
    if "weight" in kw:
        kw["weight"] = layout(kw["weight"], name)
    if isinstance(kw.get("alpha"), np.ndarray):
        kw["alpha"] = layout(kw["alpha"], name)
    xv, tv = layout(x, name), layout(t, name)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    for reduction in REDUCTIONS:
        loss, grad = getattr(fl, fn)(xv, tv, reduction=reduction, return_grad=True, **kw)
        c_loss, c_grad = getattr(fl, fn)(x, t, reduction=reduction, return_grad=True, **kw)
        assert_allclose(loss, c_loss, rtol=rtol)
        assert_allclose(grad, c_grad, rtol=rtol, atol=1e-9 if dtype == np.float32 else 1e-17)
        check(fn, (xv, tv), reduction=reduction, **kw)
    # the reversed-class view explicitly: x[:, ::-1] with the targets mapped accordingly
    xr = x[:, ::-1]
    tr = np.where(t >= 0, x.shape[1] - 1 - t, t)
    kw2 = dict(kw)
    for k in ("weight", "alpha"):
        if isinstance(kw2.get(k), np.ndarray):
            kw2[k] = np.asarray(kw2[k])[::-1]
    a = getattr(fl, fn)(xr, tr, reduction="none", **kw2)
    b = getattr(fl, fn)(np.ascontiguousarray(xr), tr, reduction="none", **kw2)
    assert_allclose(a, b, rtol=rtol)
    np.testing.assert_array_equal(xv, x)  # inputs untouched


@pytest.mark.parametrize("fn", CASES)
def test_read_only_inputs(rng, fn):
    args, kw = CASES[fn](rng, (5, 6), np.float64)
    args = tuple(read_only(a) for a in args)
    kw = {k: read_only(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    for reduction in REDUCTIONS:
        check(fn, args, reduction=reduction, **kw)


@pytest.mark.parametrize("fn", CASES)
def test_list_inputs(fn):
    x = [[0.5, -1.0, 2.0], [0.0, 0.25, -0.5]]
    got = getattr(fl, fn)(x, [2, 0], reduction="none")
    assert got.dtype == np.float64
    assert_allclose(got, getattr(ref, fn)(np.array(x), [2, 0], reduction="none"), rtol=1e-14)
    got = getattr(fl, fn)(np.array(x, dtype=np.int32), [2, 0], reduction="none")
    assert got.dtype == np.float64
    assert_allclose(got, getattr(ref, fn)(np.array(x, dtype=np.int32).astype(float), [2, 0],
                                          reduction="none"), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_softcap_beyond_the_compute_type(dtype):
    # c tanh(x / c) is formed in the compute type (float32 for 16- and 32-bit logits): a cap
    # past its maximum was inf there and every loss NaN (found by the fuzzer). Now a
    # ValueError naming the limit; float64 logits take any finite cap (nearly the identity).
    x = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0]], dtype=dtype)
    t = np.array([2, 0])
    h, w = np.ones((2, 3), dtype), np.eye(3, dtype=dtype)
    calls = [lambda c: fl.cross_entropy(x, t, softcap=c),
             lambda c: fl.cross_entropy_stats(x, t, softcap=c).sumexp,
             lambda c: fl.cross_entropy_grad_from_stats(
                 x, t, fl.merge_cross_entropy_stats(fl.cross_entropy_stats(x, t)), softcap=c),
             lambda c: fl.linear_cross_entropy(h, w, t, softcap=c)]
    for call in calls:
        if dtype == np.float64:
            assert np.all(np.isfinite(call(1e300)))
        else:
            with pytest.raises(ValueError, match="softcap .* exceeds the largest float32"):
                call(1e300)
            assert np.all(np.isfinite(call(3e38)))
    want = fl.cross_entropy(x.astype(np.float64), t)
    np.testing.assert_allclose(fl.cross_entropy(x.astype(np.float64), t, softcap=1e300), want,
                               rtol=1e-15)


def test_z_loss_beyond_the_compute_type():
    # z = 1e308 was inf in float32: a gradient of inf * 0 = NaN where lse = 0 (the fuzzer)
    x = np.array([[0.0], [1.0]], dtype=np.float32)
    t = np.array([0, 0])
    with pytest.raises(ValueError, match="z_loss .* exceeds half the largest float32"):
        fl.cross_entropy(x, t, z_loss=1e308)
    with pytest.raises(ValueError, match="z_loss .* exceeds half the largest float64"):
        fl.cross_entropy(x.astype(np.float64), t, z_loss=1e308)
    loss, grad = fl.cross_entropy(x.astype(np.float64), t, z_loss=5e307, return_grad=True,
                                  reduction="none")
    assert loss[0] == 0 and grad[0, 0] == 0  # lse = 0: no z-loss term


# ----------------------------------------------------------------- multi_margin_loss grad_out
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_grad_out(rng, dt, reduction, p):
    w = rng.uniform(0.5, 2.0, size=7)
    for shape in ((5, 7), (2, 3, 7), (7,), (6, 130)):  # narrow rows and the row kernel
        x = rng.normal(size=shape).astype(dt)
        t = rng.integers(0, shape[-1], size=shape[:-1])
        kw = {"weight": w} if shape[-1] == 7 else {}
        contract.check_grad_out_fresh_and_in_place("multi_margin_loss", x, t, reduction, p=p,
                                                   margin=0.7, **kw)
    # strided / Fortran-order buffers, in place on a Fortran-order input, a 0-d input
    x, t = rng.normal(size=(5, 7)).astype(dt), rng.integers(0, 7, size=5)
    want_loss, want = fl.multi_margin_loss(x, t, p=p, reduction=reduction, return_grad=True)
    for go in (np.zeros((5, 7), dt, order="F"), np.zeros((10, 14), dt)[::2, ::-2]):
        _, g = fl.multi_margin_loss(x, t, p=p, reduction=reduction, return_grad=True,
                                    grad_out=go)
        assert g is go
        np.testing.assert_array_equal(go, want)
    xf = np.asfortranarray(x)
    loss, g = fl.multi_margin_loss(xf, t, p=p, reduction=reduction, return_grad=True,
                                   grad_out=xf)
    assert g is xf
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(xf, want)
    x0 = np.array(2.5, dtype=dt)
    go = np.array(7.0, dtype=dt)
    _, g = fl.multi_margin_loss(x0, np.array(0), return_grad=True, grad_out=go)
    assert g is go and go == 0


def test_multi_margin_grad_out_errors(rng):
    x, t = rng.normal(size=(3, 4)), rng.integers(0, 4, size=3)
    contract.check_grad_out_errors("multi_margin_loss", x, t, broadcasting=False)
    with pytest.raises(ValueError, match="grad_out"):  # a 0-d input: a 0-d buffer
        fl.multi_margin_loss(np.array(1.0), np.array(0), return_grad=True,
                             grad_out=np.zeros(1))
    for bad in ({"target": np.array([0, 4, 1])}, {"target": np.array([0, -1, 1])},
                {"target": t[:2]}, {"weight": np.ones(3)}, {"p": 3}):
        for in_place in (False, True):
            contract.check_nothing_written_on_error("multi_margin_loss", x.copy(), t, bad,
                                                    in_place=in_place)
