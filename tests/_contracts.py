"""Checks of the contract every elementwise loss keeps (test_regression.py, test_binary.py).

Each suite keeps its own parametrised tests, data and tolerances; the bodies that are the same
for every elementwise loss (weights, broadcasting, memory layouts, read-only inputs, grad_out,
16-bit dtypes, NaN policy, empty inputs, threads, PyTorch autograd) live here. A ``check``
argument is the suite's own ``check_vs_reference(fn, x, y, *, reduction, f64=None, **tol_and_kw)``,
built on :func:`reference_call`.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import REDUCTIONS, central_diff, layout, read_only

import fastloss as fl
from fastloss import reference as ref

assert_allclose = np.testing.assert_allclose

BAD_REDUCTIONS = ["avg", "Mean", None, "batchmean", 1]
EMPTY_SHAPES = [(0,), (0, 3), (3, 0)]
LOW = [pytest.param(np.float16, 2**-10, id="float16"),
       pytest.param(ml_dtypes.bfloat16, 2**-7, id="bfloat16")]
BROADCASTS = [
    ((4, 5), (5,)),  # target smaller than input
    ((4, 5), (4, 1)),
    ((4, 5), ()),
    ((5,), (4, 5)),  # input smaller than target: the gradient is summed over axis 0
    ((4, 1), (4, 5)),
    ((1, 5), (3, 1)),  # both broadcast
    ((2, 1, 5), (3, 1)),
]


def reference_call(fn, x, y, *, reduction, f64, kw):
    """fastloss ``fn`` (loss-only and fused paths) and the float64 reference on ``f64`` (the
    values fastloss computes on; default: ``x``, ``y`` and ``kw`` themselves). Checks the
    result types, dtypes and shapes and that both paths agree; the suite compares the values
    with its own tolerances. Returns ``(loss, grad, want_loss, want_grad, (rx, ry, rkw))``."""
    f, r = getattr(fl, fn), getattr(ref, fn)
    xa = np.asarray(x)
    loss_only = f(x, y, reduction=reduction, **kw)
    loss, grad = f(x, y, reduction=reduction, return_grad=True, **kw)
    rx, ry, rkw = f64 if f64 is not None else (x, y, kw)
    want_loss, want_grad = r(rx, ry, reduction=reduction, return_grad=True, **rkw)
    dt = np.dtype(np.float32) if xa.dtype.itemsize == 2 else xa.dtype
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == want_loss.shape
    else:
        assert isinstance(loss, np.floating) and not isinstance(loss, np.ndarray)
    assert np.asarray(loss).dtype == dt and np.asarray(loss_only).dtype == dt
    assert grad.shape == xa.shape and grad.dtype == xa.dtype
    assert_allclose(loss_only, loss, rtol=4 * np.finfo(dt).eps, atol=0)
    return loss, grad, want_loss, want_grad, (rx, ry, rkw)


# --------------------------------------------------------------------------- weights, shapes


def check_weight(check, rng, fn, x, y, wshape, reduction, tol, **kw):
    """An elementwise weight of ``wshape`` (its first element 0: no loss, no gradient there)
    against the reference, and independently: the unweighted per-element losses times w; the
    mean divides by the element count (PyTorch's convention), not by sum(w)."""
    w = rng.uniform(0.0, 3.0, size=wshape).astype(x.dtype)
    if w.ndim:
        w.reshape(-1)[0] = 0.0
    loss, grad = check(fn, x, y, weight=w, reduction=reduction, **tol, **kw)
    plain, g = getattr(fl, fn)(x, y, reduction="none", return_grad=True, **kw)
    want = plain.astype(np.float64) * w
    if reduction == "none":
        assert_allclose(loss, want, rtol=tol["rtol"])
        assert_allclose(grad, g * np.broadcast_to(w, x.shape), rtol=tol["grad_rtol"])
    else:
        total = want.sum() / (want.size if reduction == "mean" else 1)
        assert_allclose(loss, total, rtol=tol["rtol"] * 10)


def check_broadcasting(check, fn, x, y, reduction, tol, grad_rtol, **kw):
    """Against the reference, and independently of its summation: the same loss on the
    explicitly broadcast input, whose gradient summed over the broadcast axes (to
    ``grad_rtol``) is the gradient of x."""
    loss, grad = check(fn, x, y, reduction=reduction, **tol, **kw)
    xshape = np.shape(x)
    full = np.broadcast_shapes(xshape, np.shape(y))
    assert grad.shape == xshape
    xb = np.ascontiguousarray(np.broadcast_to(x, full))
    lb, gb = getattr(fl, fn)(xb, y, reduction=reduction, return_grad=True, **kw)
    assert_allclose(loss, lb, rtol=tol["rtol"])
    lead = len(full) - len(xshape)
    axes = tuple(range(lead)) + tuple(lead + i for i, k in enumerate(xshape)
                                      if k == 1 and full[lead + i] != 1)
    want = gb.astype(np.float64).sum(axis=axes).reshape(xshape)
    assert_allclose(grad, want, rtol=grad_rtol, atol=1e-6 * max(1.0, float(np.abs(want).max())))


def check_layout(check, fn, x, y, name, tol, **kw):
    """The arrays (``x``, ``y`` and every array option) in the memory layout ``name`` give the
    results of the C-order ones, bit for bit; then (``tol`` not None) against the reference."""
    f = getattr(fl, fn)
    want = [f(x, y, reduction=r, return_grad=True, **kw) for r in REDUCTIONS]
    xv, yv = layout(x, name), layout(y, name)
    kwv = {k: layout(v, name) for k, v in kw.items()}
    for r, (wl, wg) in zip(REDUCTIONS, want):
        loss, grad = f(xv, yv, reduction=r, return_grad=True, **kwv)
        np.testing.assert_array_equal(loss, wl)
        np.testing.assert_array_equal(grad, wg)
        assert grad.shape == x.shape
    if tol is not None:
        check(fn, xv, yv, reduction="none", **tol, **kwv)


def check_read_only(fn, x, y, **kw):
    """Read-only inputs (and array options) are accepted; the gradient is a fresh writable
    array."""
    ro = {k: read_only(v) for k, v in kw.items()}
    loss, grad = getattr(fl, fn)(read_only(x), read_only(y), reduction="sum", return_grad=True,
                                 **ro)
    want_loss, want_grad = getattr(ref, fn)(x, y, reduction="sum", return_grad=True, **kw)
    assert_allclose(loss, want_loss, rtol=1e-12)
    assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
    assert grad.flags.writeable


# --------------------------------------------------------------------------- grad_out


def check_grad_out_fresh_and_in_place(fn, x, y, reduction, **kw):
    """grad_out, a fresh buffer or the input itself, gets the gradient of a call without it,
    bit for bit (16-bit inputs with a float32 target)."""
    y = y.astype(np.float32) if x.dtype.itemsize == 2 else y
    f = getattr(fl, fn)
    want_loss, want_grad = f(x, y, reduction=reduction, return_grad=True, **kw)
    go = np.full(x.shape, 7.0, dtype=x.dtype)
    loss, grad = f(x, y, reduction=reduction, return_grad=True, grad_out=go, **kw)
    assert grad is go
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(go, want_grad)
    xc = x.copy()
    loss, grad = f(xc, y, reduction=reduction, return_grad=True, grad_out=xc, **kw)
    assert grad is xc
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(xc, want_grad)


def check_grad_out_special_buffers(fn, make):
    """grad_out of the input's shape under broadcasting, in Fortran order, strided, reversed,
    the input itself in Fortran order, the target, and a buffer overlapping the input.
    ``make(xshape, yshape=None)``: float64 first argument and target of ``fn``."""
    f, r = getattr(fl, fn), getattr(ref, fn)
    # input smaller than target: grad_out has the input's shape
    x, y = make((4, 1), (4, 6))
    go = np.empty((4, 1))
    loss, grad = f(x, y, reduction="sum", return_grad=True, grad_out=go)
    want_loss, want_grad = r(x, y, reduction="sum", return_grad=True)
    assert grad is go
    assert_allclose(go, want_grad, rtol=1e-12)
    assert_allclose(loss, want_loss, rtol=1e-12)
    # Fortran-order, strided and reversed grad_out
    x, y = make((4, 6))
    want_loss, want_grad = r(x, y, reduction="mean", return_grad=True)
    for go in (np.zeros((4, 6), order="F"), np.zeros((8, 12))[::2, ::2],
               np.zeros((4, 6))[::-1]):
        loss, grad = f(x, y, return_grad=True, grad_out=go)
        assert grad is go
        assert_allclose(go, want_grad, rtol=1e-12, atol=1e-16)
    # in place on a Fortran-order input
    xf = np.asfortranarray(x)
    loss, grad = f(xf, y, return_grad=True, grad_out=xf)
    assert grad is xf
    assert_allclose(xf, want_grad, rtol=1e-12, atol=1e-16)
    assert_allclose(loss, want_loss, rtol=1e-12)
    # grad_out is the target (float64, same shape): the target is read before being written
    x, y = make((4, 6))
    want_loss, want_grad = r(x, y, reduction="sum", return_grad=True)
    loss, grad = f(x, y, reduction="sum", return_grad=True, grad_out=y)
    assert grad is y
    assert_allclose(loss, want_loss, rtol=1e-12)
    assert_allclose(y, want_grad, rtol=1e-12, atol=1e-16)
    # grad_out partly overlaps the input (shifted by one element)
    buf = make((25,))[0]
    x, go = buf[1:], buf[:-1]
    y = make((24,))[1]
    want_loss, want_grad = r(x.copy(), y, reduction="none", return_grad=True)
    loss, grad = f(x, y, reduction="none", return_grad=True, grad_out=go)
    assert grad is go
    assert_allclose(loss, want_loss, rtol=1e-12)
    assert_allclose(go, want_grad, rtol=1e-12, atol=1e-16)


def check_grad_out_errors(fn, x, y, broadcasting=True):
    """A grad_out of the wrong shape, dtype or kind, read-only, or without return_grad, is
    refused; ``x``, ``y``: float64 of shape (3, 4). ``broadcasting``: also a grad_out of the
    broadcast shape when the input is smaller than the target (pointwise losses)."""
    f = getattr(fl, fn)
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, return_grad=True, grad_out=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, return_grad=True, grad_out=np.zeros(12))
    with pytest.raises(TypeError, match="grad_out"):
        f(x, y, return_grad=True, grad_out=np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="grad_out"):
        f(x.astype(np.float16), y, return_grad=True, grad_out=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, return_grad=True, grad_out=read_only(np.zeros((3, 4))))
    with pytest.raises(TypeError, match="grad_out"):
        f(x, y, return_grad=True, grad_out=np.zeros((3, 4)).tolist())
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, grad_out=np.zeros((3, 4)))  # without return_grad
    if broadcasting:  # input smaller than target: grad_out has the input's shape
        with pytest.raises(ValueError, match="grad_out"):
            f(x[:1], y, return_grad=True, grad_out=np.zeros((3, 4)))


