"""Issue 16's PyTorch-catalogue losses (fastloss/pairs.py): poisson_nll_loss, gaussian_nll_loss,
margin_ranking_loss, hinge_embedding_loss, soft_margin_loss, log_cosh_loss, generalized_kl_div,
cosine_embedding_loss, triplet_margin_with_distance_loss.

Against torch.nn.functional (values and autograd gradients, float64), optax for the two optax
losses, fastloss.reference, central differences, hand-computed numbers; broadcasting, 16-bit
inputs, extreme inputs, bad input, grad_out. Value tests run on every instruction set (``isa``).
"""

from __future__ import annotations

import math

import fastloss as fl
import ml_dtypes
import numpy as np
import pytest
import _contracts as contract
from conftest import central_diff
from fastloss import reference as ref

assert_allclose = np.testing.assert_allclose
BF16 = np.dtype(ml_dtypes.bfloat16)
REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------- the elementwise losses
# name -> (inputs(rng, shape) -> dict of arrays, differentiable argument names, options)
def _poisson(rng, shape, log_input=True):
    x = rng.normal(size=shape) if log_input else rng.uniform(0.01, 3.0, size=shape)
    return {"input": x, "target": rng.poisson(2.0, size=shape).astype(np.float64)}


def _gaussian(rng, shape):
    return {"input": rng.normal(size=shape), "target": rng.normal(size=shape),
            "var": rng.uniform(0.1, 2.0, size=shape)}


def _ranking(rng, shape):
    return {"input1": rng.normal(size=shape), "input2": rng.normal(size=shape),
            "target": rng.choice([-1.0, 1.0], size=shape)}


def _hinge_emb(rng, shape):
    return {"input": rng.uniform(-1, 3, size=shape), "target": rng.choice([-1.0, 1.0], size=shape)}


def _soft_margin(rng, shape):
    return {"input": 3 * rng.normal(size=shape), "target": rng.choice([-1.0, 1.0], size=shape)}


def _log_cosh(rng, shape):
    return {"input": 3 * rng.normal(size=shape), "target": rng.normal(size=shape)}


def _gkl(rng, shape):
    return {"input": rng.normal(size=shape), "target": rng.uniform(0, 2, size=shape)}


CASES = {
    "poisson_nll_loss": (_poisson, ("input",), {}),
    "poisson_nll_loss_linear": (lambda r, s: _poisson(r, s, False), ("input",),
                                {"log_input": False}),
    "poisson_nll_loss_full": (_poisson, ("input",), {"full": True}),
    "gaussian_nll_loss": (_gaussian, ("input", "var"), {}),
    "gaussian_nll_loss_full": (_gaussian, ("input", "var"), {"full": True, "eps": 0.5}),
    "margin_ranking_loss": (_ranking, ("input1", "input2"), {"margin": 0.3}),
    "hinge_embedding_loss": (_hinge_emb, ("input",), {"margin": 1.5}),
    "soft_margin_loss": (_soft_margin, ("input",), {}),
    "log_cosh_loss": (_log_cosh, ("input",), {}),
    "generalized_kl_div": (_gkl, ("input",), {}),
}


def _fn(case):
    name = case.removesuffix("_linear").removesuffix("_full")
    return name, getattr(fl, name), getattr(ref, name)


def _call(f, args, opts, **kw):
    return f(*args.values(), **opts, **kw)


def _grads(g, n):
    return (g,) if n == 1 else g


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_against_reference(isa, rng, case, reduction, dtype):
    make, diff, opts = CASES[case]
    _, f, r = _fn(case)
    args = make(rng, (7, 37))  # 259 elements: full vectors and a tail on every ISA
    cast = {k: (v.astype(dtype) if k in diff else v) for k, v in args.items()}
    loss, g = _call(f, cast, opts, reduction=reduction, return_grad=True)
    rloss, rg = _call(r, args, opts, reduction=reduction, return_grad=True)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-6)
    assert np.asarray(loss).dtype == dtype
    assert_allclose(loss, rloss, **tol)
    for got, want, name in zip(_grads(g, len(diff)), _grads(rg, len(diff)), diff):
        assert got.dtype == dtype and got.shape == args[name].shape
        assert_allclose(got, want, **tol)
    # the loss alone is the same number (up to the compiler's contractions)
    assert_allclose(_call(f, cast, opts, reduction=reduction), loss,
                    rtol=4 * np.finfo(dtype).eps, atol=0)


