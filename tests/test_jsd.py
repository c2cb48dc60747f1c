"""jensen_shannon_with_logits (issue 16): Liger-Kernel's generalized JSD of logits.

Against a plain Liger-style float64 formula written here (its gradient by torch autograd where
importable), fastloss.reference, kl_div_with_logits at beta = 0 and 1, central differences,
hand-computed numbers; any axis and memory layout, 16-bit dtypes, extreme and non-finite
inputs, bad input; every instruction set (``isa``).
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


def liger_jsd(s, t, beta, T=1.0):
    """Liger's kernel formula per row on log-probabilities X = log Q (student), Y = log P:
    beta 0: sum P (Y - X); beta 1: sum Q (X - Y); else sum beta P Y + (1-beta) Q X - M log M."""
    s, t = np.asarray(s, np.float64) / T, np.asarray(t, np.float64) / T
    X = s - s.max(-1, keepdims=True)
    X = X - np.log(np.exp(X).sum(-1, keepdims=True))
    Y = t - t.max(-1, keepdims=True)
    Y = Y - np.log(np.exp(Y).sum(-1, keepdims=True))
    Q, P = np.exp(X), np.exp(Y)
    if beta == 0:
        return (P * (Y - X)).sum(-1)
    if beta == 1:
        return (Q * (X - Y)).sum(-1)
    M = beta * P + (1 - beta) * Q
    return (beta * P * Y + (1 - beta) * Q * X - M * np.log(M)).sum(-1)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_jsd_vs_liger_formula(rng, isa, beta, T):
    s = rng.normal(0, 2, size=(7, 33))
    t = rng.normal(0, 2, size=(7, 33))
    per = fl.jensen_shannon_with_logits(s, t, beta=beta, temperature=T, reduction="none")
    assert_allclose(per, liger_jsd(s, t, beta, T), rtol=1e-12, atol=1e-15)
    loss, g = fl.jensen_shannon_with_logits(s, t, beta=beta, temperature=T, return_grad=True)
    assert_allclose(loss, liger_jsd(s, t, beta, T).mean(), rtol=1e-12)
    want, wg = ref.jensen_shannon_with_logits(s, t, beta=beta, temperature=T, return_grad=True)
    assert_allclose(loss, want, rtol=1e-12)
    assert_allclose(g, wg, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_jsd_grad_vs_torch(rng, beta):
    torch = pytest.importorskip("torch")
    s = rng.normal(0, 1.5, size=(5, 12))
    t = rng.normal(0, 1.5, size=(5, 12))
    T = 1.7
    st = torch.tensor(s, requires_grad=True)
    X = torch.log_softmax(st / T, -1)
    Y = torch.log_softmax(torch.tensor(t) / T, -1)
    P, Q = Y.exp(), X.exp()
    if beta == 0:
        per = (P * (Y - X)).sum(-1)
    elif beta == 1:
        per = (Q * (X - Y)).sum(-1)
    else:
        M = beta * P + (1 - beta) * Q
        per = (beta * P * Y + (1 - beta) * Q * X - M * M.log()).sum(-1)
    per.sum().backward()
    loss, g = fl.jensen_shannon_with_logits(s, t, beta=beta, temperature=T, reduction="sum",
                                            return_grad=True)
    assert_allclose(loss, float(per.sum().detach()), rtol=1e-12)
    assert_allclose(g, st.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_jsd_ends_are_the_kl_directions(rng):
    s = rng.normal(0, 1, size=(6, 10))
    t = rng.normal(0, 1, size=(6, 10))
    T = 2.0
    fwd, gf = fl.jensen_shannon_with_logits(s, t, beta=0.0, temperature=T, return_grad=True)
    kl, gk = fl.kl_div_with_logits(s, t, temperature=T, return_grad=True)
    assert_allclose(fwd, kl / T**2, rtol=1e-12)  # kl_div_with_logits carries T^2
    assert_allclose(gf, gk / T**2, rtol=1e-10, atol=1e-17)
    rev = fl.jensen_shannon_with_logits(s, t, beta=1.0, temperature=T)
    assert_allclose(rev, fl.kl_div_with_logits(t, s, temperature=T) / T**2, rtol=1e-12)


def test_jsd_hand_values():
    s, t = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    m = np.array([0.7, 0.3])
    want = 0.5 * (0.9 * np.log(0.9 / 0.7) + 0.1 * np.log(0.1 / 0.3)) + 0.5 * (
        0.5 * np.log(0.5 / 0.7) + 0.5 * np.log(0.5 / 0.3))
    assert_allclose(fl.jensen_shannon_with_logits(s, t), want, rtol=1e-14)
    # gradient: (w - Q sum w), w = 0.5 Q (log Q - log M)
    w = 0.5 * 0.5 * np.log(0.5 / m)
    _, g = fl.jensen_shannon_with_logits(s, t, return_grad=True)
    assert_allclose(g[0], w - 0.5 * w.sum(), rtol=1e-13)
    # identical rows: 0 for every beta, gradient 0
    for beta in (0.0, 0.5, 1.0):
        loss, g = fl.jensen_shannon_with_logits(t, t, beta=beta, return_grad=True)
        assert abs(float(loss)) < 1e-16 and np.abs(g).max() < 1e-16


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("shape,axis", [((3, 4, 5), 1), ((6, 4), 0), ((2, 3, 7), -1)])
def test_jsd_axes_and_reductions(rng, shape, axis, reduction):
    s = rng.normal(0, 1, size=shape)
    t = rng.normal(0, 1, size=shape)
    got, g = fl.jensen_shannon_with_logits(s, t, beta=0.3, axis=axis, reduction=reduction,
                                           return_grad=True)
    want, wg = ref.jensen_shannon_with_logits(s, t, beta=0.3, axis=axis, reduction=reduction,
                                              return_grad=True)
    assert_allclose(got, want, rtol=1e-12, atol=1e-16)
    assert_allclose(g, wg, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("name", LAYOUTS)
def test_jsd_layouts(rng, name):
    s = rng.normal(0, 1, size=(5, 8))
    t = rng.normal(0, 1, size=(5, 8))
    want, wg = ref.jensen_shannon_with_logits(s, t, return_grad=True)
    got, g = fl.jensen_shannon_with_logits(layout(s, name), layout(t, name), return_grad=True)
    assert_allclose(got, want, rtol=1e-12)
    assert_allclose(g, wg, rtol=1e-10, atol=1e-16)


def test_jsd_finite_differences(rng):
    s = rng.normal(0, 1, size=(3, 5))
    t = rng.normal(0, 1, size=(3, 5))
    for beta in (0.0, 0.4, 1.0):
        _, g = fl.jensen_shannon_with_logits(s, t, beta=beta, temperature=1.3, return_grad=True)
        fd = central_diff(lambda a, b=beta: fl.jensen_shannon_with_logits(a, t, beta=b,
                                                                     temperature=1.3), s)
        assert_allclose(g, fd, atol=1e-8)


@pytest.mark.parametrize("dt", [np.float32, np.float16, BF16])
def test_jsd_low_precision(rng, dt):
    s = rng.normal(0, 2, size=(8, 300)).astype(dt)
    t = rng.normal(0, 2, size=(8, 300)).astype(dt)
    loss, g = fl.jensen_shannon_with_logits(s, t, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == dt
    want, wg = ref.jensen_shannon_with_logits(s.astype(np.float64), t.astype(np.float64),
                                              return_grad=True)
    assert_allclose(float(loss), want, rtol=1e-5)
    tol = 1e-8 if dt == np.float32 else 3e-3 * np.abs(wg).max()
    assert_allclose(g.astype(np.float64), wg, atol=tol)
    # mixed dtypes: computed in the wider one, gradient in the student's
    loss2, g2 = fl.jensen_shannon_with_logits(s, t.astype(np.float64), return_grad=True)
    assert g2.dtype == dt and loss2.dtype == np.float64


def test_jsd_grad_out_in_place(rng):
    s = rng.normal(0, 1, size=(4, 6))
    t = rng.normal(0, 1, size=(4, 6))
    want, wg = fl.jensen_shannon_with_logits(s, t, return_grad=True)
    out = np.empty_like(s)
    loss, g = fl.jensen_shannon_with_logits(s, t, return_grad=True, grad_out=out)
    assert g is out
    assert_allclose(out, wg, rtol=0, atol=0)
    ss = s.copy()
    loss, g = fl.jensen_shannon_with_logits(ss, t, return_grad=True, grad_out=ss)
    assert g is ss and loss == want
    assert_allclose(ss, wg, rtol=0, atol=0)


def test_jsd_extreme_and_nonfinite():
    # huge logits: only differences matter
    s = np.array([[1e15 + 1.0, 1e15, -1e30]])
    t = np.array([[1e15, 1e15 + 1.0, -1e30]])
    got = fl.jensen_shannon_with_logits(s, t)
    want = fl.jensen_shannon_with_logits(np.array([[1.0, 0.0, -np.inf]]),
                                         np.array([[0.0, 1.0, -np.inf]]))
    assert np.isfinite(got) and abs(got - want) < 1e-14
    # float32 extreme: finite
    x = np.array([[3e38, -3e38, 0.0]], np.float32)
    loss, g = fl.jensen_shannon_with_logits(x, x[:, ::-1].copy(), return_grad=True)
    assert np.isfinite(loss) and np.isfinite(g).all()
    # disjoint supports (-inf): JSD = log 2 at beta 0.5, KL = inf at beta 0
    a, b = np.array([[0.0, -np.inf]]), np.array([[-np.inf, 0.0]])
    assert_allclose(fl.jensen_shannon_with_logits(a, b), np.log(2), rtol=1e-15)
    assert fl.jensen_shannon_with_logits(a, b, beta=0.0) == np.inf
    per, g = fl.jensen_shannon_with_logits(np.array([[np.nan, 0.0], [0.0, 1.0]]),
                                           np.zeros((2, 2)), reduction="none", return_grad=True)
    assert np.isnan(per[0]) and np.isnan(g[0]).all() and np.isfinite(per[1])


def test_jsd_bad_input():
    s = np.zeros((2, 3))
    with pytest.raises(ValueError, match="beta"):
        fl.jensen_shannon_with_logits(s, s, beta=1.5)
    with pytest.raises(ValueError, match="beta"):
        fl.jensen_shannon_with_logits(s, s, beta=np.nan)
    with pytest.raises(TypeError, match="beta"):
        fl.jensen_shannon_with_logits(s, s, beta="0.5")
    with pytest.raises(ValueError, match="temperature"):
        fl.jensen_shannon_with_logits(s, s, temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        fl.jensen_shannon_with_logits(s, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reduction"):
        fl.jensen_shannon_with_logits(s, s, reduction="avg")
    with pytest.raises(ValueError, match="size 0"):
        fl.jensen_shannon_with_logits(np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="return_grad"):
        fl.jensen_shannon_with_logits(s, s, grad_out=np.zeros((2, 3)))
    with pytest.raises(TypeError, match="dtype"):
        fl.jensen_shannon_with_logits(s, s, return_grad=True, grad_out=np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("name", ["fastloss.jsd"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_jsd_float32_nearly_equal_rows(rng):
    # distillation late in training: student close to the teacher. The divergence is a sum of
    # first-order terms that cancel; log Q - log P is formed from the logits' differences, and
    # log M through expm1/log1p, so float32 stays within ~1e-8 absolute of float64
    t = rng.normal(0, 3, size=(4, 20000))
    s = t + rng.normal(0, 1e-2, size=t.shape)
    s32, t32 = s.astype(np.float32), t.astype(np.float32)
    for beta, atol in ((0.0, 5e-8), (0.5, 1e-9), (0.1, 1e-9), (1.0, 5e-8)):
        want = ref.jensen_shannon_with_logits(s32.astype(np.float64), t32.astype(np.float64),
                                              beta=beta, reduction="none")
        got = fl.jensen_shannon_with_logits(s32, t32, beta=beta, reduction="none")
        assert_allclose(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("C", [2, 3, 10, 16, 17, 33, 64, 100, 101])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jsd_lane_kernel(rng, isa, restore_threads, C, beta):
    """Up to 100 classes the rows go through SIMD lanes (rowloss.cpp, jensen_shannon_narrow;
    101: the row kernel): against the reference (float64 to 1e-12, float32 to its rounding) with
    full blocks and a short last one, NaN, +inf and all -inf rows in either input (NaN loss
    and gradient), a row of -inf masks; the same bits strided, in place, with 1 and 2 threads."""
    rows = 37
    s = rng.normal(0.0, 2.0, (rows, C))
    t = rng.normal(0.0, 2.0, (rows, C))
    s[3, 0], t[5, C - 1] = np.nan, np.inf
    s[7], t[9] = -np.inf, -np.inf
    s[11, : C // 2] = -np.inf  # (masked classes)
    t[11, C // 2 :] = -np.inf
    bad = np.zeros(rows, bool)
    bad[[3, 5, 7, 9]] = True
    for dt, rtol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        x, y = s.astype(dt), t.astype(dt)
        loss, g = fl.jensen_shannon_with_logits(x, y, beta=beta, temperature=1.5,
                                                reduction="none", return_grad=True)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            want, wg = ref.jensen_shannon_with_logits(x.astype(np.float64), y.astype(np.float64),
                                                      beta=beta, temperature=1.5,
                                                      reduction="none", return_grad=True)
        assert np.isnan(loss[bad]).all() and np.isnan(g[bad]).all()
        ok = ~bad & np.isfinite(want)
        assert ok.sum() >= rows - 6
        assert_allclose(loss[ok], want[ok], rtol=rtol, atol=rtol * 1e-3)
        inf = ~bad & ~np.isfinite(want)  # (disjoint supports at beta 0 or 1: inf)
        np.testing.assert_array_equal(loss[inf], want[inf])
        assert_allclose(g[ok], wg[ok], rtol=rtol * 10, atol=rtol * 1e-2)
        # strided (the class axis first), in place, the loss alone: the same bits
        lt, gt = fl.jensen_shannon_with_logits(x.T, y.T, axis=0, beta=beta, temperature=1.5,
                                               reduction="none", return_grad=True)
        np.testing.assert_array_equal(lt, loss)
        np.testing.assert_array_equal(gt.T, g)
        xi = x.copy()
        li, gi = fl.jensen_shannon_with_logits(xi, y, beta=beta, temperature=1.5,
                                               reduction="none", return_grad=True, grad_out=xi)
        np.testing.assert_array_equal(li, loss)
        assert gi is xi
        np.testing.assert_array_equal(xi, g)
        np.testing.assert_array_equal(
            fl.jensen_shannon_with_logits(x, y, beta=beta, temperature=1.5, reduction="none"),
            loss)
    # enough rows for two threads: the same bits with one
    x = rng.normal(0.0, 2.0, (60_000 // C + 17, C)).astype(np.float32)
    y = rng.normal(0.0, 2.0, x.shape).astype(np.float32)
    got = {}
    for n in (1, 2):
        fl.set_num_threads(n)
        got[n] = fl.jensen_shannon_with_logits(x, y, beta=beta, reduction="none",
                                               return_grad=True)
    np.testing.assert_array_equal(got[1][0], got[2][0])
    np.testing.assert_array_equal(got[1][1], got[2][1])
