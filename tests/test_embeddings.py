"""Embedding losses: contrastive_loss, triplet_margin_loss, clip_loss.

Checked against fastloss.reference (plain NumPy float64), central finite differences, and
PyTorch's autograd when it is installed (triplet_margin_loss is torch's own function; the
contrastive and CLIP losses are composed from torch ops)."""

import math

import fastloss as fl
import numpy as np
import pytest
import _contracts as contract
from conftest import LAYOUTS, central_diff, layout
from fastloss import reference

REDUCTIONS = ("mean", "sum", "none")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=atol)


def close_grads(actual, expected, **kw):
    assert isinstance(actual, tuple) and len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == np.shape(e)
        close(a, e, **kw)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _t(torch, a, grad=True):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _torch_grads(torch, loss, *leaves):
    (loss if loss.ndim == 0 else loss.sum()).backward()
    return tuple(leaf.grad.numpy() for leaf in leaves)


# ---------------------------------------------------------------------------------------------
# contrastive_loss
# ---------------------------------------------------------------------------------------------
def _pairs(rng, shape=(9, 6)):
    x1 = rng.standard_normal(shape)
    x2 = x1 + rng.standard_normal(shape) * 0.6
    y = rng.integers(0, 2, shape[:-1])
    return x1, x2, y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(9, 6), (2, 3, 5), (4,)], ids=str)
def test_contrastive_matches_reference(rng, reduction, shape):
    x1, x2, y = _pairs(rng, shape)
    loss, grads = fl.contrastive_loss(x1, x2, y, margin=2.0, reduction=reduction,
                                      return_grad=True)
    ref_loss, ref_grads = reference.contrastive_loss(x1, x2, y, margin=2.0,
                                                     reduction=reduction, return_grad=True)
    close(loss, ref_loss)
    assert np.shape(loss) == (shape[:-1] if reduction == "none" else ())
    close_grads(grads, ref_grads)
    close(fl.contrastive_loss(x1, x2, y, margin=2.0, reduction=reduction), ref_loss)


def test_contrastive_finite_differences(rng):
    x1, x2, y = _pairs(rng, (5, 4))
    _, (g1, g2) = fl.contrastive_loss(x1, x2, y, margin=2.0, return_grad=True)
    close(g1, central_diff(lambda a: fl.contrastive_loss(a, x2, y, margin=2.0), x1), atol=1e-8)
    close(g2, central_diff(lambda b: fl.contrastive_loss(x1, b, y, margin=2.0), x2), atol=1e-8)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_contrastive_matches_torch(rng, torch, reduction):
    x1, x2, y = _pairs(rng)
    a, b = _t(torch, x1), _t(torch, x2)
    yt = torch.tensor(y, dtype=torch.float64)
    d = torch.linalg.vector_norm(a - b, dim=-1)
    per = yt * d**2 + (1 - yt) * torch.clamp_min(1.5 - d, 0) ** 2
    tl = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    tg = _torch_grads(torch, tl, a, b)
    loss, grads = fl.contrastive_loss(x1, x2, y, margin=1.5, reduction=reduction,
                                      return_grad=True)
    close(loss, tl.detach().numpy())
    close_grads(grads, tg)


