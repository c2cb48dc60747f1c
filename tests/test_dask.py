"""fastloss.dask: the losses on Dask arrays equal the eager fastloss results, on the
synchronous scheduler and on a real multi-process dask.distributed cluster."""

from __future__ import annotations

import numpy as np
import pytest

dask = pytest.importorskip("dask", reason="dask not installed (pip install 'fastloss[dask]')")
da = pytest.importorskip("dask.array", reason="dask.array not installed (pip install 'fastloss[dask]')")

import fastloss as fl
import fastloss.dask as fld

# These tests broadcast target against input on purpose; the UserWarning that gives (as
# PyTorch's) is tested in test_fidelity.py.
pytestmark = pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")

V = 50257  # GPT-2's vocabulary
UNEVEN = (7000, 13, 20000, 1, 12243, 11000)  # uneven class chunks of V


@pytest.fixture
def sync():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(7)
    x = (3.0 * rng.standard_normal((6, V))).astype(np.float64)
    t = rng.integers(0, V, size=6)
    t[1] = -100
    t[3] = int(np.argmax(x[3]))  # a confident row: target = maximum
    t[4] = V - 1  # the last class
    return x, t


def _check(lazy, eager, rtol):
    assert isinstance(lazy, da.Array)
    got = lazy.compute()
    assert np.shape(got) == np.shape(eager)
    assert np.asarray(got).dtype == np.asarray(eager).dtype
    np.testing.assert_allclose(got, eager, rtol=rtol, atol=0)


OPTS = [{}, {"label_smoothing": 0.1}, {"z_loss": 1e-3}, {"softcap": 7.5},
        {"label_smoothing": 0.2, "z_loss": 1e-4, "softcap": 10.0, "ignore_index": 5}]


