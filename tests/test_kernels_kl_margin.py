"""Self-checks of the compiled kl_div_with_logits, gaussian_kl and multi_margin_loss kernels.

Values against small float64 NumPy formulas written here (independent of fastloss.reference),
PyTorch where importable, central differences; strided and non-last-axis layouts, block
boundaries of the one-pass row statistics, float32 GPT-2-vocabulary rows, 16-bit dtypes,
infinities and NaN, bad input, thread-count independence. Every instruction set the machine
supports runs the value tests (the ``isa`` fixture).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from conftest import LAYOUTS, central_diff, layout

import fastloss as fl

assert_allclose = np.testing.assert_allclose
BF16 = np.dtype(ml_dtypes.bfloat16)


# --------------------------------------------------------------------- float64 formulas


def np_log_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return (x - m) - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def np_kl_logits(s, t, axis=-1, T=1.0, reduction="batchmean"):
    """T^2 sum q (log q - log p) per row; gradient T (p - q) times the reduction scale."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    logp, logq = np_log_softmax(s / T, axis), np_log_softmax(t / T, axis)
    p, q = np.exp(logp), np.exp(logq)
    with np.errstate(invalid="ignore"):
        per = T * T * np.sum(np.where(q > 0, q * (logq - logp), 0.0), axis=axis)
    g = T * (p - q)
    rows = per.size
    if reduction == "none":
        return per, g
    if reduction == "sum":
        return per.sum(), g
    denom = rows if reduction == "batchmean" else s.size
    return per.sum() / denom, g / denom


def np_gaussian_kl(mu, lv, reduction="mean"):
    mu, lv = np.asarray(mu, np.float64), np.asarray(lv, np.float64)
    per = 0.5 * np.sum(mu * mu + (np.expm1(lv) - lv), axis=-1)
    scale = 1.0 / per.size if reduction == "mean" else 1.0
    out = {"none": per, "sum": per.sum(), "mean": per.sum() * scale}[reduction]
    return out, (mu * scale, 0.5 * np.expm1(lv) * scale)


def np_multi_margin(x, y, p=1, margin=1.0, w=None, reduction="mean"):
    x = np.asarray(x, np.float64)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    y = np.asarray(y).reshape(-1)
    n = x2.shape[0]
    wy = np.ones(n) if w is None else np.asarray(w, np.float64)[y]
    z = margin - x2[np.arange(n), y][:, None] + x2
    other = np.arange(C)[None, :] != y[:, None]
    pos = other & (z > 0)
    h = np.where(pos, z, 0.0)
    per = wy * np.sum(h**p, axis=1) / C
    g = wy[:, None] * (pos * 1.0 if p == 1 else 2 * h) / C
    g[np.arange(n), y] = -g.sum(axis=1)
    scale = 1.0 / n if reduction == "mean" else 1.0
    out = {"none": per, "sum": per.sum(), "mean": per.sum() * scale}[reduction]
    return out, (g * scale).reshape(x.shape)