def check_nothing_written_on_error(fn, x, y, bad, in_place=False):
    """A call made bad by the options ``bad`` (``target`` / ``probs`` replace ``y`` / ``x``)
    raises and leaves grad_out (a separate buffer, or ``x`` itself) as it was."""
    kw = dict(bad)
    target = kw.pop("target", y)
    x = kw.pop("probs", x)
    go = x if in_place else np.full(np.shape(x), 7.0)
    before = go.copy()
    with pytest.raises((ValueError, TypeError, IndexError)):
        getattr(fl, fn)(x, target, return_grad=True, grad_out=go, **kw)
    np.testing.assert_array_equal(go, before)


# --------------------------------------------------------------------------- tuple grad_out
# For a function whose gradient is a tuple over several differentiable inputs: ``f`` is the
# function, ``args`` its positional arguments, ``diff`` the positions of the differentiable
# ones (in the gradient tuple's order), ``kw`` its options (besides return_grad / grad_out).


def check_tuple_grad_out(f, args, diff, in_place=True, **kw):
    """Caller's buffers (fresh, as a tuple or a list, with None entries, or the inputs
    themselves, unless ``in_place`` is False) get the gradients of a call without grad_out
    bit for bit, the loss is the same, and the returned tuple holds the caller's arrays where
    given."""
    want_loss, want = f(*args, return_grad=True, **kw)
    assert isinstance(want, tuple) and len(want) == len(diff)

    def run(args, grad_out):
        loss, got = f(*args, return_grad=True, grad_out=grad_out, **kw)
        np.testing.assert_array_equal(loss, want_loss)
        assert isinstance(got, tuple) and len(got) == len(want)
        for i, (g, b, w) in enumerate(zip(got, grad_out, want)):
            assert b is None or g is b, f"grad[{i}] is not grad_out[{i}]"
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
        return got

    bufs = [np.full(w.shape, 7.0, dtype=w.dtype) for w in want]
    run(args, tuple(bufs))
    run(args, [np.full(w.shape, 7.0, dtype=w.dtype) for w in want])  # a list also
    for i in range(len(want)):  # one buffer given, the others None (fresh arrays)
        only = [None] * len(want)
        only[i] = np.full(want[i].shape, -3.0, dtype=want[i].dtype)
        got = run(args, tuple(only))
        for j, g in enumerate(got):
            if j != i:
                assert not np.may_share_memory(g, only[i])
    run(args, (None,) * len(want))
    if not in_place:
        return
    # in place: each differentiable input (a copy) receives its own gradient
    copies = list(args)
    for k in diff:
        copies[k] = np.array(args[k])
    run(copies, tuple(copies[k] for k in diff))
    # crossed: each input receives the next one's gradient (where they all have one layout)
    if len({(w.shape, w.dtype) for w in want}) == 1 and all(
            np.shape(args[k]) == want[0].shape and np.asarray(args[k]).dtype == want[0].dtype
            for k in diff):
        copies = list(args)
        for k in diff:
            copies[k] = np.array(args[k])
        run(copies, tuple(copies[k] for k in diff[1:] + diff[:1]))


