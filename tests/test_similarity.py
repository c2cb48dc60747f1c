"""cosine_similarity, cosine_distance and ntxent_loss (issue 16): against the float64
reference, PyTorch, optax (values, and gradients by jax.grad), central differences, numbers
worked out by hand, and optax's own test values."""

from __future__ import annotations

import os

import numpy as np
import pytest
import _contracts as contract
from conftest import central_diff

import fastloss as fl
from fastloss import reference as ref

ml_dtypes = pytest.importorskip("ml_dtypes")


def _jax():
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("jax is not loaded into the sanitizer build's process")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    optax = pytest.importorskip("optax")
    return jax, jax.numpy, optax


# ---------------------------------------------------------------------------------------------
# cosine_similarity / cosine_distance
# ---------------------------------------------------------------------------------------------
def test_cosine_hand_computed():
    x1 = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [0.0, 0.0]])
    x2 = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0], [1.0, 0.0]])
    np.testing.assert_allclose(fl.cosine_similarity(x1, x2), [0.0, 1.0, -1.0, 0.0], atol=1e-15)
    # 1-d inputs: a scalar; (3, 4) . (4, 3) / 25 = 24 / 25
    c = fl.cosine_similarity(np.array([3.0, 4.0]), np.array([4.0, 3.0]))
    assert np.ndim(c) == 0 and abs(float(c) - 0.96) < 1e-15
    np.testing.assert_allclose(fl.cosine_distance(x1, x2, reduction="none"), [1, 0, 2, 1],
                               atol=1e-15)
    assert abs(float(fl.cosine_distance(x1, x2, reduction="sum")) - 4.0) < 1e-14
    # gradient of cos at x1 = (3, 4), x2 = (4, 3): x2 / 25 - 0.96 x1 / 25
    _, (g1, g2) = fl.cosine_similarity(np.array([3.0, 4.0]), np.array([4.0, 3.0]),
                                       return_grad=True)
    np.testing.assert_allclose(g1, (np.array([4.0, 3.0]) - 0.96 * np.array([3.0, 4.0])) / 25)
    np.testing.assert_allclose(g2, (np.array([3.0, 4.0]) - 0.96 * np.array([4.0, 3.0])) / 25)