def test_contrastive_zero_distance(torch):
    """Identical embeddings: d = 0. Similar pairs have loss 0, dissimilar ones margin^2; every
    gradient is 0 (the subgradient at the norm's kink, as torch's norm backward)."""
    x = np.array([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    y = np.array([1, 0, 0])
    loss, (g1, g2) = fl.contrastive_loss(x, x.copy(), y, margin=1.5, reduction="none",
                                         return_grad=True)
    close(loss, [0.0, 2.25, 2.25])
    assert np.all(g1 == 0) and np.all(g2 == 0)
    a, b = _t(torch, x), _t(torch, x)
    d = torch.linalg.vector_norm(a - b, dim=-1)
    yt = torch.tensor(y, dtype=torch.float64)
    tg = _torch_grads(torch, yt * d**2 + (1 - yt) * torch.clamp_min(1.5 - d, 0) ** 2, a, b)
    close_grads((g1, g2), tg)
    for dtype in ("float32", "float16"):
        xd = x.astype(dtype)
        loss, grads = fl.contrastive_loss(xd, xd, y, return_grad=True)
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)


def test_contrastive_margin_zero_and_far_pairs(rng):
    x1, x2, y = _pairs(rng)
    close(fl.contrastive_loss(x1, x2, np.zeros_like(y), margin=0.0), 0.0)
    far = x1 + 100.0  # dissimilar pairs beyond the margin: no loss, no gradient
    loss, (g1, _) = fl.contrastive_loss(x1, far, np.zeros_like(y), return_grad=True)
    assert loss == 0 and np.all(g1 == 0)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_contrastive_dtypes(rng, dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    x1, x2, y = _pairs(rng, (40, 8))
    a, b = x1.astype(dtype), x2.astype(dtype)
    loss, (g1, g2) = fl.contrastive_loss(a, b, y, reduction="none", return_grad=True)
    assert loss.dtype == np.float32 and g1.dtype == a.dtype and g2.dtype == b.dtype
    ref_loss, (r1, _) = reference.contrastive_loss(a, b, y, reduction="none",
                                                    return_grad=True)
    # computed in float64 from the inputs as stored: the loss is the reference's, rounded
    close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    tol = 1e-6 if np.dtype(dtype) == np.float32 else 1e-2
    close(g1, r1, rtol=tol, atol=tol)
    close(g2, -g1.astype(np.float64), rtol=0, atol=0)


def test_contrastive_mixed_and_integer_dtypes(rng):
    x1, x2, y = _pairs(rng)
    loss, (g1, g2) = fl.contrastive_loss(x1.astype(np.float32), x2, y, return_grad=True)
    assert loss.dtype == np.float64 and g1.dtype == np.float32 and g2.dtype == np.float64
    xi = np.arange(12).reshape(3, 4)
    loss = fl.contrastive_loss(xi, xi + 1, [1, 1, 0], reduction="none")
    assert loss.dtype == np.float64
    close(loss, [4.0, 4.0, 0.0])  # d = 2 for every pair


@pytest.mark.parametrize("name", LAYOUTS[1:])
def test_contrastive_layouts(rng, name):
    x1, x2, y = _pairs(rng, (7, 5))
    expected = fl.contrastive_loss(x1, x2, y, reduction="none", return_grad=True)
    got = fl.contrastive_loss(layout(x1, name), layout(x2, name), layout(y, name)
                              if y.ndim > 1 else y, reduction="none", return_grad=True)
    close(got[0], expected[0], rtol=1e-14, atol=0)
    close_grads(got[1], expected[1], rtol=1e-14, atol=0)


def test_contrastive_many_blocks(rng):
    """More rows than one block of the row loop (64K elements)."""
    x1, x2, y = _pairs(rng, (700, 130))
    loss, grads = fl.contrastive_loss(x1, x2, y, margin=16.0, reduction="sum",
                                      return_grad=True)
    ref_loss, ref_grads = reference.contrastive_loss(x1, x2, y, margin=16.0, reduction="sum",
                                                     return_grad=True)
    close(loss, ref_loss, rtol=1e-12)
    close_grads(grads, ref_grads)


def test_contrastive_empty_batch():
    x = np.zeros((0, 3))
    assert np.isnan(fl.contrastive_loss(x, x, np.zeros(0)))
    assert fl.contrastive_loss(x, x, np.zeros(0), reduction="sum") == 0
    loss, (g1, g2) = fl.contrastive_loss(x, x, np.zeros(0), reduction="none", return_grad=True)
    assert loss.shape == (0,) and g1.shape == (0, 3) and g2.shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, label, exc, match",
    [
        ({}, [0.5, 1, 0], ValueError, "label must be 0"),
        ({}, [2, 1, 0], ValueError, "label must be 0"),
        ({}, [-1, 1, 0], ValueError, "label must be 0"),
        ({}, [np.nan, 1, 0], ValueError, "label must be 0"),
        ({}, [1, 0], ValueError, "label has shape"),
        ({}, ["a", "b", "c"], TypeError, "label"),
        ({"margin": -0.5}, [1, 0, 1], ValueError, "margin"),
        ({"margin": math.inf}, [1, 0, 1], ValueError, "margin"),
        ({"margin": math.nan}, [1, 0, 1], ValueError, "margin"),
        ({"margin": "1"}, [1, 0, 1], TypeError, "margin"),
        ({"reduction": "avg"}, [1, 0, 1], ValueError, "reduction"),
    ],
)
def test_contrastive_bad_arguments(kwargs, label, exc, match):
    x = np.zeros((3, 2))
    with pytest.raises(exc, match=match):
        fl.contrastive_loss(x, x, label, **kwargs)


def test_contrastive_bad_shapes():
    with pytest.raises(ValueError, match="x2 has shape"):
        fl.contrastive_loss(np.zeros((3, 2)), np.zeros((3, 3)), [0, 1, 0])
    with pytest.raises(ValueError, match="at least one dimension"):
        fl.contrastive_loss(1.0, 2.0, 1)
    with pytest.raises(TypeError, match="complex"):
        fl.contrastive_loss(np.zeros((3, 2), complex), np.zeros((3, 2)), [0, 1, 0])
    # booleans are labels too
    close(fl.contrastive_loss([[0.0], [3.0]], [[1.0], [3.0]], [True, False], reduction="sum"),
          2.0)


# ---------------------------------------------------------------------------------------------
# triplet_margin_loss
# ---------------------------------------------------------------------------------------------
def _triplets(rng, shape=(8, 5)):
    a = rng.standard_normal(shape)
    return a, a + 0.7 * rng.standard_normal(shape), a + 0.9 * rng.standard_normal(shape)


def _torch_triplet(torch, a, pos, neg, reduction="mean", **kw):
    ta, tp, tn = _t(torch, a), _t(torch, pos), _t(torch, neg)
    loss = torch.nn.functional.triplet_margin_loss(ta, tp, tn, reduction=reduction, **kw)
    return loss.detach().numpy(), _torch_grads(torch, loss, ta, tp, tn)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 1.5, 0.5, math.inf])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.3])