def check_tuple_grad_out_errors(f, args, diff, **kw):
    """A grad_out that is not a tuple/list or of the wrong length, an entry of the wrong
    shape, dtype or kind, read-only, two entries sharing memory, or grad_out without
    return_grad: refused with an error naming grad_out (the entry), nothing written."""
    _, want = f(*args, return_grad=True, **kw)
    n = len(want)

    def fresh():
        return [np.full(w.shape, 7.0, dtype=w.dtype) for w in want]

    def refused(exc, match, grad_out, **extra):
        before = [None if b is None else np.array(b) for b in grad_out] \
            if isinstance(grad_out, (tuple, list)) else None
        with pytest.raises(exc, match=match):
            f(*args, **{"return_grad": True, **extra}, grad_out=grad_out, **kw)
        for b, old in zip(grad_out if before is not None else (), before or ()):
            if isinstance(b, np.ndarray):
                np.testing.assert_array_equal(b, old)

    with pytest.raises(TypeError, match="grad_out"):
        f(*args, return_grad=True, grad_out=fresh()[0], **kw)  # an array, not a tuple
    refused(ValueError, "grad_out", tuple(fresh())[:-1])
    refused(ValueError, "grad_out", tuple(fresh()) + (None,))
    refused(ValueError, "return_grad", tuple(fresh()), return_grad=False)
    for i in range(n):
        name = rf"grad_out\[{i}\]"
        shape, dtype = want[i].shape, want[i].dtype
        other = np.float32 if dtype == np.float64 else np.float64
        for exc, bad in ((ValueError, np.zeros(shape + (1,), dtype)),
                         (ValueError, np.zeros((2,) + shape, dtype)),
                         (TypeError, np.zeros(shape, other)),
                         (ValueError, read_only(np.zeros(shape, dtype))),
                         (TypeError, np.zeros(shape, dtype).tolist())):
            go = fresh()
            go[i] = bad
            refused(exc, name, tuple(go))
    # two entries sharing memory (where two gradients have one shape and dtype)
    for i in range(n):
        for j in range(i + 1, n):
            if want[i].shape == want[j].shape and want[i].dtype == want[j].dtype:
                go = fresh()
                go[j] = go[i]
                refused(ValueError, "share memory", tuple(go))
                if want[i].size > 1:
                    base = np.zeros(want[i].size * 2 - 1, dtype=want[i].dtype)
                    go = [None] * n
                    go[i] = base[: want[i].size].reshape(want[i].shape)
                    go[j] = base[want[i].size - 1:].reshape(want[i].shape)  # one element shared
                    refused(ValueError, "share memory", tuple(go))


