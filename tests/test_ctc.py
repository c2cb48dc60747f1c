"""fastloss.ctc_loss against a brute-force sum over every alignment, the NumPy reference,
finite differences and PyTorch's F.ctc_loss (when installed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import central_diff, non_c_layouts, read_only

import fastloss as fl
from fastloss import reference

INF = np.inf


# --- helpers --------------------------------------------------------------------------------
def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return (x - m) - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def random_log_probs(rng, T, N, C, scale=2.0):
    return log_softmax(rng.normal(0.0, scale, (T, N, C)))


def brute_force(lp, labels, blank=0):
    """-log p(labels) of one sample, lp (T, C), by enumerating all C**T frame sequences, and
    the derivative d(-log p)/d lp (log-probabilities as free inputs): minus the posterior
    probability that frame t emits c. (inf, None) when no sequence collapses to the labels."""
    T, C = lp.shape
    target = tuple(int(v) for v in labels)
    paths = []
    for path in itertools.product(range(C), repeat=T):
        collapsed = tuple(
            k for i, k in enumerate(path) if k != blank and (i == 0 or path[i - 1] != k)
        )
        if collapsed == target:
            paths.append(path)
    if not paths:
        return INF, None
    steps = np.arange(T)
    logp = np.array([lp[steps, list(p)].sum() for p in paths])
    top = logp.max()
    log_total = top + np.log(np.exp(logp - top).sum())
    weights = np.exp(logp - log_total)
    occupancy = np.zeros((T, C))
    for p, w in zip(paths, weights):
        occupancy[steps, list(p)] += w
    return -log_total, -occupancy


def torch_style_grad(lp, labels, blank=0):
    """PyTorch's returned gradient of one sample: exp(lp) + d(-log p)/d lp."""
    nll, d = brute_force(lp, labels, blank)
    return nll, (None if d is None else np.exp(lp) + d)


def concatenated(targets, target_lengths):
    return np.concatenate([targets[n, :k] for n, k in enumerate(target_lengths)]).astype(np.int64)


# Tiny cases for the brute force (T <= 5, C <= 3): (T, C, blank, per-sample (input length,
# labels)); repeats, an empty target, an impossible sample, a non-zero blank.
TINY = [
    (4, 3, 0, [(4, [1, 2]), (3, [1, 1]), (4, []), (2, [2, 2])]),
    (5, 3, 0, [(5, [1, 1, 2]), (5, [2]), (4, [1, 2, 1]), (1, [1])]),
    (5, 3, 2, [(5, [0, 1]), (5, [1, 1]), (3, [0, 0]), (0, [])]),
    (3, 2, 1, [(3, [0]), (3, [0, 0]), (1, []), (2, [0, 0])]),
]


def tiny_batch(rng, T, C, samples):
    N = len(samples)
    S = max(1, max(len(lab) for _, lab in samples))
    lp = random_log_probs(rng, T, N, C)
    targets = np.ones((N, S), dtype=np.int64)  # padding: never read
    for n, (_, lab) in enumerate(samples):
        targets[n, : len(lab)] = lab
    il = np.array([t for t, _ in samples])
    tl = np.array([len(lab) for _, lab in samples])
    return lp, targets, il, tl


# --- values and gradients -------------------------------------------------------------------
@pytest.mark.parametrize("case", range(len(TINY)))
@pytest.mark.parametrize("impl", ["fastloss", "reference"])
def test_brute_force(rng, case, impl):
    T, C, blank, samples = TINY[case]
    lp, targets, il, tl = tiny_batch(rng, T, C, samples)
    fn = fl.ctc_loss if impl == "fastloss" else reference.ctc_loss
    loss, grad = fn(lp, targets, il, tl, blank=blank, reduction="none", return_grad=True)
    _, grad_sum = fn(lp, targets, il, tl, blank=blank, reduction="sum", return_grad=True)
    np.testing.assert_array_equal(grad, grad_sum)
    for n, (Tn, lab) in enumerate(samples):
        expected, g = (
            torch_style_grad(lp[:Tn, n], lab, blank) if Tn else ((0.0 if not lab else INF), None)
        )
        np.testing.assert_allclose(loss[n], expected, rtol=1e-13)
        if g is not None:
            np.testing.assert_allclose(grad[:Tn, n], g, rtol=1e-11, atol=1e-14)
        elif Tn:  # no alignment: PyTorch's backward gives NaN
            assert np.isnan(grad[:Tn, n]).all()
        np.testing.assert_array_equal(grad[Tn:, n], 0.0)