@pytest.mark.parametrize("shape1,shape2,axis", [
    ((7, 33), (7, 33), -1),      # rows along the last axis
    ((4, 5, 6), (4, 5, 6), 1),   # the vector axis strided: positions in the lanes
    ((3, 200, 70), (3, 200, 70), 1),  # several blocks of positions
    ((6, 300), (300,), -1),      # broadcast x2 over the rows
    ((5, 1, 8), (1, 4, 8), 2),   # broadcast both ways
    ((9, 4), (9, 1), 1),         # broadcast along the vector axis itself
    ((2, 3, 4), (2, 3, 4), 0),
])
def test_cosine_matches_reference(rng, shape1, shape2, axis):
    x1, x2 = rng.standard_normal(shape1), rng.standard_normal(shape2)
    cos, (g1, g2) = fl.cosine_similarity(x1, x2, axis=axis, return_grad=True)
    rc, (r1, r2) = ref.cosine_similarity(x1, x2, axis=axis, return_grad=True)
    np.testing.assert_allclose(cos, rc, rtol=1e-13, atol=1e-14)
    assert g1.shape == x1.shape and g2.shape == x2.shape
    np.testing.assert_allclose(g1, r1, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g2, r2, rtol=1e-12, atol=1e-13)
    for red in ("mean", "sum", "none"):
        loss, (d1, d2) = fl.cosine_distance(x1, x2, axis=axis, reduction=red, return_grad=True)
        rl, (e1, e2) = ref.cosine_distance(x1, x2, axis=axis, reduction=red, return_grad=True)
        np.testing.assert_allclose(loss, rl, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(d1, e1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d2, e2, rtol=1e-12, atol=1e-14)


def test_cosine_strided_layouts(rng):
    base1, base2 = rng.standard_normal((8, 40)), rng.standard_normal((8, 40))
    want = ref.cosine_similarity(base1, base2, axis=0)
    for v1, v2 in [(base1[:, ::2], base2[:, ::2]), (base1.T.copy().T, base2[::-1][::-1]),
                   (np.asfortranarray(base1), base2)]:
        got = fl.cosine_similarity(v1, v2, axis=0)
        np.testing.assert_allclose(got, ref.cosine_similarity(v1, v2, axis=0), rtol=1e-13)
    np.testing.assert_allclose(fl.cosine_similarity(base1, base2, axis=0), want, rtol=1e-13)


def test_cosine_finite_differences(rng):
    x1, x2 = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    for red in ("mean", "sum"):
        _, (g1, g2) = fl.cosine_distance(x1, x2, reduction=red, return_grad=True)
        f1 = lambda a: fl.cosine_distance(a, x2, reduction=red)
        f2 = lambda b: fl.cosine_distance(x1, b, reduction=red)
        np.testing.assert_allclose(g1, central_diff(f1, x1), atol=1e-8)
        np.testing.assert_allclose(g2, central_diff(f2, x2), atol=1e-8)
    # below eps the clamp is constant: the derivative of the computed value
    tiny = np.array([[3e-9, 4e-9]])
    _, (g1, _) = fl.cosine_similarity(tiny, np.array([[1.0, 1.0]]), return_grad=True)
    fd = central_diff(lambda a: fl.cosine_similarity(a, np.array([[1.0, 1.0]])).sum(), tiny,
                      h=1e-10)
    np.testing.assert_allclose(g1, fd, rtol=1e-6)


def test_cosine_against_torch(rng):
    torch = pytest.importorskip("torch")
    x1, x2 = rng.standard_normal((4, 6, 5)), rng.standard_normal((4, 1, 5))
    for dim in (0, 2, -1):
        t1 = torch.tensor(x1, requires_grad=True)
        t2 = torch.tensor(x2, requires_grad=True)
        out = torch.nn.functional.cosine_similarity(t1, t2, dim=dim, eps=1e-8)
        out.sum().backward()
        cos, (g1, g2) = fl.cosine_similarity(x1, x2, axis=dim, return_grad=True)
        np.testing.assert_allclose(cos, out.detach().numpy(), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(g1, t1.grad.numpy(), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(g2, t2.grad.numpy(), rtol=1e-11, atol=1e-13)
    # float32 and eps
    a = rng.standard_normal((16, 64)).astype(np.float32)
    b = rng.standard_normal((16, 64)).astype(np.float32)
    want = torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), eps=1e-3)
    got = fl.cosine_similarity(a, b, eps=1e-3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), rtol=2e-6, atol=1e-6)