# torch.nn.functional, float64, values and autograd gradients
def _torch_call(case, args, diff, opts, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    name = _fn(case)[0]
    t = {k: torch.tensor(v, requires_grad=k in diff) for k, v in args.items()}
    if name == "log_cosh_loss" or name == "generalized_kl_div":
        return None
    tf = getattr(F, name)
    out = tf(*t.values(), **opts, reduction=reduction)
    out.sum().backward()
    return out.detach().numpy(), tuple(t[k].grad.numpy() for k in diff)


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith(("log_cosh", "generalized"))])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_against_torch(rng, case, reduction):
    make, diff, opts = CASES[case]
    args = make(rng, (5, 11))
    want, wgrads = _torch_call(case, args, diff, opts, reduction)
    loss, g = _call(_fn(case)[1], args, opts, reduction=reduction, return_grad=True)
    assert_allclose(loss, want, rtol=1e-12, atol=1e-13)
    for got, w in zip(_grads(g, len(diff)), wgrads):
        assert_allclose(got, w, rtol=1e-12, atol=1e-13)


def test_optax_log_cosh_and_generalized_kl(rng):
    jnp = pytest.importorskip("jax.numpy")
    optax = pytest.importorskip("optax")
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        x, y = 3 * rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
        assert_allclose(fl.log_cosh_loss(x, y, reduction="none"),
                        optax.losses.log_cosh(jnp.asarray(x), jnp.asarray(y)), rtol=1e-12)
        lp, t = rng.normal(size=(4, 9)), rng.uniform(0, 2, size=(4, 9))
        t[0, :3] = 0.0
        gkl = getattr(optax.losses, "generalized_kl_divergence", None) or \
            optax.losses.convex_kl_divergence
        want = gkl(jnp.asarray(lp), jnp.asarray(t))
        assert_allclose(fl.generalized_kl_div(lp, t, reduction="none"), want, rtol=1e-12)
        for axis in (0, (0, 1), None):
            assert_allclose(fl.generalized_kl_div(lp, t, axis=axis, reduction="none"),
                            gkl(jnp.asarray(lp), jnp.asarray(t), axis=axis), rtol=1e-12)
        gw = jax.grad(lambda v: gkl(v, jnp.asarray(t)).mean())(jnp.asarray(lp))
        assert_allclose(fl.generalized_kl_div(lp, t, return_grad=True)[1], gw, rtol=1e-12)
        gw = jax.grad(lambda v: optax.losses.log_cosh(v, jnp.asarray(y)).sum())(jnp.asarray(x))
        assert_allclose(fl.log_cosh_loss(x, y, reduction="sum", return_grad=True)[1], gw,
                        rtol=1e-12)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("case", list(CASES))
def test_finite_differences(rng, case):
    make, diff, opts = CASES[case]
    _, f, _ = _fn(case)
    args = make(rng, (3, 4))
    _, g = _call(f, args, opts, reduction="sum", return_grad=True)
    for k, got in zip(diff, _grads(g, len(diff))):
        def total(v, k=k):
            a = dict(args)
            a[k] = v
            return float(_call(f, a, opts, reduction="sum"))
        want = central_diff(total, args[k])
        if k == "var":  # the clamp to eps is not differentiated (torch): compare above it
            keep = args[k] > opts.get("eps", 1e-6)
            got, want = got[keep], want[keep]
        assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------ hand-computed
def test_hand_computed():
    # poisson: exp(x) - y x
    assert_allclose(fl.poisson_nll_loss([0.0, 1.0], [2.0, 3.0], reduction="none"),
                    [1.0, math.e - 3.0])
    # full: Stirling for y = 3 only (y <= 1 gets 0)
    st = 3 * math.log(3) - 3 + 0.5 * math.log(2 * math.pi * 3)
    assert_allclose(fl.poisson_nll_loss([0.0, 0.0], [1.0, 3.0], full=True, reduction="none"),
                    [1.0, 1.0 + st])
    # x - y log(x + eps)
    assert_allclose(fl.poisson_nll_loss([2.0], [3.0], log_input=False, eps=0.0,
                                        reduction="sum"), 2 - 3 * math.log(2))
    # gaussian: 0.5 (log v + d^2 / v); eps clamp of v = 0 to eps = 0.25
    assert_allclose(fl.gaussian_nll_loss([3.0], [1.0], [4.0], reduction="sum"),
                    0.5 * (math.log(4) + 1.0))
    loss, (gx, gv) = fl.gaussian_nll_loss([1.0], [0.0], [0.0], eps=0.25, reduction="sum",
                                          return_grad=True)
    assert_allclose(loss, 0.5 * (math.log(0.25) + 4.0))
    assert_allclose(gx, [4.0])
    assert_allclose(gv, [0.5 * (4.0 - 16.0)])  # the clamp is not differentiated (torch)
    assert_allclose(fl.gaussian_nll_loss([3.0], [1.0], [4.0], full=True, reduction="sum"),
                    0.5 * (math.log(4) + 1.0 + math.log(2 * math.pi)))
    # margin ranking and the kink z = 0 (torch's clamp_min passes the gradient)
    loss, (g1, g2) = fl.margin_ranking_loss([1.0, 2.0], [1.0, 0.0], [1.0, 1.0], margin=0.0,
                                            reduction="sum", return_grad=True)
    assert loss == 0.0 and g1.tolist() == [-1.0, 0.0] and g2.tolist() == [1.0, 0.0]
    # hinge embedding, kink at margin - x = 0
    loss, g = fl.hinge_embedding_loss([1.0, 0.5, 3.0, 2.0], [-1, -1, -1, 1], reduction="none",
                                      return_grad=True)
    assert loss.tolist() == [0.0, 0.5, 0.0, 2.0] and g.tolist() == [-1.0, -1.0, 0.0, 1.0]
    # soft margin: log(1 + e^-yx)
    assert_allclose(fl.soft_margin_loss([1.0, 2.0], [1.0, -1.0], reduction="none"),
                    [math.log1p(math.exp(-1.0)), math.log1p(math.exp(2.0))])
    # log-cosh, tanh
    loss, g = fl.log_cosh_loss([0.5, -30.0, 0.0], [0.0, 0.0, 0.0], reduction="none",
                               return_grad=True)
    assert_allclose(loss, [math.log(math.cosh(0.5)), 30 - math.log(2), 0.0], rtol=1e-15)
    assert_allclose(g, [math.tanh(0.5), -1.0, 0.0], rtol=1e-15)
    # generalized KL: y log(y / p) + p - y per row
    loss = fl.generalized_kl_div(np.log([[2.0, 1.0]]), [[1.0, 0.0]], reduction="sum")
    assert_allclose(loss, 1 * math.log(1 / 2) + 3 - 1)