def check_tuple_grad_out_untouched(f, args, diff, exc, **kw):
    """``f(*args, **kw)`` fails (``exc``) on a check the call makes late: buffers of the
    gradients (separate ones, and the inputs themselves) are left as they were."""
    shapes = [np.shape(args[k]) for k in diff]
    dtypes = [np.asarray(args[k]).dtype for k in diff]
    bufs = tuple(np.full(s, 7.0, dtype=d) for s, d in zip(shapes, dtypes))
    with pytest.raises(exc):
        f(*args, return_grad=True, grad_out=bufs, **kw)
    for b in bufs:
        assert np.all(b == 7.0)
    copies = list(args)
    for k in diff:
        copies[k] = np.array(args[k])
    before = [np.array(copies[k]) for k in diff]
    with pytest.raises(exc):
        f(*copies, return_grad=True, grad_out=tuple(copies[k] for k in diff), **kw)
    for k, old in zip(diff, before):
        np.testing.assert_array_equal(copies[k], old)


# --------------------------------------------------------------------------- dtypes, values


def check_non_numeric_options(x, y, cases):
    """Each ``(fn, option, value)`` of ``cases``: ``fn(x, y, option=value)`` raises a
    TypeError that names the option."""
    for fn, option, value in cases:
        with pytest.raises(TypeError, match=option):
            getattr(fl, fn)(x, y, **{option: value})