def test_finite_differences(rng):
    """The returned gradient minus exp(log_probs) is d loss / d log_probs for free inputs."""
    lp, targets, il, tl = tiny_batch(rng, 5, 3, [(5, [1, 1]), (4, [2, 1, 2]), (3, [])])
    for reduction in ("sum", "mean"):
        _, g = fl.ctc_loss(lp, targets, il, tl, reduction=reduction, return_grad=True)
        scale = np.ones(3) if reduction == "sum" else 1.0 / (3 * np.maximum(tl, 1))
        free = g - np.exp(lp) * scale[None, :, None] * (np.arange(5)[:, None] < il)[:, :, None]
        fd = central_diff(lambda z, r=reduction: fl.ctc_loss(z, targets, il, tl, reduction=r), lp)
        np.testing.assert_allclose(free, fd, atol=2e-8)


def random_case(rng, T=30, N=6, C=7, S=8):
    lp = random_log_probs(rng, T, N, C)
    targets = rng.integers(1, C, (N, S))
    targets[0, 3] = targets[0, 2]  # a repeat
    il = rng.integers(S * 2, T + 1, N)
    il[1] = T
    tl = rng.integers(0, S + 1, N)
    tl[0], tl[2] = S, 0
    return lp, targets, il, tl


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("form", ["padded", "concatenated"])
def test_reference(rng, reduction, form):
    lp, targets, il, tl = random_case(rng)
    tg = targets if form == "padded" else concatenated(targets, tl)
    loss, grad = fl.ctc_loss(lp, tg, il, tl, reduction=reduction, return_grad=True)
    ref_loss, ref_grad = reference.ctc_loss(
        lp, targets, il, tl, reduction=reduction, return_grad=True
    )
    assert grad.dtype == np.float64 and grad.shape == lp.shape
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == (6,) and loss.dtype == np.float64
    else:
        assert isinstance(loss, np.float64)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


def test_float32_and_16_bit(rng):
    lp, targets, il, tl = random_case(rng)
    ref_loss, ref_grad = reference.ctc_loss(
        lp.astype(np.float32), targets, il, tl, reduction="none", return_grad=True
    )
    loss, grad = fl.ctc_loss(
        lp.astype(np.float32), targets, il, tl, reduction="none", return_grad=True
    )
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    # float64 recursions on the float32 values: only the final roundings differ
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-7)
    for dt in [np.float16] + ([pytest.importorskip("ml_dtypes").bfloat16]):
        x = lp.astype(dt)
        loss, grad = fl.ctc_loss(x, targets, il, tl, reduction="none", return_grad=True)
        assert loss.dtype == np.float32 and grad.dtype == x.dtype
        ref_loss, ref_grad = reference.ctc_loss(
            x.astype(np.float64), targets, il, tl, reduction="none", return_grad=True
        )
        np.testing.assert_allclose(loss, ref_loss, rtol=2e-7)
        np.testing.assert_allclose(grad.astype(np.float64), ref_grad, rtol=1e-2, atol=1e-3)
    loss = fl.ctc_loss(np.zeros((4, 1, 3), dtype=np.int32), [[1]], [4], [1])
    assert loss.dtype == np.float64


def test_layouts_and_unbatched(rng):
    lp, targets, il, tl = random_case(rng, T=12, N=3, C=5, S=4)
    il[:] = 12
    loss, grad = fl.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    for name, view in non_c_layouts(lp):
        l2, g2 = fl.ctc_loss(view, targets, il, tl, reduction="none", return_grad=True)
        np.testing.assert_array_equal(l2, loss, err_msg=name)
        np.testing.assert_array_equal(g2, grad, err_msg=name)
    for n in range(3):
        l1, g1 = fl.ctc_loss(lp[:, n], targets[n], il[n], tl[n], reduction="none", return_grad=True)
        assert l1.shape == () and g1.shape == (12, 5)
        np.testing.assert_array_equal(l1, loss[n])
        np.testing.assert_allclose(g1, grad[:, n], rtol=1e-15)
        np.testing.assert_array_equal(
            fl.ctc_loss(lp[:, n], targets[n], [il[n]], (tl[n],), reduction="sum"), loss[n]
        )


