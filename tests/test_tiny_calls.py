"""Issue 13, "tiny calls": the small-call fast paths of the pointwise losses, the pair losses,
cross_entropy / nll_loss with gradients and "none", multilabel_margin_loss, kl_div_with_logits,
and logsumexp / softmax / log_softmax.

The fast path must give the general path's results bit for bit (values, dtypes, shapes, Python
types) and, on invalid input, the same exception with the same message. The general path is
forced by passing an ndarray subclass view of the same data (every function takes its operands
through np.asarray, which drops the subclass; the fast paths take exact ndarrays only).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss as fl
from fastloss import _core


class _Sub(np.ndarray):
    """An ndarray subclass: the same data, but the fast paths decline it."""


def _g(a):
    return a.view(_Sub)


def _same(fast, general):
    """Bit-identical results, recursively through tuples."""
    if isinstance(general, tuple):
        assert isinstance(fast, tuple) and len(fast) == len(general)
        for f, g in zip(fast, general):
            _same(f, g)
        return
    assert type(fast) is type(general), (type(fast), type(general))
    assert fast.dtype == general.dtype and np.shape(fast) == np.shape(general)
    np.testing.assert_array_equal(np.asarray(fast).reshape(-1).view(np.uint8),
                                  np.asarray(general).reshape(-1).view(np.uint8))


def _outcome(f, *args, **kw):
    try:
        return "ok", f(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - compared below
        return "raised", (type(exc), str(exc))


def _same_outcome(f, fast_args, general_args, **kw):
    a, b = _outcome(f, *fast_args, **kw), _outcome(f, *general_args, **kw)
    assert a[0] == b[0], (a, b)
    if a[0] == "raised":
        assert a[1] == b[1]
    else:
        _same(a[1], b[1])
    return a


@pytest.fixture
def fast_only(monkeypatch):
    """A context in which the general paths fail: what runs there took a fast path."""
    import contextlib
    import importlib

    mods = {m: importlib.import_module(f"fastloss.{m}")  # (fastloss.softmax is the function)
            for m in ("_pointwise", "pairs", "classification", "softmax", "margin", "multilabel",
                      "distributions")}

    def general(*args, **kwargs):
        raise AssertionError("the general path ran")

    @contextlib.contextmanager
    def ctx():
        with monkeypatch.context() as m:
            m.setattr(mods["_pointwise"], "float_input", general)
            m.setattr(mods["pairs"], "float_input", general)
            m.setattr(mods["classification"], "_class_input", general)
            m.setattr(mods["classification"], "float_input", general)  # (softmax_focal_loss)
            m.setattr(mods["margin"], "float_input", general)
            m.setattr(mods["multilabel"], "float_input", general)
            m.setattr(mods["distributions"], "float_input", general)
            m.setattr(mods["softmax"], "float_input", general)
            yield

    return ctx


def _data(rng, shape, dtype):
    x = rng.normal(0, 2, shape).astype(dtype)
    return {
        "x": x,
        "y": rng.normal(0, 2, shape).astype(dtype),
        "prob": rng.random(shape).astype(dtype),
        "pm1": np.where(rng.random(shape) > 0.5, 1.0, -1.0).astype(dtype),
        "01": (rng.random(shape) > 0.5).astype(dtype),
        "pos": (rng.random(shape) + 0.1).astype(dtype),
        "logp": np.log(rng.random(shape) + 0.01).astype(dtype),
    }


# name: (function, operand keys, options): the first operand is the differentiable one (two
# for margin_ranking and gaussian_nll (input, var): passed as (input, target, var))
ELEMENTWISE = {
    "mse_loss": (fl.mse_loss, ("x", "y"), {}),
    "l1_loss": (fl.l1_loss, ("x", "y"), {}),
    "huber_loss": (fl.huber_loss, ("x", "y"), {"delta": 0.7}),
    "smooth_l1_loss": (fl.smooth_l1_loss, ("x", "y"), {"beta": 0.5}),
    "bce_with_logits": (fl.binary_cross_entropy_with_logits, ("x", "prob"), {}),
    "binary_cross_entropy": (fl.binary_cross_entropy, ("prob", "01"), {}),
    "sigmoid_focal_loss": (fl.sigmoid_focal_loss, ("x", "01"), {"gamma": 1.5}),
    "hinge_loss": (fl.hinge_loss, ("x", "pm1"), {}),
    "hinge_loss_01": (fl.hinge_loss, ("x", "01"), {"squared": True}),
    "kl_div": (fl.kl_div, ("logp", "prob"), {}),
    "kl_div_log_target": (fl.kl_div, ("logp", "y"), {"log_target": True}),
    "poisson_nll_loss": (fl.poisson_nll_loss, ("x", "pos"), {}),
    "poisson_nll_rates": (fl.poisson_nll_loss, ("pos", "y"), {"log_input": False,
                                                              "full": True}),
    "gaussian_nll_loss": (fl.gaussian_nll_loss, ("x", "y", "pos"), {"full": True}),
    "margin_ranking_loss": (fl.margin_ranking_loss, ("x", "y", "pm1"), {"margin": 0.3}),
    "hinge_embedding_loss": (fl.hinge_embedding_loss, ("pos", "pm1"), {}),
    "soft_margin_loss": (fl.soft_margin_loss, ("x", "pm1"), {}),
    "log_cosh_loss": (fl.log_cosh_loss, ("x", "y"), {}),
    "generalized_kl_div": (fl.generalized_kl_div, ("x", "pos"), {}),
}


def _reductions(name):
    return ("mean", "sum", "none", "batchmean") if name.startswith("kl_div") else (
        "mean", "sum", "none")


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (128,), (4, 33), (2, 3, 5)])
def test_elementwise_fast_equals_general(rng, fast_only, name, dtype, shape):
    f, keys, kw = ELEMENTWISE[name]
    d = _data(rng, shape, dtype)
    ops = [d[k] for k in keys]
    for reduction in _reductions(name):
        for grad in (False, True):
            kw2 = dict(kw, reduction=reduction, return_grad=grad)
            with fast_only():
                fast = f(*ops, **kw2)
            general = f(*[_g(a) for a in ops], **kw2)
            _same(fast, general)
            loss = fast[0] if grad else fast
            if reduction == "none":  # (generalized_kl_div: one per row of the last axis)
                assert np.asarray(loss).dtype == dtype
            else:
                assert type(loss) is dtype
    # the fast path is taken: the core answers for these operands (and not for the subclass)
    if name in ("mse_loss", "bce_with_logits"):
        assert _core.pointwise_fast(0, ops[0], ops[1], 0.0, 0.0, "mean", True) is not None
        assert _core.pointwise_fast(0, _g(ops[0]), ops[1], 0.0, 0.0, "mean", True) is None


POINTWISE_KINDS = {"mse_loss": 0, "l1_loss": 1, "huber_loss": 2, "smooth_l1_loss": 3,
                   "bce_with_logits": 4, "binary_cross_entropy": 5, "sigmoid_focal_loss": 6,
                   "hinge_loss": 7, "hinge_loss_01": 7, "kl_div": 8, "kl_div_log_target": 8}


def _check_grad_out(rng, fast_only, name, dtype, in_place, checks):
    """An elementwise loss with grad_out (a fresh array, or the input itself): the general
    path's bits, returned in grad_out itself, by the fast path (in place of the input, where
    the kernel checks its input (checks), by the general path: a check may fail after the
    writes). Returns the function, its operands and options."""
    f, keys, kw = ELEMENTWISE[name]
    d = _data(rng, (4, 33), dtype)
    ops = [d[k] for k in keys]
    for reduction in _reductions(name):
        kw2 = dict(kw, reduction=reduction, return_grad=True)
        want = f(*[_g(a) for a in ops], **kw2)
        x = ops[0].copy()
        g = x if in_place else np.full_like(x, np.nan)
        if in_place and checks:
            got = f(x, *ops[1:], grad_out=g, **kw2)
        else:
            with fast_only():
                got = f(x, *ops[1:], grad_out=g, **kw2)
        assert got[1] is g
        _same(got, want)
    return f, ops, kw


@pytest.mark.parametrize("name", list(POINTWISE_KINDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
def test_pointwise_fast_with_grad_out(rng, fast_only, name, dtype, in_place):
    # A preallocated gradient (a training loop's buffer) keeps the fast path: the same bits
    # as the general path, returned in grad_out itself (also in place of the input, for the
    # losses that do not check their input in the kernel)
    checks = name.startswith(("binary_cross_entropy", "hinge", "kl_div"))
    ops = _check_grad_out(rng, fast_only, name, dtype, in_place, checks)[1]
    args = (POINTWISE_KINDS[name], ops[0], ops[1], float(name == "kl_div_log_target"), 0.0)
    g = np.empty_like(ops[0])
    assert _core.pointwise_fast(*args, "mean", True, g) is not None
    assert _core.pointwise_fast(*args, "mean", True, None) is not None
    # declined: return_grad False, another dtype or shape, a view, read-only, a subclass,
    # overlapping the target, (checking kinds) overlapping the input
    ro = np.empty_like(ops[0])
    ro.flags.writeable = False
    other = np.float32 if dtype == np.float64 else np.float64
    for bad in (np.empty(ops[0].shape, other), np.empty((4, 34), dtype)[:, :33],
                np.empty((33, 4), dtype).T, ro, _g(np.empty_like(ops[0])), ops[1], [0.0]):
        assert _core.pointwise_fast(*args, "mean", True, bad) is None
    assert _core.pointwise_fast(*args, "mean", False, g) is None
    assert (_core.pointwise_fast(*args, "mean", True, ops[0]) is None) == checks


@pytest.mark.parametrize("name", ["binary_cross_entropy", "hinge_loss", "kl_div"])
def test_pointwise_fast_grad_out_invalid_input(rng, name):
    # The kinds that check their input in the kernel write grad_out only after the check (a
    # fresh gradient copied into it), so an invalid call raises as the general path does;
    # calls over kSmallWork elements take the general path
    f, keys, kw = ELEMENTWISE[name]
    d = _data(rng, (64,), np.float32)
    ops = [d[k] for k in keys]
    bad = ops[0].copy() if name == "binary_cross_entropy" else ops[0]
    t = ops[1].copy()
    if name == "binary_cross_entropy":
        bad[3] = 1.5
    elif name == "hinge_loss":
        t[3] = 0.5
    else:
        t[3] = -0.25
    g = np.empty_like(ops[0])
    args = (POINTWISE_KINDS[name], bad, t, 0.0, 0.0, "sum", True, g)
    g[:] = 7.0
    assert _core.pointwise_fast(*args) is None
    assert np.all(g == 7.0)  # (nothing written)
    _same_outcome(f, (bad, t), (_g(bad), t), grad_out=g, return_grad=True, **kw)
    big = np.resize(ops[0], 40000), np.resize(ops[1], 40000)
    assert _core.pointwise_fast(POINTWISE_KINDS[name], *big, 0.0, 0.0, "sum", True,
                                np.empty_like(big[0])) is None
    assert _core.pointwise_fast(POINTWISE_KINDS[name], *big, 0.0, 0.0, "sum", True) is not None


PAIR_ONE_GRAD = ("poisson_nll_loss", "poisson_nll_rates", "hinge_embedding_loss",
                 "soft_margin_loss", "log_cosh_loss", "generalized_kl_div")


@pytest.mark.parametrize("name", PAIR_ONE_GRAD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
def test_pair_fast_with_grad_out(rng, fast_only, name, dtype, in_place):
    # As the pointwise losses: grad_out keeps the fast path, bit for bit, returned itself; in
    # place of the input only where the kernel checks nothing (soft_margin, log_cosh)
    checks = name not in ("soft_margin_loss", "log_cosh_loss")
    f, ops, kw = _check_grad_out(rng, fast_only, name, dtype, in_place, checks)
    if name == "poisson_nll_rates":  # an invalid rate: nothing written, the general error
        bad = ops[0].copy()
        bad[1, 2] = -1.0
        g = np.full_like(bad, 7.0)
        assert _core.pairwise_fast(0, bad, None, ops[1], 1e-8, False, True, "sum", True, False,
                                   g) is None
        assert np.all(g == 7.0)
        _same_outcome(f, (bad, ops[1]), (_g(bad), ops[1]), grad_out=g, return_grad=True, **kw)


@pytest.mark.parametrize("name", ["gaussian_nll_loss", "margin_ranking_loss"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_fast_with_two_grad_outs(rng, fast_only, name, dtype):
    # The two-gradient losses take grad_out as a pair (tuple or list; an entry None: that
    # gradient fresh): the fast path, the general path's bits, the caller's arrays returned;
    # in place of the operands only where the kernel checks nothing (margin_ranking)
    f, keys, kw = ELEMENTWISE[name]
    d = _data(rng, (4, 33), dtype)
    ops = [d[k] for k in keys]
    diff = (0, 2) if name == "gaussian_nll_loss" else (0, 1)  # (the differentiable operands)
    checks = name == "gaussian_nll_loss"
    for reduction in ("mean", "sum", "none"):
        kw2 = dict(kw, reduction=reduction, return_grad=True)
        want = f(*[_g(a) for a in ops], **kw2)
        for mode in ("both", "first", "second", "list", "in_place"):
            args = [a.copy() for a in ops]
            gs = [np.full_like(ops[0], np.nan), np.full_like(ops[0], np.nan)]
            if mode == "first":
                gs[1] = None
            elif mode == "second":
                gs[0] = None
            elif mode == "in_place":
                gs = [args[diff[0]], args[diff[1]]]
            gout = list(gs) if mode == "list" else tuple(gs)
            if mode == "in_place" and checks:
                got = f(*args, grad_out=gout, **kw2)
            else:
                with fast_only():
                    got = f(*args, grad_out=gout, **kw2)
            _same(got, want)
            for j in (0, 1):
                if gs[j] is not None:
                    assert got[1][j] is gs[j]
    # the core declines: one entry of another dtype, a strided view, read-only, a subclass, the
    # two entries sharing memory, an entry over the target, three entries, a bare array, a
    # return_grad of False; in place where the kernel checks
    kind = {"gaussian_nll_loss": 1, "margin_ranking_loss": 2}[name]
    from fastloss.pairs import KINDS
    assert KINDS[name.removesuffix("_loss")] == kind
    x, x2, y = ops[diff[0]], ops[diff[1]], ops[1 if name == "gaussian_nll_loss" else 2]
    head = (kind, x, x2, y, 1e-6 if checks else 0.3, True, False, "sum")

    def fast(gout, grad=True):
        return _core.pairwise_fast(*head, grad, False, gout)

    g1, g2 = np.empty_like(x), np.empty_like(x)
    assert fast((g1, g2)) is not None and fast([None, g2]) is not None
    ro = np.empty_like(x)
    ro.flags.writeable = False
    other = np.float32 if dtype == np.float64 else np.float64
    for bad in (np.empty(x.shape, other), np.empty((4, 34), dtype)[:, :33], ro,
                _g(np.empty_like(x)), g1, y, [0.0]):
        assert fast((g1, bad) if bad is not g1 else (g1, g1)) is None
    assert fast((g1, g2, None)) is None and fast(g1) is None and fast((g1,)) is None
    assert fast((g1, g2), grad=False) is None
    assert (fast((x, x2)) is None) == checks
    assert fast((x2, None)) is None  # (an operand that is not the gradient's own)
    if checks:  # a negative variance: nothing written, the general path's error
        bad_var = x2.copy()
        bad_var[1, 2] = -1.0
        g1[:], g2[:] = 7.0, 7.0
        assert _core.pairwise_fast(kind, x, bad_var, y, 1e-6, True, False, "sum", True, False,
                                   (g1, g2)) is None
        assert np.all(g1 == 7.0) and np.all(g2 == 7.0)
        _same_outcome(f, (x, y, bad_var), (_g(x), y, bad_var), grad_out=(g1, g2),
                      return_grad=True, **kw)


def test_elementwise_fast_matches_reference(rng):
    """Not only self-consistent: the fast path's numbers are the reference's."""
    from fastloss import reference
    d = _data(rng, (64,), np.float64)
    loss, g = fl.mse_loss(d["x"], d["y"], reduction="sum", return_grad=True)
    np.testing.assert_allclose(loss, np.sum((d["x"] - d["y"]) ** 2), rtol=1e-13)
    np.testing.assert_allclose(g, 2 * (d["x"] - d["y"]), rtol=1e-13)
    loss, g = fl.binary_cross_entropy_with_logits(d["x"], d["prob"], return_grad=True)
    rl, rg = reference.binary_cross_entropy_with_logits(d["x"], d["prob"], return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-15)
    per = fl.log_cosh_loss(d["x"], d["y"], reduction="none")
    np.testing.assert_allclose(per, np.log(np.cosh(d["x"] - d["y"])), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_invalid_input_same_errors(rng, dtype):
    """Invalid values found by the kernel: the fast path declines and the general path raises
    its error, the same as when called on the general path directly."""
    d = _data(rng, (40,), dtype)
    x, y = d["x"], d["y"]
    bad_prob = d["prob"].copy()
    bad_prob[7] = 1.5
    nan_prob = d["prob"].copy()
    nan_prob[3] = np.nan
    bad_lab = d["pm1"].copy()
    bad_lab[5] = 0.5
    mixed = d["pm1"].copy()
    mixed[2] = 0.0  # both -1 and 0
    neg = d["pos"].copy()
    neg[9] = -0.25
    nan_x = x.copy()
    nan_x[1] = np.nan
    cases = [
        (fl.binary_cross_entropy, (bad_prob, d["01"]), {}),
        (fl.binary_cross_entropy, (nan_prob, d["01"]), {}),
        (fl.hinge_loss, (x, bad_lab), {}),
        (fl.hinge_loss, (x, mixed), {}),
        (fl.kl_div, (d["logp"], y), {}),  # negative probability targets
        (fl.kl_div, (d["logp"], y), {"negative_target": "nan"}),
        (fl.poisson_nll_loss, (neg, y), {"log_input": False}),
        (fl.poisson_nll_loss, (neg, y), {}),  # log-rates may be negative
        (fl.gaussian_nll_loss, (x, y, neg), {}),
        (fl.hinge_embedding_loss, (x, bad_lab), {}),
        (fl.generalized_kl_div, (x, y), {}),
        (fl.margin_ranking_loss, (x, y, bad_lab), {}),  # (torch's formula for any label)
        (fl.mse_loss, (nan_x, y), {}),
        (fl.binary_cross_entropy_with_logits, (nan_x, d["prob"]), {}),
        # invalid options, valid operands: the general path's errors either way
        (fl.mse_loss, (x, y), {"reduction": "avg"}),
        (fl.kl_div, (x, d["prob"]), {"reduction": "batchmean2"}),
        (fl.mse_loss, (x, y), {"reduction": "batchmean"}),
        (fl.log_cosh_loss, (x, y), {"reduction": None}),
        (fl.huber_loss, (x, y), {"delta": -1.0}),
        (fl.sigmoid_focal_loss, (x, d["01"]), {"alpha": 2.0}),
        (fl.poisson_nll_loss, (x, y), {"eps": -1.0}),
        (fl.poisson_nll_loss, (x, y), {"log_input": 1}),
        (fl.gaussian_nll_loss, (x, y, d["pos"]), {"eps": 0.0}),
        (fl.margin_ranking_loss, (x, y, d["pm1"]), {"margin": np.inf}),
        (fl.generalized_kl_div, (x, d["pos"]), {"axis": 3}),
    ]
    raised = 0
    for f, ops, kw in cases:
        for reduction in ("mean", "none"):
            for grad in (False, True):
                kw2 = dict({"reduction": reduction, "return_grad": grad}, **kw)
                before = [a.copy() for a in ops]
                out = _same_outcome(f, ops, [_g(a) for a in ops], **kw2)
                raised += out[0] == "raised"
                for a, b in zip(ops, before):  # nothing written into the operands
                    np.testing.assert_array_equal(a, b)
    assert raised >= 60  # (the errors above do raise)


def test_elementwise_other_cases_decline(rng):
    """Broadcasting, mixed dtypes, strided or Fortran views, 16-bit, lists, weights, grad_out
    and non-bool return_grad take the general path, with its numbers."""
    x = rng.normal(size=(6, 4))
    y = rng.normal(size=(6, 4))
    f32 = x.astype(np.float32)
    for fast_args in [(x, y[:1]), (f32, y), (x[:, ::2], y[:, ::2]), (np.asfortranarray(x), y),
                      (x.astype(np.float16), y.astype(np.float16)), (x.tolist(), y),
                      (x, y.astype(np.int64)), (np.zeros((0, 3)), np.zeros((0, 3))),
                      (x.byteswap().view(x.dtype.newbyteorder()), y)]:
        assert _core.pointwise_fast(0, *fast_args, 0.0, 0.0, "mean", True) is None
        for grad in (False, True):
            _same_outcome(fl.log_cosh_loss, fast_args, [_g(np.asarray(a)) for a in fast_args],
                          return_grad=grad)
    assert _core.pointwise_fast(0, x, y, 0.0, 0.0, "mean", 1) is None
    assert _core.pointwise_fast(0, x, y, 0.0, 0.0, np.str_("mean"), True) is None
    assert _core.pairwise_fast(6, x, None, y, 0.0, True, False, "mean", True, True) is not None
    g = np.empty_like(x)
    loss, out = fl.mse_loss(x, y, return_grad=True, grad_out=g)
    assert out is g
    _same((loss, out), fl.mse_loss(_g(x), y, return_grad=True))
    w = np.full((6, 4), 1.0)
    _same(fl.mse_loss(x, y, weight=w), fl.mse_loss(_g(x), y, weight=w))
    _same(fl.mse_loss(x, y, return_grad=1), fl.mse_loss(_g(x), y, return_grad=1))
    # generalized_kl_div of 0-d operands: its AxisError, not a fast answer
    with pytest.raises(np.exceptions.AxisError):
        fl.generalized_kl_div(np.float64(0.5) * np.ones(()), np.ones(()))


def test_large_calls_release_the_gil_and_agree(rng):
    n = 1 << 16  # above kSmallWork: the kernel runs without the GIL, still the same numbers
    x = rng.normal(size=n).astype(np.float32)
    y = rng.random(n).astype(np.float32)
    for f in (fl.binary_cross_entropy_with_logits, fl.log_cosh_loss):
        for grad in (False, True):
            _same(f(x, y, return_grad=grad), f(_g(x), y, return_grad=grad))


# ---------------------------------------------------------------------------------------------
# cross_entropy, nll_loss, softmax_focal_loss, multi_margin_loss
# ---------------------------------------------------------------------------------------------
_CLASS_ROWS = {"cross_entropy": 0, "nll_loss": 1, "softmax_focal_loss": 2, "multi_margin_loss": 3}


@pytest.mark.parametrize("fn", list(_CLASS_ROWS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (7, 3), (300, 257)])
def test_class_rows_fast_equals_general(rng, fast_only, fn, dtype, shape):
    f = getattr(fl, fn)
    margin = fn == "multi_margin_loss"  # (no ignore_index, no axis)
    x = rng.normal(0, 3, shape).astype(dtype)
    if fn == "nll_loss":
        x = fl.log_softmax(x, axis=-1)
    t = rng.integers(0, shape[1], shape[0])
    if not margin:
        t[::5] = -100
    views = [x, x[:, ::-1]] if shape[1] > 1 else [x]  # (strided logits are taken as well)
    for v in views:
        for reduction in ("mean", "sum", "none"):
            for grad in (False, True):
                kw = dict(reduction=reduction, return_grad=grad)
                with fast_only():
                    fast = f(v, t, **kw)
                assert _core.class_rows_small(_CLASS_ROWS[fn], v, t, None if margin else -100,
                                              reduction, grad, 2.0) is not None
                _same(fast, f(_g(v), t, **kw))
                if not margin:
                    _same(fast, f(v, t, axis=1, **kw))
                t32 = t.astype(np.int32)  # (JAX's default integer: the fast path too)
                with fast_only():
                    _same(f(v, t32, **kw), fast)
        if margin:
            continue
        t_all = np.full(shape[0], 7)
        for grad in (False, True):  # every row ignored: NaN mean, zero gradient
            _same(f(v, t_all, ignore_index=7, return_grad=grad),
                  f(_g(v), t_all, ignore_index=7, return_grad=grad))


@pytest.mark.parametrize("fn", list(_CLASS_ROWS) + ["cross_entropy_probs"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_rows_fast_with_grad_out(rng, fast_only, fn, dtype):
    # A preallocated gradient keeps the fast path: the general path's bits, returned in
    # grad_out itself, also in place of C-order logits; other buffers take the general path
    probs = fn == "cross_entropy_probs"
    fn = "cross_entropy" if probs else fn
    f, kind = getattr(fl, fn), _CLASS_ROWS[fn]
    margin = fn == "multi_margin_loss"
    x = rng.normal(0, 3, (32, 10)).astype(dtype)
    if probs:
        t = rng.random((32, 10)).astype(dtype)
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = rng.integers(0, 10, 32)
        if not margin:
            t[::5] = -100
    for v in (x, x[:, ::-1]):
        for reduction in ("mean", "sum", "none"):
            want = f(_g(v), t, reduction=reduction, return_grad=True)
            for in_place in (False, True):
                if in_place and v is not x:
                    continue
                vv = v.copy() if in_place else v
                g = vv if in_place else np.full(v.shape, np.nan, dtype)
                with fast_only():
                    got = f(vv, t, reduction=reduction, return_grad=True, grad_out=g)
                assert got[1] is g
                _same(got, want)
    ii = None if margin else -100
    assert _core.class_rows_small(kind, x, t, ii, "mean", True, 2.0, np.empty_like(x)) is not None
    ro = np.empty_like(x)
    ro.flags.writeable = False
    other = np.float32 if dtype == np.float64 else np.float64
    for bad in (np.empty(x.shape, other), np.empty((32, 11), dtype)[:, :10],
                np.empty((10, 32), dtype).T, np.empty((32, 9), dtype), ro,
                _g(np.empty_like(x)), x[:, ::-1], [[0.0] * 10] * 32):
        assert _core.class_rows_small(kind, x, t, ii, "mean", True, 2.0, bad) is None
        assert _core.class_rows_small(kind, x[:, ::-1], t, ii, "mean", True, 2.0, x) is None
    assert _core.class_rows_small(kind, x, t, ii, "mean", False, 2.0, np.empty_like(x)) is None
    if probs:  # (the gradient in place of the targets: the general path)
        assert _core.class_rows_small(kind, x, t, ii, "mean", True, 2.0, t) is None
    with pytest.raises(ValueError, match="return_grad"):
        f(x, t, grad_out=np.empty_like(x))


@pytest.mark.parametrize("fn", list(_CLASS_ROWS))
def test_class_rows_errors_and_declines(rng, fn):
    f = getattr(fl, fn)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    t = np.array([0, 1, 2, 0])
    bad = [
        ((x, np.array([0, 1, 3, 0])), {}),
        ((x, np.array([0, -1, 1, 2])), {}),
        ((x, np.array([0, 1, 2])), {}),
        ((x, t), {"reduction": "avg"}),
        ((x, t), {"ignore_index": 2 ** 70}),
        ((x, t.astype(np.float32)), {}),
        ((x, t), {"ignore_index": True}),
        ((np.zeros((4, 0), np.float32), t), {}),
        ((x, t), {"axis": 0}),
    ]
    if fn == "multi_margin_loss":  # (no ignore_index or axis to get wrong; -100 is a bad index)
        bad = [b for b in bad if not {"ignore_index", "axis"} & set(b[1])]
        bad.append(((x, np.array([0, -100, 1, 2])), {}))
    for args, kw in bad:
        for grad in (False, True):
            _same_outcome(f, args, (_g(args[0]), args[1]), return_grad=grad, **kw)
    # a float32 loss past float32's range: NumPy's overflow warning on both paths
    big = np.array([[-3e38, 3e38], [0.0, 1.0]], np.float32)
    with np.errstate(over="raise"):
        for grad in (False, True):
            out = _same_outcome(f, (big, np.array([0, 1])), (_g(big), np.array([0, 1])),
                                reduction="none", return_grad=grad)
            if fn == "cross_entropy":  # (3e38 + 3e38; nll_loss's -x_t = 3e38 fits)
                assert out[0] == "raised" and out[1][0] is FloatingPointError
    # other target dtypes and 3-d logits: the general path, the same numbers; int32 targets
    # on the fast path, with the general path's errors for bad ones
    for args in [(x, t.astype(np.int32)), (x, t.astype(np.int16)), (x, t.astype(np.uint64)),
                 (x[None], t[None])]:
        for grad in (False, True):
            _same_outcome(f, args, (_g(args[0]), args[1]), return_grad=grad)
    for bad_t in (np.array([0, 1, 3, 0], np.int32), np.array([0, -5, 1, 2], np.int32)):
        assert _core.class_rows_small(_CLASS_ROWS[fn], x, bad_t, None if fn == "multi_margin_loss"
                                      else -100, "mean", False, 2.0) is None
        for grad in (False, True):
            _same_outcome(f, (x, bad_t), (_g(x), bad_t), return_grad=grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (7, 3), (300, 257)])
def test_cross_entropy_probability_targets_fast_equals_general(rng, fast_only, dtype, shape):
    # Probability targets of the logits' dtype and shape take the fast path too (strided
    # logits and targets as well); other target dtypes and bad shapes the general path.
    x = rng.normal(0, 3, shape).astype(dtype)
    y = rng.random(shape).astype(dtype)
    y /= y.sum(axis=1, keepdims=True)
    flip = (lambda a: a[:, ::-1]) if shape[1] > 1 else (lambda a: a)
    for v, p in [(x, y), (flip(x), y), (x, flip(y))]:
        for reduction in ("mean", "sum", "none"):
            for grad in (False, True):
                kw = dict(reduction=reduction, return_grad=grad)
                with fast_only():
                    fast = fl.cross_entropy(v, p, **kw)
                assert _core.class_rows_small(0, v, p, -100, reduction, grad, 0.0) is not None
                _same(fast, fl.cross_entropy(_g(v), p, **kw))
                _same(fast, fl.cross_entropy(v, p, axis=1, ignore_index=3, **kw))
    other = np.float64 if dtype == np.float32 else np.float32
    for args in [(x, y.astype(other)), (x, y[:, :-1]), (x, y[:-1]), (x, y[None])]:
        assert _core.class_rows_small(0, *args, -100, "mean", False, 0.0) is None
        for grad in (False, True):
            _same_outcome(fl.cross_entropy, args, (_g(args[0]), args[1]), return_grad=grad)


def test_cross_entropy_grad_matches_reference(rng):
    from fastloss import reference
    x = rng.normal(0, 3, (32, 10))
    t = rng.integers(0, 10, 32)
    loss, g = fl.cross_entropy(x, t, return_grad=True)
    rl, rg = reference.cross_entropy(x, t, return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=1e-13)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-16)


# ---------------------------------------------------------------------------------------------
# multilabel_margin_loss
# ---------------------------------------------------------------------------------------------
def _multilabel_targets(rng, n, C):
    """Rows of class indices ended by -1 at random places (repeats and junk after the -1)."""
    t = rng.integers(-1, C, (n, C))
    t[rng.random(n) < 0.2, 0] = -1  # no target
    return t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (7, 3), (300, 37)])
def test_multilabel_margin_fast_equals_general(rng, fast_only, dtype, shape):
    x = rng.normal(0, 1, shape).astype(dtype)
    x.flat[::11] = 0.0  # (ties: z = 1 exactly)
    if x.size > 5:
        x.flat[3], x.flat[5] = np.nan, np.inf
    t = _multilabel_targets(rng, *shape)
    views = [x, x[:, ::-1]] if shape[1] > 1 else [x]
    for v in views:
        for reduction in ("mean", "sum", "none"):
            for grad in (False, True):
                kw = {"reduction": reduction, "return_grad": grad}
                with fast_only():
                    fast = fl.multilabel_margin_loss(v, t, **kw)
                assert _core.multilabel_margin_small(v, t, reduction, grad) is not None
                _same(fast, fl.multilabel_margin_loss(_g(v), t, **kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multilabel_margin_fast_with_grad_out(rng, fast_only, dtype):
    # A preallocated gradient keeps the fast path: the general path's bits, returned in
    # grad_out itself (strided scores too); in place of the scores, and any other buffer, the
    # general path; a bad target writes nothing
    x = rng.normal(0, 1, (32, 10)).astype(dtype)
    t = _multilabel_targets(rng, 32, 10)
    for v in (x, x[:, ::-1]):
        for reduction in ("mean", "sum", "none"):
            want = fl.multilabel_margin_loss(_g(v), t, reduction=reduction, return_grad=True)
            g = np.full(v.shape, np.nan, dtype)
            with fast_only():
                got = fl.multilabel_margin_loss(v, t, reduction=reduction, return_grad=True,
                                                grad_out=g)
            assert got[1] is g
            _same(got, want)
    f = _core.multilabel_margin_small
    assert f(x, t, "mean", True, np.empty_like(x)) is not None
    ro = np.empty_like(x)
    ro.flags.writeable = False
    other = np.float32 if dtype == np.float64 else np.float64
    for bad in (np.empty(x.shape, other), np.empty((32, 11), dtype)[:, :10],
                np.empty((10, 32), dtype).T, np.empty((32, 9), dtype), ro,
                _g(np.empty_like(x)), x, x[:, ::-1], t.view(dtype), [[0.0] * 10] * 32):
        assert f(x, t, "mean", True, bad) is None
    assert f(x, t, "mean", False, np.empty_like(x)) is None
    xx = x.copy()
    _same(fl.multilabel_margin_loss(xx, t, return_grad=True, grad_out=xx),
          fl.multilabel_margin_loss(_g(x), t, return_grad=True))
    bad_t = t.copy()
    bad_t[3, 4] = 10
    g = np.full_like(x, 7.0)
    assert f(x, bad_t, "sum", True, g) is None
    assert np.all(g == 7.0)
    _same_outcome(fl.multilabel_margin_loss, (x, bad_t), (_g(x), bad_t), grad_out=g,
                  return_grad=True)
    assert np.all(g == 7.0)


def test_multilabel_margin_fast_matches_reference(rng):
    from fastloss import reference
    x = rng.normal(size=(32, 10))
    t = _multilabel_targets(rng, 32, 10)
    loss, g = fl.multilabel_margin_loss(x, t, return_grad=True)
    rl, rg = reference.multilabel_margin_loss(x, t, return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=1e-13)
    np.testing.assert_allclose(g, rg, rtol=1e-13, atol=1e-16)


def test_multilabel_margin_errors_and_declines(rng):
    f = fl.multilabel_margin_loss
    x = rng.normal(size=(4, 3)).astype(np.float32)
    t = np.array([[0, -1, 2], [1, 2, -1], [-1, 0, 0], [2, 1, 0]])
    bad = [
        ((x, np.array([[0, -1, 2], [1, 3, -1], [-1, 0, 0], [2, 1, 0]])), {}),
        ((x, np.array([[0, -1, 2], [1, 2, -1], [-2, 0, 0], [2, 1, 0]])), {}),
        ((x, t[:3]), {}),
        ((x, t[:, :2]), {}),
        ((x, t), {"reduction": "avg"}),
        ((x, t.astype(np.float32)), {}),
        ((x, t), {"return_grad": 1}),
        ((np.zeros((4, 0), np.float32), t[:, :0]), {}),
        ((np.zeros((0, 3), np.float32), t[:0]), {}),
        ((np.float32(1.0) * np.ones((), np.float32), np.array(0)), {}),
    ]
    for args, kw in bad:
        for grad in (False, True):
            kw2 = dict(kw)
            kw2.setdefault("return_grad", grad)
            _same_outcome(f, args, (_g(args[0]), args[1]), **kw2)
    # what the fast path declines (other target dtypes and layouts, 1-d and 3-d scores, 16-bit
    # scores) gives the general path's numbers
    for args in [(x, t.astype(np.int32)), (x, np.asfortranarray(t)), (x[None], t[None]),
                 (x[0], t[0]), (x.astype(np.float16), t)]:
        assert _core.multilabel_margin_small(*args, "mean", False) is None
        for grad in (False, True):
            _same_outcome(f, args, (_g(args[0]), args[1]), return_grad=grad)
    g = np.empty_like(x)
    _same(f(x, t, return_grad=True, grad_out=g), f(_g(x), t, return_grad=True))


# ---------------------------------------------------------------------------------------------
# logsumexp, softmax, log_softmax
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", ["logsumexp", "softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (10,), (32, 10), (3, 4, 5), (1, 7, 1)])
def test_softmax_family_fast_equals_general(rng, fast_only, fn, dtype, shape):
    f = getattr(fl, fn)
    x = rng.normal(0, 3, shape).astype(dtype)
    x.flat[0] = -np.inf
    axes = [None] + list(range(-len(shape), len(shape)))
    for axis in axes:
        with fast_only():
            fast = f(x, axis=axis)
        _same(fast, f(_g(x), axis=axis))
        _same(f(x, axis=axis), f(x, axis=(axis,) if axis is not None else None))
    with np.errstate(all="ignore"):
        sp = pytest.importorskip("scipy.special")
        np.testing.assert_allclose(f(x.astype(np.float64), axis=-1),
                                   getattr(sp, fn)(x.astype(np.float64), axis=-1), rtol=1e-12)


@pytest.mark.parametrize("fn", ["logsumexp", "softmax", "log_softmax"])
def test_softmax_family_errors_and_declines(rng, fn):
    f = getattr(fl, fn)
    x = rng.normal(size=(4, 5))
    nan = x.copy()
    nan[1, 2] = np.nan
    for args, kw in [((x,), {"axis": 2}), ((x,), {"axis": -3}), ((x,), {"axis": 1.0}),
                     ((x,), {"axis": True}), ((x,), {"axis": np.int64(1)}),
                     ((x,), {"axis": (0, 1)}), ((x,), {"axis": 2 ** 70}),
                     ((nan,), {"axis": 1}), ((x[:, ::2],), {"axis": 1}),
                     ((x.T,), {"axis": 0}), ((np.zeros((0, 3)),), {"axis": 1}),
                     ((np.float64(2.0) * np.ones(()),), {}),
                     ((x.astype(np.float16),), {"axis": 1}),
                     ((x.astype(np.int64),), {"axis": 1})]:
        _same_outcome(f, args, (_g(args[0]),), **kw)
    assert _core.softmax_small(0, x.T, 0) is None and _core.softmax_small(0, x, True) is None


def test_fast_only_catches_the_general_path(rng, fast_only):
    """The fixture the tests above rely on does fail where a general path runs."""
    x = rng.normal(size=(4, 5))
    t = np.array([0, 1, 2, 3])
    for call in (lambda: fl.log_cosh_loss(_g(x), x), lambda: fl.mse_loss(x, x[:1]),
                 lambda: fl.cross_entropy(_g(x), t), lambda: fl.softmax(x, axis=(0, 1)),
                 lambda: fl.gaussian_nll_loss(x, x, 1.0)):
        with fast_only(), pytest.raises(AssertionError, match="the general path ran"):
            call()


# ---------------------------------------------------------------------------------------------
# kl_div_with_logits, jensen_shannon_with_logits (_core.distill_small: kind 0 and 1)
# ---------------------------------------------------------------------------------------------
DISTILL = {"kl_div_with_logits": (0, {}), "jensen_shannon_with_logits": (1, {"beta": 0.3})}


def _distill_fast(name, s, t, axis=-1, temperature=1.0, reduction="batchmean",
                  return_grad=False, grad_out=None, beta=0.3):
    kind = DISTILL[name][0]
    return _core.distill_small(kind, s, t, axis, temperature, beta if kind else None,
                               reduction, return_grad, grad_out)


@pytest.mark.parametrize("name", list(DISTILL))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (7, 3), (300, 37)])
def test_distill_fast_equals_general(rng, fast_only, name, dtype, shape):
    s = rng.normal(0, 2, shape).astype(dtype)
    t = rng.normal(0, 2, shape).astype(dtype)
    if s.size > 5:
        s.flat[3], t.flat[5], t.flat[4] = np.nan, -np.inf, np.inf
    f, extra = getattr(fl, name), DISTILL[name][1]
    views = [(s, t), (s[:, ::-1], t), (s, np.asfortranarray(t))] if shape[1] > 1 else [(s, t)]
    for a, b in views:
        for axis in (-1, 1):
            for tau in (1.0, 2.5):
                for reduction in ("batchmean", "mean", "sum", "none"):
                    for grad in (False, True):
                        kw = dict(extra, axis=axis, temperature=tau, reduction=reduction,
                                  return_grad=grad)
                        with fast_only():
                            fast = f(a, b, **kw)
                        assert _distill_fast(name, a, b, **kw) is not None
                        _same(fast, f(_g(a), b, **kw))


def test_distill_fast_matches_reference(rng):
    from fastloss import reference
    s, t = rng.normal(size=(32, 10)), rng.normal(size=(32, 10))
    loss, g = fl.kl_div_with_logits(s, t, temperature=2.0, return_grad=True)
    rl, rg = reference.kl_div_with_logits(s, t, temperature=2.0, return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=1e-13)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-16)
    loss, g = fl.jensen_shannon_with_logits(s, t, beta=0.3, temperature=2.0, return_grad=True)
    rl, rg = reference.jensen_shannon_with_logits(s, t, beta=0.3, temperature=2.0,
                                                  return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-11, atol=1e-16)


@pytest.mark.parametrize("name", list(DISTILL))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distill_fast_with_grad_out(rng, fast_only, name, dtype):
    # A preallocated gradient keeps the fast path: the general path's bits, returned in
    # grad_out itself; in place of either operand, and any other buffer, the general path
    s = rng.normal(0, 2, (32, 10)).astype(dtype)
    t = rng.normal(0, 2, (32, 10)).astype(dtype)
    f, extra = getattr(fl, name), DISTILL[name][1]
    for reduction in ("batchmean", "mean", "sum", "none"):
        want = f(_g(s), t, reduction=reduction, return_grad=True, **extra)
        g = np.full(s.shape, np.nan, dtype)
        with fast_only():
            got = f(s, t, reduction=reduction, return_grad=True, grad_out=g, **extra)
        assert got[1] is g
        _same(got, want)
    kw = {"reduction": "sum", "return_grad": True}
    assert _distill_fast(name, s, t, grad_out=np.empty_like(s), **kw) is not None
    ro = np.empty_like(s)
    ro.flags.writeable = False
    other = np.float32 if dtype == np.float64 else np.float64
    for bad in (np.empty(s.shape, other), np.empty((32, 11), dtype)[:, :10],
                np.empty((10, 32), dtype).T, np.empty((32, 9), dtype), ro,
                _g(np.empty_like(s)), s, t, [[0.0] * 10] * 32):
        assert _distill_fast(name, s, t, grad_out=bad, **kw) is None
    assert _distill_fast(name, s, t, reduction="sum", grad_out=np.empty_like(s)) is None
    xs, xt = s.copy(), t.copy()  # (in place of either operand: the general path's numbers)
    want = f(_g(s), t, return_grad=True, **extra)
    _same(f(xs, t, return_grad=True, grad_out=xs, **extra), want)
    _same(f(s, xt, return_grad=True, grad_out=xt, **extra), want)


@pytest.mark.parametrize("name", list(DISTILL))
def test_distill_errors_and_declines(rng, name):
    f, extra = getattr(fl, name), DISTILL[name][1]
    s = rng.normal(size=(4, 3)).astype(np.float32)
    t = rng.normal(size=(4, 3)).astype(np.float32)
    # what the fast path declines gives the general path's numbers or errors: another axis,
    # an int, NumPy or bad temperature (or beta), mixed or 16-bit dtypes, 1-d and 3-d logits,
    # shapes that differ, empty axes, an unknown reduction, a non-bool return_grad
    cases = [((s, t), {"axis": 0}), ((s, t), {"temperature": 2}),
             ((s, t), {"temperature": np.float64(2.0)}), ((s, t), {"temperature": 0.0}),
             ((s, t), {"temperature": float("inf")}), ((s, t), {"temperature": True}),
             ((s, t.astype(np.float64)), {}), ((s.astype(np.float16), t), {}),
             ((s[0], t[0]), {}), ((s[None], t[None]), {}), ((s, t[:3]), {}),
             ((s[:, :0], t[:, :0]), {}), ((s[:0], t[:0]), {}), ((s, t), {"reduction": "avg"}),
             ((s, t), {"return_grad": 1}), ((s, t), {"axis": 2}), ((s, t), {"axis": 2**70})]
    if extra:
        cases += [((s, t), {"beta": 1}), ((s, t), {"beta": 1.5}), ((s, t), {"beta": -0.0}),
                  ((s, t), {"beta": float("nan")}), ((s, t), {"beta": np.float64(0.2)})]
    for args, kw in cases:
        kw2 = dict(extra, **kw)
        fast = _distill_fast(name, *args, **kw2)
        assert fast is None or kw2.get("beta") == 0.0  # (-0.0 is in [0, 1]: the fast path)
        for grad in (False, True):
            kw3 = dict(kw2)
            kw3.setdefault("return_grad", grad)
            _same_outcome(f, args, (_g(args[0]), args[1]), **kw3)