# --------------------------------------------------------------------- kl_div_with_logits


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("T", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("shape,axis", [((4, 9), -1), ((3, 6, 5), 1), ((7, 4), 0), ((9,), 0)])
def test_kl_values_and_grad(isa, rng, shape, axis, T, reduction):
    s, t = rng.normal(0, 2, shape), rng.normal(0, 2, shape)
    want, want_g = np_kl_logits(s, t, axis, T, reduction)
    loss = fl.kl_div_with_logits(s, t, axis=axis, temperature=T, reduction=reduction)
    loss2, g = fl.kl_div_with_logits(
        s, t, axis=axis, temperature=T, reduction=reduction, return_grad=True
    )
    assert_allclose(loss, want, rtol=1e-12, atol=1e-14)
    assert_allclose(loss2, loss, rtol=0, atol=0)
    assert_allclose(g, want_g, rtol=1e-11, atol=1e-15)
    if reduction == "none":
        assert loss.shape == tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    else:
        assert np.ndim(loss) == 0 and loss.dtype == np.float64


@pytest.mark.parametrize("name", LAYOUTS)
def test_kl_layouts(isa, rng, name):
    s, t = rng.normal(0, 3, (5, 6, 7)), rng.normal(0, 3, (5, 6, 7))
    for axis in (0, 1, 2):
        want, want_g = np_kl_logits(s, t, axis, 2.0, "sum")
        loss, g = fl.kl_div_with_logits(
            layout(s, name),
            layout(t, "strided"),
            axis=axis,
            temperature=2.0,
            reduction="sum",
            return_grad=True,
        )
        assert_allclose(loss, want, rtol=1e-12)
        assert_allclose(g, want_g, rtol=1e-11, atol=1e-15)


def test_kl_finite_differences(rng):
    s, t = rng.normal(0, 2, (3, 5)), rng.normal(0, 2, (3, 5))
    for reduction in ("batchmean", "mean"):
        _, g = fl.kl_div_with_logits(s, t, temperature=1.7, reduction=reduction, return_grad=True)
        num = central_diff(
            lambda v, r=reduction: fl.kl_div_with_logits(v, t, temperature=1.7, reduction=r), s
        )
        assert_allclose(g, num, rtol=1e-6, atol=1e-9)


def test_kl_matches_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    s, t = rng.normal(0, 3, (6, 11)), rng.normal(0, 3, (6, 11))
    for T in (1.0, 4.0):
        st = torch.tensor(s, requires_grad=True)
        want = (
            T
            * T
            * F.kl_div(
                F.log_softmax(st / T, -1),
                F.log_softmax(torch.tensor(t) / T, -1),
                reduction="batchmean",
                log_target=True,
            )
        )
        want.backward()
        loss, g = fl.kl_div_with_logits(s, t, temperature=T, return_grad=True)
        assert_allclose(loss, want.item(), rtol=1e-12)
        assert_allclose(g, st.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("n", [1, 15, 2047, 2048, 2049, 6000, 3 * 2048 + 5])
def test_kl_block_boundaries(isa, rng, n):
    """Rows spanning several 2048-element blocks, the maxima in late blocks and a wide
    dynamic range (the online rescaling between blocks), float32 and float64."""
    s, t = rng.normal(0, 3, (3, n)), rng.normal(0, 3, (3, n))
    s[0, -1] = 80.0  # a late maximum far above everything before it
    t[1, n // 2] = 150.0
    s[2] *= 40  # wide range: blocks far below the row maximum
    for dt, rtol in ((np.float64, 1e-11), (np.float32, 2e-6)):
        sd, td = s.astype(dt), t.astype(dt)
        want, want_g = np_kl_logits(sd, td, reduction="none")
        loss, g = fl.kl_div_with_logits(sd, td, reduction="none", return_grad=True)
        assert_allclose(loss, want, rtol=rtol)
        assert_allclose(g, want_g, rtol=0, atol=rtol * 0.1 if dt == np.float64 else 1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kl_float32_gpt2_rows(isa, rng, T):
    """float32 rows of 50,257 classes: per-row loss within 1e-6 relative of float64 on the same
    values (independent rows: the loss is O(1), no cancellation) and the gradient within 1e-7."""
    s = rng.normal(0, 3, (3, 50257)).astype(np.float32)
    t = rng.normal(0, 3, (3, 50257)).astype(np.float32)
    want, want_g = np_kl_logits(s, t, T=T, reduction="none")
    loss, g = fl.kl_div_with_logits(s, t, temperature=T, reduction="none", return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == np.float32
    assert_allclose(loss, want, rtol=1e-6)
    assert np.max(np.abs(g - want_g)) < 1e-7
    # nearly equal rows (distillation late in training): KL ~ 5e-3 per row; 1e-5 relative
    s2 = (t + 0.1 * rng.standard_normal(t.shape)).astype(np.float32)
    want2, _ = np_kl_logits(s2, t, T=T, reduction="none")
    assert_allclose(fl.kl_div_with_logits(s2, t, temperature=T, reduction="none"), want2, rtol=1e-5)


@pytest.mark.parametrize("dt,tol", [(np.float16, 2e-6), (BF16, 2e-6)])
def test_kl_16bit(rng, dt, tol):
    s = rng.normal(0, 3, (4, 300)).astype(dt)
    t = rng.normal(0, 3, (4, 300)).astype(dt)
    want, want_g = np_kl_logits(s.astype(np.float64), t.astype(np.float64), reduction="sum")
    loss, g = fl.kl_div_with_logits(s, t, reduction="sum", return_grad=True)
    assert np.asarray(loss).dtype == np.float32 and g.dtype == dt
    assert_allclose(loss, want, rtol=tol)
    eps = 2**-10 if dt == np.float16 else 2**-7
    assert_allclose(g.astype(np.float64), want_g, rtol=eps, atol=1e-4)


def test_kl_mixed_dtypes_and_grad_out(rng):
    s = rng.normal(0, 3, (4, 33)).astype(np.float32)
    t = rng.normal(0, 3, (4, 33))
    want, want_g = np_kl_logits(s, t)
    loss, g = fl.kl_div_with_logits(s, t, return_grad=True)  # computed in float64
    assert loss.dtype == np.float64 and g.dtype == np.float32
    assert_allclose(loss, want, rtol=1e-12)
    assert_allclose(g, want_g, rtol=1e-6, atol=1e-9)
    out = np.zeros_like(s)
    _, g2 = fl.kl_div_with_logits(s, t, return_grad=True, grad_out=out)
    assert g2 is out and np.array_equal(out, g)
    # in place over the student, float32 and float64
    for dt in (np.float32, np.float64):
        sd = s.astype(dt)
        _, want_g = fl.kl_div_with_logits(sd, t.astype(dt), return_grad=True)
        work = sd.copy()
        _, g3 = fl.kl_div_with_logits(work, t.astype(dt), return_grad=True, grad_out=work)
        assert g3 is work and np.array_equal(work, want_g)


def test_kl_infinities_and_nan():
    ninf = -np.inf
    s = np.array(
        [
            [0.0, 1.0, 2.0, -1.0],
            [0.5, ninf, 0.1, 0.2],
            [1.0, 2.0, 3.0, 4.0],
            [0.0, 0.0, np.nan, 0.0],
            [ninf] * 4,
            [1.0, np.inf, 0.0, 0.0],
        ]
    )
    t = np.array(
        [
            [ninf, 1.0, ninf, 0.0],
            [0.1, ninf, 0.3, ninf],
            [0.0, 0.0, ninf, 0.0],
            [0.0] * 4,
            [0.0] * 4,
            [0.0] * 4,
        ]
    )
    loss, g = fl.kl_div_with_logits(s, t, reduction="none", return_grad=True)
    # rows 0, 1: masked teacher classes count 0 (row 1 also a masked student class there)
    want, want_g = np_kl_logits(s[:2], t[:2], reduction="none")
    assert_allclose(loss[:2], want, rtol=1e-13)
    assert_allclose(g[:2], want_g, rtol=1e-13, atol=1e-16)
    assert np.all(np.isfinite(g[:2]))
    assert loss[2] > 0 and np.isfinite(loss[2])
    assert np.all(np.isnan(loss[3:])) and np.all(np.isnan(g[3:]))  # NaN, all -inf, +inf
    # a student -inf where the teacher has mass: +inf loss, finite gradient
    li, gi = fl.kl_div_with_logits([[ninf, 0.0]], [[0.0, 0.0]], reduction="sum", return_grad=True)
    assert li == np.inf and np.allclose(gi, [[-0.5, 0.5]])
    # equal rows: exactly 0; shifted by a constant (softmax-invariant): 0 up to exp rounding,
    # not up to the rounding of the shift
    x = np.random.default_rng(3).normal(0, 3, (3, 5000)).astype(np.float32)
    assert fl.kl_div_with_logits(x, x.copy(), temperature=1.3) == 0.0
    for c in (1000.0, -37.5):
        shifted = fl.kl_div_with_logits(x + np.float32(c), x, reduction="none")
        assert np.all(np.abs(shifted) < 1e-7)


def test_kl_empty_and_bad_input(rng):
    e = np.zeros((0, 5))
    assert np.isnan(fl.kl_div_with_logits(e, e))
    assert fl.kl_div_with_logits(e, e, reduction="sum") == 0
    assert fl.kl_div_with_logits(e, e, reduction="none").shape == (0,)
    s = rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="teacher_logits"):
        fl.kl_div_with_logits(s, s[:, :3])
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="temperature"):
            fl.kl_div_with_logits(s, s, temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        fl.kl_div_with_logits(s, s, temperature="2")
    with pytest.raises(ValueError, match="reduction"):
        fl.kl_div_with_logits(s, s, reduction="avg")
    with pytest.raises(ValueError):
        fl.kl_div_with_logits(1.0, 1.0)
    with pytest.raises(ValueError, match="class axis"):
        fl.kl_div_with_logits(np.zeros((3, 0)), np.zeros((3, 0)))
    with pytest.raises(np.exceptions.AxisError):
        fl.kl_div_with_logits(s, s, axis=2)
    with pytest.raises(ValueError, match="grad_out"):
        fl.kl_div_with_logits(s, s, grad_out=np.empty_like(s))
    with pytest.raises(TypeError):
        fl.kl_div_with_logits(s.astype(complex), s)


# --------------------------------------------------------------------- gaussian_kl


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(7,), (4, 9), (2, 3, 17)])
def test_gaussian_values_and_grad(isa, rng, shape, reduction):
    mu, lv = rng.normal(0, 1.5, shape), rng.normal(0, 2, shape)
    want, (wm, wv) = np_gaussian_kl(mu, lv, reduction)
    loss, (gm, gv) = fl.gaussian_kl(mu, lv, reduction=reduction, return_grad=True)
    assert_allclose(loss, want, rtol=1e-14)
    assert_allclose(gm, wm, rtol=1e-15)
    assert_allclose(gv, wv, rtol=2e-15, atol=1e-300)
    assert np.shape(loss) == (shape[:-1] if reduction == "none" else ())
    if reduction == "none":
        assert isinstance(loss, np.ndarray)  # a 0-d array for 1-d inputs
    # float32: computed in float64 lanes, rounded once
    loss32, (gm32, gv32) = fl.gaussian_kl(
        mu.astype(np.float32), lv.astype(np.float32), reduction=reduction, return_grad=True
    )
    w32, (wm32, wv32) = np_gaussian_kl(mu.astype(np.float32), lv.astype(np.float32), reduction)
    assert_allclose(gm32, wm32, rtol=1.2e-7)
    assert np.asarray(loss32).dtype == np.float32 and gv32.dtype == np.float32
    assert_allclose(loss32, w32, rtol=1.2e-7)
    assert_allclose(gv32, wv32, rtol=1.2e-7)


def test_gaussian_accuracy_near_prior(isa):
    """exp(lv) - 1 - lv without cancellation: lv = 1e-6 gives 5e-13 to full precision."""
    lv = np.array([1e-6, -1e-6, 1e-3, 0.3, -0.3, 0.35, -0.35, 0.7, -0.7, 1.5, -30.0, 50.0, -50.0])
    mu = np.zeros_like(lv)
    got = fl.gaussian_kl(mu[:, None], lv[:, None], reduction="none")
    exact = np.array([0.5 * float(math.fsum([math.expm1(v), -v])) for v in lv])
    # (math.expm1 is correctly rounded to ~1 ulp; the difference then carries its error, so
    # compare against a series for the small ones)
    small = np.abs(lv) < 1e-2
    exact[small] = 0.5 * sum(lv[small] ** k / math.factorial(k) for k in range(8, 1, -1))
    assert_allclose(got, exact, rtol=4e-15)
    f32 = fl.gaussian_kl(np.zeros((1, 1), np.float32), np.full((1, 1), 1e-4, np.float32))
    v = float(np.float32(1e-4))
    assert_allclose(f32, 0.5 * (v**2 / 2 + v**3 / 6), rtol=1e-7)


def test_gaussian_layouts_dtypes_edges(rng):
    mu, lv = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    want, (wm, wv) = np_gaussian_kl(mu, lv, "sum")
    for name in LAYOUTS:
        loss, (gm, gv) = fl.gaussian_kl(
            layout(mu, name), layout(lv, "fortran"), reduction="sum", return_grad=True
        )
        assert_allclose(loss, want, rtol=1e-14)
        assert_allclose(gm, wm, rtol=1e-15)
        assert_allclose(gv, wv, rtol=2e-15)
    for dt in (np.float16, BF16):
        loss, (gm, gv) = fl.gaussian_kl(mu.astype(dt), lv.astype(dt), return_grad=True)
        w, (wm2, wv2) = np_gaussian_kl(mu.astype(dt).astype(float), lv.astype(dt).astype(float))
        assert loss.dtype == np.float32 and gm.dtype == dt and gv.dtype == dt
        assert_allclose(loss, w, rtol=1e-6)
        eps = 2**-10 if dt == np.float16 else 2**-7
        assert_allclose(gm.astype(float), wm2, rtol=eps)
        assert_allclose(gv.astype(float), wv2, rtol=eps, atol=1e-6)
    loss, (gm, gv) = fl.gaussian_kl(mu.astype(np.float32), lv, return_grad=True)  # mixed
    assert loss.dtype == np.float64 and gm.dtype == np.float32 and gv.dtype == np.float64
    per = fl.gaussian_kl(
        [[0.0, 1.0], [np.nan, 0.0], [0.0, -np.inf], [0.0, np.inf]],
        np.zeros((4, 2)),
        reduction="none",
    )
    assert per[0] == 0.5 and np.isnan(per[1]) and per[2] == np.inf and per[3] == np.inf
    lvs = fl.gaussian_kl(np.zeros((3, 1)), [[-np.inf], [np.inf], [800.0]], reduction="none")
    assert lvs[0] == np.inf and np.isnan(lvs[1]) and lvs[2] == np.inf
    assert np.isnan(fl.gaussian_kl(np.zeros((0, 3)), np.zeros((0, 3))))
    assert fl.gaussian_kl(np.zeros((2, 0)), np.zeros((2, 0)), reduction="none").tolist() == [0, 0]
    num = central_diff(lambda v: fl.gaussian_kl(mu, v), lv)
    assert_allclose(fl.gaussian_kl(mu, lv, return_grad=True)[1][1], num, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="logvar"):
        fl.gaussian_kl(mu, lv[:, :5])
    with pytest.raises(ValueError):
        fl.gaussian_kl(1.0, 0.0)
    with pytest.raises(ValueError, match="reduction"):
        fl.gaussian_kl(mu, lv, reduction="batchmean")


# --------------------------------------------------------------------- multi_margin_loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_margin_values_and_grad(isa, rng, p, reduction, weighted):
    x = rng.normal(0, 1, (40, 7))
    y = rng.integers(0, 7, 40)
    w = rng.random(7) + 0.5 if weighted else None
    want, want_g = np_multi_margin(x, y, p, 0.7, w, reduction)
    loss, g = fl.multi_margin_loss(
        x, y, p=p, margin=0.7, weight=w, reduction=reduction, return_grad=True
    )
    assert_allclose(loss, want, rtol=1e-14)
    assert_allclose(g, want_g, rtol=1e-14, atol=1e-17)
    for dt, tol in ((np.float32, 2e-6), (np.float16, 2e-3), (BF16, 1e-2)):
        xd = x.astype(dt)
        wd, wg = np_multi_margin(xd.astype(float), y, p, 0.7, w, reduction)
        ld, gd = fl.multi_margin_loss(
            xd, y, p=p, margin=0.7, weight=w, reduction=reduction, return_grad=True
        )
        assert np.asarray(ld).dtype == np.float32 and gd.dtype == dt
        assert_allclose(ld, wd, rtol=tol, atol=tol * 1e-2)
        assert_allclose(gd.astype(float), wg, rtol=tol, atol=tol * 0.1)


def test_margin_matches_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, y, w = rng.normal(0, 1, (30, 6)), rng.integers(0, 6, 30), rng.random(6)
    for p in (1, 2):
        for red in ("mean", "sum", "none"):
            xt = torch.tensor(x, requires_grad=True)
            out = F.multi_margin_loss(
                xt, torch.tensor(y), p=p, margin=0.8, weight=torch.tensor(w), reduction=red
            )
            out.sum().backward()
            loss, g = fl.multi_margin_loss(
                x, y, p=p, margin=0.8, weight=w, reduction=red, return_grad=True
            )
            assert_allclose(loss, out.detach().numpy(), rtol=1e-13)
            assert_allclose(g, xt.grad.numpy(), rtol=1e-13, atol=1e-17)
    # one sample, (C,) input with a (1,) or 0-d target; NaN scores count 0 as in torch
    v = np.array([0.3, np.nan, 1.2, -0.4])
    for tgt in (np.array(2), np.array([2])):
        want = F.multi_margin_loss(torch.tensor(v), torch.tensor(tgt), reduction="none")
        got = fl.multi_margin_loss(v, tgt, reduction="none")
        assert got.shape == tuple(want.shape)
        assert_allclose(got, want.numpy(), rtol=1e-14)


def test_margin_layouts_kink_and_targets(rng):
    x = rng.normal(size=(4, 5, 6))
    y = rng.integers(0, 6, (4, 5))
    want, want_g = np_multi_margin(x, y, 2, 1.0, None, "sum")
    for name in LAYOUTS:
        loss, g = fl.multi_margin_loss(layout(x, name), y, p=2, reduction="sum", return_grad=True)
        assert_allclose(loss, want, rtol=1e-14)
        assert_allclose(g, want_g, rtol=1e-14, atol=1e-17)
    assert fl.multi_margin_loss(x, y, reduction="none").shape == (4, 5)
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.uint64):
        assert_allclose(fl.multi_margin_loss(x, y.astype(dt)), np_multi_margin(x, y)[0], rtol=1e-14)
    # the kink: z = 0 exactly gives no loss and no gradient
    loss, g = fl.multi_margin_loss([[1.0, 0.0, 2.0]], [0], return_grad=True)
    assert_allclose(loss, 2.0 / 3, rtol=1e-15)
    assert np.array_equal(g, [[-1 / 3, 0.0, 1 / 3]])
    num = central_diff(lambda v: fl.multi_margin_loss(v, y[0], p=2), x[0])
    assert_allclose(
        fl.multi_margin_loss(x[0], y[0], p=2, return_grad=True)[1], num, rtol=1e-6, atol=1e-9
    )
    assert np.isnan(fl.multi_margin_loss(np.zeros((0, 3)), np.zeros(0, int)))


def test_margin_bad_input(rng):
    x, y = rng.normal(size=(3, 4)), np.array([0, 1, 3])
    for p in (0, 3, 1.5):
        with pytest.raises(ValueError, match="p"):
            fl.multi_margin_loss(x, y, p=p)
    with pytest.raises(TypeError, match="p"):
        fl.multi_margin_loss(x, y, p="1")
    for bad in ([0, 1, 4], [0, -1, 2]):
        with pytest.raises(IndexError, match="target"):
            fl.multi_margin_loss(x, bad)
    with pytest.raises(IndexError, match="target"):
        fl.multi_margin_loss(x, np.array([0, 1, 2**63], dtype=np.uint64))
    with pytest.raises(ValueError, match="weight"):
        fl.multi_margin_loss(x, y, weight=np.ones(3))
    with pytest.raises(ValueError, match="target"):
        fl.multi_margin_loss(x, y[:2])
    with pytest.raises(TypeError, match="target"):
        fl.multi_margin_loss(x, y.astype(float))
    with pytest.raises(ValueError, match="margin"):
        fl.multi_margin_loss(x, y, margin=np.inf)
    with pytest.raises(IndexError, match="target"):  # 0-d: one sample of the one class 0
        fl.multi_margin_loss(1.0, 1)
    with pytest.raises(ValueError):
        fl.multi_margin_loss(np.zeros((2, 0)), [0, 0])


# --------------------------------------------------------------------- threads


def test_thread_count_bit_identical(restore_threads, rng):
    s = rng.normal(0, 3, (64, 4099)).astype(np.float32)
    t = rng.normal(0, 3, (64, 4099)).astype(np.float32)
    y = rng.integers(0, 4099, 64)

    def run():
        return [
            *fl.kl_div_with_logits(s, t, reduction="none", return_grad=True),
            *fl.gaussian_kl(s, t * 0.1, reduction="none", return_grad=True)[1],
            fl.gaussian_kl(s, t * 0.1, reduction="none"),
            *fl.multi_margin_loss(s, y, p=2, reduction="none", return_grad=True),
        ]

    fl.set_num_threads(1)
    one = run()
    fl.set_num_threads(2)
    two = run()
    for a, b in zip(one, two):
        assert np.array_equal(a, b, equal_nan=True)