# --- special cases --------------------------------------------------------------------------
def test_repeated_labels_need_a_blank():
    lp = np.log(np.array([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1]]))[:, None, :]
    # [1, 1] in 2 steps is impossible; in 3 steps the only alignment is 1, blank, 1
    assert fl.ctc_loss(lp[:2], [[1, 1]], [2], [2], reduction="sum") == INF
    np.testing.assert_allclose(
        fl.ctc_loss(lp, [[1, 1]], [3], [2], reduction="sum"), -np.log(0.3 * 0.6 * 0.7), rtol=1e-14
    )
    # [1, 2] in 2 steps: exactly 1, 2
    np.testing.assert_allclose(
        fl.ctc_loss(lp[:2], [[1, 2]], [2], [2], reduction="sum"), -np.log(0.3 * 0.3), rtol=1e-14
    )


def test_empty_target_and_empty_input(rng):
    lp = random_log_probs(rng, 6, 3, 4)
    loss, grad = fl.ctc_loss(
        lp, np.zeros((3, 0), dtype=int), [6, 2, 0], [0, 0, 0], reduction="none", return_grad=True
    )
    np.testing.assert_allclose(loss, [-lp[:, 0, 0].sum(), -lp[:2, 1, 0].sum(), 0.0], rtol=1e-14)
    expected = np.exp(lp)
    expected[..., 0] -= 1.0  # the only alignment: blank at every step
    expected[2:, 1] = 0.0
    expected[:, 2] = 0.0
    np.testing.assert_allclose(grad, expected, atol=1e-15)
    # an empty input cannot emit a label: inf, and a zero gradient (as PyTorch)
    loss, grad = fl.ctc_loss(
        lp, [[1]] * 3, [0, 0, 0], [1, 1, 1], reduction="none", return_grad=True
    )
    assert (loss == INF).all() and (grad == 0).all()


def test_too_short_input_and_zero_infinity(rng):
    lp = random_log_probs(rng, 6, 3, 4)
    targets = np.array([[1, 2, 3], [1, 1, 1], [2, 3, 2]])
    il, tl = np.array([6, 4, 2]), np.array([3, 3, 3])  # samples 1 (needs 5) and 2 impossible
    loss, grad = fl.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    assert np.isfinite(loss[0]) and loss[1] == INF and loss[2] == INF
    assert np.isnan(grad[:4, 1]).all() and (grad[4:, 1] == 0).all()
    assert np.isnan(grad[:2, 2]).all() and (grad[2:, 2] == 0).all()
    assert fl.ctc_loss(lp, targets, il, tl) == INF
    zl, zg = fl.ctc_loss(
        lp, targets, il, tl, reduction="none", zero_infinity=True, return_grad=True
    )
    np.testing.assert_array_equal(zl, [loss[0], 0.0, 0.0])
    np.testing.assert_array_equal(zg[:, 0], grad[:, 0])
    assert (zg[:, 1:] == 0).all()
    mean, mg = fl.ctc_loss(lp, targets, il, tl, zero_infinity=True, return_grad=True)
    np.testing.assert_allclose(mean, loss[0] / 3 / 3, rtol=1e-15)
    np.testing.assert_allclose(mg[:, 0], grad[:, 0] / 9, rtol=1e-15)
    assert fl.ctc_loss(lp, targets, il, tl, zero_infinity=True, reduction="sum") == loss[0]


def test_very_improbable_targets_stay_finite():
    """Log space: a target whose every alignment has probability far below 1e-308 (all of its
    labels at log-probability -400, S = 3) still gets its finite loss."""
    T, C = 8, 4
    lp = np.full((T, 1, C), -400.0)
    lp[:, 0, 0] = 0.0  # blank certain
    loss, grad = fl.ctc_loss(lp, [[1, 2, 3]], [T], [3], reduction="sum", return_grad=True)
    ref_loss, ref_grad = reference.ctc_loss(
        lp, [[1, 2, 3]], [T], [3], reduction="sum", return_grad=True
    )
    assert 1190 < loss < 1200  # 1200 less the log of the number of alignments
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_minus_inf_log_probs(rng):
    lp = random_log_probs(rng, 5, 1, 3)
    lp[2, 0, 2] = -INF  # class 2 impossible at step 2
    loss, grad = fl.ctc_loss(lp, [[1, 2]], [5], [2], reduction="sum", return_grad=True)
    expected, g = torch_style_grad(lp[:, 0], [1, 2])
    np.testing.assert_allclose(loss, expected, rtol=1e-13)
    g[2, 2] = 0.0  # exp(-inf) - 0 (PyTorch: NaN)
    np.testing.assert_allclose(grad[:, 0], g, rtol=1e-11, atol=1e-15)