def test_triplet_matches_torch(rng, torch, p, swap, eps):
    a, pos, neg = _triplets(rng)
    for reduction in REDUCTIONS:
        kw = {"margin": 1.2, "p": p, "eps": eps, "swap": swap}
        loss, grads = fl.triplet_margin_loss(a, pos, neg, reduction=reduction,
                                             return_grad=True, **kw)
        tl, tg = _torch_triplet(torch, a, pos, neg, reduction=reduction, **kw)
        close(loss, tl, rtol=1e-12)
        close_grads(grads, tg)
        ref_loss, ref_grads = reference.triplet_margin_loss(
            a, pos, neg, reduction=reduction, return_grad=True, **kw)
        close(loss, ref_loss, rtol=1e-12)
        close_grads(grads, ref_grads)


def test_triplet_swap_is_used(rng):
    """Cases where d(p, n) < d(a, n), so swap changes the loss."""
    a = np.zeros((4, 3))
    pos = np.full((4, 3), 0.5)
    neg = np.full((4, 3), 0.8)
    plain = fl.triplet_margin_loss(a, pos, neg, reduction="none")
    swapped = fl.triplet_margin_loss(a, pos, neg, swap=True, reduction="none")
    assert np.all(swapped > plain)


def test_triplet_conventions_match_torch(torch):
    """PyTorch's autograd at its corner cases: hinge exactly at 0 (clamp_min passes the
    gradient), a swap tie d(a, n) = d(p, n) (half each), p = inf ties, norms of exactly 0."""
    cases = [
        # margin + d(a, p) - d(a, n) = 1 + 0.5 - 1.5 = 0 exactly
        (np.array([[0.0, 0.0]]), np.array([[0.5, 0.0]]), np.array([[1.5, 0.0]]), {}),
        # d(a, n) = d(p, n) = 1 with swap
        (np.array([[1.0, 0.0]]), np.array([[-1.0, 0.0]]), np.array([[0.0, 0.0]]),
         {"swap": True}),
        # p = inf with tied maxima |x| = 2
        (np.array([[2.0, -2.0, 1.0]]), np.array([[0.0, 0.0, 0.0]]),
         np.array([[1.0, 1.0, 1.0]]), {"p": math.inf}),
        # everything identical: all distances 0
        (np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), {}),
        (np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), {"p": 1.0, "swap": True}),
        (np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), {"p": 0.5}),
        (np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), {"p": 3.0}),
    ]
    for a, pos, neg, kw in cases:
        kw = {"eps": 0.0, **kw}
        loss, grads = fl.triplet_margin_loss(a, pos, neg, return_grad=True, **kw)
        tl, tg = _torch_triplet(torch, a, pos, neg, **kw)
        assert all(np.all(np.isfinite(g)) for g in grads)
        close(loss, tl)
        close_grads(grads, tg)