@pytest.mark.parametrize("chunks", [(6, V), (2, V), (6, UNEVEN), (4, UNEVEN), (3, 25129)],
                         ids=["one", "rows", "classes-uneven", "both-uneven", "classes-even"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_big_vocabulary(sync, big, chunks, reduction):
    x, t = big
    X = da.from_array(x, chunks=chunks)
    for kw in OPTS:
        tt = np.where(t == -100, kw.get("ignore_index", -100), t)
        _check(fld.cross_entropy(X, tt, reduction=reduction, **kw),
               fl.cross_entropy(x, tt, reduction=reduction, **kw), 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", [(2, 3, 40), (3, 2, (5, 17, 18)), (1, 1, 1)])
def test_cross_entropy_nd_dtypes(sync, dtype, chunks):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 40)).astype(dtype)
    t = rng.integers(0, 40, size=(4, 3))
    t[0, 1] = -100
    T = da.from_array(t, chunks=(3, 1))  # a target chunked differently: rechunked to the rows
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for red in ("none", "mean", "sum"):
        _check(fld.cross_entropy(da.from_array(x, chunks=chunks), T, reduction=red,
                                 label_smoothing=0.05),
               fl.cross_entropy(x, t, reduction=red, label_smoothing=0.05), rtol)


def test_cross_entropy_edge_cases(sync):
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    # every row ignored: mean NaN, sum 0 (as eager)
    t = np.array([-100, -100])
    for ch in ((1, 3), (1, 1)):
        X = da.from_array(x, chunks=ch)
        assert np.isnan(fld.cross_entropy(X, t).compute())
        assert fld.cross_entropy(X, t, reduction="sum").compute() == 0.0
    # a single row (1-d logits, 0-d target)
    _check(fld.cross_entropy(da.from_array(x[0], chunks=2), np.int64(2)),
           fl.cross_entropy(x[0], np.int64(2)), 1e-13)
    # a target past the vocabulary: IndexError at compute()
    for ch in ((1, 3), (1, 2)):
        lazy = fld.cross_entropy(da.from_array(x, chunks=ch), np.array([0, 3]))
        with pytest.raises(IndexError):
            lazy.compute()


def test_cross_entropy_argument_errors():
    X = da.zeros((4, 5), chunks=2)
    with pytest.raises(ValueError, match="reduction"):
        fld.cross_entropy(X, np.zeros(4, int), reduction="avg")
    with pytest.raises(ValueError):
        fld.cross_entropy(X, np.zeros(4, int), label_smoothing=2.0)
    with pytest.raises(ValueError):
        fld.cross_entropy(X, np.zeros(4, int), softcap=-1.0)
    with pytest.raises(ValueError, match="shape"):
        fld.cross_entropy(X, np.zeros(5, int))
    with pytest.raises(TypeError, match="integer"):
        fld.cross_entropy(X, np.zeros(4))
    with pytest.raises(TypeError):
        fld.perplexity(X, np.zeros(4, int), reduction="sum")


@pytest.mark.parametrize("chunks", [(6, V), (6, UNEVEN), (2, UNEVEN)])
def test_perplexity(sync, big, chunks):
    x, t = big
    X = da.from_array(x, chunks=chunks)
    _check(fld.perplexity(X, t), fl.perplexity(x, t), 1e-12)
    _check(fld.perplexity(X, t, label_smoothing=0.1, softcap=5.0),
           fl.perplexity(x, t, label_smoothing=0.1, softcap=5.0), 1e-12)


def _targets(rng, shape):
    return {
        "real": rng.standard_normal(shape),
        "prob": rng.uniform(0, 1, shape),
        "label": (rng.uniform(size=shape) > 0.5).astype(np.float64),
        "sign": np.where(rng.uniform(size=shape) > 0.5, 1.0, -1.0),
    }


POINTWISE = [
    ("mse_loss", "real", "real", {}),
    ("l1_loss", "real", "real", {}),
    ("huber_loss", "real", "real", {"delta": 0.7}),
    ("smooth_l1_loss", "real", "real", {"beta": 0.3}),
    ("binary_cross_entropy_with_logits", "real", "prob", {}),
    ("binary_cross_entropy", "prob", "label", {}),
    ("sigmoid_focal_loss", "real", "label", {"alpha": 0.3, "gamma": 1.5}),
    ("hinge_loss", "real", "sign", {"margin": 0.5}),
    ("hinge_loss", "real", "label", {"squared": True}),
    ("poisson_nll_loss", "real", "prob", {"full": True}),
    ("hinge_embedding_loss", "real", "sign", {"margin": 0.5}),
    ("soft_margin_loss", "real", "sign", {}),
    ("log_cosh_loss", "real", "real", {}),
]


@pytest.mark.parametrize("name,xkind,ykind,kw", POINTWISE,
                         ids=[f"{p[0]}-{p[2]}" for p in POINTWISE])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise(sync, name, xkind, ykind, kw, dtype):
    rng = np.random.default_rng(3)
    shape = (10, 7)
    d = _targets(rng, shape)
    x, y = d[xkind].astype(dtype), d[ykind].astype(dtype)
    lazy_fn, eager_fn = getattr(fld, name), getattr(fl, name)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for chunks in ((10, 7), (3, 4), (1, 7)):
        X, Y = da.from_array(x, chunks=chunks), da.from_array(y, chunks=(5, 2))
        for red in ("none", "mean", "sum"):
            _check(lazy_fn(X, Y, reduction=red, **kw), eager_fn(x, y, reduction=red, **kw), rtol)


def test_pointwise_broadcast_and_weights(sync):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((8, 5)), rng.uniform(size=(8, 5))
    w, pw = rng.uniform(size=5), rng.uniform(1, 3, size=(1, 5))
    X = da.from_array(x, chunks=(3, 2))
    for red in ("none", "mean", "sum"):
        _check(fld.mse_loss(X, y[0], weight=w, reduction=red),
               fl.mse_loss(x, y[0], weight=w, reduction=red), 1e-12)
        _check(fld.binary_cross_entropy_with_logits(X, y, weight=da.from_array(w, chunks=2),
                                                    pos_weight=pw, reduction=red),
               fl.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw,
                                                   reduction=red), 1e-12)
        # the input broadcast along the target (the target's chunks are used)
        _check(fld.l1_loss(x[0], da.from_array(y, chunks=(2, 5)), reduction=red),
               fl.l1_loss(x[0], y, reduction=red), 1e-12)


