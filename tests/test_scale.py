"""fastloss.scale: vocabulary-sharded cross-entropy statistics and the linear cross-entropy.

The merged losses and the concatenated gradient slices are checked against fl.cross_entropy
of the full rows (and the float64 references of fastloss.reference), on a GPT-2 vocabulary cut
into uneven shards.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import _contracts as contract
from conftest import central_diff, non_c_layouts

import fastloss as fl
from fastloss import reference
from fastloss.scale import CrossEntropyStats, MergedCrossEntropy

V = 50257


def shard_bounds(rng, n_classes=V, n_shards=7):
    """Uneven shard boundaries: n_shards random widths (>= 1) summing to n_classes."""
    cuts = np.sort(rng.choice(np.arange(1, n_classes), n_shards - 1, replace=False))
    return [0, *cuts.tolist(), n_classes]


def shards_of(x, bounds, axis=-1):
    idx = [slice(None)] * x.ndim
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx[axis] = slice(a, b)
        yield a, x[tuple(idx)]


def sharded(x, t, bounds, *, axis=-1, softcap=None, ignore_index=-100, **kw):
    """(merged, concatenated gradient slices) of x split at bounds."""
    parts = list(shards_of(x, bounds, axis))
    stats = [fl.cross_entropy_stats(s, t, axis=axis, class_offset=o, softcap=softcap,
                                    ignore_index=ignore_index) for o, s in parts]
    merged = fl.merge_cross_entropy_stats(stats, ignore_index=ignore_index,
                                          **{k: v for k, v in kw.items() if k != "reduction"},
                                          reduction=kw.get("reduction", "none"))
    grad = np.concatenate(
        [fl.cross_entropy_grad_from_stats(s, t, merged, axis=axis, class_offset=o,
                                          softcap=softcap, ignore_index=ignore_index, **kw)
         for o, s in parts], axis=axis)
    return merged, grad


def assert_grad_close(g, ref, dtype, scale=1.0):
    """float64: rtol 1e-12 with an absolute floor of 1e-15 * scale (scale = d loss / d row
    loss: 1, or 1/rows for "mean"): where terms of that size cancel (p_t - 1 at the target,
    p_j - eps/C with label smoothing), an entry's error is relative to the terms (a few ulp of
    scale), not to the small difference. float32: within 1e-6 * scale absolute."""
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-15 * scale, equal_nan=True)
    else:
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-6 * scale, equal_nan=True)


@pytest.fixture(scope="module")
def vocab_rows():
    """(24, 50257) float64 logits of N(0, 3^2) with targets (two ignored, one confident row)
    and 7 uneven shard boundaries."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 3.0, size=(24, V))
    t = rng.integers(0, V, 24)
    t[[3, 11]] = -100
    x[5] = -20.0  # confident row: the target is the maximum by 20
    x[5, t[5]] = 0.0
    return x, t, shard_bounds(rng)