def test_triplet_finite_differences(rng):
    a, pos, neg = _triplets(rng, (4, 3))
    for kw in ({}, {"p": 3.0, "swap": True}, {"p": 1.5, "eps": 0.1}):
        _, grads = fl.triplet_margin_loss(a, pos, neg, margin=2.0, return_grad=True, **kw)
        for i in range(3):
            def f(x, i=i, kw=kw):
                return fl.triplet_margin_loss(*[x if j == i else v for j, v in enumerate(
                    (a, pos, neg))], margin=2.0, **kw)
            close(grads[i], central_diff(f, (a, pos, neg)[i]), atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_triplet_dtypes_match_torch(rng, torch, dtype):
    a, pos, neg = (x.astype(dtype) for x in _triplets(rng, (64, 16)))
    loss, grads = fl.triplet_margin_loss(a, pos, neg, swap=True, reduction="none",
                                         return_grad=True)
    assert loss.dtype == np.float32 and all(g.dtype == np.dtype(dtype) for g in grads)
    tl, tg = _torch_triplet(torch, a, pos, neg, swap=True, reduction="none")  # float64
    tol = 1e-6 if dtype == "float32" else 2e-3
    close(loss, tl, rtol=tol, atol=tol)
    close_grads(grads, tg, rtol=tol, atol=tol)


def test_triplet_shapes(rng, torch):
    a, pos, neg = _triplets(rng, (2, 3, 4))
    loss, grads = fl.triplet_margin_loss(a, pos, neg, reduction="none", return_grad=True)
    tl, tg = _torch_triplet(torch, a, pos, neg, reduction="none")
    assert loss.shape == (2, 3)
    close(loss, tl)
    close_grads(grads, tg)
    one = fl.triplet_margin_loss(a[0, 0], pos[0, 0], neg[0, 0], reduction="none")
    assert one.shape == ()
    close(one, tl[0, 0])


@pytest.mark.parametrize("name", LAYOUTS[1:])
def test_triplet_layouts(rng, name):
    args = _triplets(rng, (6, 5))
    expected = fl.triplet_margin_loss(*args, p=3.0, reduction="none", return_grad=True)
    got = fl.triplet_margin_loss(*(layout(x, name) for x in args), p=3.0, reduction="none",
                                 return_grad=True)
    close(got[0], expected[0], rtol=1e-14, atol=0)
    close_grads(got[1], expected[1], rtol=1e-14, atol=0)


def test_triplet_many_blocks(rng):
    args = _triplets(rng, (600, 150))
    for kw in ({}, {"p": math.inf, "swap": True}):
        loss, grads = fl.triplet_margin_loss(*args, margin=3.0, reduction="sum",
                                             return_grad=True, **kw)
        ref_loss, ref_grads = reference.triplet_margin_loss(*args, margin=3.0,
                                                            reduction="sum",
                                                            return_grad=True, **kw)
        close(loss, ref_loss, rtol=1e-12)
        close_grads(grads, ref_grads)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"margin": 0.0}, ValueError, "margin"),
        ({"margin": -1.0}, ValueError, "margin"),
        ({"p": 0.0}, ValueError, "p must be"),
        ({"p": -2.0}, ValueError, "p must be"),
        ({"p": math.nan}, ValueError, "p"),
        ({"p": "2"}, TypeError, "p"),
        ({"eps": math.inf}, ValueError, "eps"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
    ],
)
def test_triplet_bad_arguments(kwargs, exc, match):
    x = np.zeros((3, 2))
    with pytest.raises(exc, match=match):
        fl.triplet_margin_loss(x, x, x, **kwargs)


def test_triplet_bad_shapes_and_empty():
    with pytest.raises(ValueError, match="negative has shape"):
        fl.triplet_margin_loss(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="positive has shape"):
        fl.triplet_margin_loss(np.zeros((3, 2)), np.zeros((3,)), np.zeros((3, 2)))
    x = np.zeros((0, 4))
    assert np.isnan(fl.triplet_margin_loss(x, x, x))
    assert fl.triplet_margin_loss(x, x, x, reduction="sum") == 0


