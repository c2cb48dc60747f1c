"""Rows whose class axis is strided (the class axis is not the last one, or a transposed view)
go through the kernels' tiled gather and scatter (softmax_ce.cpp, read_row / write_row): tiles
of up to 64 rows that must stop at thread, block (n2) and array boundaries, keep rows that are
filled directly (ignored, NaN) intact, and stay correct in place. Checked against the same
computation on a C-contiguous transposed copy, whose rows are contiguous (no tiles)."""

import fastloss as fl
import numpy as np
import pytest


def same(actual, expected):
    """Equal up to the last bits (the row arithmetic is the same; only the row's address
    differs): an indexing error in the tiles would be off by far more."""
    rtol = 1e-6 if np.asarray(expected).dtype == np.float32 else 1e-14
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-3)


SHAPES = [(1, 7, 1), (3, 5, 2), (2, 37, 70), (1, 130, 129), (5, 3, 200), (1, 1000, 300)]


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads{n}")
def threads(request, restore_threads):
    fl.set_num_threads(request.param)
    return request.param


def _case(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, shape[1], (shape[0], shape[2]))
    t.reshape(-1)[::7] = -100  # ignored rows: filled directly, in the middle of tiles
    if x.size > 40:
        x[0, 1, -1] = np.nan  # a NaN row
    return x, t


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_axis1_matches_contiguous_rows(rng, isa, threads, shape, dtype):
    x, t = _case(rng, shape, dtype)
    moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # (n0, n2, C): contiguous rows
    for reduction in ("none", "sum"):
        loss, grad = fl.cross_entropy(x, t, axis=1, reduction=reduction, return_grad=True)
        ref_loss, ref_grad = fl.cross_entropy(moved, t, reduction=reduction, return_grad=True)
        same(loss, ref_loss)
        same(grad, np.moveaxis(ref_grad, -1, 1))
    # in place: the gradient overwrites the logits through the same tiles
    inplace = x.copy()
    _, g = fl.cross_entropy(inplace, t, axis=1, reduction="sum", return_grad=True,
                            grad_out=inplace)
    assert g is inplace
    same(inplace, np.moveaxis(ref_grad, -1, 1))
    # softmax and logsumexp share the row access
    same(fl.softmax(x, axis=1),
                                  np.moveaxis(fl.softmax(moved, axis=-1), -1, 1))
    same(fl.logsumexp(x, axis=1), fl.logsumexp(moved, axis=-1))


@pytest.mark.parametrize("n", [1, 63, 64, 65, 300, 601])
def test_matrix_columns_and_transposed_views(rng, isa, threads, n):
    """axis=0 of a C-order matrix (rows at stride 1 within one block) and axis=-1 of its
    transpose (n2 = 1, rows at stride s0 = 1): CLIP's column pass."""
    x = rng.standard_normal((n, n)).astype(np.float32) * 4
    t = np.arange(n)
    ref_loss, ref_grad = fl.cross_entropy(np.ascontiguousarray(x.T), t, reduction="none",
                                          return_grad=True)
    loss0, grad0 = fl.cross_entropy(x, t, axis=0, reduction="none", return_grad=True)
    lossT, gradT = fl.cross_entropy(x.T, t, reduction="none", return_grad=True)
    same(loss0, ref_loss)
    same(lossT, ref_loss)
    same(grad0, ref_grad.T)
    same(gradT, ref_grad)
    probs = fl.softmax(x.T, axis=-1)  # probability targets: a second strided input
    lp, gp = fl.cross_entropy(x, probs.T.copy(), axis=0, reduction="none", return_grad=True)
    lr, gr = fl.cross_entropy(np.ascontiguousarray(x.T), np.ascontiguousarray(probs),
                              reduction="none", return_grad=True)
    same(lp, lr)
    same(gp, gr.T)