def test_empty_batch():
    lp = np.zeros((3, 0, 4))
    assert np.isnan(fl.ctc_loss(lp, np.zeros((0, 2), dtype=int), [], []))
    assert fl.ctc_loss(lp, np.zeros(0, dtype=int), [], [], reduction="sum") == 0
    loss, grad = fl.ctc_loss(lp, [], [], [], reduction="none", return_grad=True)
    assert loss.shape == (0,) and grad.shape == (3, 0, 4)


def test_threads_give_identical_results(rng, restore_threads):
    lp = random_log_probs(rng, 120, 16, 20).astype(np.float32)
    targets = rng.integers(1, 20, (16, 30))
    il = rng.integers(60, 121, 16)
    tl = rng.integers(0, 31, 16)
    out = []
    for n in (1, 2):
        fl.set_num_threads(n)
        out.append(fl.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_every_isa(rng, isa):
    lp, targets, il, tl = random_case(rng, T=40, N=4, C=9, S=11)
    loss, grad = fl.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


# --- PyTorch --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("form", ["padded", "concatenated"])
def test_torch(rng, reduction, zero_infinity, form):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    lp, targets, il, tl = random_case(rng, T=25, N=7, C=6, S=8)
    targets[3, :4] = [2, 2, 2, 2]
    il[3], tl[3] = 6, 4  # needs 7 steps: inf
    il[4] = 0
    tg = targets if form == "padded" else concatenated(targets, tl)
    # float32: PyTorch runs its recursions in float32 (gradient errors up to ~1e-5 here),
    # fastloss in float64 (~3e-8): the tolerance is PyTorch's error
    for dtype, rtol, atol in [(np.float64, 1e-12, 1e-14), (np.float32, 1e-5, 3e-5)]:
        x = torch.tensor(lp.astype(dtype), requires_grad=True)
        expected = F.ctc_loss(
            x,
            torch.tensor(tg),
            torch.tensor(il),
            torch.tensor(tl),
            reduction=reduction,
            zero_infinity=zero_infinity,
        )
        expected.sum().backward()
        loss, grad = fl.ctc_loss(
            lp.astype(dtype),
            tg,
            il,
            tl,
            reduction=reduction,
            zero_infinity=zero_infinity,
            return_grad=True,
        )
        np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=rtol)
        np.testing.assert_allclose(grad, x.grad.numpy(), rtol=rtol, atol=atol, equal_nan=True)
        assert np.array_equal(np.isnan(grad), np.isnan(x.grad.numpy()))


def test_torch_nan(rng):
    """A NaN log-probability on a path makes that sample's loss NaN; elsewhere it only makes
    its own gradient entry NaN (exp(NaN)); as PyTorch."""
    torch = pytest.importorskip("torch")
    lp = random_log_probs(rng, 8, 3, 5)
    lp[3, 0, 2] = np.nan  # class 2 is in sample 0's target
    lp[5, 1, 4] = np.nan  # class 4 is not in sample 1's target
    lp[7, 2, 1] = np.nan  # past sample 2's input length
    targets, il, tl = np.array([[1, 2, 1], [1, 2, 3], [3, 3, 1]]), [8, 8, 6], [3, 3, 3]
    x = torch.tensor(lp, requires_grad=True)
    expected = torch.nn.functional.ctc_loss(
        x, torch.tensor(targets), torch.tensor(il), torch.tensor(tl), reduction="none"
    )
    expected.sum().backward()
    loss, grad = fl.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    assert np.isnan(loss[0]) and np.isfinite(loss[1:]).all()
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-11, atol=1e-15, equal_nan=True)
    assert np.array_equal(np.isnan(grad), np.isnan(x.grad.numpy()))


