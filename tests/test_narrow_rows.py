"""The rows-in-lanes kernels (src/cpp/softmax_narrow.hpp): cross-entropy with class indices for
up to 256 classes, logsumexp / softmax / log_softmax for up to 100, checked against the float64
reference on every instruction set, with one and two threads, for every class count from 1 to
70 and around each path's boundary, with ignored rows, NaN rows, -inf masks, in-place gradients
and strided class axes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import fastloss as fl
from fastloss import reference

CE_EDGE, SOFTMAX_EDGE = 256, 100  # the largest class counts of the lane kernels
CLASS_COUNTS = list(range(1, 71)) + [99, 100, 101, 127, 128, 129, 255, 256, 257]
TOL = {np.float64: (1e-12, 1e-13), np.float32: (2e-6, 1e-6)}


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, restore_threads):
    fl.set_num_threads(request.param)
    return request.param


def _batch(rng, rows, C, dtype, special=True):
    """Logits and targets of ``rows`` rows: a few ignored rows, a NaN row, a masked (-inf)
    class, a row whose target logit is -inf, and a confident row."""
    x = rng.normal(0.0, 3.0, (rows, C)).astype(dtype)
    t = rng.integers(0, C, rows)
    if special and rows >= 8:
        t[[1, 5]] = -100
        x[2, rng.integers(0, C)] = np.nan
        if C > 1:
            x[3, (t[3] + 1) % C] = -np.inf  # a masked class: probability 0
            x[4, t[4]] = -np.inf  # the target masked: loss +inf
            x[6, t[6]] = 40.0  # confident: loss about exp(-40 + ...) in float64
    return x, t


def _extreme_rows(rng, rows, C, dtype, ignore_index):
    """Rows of ordinary, huge (x 30, x 1e30) logits with rows 0 and 9 ignored, a NaN in row 2,
    an all -inf row 3, +inf in row 4, row 5's target -inf and row 6 zeros but its target 100."""
    x = rng.normal(0.0, 3.0, (rows, C)) * rng.choice([1.0, 30.0, 1e30], (rows, 1))
    x = x.astype(dtype)
    t = rng.integers(0, C, rows)
    t[[0, 9]] = ignore_index
    x[2, 1] = np.nan
    x[3, :] = -np.inf
    x[4, 0] = np.inf
    x[5, t[5]] = -np.inf
    x[6, :] = 0.0
    x[6, t[6]] = 100.0
    return x, t


def _check_ce(x, t, **kw):
    dtype = x.dtype.type
    rtol, atol = TOL[dtype]
    loss, grad = fl.cross_entropy(x, t, reduction="none", return_grad=True, **kw)
    ref_loss, ref_grad = reference.cross_entropy(x, t, reduction="none", return_grad=True, **kw)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=atol)
    # the loss the same bits without the gradient and with lse (the kernels may take the rows'
    # logs after a group of blocks, with or without the gradient, but not with lse)
    np.testing.assert_array_equal(fl.cross_entropy(x, t, reduction="none", **kw), loss)
    with np.errstate(invalid="ignore"):
        r = fl.cross_entropy(x, t, reduction="none", return_lse=True, **kw)
    np.testing.assert_array_equal(r.loss, loss)
    return loss, grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_every_class_count(rng, isa, threads, dtype):
    for C in CLASS_COUNTS:
        x, t = _batch(rng, 37, C, dtype)  # 37 rows: two full blocks of 16 and a partial one
        _check_ce(x, t)


@pytest.mark.parametrize("C", [2, 10, 64, 255, 256])
@pytest.mark.parametrize("kw", [
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.2, "weight": "w"},
    {"weight": "w", "ignore_index": 3},
    {"z_loss": 1e-3},
    {"z_loss": 1e-2, "label_smoothing": 0.05, "weight": "w"},
], ids=["smooth", "smooth-weight", "weight-ignore3", "zloss", "all"])
def test_cross_entropy_options(rng, isa, C, kw):
    kw = dict(kw)
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, C)
    x, t = _batch(rng, 21, C, np.float64, special=False)
    if "ignore_index" in kw and C > 3:
        t[::4] = 3  # class 3 is the ignored one: a valid class index
    _check_ce(x, t, **kw)
    for reduction in ("mean", "sum"):
        got = fl.cross_entropy(x, t, reduction=reduction, **kw)
        want = reference.cross_entropy(x, t, reduction=reduction, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("C", [2, 10, 64, 256])
def test_softmax_focal_loss_lanes(rng, isa, C):
    x, t = _batch(rng, 19, C, np.float64, special=False)
    alpha = rng.uniform(0.2, 1.0, C)
    for gamma in (0.0, 0.5, 2.0):
        loss, grad = fl.softmax_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none",
                                           return_grad=True)
        ref_loss, ref_grad = reference.softmax_focal_loss(x, t, alpha=alpha, gamma=gamma,
                                                          reduction="none", return_grad=True)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)


def test_cross_entropy_hand_values():
    # -log softmax([0, 0])[0] = log 2; -log softmax([1, 2, 3])[2] = log(e^-2 + e^-1 + 1)
    loss = fl.cross_entropy(np.array([[0.0, 0.0], [1.0, 2.0, 3.0][:2]]), [0, 1], reduction="none")
    np.testing.assert_allclose(loss, [np.log(2.0), np.log1p(np.exp(-1.0))], rtol=1e-15)
    loss = fl.cross_entropy(np.array([[1.0, 2.0, 3.0]]), [2], reduction="none")
    np.testing.assert_allclose(loss, [np.log(np.exp(-2.0) + np.exp(-1.0) + 1.0)], rtol=1e-15)
    # A confident row keeps its tiny loss: log1p(e^-40) = 4.248354255291589e-18, not 0.
    loss = fl.cross_entropy(np.array([[0.0, -40.0]]), [0], reduction="none")
    assert loss[0] == 4.248354255291589e-18


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cross_entropy_16bit_lanes(rng, isa, dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes") if dtype == "bfloat16" else None
    dt = np.dtype(ml_dtypes.bfloat16) if ml_dtypes else np.dtype(dtype)
    for C in (3, 17, 100):
        x = rng.normal(0.0, 2.0, (29, C)).astype(dt)
        t = rng.integers(0, C, 29)
        loss, grad = fl.cross_entropy(x, t, reduction="none", return_grad=True)
        ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), t, reduction="none",
                                                     return_grad=True)
        assert loss.dtype == np.float32 and grad.dtype == dt
        np.testing.assert_allclose(loss, ref_loss, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(grad.astype(np.float64), ref_grad, rtol=1e-2, atol=4e-3)


@pytest.mark.parametrize("C", [2, 7, 16, 100, 256, 257])
def test_in_place_gradient(rng, isa, C):
    x, t = _batch(rng, 40, C, np.float32)
    loss, grad = fl.cross_entropy(x, t, return_grad=True)
    x2 = x.copy()
    loss2, grad2 = fl.cross_entropy(x2, t, return_grad=True, grad_out=x2)
    assert grad2 is x2
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)


