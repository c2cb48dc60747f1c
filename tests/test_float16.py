"""float16 storage is exact under every instruction set: each of the 65536 halves is widened
to float32 exactly, and a float32 is rounded to the nearest half (ties to even, overflow to
inf, NaN kept) as NumPy rounds it. (float16 is a bit pattern with explicit conversions since
Clang 14 has no _Float16 on x86: F16C instructions, or the branch-free bit code.)"""

import numpy as np

import fastloss as fl


def _all_halves():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    return h


def test_every_half_widens_exactly(isa):
    # mse_loss against 0: the loss is x*x, exact in float32 for every half (11-bit mantissas)
    h = _all_halves()
    x = np.where(np.isnan(h), np.float16(0), h)  # (NaN compared separately below)
    loss = fl.mse_loss(x, np.zeros(h.shape, np.float32), reduction="none")
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(loss, x32 * x32)
    # the widened values themselves, through the gradient 2 (x - y) with y = x / 2: 2 * x / 2
    # = x in float32, rounded back to the same half (but inf - inf and -0 - -0 = +0); the
    # tail (65536 % width) goes too
    keep = np.isfinite(x) & ~((x == 0) & np.signbit(x))
    x, x32 = x[keep], x32[keep]
    for n in (x.size, x.size - 3):
        _, g = fl.mse_loss(x[:n], x32[:n] / 2, reduction="sum", return_grad=True)
        np.testing.assert_array_equal(g.view(np.uint16), x[:n].view(np.uint16))
    loss_nan = fl.mse_loss(h[np.isnan(h)], np.zeros(int(np.isnan(h).sum()), np.float32),
                           reduction="none")
    assert np.isnan(loss_nan).all()


def _float32_cases():
    rng = np.random.default_rng(16)
    h = _all_halves()
    finite = h[np.isfinite(h)].astype(np.float32)
    finite = np.unique(finite)
    mids = (finite[:-1].astype(np.float64) + finite[1:]) / 2  # ties: exact in float32
    bits = rng.integers(0, 1 << 32, size=200_000, dtype=np.uint64).astype(np.uint32)
    randoms = bits.view(np.float32)
    randoms = randoms[np.abs(randoms) < 1e6]  # (larger ones all round to inf, tested below)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 1e6, -1e30,
                        2.0**-24, 2.0**-25, 2.0**-25 * 1.0001, 2.0**-26, 1e-30], np.float32)
    return np.concatenate([finite, mids.astype(np.float32), randoms, special])


def test_float32_rounds_to_nearest_even_half(isa):
    # gradient of mse_loss with x = 0 and y = -v / 2 (exact for these v): 2 (x - y) = v in
    # float32, stored as a half
    v = _float32_cases()
    v = v[np.abs(v) > 2.0**-120]  # (v / 2 must not lose bits to float32 subnormals)
    v = np.concatenate([v, np.float32([0.0])])
    x = np.zeros(v.shape, np.float16)
    y = -v / np.float32(2)
    assert np.array_equal(y * np.float32(-2), v)
    _, g = fl.mse_loss(x, y, reduction="sum", return_grad=True)
    with np.errstate(over="ignore"):  # (|v| >= 65520: inf, as wanted)
        want = v.astype(np.float16)
    np.testing.assert_array_equal(g.view(np.uint16), want.view(np.uint16))
    _, g_nan = fl.mse_loss(np.zeros(3, np.float16), np.full(3, np.nan, np.float32),
                           reduction="sum", return_grad=True)
    assert np.isnan(g_nan).all()