def check_16_bit(check, fn, x, y, reduction, tol, **kw):
    """16-bit ``x`` (its target and array options float32 or 16-bit) against the reference on
    the rounded values: a float32 loss, a gradient in the input's dtype."""
    rkw = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    f64 = (x.astype(np.float64), y.astype(np.float64), rkw)
    loss, grad = check(fn, x, y, reduction=reduction, f64=f64, **tol, **kw)
    assert np.asarray(loss).dtype == np.float32  # 16-bit inputs give float32 losses
    assert grad.dtype == x.dtype


def check_finite_differences(fn, x, y, reduction, **kw):
    """The gradient against central differences of the summed loss (float64 ``x``, away
    from every kink)."""
    f = getattr(fl, fn)

    def total(v):
        return np.sum(f(v, y, reduction=reduction, **kw))

    _, grad = f(x, y, reduction=reduction, return_grad=True, **kw)
    assert_allclose(grad, central_diff(total, x), rtol=1e-7, atol=1e-8)


def check_nan_affects_only_its_element(fn, x, y, where="input", **kw):
    """A NaN at [2, 3] of ``x`` (or of ``y``: ``where="target"``) makes that element's loss
    and gradient NaN and no other; the reduced losses are NaN."""
    f = getattr(fl, fn)
    clean_loss, clean_grad = f(x, y, reduction="none", return_grad=True, **kw)
    (x if where == "input" else y)[2, 3] = np.nan
    loss, grad = f(x, y, reduction="none", return_grad=True, **kw)
    mask = np.zeros(np.shape(x), bool)
    mask[2, 3] = True
    assert np.isnan(loss[2, 3]) and np.isnan(np.float64(grad[2, 3]))
    np.testing.assert_array_equal(loss[~mask], clean_loss[~mask])
    np.testing.assert_array_equal(grad[~mask], clean_grad[~mask])
    assert np.isnan(f(x, y, reduction="sum", **kw)) and np.isnan(f(x, y, **kw))


