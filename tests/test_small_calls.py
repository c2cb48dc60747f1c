"""The small-call fast paths of cross_entropy, mse_loss and l1_loss (checked and reduced in one
call into the core): the same numbers, bit for bit, and the same errors as the general path."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss as fl
from fastloss import reference
from fastloss._pointwise import pointwise


class _Sub(np.ndarray):
    """An ndarray subclass: the same data, but the fast paths decline it."""


def _general_ce(x, t, **kw):
    # label_smoothing given as the int 0 is the same loss but skips the fast path
    return fl.cross_entropy(x, t, label_smoothing=0, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (32, 10), (129, 7), (300, 257),
                                   (1000, 2), (2, 300), (20000, 3)])
def test_cross_entropy_same_as_general_path(rng, dtype, reduction, shape):
    x = rng.normal(0, 3, shape).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    t[::5] = -100
    fast = fl.cross_entropy(x, t, reduction=reduction)
    general = _general_ce(x, t, reduction=reduction)
    assert type(fast) is type(general) is dtype
    assert fast == general or (np.isnan(fast) and np.isnan(general))
    want = reference.cross_entropy(x, t, reduction=reduction)
    if np.isfinite(want):
        np.testing.assert_allclose(fast, want, rtol=2e-6 if dtype == np.float32 else 1e-13)


def test_cross_entropy_layouts_and_options(rng):
    x = rng.normal(0, 3, (40, 12))
    t = rng.integers(0, 6, 40)
    for view in (x[:, ::2], x[::-1, :6], x.T.copy().T[:, :6], np.broadcast_to(x[:1, :6], (40, 6))):
        np.testing.assert_equal(fl.cross_entropy(view, t), _general_ce(view, t))
    t32 = t.astype(np.int32)  # another target dtype: the general path, same number
    assert fl.cross_entropy(x[:, :6], t32) == fl.cross_entropy(x[:, :6], t)
    assert fl.cross_entropy(x[:, :6], t, ignore_index=3) == _general_ce(x[:, :6], t,
                                                                        ignore_index=3)
    big = x[:, :6].byteswap().view(x.dtype.newbyteorder())  # byte-swapped: general path
    assert fl.cross_entropy(big, t) == fl.cross_entropy(x[:, :6], t)
    # every row ignored: mean NaN (as torch), sum 0
    t_all = np.full(40, -100)
    assert np.isnan(fl.cross_entropy(x, t_all)) and fl.cross_entropy(x, t_all, reduction="sum") == 0


def test_cross_entropy_errors_as_general_path(rng):
    x = rng.normal(size=(4, 3)).astype(np.float32)
    for bad in (np.array([0, 1, 3, 0]), np.array([0, -1, 1, 2])):
        with pytest.raises(IndexError, match=r"target\[\d\] = -?\d is out of range"):
            fl.cross_entropy(x, bad)
    with pytest.raises(ValueError, match="target has shape"):
        fl.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fl.cross_entropy(x, np.array([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(ValueError, match="class axis .* of size 0"):
        fl.cross_entropy(np.zeros((4, 0), np.float32), np.zeros(4, np.int64))


def test_focal_and_margin_options_and_errors(rng):
    """softmax_focal_loss and multi_margin_loss take the class-rows fast path with their default
    options (tests/test_tiny_calls.py: same bits as the general path); gamma as a NumPy float,
    or margin as an int, is the same loss through the general path."""
    x = rng.normal(0, 3, (40, 6))
    t = rng.integers(0, 6, 40)
    t[::7] = -100
    # ignore_index: the focal loss skips the rows; multi_margin_loss has none (general path's error)
    assert fl.softmax_focal_loss(x, t) == fl.softmax_focal_loss(x, t, gamma=np.float64(2.0))
    with pytest.raises(IndexError, match=r"target\[0\] = -100 is out of range"):
        fl.multi_margin_loss(x, t)
    t = np.abs(t) % 6
    for gamma in (0.0, 0.5, 3.0):
        assert fl.softmax_focal_loss(x, t, gamma=gamma) == fl.softmax_focal_loss(
            x, t, gamma=np.float64(gamma))
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            fl.softmax_focal_loss(x, t, gamma=bad)
    for view in (x[:, ::2], x[::-1], x.T.copy().T):
        tv = t[: view.shape[0]] % view.shape[1]
        np.testing.assert_array_equal(fl.multi_margin_loss(view, tv),
                                      fl.multi_margin_loss(view, tv, margin=1))
    xf = x.astype(np.float32)
    for bad in (np.array([0, 1, 6, 0]), np.array([0, -1, 1, 2])):
        with pytest.raises(IndexError, match="out of range"):
            fl.multi_margin_loss(xf[:4], bad)
        with pytest.raises(IndexError, match="out of range"):
            fl.softmax_focal_loss(xf[:4], bad)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fl.multi_margin_loss(xf[:4], t[:4], reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        fl.softmax_focal_loss(xf[:4], t[:4], reduction="avg")
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(fl.softmax_focal_loss(x, t, reduction=reduction),
                                   reference.softmax_focal_loss(x, t, reduction=reduction),
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(fl.multi_margin_loss(x, t, reduction=reduction),
                                   reference.multi_margin_loss(x, t, reduction=reduction),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, kind", [("mse_loss", "mse"), ("l1_loss", "l1")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (128,), (3, 5), (1000, 3)])
def test_pointwise_same_as_general_path(rng, name, kind, dtype, shape):
    a = rng.normal(size=shape).astype(dtype)
    b = rng.normal(size=shape).astype(dtype)
    for reduction in ("mean", "sum"):
        fast = getattr(fl, name)(a, b, reduction=reduction)
        general = pointwise(kind, a.view(_Sub), b, reduction=reduction)  # (a subclass:
        # pointwise's own fast path declines it)
        assert type(fast) is type(general) is dtype and fast == general
        d = a.astype(np.float64) - b
        want = (d * d if kind == "mse" else np.abs(d)).sum()
        if reduction == "mean":
            want /= d.size
        np.testing.assert_allclose(fast, want, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_pointwise_other_cases_take_the_general_path(rng):
    a = rng.normal(size=(6, 4))
    # broadcasting, mixed dtypes, strided views: the general path's numbers
    assert fl.mse_loss(a, a[:1]) == pointwise("mse", a, a[:1])
    assert fl.mse_loss(a.astype(np.float32), a) == pointwise("mse", a.astype(np.float32), a)
    assert fl.l1_loss(a[:, ::2], a[:, 1::2]) == pointwise("l1", a[:, ::2], a[:, 1::2])
    assert np.isnan(fl.mse_loss(np.zeros(0), np.zeros(0)))  # empty mean: NaN, as torch


def test_cross_entropy_normalizer_is_not_dropped(rng):
    x = rng.normal(size=(8, 5)).astype(np.float32)
    t = rng.integers(0, 5, 8)
    total = fl.cross_entropy(x, t, reduction="sum")
    assert fl.cross_entropy(x, t, normalizer=7.0) == np.float32(np.float64(total) / 7.0) or \
        np.isclose(fl.cross_entropy(x, t, normalizer=7.0), total / 7.0, rtol=1e-6)
    assert not np.isclose(fl.cross_entropy(x, t, normalizer=7.0), fl.cross_entropy(x, t))


# --- the per-row losses of a reduced call live in a reused per-thread buffer ------------------


def _row_loss_calls(x, t, y):
    """The arguments of one call of each family whose reduced path sums per-row losses from
    the reused buffer (row_losses)."""
    return {"cross_entropy": (x, t), "nll_loss": (x, t), "multi_margin_loss": (x, t),
            "kl_div_with_logits": (x, y), "sparsemax_loss": (x, t)}


def test_reduced_calls_reuse_rows_without_mixing_results(rng):
    """A reduced call sums its rows from the thread's buffer; a "none" call returns an array of
    its own. Calls of different sizes, in any order, give what they give alone, and a result
    of reduction "none" is not changed by the calls after it."""
    shapes = [(7, 5), (300, 2), (5000, 11), (3, 4)]
    data = []
    for n, c in shapes:
        x = rng.normal(0, 3, (n, c))
        data.append((x, rng.integers(0, c, n), rng.normal(0, 1, (n, c))))
    fresh = {}
    for i, (x, t, y) in enumerate(data):
        for name, args in _row_loss_calls(x, t, y).items():
            f = getattr(fl, name)
            fresh[i, name] = tuple(f(*args, reduction=r) for r in ("none", "sum", "mean"))
    kept = {k: v[0].copy() for k, v in fresh.items()}
    for i in (3, 1, 2, 0, 2):  # other sizes in between
        x, t, y = data[i]
        for name, args in _row_loss_calls(x, t, y).items():
            f = getattr(fl, name)
            _, total, mean = fresh[i, name]
            assert f(*args, reduction="sum") == total and f(*args, reduction="mean") == mean
            want = getattr(reference, name)(*args, reduction="sum")
            np.testing.assert_allclose(total, want, rtol=1e-12)
    for k, v in fresh.items():
        np.testing.assert_array_equal(v[0], kept[k])


def test_reduced_calls_from_threads(rng):
    """Threads calling at once each sum their own rows (the buffer is per thread)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = []
    for n, c in [(20000, 2), (3000, 10), (50000, 3), (777, 64)]:
        x = rng.normal(0, 3, (n, c)).astype(np.float32)
        t = rng.integers(0, c, n)
        cases.append((x, t, fl.cross_entropy(x, t, reduction="sum")))

    def run(k):
        x, t, want = cases[k % len(cases)]
        for _ in range(20):
            assert fl.cross_entropy(x, t, reduction="sum") == want
        return True

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(run, range(16)))