def test_cosine_against_optax(rng):
    jax, jnp, optax = _jax()
    # optax's own test values (scipy's distances)
    ys = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], dtype=np.float32)
    ts = np.array([[0.0, 1.2, 0.2], [1.0, -0.3, 0.0]], dtype=np.float32)
    exp = np.array([0.9358251989, 1.0464068465], dtype=np.float32)
    np.testing.assert_allclose(fl.cosine_distance(ys, ts, reduction="none"), exp, atol=1e-6)
    np.testing.assert_allclose(fl.cosine_similarity(ys[0], ts[0]), 1 - exp[0], atol=1e-6)
    # random float64, several axes, gradients by jax.grad; optax's epsilon = eps**2
    x1, x2 = rng.standard_normal((4, 5, 6)), rng.standard_normal((4, 5, 6))
    x1[0, :, 0] = 1e-5  # a vector whose norm is clamped (eps = 1e-3)
    for axis in (0, 1, 2):
        f = lambda a, b: jnp.mean(optax.losses.cosine_distance(
            a, b, epsilon=1e-6, axis=axis))
        want = f(x1, x2)
        w1, w2 = jax.grad(f, argnums=(0, 1))(x1, x2)
        got, (g1, g2) = fl.cosine_distance(x1, x2, axis=axis, eps=1e-3, return_grad=True)
        np.testing.assert_allclose(got, want, rtol=1e-13)
        np.testing.assert_allclose(g1, w1, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(g2, w2, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dt", [np.float16, "bfloat16", np.float32])
def test_cosine_low_precision(rng, dt):
    dt = np.dtype(getattr(ml_dtypes, dt) if isinstance(dt, str) else dt)
    x1 = rng.standard_normal((10, 37)).astype(dt)
    x2 = rng.standard_normal((10, 37)).astype(dt)
    cos, (g1, g2) = fl.cosine_similarity(x1, x2, return_grad=True)
    assert cos.dtype == np.float32 and g1.dtype == dt and g2.dtype == dt
    rc, (r1, r2) = ref.cosine_similarity(x1, x2, return_grad=True)
    np.testing.assert_allclose(cos, rc, rtol=1e-6, atol=1e-7)
    tol = {2: 1e-2, 4: 1e-6}[dt.itemsize]
    np.testing.assert_allclose(g1.astype(np.float64), r1, rtol=tol, atol=tol)
    np.testing.assert_allclose(g2.astype(np.float64), r2, rtol=tol, atol=tol)
    # strided (vector axis not last): the lane path
    cos0 = fl.cosine_similarity(x1, x2, axis=0)
    np.testing.assert_allclose(cos0, ref.cosine_similarity(x1, x2, axis=0), rtol=1e-6,
                               atol=1e-7)


def test_cosine_extreme_values():
    # float64 rows whose squares overflow: summed again scaled
    big = np.array([[1e200, 2e200], [3e-200, 4e-200], [1e300, -1e300]])
    other = np.array([[2e200, 4e200], [3e-200, 4e-200], [1.0, 1.0]])
    cos, (g1, g2) = fl.cosine_similarity(big, other, eps=0.0, return_grad=True)
    np.testing.assert_allclose(cos, [1.0, 1.0, 0.0], atol=1e-15)
    assert np.isfinite(g1).all() and np.isfinite(g2).all()
    np.testing.assert_allclose(g1[0], [0.0, 0.0], atol=1e-215)
    # float32 near its range: float64 sums, no overflow
    a = np.array([[3e38, -3e38, 1e-38]], dtype=np.float32)
    np.testing.assert_allclose(fl.cosine_similarity(a, a), [1.0], rtol=1e-6)
    np.testing.assert_allclose(fl.cosine_similarity(a, -a), [-1.0], rtol=1e-6)
    # zero vectors: 0 and finite gradients
    z = np.zeros((2, 3))
    cos, (g1, g2) = fl.cosine_similarity(z, np.ones((2, 3)), return_grad=True)
    np.testing.assert_array_equal(cos, 0.0)
    np.testing.assert_allclose(g1, 1 / np.sqrt(3) / 1e-8)
    np.testing.assert_array_equal(g2, 0.0)
    # NaN stays in its row
    n = np.ones((2, 4))
    n[1, 2] = np.nan
    c = fl.cosine_similarity(n, np.ones((2, 4)))
    assert c[0] == 1.0 and np.isnan(c[1])


def test_cosine_isas(rng):
    x1, x2 = rng.standard_normal((3, 70, 9)), rng.standard_normal((3, 70, 9))
    active = fl._core.active_isa()
    try:
        for isa in fl._core.compiled_isas():
            if fl._core.set_isa(isa):
                for x, y in ((x1, x2), (x1.astype(np.float32), x2.astype(np.float32))):
                    want = ref.cosine_similarity(x, y, axis=1)
                    np.testing.assert_allclose(fl.cosine_similarity(x, y, axis=1), want,
                                               rtol=1e-6 if x.dtype == np.float32 else 1e-13,
                                               atol=1e-7)
    finally:
        fl._core.set_isa(active)


def test_cosine_bad_input():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="broadcast"):
        fl.cosine_similarity(x, np.ones((4, 3)))
    with pytest.raises(ValueError, match="at least one dimension"):
        fl.cosine_similarity(1.0, 2.0)
    with pytest.raises(np.exceptions.AxisError):
        fl.cosine_similarity(x, x, axis=2)
    with pytest.raises(ValueError, match="eps"):
        fl.cosine_similarity(x, x, eps=-1.0)
    with pytest.raises(ValueError, match="eps"):
        fl.cosine_distance(x, x, eps=np.inf)
    with pytest.raises(ValueError, match="reduction"):
        fl.cosine_distance(x, x, reduction="batchmean")
    with pytest.raises(TypeError):
        fl.cosine_similarity(x.astype(complex), x)
    with pytest.raises(TypeError):
        fl.cosine_similarity(x, x, eps="1")
    assert np.isnan(fl.cosine_distance(np.ones((0, 3)), np.ones((0, 3))))


# ---------------------------------------------------------------------------------------------
# ntxent_loss
# ---------------------------------------------------------------------------------------------
def test_ntxent_optax_test_values():
    # optax's losses/_self_supervised_test.py
    ys = np.array([[-1.9540, 1.0780], [0.2380, -0.5703], [1.8745, -0.0195], [-0.6719, -1.9210]],
                  dtype=np.float32)
    ys_2 = ys.copy()
    ys_2[0] = 0.0
    np.testing.assert_allclose(fl.ntxent_loss(ys, [0, 0, 1, 1]), 14.01032, atol=1e-4)
    np.testing.assert_allclose(fl.ntxent_loss(ys, [0, 0, 0, 1]), 8.968544, atol=1e-4)
    np.testing.assert_allclose(fl.ntxent_loss(ys_2, [0, 0, 1, 1]), 9.2889, atol=1e-4)


def test_ntxent_hand_computed():
    # two orthogonal pairs of identical vectors, T = 1: every positive s = 1, negative s = 0
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    # each pair: -1 + log(e^1 + 2 e^0)
    np.testing.assert_allclose(fl.ntxent_loss(x, [5, 5, 7, 7], temperature=1.0),
                               -1 + np.log(np.e + 2), rtol=1e-15)
    # one label only: no negatives, every l_ij = -s_ij + log(exp(s_ij)) = 0, whatever the
    # temperature (s_ij spans +-1e4 here: a shared reference would underflow)
    y = np.array([[1.0, 0.0], [-1.0, 0.1], [0.3, -2.0], [0.0, 1.0]])
    assert fl.ntxent_loss(y, [1, 1, 1, 1], temperature=1e-4) == 0.0
    # no positive pair: 0 / 0
    assert np.isnan(fl.ntxent_loss(x, [0, 1, 2, 3]))


def test_ntxent_reference_and_optax(rng):
    jax, jnp, optax = _jax()
    x = rng.standard_normal((12, 7))
    labels = rng.integers(0, 4, 12)
    for tau in (0.07, 0.5, 3.0):
        loss, grad = fl.ntxent_loss(x, labels, temperature=tau, return_grad=True)
        np.testing.assert_allclose(loss, ref.ntxent_loss(x, labels, tau), rtol=1e-12)
        want = optax.losses.ntxent(jnp.asarray(x), jnp.asarray(labels), tau)
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        g = jax.grad(lambda e: optax.losses.ntxent(e, jnp.asarray(labels), tau))(jnp.asarray(x))
        np.testing.assert_allclose(grad, g, rtol=1e-9, atol=1e-12)
    # float32 embeddings: optax's float32 epsilon; a zero row (clipped norm)
    x32 = x.astype(np.float32)
    x32[3] = 0.0
    l32, g32 = fl.ntxent_loss(x32, labels, return_grad=True)
    assert l32.dtype == np.float32 and g32.dtype == np.float32
    want = optax.losses.ntxent(jnp.asarray(x32), jnp.asarray(labels))
    np.testing.assert_allclose(l32, want, rtol=1e-5)
    np.testing.assert_allclose(l32, ref.ntxent_loss(x32, labels), rtol=1e-6)
    f = lambda e: fl.ntxent_loss(e, labels, temperature=0.5)
    _, g = fl.ntxent_loss(x, labels, temperature=0.5, return_grad=True)
    np.testing.assert_allclose(g, central_diff(f, x), atol=1e-8)


def test_ntxent_extreme_and_16bit(rng):
    x = rng.standard_normal((8, 4)) * 1e30
    loss, g = fl.ntxent_loss(x, [0, 0, 1, 1, 2, 2, 3, 3], temperature=1e-3, return_grad=True)
    assert np.isfinite(loss) and np.isfinite(g).all()
    xb = rng.standard_normal((6, 4)).astype(ml_dtypes.bfloat16)
    lb, gb = fl.ntxent_loss(xb, [0, 0, 1, 1, 2, 2], return_grad=True)
    assert lb.dtype == np.float32 and gb.dtype == xb.dtype
    np.testing.assert_allclose(lb, ref.ntxent_loss(xb.astype(np.float64), [0, 0, 1, 1, 2, 2],
                                                   eps=2.0**-7), rtol=1e-6)


def test_ntxent_bad_input():
    x = np.ones((4, 2))
    with pytest.raises(ValueError, match="2-d"):
        fl.ntxent_loss(np.ones(4), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        fl.ntxent_loss(x, [0, 0, 1])
    with pytest.raises(TypeError, match="integers"):
        fl.ntxent_loss(x, [0.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="temperature"):
        fl.ntxent_loss(x, [0, 0, 1, 1], temperature=0.0)


# ---------------------------------------------------------------------------------------------
# fastloss.dask
# ---------------------------------------------------------------------------------------------
def test_dask_cosine(rng):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    import fastloss.dask as fld

    x1 = rng.standard_normal((9, 6, 5))
    x2 = rng.standard_normal((6, 5))
    with dask.config.set(scheduler="synchronous"):
        for axis in (-1, 1, 0):
            d1 = da.from_array(x1, chunks=(4, 2, 3))
            got = fld.cosine_similarity(d1, x2, axis=axis).compute()
            np.testing.assert_allclose(got, fl.cosine_similarity(x1, x2, axis=axis), rtol=1e-14)
            for red in ("mean", "sum", "none"):
                lazy = fld.cosine_distance(d1, x2, axis=axis, reduction=red)
                want = fl.cosine_distance(x1, x2, axis=axis, reduction=red)
                np.testing.assert_allclose(lazy.compute(), want, rtol=1e-13)
        f32 = fld.cosine_distance(da.from_array(x1.astype(np.float32), chunks=3), x2)
        assert f32.dtype == np.float64  # (x2 is float64: as eager)
        assert fld.cosine_similarity(da.from_array(x1[0, 0], chunks=2), x2[0]).compute().shape \
            == ()
    with pytest.raises(ValueError, match="broadcast"):
        fld.cosine_similarity(da.ones((3, 4)), np.ones(5))
    with pytest.raises(ValueError, match="reduction"):
        fld.cosine_distance(da.ones((3, 4)), np.ones(4), reduction="x")
    with pytest.raises(ValueError, match="eps"):
        fld.cosine_similarity(da.ones((3, 4)), np.ones(4), eps=-1.0)


def test_ntxent_gradient_matches_reference(rng):
    x = rng.normal(size=(7, 5))
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    for tau in (0.07, 0.5):
        loss, grad = fl.ntxent_loss(x, labels, temperature=tau, return_grad=True)
        want_loss, want_grad = ref.ntxent_loss(x, labels, tau, return_grad=True)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------- grad_out
FLOATS = [np.float32, np.float64]


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("shape1,shape2,axis", [
    ((5, 4), (5, 4), -1),
    ((5, 4), (4,), -1),  # x2 broadcast: its gradient summed over the rows
    ((3, 4, 2), (3, 4, 2), 1),  # the vectors on a middle axis
    ((4,), (4,), 0),  # one pair: a scalar cosine
])
def test_cosine_grad_out(rng, dt, shape1, shape2, axis):
    args = (rng.normal(size=shape1).astype(dt), rng.normal(size=shape2).astype(dt))
    contract.check_tuple_grad_out(fl.cosine_similarity, args, (0, 1), axis=axis)
    for reduction in ("mean", "sum", "none"):
        contract.check_tuple_grad_out(fl.cosine_distance, args, (0, 1), axis=axis,
                                      reduction=reduction)


@pytest.mark.parametrize("dt", FLOATS)
def test_cosine_grad_out_layouts_and_errors(rng, dt):
    x1, x2 = rng.normal(size=(5, 4)).astype(dt), rng.normal(size=(5, 4)).astype(dt)
    want = fl.cosine_similarity(x1, x2, return_grad=True)[1]
    # Fortran-order and strided buffers (through a temporary), and in place on views
    for go in ((np.zeros((5, 4), dt, order="F"), np.zeros((10, 8), dt)[::2, ::2]),):
        _, got = fl.cosine_similarity(x1, x2, return_grad=True, grad_out=go)
        assert got[0] is go[0] and got[1] is go[1]
        np.testing.assert_array_equal(go[0], want[0])
        np.testing.assert_array_equal(go[1], want[1])
    # in place on a Fortran-order input and a transposed view of a buffer
    want_loss, want = fl.cosine_distance(x1, x2, reduction="sum", return_grad=True)
    a, b = np.asfortranarray(x1), np.zeros((4, 5), dt).T
    loss, got = fl.cosine_distance(a, x2, reduction="sum", return_grad=True, grad_out=[a, b])
    assert got[0] is a and got[1] is b
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(a, want[0])
    np.testing.assert_array_equal(b, want[1])
    for f in (fl.cosine_similarity, fl.cosine_distance):
        contract.check_tuple_grad_out_errors(f, (x1, x2), (0, 1))
        contract.check_tuple_grad_out_errors(f, (x1, x2[0]), (0, 1))
        # a bad eps is found after the arrays: nothing is written
        contract.check_tuple_grad_out_untouched(f, (x1, x2), (0, 1), ValueError, eps=-1.0)
        contract.check_tuple_grad_out_untouched(f, (x1, x2[:2]), (0, 1), ValueError)
    contract.check_tuple_grad_out_untouched(fl.cosine_distance, (x1, x2), (0, 1), ValueError,
                                            reduction="avg")


@pytest.mark.parametrize("dt", FLOATS)
def test_ntxent_grad_out(rng, dt):
    x = rng.normal(size=(6, 3)).astype(dt)
    labels = np.array([0, 0, 1, 1, 2, 2])
    want_loss, want = fl.ntxent_loss(x, labels, temperature=0.3, return_grad=True)
    go = np.full(x.shape, 7.0, dtype=dt)
    loss, g = fl.ntxent_loss(x, labels, temperature=0.3, return_grad=True, grad_out=go)
    assert g is go
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(go, want)
    xc = x.copy()
    loss, g = fl.ntxent_loss(xc, labels, temperature=0.3, return_grad=True, grad_out=xc)
    assert g is xc
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(xc, want)
    # no positive pair: a zero gradient, written into the buffer
    go = np.full(x.shape, 7.0, dtype=dt)
    _, g = fl.ntxent_loss(x, np.arange(6), return_grad=True, grad_out=go)
    assert g is go and not go.any()
    xe, ye = rng.normal(size=(3, 4)), np.array([0, 1, 0])
    contract.check_grad_out_errors("ntxent_loss", xe, ye, broadcasting=False)
    for bad in ({"temperature": 0.0}, {"target": np.array([0, 1])},
                {"target": np.array([0.0, 1.0, 0.0])}):
        for in_place in (False, True):
            contract.check_nothing_written_on_error("ntxent_loss", xe.copy(), ye, bad,
                                                    in_place=in_place)