def test_pointwise_errors(sync):
    X = da.from_array(np.array([0.5, 2.0, 0.1]), chunks=1)
    with pytest.raises(ValueError, match="reduction"):
        fld.mse_loss(X, X, reduction="avg")
    with pytest.raises(ValueError):
        fld.huber_loss(X, X, delta=0.0)
    with pytest.raises(ValueError, match="broadcast"):
        fld.mse_loss(X, np.zeros(4))
    lazy = fld.binary_cross_entropy(X, np.ones(3))  # 2.0 is not a probability
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lazy.compute()
    # empty: mean NaN, sum 0 (as eager)
    E = da.zeros((0,), chunks=1)
    assert np.isnan(fld.mse_loss(E, E).compute())
    assert fld.mse_loss(E, E, reduction="sum").compute() == 0.0



def test_three_operand_pointwise(sync):
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    sign = np.where(rng.uniform(size=(9, 4)) > 0.5, 1.0, -1.0)
    var = rng.uniform(0.2, 2.0, (9, 4))
    X1 = da.from_array(x1, chunks=(4, 3))
    for red in ("none", "mean", "sum"):
        _check(fld.margin_ranking_loss(X1, x2, da.from_array(sign, chunks=2), margin=0.3,
                                       reduction=red),
               fl.margin_ranking_loss(x1, x2, sign, margin=0.3, reduction=red), 1e-12)
        for v in (var, var[:, :1], var[:, 0]):  # torch's shapes of var (the last: per sample)
            _check(fld.gaussian_nll_loss(X1, x2, v, full=True, reduction=red),
                   fl.gaussian_nll_loss(x1, x2, v, full=True, reduction=red), 1e-12)
    with pytest.raises(ValueError, match="var"):  # a negative variance, at compute()
        fld.gaussian_nll_loss(X1, x2, -var).compute()


def _rowwise_cases(rng):
    s = rng.standard_normal((2, 9, 5)) * 3
    idx = rng.integers(0, 5, (2, 9))
    dist = rng.dirichlet(np.ones(5), (2, 9))
    labels = rng.integers(0, 3, (2, 9, 5)).astype(np.float64)
    where = rng.uniform(size=(2, 9, 5)) > 0.3
    where[0, 2] = False  # a list without items
    ml = np.full((2, 9, 5), -1)
    ml[..., 0], ml[..., 1] = idx, (idx + 2) % 5
    bits = (rng.uniform(size=(2, 9, 5)) > 0.5).astype(np.float64)
    sign = np.where(rng.uniform(size=(2, 9)) > 0.5, 1, -1)
    return [
        ("multiclass_hinge_loss", (s, idx), {"margin": 0.5}),
        ("multiclass_hinge_loss", (np.moveaxis(s, 2, 0), idx), {"axis": 0}),
        ("multiclass_perceptron_loss", (s, idx), {}),
        ("sparsemax_loss", (s, idx), {}),
        ("sparsemax_loss", (s, dist), {}),
        ("kl_div_with_logits", (s, s[::-1]), {"temperature": 2.0}),
        ("jensen_shannon_with_logits", (s, s[::-1]), {"beta": 0.3, "temperature": 1.5}),
        ("generalized_kl_div", (s / 3, dist), {}),
        ("generalized_kl_div", (np.moveaxis(s, 2, 1) / 3, np.moveaxis(dist, 2, 1)), {"axis": 1}),
        ("multilabel_soft_margin_loss", (s, bits), {}),
        ("multilabel_soft_margin_loss", (s, bits), {"weight": rng.uniform(size=5)}),
        ("multilabel_margin_loss", (s[0], ml[0]), {}),
        ("cosine_embedding_loss", (s, s[::-1], sign), {"margin": 0.2}),
        ("ranking_softmax_loss", (s, labels), {}),
        ("ranking_softmax_loss", (s, labels), {"where": where}),
    ]