def test_torch_doc_examples():
    """The runnable examples of torch's docs, with fixed numbers instead of torch.randn."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    # GaussianNLLLoss: var of shape (5, 1) (heteroscedastic), (5,) (one per sample) and
    # (5, 2) against input (5, 2)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    for var in (np.ones((5, 2)), rng.uniform(0.5, 1.5, size=(5, 1)),
                rng.uniform(0.5, 1.5, size=5)):
        tv = torch.tensor(var, requires_grad=True)
        tx = torch.tensor(x, requires_grad=True)
        want = F.gaussian_nll_loss(tx, torch.tensor(y), tv)
        want.backward()
        loss, (gx, gv) = fl.gaussian_nll_loss(x, y, var, return_grad=True)
        assert_allclose(loss, want.item(), rtol=1e-13)
        assert_allclose(gx, tx.grad.numpy(), rtol=1e-13)
        assert gv.shape == var.shape
        assert_allclose(gv, tv.grad.numpy(), rtol=1e-13)
    # a float var
    want = F.gaussian_nll_loss(torch.tensor(x), torch.tensor(y), 0.7, full=True)
    assert_allclose(fl.gaussian_nll_loss(x, y, 0.7, full=True), want.item(), rtol=1e-13)
    # PoissonNLLLoss on (5, 2); MarginRankingLoss on (3,)
    lx, t = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    assert_allclose(fl.poisson_nll_loss(lx, t),
                    F.poisson_nll_loss(torch.tensor(lx), torch.tensor(t)).item(), rtol=1e-13)
    i1, i2, tt = rng.normal(size=3), rng.normal(size=3), np.sign(rng.normal(size=3))
    assert_allclose(fl.margin_ranking_loss(i1, i2, tt),
                    F.margin_ranking_loss(torch.tensor(i1), torch.tensor(i2),
                                          torch.tensor(tt)).item(), rtol=1e-13)


# ------------------------------------------------------------------------- broadcasting
def test_broadcasting_and_gradient_sums(rng):
    x, y = rng.normal(size=(4, 1, 3)), rng.normal(size=(5, 1))
    loss, g = fl.log_cosh_loss(x, y, reduction="none", return_grad=True)
    rloss, rg = ref.log_cosh_loss(x, y, reduction="none", return_grad=True)
    assert loss.shape == (4, 5, 3) and g.shape == x.shape
    assert_allclose(loss, rloss, rtol=1e-13)
    assert_allclose(g, rg, rtol=1e-12)
    a, b, t = rng.normal(size=(6, 1)), rng.normal(size=(1, 4)), np.sign(rng.normal(size=4))
    loss, (ga, gb) = fl.margin_ranking_loss(a, b, t, margin=0.1, return_grad=True)
    rloss, (ra, rb) = ref.margin_ranking_loss(a, b, t, margin=0.1, return_grad=True)
    assert ga.shape == a.shape and gb.shape == b.shape
    assert_allclose([loss, *ga.ravel(), *gb.ravel()], [rloss, *ra.ravel(), *rb.ravel()],
                    rtol=1e-12)
    torch = pytest.importorskip("torch")
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.nn.functional.margin_ranking_loss(ta, tb, torch.tensor(t)[None], margin=0.1).backward()
    assert_allclose(ga, ta.grad.numpy(), rtol=1e-12)
    assert_allclose(gb, tb.grad.numpy(), rtol=1e-12)


def test_gaussian_var_shapes(rng):
    x, y = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    for var in (rng.uniform(0.5, 2, size=(3, 4)), rng.uniform(0.5, 2, size=(3, 1, 2)),
                rng.uniform(0.5, 2, size=(1, 4, 2))):
        loss, (_, gv) = fl.gaussian_nll_loss(x, y, var, reduction="none", return_grad=True)
        rloss, (_, rgv) = ref.gaussian_nll_loss(x, y, var, reduction="none", return_grad=True)
        assert loss.shape == (3, 4, 2) and gv.shape == var.shape
        assert_allclose(loss, rloss, rtol=1e-13)
        assert_allclose(gv, rgv, rtol=1e-12)
    for bad in (np.ones((3, 2)), np.ones((1, 1, 2)), np.ones((4, 2)), np.ones((3, 4, 3))):
        with pytest.raises(ValueError, match="var is of incorrect size"):
            fl.gaussian_nll_loss(x, y, bad)


def test_generalized_kl_axes(rng):
    x, y = rng.normal(size=(3, 4, 5)), rng.uniform(0, 1, size=(3, 4, 5))
    for axis in (-1, 0, 1, (0, 2), None):
        for reduction in REDUCTIONS:
            loss, g = fl.generalized_kl_div(x, y, axis=axis, reduction=reduction,
                                            return_grad=True)
            rloss, rg = ref.generalized_kl_div(x, y, axis=axis, reduction=reduction,
                                               return_grad=True)
            assert np.shape(loss) == np.shape(rloss)
            assert_allclose(loss, rloss, rtol=1e-12)
            assert_allclose(g, rg, rtol=1e-12)


# ---------------------------------------------------------------------------- 16-bit
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["float16", "bfloat16"])
def test_16bit(isa, rng, case, dt):
    make, diff, opts = CASES[case]
    _, f, r = _fn(case)
    args = make(rng, (3, 50))
    cast = {k: (v.astype(dt) if k in diff else v) for k, v in args.items()}
    exact = {k: (v.astype(np.float64) for v in [cast[k]]).__next__() for k in args}
    loss, g = _call(f, cast, opts, reduction="sum", return_grad=True)
    rloss, rg = _call(r, exact, opts, reduction="sum", return_grad=True)
    assert np.asarray(loss).dtype == np.float32
    assert_allclose(loss, rloss, rtol=1e-5, atol=1e-5)
    tol = 1e-2 if dt == BF16 else 1e-3
    for got, want in zip(_grads(g, len(diff)), _grads(rg, len(diff))):
        assert got.dtype == dt
        assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    none = _call(f, cast, opts, reduction="none")
    assert none.dtype == np.float32


# ---------------------------------------------------------------------------- extremes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_stay_finite(isa, dtype):
    big = np.array([-1e30, -1e4, -88.0, -30.0, -1e-30, 0.0, 1e-30, 30.0, 1e4, 1e30], dtype)
    ones = np.ones_like(big)
    signs = np.where(np.arange(big.size) % 2 == 0, 1.0, -1.0).astype(dtype)
    checks = [
        fl.soft_margin_loss(big, signs, reduction="none", return_grad=True),
        fl.log_cosh_loss(big, 0 * big, reduction="none", return_grad=True),
        fl.margin_ranking_loss(big, -big, signs, reduction="none", return_grad=True),
        fl.hinge_embedding_loss(big, signs, reduction="none", return_grad=True),
        fl.gaussian_nll_loss(big / 1e20, 0 * big, ones, reduction="none", return_grad=True),
        fl.poisson_nll_loss(np.clip(big, -80, 80), ones * 3, reduction="none",
                            return_grad=True),
        fl.poisson_nll_loss(np.abs(big), ones * 3, log_input=False, reduction="none",
                            return_grad=True),
        fl.generalized_kl_div(np.clip(big, -80, 80), ones, reduction="none", return_grad=True),
    ]
    for loss, g in checks:
        for a in (loss, *((g,) if isinstance(g, np.ndarray) else g)):
            assert np.all(np.isfinite(a)), (loss, g)
    # log-cosh of tiny differences keeps its relative accuracy (d^2 / 2)
    d = np.array([1e-3, 1e-6, 1e-12], dtype)
    d64 = d.astype(np.float64)
    assert_allclose(fl.log_cosh_loss(d, 0 * d, reduction="none"),
                    d64**2 / 2 - d64**4 / 12 + d64**6 / 45, rtol=4 * np.finfo(dtype).eps)
    # the float32 loss within a few ulp of the float64 one across the whole range
    x = np.linspace(-25, 25, 10001)
    l32 = fl.log_cosh_loss(x.astype(np.float32), np.zeros(x.size, np.float32), reduction="none")
    l64 = ref.log_cosh_loss(x.astype(np.float32).astype(np.float64), 0 * x, reduction="none")
    assert np.max(np.abs(l32 - l64) / np.maximum(l64, 1e-30)) < 5 * np.finfo(np.float32).eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_cosh_around_the_float32_threshold(isa, dtype):
    # float32 switches at |d| = 0.75 from an even polynomial in d^2 to |d| - log 2 +
    # log1p(exp(-2 |d|)) (the gradient from a polynomial to (1 - e) / (1 + e)): both sides, and
    # the ulps next to the switch, within a few ulp of the float64 answer
    t = np.float32(0.75)
    near = [np.float32(t + k * np.spacing(t)) for k in range(-16, 17)]
    d = np.concatenate([near, np.linspace(0.5, 1.0, 2001, dtype=np.float32)]).astype(dtype)
    d = np.concatenate([d, -d])
    loss, g = fl.log_cosh_loss(d, np.zeros_like(d), reduction="none", return_grad=True)
    a = np.abs(d.astype(np.float64))
    em = np.expm1(a)
    want_l, want_g = np.log1p(em * em / (2 * (em + 1))), np.tanh(d.astype(np.float64))
    if dtype == np.float32:
        for got, want in ((loss, want_l), (g, want_g)):
            ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
            assert np.max(np.abs(got - want) / ulp) < 3
    else:
        assert_allclose(loss, want_l, rtol=4 * np.finfo(dtype).eps)
        assert_allclose(g, want_g, rtol=4 * np.finfo(dtype).eps)


def test_padded_tail_lanes_add_nothing(isa):
    # a chunk's last partial vector is padded (input 0): with eps = 0 a padded lane's own
    # Poisson loss would be inf (log 0), which must not reach the sum
    for n in (1, 7, 17, 33, 8192 + 5):
        x = np.linspace(0.5, 2, n).astype(np.float32)
        want = np.sum(x.astype(np.float64) - np.log(x.astype(np.float64)))
        got = fl.poisson_nll_loss(x, np.ones(n, np.float32), log_input=False, eps=0.0,
                                  reduction="sum")
        assert_allclose(got, want, rtol=1e-6)


def test_nan_propagates_to_its_element_only():
    x = np.array([np.nan, 1.0])
    for f in (fl.log_cosh_loss, fl.soft_margin_loss, fl.poisson_nll_loss):
        loss, g = f(x, [1.0, 1.0], reduction="none", return_grad=True)
        assert np.isnan(loss[0]) and np.isfinite(loss[1]) and np.isfinite(g[1])


# --------------------------------------------------------------------- grad_out, layouts
@pytest.mark.parametrize("name", ["poisson_nll_loss", "hinge_embedding_loss", "soft_margin_loss",
                                  "log_cosh_loss", "generalized_kl_div"])
def test_grad_out_and_in_place(rng, name):
    f, r = getattr(fl, name), getattr(ref, name)
    x = rng.uniform(0.1, 2, size=(4, 6)).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=(4, 6)) if name == "hinge_embedding_loss" else \
        rng.uniform(0, 2, size=(4, 6))
    _, want = r(x, y, return_grad=True)
    out = np.empty_like(x)
    loss, g = f(x, y, return_grad=True, grad_out=out)
    assert g is out
    assert_allclose(out, want, rtol=2e-6, atol=1e-7)
    xi = x.copy()
    _, g = f(xi, y, return_grad=True, grad_out=xi)
    assert g is xi
    assert_allclose(xi, want, rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match="return_grad"):
        f(x, y, grad_out=out)
    with pytest.raises(TypeError, match="grad_out"):
        f(x, y, return_grad=True, grad_out=np.empty((4, 6)))


def test_checks_write_nothing_into_grad_out():
    x = np.array([0.5, 1.0, 2.0])
    for f, args in ((fl.hinge_embedding_loss, (x, [1, 0, -1])),
                    (fl.generalized_kl_div, (x, [1.0, -1.0, 0.0])),
                    (fl.poisson_nll_loss, (x - 1.0, [1.0, 1.0, 1.0]))):
        kw = {"log_input": False} if f is fl.poisson_nll_loss else {}
        xi = np.array(args[0], dtype=np.float64)
        before = xi.copy()
        with pytest.raises(ValueError):
            f(xi, args[1], return_grad=True, grad_out=xi, **kw)
        assert np.array_equal(xi, before)
        out = np.full(3, 7.0)
        with pytest.raises(ValueError):
            f(xi, args[1], return_grad=True, grad_out=out, **kw)
        assert np.all(out == 7.0)


def test_strided_and_integer_inputs(rng):
    x = rng.normal(size=(6, 8))[::2, ::-3]
    y = rng.normal(size=(6, 8))[::2, ::-3]
    assert_allclose(fl.log_cosh_loss(x, y), ref.log_cosh_loss(x, y), rtol=1e-13)
    loss = fl.poisson_nll_loss(np.arange(4), np.arange(4))  # integers: float64
    assert loss.dtype == np.float64
    assert_allclose(loss, ref.poisson_nll_loss(np.arange(4.0), np.arange(4.0)), rtol=1e-13)


def test_large_input_threads(rng):
    # several chunks and threads; the sum does not depend on the thread count
    x, y = rng.normal(size=300_001).astype(np.float32), rng.normal(size=300_001)
    before = fl.get_num_threads()
    try:
        fl.set_num_threads(1)
        one = fl.log_cosh_loss(x, y, return_grad=True)
        fl.set_num_threads(4)
        four = fl.log_cosh_loss(x, y, return_grad=True)
    finally:
        fl.set_num_threads(before)
    assert one[0] == four[0] and np.array_equal(one[1], four[1])
    assert_allclose(one[0], ref.log_cosh_loss(x, y), rtol=1e-6)


def test_empty():
    e = np.zeros((0, 3))
    assert np.isnan(fl.log_cosh_loss(e, e))
    assert fl.soft_margin_loss(e, e, reduction="sum") == 0
    assert fl.margin_ranking_loss(e, e, e, reduction="none").shape == (0, 3)


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    x = np.ones(3)
    with pytest.raises(ValueError, match="reduction"):
        fl.log_cosh_loss(x, x, reduction="batchmean")
    with pytest.raises(ValueError, match="broadcast"):
        fl.soft_margin_loss(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="input"):
        fl.log_cosh_loss(np.ones(3, complex), x)
    with pytest.raises(TypeError, match="target"):
        fl.log_cosh_loss(x, ["a", "b", "c"])
    with pytest.raises(ValueError, match="rates"):
        fl.poisson_nll_loss([-1.0, 1.0], [1.0, 1.0], log_input=False)
    with pytest.raises(ValueError, match="eps"):
        fl.poisson_nll_loss(x, x, eps=-1.0)
    with pytest.raises(TypeError, match="log_input"):
        fl.poisson_nll_loss(x, x, log_input="yes")
    with pytest.raises(ValueError, match="negative"):
        fl.gaussian_nll_loss(x, x, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="negative"):
        fl.gaussian_nll_loss(x, x, -1.0)
    with pytest.raises(ValueError, match="eps"):
        fl.gaussian_nll_loss(x, x, x, eps=0.0)
    with pytest.raises(ValueError, match="labels 1 or -1"):
        fl.hinge_embedding_loss(x, [1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="margin"):
        fl.margin_ranking_loss(x, x, x, margin=math.inf)
    with pytest.raises(ValueError, match=">= 0"):
        fl.generalized_kl_div(x, [1.0, -0.5, 1.0])
    with pytest.raises(np.exceptions.AxisError):
        fl.generalized_kl_div(x, x, axis=1)


# ------------------------------------------------------------------ cosine embedding loss
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.3, -0.5])
def test_cosine_embedding_against_torch(rng, reduction, margin):
    torch = pytest.importorskip("torch")
    a, b = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
    b[0] = a[0] * 2.0  # cos = 1 (up to the eps)
    a[1] = 0.0  # a zero vector
    y = rng.choice([-1.0, 1.0], size=9)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    want = torch.nn.functional.cosine_embedding_loss(ta, tb, torch.tensor(y), margin=margin,
                                                     reduction=reduction)
    want.sum().backward()
    loss, (ga, gb) = fl.cosine_embedding_loss(a, b, y, margin=margin, reduction=reduction,
                                              return_grad=True)
    assert_allclose(loss, want.detach().numpy(), rtol=1e-12, atol=1e-14)
    # (the zero vector's gradient is ~1e6, 1/sqrt(1e-12): a few digits are lost to rounding)
    assert_allclose(ga, ta.grad.numpy(), rtol=1e-8, atol=1e-12)
    assert_allclose(gb, tb.grad.numpy(), rtol=1e-8, atol=1e-12)
    rloss, (ra, rb) = ref.cosine_embedding_loss(a, b, y, margin=margin, reduction=reduction,
                                                return_grad=True)
    assert_allclose(loss, rloss, rtol=1e-12, atol=1e-14)
    assert_allclose(ga, ra, rtol=1e-12, atol=1e-14)


def test_cosine_embedding_more(rng):
    torch = pytest.importorskip("torch")
    # 1-d inputs with a 0-d target (torch's other form)
    a, b = rng.normal(size=4), rng.normal(size=4)
    want = torch.nn.functional.cosine_embedding_loss(torch.tensor(a), torch.tensor(b),
                                                     torch.tensor(-1.0))
    assert_allclose(fl.cosine_embedding_loss(a, b, -1), want.item(), rtol=1e-13)
    # hand: orthogonal, identical
    assert_allclose(fl.cosine_embedding_loss([[1.0, 0.0]], [[0.0, 3.0]], [1]), 1.0)
    assert_allclose(fl.cosine_embedding_loss([[1.0, 2.0]], [[1.0, 2.0]], [-1], margin=0.5),
                    0.5, rtol=1e-12)
    # broadcasting one input against many, float32 and 16-bit, finite differences
    a, b = rng.normal(size=(1, 6)), rng.normal(size=(5, 6))
    y = rng.choice([-1.0, 1.0], size=5)
    loss, (ga, gb) = fl.cosine_embedding_loss(a, b, y, reduction="sum", return_grad=True)
    assert ga.shape == (1, 6)
    assert_allclose(ga, central_diff(lambda v: fl.cosine_embedding_loss(v, b, y, reduction="sum"),
                                     a), rtol=1e-6, atol=1e-8)
    l32, (g32, _) = fl.cosine_embedding_loss(a.astype(np.float32), b.astype(np.float32), y,
                                             reduction="sum", return_grad=True)
    assert l32.dtype == np.float32 and g32.dtype == np.float32
    assert_allclose(l32, loss, rtol=1e-6)
    l16, (g16, _) = fl.cosine_embedding_loss(a.astype(BF16), b.astype(BF16), y, return_grad=True)
    assert l16.dtype == np.float32 and g16.dtype == BF16
    with pytest.raises(ValueError, match="labels 1 or -1"):
        fl.cosine_embedding_loss(a, b, np.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        fl.cosine_embedding_loss(a, b, np.ones(4))
    with pytest.raises(ValueError, match="broadcast"):
        fl.cosine_embedding_loss(np.ones((2, 3)), np.ones((3, 3)), np.ones(3))


# ------------------------------------------------------------- triplet with any distance
def test_triplet_with_distance_default_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a, p, n = (rng.normal(size=(6, 4)) for _ in range(3))
    for swap in (False, True):
        ts = [torch.tensor(v, requires_grad=True) for v in (a, p, n)]
        want = torch.nn.functional.triplet_margin_with_distance_loss(*ts, margin=0.7, swap=swap)
        want.backward()
        loss, grads = fl.triplet_margin_with_distance_loss(a, p, n, margin=0.7, swap=swap,
                                                           return_grad=True)
        assert_allclose(loss, want.item(), rtol=1e-12)
        for g, t in zip(grads, ts):
            assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_triplet_with_custom_distance(rng):
    torch = pytest.importorskip("torch")
    a, p, n = (rng.normal(size=(6, 4)) for _ in range(3))

    def cos_dist(x, y):
        return 1.0 - (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)

    def t_cos_dist(x, y):
        return 1.0 - torch.nn.functional.cosine_similarity(x, y)

    for swap in (False, True):
        for reduction in REDUCTIONS:
            got = fl.triplet_margin_with_distance_loss(a, p, n, distance_function=cos_dist,
                                                       margin=0.4, swap=swap,
                                                       reduction=reduction)
            want = torch.nn.functional.triplet_margin_with_distance_loss(
                *(torch.tensor(v) for v in (a, p, n)), distance_function=t_cos_dist,
                margin=0.4, swap=swap, reduction=reduction)
            assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-15)
            assert_allclose(got, ref.triplet_margin_with_distance_loss(
                a, p, n, distance_function=cos_dist, margin=0.4, swap=swap,
                reduction=reduction), rtol=1e-13)
    with pytest.raises(ValueError, match="default distance"):
        fl.triplet_margin_with_distance_loss(a, p, n, distance_function=cos_dist,
                                             return_grad=True)
    with pytest.raises(TypeError, match="callable"):
        fl.triplet_margin_with_distance_loss(a, p, n, distance_function=3)
    with pytest.raises(ValueError, match="margin"):
        fl.triplet_margin_with_distance_loss(a, p, n, margin=0.0)
    with pytest.raises(ValueError, match="number of axes"):
        fl.triplet_margin_with_distance_loss(a, p, n[0])
    with pytest.raises(TypeError, match="distance_function"):
        fl.triplet_margin_with_distance_loss(a, p, n, distance_function=lambda x, y: "abc")


# --------------------------------------------------------------------- tuple grad_out
FLOATS = [np.float32, np.float64]


def _margin_ranking_args(rng, dt, shape2=(4, 5), dt2=None):
    return (rng.normal(size=(4, 5)).astype(dt), rng.normal(size=shape2).astype(dt2 or dt),
            rng.choice([-1.0, 1.0], size=(4, 5)))


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_nll_grad_out(rng, dt, reduction):
    x, y = rng.normal(size=(4, 5)).astype(dt), rng.normal(size=(4, 5)).astype(dt)
    for var in (rng.uniform(0.5, 2, size=(4, 5)), rng.uniform(0.5, 2, size=4),
                rng.uniform(0.5, 2, size=(4, 1)), rng.uniform(0.5, 2, size=(1, 5))):
        contract.check_tuple_grad_out(fl.gaussian_nll_loss, (x, y, var.astype(dt)), (0, 2),
                                      reduction=reduction, full=True)
    # a target that broadcasts; var below eps (clamped)
    v = rng.uniform(0.5, 2, size=(4, 5)).astype(dt)
    v[0, 0] = 1e-9
    contract.check_tuple_grad_out(fl.gaussian_nll_loss, (x, y[0], v), (0, 2),
                                  reduction=reduction)
    # a number var: its gradient a 0-d float64 array; in place on input only
    contract.check_tuple_grad_out(fl.gaussian_nll_loss, (x, y, 1.5), (0, 2), in_place=False,
                                  reduction=reduction)
    want_loss, (gx, gv) = fl.gaussian_nll_loss(x, y, 1.5, reduction=reduction,
                                               return_grad=True)
    xc, bv = x.copy(), np.empty((), np.float64)
    loss, (g0, g1) = fl.gaussian_nll_loss(xc, y, 1.5, reduction=reduction, return_grad=True,
                                          grad_out=(xc, bv))
    assert g0 is xc and g1 is bv
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(xc, gx)
    np.testing.assert_array_equal(bv, gv)


@pytest.mark.parametrize("dt", FLOATS)
def test_gaussian_nll_grad_out_errors(rng, dt):
    x, y = rng.normal(size=(4, 5)).astype(dt), rng.normal(size=(4, 5)).astype(dt)
    v = rng.uniform(0.5, 2, size=(4, 5)).astype(dt)
    contract.check_tuple_grad_out_errors(fl.gaussian_nll_loss, (x, y, v), (0, 2))
    contract.check_tuple_grad_out_errors(fl.gaussian_nll_loss, (x, y, v[:, 0]), (0, 2))
    # a negative variance is found by the kernel: nothing is written before
    v[2, 3] = -1.0
    contract.check_tuple_grad_out_untouched(fl.gaussian_nll_loss, (x, y, v), (0, 2),
                                            ValueError)
    contract.check_tuple_grad_out_untouched(fl.gaussian_nll_loss, (x, y, v[:, 3:4]), (0, 2),
                                            ValueError)  # (var broadcast: through a temporary)


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_grad_out(rng, dt, reduction):
    f = fl.margin_ranking_loss
    contract.check_tuple_grad_out(f, _margin_ranking_args(rng, dt), (0, 1), margin=0.2,
                                  reduction=reduction)
    contract.check_tuple_grad_out(f, _margin_ranking_args(rng, dt, (5,)), (0, 1),
                                  reduction=reduction)  # input2 broadcast: summed
    other = np.float64 if dt == np.float32 else np.float32  # two dtypes: each its own
    contract.check_tuple_grad_out(f, _margin_ranking_args(rng, dt, dt2=other), (0, 1),
                                  reduction=reduction)
    # one array as both inputs, in place for the first
    x1, _, t = _margin_ranking_args(rng, dt)
    want_loss, want = f(x1, x1, t, reduction=reduction, return_grad=True)
    xc = x1.copy()
    loss, got = f(xc, xc, t, reduction=reduction, return_grad=True, grad_out=(xc, None))
    assert got[0] is xc
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("dt", FLOATS)
def test_margin_ranking_grad_out_errors(rng, dt):
    args = _margin_ranking_args(rng, dt)
    contract.check_tuple_grad_out_errors(fl.margin_ranking_loss, args, (0, 1))
    # a target that does not broadcast: raised before anything is written
    contract.check_tuple_grad_out_untouched(fl.margin_ranking_loss,
                                            args[:2] + (np.ones(3),), (0, 1), ValueError)


def _cosine_embedding_args(rng, dt, shape2=(6, 5)):
    return (rng.normal(size=(6, 5)).astype(dt), rng.normal(size=shape2).astype(dt),
            rng.choice([-1, 1], size=6))


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cosine_embedding_grad_out(rng, dt, reduction):
    f = fl.cosine_embedding_loss
    contract.check_tuple_grad_out(f, _cosine_embedding_args(rng, dt), (0, 1), margin=0.1,
                                  reduction=reduction)
    contract.check_tuple_grad_out(f, _cosine_embedding_args(rng, dt, (5,)), (0, 1),
                                  reduction=reduction)
    contract.check_tuple_grad_out_errors(f, _cosine_embedding_args(rng, dt), (0, 1))
    x1, x2, t = _cosine_embedding_args(rng, dt)
    t[3] = 0  # a label other than 1 / -1
    contract.check_tuple_grad_out_untouched(f, (x1, x2, t), (0, 1), ValueError)


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_with_distance_grad_out(rng, dt, swap):
    f = fl.triplet_margin_with_distance_loss
    a, p, n = (rng.normal(size=(6, 4)).astype(dt) for _ in range(3))
    for reduction in REDUCTIONS:
        contract.check_tuple_grad_out(f, (a, p, n), (0, 1, 2), swap=swap, margin=2.0,
                                      reduction=reduction)
    contract.check_tuple_grad_out_errors(f, (a, p, n), (0, 1, 2), swap=swap)
    contract.check_tuple_grad_out_untouched(f, (a, p, n[:3]), (0, 1, 2), ValueError)
    with pytest.raises(ValueError, match="default distance"):  # (no gradient to write)
        f(a, p, n, distance_function=lambda u, v: np.abs(u - v).sum(-1), return_grad=True,
          grad_out=(None, None, None))