def check_empty(fn, shape, dtype, **kw):
    """Empty inputs: the mean of nothing is NaN (as torch), the sum 0, ``"none"`` an empty
    array; the gradient has the input's shape and dtype."""
    f = getattr(fl, fn)
    x = np.zeros(shape, dtype)
    loss, grad = f(x, x, return_grad=True, **kw)
    assert np.isnan(loss)
    assert grad.shape == shape and grad.dtype == x.dtype
    loss, grad = f(x, x, reduction="sum", return_grad=True, **kw)
    assert loss == 0 and not isinstance(loss, np.ndarray)
    loss, grad = f(x, x, reduction="none", return_grad=True, **kw)
    assert isinstance(loss, np.ndarray) and loss.shape == shape
    assert grad.shape == shape


# --------------------------------------------------------------------------- threads


def check_one_and_two_threads_agree(run_all):
    """``run_all()``: a list of elementwise results, the same bit for bit with 1 and 2
    threads."""
    fl.set_num_threads(1)
    one = run_all()
    fl.set_num_threads(2)
    two = run_all()
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def check_reductions_independent_of_thread_count(calls, dtype):
    """``calls``: ``(label, reduced loss of no arguments)`` pairs; the reduced losses with 1
    and 2 threads."""
    res = {}
    for n in (1, 2):
        fl.set_num_threads(n)
        res[n] = [call() for _, call in calls]
    labels = [label for label, _ in calls]
    # the same numbers summed in another order: the accumulated rounding differs slightly
    assert_allclose(res[1], res[2], rtol=1e-13 if dtype == np.float64 else 1e-7)
    # the reduced loss must not depend on how many threads computed it (as for cross_entropy,
    # test_threads.py): bit for bit
    differ = [(lab, float(a), float(b)) for lab, a, b in zip(labels, res[1], res[2]) if a != b]
    assert not differ, differ


# --------------------------------------------------------------------------- PyTorch


def torch_or_skip():
    return pytest.importorskip("torch")


def torch_run(loss_fn, x, y, reduction):
    """Loss and d loss / d x from a torch function ``loss_fn(X, Y, reduction)`` in float64,
    upstream gradient all ones; operands broadcast explicitly (autograd sums the gradient
    back)."""
    torch = torch_or_skip()
    X = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    Y = torch.tensor(np.asarray(y, dtype=np.float64))
    Xb, Yb = torch.broadcast_tensors(X, Y)
    loss = loss_fn(Xb, Yb, reduction)
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), X.grad.numpy()


def check_empty_matches_torch(fn, x, reduction, torch_result, **kw):
    """fastloss on the empty ``x`` (as input and target) as torch: NaN for the mean, 0 for
    the sum, the same shapes."""
    t_loss, t_grad = torch_result
    loss, grad = getattr(fl, fn)(x, x, reduction=reduction, return_grad=True, **kw)
    np.testing.assert_array_equal(loss, t_loss)
    assert np.shape(loss) == np.shape(t_loss) and grad.shape == t_grad.shape