@pytest.mark.parametrize("C", [2, 5, 10, 16, 19, 64, 150])
def test_strided_class_axis(rng, isa, threads, C):
    """PyTorch's (N, C, H, W) layout with axis=1: neighbouring rows are next to each other."""
    x = rng.normal(0.0, 3.0, (3, C, 5, 7)).astype(np.float32)
    t = rng.integers(0, C, (3, 5, 7))
    t[0, 0, :3] = -100
    loss, grad = fl.cross_entropy(x, t, axis=1, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(x, t, axis=1, reduction="none",
                                                 return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-6, atol=1e-6)
    # the same numbers as the rows made contiguous (the path depends on the class count only)
    xc = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    loss_c, grad_c = fl.cross_entropy(xc, t, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, loss_c)
    np.testing.assert_array_equal(grad, np.moveaxis(grad_c, -1, 1))
    # and a reversed, every-other-class view
    xv = x[:, ::-2]
    tv = np.minimum(t, xv.shape[1] - 1)
    loss_v, grad_v = fl.cross_entropy(xv, tv, axis=1, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(xv, tv, axis=1, reduction="none",
                                                 return_grad=True)
    np.testing.assert_allclose(loss_v, ref_loss, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad_v, ref_grad, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ignore_index", [-100, 0, 2])
def test_small_class_kernel_same_bits_for_every_layout(rng, isa, threads, dtype, ignore_index):
    """3 to 16 classes take ce_index_small (the block in registers), whose rows come in by
    permutes or transposes when they are back to back and through the lane kernels' gather for
    a view with a row stride: the same bits either way, for ordinary, huge, NaN, +-inf and
    ignored rows, full blocks and a partial one, with the gradient written fresh and in
    place. (Its arithmetic is ce_index_narrow's, operation for operation.)"""
    for C in range(3, 18):
        rows = 16 * 3 + 5
        x, t = _extreme_rows(rng, rows, C, dtype, ignore_index)
        x[rows - 1, t[rows - 1]] = 50.0
        wide = np.full((rows, C + 3), 7.0, dtype)
        wide[:, :C] = x
        view = wide[:, :C]  # (the row stride C + 3: through the gather)
        for reduction in ("none", "sum"):
            loss, grad = fl.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                          ignore_index=ignore_index)
            # (a row stride; and rows in lanes, the layout of (N, C, H, W) with axis=1)
            for other in (view, np.asfortranarray(x)):
                loss_v, grad_v = fl.cross_entropy(other, t, reduction=reduction,
                                                  return_grad=True, ignore_index=ignore_index)
                np.testing.assert_array_equal(loss, loss_v)
                np.testing.assert_array_equal(grad, grad_v)
                np.testing.assert_array_equal(np.signbit(grad), np.signbit(grad_v))
        if dtype is np.float32:  # bfloat16 logits take ce_index_narrow, in float32: same bits
            xb = x.astype(ml_dtypes.bfloat16)
            loss_b, grad_b = fl.cross_entropy(xb, t, reduction="none", return_grad=True,
                                              ignore_index=ignore_index)
            loss_f, grad_f = fl.cross_entropy(xb.astype(np.float32), t, reduction="none",
                                              return_grad=True, ignore_index=ignore_index)
            np.testing.assert_array_equal(loss_b, loss_f)
            np.testing.assert_array_equal(grad_b, grad_f.astype(ml_dtypes.bfloat16))
        x2 = x.copy()
        loss2, grad2 = fl.cross_entropy(x2, t, reduction="none", return_grad=True,
                                        ignore_index=ignore_index, grad_out=x2)
        np.testing.assert_array_equal(loss2, fl.cross_entropy(view, t, reduction="none",
                                                              ignore_index=ignore_index))
        np.testing.assert_array_equal(grad2, grad_v)
        ok = t != ignore_index
        with np.errstate(invalid="ignore"):
            ref = reference.cross_entropy(x[ok], t[ok], reduction="none")
        np.testing.assert_allclose(loss2[ok], ref, rtol=TOL[dtype][0], atol=TOL[dtype][1])


@pytest.mark.parametrize("C", [96, 97, 100, 112, 113, 128, 129, 200, 256, 257])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # (z-loss of huge rows)
def test_rows_in_vectors_same_bits_as_the_lane_kernel(rng, isa, threads, C):
    """float32 cross-entropy of 97 to 256 classes sums each row's exps by lane: rows back to
    back (taken in vectors, on AVX-512) give the bits of a row stride, Fortran order and the
    (N, C, H, W) class axis (the lane kernel, rows in lanes), with and without the gradient,
    in place, with class weights, a z-loss and the focal term, and with lse; bfloat16 logits
    (rows in vectors too) give float32's bits; for ordinary, huge, NaN, +-inf, ignored and
    confident rows and a partial block. 96 and 257 classes (other kernels) stay in the list
    as the boundaries."""
    rows = 16 * 3 + 5
    x, t = _extreme_rows(rng, rows, C, np.float32, -100)
    x[7, t[7]] = np.nan
    x[8, :] = -np.inf
    x[8, t[8]] = 40.0
    x[10, :] = np.float32(3e38)
    w = rng.uniform(0.5, 2.0, C)
    wide = np.full((rows, C + 3), 7.0, np.float32)
    wide[:, :C] = x
    nchw = np.ascontiguousarray(x.reshape(1, rows, C).transpose(0, 2, 1))  # (1, C, rows)
    calls = [
        (fl.cross_entropy, {}),
        (fl.cross_entropy, {"weight": w}),
        (fl.cross_entropy, {"z_loss": 1e-3}),
        (fl.softmax_focal_loss, {"gamma": 2.0}),
    ]
    for f, kw in calls:
        name = f"{f.__name__} {sorted(kw)}"
        loss, grad = f(x, t, reduction="none", return_grad=True, **kw)
        for other in (wide[:, :C], np.asfortranarray(x)):
            loss_o, grad_o = f(other, t, reduction="none", return_grad=True, **kw)
            np.testing.assert_array_equal(loss_o, loss, err_msg=name)
            np.testing.assert_array_equal(grad_o, grad, err_msg=name)
            np.testing.assert_array_equal(np.signbit(grad_o), np.signbit(grad), err_msg=name)
        loss_n, grad_n = f(nchw, t[None], axis=1, reduction="none", return_grad=True, **kw)
        np.testing.assert_array_equal(loss_n[0], loss, err_msg=name)
        np.testing.assert_array_equal(grad_n[0].T, grad, err_msg=name)
        np.testing.assert_array_equal(f(x, t, reduction="none", **kw), loss, err_msg=name)
        x2 = x.copy()
        loss2, grad2 = f(x2, t, reduction="none", return_grad=True, grad_out=x2, **kw)
        np.testing.assert_array_equal(loss2, loss, err_msg=name)
        np.testing.assert_array_equal(grad2, grad, err_msg=name)
        for reduction in ("mean", "sum"):
            np.testing.assert_array_equal(f(x, t, reduction=reduction, **kw),
                                          f(np.asfortranarray(x), t, reduction=reduction, **kw),
                                          err_msg=name)
        ok = (t != -100) & np.isfinite(x).all(axis=1) & (np.abs(x) < 1e30).all(axis=1)
        want, want_g = getattr(reference, f.__name__)(x[ok], t[ok], reduction="none",
                                                      return_grad=True, **kw)
        np.testing.assert_allclose(loss[ok], want, rtol=2e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(grad[ok], want_g, rtol=2e-6, atol=1e-6, err_msg=name)
    with np.errstate(invalid="ignore"):
        r = fl.cross_entropy(x, t, reduction="none", return_lse=True)
    np.testing.assert_array_equal(r.loss, fl.cross_entropy(x, t, reduction="none"))
    xb = x.astype(ml_dtypes.bfloat16)
    loss_b, grad_b = fl.cross_entropy(xb, t, reduction="none", return_grad=True)
    loss_f, grad_f = fl.cross_entropy(xb.astype(np.float32), t, reduction="none",
                                      return_grad=True)
    np.testing.assert_array_equal(loss_b, loss_f)
    np.testing.assert_array_equal(grad_b, grad_f.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_small_class_focal_same_bits_as_lane_kernel(rng, isa, threads, dtype):
    """softmax_focal_loss without alpha, 2 to 16 classes: ce_index_small with the focal term.
    Rows back to back, a row stride and Fortran order give the same bits, and so does
    alpha = 1 for every class (ce_index_narrow, whose focal term this is, operation for
    operation), for gamma 2, 1 and 0 (closed forms) and 0.5 (pow), with ignored, NaN, +-inf
    and confident rows."""
    for C in range(2, 18):
        rows = 16 * 2 + 5
        x = rng.normal(0.0, 3.0, (rows, C)) * rng.choice([1.0, 30.0, 1e4], (rows, 1))
        x = x.astype(dtype)
        t = rng.integers(0, C, rows)
        t[[0, 9]] = -100
        x[2, min(1, C - 1)] = np.nan
        x[3, :] = -np.inf
        x[4, 0] = np.inf
        x[5, t[5]] = -np.inf
        x[6, :] = 0.0
        x[6, t[6]] = 100.0
        wide = np.full((rows, C + 3), 7.0, dtype)
        wide[:, :C] = x
        for gamma in (2.0, 1.0, 0.0, 0.5):
            kw = dict(gamma=gamma, reduction="none", return_grad=True)
            loss, grad = fl.softmax_focal_loss(x, t, **kw)
            for other, alpha in ((wide[:, :C], None), (np.asfortranarray(x), None),
                                 (x, np.ones(C))):
                loss_o, grad_o = fl.softmax_focal_loss(other, t, alpha=alpha, **kw)
                np.testing.assert_array_equal(loss, loss_o)
                np.testing.assert_array_equal(grad, grad_o)
                np.testing.assert_array_equal(np.signbit(grad), np.signbit(grad_o))
            ok = np.isfinite(x).all(axis=1) & (t != -100)
            want = reference.softmax_focal_loss(x[ok].astype(np.float64), t[ok], gamma=gamma,
                                                reduction="none")
            rtol, atol = TOL[np.float32 if dtype == np.float16 else dtype]
            np.testing.assert_allclose(loss[ok], want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_class_softmax_family_same_bits_for_every_layout(rng, isa, threads, dtype):
    """logsumexp / softmax / log_softmax of 2 to 16 classes (softmax_small, the block in
    registers): rows back to back and a view with a row stride give the same bits, for
    ordinary, huge, NaN, +-inf and tiny rows, full blocks and a partial one."""
    for C in range(2, 18):
        rows = 16 * 3 + 5
        x = rng.normal(0.0, 3.0, (rows, C)) * rng.choice([1.0, 30.0, 1e30], (rows, 1))
        x = x.astype(dtype)
        x[2, 1] = np.nan
        x[3, :] = -np.inf
        x[4, 0] = np.inf
        x[5, 1] = -np.inf
        x[6, :] = 0.0
        x[6, min(2, C - 1)] = 100.0
        x[7, :] = 1e-30
        wide = np.full((rows, C + 3), 7.0, dtype)
        wide[:, :C] = x
        view = wide[:, :C]
        for name in ("logsumexp", "softmax", "log_softmax"):
            got = getattr(fl, name)(x, axis=1)
            for other in (view, np.asfortranarray(x)):
                want = getattr(fl, name)(other, axis=1)
                np.testing.assert_array_equal(got, want)
                np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
            if dtype is np.float32:  # bfloat16 takes the lane kernels, in float32: same bits
                xb = x.astype(ml_dtypes.bfloat16)
                np.testing.assert_array_equal(
                    getattr(fl, name)(xb, axis=1),
                    getattr(fl, name)(xb.astype(np.float32), axis=1).astype(ml_dtypes.bfloat16))
            with np.errstate(invalid="ignore", over="ignore"):
                ref = getattr(reference, name)(x.astype(np.float64), axis=1)
            ok = np.isfinite(x).all(axis=1)
            np.testing.assert_allclose(got[ok], ref[ok], rtol=TOL[dtype][0], atol=TOL[dtype][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_class_label_smoothing(rng, isa, threads, dtype):
    """Label smoothing of 3 to 16 classes (ce_index_small's third mode, the arithmetic of the
    lane kernel's): against the reference with ignored, NaN, masked and confident rows, the
    same bits for rows back to back, a column-major copy and a view with a row stride, and
    within a few ulp of the lane kernel (class weights of 1)."""
    rtol, atol = TOL[dtype]
    for C in range(3, 18):
        for rows in (8, 29, 300):
            x, t = _batch(rng, rows, C, dtype)
            for eps in (0.1, 0.7):
                loss, grad = _check_ce(x, t, label_smoothing=eps)
                wide = np.full((rows, C + 3), 5.0, dtype)
                wide[:, :C] = x
                for other in (np.asfortranarray(x), wide[:, :C]):
                    lo, gr = fl.cross_entropy(other, t, reduction="none", return_grad=True,
                                              label_smoothing=eps)
                    np.testing.assert_array_equal(lo, loss)
                    np.testing.assert_array_equal(gr, grad)
                lo, gr = fl.cross_entropy(x, t, reduction="none", return_grad=True,
                                          label_smoothing=eps, weight=np.ones(C, dtype))
                np.testing.assert_allclose(lo, loss, rtol=8 * np.finfo(dtype).eps, atol=0)
                np.testing.assert_allclose(gr, grad, rtol=8 * np.finfo(dtype).eps,
                                           atol=4 * np.finfo(dtype).eps)
                assert fl.cross_entropy(x, t, label_smoothing=eps) == pytest.approx(
                    np.mean(loss[t != -100]), rel=rtol, abs=atol, nan_ok=True)
    xb, tb = _batch(rng, 40, 2, np.float32)  # (16-bit inputs take it from two classes)
    xb = xb.astype(ml_dtypes.bfloat16)
    lo, gr = fl.cross_entropy(xb, tb, reduction="none", return_grad=True, label_smoothing=0.1)
    ref_lo, ref_gr = reference.cross_entropy(xb.astype(np.float64), tb, reduction="none",
                                             return_grad=True, label_smoothing=0.1)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(lo, ref_lo, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(gr.astype(np.float64), ref_gr, rtol=1e-2, atol=4e-3)


@pytest.mark.parametrize("C", [3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 20, 33, 100])
def test_small_class_gradient_stays_inside_its_rows(rng, isa, threads, C):
    """The 3-to-16-class kernels write a block's rows by whole-register stores on AVX2, each
    spilling past its row into the next rows (which are written after it), and the lane kernels
    (17 classes on) write the classes past a row's last whole tile as the tile of its last
    W classes, again over values already written: a gradient written into the front of a larger
    buffer leaves the rest alone, an in-place gradient equals the separate one, and every row
    is right, for full blocks and a short last one."""
    for rows in (8, 16, 17, 23, 40, 1001):
        x, t = _batch(rng, rows, C, np.float32)
        y = rng.normal(0.0, 3.0, (rows, C)).astype(np.float32)
        calls = {  # (t=t, y=y: this iteration's arrays)
            "cross_entropy": lambda z, t=t, **kw: fl.cross_entropy(z, t, reduction="sum", **kw),
            "softmax_focal_loss": lambda z, t=t, **kw: fl.softmax_focal_loss(
                z, t, reduction="sum", **kw),
            "kl_div_with_logits": lambda z, y=y, **kw: fl.kl_div_with_logits(
                z, y, reduction="sum", **kw),
        }
        for name, f in calls.items():
            loss, grad = f(x, return_grad=True)
            buf = np.full(rows * C + 40, 7.0, np.float32)
            front = buf[: rows * C].reshape(rows, C)
            loss2, grad2 = f(x, return_grad=True, grad_out=front)
            assert grad2 is front, name
            np.testing.assert_array_equal(buf[rows * C:], 7.0, err_msg=name)
            np.testing.assert_array_equal(grad2, grad, err_msg=name)
            x2 = x.copy()
            loss3, grad3 = f(x2, return_grad=True, grad_out=x2)
            np.testing.assert_array_equal(grad3, grad, err_msg=name)
            np.testing.assert_array_equal([loss2, loss3], [loss, loss], err_msg=name)
            ref = getattr(reference, name)
            args = (t,) if name != "kl_div_with_logits" else (y,)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                _, ref_grad = ref(x.astype(np.float64), *args, reduction="sum", return_grad=True)
            np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-6, err_msg=name)
    for rows in (8, 17, 1001):  # softmax / log_softmax: their own output array
        x = rng.normal(0.0, 3.0, (rows, C)).astype(np.float32)
        for name in ("softmax", "log_softmax"):
            got = getattr(fl, name)(x, axis=1)
            want = getattr(reference, name)(x.astype(np.float64), axis=1)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("C", [17, 24, 33, 100, 256])
def test_lane_kernels_16bit_rows_same_bits_as_float32(rng, isa, threads, dtype, C):
    """16-bit rows of 17 classes on go through the lane kernels' float tiles (converted as they
    are loaded and stored), and their arithmetic is float32's: the results equal those of the
    same values as float32, the gradient and softmax rounded to the 16-bit type (within an
    ulp of it for the row kernels of logsumexp, softmax and log_softmax over 100), with NaN,
    infinite and ignored rows, full blocks and a short last one; a gradient written into the
    front of a larger buffer leaves the rest alone, and one written in place is the same."""
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    for rows in (16, 37, 1001):
        x, t = _batch(rng, rows, C, np.float32)
        x = x.astype(dt)
        xf = x.astype(np.float32)
        y = rng.normal(0.0, 2.0, (rows, C)).astype(dt)
        calls = {
            "cross_entropy": lambda z, t=t, **kw: fl.cross_entropy(z, t, reduction="none", **kw),
            "kl_div_with_logits": lambda z, y=y, **kw: fl.kl_div_with_logits(
                z, y if z.dtype == dt else y.astype(np.float32), reduction="none", **kw),
        }
        for name, f in calls.items():
            loss, grad = f(x, return_grad=True)
            loss_f, grad_f = f(xf, return_grad=True)
            np.testing.assert_array_equal(loss.astype(np.float32), loss_f.astype(np.float32),
                                          err_msg=name)
            np.testing.assert_array_equal(grad, grad_f.astype(dt), err_msg=name)
            buf = np.full(rows * C + 40, 7.0, dt)
            front = buf[: rows * C].reshape(rows, C)
            f(x, return_grad=True, grad_out=front)
            np.testing.assert_array_equal(buf[rows * C:].astype(np.float32), 7.0, err_msg=name)
            np.testing.assert_array_equal(front, grad, err_msg=name)
            x2 = x.copy()
            f(x2, return_grad=True, grad_out=x2)
            np.testing.assert_array_equal(x2, grad, err_msg=name)
        for name in ("logsumexp", "softmax", "log_softmax"):
            got = getattr(fl, name)(x, axis=1)
            want = getattr(fl, name)(xf, axis=1)
            if C <= 100:  # (the lane kernels: float32's arithmetic)
                np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=name)
            else:  # the row kernels sum bfloat16 rows in another order (docs/numerics.md)
                ulp = np.float32(2.0 ** -7 if dt == ml_dtypes.bfloat16 else 2.0 ** -10)
                np.testing.assert_allclose(got.astype(np.float32),
                                           want.astype(got.dtype).astype(np.float32),
                                           rtol=ulp, atol=0, err_msg=name)


@pytest.mark.parametrize("C", [3, 10, 37, 256])
def test_bit_identical_across_threads(rng, isa, restore_threads, C):
    """Enough work for two threads (the pool splits rows into whole blocks of lanes)."""
    x = rng.normal(0.0, 3.0, (300_001 // C + 17, C)).astype(np.float32)
    t = rng.integers(0, C, x.shape[0])
    out = []
    for n in (1, 2):
        fl.set_num_threads(n)
        out.append(fl.cross_entropy(x, t, reduction="none", return_grad=True)
                   + (fl.logsumexp(x, axis=1), fl.softmax(x, axis=1)))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deferred_logs_across_groups(rng, isa, threads, dtype):
    """ce_index_small's and ce_index_narrow's loss and logsumexp_small take the float64 log of
    a group of 8 blocks' row sums after the blocks (up to 128 rows a group): several groups and
    a partial one, with ignored, NaN, +-inf and confident rows in every group, agree with the
    reference (and the loss with the one computed alongside the gradient, and with that of a
    column-major copy)."""
    rtol, atol = TOL[dtype]
    rows = 2 * 128 + 8 * 16 + 37
    for C in (3, 4, 5, 8, 10, 16, 17, 32, 100, 256):
        x, t = _batch(rng, rows, C, dtype, special=False)
        for g in range(0, rows, 41):  # (every group, at varying lanes)
            t[g] = -100
            x[g + 1, rng.integers(0, C)] = np.nan
            x[g + 2, (t[g + 2] + 1) % C] = -np.inf
            x[g + 3, t[g + 3]] = 40.0
            x[g + 4] = -np.inf
            x[g + 5, 0] = np.inf
        with np.errstate(invalid="ignore"):
            loss = fl.cross_entropy(x, t, reduction="none")
            loss_g, _ = fl.cross_entropy(x, t, reduction="none", return_grad=True)
            ref = reference.cross_entropy(x, t, reduction="none")
            np.testing.assert_allclose(loss, ref, rtol=rtol, atol=atol)
            np.testing.assert_array_equal(loss, loss_g)
            np.testing.assert_array_equal(
                loss, fl.cross_entropy(np.asfortranarray(x), t, reduction="none"))
            lse = fl.logsumexp(x, axis=1)
            np.testing.assert_allclose(lse, reference.logsumexp(x, axis=1), rtol=rtol, atol=atol)
        assert np.isnan(loss[1::41]).all() and (loss[0::41] == 0).all()
        assert np.isnan(lse[1::41]).all() and (lse[4::41] == -np.inf).all()
        assert (lse[5::41] == np.inf).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_every_class_count(rng, isa, threads, dtype):
    rtol, atol = TOL[dtype]
    for C in CLASS_COUNTS:
        x = rng.normal(0.0, 3.0, (37, C)).astype(dtype)
        x[2, 0] = np.nan
        if C > 1:
            x[3, 1] = -np.inf
        x[4] = -np.inf  # a row of -inf: logsumexp -inf, softmax NaN, log_softmax x - m
        x[5, 0] = np.inf
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(fl.logsumexp(x, axis=1), reference.logsumexp(x, axis=1),
                                       rtol=rtol, atol=atol)
            for row in (2, 4, 5):  # as scipy: NaN / -inf / +inf
                assert np.isnan(fl.logsumexp(x[row])) == (row == 2)
            assert fl.logsumexp(x[4]) == -np.inf and fl.logsumexp(x[5]) == np.inf
            ok = np.isfinite(x).all(axis=1) | (np.isneginf(x).any(axis=1)
                                               & ~np.isneginf(x).all(axis=1)
                                               & ~np.isnan(x).any(axis=1))
            np.testing.assert_allclose(fl.softmax(x, axis=1)[ok],
                                       reference.softmax(x, axis=1)[ok], rtol=rtol, atol=atol)
            np.testing.assert_allclose(fl.log_softmax(x, axis=1)[ok],
                                       reference.log_softmax(x, axis=1)[ok], rtol=rtol,
                                       atol=atol)
            assert np.isnan(fl.softmax(x, axis=1)[[2, 4, 5]]).all()
            assert np.isnan(fl.log_softmax(x, axis=1)[2]).all()


@pytest.mark.parametrize("C", [2, 3, 50, 100, 101, 1000])
def test_logsumexp_keeps_the_small_terms(C):
    """The maximum's term is kept apart: logsumexp([0, -40, ...]) = log1p((C-1) e^-40), which
    log(1 + ...) rounds to 0 (scipy gh-18295). Lane kernel up to 100 classes, row kernel above."""
    x = np.full(C, -40.0)
    x[C // 2] = 0.0
    want = np.log1p((C - 1) * np.exp(-40.0))
    np.testing.assert_allclose(fl.logsumexp(x), want, rtol=1e-14)
    np.testing.assert_allclose(fl.logsumexp(np.stack([x, x - 1e-17]), axis=1),
                               [want, want - 1e-17], rtol=1e-12)
    assert fl.logsumexp(np.array([-1e-17, -40.0])) == pytest.approx(-5.751645744708412e-18,
                                                                   rel=1e-14)
    # log_softmax of the largest entry: -log1p(...) in the lane kernel
    if C <= SOFTMAX_EDGE:
        np.testing.assert_allclose(fl.log_softmax(x)[C // 2], -want, rtol=1e-14)


@pytest.mark.parametrize("C", [3, 300])
def test_probability_row_of_minus_inf_without_mass(C):
    """0 log 0 = 0 for every class: loss 0 and gradient 0, in the kernel and the reference
    (row kernel: probability targets do not take the lane path)."""
    x = np.zeros((3, C))
    x[1] = -np.inf
    y = np.full((3, C), 1.0 / C)
    y[1] = 0.0
    for impl in (fl.cross_entropy, reference.cross_entropy):
        loss, grad = impl(x, y, reduction="none", return_grad=True)
        np.testing.assert_allclose(loss, [np.log(C), 0.0, np.log(C)], rtol=1e-14)
        assert np.all(grad[1] == 0)
    # with z_loss the row's lse is -inf: NaN (the kernel) / inf (the reference), not 0
    assert not np.isfinite(fl.cross_entropy(x, y, reduction="none", z_loss=0.1)[1])
    # label smoothing puts mass on every class: log 0 = -inf makes the loss non-finite
    assert not np.isfinite(fl.cross_entropy(x, y, reduction="none", label_smoothing=0.1)[1])


KL_EDGE = 100  # the largest class count of the lane kl_div_with_logits


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_div_with_logits_every_class_count(rng, isa, threads, dtype):
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-11, 1e-13)
    for C in list(range(1, 71)) + [KL_EDGE - 1, KL_EDGE, KL_EDGE + 1]:
        s = rng.normal(0.0, 2.0, (37, C)).astype(dtype)
        t = rng.normal(0.0, 2.0, (37, C)).astype(dtype)
        t[3, 0] = -np.inf  # a teacher class of probability 0: its term is 0
        s[4, 0] = -np.inf  # a student -inf where the teacher has mass: loss +inf (C > 1;
        # a row without any finite logit is NaN)
        s[5] = t[5]  # equal rows: exactly 0
        s[6, 1 % C] = np.nan  # NaN: that row NaN
        for tau in (1.0, 2.5):
            loss, grad = fl.kl_div_with_logits(s, t, temperature=tau, reduction="none",
                                               return_grad=True)
            with np.errstate(invalid="ignore"):  # (the reference's -inf and NaN rows)
                ref_loss, ref_grad = reference.kl_div_with_logits(
                    s, t, temperature=tau, reduction="none", return_grad=True)
                np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol)
                ok = np.isfinite(ref_loss)
                np.testing.assert_allclose(grad[ok], ref_grad[ok], rtol=rtol, atol=atol)
            assert loss[5] == 0 and np.isnan(loss[6])
            assert loss[4] == np.inf if C > 1 else np.isnan(loss[4])
            assert np.isnan(grad[6]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_kl_div_with_logits_small_same_bits_for_every_layout(rng, isa, threads, dtype):
    """2 to 16 classes take kl_div_with_logits_small (the block in registers; its arithmetic
    is the lane kernel's, operation for operation): rows back to back, a row stride, Fortran
    order (either operand) and the gradient written in place give the same bits."""
    for C in range(2, 18):
        rows = 16 * 2 + 5
        s = (rng.normal(0.0, 2.0, (rows, C)) * rng.choice([1.0, 30.0], (rows, 1))).astype(dtype)
        t = (rng.normal(0.0, 2.0, (rows, C)) * rng.choice([1.0, 30.0], (rows, 1))).astype(dtype)
        t[3, 0] = -np.inf
        s[4, 0] = -np.inf
        s[5] = t[5]
        s[6, 1] = np.nan
        t[7, :] = -np.inf
        wide = np.full((rows, C + 3), 7.0, dtype)
        wide[:, :C] = s
        for tau in (1.0, 2.5):
            kw = dict(temperature=tau, reduction="none", return_grad=True)
            loss, grad = fl.kl_div_with_logits(s, t, **kw)
            for a, b in ((wide[:, :C], t), (np.asfortranarray(s), t), (s, np.asfortranarray(t))):
                loss_o, grad_o = fl.kl_div_with_logits(a, b, **kw)
                np.testing.assert_array_equal(loss, loss_o)
                np.testing.assert_array_equal(grad, grad_o)
            s2 = s.copy()
            loss2, grad2 = fl.kl_div_with_logits(s2, t, grad_out=s2, **kw)
            np.testing.assert_array_equal(loss2, loss)
            np.testing.assert_array_equal(grad2, grad)
            assert loss[5] == 0 and np.isnan(loss[6]) and np.isnan(grad[6]).all()


@pytest.mark.parametrize("C", [3, 40, 100])
def test_kl_div_with_logits_strided_and_in_place(rng, isa, C):
    s = rng.normal(0.0, 2.0, (4, C, 9)).astype(np.float32)
    t = rng.normal(0.0, 2.0, (4, C, 9)).astype(np.float32)
    loss, grad = fl.kl_div_with_logits(s, t, axis=1, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.kl_div_with_logits(s, t, axis=1, reduction="none",
                                                      return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-6)
    s2 = s.copy()
    _, g2 = fl.kl_div_with_logits(s2, t, axis=1, reduction="none", return_grad=True,
                                  grad_out=s2)
    np.testing.assert_array_equal(g2, grad)


MARGIN_EDGE = 64  # the largest class count of the lane multi_margin_loss


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_loss_every_class_count(rng, isa, threads, p):
    for C in list(range(1, 71)) + [MARGIN_EDGE - 1, MARGIN_EDGE, MARGIN_EDGE + 1]:
        x = rng.normal(0.0, 1.0, (37, C))
        t = rng.integers(0, C, 37)
        x[2, 0] = np.nan  # a NaN z counts 0 (as torch), unless it is the target's logit
        w = rng.uniform(0.5, 2.0, C)
        for kw in ({}, {"weight": w, "margin": 0.7}):
            loss, grad = fl.multi_margin_loss(x, t, p=p, reduction="none", return_grad=True,
                                              **kw)
            ref_loss, ref_grad = reference.multi_margin_loss(x, t, p=p, reduction="none",
                                                             return_grad=True, **kw)
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-13, atol=1e-15)
    # torch's example: (0.3 + 0.4 + 0.6) / 4 = 0.325 (x[3] = 0.8 is the target)
    assert fl.multi_margin_loss(np.array([[0.1, 0.2, 0.4, 0.8]]), [3]) == pytest.approx(0.325)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_multi_margin_loss_small_same_bits_for_every_layout(rng, isa, threads, dtype):
    """2 to 16 classes take multi_margin_small (the block in registers; its arithmetic is the
    lane kernel's, operation for operation): rows back to back, a row stride, Fortran order
    and the gradient written in place give the same bits, for p = 1 and 2, with weights; and a
    row alone (a short block, whose per-lane constants are computed lane by lane) the same bits
    as in a full block (without weights: vectors)."""
    for C in range(2, 18):
        rows = 16 * 2 + 5
        x = (rng.normal(0.0, 1.0, (rows, C)) * rng.choice([1.0, 30.0], (rows, 1))).astype(dtype)
        t = rng.integers(0, C, rows)
        x[2, 0] = np.nan
        x[3, t[3]] = np.inf
        x[4, :] = -np.inf
        wide = np.full((rows, C + 3), 7.0, dtype)
        wide[:, :C] = x
        for p in (1, 2):
            for kw in ({}, {"weight": rng.uniform(0.5, 2.0, C), "margin": 0.7}):
                kw = dict(p=p, reduction="none", return_grad=True, **kw)
                loss, grad = fl.multi_margin_loss(x, t, **kw)
                for other in (wide[:, :C], np.asfortranarray(x)):
                    loss_o, grad_o = fl.multi_margin_loss(other, t, **kw)
                    np.testing.assert_array_equal(loss, loss_o)
                    np.testing.assert_array_equal(grad, grad_o)
                x2 = x.copy()
                loss2, grad2 = fl.multi_margin_loss(x2, t, grad_out=x2, **kw)
                np.testing.assert_array_equal(loss2, loss)
                np.testing.assert_array_equal(grad2, grad)
                for i in (0, 2, 3, 4, 9, 17):
                    loss1, grad1 = fl.multi_margin_loss(x[i:i + 1], t[i:i + 1], **kw)
                    np.testing.assert_array_equal(loss1, loss[i:i + 1])
                    np.testing.assert_array_equal(grad1, grad[i:i + 1])


@pytest.mark.parametrize("C", [4, 33, 64])
def test_multi_margin_loss_strided(rng, isa, C):
    x = rng.normal(0.0, 1.0, (C, 50)).astype(np.float32).T  # classes a stride apart
    t = rng.integers(0, C, 50)
    loss, grad = fl.multi_margin_loss(x, t, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.multi_margin_loss(x, t, reduction="none", return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Two classes: a kernel of its own (softplus of x_other - x_t, softmax_narrow.hpp,
# ce_index_binary), for every layout
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_classes_edge_rows(isa, threads, dtype):
    inf, nan = np.inf, np.nan
    x = np.array([[0.0, 0.0], [inf, 1.0], [1.0, inf], [-inf, 0.0], [-inf, 0.0], [-inf, -inf],
                  [nan, 0.0], [0.0, nan], [30.0, -30.0], [30.0, -30.0], [-3e30, 3e30],
                  [nan, nan], [2.0, -1.0], [inf, inf], [1e-30, 0.0], [0.5, 0.25], [4.0, 4.0]],
                 dtype)
    t = np.array([0, 0, 1, 0, 1, 1, 0, -100, 0, 1, 0, -100, 1, 1, 0, 1, 1])
    _check_ce(x, t)
    loss = fl.cross_entropy(x, t, reduction="none")
    assert loss[3] == np.inf and loss[4] == 0.0  # target masked / the other class masked
    assert loss[7] == 0.0 and loss[11] == 0.0  # ignored rows are 0 even with NaN logits
    assert np.isnan(loss[[1, 2, 5, 6, 13]]).all()  # +inf maximum, a -inf row, NaN
    # 6e38 is past float32's range, but the float64 sum of the rows is not (as for C > 2)
    big = fl.cross_entropy(np.array([[-3e38, 3e38], [0.0, 0.0]], dtype), np.array([0, 1]),
                           reduction="mean")
    assert np.isfinite(big) and big == pytest.approx(3e38, rel=1e-6)
    # lse and token accuracy from the same lanes: NumPy's argmax, the first NaN winning
    r = fl.cross_entropy(x, t, reduction="none", return_lse=True, return_token_accuracy=True)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(r.lse, reference.cross_entropy_lse(x), *TOL[dtype])
    np.testing.assert_array_equal(r.token_accuracy, reference.token_accuracy(x, t, reduction="none"))


@pytest.mark.parametrize("ignore_index", [0, 1, -1, 7])
def test_two_classes_ignore_index_and_weights(rng, isa, ignore_index):
    x, t = _batch(rng, 53, 2, np.float32)
    t[t == -100] = ignore_index
    t[10:14] = ignore_index
    w = np.array([0.3, 2.5], np.float32)
    for kw in ({}, {"weight": w}):
        _check_ce(x, t, ignore_index=ignore_index, **kw)
        loss, grad = fl.cross_entropy(x, t, ignore_index=ignore_index, return_grad=True, **kw)
        want, want_g = reference.cross_entropy(x, t, ignore_index=ignore_index, return_grad=True,
                                               **kw)
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(loss, want, rtol=2e-6)
            np.testing.assert_allclose(grad, want_g, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (2, 2, 40), (1, 2, 17, 1)])
def test_two_classes_strided_layouts(rng, isa, threads, shape):
    """The class axis of (N, 2, ...): blocks of rows inside one image are two vector loads,
    blocks across images one element at a time; the same numbers as the contiguous rows."""
    x = rng.normal(0.0, 3.0, shape).astype(np.float32)
    t = rng.integers(0, 2, shape[:1] + shape[2:])
    t.flat[::9] = -100
    loss, grad = fl.cross_entropy(x, t, axis=1, reduction="none", return_grad=True)
    xc = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    loss_c, grad_c = fl.cross_entropy(xc, t, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, loss_c)
    np.testing.assert_array_equal(grad, np.moveaxis(grad_c, -1, 1))
    ref_loss, ref_grad = reference.cross_entropy(x, t, axis=1, reduction="none", return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-6, atol=1e-6)
    # a Fortran-order gradient buffer and the class axis reversed
    go = np.zeros(shape, np.float32, order="F")
    fl.cross_entropy(x, t, axis=1, reduction="sum", return_grad=True, grad_out=go)
    np.testing.assert_allclose(go, ref_grad, rtol=2e-6, atol=1e-6)
    xr = x[:, ::-1]
    np.testing.assert_array_equal(fl.cross_entropy(xr, 1 - np.where(t < 0, 1, t), axis=1,
                                                   reduction="none"),
                                  fl.cross_entropy(np.ascontiguousarray(xr), 1 - np.where(
                                      t < 0, 1, t), axis=1, reduction="none"))


def test_large_loss_only_call_checks_targets_chunk_by_chunk(rng, restore_threads):
    """A reduced loss without gradient over more rows than one chunk checks each chunk's
    targets as the kernel reads them: the same error, the same mean as the checked path."""
    n = 600_000  # (three chunks of 2**18 rows)
    x = rng.normal(0.0, 2.0, (n, 2)).astype(np.float32)
    t = rng.integers(0, 2, n)
    t[::7] = -100
    fl.set_num_threads(2)
    mean = fl.cross_entropy(x, t)
    per_row = fl.cross_entropy(x, t, reduction="none").astype(np.float64)
    assert mean == np.float32(np.sum(per_row) / np.count_nonzero(t != -100))
    assert fl.cross_entropy(x, t, reduction="sum") == np.float32(np.sum(per_row))
    fl.set_num_threads(1)
    assert fl.cross_entropy(x, t) == mean
    for i in (3, 2**18 + 5, n - 1):
        bad = t.copy()
        bad[i] = 2
        with pytest.raises(IndexError, match=rf"target\[{i}\] = 2 is out of range"):
            fl.cross_entropy(x, bad)
        with pytest.raises(IndexError, match=rf"target\[{i}\] = 2 is out of range"):
            fl.cross_entropy(x, bad, return_grad=True)


@pytest.mark.parametrize("C", [2, 3, 10, 16, 17, 40, 100, 256, 257, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16],
                         ids=["float32", "float64", "float16", "bfloat16"])
def test_chunked_loss_checks_targets_after_the_kernel(rng, isa, monkeypatch, C, dtype):
    """The chunked loss-only path runs each chunk's kernel before checking its targets: every
    kernel (two classes, in registers, in lanes, by rows; plain, focal with alpha, label
    smoothing, reduction "none" with weights; nll_loss; rows back to back and a strided class
    axis) must take any int64 target without
    reading outside its row (the sanitizer build runs this), and the call must raise the
    checked path's IndexError for the first bad entry, not return a loss."""
    from fastloss import classification

    monkeypatch.setattr(classification, "_CHUNK_ROWS", 16)
    monkeypatch.setattr(classification._core, "class_rows_small", lambda *a: None)  # (declined)
    checked = []
    check = classification.check_target_chunk
    monkeypatch.setattr(classification, "check_target_chunk",
                        lambda ct, r0, *a: checked.append(r0) or check(ct, r0, *a))
    rows = 70  # (five chunks of 16 rows)
    x = rng.normal(0.0, 3.0, (rows, C)).astype(dtype)
    t = rng.integers(0, C, rows)
    t[::9] = -100
    xs = np.moveaxis(x.reshape(7, 10, C), -1, 1)  # (7, C, 10): the class axis strided
    alpha = rng.random(C).astype(np.float64) + 0.5
    calls = [
        lambda tt: fl.cross_entropy(x, tt),
        lambda tt: fl.cross_entropy(x, tt, reduction="sum", label_smoothing=0.1),
        lambda tt: fl.softmax_focal_loss(x, tt, alpha=alpha, gamma=2.0),
        lambda tt: fl.cross_entropy(xs, tt.reshape(7, 10), axis=1),
        lambda tt: fl.cross_entropy(x, tt, reduction="none", weight=alpha),
        lambda tt: fl.cross_entropy(xs, tt.reshape(7, 10), axis=1, reduction="none"),
        lambda tt: fl.nll_loss(x, tt),
        lambda tt: fl.nll_loss(x, tt, reduction="none", weight=alpha),
        lambda tt: fl.nll_loss(xs, tt.reshape(7, 10), axis=1, reduction="sum"),
    ]
    strided = (3, 5, 8)
    for call in calls:  # (the valid targets first: the deferred path, chunk by chunk)
        checked.clear()
        assert np.all(np.isfinite(call(t)))
        # (rows back to back: chunks of 16 rows; the strided class axis: 10 rows a chunk)
        assert checked in ([0, 16, 32, 48, 64], [0, 10, 20, 30, 40, 50, 60])
    for i, v in [(0, C), (17, -1), (33, -(2**63)), (48, 2**63 - 1), (69, 2**40)]:
        bad = t.copy()
        bad[i] = v
        bad[i + 1 :: 11] = C + 5  # (later bad entries: the first one is reported)
        for k, call in enumerate(calls):
            name = (rf"target\[{i}\]" if k not in strided
                    else rf"target\[{i // 10}, {i % 10}\]")
            with pytest.raises(IndexError, match=rf"{name} = {v} is out of range"):
                call(bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16],
                         ids=["float32", "float64", "float16", "bfloat16"])
def test_chunked_none_reduction_is_the_one_call_bit_for_bit(rng, isa, monkeypatch, dtype):
    """reduction="none" over many rows (cross_entropy, nll_loss) runs chunk by chunk (each
    chunk's float64 losses
    rounded into the result, or written there directly for float64): the same bits as one
    call over all rows, with and without the gradient, lse and token accuracy, weights, an
    ignored row, a NaN row and a strided class axis."""
    from fastloss import classification

    x = rng.normal(0.0, 3.0, (70, 10)).astype(dtype)
    x[5, 3] = np.nan
    t = rng.integers(0, 10, 70)
    t[::9] = -100
    xs = np.moveaxis(x.reshape(7, 10, 10), -1, 1)  # (7, C, 10): the class axis strided
    w = rng.random(10) + 0.5
    calls = [
        lambda: fl.cross_entropy(x, t, reduction="none", weight=w, label_smoothing=0.1),
        lambda: fl.cross_entropy(x, t, reduction="none", return_grad=True),
        lambda: fl.cross_entropy(x, t, reduction="none", return_lse=True,
                                 return_token_accuracy=True),
        lambda: fl.cross_entropy(xs, t.reshape(7, 10), axis=1, reduction="none", z_loss=1e-3),
        lambda: fl.softmax_focal_loss(x, t, gamma=2.0, reduction="none"),
        lambda: fl.nll_loss(x, t, reduction="none", weight=w),
        lambda: fl.nll_loss(xs, t.reshape(7, 10), axis=1, reduction="none"),
    ]
    want = [call() for call in calls]
    monkeypatch.setattr(classification, "_CHUNK_ROWS", 16)
    monkeypatch.setattr(classification._core, "class_rows_small", lambda *a: None)  # (declined)
    chunks = []
    for fn in ("cross_entropy", "nll_loss"):
        core_fn = getattr(classification._core, fn)
        monkeypatch.setattr(classification._core, fn,
                            lambda *a, f=core_fn: chunks.append(1) or f(*a))
    for call, expect in zip(calls, want):
        chunks.clear()
        got = call()
        assert len(chunks) >= 5  # (chunk by chunk)
        for g, e in zip(got if isinstance(got, tuple) else (got,),
                        expect if isinstance(expect, tuple) else (expect,)):
            assert type(g) is type(e)
            if isinstance(g, np.ndarray):
                assert g.dtype == e.dtype and g.shape == e.shape
            np.testing.assert_array_equal(g, e)
    assert np.isnan(want[1][0][5]) and want[0][0] == 0.0
    # A reduced loss: the sum of the chunks' sums (np.sum's order within each chunk)
    x[5, 3] = 0  # (no NaN row here)
    for red in ("mean", "sum"):
        for call, ref in [(fl.cross_entropy, fl.reference.cross_entropy),
                          (fl.nll_loss, fl.reference.nll_loss)]:
            chunks.clear()
            got = call(x, t, reduction=red, weight=w)
            assert len(chunks) >= 5 and np.isfinite(got)
            np.testing.assert_allclose(got, ref(x.astype(np.float64), t, reduction=red, weight=w),
                                       rtol=1e-6 if dtype == np.float64 else 4e-6)


def test_sum_f64_is_numpy_sum(rng):
    from fastloss import _core

    for n in (0, 1, 9, 129, 32767, 32768, 262144, 262147, 1_000_003):
        a = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
        assert _core.sum_f64(a) == float(np.sum(a))


def test_two_classes_confident_rows_keep_their_accuracy(rng, isa):
    """A confident row's loss is about exp(-|z|), z = x_other - x_t: formed from the exact
    difference (its float32 rounding error is carried), it stays within a few ulp of the
    float64 answer even for |z| near 100, where the rounded difference alone would cost |z| / 2
    ulp. The gradient (sigmoid(z)) likewise."""
    x = (rng.standard_normal((20_000, 2)) * 40.0).astype(np.float32)
    t = rng.integers(0, 2, 20_000)
    loss, grad = fl.cross_entropy(x, t, reduction="none", return_grad=True)
    n = np.arange(len(t))
    z = x[n, 1 - t].astype(np.float64) - x[n, t]  # exact in float64
    want = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    sig = np.where(z >= 0, 1 / (1 + np.exp(-z)), np.exp(z) / (1 + np.exp(z)))
    ok = want > np.finfo(np.float32).tiny
    assert ok.sum() > 15_000
    np.testing.assert_allclose(loss[ok], want[ok], rtol=4 * 2.0**-23, atol=0)
    g_other = grad[n, 1 - t].astype(np.float64)
    okg = sig > np.finfo(np.float32).tiny
    np.testing.assert_allclose(g_other[okg], sig[okg], rtol=4 * 2.0**-23, atol=0)
    np.testing.assert_array_equal(grad[n, t], -grad[n, 1 - t])