def test_torch_unbatched(rng):
    torch = pytest.importorskip("torch")
    lp = random_log_probs(rng, 9, 1, 5)[:, 0]
    x = torch.tensor(lp, requires_grad=True)
    expected = torch.nn.functional.ctc_loss(
        x, torch.tensor([3, 1, 3]), torch.tensor(9), torch.tensor(3), reduction="none", blank=2
    )
    expected.backward()
    loss, grad = fl.ctc_loss(lp, [3, 1, 3], 9, 3, reduction="none", blank=2, return_grad=True)
    assert loss.shape == tuple(expected.shape) == ()
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-13)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-11, atol=1e-15)


# --- bad input ------------------------------------------------------------------------------
def _args():
    lp = np.log(np.full((6, 2, 4), 0.25))
    return dict(
        log_probs=lp,
        targets=np.array([[1, 2, 0], [3, 3, 3]]),
        input_lengths=[6, 5],
        target_lengths=[2, 3],
    )


BAD = [
    (dict(input_lengths=[7, 5]), ValueError, r"input_lengths\[0\] = 7 exceeds .* T = 6"),
    (dict(input_lengths=[6, -1]), ValueError, r"input_lengths\[1\] = -1 is negative"),
    (dict(target_lengths=[4, 3]), ValueError, r"target_lengths\[0\] = 4 exceeds .* S = 3"),
    (dict(target_lengths=[2, -3]), ValueError, r"target_lengths\[1\] = -3 is negative"),
    (dict(input_lengths=[6, 5, 4]), ValueError, r"input_lengths must have one entry per sample"),
    (dict(target_lengths=[2]), ValueError, r"target_lengths must have one entry per sample"),
    (dict(input_lengths=[[6, 5]]), ValueError, r"input_lengths must have one entry"),
    (dict(input_lengths=[6.0, 5.0]), TypeError, r"input_lengths must hold integers"),
    (dict(target_lengths=[True, False]), TypeError, r"target_lengths must hold integers"),
    (dict(targets=np.array([[1, 2, 0]])), ValueError, r"targets has 1 rows .* N = 2"),
    (dict(targets=np.array([1, 2, 3, 3])), ValueError, r"concatenated.* sum to 5"),
    (dict(targets=np.zeros((2, 3, 1), int)), ValueError, r"targets must be padded"),
    (
        dict(targets=np.array([[1, 4, 0], [3, 3, 3]])),
        IndexError,
        r"targets\[0, 1\] = 4 is out of range",
    ),
    (
        dict(targets=np.array([[1, 2, 0], [3, -1, 3]])),
        IndexError,
        r"targets\[1, 1\] = -1 is out of range",
    ),
    (dict(targets=np.array([1, 2, 3, 5, 3])), IndexError, r"targets\[3\] = 5 is out of range"),
    (
        dict(targets=np.array([[1, 0, 0], [3, 3, 3]])),
        ValueError,
        r"targets\[0, 1\] = 0 is the blank",
    ),
    (
        dict(targets=np.array([[1.0, 2.0, 0.0], [3.0, 3.0, 3.0]])),
        TypeError,
        r"targets must hold integers",
    ),
    (dict(blank=4), ValueError, r"blank must be a class index in \[0, C\) with C = 4"),
    (dict(blank=-1), ValueError, r"blank must be"),
    (dict(blank=1.0), TypeError, r"blank must be an integer"),
    (dict(log_probs=np.zeros((6, 2, 4, 1))), ValueError, r"log_probs must have shape \(T, N, C\)"),
    (dict(log_probs=np.zeros(6)), ValueError, r"log_probs must have shape"),
    (dict(log_probs=np.zeros((6, 3, 4))), ValueError, r"one entry per sample.* N = 3"),
    (dict(log_probs=np.zeros((6, 2, 4), complex)), TypeError, r"log_probs: complex"),
    (dict(reduction="batchmean"), ValueError, r"reduction must be one of"),
]


@pytest.mark.parametrize("change, exc, match", BAD)
def test_bad_input(change, exc, match):
    args = _args()
    args.update(change)
    with pytest.raises(exc, match=match):
        fl.ctc_loss(**args)


def test_bad_input_unbatched():
    lp = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"targets must be 1-d \(S,\) for unbatched"):
        fl.ctc_loss(lp, [[1, 2]], 5, 2)
    with pytest.raises(ValueError, match=r"input_lengths must be a single integer"):
        fl.ctc_loss(lp, [1, 2], [5, 5], 2)


