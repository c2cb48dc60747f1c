"""Issue 16's multi-label losses (fastloss/multilabel.py): multilabel_margin_loss and
multilabel_soft_margin_loss against torch.nn.functional (values and autograd gradients,
float64), fastloss.reference, central differences and hand-computed numbers; 16-bit inputs,
layouts, extreme inputs, bad input. Value tests run on every instruction set (``isa``).
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


def _targets(rng, rows, C):
    """Rows of distinct target classes, ended by -1 (some full, some empty), junk after."""
    t = np.full((rows, C), -1, dtype=np.int64)
    for r in range(rows):
        k = int(rng.integers(0, C + 1))
        t[r, :k] = rng.permutation(C)[:k]
        if k + 1 < C:
            t[r, k + 1:] = rng.integers(-1, C, size=C - k - 1)  # ignored after the -1
    return t


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_against_torch(rng, reduction):
    torch = pytest.importorskip("torch")
    x, t = rng.normal(size=(12, 7)), _targets(rng, 12, 7)
    tx = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.multilabel_margin_loss(tx, torch.tensor(t), reduction=reduction)
    want.sum().backward()
    loss, g = fl.multilabel_margin_loss(x, t, reduction=reduction, return_grad=True)
    assert_allclose(loss, want.detach().numpy(), rtol=1e-13, atol=1e-15)
    assert_allclose(g, tx.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_margin_against_reference(isa, rng, reduction, dtype):
    x, t = rng.normal(size=(2, 5, 9)).astype(dtype), _targets(rng, 10, 9).reshape(2, 5, 9)
    t[0, 0, :3] = [4, 4, -1]  # a class listed twice counts twice (as torch)
    loss, g = fl.multilabel_margin_loss(x, t, reduction=reduction, return_grad=True)
    rloss, rg = ref.multilabel_margin_loss(x, t, reduction=reduction, return_grad=True)
    tol = 1e-13 if dtype == np.float64 else 2e-6
    assert np.asarray(loss).dtype == dtype and g.dtype == dtype and g.shape == x.shape
    assert_allclose(loss, rloss, rtol=tol, atol=tol)
    assert_allclose(g, rg, rtol=tol, atol=tol)


def test_margin_hand_computed_and_torch_example():
    # torch's documented example: 0.25 * ((1-(0.1-0.2)) + (1-(0.1-0.4)) + (1-(0.8-0.2)) +
    # (1-(0.8-0.4))) = 0.85
    x = np.array([[0.1, 0.2, 0.4, 0.8]])
    y = np.array([[3, 0, -1, 1]])
    loss, g = fl.multilabel_margin_loss(x, y, return_grad=True)
    assert_allclose(loss, 0.85, rtol=1e-15)
    assert_allclose(g, [[-0.5, 0.5, 0.5, -0.5]])
    # 1-d input (one sample), "none": a 0-d loss
    l1 = fl.multilabel_margin_loss(x[0], y[0], reduction="none")
    assert l1.shape == () and math.isclose(float(l1), 0.85)
    # z = 0 exactly is inactive (strict, as torch): x_t - x_i = 1
    loss, g = fl.multilabel_margin_loss([[0.0, 1.0, 0.0]], [[1, -1, 0]], return_grad=True)
    assert loss == 0.0 and not g.any()
    # every class a target: nothing to compare with
    assert fl.multilabel_margin_loss([[1.0, 2.0]], [[0, 1]]) == 0.0
    # no targets
    assert fl.multilabel_margin_loss([[1.0, 2.0]], [[-1, 0]]) == 0.0


def test_margin_finite_differences_and_layouts(rng):
    x, t = rng.normal(size=(4, 6)), _targets(rng, 4, 6)
    _, g = fl.multilabel_margin_loss(x, t, reduction="sum", return_grad=True)
    assert_allclose(g, central_diff(lambda v: fl.multilabel_margin_loss(v, t, reduction="sum"),
                                    x), rtol=1e-6, atol=1e-8)
    big = rng.normal(size=(8, 13))
    xs = big[::2, ::-2]  # strided, negative step
    ts = _targets(rng, 4, 7)
    assert_allclose(fl.multilabel_margin_loss(xs, ts, return_grad=True)[1],
                    ref.multilabel_margin_loss(xs, ts, return_grad=True)[1], rtol=1e-14)
    tu = ts.astype(np.int32)  # any integer dtype
    assert_allclose(fl.multilabel_margin_loss(xs, tu), fl.multilabel_margin_loss(xs, ts))


@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["float16", "bfloat16"])
def test_margin_16bit(rng, dt):
    x, t = rng.normal(size=(5, 8)).astype(dt), _targets(rng, 5, 8)
    loss, g = fl.multilabel_margin_loss(x, t, reduction="sum", return_grad=True)
    rloss, rg = ref.multilabel_margin_loss(x.astype(np.float64), t, reduction="sum",
                                           return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == dt
    assert_allclose(loss, rloss, rtol=1e-5)
    assert_allclose(g.astype(np.float64), rg, rtol=1e-2, atol=1e-3)


def test_margin_extremes_and_bad_input():
    x = np.array([[1e30, -1e30, 0.0, 3e38]], dtype=np.float32)
    loss, g = fl.multilabel_margin_loss(x, [[1, -1, 0, 0]], return_grad=True)
    assert np.isfinite(loss) and np.isfinite(g).all()
    with pytest.raises(IndexError, match="out of range"):
        fl.multilabel_margin_loss(np.ones((2, 3)), [[0, 3, -1], [0, -1, 0]])
    with pytest.raises(IndexError, match="out of range"):
        fl.multilabel_margin_loss(np.ones((2, 3)), [[0, -2, -1], [0, -1, 0]])
    with pytest.raises(ValueError, match="shape"):
        fl.multilabel_margin_loss(np.ones((2, 3)), [[0, -1, 0]])
    with pytest.raises(TypeError, match="integer"):
        fl.multilabel_margin_loss(np.ones((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no classes"):
        fl.multilabel_margin_loss(np.ones((2, 0)), np.zeros((2, 0), int))
    with pytest.raises(ValueError, match="axis"):
        fl.multilabel_margin_loss(1.0, 0)
    with pytest.raises(ValueError, match="reduction"):
        fl.multilabel_margin_loss(np.ones((2, 3)), np.zeros((2, 3), int), reduction="avg")
    assert np.isnan(fl.multilabel_margin_loss(np.ones((0, 3)), np.zeros((0, 3), int)))


# --------------------------------------------------------------- multilabel soft margin
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_soft_margin_against_torch(rng, reduction, weighted):
    torch = pytest.importorskip("torch")
    x, y = 3 * rng.normal(size=(6, 5)), (rng.uniform(size=(6, 5)) < 0.4).astype(np.float64)
    y[0] = rng.uniform(size=5)  # soft labels too
    w = rng.uniform(0.2, 2.0, size=5) if weighted else None
    tx = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.multilabel_soft_margin_loss(
        tx, torch.tensor(y), weight=None if w is None else torch.tensor(w), reduction=reduction)
    want.sum().backward()
    loss, g = fl.multilabel_soft_margin_loss(x, y, weight=w, reduction=reduction,
                                             return_grad=True)
    assert_allclose(loss, want.detach().numpy(), rtol=1e-13)
    assert_allclose(g, tx.grad.numpy(), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_soft_margin_against_reference(isa, rng, reduction, dtype):
    x = (3 * rng.normal(size=(3, 4, 21))).astype(dtype)
    y = (rng.uniform(size=(4, 21)) < 0.5).astype(np.float64)  # broadcast over the batch
    w = rng.uniform(size=21)
    loss, g = fl.multilabel_soft_margin_loss(x, y, weight=w, reduction=reduction,
                                             return_grad=True)
    rloss, rg = ref.multilabel_soft_margin_loss(x, y, weight=w, reduction=reduction,
                                                return_grad=True)
    tol = 1e-13 if dtype == np.float64 else 2e-6
    assert np.shape(loss) == np.shape(rloss) and g.dtype == dtype
    assert_allclose(loss, rloss, rtol=tol, atol=tol)
    assert_allclose(g, rg, rtol=tol, atol=tol)


def test_soft_margin_gradient_keeps_its_relative_accuracy(isa):
    # sigmoid(x) - y for y = 1 and large x is -exp(-x) / (1 + exp(-x)), not the rounding error
    # of 1 / (1 + exp(-x)) - 1; likewise sigmoid(x) for y = 0 and very negative x
    x = np.linspace(-30, 30, 601, dtype=np.float32)
    x64 = x.astype(np.float64)
    for y, want in ((1.0, -1 / (1 + np.exp(x64))), (0.0, 1 / (1 + np.exp(-x64)))):
        _, g = fl.multilabel_soft_margin_loss(x[:, None], np.full((x.size, 1), y, np.float32),
                                              reduction="sum", return_grad=True)
        ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(g.ravel() - want) / ulp) < 4


def test_soft_margin_more(rng):
    x, y = rng.normal(size=(3, 4)), (rng.uniform(size=(3, 4)) < 0.5).astype(float)
    _, g = fl.multilabel_soft_margin_loss(x, y, reduction="sum", return_grad=True)
    assert_allclose(g, central_diff(
        lambda v: fl.multilabel_soft_margin_loss(v, y, reduction="sum"), x), rtol=1e-6,
        atol=1e-9)
    # "mean" equals binary_cross_entropy_with_logits's mean over all elements
    assert_allclose(fl.multilabel_soft_margin_loss(x, y),
                    fl.binary_cross_entropy_with_logits(x, y), rtol=1e-14)
    # hand: one sample, C = 2, x = 0: log 2 per class
    assert_allclose(fl.multilabel_soft_margin_loss([0.0, 0.0], [1.0, 0.0]), math.log(2))
    # in place, 16-bit, extremes
    xi = x.copy()
    _, g2 = fl.multilabel_soft_margin_loss(xi, y, return_grad=True, grad_out=xi)
    assert g2 is xi
    assert_allclose(xi, fl.multilabel_soft_margin_loss(x, y, return_grad=True)[1], rtol=1e-15)
    l16, g16 = fl.multilabel_soft_margin_loss(x.astype(BF16), y, return_grad=True)
    assert l16.dtype == np.float32 and g16.dtype == BF16
    assert_allclose(l16, ref.multilabel_soft_margin_loss(x.astype(BF16).astype(float), y),
                    rtol=1e-5)
    big = np.array([[-1e30, 1e30, -100.0, 100.0]], dtype=np.float32)
    lb, gb = fl.multilabel_soft_margin_loss(big, [[1.0, 0.0, 0.0, 1.0]], return_grad=True)
    assert np.isfinite(lb) and np.isfinite(gb).all()
    with pytest.raises(ValueError, match="broadcast"):
        fl.multilabel_soft_margin_loss(x, np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="weight"):
        fl.multilabel_soft_margin_loss(x, y, weight=np.ones(3))
    with pytest.raises(ValueError, match="no classes"):
        fl.multilabel_soft_margin_loss(np.ones((2, 0)), np.ones((2, 0)))


# --------------------------------------------------------------------- grad_out
def _margin_target(rng, shape):
    C = shape[-1]
    t = np.full(shape, -1, dtype=np.int64)
    for row in t.reshape(-1, C):
        k = rng.integers(0, C + 1)
        row[:k] = rng.permutation(C)[:k]
    return t


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multilabel_margin_grad_out(rng, dt, reduction):
    for shape in ((5, 4), (2, 3, 6), (7,)):
        x = rng.normal(size=shape).astype(dt)
        contract.check_grad_out_fresh_and_in_place("multilabel_margin_loss", x,
                                                   _margin_target(rng, shape), reduction)
    # Fortran-order and strided buffers (through a temporary)
    x, t = rng.normal(size=(5, 4)).astype(dt), _margin_target(rng, (5, 4))
    want = fl.multilabel_margin_loss(x, t, reduction=reduction, return_grad=True)[1]
    for go in (np.zeros((5, 4), dt, order="F"), np.zeros((10, 8), dt)[::2, ::-2]):
        _, g = fl.multilabel_margin_loss(x, t, reduction=reduction, return_grad=True,
                                         grad_out=go)
        assert g is go
        np.testing.assert_array_equal(go, want)


def test_multilabel_margin_grad_out_errors(rng):
    x, t = rng.normal(size=(3, 4)), _margin_target(rng, (3, 4))
    contract.check_grad_out_errors("multilabel_margin_loss", x, t, broadcasting=False)
    bad_t = t.copy()
    bad_t[2, 1] = 4  # out of range: IndexError, nothing written
    for bad in ({"target": bad_t}, {"target": t[:2]}, {"target": t.astype(float)},
                {"reduction": "avg"}):
        for in_place in (False, True):
            contract.check_nothing_written_on_error("multilabel_margin_loss", x.copy(), t, bad,
                                                    in_place=in_place)