@pytest.mark.parametrize("case", range(15))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rowwise(sync, case, dtype):
    rng = np.random.default_rng(6)
    name, ops, kw = _rowwise_cases(rng)[case]
    x = ops[0].astype(dtype)
    rest = list(ops[1:])
    ax = kw.get("axis", -1) % x.ndim
    # rows chunked unevenly; the row axis is cut too (the lazy function gathers it)
    chunks = tuple(3 if i != ax else 2 for i in range(x.ndim))
    X = da.from_array(x, chunks=chunks)
    reds = ("none", "mean", "sum") + (("batchmean",) if "logits" in name else ())
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for red in reds:
        lazy = getattr(fld, name)(X, *rest, reduction=red, **kw)
        eager = getattr(fl, name)(x, *rest, reduction=red, **kw)
        _check(lazy, eager, rtol)


def test_rowwise_errors(sync):
    X = da.from_array(np.zeros((4, 3)), chunks=2)
    with pytest.raises(ValueError, match="reduction"):
        fld.multiclass_hinge_loss(X, np.zeros(4, int), reduction="batchmean")
    with pytest.raises(ValueError, match="axis"):
        fld.sparsemax_loss(X, np.zeros(4, int), axis=2)
    with pytest.raises(ValueError, match="broadcast"):
        fld.jensen_shannon_with_logits(X, np.zeros((4, 4)))
    lazy = fld.multiclass_hinge_loss(X, np.array([0, 1, 3, 0]))  # class 3 of 3: at compute()
    with pytest.raises((ValueError, IndexError)):
        lazy.compute()
    empty = fld.ranking_softmax_loss(X, np.zeros((4, 3)), where=np.zeros((4, 3), bool))
    assert empty.compute() == 0.0  # no list has an item: 0, as eager and optax


def test_lazy_until_compute():
    calls = []
    x = da.from_array(np.zeros((4, 6)), chunks=(2, 3))
    spy = x.map_blocks(lambda b: (calls.append(1) if b.size else None) or b, dtype=x.dtype)
    out = fld.cross_entropy(spy, np.zeros(4, int))
    assert not calls and isinstance(out, da.Array) and out.shape == ()
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_allclose(out.compute(), np.log(6.0), rtol=1e-14)
    assert calls


def test_threaded_scheduler(big):
    x, t = big
    with dask.config.set(scheduler="threads"):
        _check(fld.cross_entropy(da.from_array(x, chunks=(2, UNEVEN)), t,
                                 label_smoothing=0.1), fl.cross_entropy(x, t, label_smoothing=0.1),
               1e-12)


# --- a real multi-process cluster -----------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip(
        "distributed", reason="distributed not installed (pip install 'fastloss[dask]')")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_distributed_cross_entropy(client, big):
    x, t = big
    kw = {"label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 20.0}
    for chunks in ((6, UNEVEN), (2, UNEVEN), (2, V)):  # classes chunked, both, rows chunked
        X = da.from_array(x, chunks=chunks)
        lazy = fld.cross_entropy(X, da.from_array(t, chunks=3), **kw)
        got = client.compute(lazy).result()
        np.testing.assert_allclose(got, fl.cross_entropy(x, t, **kw), rtol=1e-12)
        rows = client.compute(fld.cross_entropy(X, t, reduction="none")).result()
        np.testing.assert_allclose(rows, fl.cross_entropy(x, t, reduction="none"), rtol=1e-12)
    got = fld.perplexity(da.from_array(x, chunks=(3, UNEVEN)), t).compute()  # default client
    np.testing.assert_allclose(got, fl.perplexity(x, t), rtol=1e-12)


def test_distributed_mse(client):
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((200, 30)), rng.standard_normal((200, 30))
    X, Y = da.from_array(x, chunks=(50, 7)), da.from_array(y, chunks=(50, 7))
    for red in ("mean", "sum", "none"):
        got = client.compute(fld.mse_loss(X, Y, reduction=red)).result()
        np.testing.assert_allclose(got, fl.mse_loss(x, y, reduction=red), rtol=1e-12)