def test_padding_is_not_read():
    """Labels past a target's length may be anything (PyTorch pads with the blank, or -1)."""
    lp = np.log(np.full((6, 2, 4), 0.25))
    a = fl.ctc_loss(lp, [[1, 2, -1, 99], [3, 0, 0, 0]], [6, 5], [2, 1], reduction="none")
    b = fl.ctc_loss(lp, [[1, 2], [3, 1]], [6, 5], [2, 1], reduction="none")
    np.testing.assert_array_equal(a, b)


def test_core_guards_its_indices():
    """Called directly with inconsistent arguments, _core raises instead of reading out of
    bounds."""
    from fastloss import _core

    lp = np.zeros((4, 1, 3))
    i64 = lambda v: np.array(v, dtype=np.int64)
    loss = np.empty(1)
    for targets, off, il, tl, blank in [
        ([1], [0], [5], [1], 0),
        ([1], [0], [4], [2], 0),
        ([1], [1], [4], [1], 0),
        ([3], [0], [4], [1], 0),
        ([1], [0], [4], [1], 3),
    ]:
        with pytest.raises(ValueError):
            _core.ctc_loss(
                lp, i64(targets), i64(off), i64(il), i64(tl), blank, False, loss, None, None
            )


# --------------------------------------------------------------------- grad_out
def _ctc_case(rng, dt, unbatched=False):
    T, N, C = 7, 3, 5
    z = rng.normal(size=(T, N, C))
    lp = (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(dt)
    targets = rng.integers(1, C, size=(N, 3))
    il, tl = np.array([7, 5, 6]), np.array([3, 1, 2])
    if unbatched:
        return lp[:, 0], targets[0], 7, 3
    return lp, targets, il, tl


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_ctc_grad_out(rng, dt, reduction, unbatched):
    lp, targets, il, tl = _ctc_case(rng, dt, unbatched)
    want_loss, want = fl.ctc_loss(lp, targets, il, tl, reduction=reduction, return_grad=True)
    for go in (np.full(lp.shape, 7.0, dt), np.full(lp.shape, 7.0, dt, order="F"),
               np.full((2,) + lp.shape, 7.0, dt)[1][..., ::-1]):
        loss, g = fl.ctc_loss(lp, targets, il, tl, reduction=reduction, return_grad=True,
                              grad_out=go)
        assert g is go
        np.testing.assert_array_equal(loss, want_loss)
        np.testing.assert_array_equal(go, want)
    for x in (lp.copy(), np.asfortranarray(lp)):  # in place
        loss, g = fl.ctc_loss(x, targets, il, tl, reduction=reduction, return_grad=True,
                              grad_out=x)
        assert g is x
        np.testing.assert_array_equal(loss, want_loss)
        np.testing.assert_array_equal(x, want)


def test_ctc_grad_out_errors(rng):
    lp, targets, il, tl = _ctc_case(rng, np.float64)
    f = fl.ctc_loss
    with pytest.raises(ValueError, match="return_grad"):
        f(lp, targets, il, tl, grad_out=np.empty_like(lp))
    for exc, go in ((ValueError, np.empty(lp.shape[::-1])), (ValueError, np.empty(lp.size)),
                    (TypeError, np.empty(lp.shape, np.float32)),
                    (ValueError, read_only(np.empty(lp.shape))),
                    (TypeError, np.empty(lp.shape).tolist())):
        with pytest.raises(exc, match="grad_out"):
            f(lp, targets, il, tl, return_grad=True, grad_out=go)
    bad_label = targets.copy()
    bad_label[1, 0] = 5  # out of range: IndexError
    blank_label = targets.copy()
    blank_label[2, 1] = 0  # the blank among the labels, found late
    for args, exc in (((lp, bad_label, il, tl), IndexError),
                      ((lp, blank_label, il, tl), ValueError),
                      ((lp, targets, il + 1, tl), ValueError)):
        go = np.full(lp.shape, 7.0)
        with pytest.raises(exc):
            f(*args, return_grad=True, grad_out=go)
        assert np.all(go == 7.0)
        x = lp.copy()
        with pytest.raises(exc):
            f(x, *args[1:], return_grad=True, grad_out=x)
        np.testing.assert_array_equal(x, lp)