OPTIONS = {
    "plain": {},
    "smoothing": {"label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-3},
    "softcap": {"softcap": 15.0},
    "all": {"label_smoothing": 0.2, "z_loss": 1e-4, "softcap": 30.0},
}


@pytest.mark.parametrize("opts", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sharded_matches_full_rows(vocab_rows, opts, dtype):
    x, t, bounds = vocab_rows
    x = x.astype(dtype)
    full_loss, full_grad = fl.cross_entropy(x, t, reduction="none", return_grad=True, **opts)
    softcap = opts.get("softcap")
    kw = {k: v for k, v in opts.items() if k != "softcap"}
    merged, grad = sharded(x, t, bounds, softcap=softcap, reduction="none", **kw)
    assert isinstance(merged, MergedCrossEntropy) and merged.stats.n_classes == V
    assert merged.loss.dtype == np.float64 and grad.dtype == x.dtype
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(merged.loss, full_loss, rtol=rtol, atol=0)
    assert_grad_close(grad, full_grad, dtype)
    assert merged.loss[3] == 0 and merged.loss[11] == 0 and not grad[[3, 11]].any()
    # the per-row lse: the logsumexp of the (capped) full rows (float32 logits: float32 exps,
    # and capped in float32, as fl.cross_entropy)
    xc = x if softcap is None else softcap * np.tanh(x.astype(np.float64) / softcap)
    np.testing.assert_allclose(merged.lse, fl.logsumexp(xc.astype(np.float64), axis=-1),
                               rtol=1e-13 if dtype == "float64" else 1e-7 if not softcap else 5e-6)
    # reductions ("mean" the gradient's default)
    for reduction in ("mean", "sum"):
        m = fl.merge_cross_entropy_stats(merged.stats, reduction=reduction, **kw)
        ref = fl.cross_entropy(x, t, reduction=reduction, **opts)
        np.testing.assert_allclose(m.loss, ref, rtol=1e-12 if dtype == "float64" else 1e-6)
    _, mean_grad = fl.cross_entropy(x, t, return_grad=True, **opts)
    g = np.concatenate([fl.cross_entropy_grad_from_stats(s, t, merged, class_offset=o,
                                                         softcap=softcap, **kw)
                        for o, s in shards_of(x, bounds)], axis=1)
    assert_grad_close(g, mean_grad, dtype, scale=1 / (len(t) - 2))


def test_confident_row_keeps_its_small_loss(vocab_rows):
    """The target is the maximum by 20: loss ~ (V-1) e^-20 ~ 1e-4, to full relative accuracy;
    and a tiny one (4 classes) of 6.2e-9, where lse - x_t would lose digits."""
    x, t, bounds = vocab_rows
    merged, _ = sharded(x[5:6], t[5:6], bounds)
    np.testing.assert_allclose(merged.loss, fl.cross_entropy(x[5:6], t[5:6], reduction="none"),
                               rtol=1e-14)
    x4 = np.array([[0.0, -20.0, -20.0, -20.0]])
    merged, g = sharded(x4, np.array([0]), [0, 1, 3, 4])
    ref, ref_g = fl.cross_entropy(x4, [0], reduction="none", return_grad=True)
    np.testing.assert_allclose(merged.loss, ref, rtol=1e-14)
    np.testing.assert_allclose(merged.loss, 3 * np.exp(-20.0), rtol=1e-8)
    np.testing.assert_allclose(g, ref_g, rtol=1e-14)  # incl. -(1 - p_t) = -6.2e-9


def test_stats_match_reference(rng):
    x = rng.normal(0, 4, size=(3, 5, 40))  # class axis 1, rows (3, 40)
    t = rng.integers(0, 12, size=(3, 40))
    t[0, :5] = -1
    for axis in (1, -2):
        for softcap in (None, 5.0):
            got = fl.cross_entropy_stats(x, t, axis=axis, class_offset=4, ignore_index=-1,
                                         softcap=softcap)
            ref = reference.cross_entropy_stats(x, t, axis=1, class_offset=4, ignore_index=-1,
                                                softcap=softcap)
            assert isinstance(got, CrossEntropyStats) and got.n_classes == 5
            for k in ("max", "sumexp", "target_logit", "sum_logits"):
                assert getattr(got, k).shape == (3, 40) and getattr(got, k).dtype == np.float64
                np.testing.assert_allclose(getattr(got, k), ref[k], rtol=1e-13, atol=1e-13,
                                           err_msg=k)
            np.testing.assert_array_equal(got.has_target, ref["has_target"])
            np.testing.assert_array_equal(got.target, t)
            assert got.has_target.any() and not got.has_target.all()


def test_merge_matches_reference_and_target_is_a_copy(rng):
    x = rng.normal(0, 2, size=(30, 100))
    t = rng.integers(0, 100, 30)
    t[0] = -100
    bounds = [0, 13, 14, 60, 100]
    ref_stats = [reference.cross_entropy_stats(s, t, class_offset=o)
                 for o, s in shards_of(x, bounds)]
    stats = [fl.cross_entropy_stats(s, t, class_offset=o) for o, s in shards_of(x, bounds)]
    t[:] = 0  # the statistics keep their own copy of the targets
    t = ref_stats[0]["target"]
    np.testing.assert_array_equal(stats[0].target, t)
    for kw in ({}, {"label_smoothing": 0.3, "z_loss": 0.01}):
        for reduction in ("none", "sum", "mean"):
            ref_loss, ref_lse = reference.merge_cross_entropy_stats(ref_stats, reduction=reduction,
                                                                    **kw)
            m = fl.merge_cross_entropy_stats(stats, reduction=reduction, **kw)
            np.testing.assert_allclose(m.loss, ref_loss, rtol=1e-12)
            np.testing.assert_allclose(m.lse, ref_lse, rtol=1e-13)
            full = reference.cross_entropy(x, t, reduction=reduction, **kw)
            np.testing.assert_allclose(m.loss, full, rtol=1e-12)


def test_reduce_is_associative_and_commutative(rng):
    x = rng.normal(0, 5, size=(50, 300))
    x[:10, 100:200] = -np.inf  # whole shard rows masked
    t = rng.integers(0, 300, 50)
    t[[1, 2]] = -100
    a, b, c = (fl.cross_entropy_stats(s, t, class_offset=o)
               for o, s in shards_of(x, [0, 100, 200, 300]))
    red = fl.reduce_cross_entropy_stats
    ab, ba = red(a, b), red(b, a)
    for k in ("max", "sumexp", "target_logit", "has_target", "sum_logits"):
        np.testing.assert_array_equal(getattr(ab, k), getattr(ba, k), err_msg=k)  # exactly
    left, right = red(red(a, b), c), red(a, red(b, c))
    for k in ("max", "target_logit", "has_target"):
        np.testing.assert_array_equal(getattr(left, k), getattr(right, k), err_msg=k)
    for k in ("sumexp", "sum_logits"):
        np.testing.assert_allclose(getattr(left, k), getattr(right, k), rtol=1e-14, err_msg=k)
    assert left.n_classes == right.n_classes == 300
    # a width-0 shard is the identity
    e = fl.cross_entropy_stats(np.zeros((50, 0)), t, class_offset=300)
    assert e.n_classes == 0 and np.all(e.max == -np.inf) and not e.has_target.any()
    for k in ("max", "sumexp", "target_logit", "has_target", "sum_logits"):
        np.testing.assert_array_equal(getattr(red(a, e), k), getattr(a, k), err_msg=k)
    # any order of the shards, any grouping: the same losses (functools.reduce, a tree)
    m1 = fl.merge_cross_entropy_stats([c, a, b], reduction="none").loss
    m2 = fl.merge_cross_entropy_stats(functools.reduce(red, [b, c, a]), reduction="none").loss
    np.testing.assert_allclose(m1, m2, rtol=1e-14)
    np.testing.assert_allclose(m1, fl.cross_entropy(x, t, reduction="none"), rtol=1e-12)


def test_masks_and_huge_logits():
    """-inf masked classes (a whole shard, the target), +-1e30, NaN and +inf rows: as the full
    cross_entropy, row by row."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, size=(9, 40))
    t = rng.integers(0, 40, 9)
    t[:] = 5
    x[0, 20:] = -np.inf             # the two last shards masked
    x[1, 5] = -np.inf               # the target masked: loss +inf
    x[2, :] = -np.inf               # all masked: NaN
    x[3, 30] = 1e30                 # a dominant logit in another shard
    x[4, 5] = 1e30                  # the target dominant: loss 0
    x[5, ::2] = -1e30
    x[6, 12] = np.nan               # NaN: NaN in its row only
    x[7, 33] = np.inf               # +inf: NaN
    x[8, 5] = -1e30                 # the target hugely negative: loss 1e30
    bounds = [0, 10, 20, 40]
    for kw in ({}, {"label_smoothing": 0.1}, {"z_loss": 1e-4}):
        ref, ref_g = fl.cross_entropy(x, t, reduction="none", return_grad=True, **kw)
        merged, g = sharded(x, t, bounds, reduction="none", **kw)
        np.testing.assert_allclose(merged.loss, ref, rtol=1e-12, equal_nan=True)
        assert_grad_close(g, ref_g, "float64")
    assert merged.loss[1] == np.inf and np.isnan(merged.loss[[2, 6, 7]]).all()
    with np.errstate(all="ignore"):
        merged, _ = sharded(x, t, bounds, softcap=10.0)
    ref = fl.cross_entropy(x, t, reduction="none", softcap=10.0)
    np.testing.assert_allclose(merged.loss, ref, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["c", "fortran", "strided", "neg_first", "neg_last",
                                  "transposed"])
def test_layouts_and_in_place(rng, name):
    x = rng.normal(0, 2, size=(70, 90))
    t = rng.integers(0, 90, 70)
    ref, ref_g = fl.cross_entropy(x, t, return_grad=True, label_smoothing=0.1)
    views = dict([("c", x), *non_c_layouts(x)])
    v = views[name]
    bounds = [0, 33, 90]
    stats = [fl.cross_entropy_stats(s, t, class_offset=o) for o, s in shards_of(v, bounds)]
    merged = fl.merge_cross_entropy_stats(stats, label_smoothing=0.1, reduction="mean")
    np.testing.assert_allclose(merged.loss, ref, rtol=1e-13)
    for o, s in shards_of(v, bounds):
        work = s.copy(order="K") if name != "strided" else s
        g = fl.cross_entropy_grad_from_stats(work, t, merged, class_offset=o,
                                             label_smoothing=0.1, grad_out=work)
        assert g is work
        assert_grad_close(g, ref_g[:, o : o + s.shape[1]], "float64", scale=1 / 70)
    # the class axis first (each shard a block of rows of a C-order (classes, rows) array)
    xt = np.ascontiguousarray(x.T)
    stats = [fl.cross_entropy_stats(s, t, axis=0, class_offset=o)
             for o, s in shards_of(xt, bounds, axis=0)]
    m = fl.merge_cross_entropy_stats(stats, label_smoothing=0.1, reduction="mean")
    np.testing.assert_allclose(m.loss, ref, rtol=1e-13)
    g = np.concatenate([fl.cross_entropy_grad_from_stats(s, t, m, axis=0, class_offset=o,
                                                         label_smoothing=0.1)
                        for o, s in shards_of(xt, bounds, axis=0)], axis=0)
    assert_grad_close(g, ref_g.T, "float64", scale=1 / 70)


def test_every_isa_and_16_bit(isa, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = rng.normal(0, 3, size=(17, 2100)).astype(np.float32)  # > one 2048-class block
    t = rng.integers(0, 2100, 17)
    bounds = [0, 700, 2100]
    merged, g = sharded(x, t, bounds, reduction="none", label_smoothing=0.05)
    ref, ref_g = reference.cross_entropy(x, t, reduction="none", label_smoothing=0.05,
                                         return_grad=True)
    np.testing.assert_allclose(merged.loss, ref, rtol=1e-6)
    np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-9)
    for dt in (np.float16, ml_dtypes.bfloat16):
        x16 = x.astype(dt)
        merged, g = sharded(x16, t, bounds, reduction="none")
        ref, ref_g = fl.cross_entropy(x16, t, reduction="none", return_grad=True)
        assert g.dtype == x16.dtype
        np.testing.assert_allclose(merged.loss, ref, rtol=1e-6)
        np.testing.assert_allclose(g.astype(np.float32), ref_g.astype(np.float32), rtol=1e-2,
                                   atol=1e-6)
        s16 = fl.cross_entropy_stats(x16, t)
        s32 = fl.cross_entropy_stats(x16.astype(np.float32), t)  # the same float32 arithmetic
        for k in ("max", "sumexp", "target_logit", "sum_logits"):
            np.testing.assert_array_equal(getattr(s16, k), getattr(s32, k), err_msg=k)


def test_bad_inputs(rng):
    x = rng.normal(size=(4, 10))
    t = np.array([1, 2, 3, 9])
    a = fl.cross_entropy_stats(x[:, :5], t)
    b = fl.cross_entropy_stats(x[:, 5:], t, class_offset=5)
    with pytest.raises(ValueError, match="class_offset must be >= 0"):
        fl.cross_entropy_stats(x, t, class_offset=-1)
    with pytest.raises(TypeError, match="class_offset must be an integer"):
        fl.cross_entropy_stats(x, t, class_offset=1.5)
    with pytest.raises(ValueError, match="target has shape"):
        fl.cross_entropy_stats(x, t[:3])
    with pytest.raises(TypeError, match="integer class indices"):
        fl.cross_entropy_stats(x, t.astype(float))
    with pytest.raises(IndexError, match=r"target\[2\] = -5 is negative"):
        fl.cross_entropy_stats(x, np.array([1, 2, -5, 3]))
    with pytest.raises(ValueError, match="at least one dimension"):
        fl.cross_entropy_stats(np.float64(1.0), 0)
    with pytest.raises(ValueError, match="softcap"):
        fl.cross_entropy_stats(x, t, softcap=-1.0)
    with pytest.raises(TypeError, match="unsupported dtype"):
        fl.cross_entropy_stats(np.array([["a"]]), [0])
    # reduce: shapes, targets, overlap, types
    with pytest.raises(ValueError, match="different shapes"):
        fl.reduce_cross_entropy_stats(a, fl.cross_entropy_stats(x[:3, 5:], t[:3], class_offset=5))
    with pytest.raises(ValueError, match="different targets"):
        fl.reduce_cross_entropy_stats(a, fl.cross_entropy_stats(x[:, 5:], t[::-1], class_offset=5))
    with pytest.raises(ValueError, match="falls in both"):
        fl.reduce_cross_entropy_stats(a, a)
    with pytest.raises(TypeError, match="CrossEntropyStats"):
        fl.reduce_cross_entropy_stats(a, {"max": 1})
    with pytest.raises(ValueError, match="rows' shape"):
        fl.reduce_cross_entropy_stats(a, b._replace(sumexp=b.sumexp[:2]))
    # merge: a target in no shard (past the vocabulary, or a shard missing), empty input
    with pytest.raises(IndexError, match=r"target\[3\] = 9 falls in no shard.*5 classes"):
        fl.merge_cross_entropy_stats(a)
    with pytest.raises(IndexError, match="falls in no shard"):
        fl.merge_cross_entropy_stats([fl.cross_entropy_stats(x, np.array([1, 2, 3, 10]))])
    with pytest.raises(TypeError, match="non-empty list"):
        fl.merge_cross_entropy_stats([])
    with pytest.raises(ValueError, match="reduction"):
        fl.merge_cross_entropy_stats([a, b], reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fl.merge_cross_entropy_stats([a, b], label_smoothing=1.5)
    # gradient: a shard past the vocabulary, other targets or rows, wrong merged
    m = fl.merge_cross_entropy_stats([a, b])
    with pytest.raises(ValueError, match=r"classes \[5, 11\) extend past the 10 classes"):
        fl.cross_entropy_grad_from_stats(np.zeros((4, 6)), t, m, class_offset=5)
    with pytest.raises(ValueError, match="class_offset must be >= 0"):
        fl.cross_entropy_grad_from_stats(x[:, :5], t, m, class_offset=-5)
    with pytest.raises(ValueError, match="target differs"):
        fl.cross_entropy_grad_from_stats(x[:, :5], np.array([1, 2, 3, 4]), m)
    with pytest.raises(ValueError, match="target has shape"):
        fl.cross_entropy_grad_from_stats(x[:3, :5], t, m)
    with pytest.raises(TypeError, match="merged must be"):
        fl.cross_entropy_grad_from_stats(x[:, :5], t, m.lse)
    with pytest.raises(ValueError, match="grad_out has shape"):
        fl.cross_entropy_grad_from_stats(x[:, :5], t, m, grad_out=np.empty((4, 6)))
    # the reduced statistics can stand for the merged result
    g = fl.cross_entropy_grad_from_stats(x[:, :5], t, m.stats)
    np.testing.assert_array_equal(g, fl.cross_entropy_grad_from_stats(x[:, :5], t, m))


# --- linear_cross_entropy ---------------------------------------------------------------------
LINEAR_OPTIONS = {
    "plain": {},
    "bias_ignore": {"bias": True, "ignore": True},
    "smoothing_z": {"label_smoothing": 0.1, "z_loss": 1e-3, "ignore": True},
    "softcap_all": {"bias": True, "label_smoothing": 0.05, "z_loss": 1e-4, "softcap": 8.0},
}


@pytest.mark.parametrize("opts", LINEAR_OPTIONS.values(), ids=LINEAR_OPTIONS.keys())
@pytest.mark.parametrize("chunks", [(128, None), (97, 10), (1000, 16)],
                         ids=["vocab_chunks", "vocab_and_row_chunks", "one_chunk_row_blocks"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_linear_cross_entropy(rng, opts, chunks, dtype, monkeypatch):
    # d_weight accumulates over row blocks in products of at most _DW_BLOCK classes
    monkeypatch.setattr(fl.scale, "_DW_BLOCK", 300)
    N, D, Vs = 37, 16, 1000
    h = rng.normal(size=(N, D)).astype(dtype)
    w = (rng.normal(size=(Vs, D)) * 0.7).astype(dtype)
    t = rng.integers(0, Vs, N)
    opts = dict(opts)
    if opts.pop("ignore", False):
        t[[0, 5, 6]] = -100
    bias = (rng.normal(size=Vs)).astype(dtype) if opts.pop("bias", False) else None
    chunk, rows = chunks
    for reduction in ("mean", "none", "sum"):
        loss, grads = fl.linear_cross_entropy(h, w, t, bias=bias, chunk_size=chunk,
                                              row_chunk_size=rows, reduction=reduction,
                                              return_grad=True, **opts)
        ref_loss, ref_grads = reference.linear_cross_entropy(h, w, t, bias=bias,
                                                             reduction=reduction,
                                                             return_grad=True, **opts)
        assert np.asarray(loss).dtype == dtype
        assert len(grads) == (3 if bias is not None else 2)
        for g, r, inp in zip(grads, ref_grads, (h, w, bias)):
            assert g.shape == inp.shape and g.dtype == inp.dtype
            scale = np.abs(r).max()
            if dtype == "float64":
                np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13 * scale)
            else:
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=2e-6 * scale)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12 if dtype == "float64" else 1e-6)
        only = fl.linear_cross_entropy(h, w, t, bias=bias, chunk_size=chunk,
                                       row_chunk_size=rows, reduction=reduction, **opts)
        np.testing.assert_array_equal(only, loss)
    # against fastloss's own cross_entropy of the materialised logits, in the same dtype
    logits = h @ w.T + (0 if bias is None else bias)
    np.testing.assert_allclose(fl.linear_cross_entropy(h, w, t, bias=bias, chunk_size=chunk,
                                                       row_chunk_size=rows, **opts),
                               fl.cross_entropy(logits, t, **opts),
                               rtol=1e-12 if dtype == "float64" else 1e-6)


def test_linear_cross_entropy_edge_cases_and_errors(rng):
    h, w = rng.normal(size=(5, 4)), rng.normal(size=(30, 4))
    t = np.array([0, 29, 3, -100, 7])
    # every row ignored: mean NaN (as cross_entropy), zero gradients
    loss, (dh, dw) = fl.linear_cross_entropy(h, w, np.full(5, -100), chunk_size=7,
                                             return_grad=True)
    assert np.isnan(loss) and not dh.any() and not dw.any()
    # no rows
    loss, (dh, dw, db) = fl.linear_cross_entropy(np.zeros((0, 4)), w, np.zeros(0, int),
                                                 bias=np.zeros(30), reduction="sum",
                                                 return_grad=True)
    assert loss == 0 and dh.shape == (0, 4) and not dw.any() and not db.any()
    # mixed dtypes compute in float64; 16-bit and integer inputs are accepted
    loss = fl.linear_cross_entropy(h.astype(np.float32), w, t, chunk_size=8)
    assert loss.dtype == np.float64
    np.testing.assert_allclose(loss, fl.cross_entropy(h.astype(np.float32) @ w.T, t), rtol=1e-12)
    loss16, (dh16, dw16) = fl.linear_cross_entropy(h.astype(np.float16), w.astype(np.float16),
                                                   t, chunk_size=8, return_grad=True)
    assert loss16.dtype == np.float32 and dh16.dtype == dw16.dtype == np.float16
    with pytest.raises(ValueError, match="D differ"):
        fl.linear_cross_entropy(h, w[:, :3], t)
    with pytest.raises(ValueError, match=r"hidden must be \(D,\) or \(N, D\)"):
        fl.linear_cross_entropy(h[None], w, t[None])
    with pytest.raises(ValueError, match="needs a batched hidden"):
        fl.linear_cross_entropy(h[0], np.zeros((30, 2, 4)), t[0])
    with pytest.raises(ValueError, match="must not be empty"):
        fl.linear_cross_entropy(h, np.zeros((30, 0, 4)), np.zeros((5, 0), int))
    with pytest.raises(ValueError, match=r"bias must have shape \(30, 2\)"):
        fl.linear_cross_entropy(h, np.zeros((30, 2, 4)), np.zeros((5, 2), int), bias=np.zeros(30))
    with pytest.raises(ValueError, match=r"class_weight must have shape \(30,\)"):
        fl.linear_cross_entropy(h, w, t, class_weight=np.ones(29))
    with pytest.raises(ValueError, match="class probabilities"):
        fl.linear_cross_entropy(h, w, np.zeros((5, 29)))
    with pytest.raises(TypeError, match="boolean"):
        fl.linear_cross_entropy(h, w, t > 0)
    with pytest.raises(ValueError, match="bias must have shape"):
        fl.linear_cross_entropy(h, w, t, bias=np.zeros(29))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        fl.linear_cross_entropy(h, w, t, chunk_size=0)
    with pytest.raises(ValueError, match="row_chunk_size must be >= 1"):
        fl.linear_cross_entropy(h, w, t, row_chunk_size=0)
    with pytest.raises(IndexError, match="out of range"):
        fl.linear_cross_entropy(h, w, np.array([0, 30, 3, 1, 7]))
    with pytest.raises(ValueError, match="target has shape"):
        fl.linear_cross_entropy(h, w, t[:4])
    with pytest.raises(ValueError, match="no classes"):
        fl.linear_cross_entropy(h, w[:0], t)


# torch 2.13's F.linear_cross_entropy cases: class weights, probability targets, a 1-d hidden,
# a multi-dimensional weight (C, d1, ..., dK, D)
TORCH_CASES = {
    "class_weight": dict(shape=(), kind="index", cw=True, ignore=True),
    "class_weight_smoothing": dict(shape=(), kind="index", cw=True, label_smoothing=0.1),
    "probs": dict(shape=(), kind="probs"),
    "probs_weight_smoothing_bias": dict(shape=(), kind="probs", cw=True, bias=True,
                                        label_smoothing=0.2),
    "kdim": dict(shape=(3, 2), kind="index", bias=True, ignore=True),
    "kdim_weight_zloss_softcap": dict(shape=(4,), kind="index", cw=True, z_loss=1e-3,
                                      softcap=4.0),
    "kdim_probs": dict(shape=(2, 3), kind="probs", cw=True, bias=True),
}


def _torch_case(rng, case, N, D, C, dtype=np.float64):
    c = dict(TORCH_CASES[case])
    pos = c.pop("shape")
    h = rng.normal(size=(N, D)).astype(dtype)
    w = (rng.normal(size=(C, *pos, D)) * 0.7).astype(dtype)
    kind = c.pop("kind")
    if kind == "index":
        t = rng.integers(0, C, (N, *pos))
        if c.pop("ignore", False):
            t.reshape(-1)[[0, 3]] = -100
    else:
        t = np.moveaxis(rng.dirichlet(np.ones(C), (N, *pos)), -1, 1).astype(dtype)
    kw = {k: v for k, v in c.items() if k not in ("cw", "bias")}
    if c.get("cw"):
        kw["class_weight"] = rng.uniform(0.5, 2.0, C).astype(dtype)
    if c.get("bias"):
        kw["bias"] = rng.normal(size=(C, *pos)).astype(dtype)
    return h, w, t, kw


@pytest.mark.parametrize("case", TORCH_CASES)
@pytest.mark.parametrize("chunks", [(7, None), (5, 2), (1000, 3)],
                         ids=["vocab_chunks", "vocab_and_row_chunks", "one_chunk_row_blocks"])
def test_linear_cross_entropy_torch_cases_vs_reference(rng, case, chunks):
    h, w, t, kw = _torch_case(rng, case, N=9, D=5, C=11)
    chunk, rows = chunks
    for reduction in ("mean", "sum", "none"):
        loss, grads = fl.linear_cross_entropy(h, w, t, chunk_size=chunk, row_chunk_size=rows,
                                              reduction=reduction, return_grad=True, **kw)
        ref_loss, ref_grads = reference.linear_cross_entropy(h, w, t, reduction=reduction,
                                                             return_grad=True, **kw)
        assert np.shape(loss) == np.shape(ref_loss) == (() if reduction != "none"
                                                        else t.shape if t.dtype.kind == "i"
                                                        else t.shape[:1] + t.shape[2:])
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        inputs = (h, w) + ((kw["bias"],) if "bias" in kw else ())
        assert len(grads) == len(inputs)
        for g, r, inp in zip(grads, ref_grads, inputs):
            assert g.shape == inp.shape and g.dtype == inp.dtype
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13 * np.abs(r).max())


@pytest.mark.parametrize("case", TORCH_CASES)
def test_linear_cross_entropy_torch_cases_finite_differences(rng, case):
    h, w, t, kw = _torch_case(rng, case, N=4, D=3, C=5)
    _, grads = fl.linear_cross_entropy(h, w, t, chunk_size=2, return_grad=True, **kw)
    wrt = [("h", h), ("w", w)] + ([("bias", kw["bias"])] if "bias" in kw else [])
    for (name, x), g in zip(wrt, grads):
        def f(v, name=name):
            args = {"h": h, "w": w, **({"bias": kw["bias"]} if "bias" in kw else {})}
            args[name] = v
            rest = {k: v for k, v in kw.items() if k != "bias"}
            return fl.linear_cross_entropy(args["h"], args["w"], t, bias=args.get("bias"),
                                           chunk_size=2, **rest)
        np.testing.assert_allclose(g, central_diff(f, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_linear_cross_entropy_one_sample(rng, kind):
    # a 1-d hidden (D,) is one sample: a 0-d target (or (C,) probabilities), a 0-d loss with
    # "none", a (D,) gradient; equal to the batch of one
    h, w = rng.normal(size=6), rng.normal(size=(9, 6))
    t = np.array(4) if kind == "index" else rng.dirichlet(np.ones(9))
    cw = rng.uniform(0.5, 2.0, 9)
    for reduction in ("mean", "sum", "none"):
        loss, (dh, dw) = fl.linear_cross_entropy(h, w, t, class_weight=cw, chunk_size=4,
                                                 reduction=reduction, return_grad=True)
        batch, (bh, bw) = fl.linear_cross_entropy(h[None], w, t[None], class_weight=cw,
                                                  chunk_size=4, reduction=reduction,
                                                  return_grad=True)
        assert np.shape(loss) == () and dh.shape == (6,)
        np.testing.assert_allclose(loss, np.reshape(batch, ()), rtol=1e-14)
        np.testing.assert_allclose(dh, bh[0], rtol=1e-14)
        np.testing.assert_allclose(dw, bw, rtol=1e-14)
        ref = reference.linear_cross_entropy(h, w, t, class_weight=cw, reduction=reduction)
        np.testing.assert_allclose(loss, ref, rtol=1e-12)


def test_linear_cross_entropy_kdim_is_cross_entropy_on_axis_1(rng):
    # logits[n, c, k] = hidden[n] . weight[c, k] + bias[c, k]: fastloss.cross_entropy on axis 1
    h, w, b = rng.normal(size=(5, 4)), rng.normal(size=(6, 3, 4)), rng.normal(size=(6, 3))
    t = rng.integers(0, 6, (5, 3))
    logits = np.einsum("nd,ckd->nck", h, w) + b
    for reduction in ("mean", "none"):
        np.testing.assert_allclose(
            fl.linear_cross_entropy(h, w, t, bias=b, reduction=reduction),
            fl.cross_entropy(logits, t, axis=1, reduction=reduction), rtol=1e-13)


def test_linear_cross_entropy_weighted_mean_and_probs_denominators(rng):
    # "mean": sum_i w[t_i] l_i / sum_i w[t_i] with class weights (ignored rows out of both),
    # and the number of rows for probability targets
    h, w = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    t, cw = np.array([1, -100, 4, 1]), np.array([0.5, 2.0, 1.0, 1.0, 3.0])
    per = fl.linear_cross_entropy(h, w, t, class_weight=cw, reduction="none", chunk_size=2)
    logits = h @ w.T
    lse = np.log(np.exp(logits).sum(axis=1))
    want = np.array([cw[1] * (lse[0] - logits[0, 1]), 0.0, cw[4] * (lse[2] - logits[2, 4]),
                     cw[1] * (lse[3] - logits[3, 1])])
    np.testing.assert_allclose(per, want, rtol=1e-13)
    np.testing.assert_allclose(fl.linear_cross_entropy(h, w, t, class_weight=cw),
                               want.sum() / (cw[1] + cw[4] + cw[1]), rtol=1e-13)
    p = rng.dirichlet(np.ones(5), 4)
    np.testing.assert_allclose(fl.linear_cross_entropy(h, w, p),
                               np.sum(-(p * (logits - lse[:, None]))) / 4, rtol=1e-13)


@pytest.mark.parametrize("case", TORCH_CASES)
def test_linear_cross_entropy_torch_cases_vs_torch(rng, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip(f"torch {torch.__version__} has no F.linear_cross_entropy")
    h, w, t, kw = _torch_case(rng, case, N=6, D=4, C=7)
    if "z_loss" in kw or "softcap" in kw:
        kw = {k: v for k, v in kw.items() if k not in ("z_loss", "softcap")}  # not in torch
    th, tw = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(kw["bias"], requires_grad=True) if "bias" in kw else None
    cw = torch.tensor(kw["class_weight"]) if "class_weight" in kw else None
    for reduction in ("mean", "none"):
        out = F.linear_cross_entropy(th, tw, torch.tensor(t), linear_bias=tb, weight=cw,
                                     reduction=reduction,
                                     label_smoothing=kw.get("label_smoothing", 0.0))
        grads_t = torch.autograd.grad(out.sum(), [th, tw] + ([tb] if tb is not None else []))
        loss, grads = fl.linear_cross_entropy(h, w, t, chunk_size=3, reduction=reduction,
                                              return_grad=True, **kw)
        np.testing.assert_allclose(loss, out.detach().numpy(), rtol=1e-12)
        for g, gt in zip(grads, grads_t):
            np.testing.assert_allclose(g, gt.numpy(), rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------- grad_out
def _lce(h, w, t, b=None, **kw):
    """linear_cross_entropy with the bias positional (the in-place checks copy it too)."""
    return fl.linear_cross_entropy(h, w, t, bias=b, **kw)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_grad_out(rng, dt, reduction):
    N, D, V = 6, 4, 11
    h, w = rng.normal(size=(N, D)).astype(dt), rng.normal(size=(V, D)).astype(dt)
    b = rng.normal(size=V).astype(dt)
    t = rng.integers(0, V, size=N)
    t[2] = -100
    for kw in ({}, {"chunk_size": 4}, {"chunk_size": 4, "row_chunk_size": 2},
               {"row_chunk_size": 4, "class_weight": rng.uniform(0.5, 2, size=V)},
               {"chunk_size": 3, "z_loss": 1e-3, "label_smoothing": 0.1}):
        contract.check_tuple_grad_out(fl.linear_cross_entropy, (h, w, t), (0, 1),
                                      reduction=reduction, **kw)
        contract.check_tuple_grad_out(_lce, (h, w, t, b), (0, 1, 3), reduction=reduction, **kw)
    # one sample (1-d hidden), a K-dimensional weight, probabilities, two dtypes
    contract.check_tuple_grad_out(_lce, (h[0], w, np.array(3), b), (0, 1, 3),
                                  reduction=reduction)
    w3, b3 = rng.normal(size=(5, 2, D)).astype(dt), rng.normal(size=(5, 2)).astype(dt)
    contract.check_tuple_grad_out(_lce, (h, w3, rng.integers(0, 5, size=(N, 2)), b3),
                                  (0, 1, 3), reduction=reduction, row_chunk_size=2)
    probs = rng.dirichlet(np.ones(V), size=N).astype(dt)
    contract.check_tuple_grad_out(fl.linear_cross_entropy, (h, w, probs), (0, 1),
                                  reduction=reduction)
    other = np.float64 if dt == np.float32 else np.float32
    contract.check_tuple_grad_out(_lce, (h, w.astype(other), t, b), (0, 1, 3),
                                  reduction=reduction, chunk_size=4)


def test_linear_cross_entropy_grad_out_layouts_and_errors(rng):
    N, D, V = 6, 4, 11
    h, w, b = rng.normal(size=(N, D)), rng.normal(size=(V, D)), rng.normal(size=V)
    t = rng.integers(0, V, size=N)
    want_loss, want = fl.linear_cross_entropy(h, w, t, bias=b, chunk_size=4, return_grad=True)
    go = (np.zeros((N, D), order="F"), np.zeros((V, 2 * D))[:, ::2], np.zeros(2 * V)[::2])
    loss, got = fl.linear_cross_entropy(h, w, t, bias=b, chunk_size=4, return_grad=True,
                                        grad_out=go)
    assert all(g is u for g, u in zip(got, go))
    for g, u in zip(want, go):
        np.testing.assert_array_equal(u, g)
    contract.check_tuple_grad_out_errors(fl.linear_cross_entropy, (h, w, t), (0, 1))
    contract.check_tuple_grad_out_errors(_lce, (h, w, t, b), (0, 1, 3))
    with pytest.raises(ValueError, match="3 entries"):  # with a bias: three gradients
        fl.linear_cross_entropy(h, w, t, bias=b, return_grad=True, grad_out=(None, None))
    bad = t.copy()
    bad[4] = V  # a class index out of range
    contract.check_tuple_grad_out_untouched(_lce, (h, w, bad, b), (0, 1, 3), IndexError)
    contract.check_tuple_grad_out_untouched(_lce, (h, w, t, b), (0, 1, 3), ValueError,
                                            chunk_size=0)
    contract.check_tuple_grad_out_untouched(_lce, (h, w, t, b), (0, 1, 3), ValueError,
                                            label_smoothing=2.0)