@pytest.mark.parametrize("shape", [(0, 0), (0, 4), (3, 0), (0, 2, 0)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_triplet_empty_matches_reference(shape, reduction):
    # (the reference reshaped with -1, which fails for 0 rows of 0 elements)
    x = np.zeros(shape)
    want, want_g = reference.triplet_margin_loss(x, x, x, reduction=reduction, return_grad=True)
    got, got_g = fl.triplet_margin_loss(x, x, x, reduction=reduction, return_grad=True)
    np.testing.assert_array_equal(got, want)
    for g, w in zip(got_g, want_g):
        assert g.shape == w.shape == shape


# ---------------------------------------------------------------------------------------------
# clip_loss
# ---------------------------------------------------------------------------------------------
def _clip_pair(rng, n=6, d=4):
    img = rng.standard_normal((n, d))
    return img, img + rng.standard_normal((n, d))


def _torch_clip(torch, img, txt, temperature, normalize, reduction):
    F = torch.nn.functional
    ti, tt = _t(torch, img), _t(torch, txt)
    a, b = (F.normalize(ti, dim=1), F.normalize(tt, dim=1)) if normalize else (ti, tt)
    logits = a @ b.T / temperature
    target = torch.arange(len(img))
    red = "none" if reduction == "none" else "sum"
    loss = (F.cross_entropy(logits, target, reduction=red)
            + F.cross_entropy(logits.T, target, reduction=red)) / 2
    if reduction == "mean":
        loss = loss / len(img)
    return loss.detach().numpy(), _torch_grads(torch, loss, ti, tt)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_clip_matches_reference_and_torch(rng, torch, normalize, reduction):
    img, txt = _clip_pair(rng)
    loss, grads = fl.clip_loss(img, txt, temperature=0.3, normalize=normalize,
                               reduction=reduction, return_grad=True)
    ref_loss, ref_grads = reference.clip_loss(img, txt, temperature=0.3, normalize=normalize,
                                              reduction=reduction, return_grad=True)
    close(loss, ref_loss)
    close_grads(grads, ref_grads)
    tl, tg = _torch_clip(torch, img, txt, 0.3, normalize, reduction)
    close(loss, tl)
    close_grads(grads, tg)
    assert np.shape(loss) == ((len(img),) if reduction == "none" else ())
    close(fl.clip_loss(img, txt, temperature=0.3, normalize=normalize, reduction=reduction),
          ref_loss)


def test_clip_finite_differences(rng):
    img, txt = _clip_pair(rng, 4, 3)
    for normalize in (True, False):
        _, (gi, gt) = fl.clip_loss(img, txt, temperature=0.5, normalize=normalize,
                                   return_grad=True)
        kw = {"temperature": 0.5, "normalize": normalize}
        close(gi, central_diff(lambda x, kw=kw: fl.clip_loss(x, txt, **kw), img), atol=1e-8)
        close(gt, central_diff(lambda x, kw=kw: fl.clip_loss(img, x, **kw), txt), atol=1e-8)


def test_clip_float32_matches_torch(rng, torch):
    """A batch large enough for threads and for the tiled column pass (axis=0)."""
    img, txt = _clip_pair(rng, 300, 32)
    img32, txt32 = img.astype(np.float32), txt.astype(np.float32)
    loss, (gi, gt) = fl.clip_loss(img32, txt32, return_grad=True)
    assert loss.dtype == np.float32 and gi.dtype == np.float32 and gt.dtype == np.float32
    tl, (ti, tt) = _torch_clip(torch, img32, txt32, 0.07, True, "mean")  # float64
    close(loss, tl, rtol=2e-6, atol=0)
    scale = np.abs(ti).max()
    close(gi, ti, rtol=0, atol=1e-5 * scale)
    close(gt, tt, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_clip_16bit(rng, dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    img, txt = _clip_pair(rng, 16, 8)
    a, b = img.astype(dtype), txt.astype(dtype)
    for kw in ({}, {"normalize": False, "temperature": 2.0}):
        loss, (gi, gt) = fl.clip_loss(a, b, return_grad=True, **kw)
        assert loss.dtype == np.float32 and gi.dtype == a.dtype and gt.dtype == b.dtype
        ref_loss, (ri, rt) = reference.clip_loss(a, b, return_grad=True, **kw)
        close(loss, ref_loss, rtol=1e-5)
        close(gi, ri, rtol=0.02, atol=0.02 * np.abs(ri).max())
        close(gt, rt, rtol=0.02, atol=0.02 * np.abs(rt).max())


def test_clip_mixed_and_integer_dtypes(rng):
    img, txt = _clip_pair(rng)
    loss, (gi, gt) = fl.clip_loss(img.astype(np.float32), txt, return_grad=True)
    assert loss.dtype == np.float64 and gi.dtype == np.float32 and gt.dtype == np.float64
    close(loss, reference.clip_loss(img.astype(np.float32), txt), rtol=1e-12)
    ints = np.arange(12).reshape(4, 3)
    close(fl.clip_loss(ints, ints[::-1]), reference.clip_loss(ints, ints[::-1]))


@pytest.mark.parametrize("name", LAYOUTS[1:])
def test_clip_layouts(rng, name):
    img, txt = _clip_pair(rng, 5, 4)
    expected = fl.clip_loss(img, txt, reduction="none", return_grad=True)
    got = fl.clip_loss(layout(img, name), layout(txt, name), reduction="none",
                       return_grad=True)
    close(got[0], expected[0], rtol=1e-13, atol=1e-15)
    close_grads(got[1], expected[1], rtol=1e-12, atol=1e-15)


def test_clip_normalisation(rng, torch):
    img, txt = _clip_pair(rng)
    scaled = img * rng.uniform(0.1, 10.0, (len(img), 1))
    close(fl.clip_loss(scaled, txt), fl.clip_loss(img, txt), rtol=1e-13)
    # the gradient is orthogonal to each row (the loss does not depend on its length)
    _, (gi, gt) = fl.clip_loss(img, txt, return_grad=True)
    close(np.einsum("ij,ij->i", gi, img), 0.0, atol=1e-15)
    close(np.einsum("ij,ij->i", gt, txt), 0.0, atol=1e-15)
    # a zero row: x / max(||x||, 1e-12) as torch's normalize; finite values and gradients
    img[2] = 0.0
    loss, grads = fl.clip_loss(img, txt, return_grad=True)
    tl, tg = _torch_clip(torch, img, txt, 0.07, True, "mean")
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)
    close(loss, tl)
    close_grads(grads, tg, rtol=1e-10, atol=1e-10)


def test_clip_small_batches():
    loss, (gi, gt) = fl.clip_loss([[1.0, 2.0]], [[3.0, -1.0]], return_grad=True)
    assert loss == 0 and np.all(gi == 0) and np.all(gt == 0)  # one pair: nothing to contrast
    empty = np.zeros((0, 3))
    assert np.isnan(fl.clip_loss(empty, empty))
    assert fl.clip_loss(empty, empty, reduction="sum") == 0
    loss, (gi, gt) = fl.clip_loss(empty, empty, reduction="none", return_grad=True)
    assert loss.shape == (0,) and gi.shape == (0, 3) and gt.shape == (0, 3)
    # D = 0: every logit is 0, every loss log N
    close(fl.clip_loss(np.zeros((3, 0)), np.zeros((3, 0)), reduction="none"), [math.log(3)] * 3)


def test_clip_known_value():
    # orthonormal, perfectly matched pairs at temperature 1: logits = I,
    # loss_i = -log(e / (e + N - 1)) in both directions
    n = 4
    e = np.eye(n)
    close(fl.clip_loss(e, e, temperature=1.0), -math.log(math.e / (math.e + n - 1)))


@pytest.mark.parametrize(
    "img_shape, txt_shape, kwargs, exc, match",
    [
        ((4, 3), (4, 2), {}, ValueError, "text_emb has shape"),
        ((4, 3), (5, 3), {}, ValueError, "text_emb has shape"),
        ((4,), (4,), {}, ValueError, "2-d"),
        ((2, 4, 3), (2, 4, 3), {}, ValueError, "2-d"),
        ((4, 3), (4, 3), {"temperature": 0.0}, ValueError, "temperature"),
        ((4, 3), (4, 3), {"temperature": -0.1}, ValueError, "temperature"),
        ((4, 3), (4, 3), {"temperature": math.nan}, ValueError, "temperature"),
        ((4, 3), (4, 3), {"temperature": math.inf}, ValueError, "temperature"),
        ((4, 3), (4, 3), {"temperature": None}, TypeError, "temperature"),
        ((4, 3), (4, 3), {"reduction": "batchmean"}, ValueError, "reduction"),
    ],
)
def test_clip_bad_arguments(img_shape, txt_shape, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fl.clip_loss(np.ones(img_shape), np.ones(txt_shape), **kwargs)


@pytest.mark.parametrize("temperature", [1e100, 1e160, 1e200, 1e300, 1e308])
def test_clip_loss_huge_temperature(temperature):
    # the normalisation backward scaled by temperature**2 (inf past 1e154: NaN gradients) and
    # formed x̂ . g from rows divided by the temperature (underflow past 1e150: 5% off);
    # found by the fuzzer
    img = np.array([[0.3, -1.2], [1.0, 2.0], [0.1, 0.2]])
    txt = np.array([[0.5, 2.0], [-1.0, 0.3], [2.0, -0.5]])
    loss, (gi, gt) = fl.clip_loss(img, txt, temperature=temperature, return_grad=True)
    want, (wi, wt) = reference.clip_loss(img, txt, temperature=temperature, return_grad=True)
    np.testing.assert_allclose(loss, want, rtol=1e-14)
    for g, w in ((gi, wi), (gt, wt)):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-300 if temperature > 1e300 else 0)


# --------------------------------------------------------------------- grad_out
FLOATS = [np.float32, np.float64]


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_contrastive_grad_out(rng, dt, reduction):
    for shape in ((9, 6), (2, 3, 5), (4,), (3000, 40)):  # (the last: several row blocks)
        x1, x2 = rng.normal(size=shape).astype(dt), rng.normal(size=shape).astype(dt)
        label = rng.integers(0, 2, size=shape[:-1])
        contract.check_tuple_grad_out(fl.contrastive_loss, (x1, x2, label), (0, 1),
                                      margin=1.5, reduction=reduction)


def test_contrastive_grad_out_errors(rng):
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    label = np.array([0, 1, 1, 0, 1])
    f = fl.contrastive_loss
    contract.check_tuple_grad_out_errors(f, (x1, x2, label), (0, 1))
    contract.check_tuple_grad_out_untouched(f, (x1, x2, np.array([0, 1, 2, 0, 1])), (0, 1),
                                            ValueError)  # a label not in {0, 1}
    contract.check_tuple_grad_out_untouched(f, (x1, x2, label), (0, 1), ValueError,
                                            margin=-1.0)


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
def test_triplet_grad_out(rng, dt, swap, p):
    for shape in ((6, 4), (3000, 40)):
        a, pos, neg = (rng.normal(size=shape).astype(dt) for _ in range(3))
        for reduction in REDUCTIONS:
            contract.check_tuple_grad_out(fl.triplet_margin_loss, (a, pos, neg), (0, 1, 2),
                                          p=p, swap=swap, margin=2.0, reduction=reduction)


def test_triplet_grad_out_errors(rng):
    a, pos, neg = (rng.normal(size=(6, 4)) for _ in range(3))
    f = fl.triplet_margin_loss
    contract.check_tuple_grad_out_errors(f, (a, pos, neg), (0, 1, 2))
    contract.check_tuple_grad_out_untouched(f, (a, pos, neg), (0, 1, 2), ValueError, p=0.0)
    contract.check_tuple_grad_out_untouched(f, (a, pos, neg), (0, 1, 2), ValueError,
                                            eps=math.inf)


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_clip_grad_out(rng, dt, normalize, reduction):
    for n in (5, 1, 0):
        img, txt = rng.normal(size=(n, 3)).astype(dt), rng.normal(size=(n, 3)).astype(dt)
        contract.check_tuple_grad_out(fl.clip_loss, (img, txt), (0, 1), temperature=0.5,
                                      normalize=normalize, reduction=reduction)
    other = np.float64 if dt == np.float32 else np.float32  # two dtypes: each its own
    img, txt = rng.normal(size=(5, 3)).astype(dt), rng.normal(size=(5, 3)).astype(other)
    contract.check_tuple_grad_out(fl.clip_loss, (img, txt), (0, 1), normalize=normalize,
                                  reduction=reduction)


def test_clip_grad_out_errors(rng):
    img, txt = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    contract.check_tuple_grad_out_errors(fl.clip_loss, (img, txt), (0, 1))
    contract.check_tuple_grad_out_untouched(fl.clip_loss, (img, txt), (0, 1), ValueError,
                                            temperature=0.0)
    contract.check_tuple_grad_out_untouched(fl.clip_loss, (img, txt[:4]), (0, 1), ValueError)
