"""Reliability: concurrent calls of different losses, thread-count changes during calls,
SIGINT during a C++ call, memory growth over repeated calls (success and error paths),
inputs of more than 2**31 elements, and the grad_out contract on argument errors.

The large real allocation runs only with ``FASTLOSS_BIG_TESTS=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import scipy.special as sp
from conftest import read_only

import fastloss as fl

BIG = os.environ.get("FASTLOSS_BIG_TESTS") == "1"


# --------------------------------------------------------------------------- helpers


def _flatten(res):
    """Every array in a result (scalars, tuples, named tuples) as a flat list."""
    out = []
    if isinstance(res, tuple):  # also CrossEntropyStats / MergedCrossEntropy (named tuples)
        for r in res:
            out.extend(_flatten(r))
    elif isinstance(res, (np.ndarray, np.generic, float, int)):
        out.append(np.asarray(res))
    return out


def _assert_same(a, b):
    fa, fb = _flatten(a), _flatten(b)
    assert len(fa) == len(fb)
    for u, v in zip(fa, fb):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(u, v)


def _shared_inputs(n=96, c=600, seed=11):
    """Read-only inputs shared by all threads."""
    rng = np.random.default_rng(seed)
    d = {}
    d["x"] = read_only((2.0 * rng.standard_normal((n, c))).astype(np.float32))
    d["x64"] = read_only(rng.standard_normal((n, c)))
    d["x2"] = read_only((2.0 * rng.standard_normal((n, c))).astype(np.float32))
    t = rng.integers(0, c, size=n)
    t[::13] = -100
    d["t"] = read_only(t)
    d["t_valid"] = read_only(rng.integers(0, c, size=n))
    d["y01"] = read_only(rng.random((n, c)).astype(np.float32))
    d["y"] = read_only(rng.standard_normal((n, c)))
    T, N, C, S = 40, 8, 12, 10
    lp = rng.standard_normal((T, N, C))
    d["lp"] = read_only(lp - sp.logsumexp(lp, axis=2, keepdims=True))
    d["ctc_t"] = read_only(rng.integers(1, C, size=(N, S)))
    d["ctc_il"] = read_only(np.full(N, T))
    d["ctc_tl"] = read_only(rng.integers(1, S + 1, size=N))
    return d


def _work(d):
    """One call of many different losses (with gradients where there are)."""
    x, t = d["x"], d["t"]
    return {
        "ce": fl.cross_entropy(x, t, return_grad=True, label_smoothing=0.05, z_loss=1e-4),
        "ce_none": fl.cross_entropy(x, t, reduction="none", softcap=20.0),
        "softmax": fl.softmax(x, axis=-1),
        "log_softmax": fl.log_softmax(d["x64"], axis=0),
        "lse": fl.logsumexp(x, axis=1),
        "mse": fl.mse_loss(d["x64"], d["y"], return_grad=True),
        "huber": fl.huber_loss(d["x64"], d["y"], return_grad=True, reduction="sum"),
        "bcel": fl.binary_cross_entropy_with_logits(x, d["y01"], return_grad=True),
        "kld": fl.kl_div_with_logits(x, d["x2"], temperature=2.0, return_grad=True),
        "ctc": fl.ctc_loss(d["lp"], d["ctc_t"], d["ctc_il"], d["ctc_tl"], return_grad=True),
        "mm": fl.multi_margin_loss(d["x64"], d["t_valid"], return_grad=True),
        "stats": fl.cross_entropy_stats(x, d["t_valid"], class_offset=0),
        "merged": fl.merge_cross_entropy_stats(fl.cross_entropy_stats(x, d["t_valid"])),
        "sfl": fl.softmax_focal_loss(x, t, return_grad=True),
    }


# --------------------------------------------------------------------------- concurrency


def test_eight_threads_different_losses_bit_identical(restore_threads):
    fl.set_num_threads(2)
    d = _shared_inputs()
    names = list(_work(d))
    serial = _work(d)
    n_threads, iters = 8, 12
    barrier = threading.Barrier(n_threads)
    errors = []

    def run(tid):
        try:
            barrier.wait()
            for i in range(iters):
                # each thread calls the losses in a different order, so that different
                # kernels really run at the same time
                shift = (tid + i) % len(names)
                for k in names[shift:] + names[:shift]:
                    _assert_same(_work_one(d, k), serial[k])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((tid, repr(e)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for k in ("x", "t", "y01", "lp"):
        assert not d[k].flags.writeable  # still read-only, and still usable


def _work_one(d, key):
    """Only the loss ``key`` of :func:`_work`."""
    x, t = d["x"], d["t"]
    calls = {
        "ce": lambda: fl.cross_entropy(x, t, return_grad=True, label_smoothing=0.05, z_loss=1e-4),
        "ce_none": lambda: fl.cross_entropy(x, t, reduction="none", softcap=20.0),
        "softmax": lambda: fl.softmax(x, axis=-1),
        "log_softmax": lambda: fl.log_softmax(d["x64"], axis=0),
        "lse": lambda: fl.logsumexp(x, axis=1),
        "mse": lambda: fl.mse_loss(d["x64"], d["y"], return_grad=True),
        "huber": lambda: fl.huber_loss(d["x64"], d["y"], return_grad=True, reduction="sum"),
        "bcel": lambda: fl.binary_cross_entropy_with_logits(x, d["y01"], return_grad=True),
        "kld": lambda: fl.kl_div_with_logits(x, d["x2"], temperature=2.0, return_grad=True),
        "ctc": lambda: fl.ctc_loss(d["lp"], d["ctc_t"], d["ctc_il"], d["ctc_tl"],
                                   return_grad=True),
        "mm": lambda: fl.multi_margin_loss(d["x64"], d["t_valid"], return_grad=True),
        "stats": lambda: fl.cross_entropy_stats(x, d["t_valid"], class_offset=0),
        "merged": lambda: fl.merge_cross_entropy_stats(fl.cross_entropy_stats(x, d["t_valid"])),
        "sfl": lambda: fl.softmax_focal_loss(x, t, return_grad=True),
    }
    return calls[key]()


def test_calls_while_another_thread_flips_num_threads(restore_threads):
    # inputs large enough that the kernels really split the work over threads
    d = _shared_inputs(n=512, c=2048, seed=3)
    results = {}
    for n in (1, 2):
        fl.set_num_threads(n)
        results[n] = _work(d)
    stop = threading.Event()
    errors = []
    flips = [0]

    def flipper():
        n = 1
        while not stop.is_set():
            n = 3 - n
            fl.set_num_threads(n)
            flips[0] += 1
            time.sleep(0.0005)

    def worker():
        try:
            for _ in range(3):
                got = _work(d)
                for k, v in got.items():
                    # a call sees either thread count; either way the result is exactly
                    # that of a serial call with that count
                    try:
                        _assert_same(v, results[1][k])
                    except AssertionError:
                        _assert_same(v, results[2][k])
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    fl_thread = threading.Thread(target=flipper)
    fl_thread.start()
    workers = [threading.Thread(target=worker) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        stop.set()
        fl_thread.join()
    assert not errors, errors
    assert flips[0] > 10
    assert fl.get_num_threads() in (1, 2)


_SIGINT_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    import numpy as np
    import fastloss as fl

    # (the usual handler and the signal unblocked, whatever this process inherited: Python
    # leaves SIGINT ignored when it starts with it ignored, and a blocked signal stays
    # blocked across exec)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    fl.set_num_threads(2)
    rng = np.random.default_rng(0)
    # a small check whose result is known before the interruption
    xs = rng.standard_normal((64, 100)).astype(np.float32)
    ts = rng.integers(0, 100, 64)
    want_small = fl.cross_entropy(xs, ts, return_grad=True)
    # a long call (seconds) with little memory: logits are never materialized
    h = rng.standard_normal((2048, 512)).astype(np.float32)
    w = rng.standard_normal((32000, 512)).astype(np.float32)
    t = rng.integers(0, 32000, 2048)
    hs, ws, tsmall = h[:64], w[:300], t[:64] % 300
    want_lce = fl.linear_cross_entropy(hs, ws, tsmall, return_grad=True)
    print("start", flush=True)
    finished = False
    try:
        fl.linear_cross_entropy(h, w, t, return_grad=True)
        finished = True
        time.sleep(2)  # a KeyboardInterrupt pending after the call is raised here
        print("no-interrupt", flush=True)
    except KeyboardInterrupt:
        print("interrupted finished=%s" % finished, flush=True)
    # fresh calls in the same process: state not corrupted
    got = fl.cross_entropy(xs, ts, return_grad=True)
    assert got[0] == want_small[0]
    assert np.array_equal(got[1], want_small[1])
    got = fl.linear_cross_entropy(hs, ws, tsmall, return_grad=True)
    assert got[0] == want_lce[0]
    assert all(np.array_equal(a, b) for a, b in zip(got[1], want_lce[1]))
    assert fl.get_num_threads() == 2
    print("ok", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_cpp_call_then_state_is_intact():
    import signal

    p = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "start", (line, p.stderr.read())
        time.sleep(0.7)  # well inside the call of about 3 s
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = out.split()
    # either the call finished and KeyboardInterrupt came after it (or it was cut short
    # cleanly): in both cases the process goes on and its later results are right
    assert p.returncode == 0, (out, err)
    assert "interrupted" in out, (out, err)
    assert lines[-1] == "ok", (out, err)


# --------------------------------------------------------------------------- memory


def _status_kb(field):
    """A memory figure of this process from /proc/self/status, in kB (VmRSS: resident now;
    VmHWM: the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def _rss_kb():
    return _status_kb("VmRSS")


def _hwm_kb():
    return _status_kb("VmHWM")


def _memory_calls():
    """(name, callable, expected exception or None) covering every public function."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 7))
    x32 = x.astype(np.float32)
    y = rng.standard_normal((8, 7))
    p = rng.random((8, 7))
    t = rng.integers(0, 7, 8)
    bad_t = t.copy()
    bad_t[3] = 7
    nan_x = x.copy()
    nan_x[2, 3] = np.nan
    lbl = rng.integers(0, 2, 8).astype(np.float64)
    pm = np.where(rng.random((8, 7)) < 0.5, -1.0, 1.0)
    T, N, C = 12, 3, 5
    lp = rng.standard_normal((T, N, C))
    lp -= sp.logsumexp(lp, axis=2, keepdims=True)
    ctc_t = rng.integers(1, C, (N, 4))
    il, tl = np.full(N, T), np.full(N, 4)
    stats = fl.cross_entropy_stats(x, t)
    merged = fl.merge_cross_entropy_stats(stats)
    s1 = fl.cross_entropy_stats(x[:, :4], t, class_offset=0)
    s2 = fl.cross_entropy_stats(x[:, 4:], t, class_offset=4)
    go = np.empty_like(x)
    e = None
    V, Ie = ValueError, IndexError
    calls = [
        ("cross_entropy", lambda: fl.cross_entropy(x32, t, return_grad=True, grad_out=x32.copy()), e),
        ("cross_entropy", lambda: fl.cross_entropy(x, p, return_grad=True, label_smoothing=0.1), e),
        ("cross_entropy", lambda: fl.cross_entropy(x, bad_t, return_grad=True), Ie),
        ("cross_entropy", lambda: fl.cross_entropy(x, t[:3]), V),
        ("cross_entropy", lambda: fl.cross_entropy(x, t, reduction="x"), V),
        ("cross_entropy", lambda: fl.cross_entropy(nan_x, t, return_grad=True), e),
        ("cross_entropy", lambda: fl.cross_entropy(x, t, return_grad=True, grad_out=go[:2]), V),
        ("nll_loss", lambda: fl.nll_loss(x, t, return_grad=True), e),
        ("nll_loss", lambda: fl.nll_loss(x, bad_t), Ie),
        ("perplexity", lambda: fl.perplexity(x, t), e),
        ("perplexity", lambda: fl.perplexity(x, bad_t), Ie),
        ("bits_per_byte", lambda: fl.bits_per_byte(x, t, 100), e),
        ("bits_per_byte", lambda: fl.bits_per_byte(x, t, -1), V),
        ("softmax_focal_loss", lambda: fl.softmax_focal_loss(x, t, return_grad=True), e),
        ("softmax_focal_loss", lambda: fl.softmax_focal_loss(x, bad_t), Ie),
        ("binary_cross_entropy_with_logits",
         lambda: fl.binary_cross_entropy_with_logits(x, p, return_grad=True), e),
        ("binary_cross_entropy_with_logits",
         lambda: fl.binary_cross_entropy_with_logits(x, p[:, :3]), V),
        ("binary_cross_entropy", lambda: fl.binary_cross_entropy(p, p, return_grad=True), e),
        ("binary_cross_entropy", lambda: fl.binary_cross_entropy(p + 1.5, p), V),
        ("sigmoid_focal_loss", lambda: fl.sigmoid_focal_loss(x, p, return_grad=True), e),
        ("sigmoid_focal_loss", lambda: fl.sigmoid_focal_loss(x, p, gamma=-1.0), V),
        ("hinge_loss", lambda: fl.hinge_loss(x, pm, return_grad=True), e),
        ("hinge_loss", lambda: fl.hinge_loss(x, pm * 3), V),
        ("multi_margin_loss", lambda: fl.multi_margin_loss(x, t, return_grad=True), e),
        ("multi_margin_loss", lambda: fl.multi_margin_loss(x, bad_t), Ie),
        ("multi_margin_loss", lambda: fl.multi_margin_loss(x, t, p=3), V),
        ("mse_loss", lambda: fl.mse_loss(x, y, return_grad=True), e),
        ("mse_loss", lambda: fl.mse_loss(x, y[:, :3]), V),
        ("mse_loss", lambda: fl.mse_loss(nan_x, y, return_grad=True), e),
        ("l1_loss", lambda: fl.l1_loss(x, y, return_grad=True), e),
        ("l1_loss", lambda: fl.l1_loss(x, y, reduction="avg"), V),
        ("huber_loss", lambda: fl.huber_loss(x, y, return_grad=True), e),
        ("huber_loss", lambda: fl.huber_loss(x, y, delta=-1.0), V),
        ("smooth_l1_loss", lambda: fl.smooth_l1_loss(x, y, return_grad=True), e),
        ("smooth_l1_loss", lambda: fl.smooth_l1_loss(x, y, beta=-1.0), V),
        ("kl_div", lambda: fl.kl_div(np.log(p), p, return_grad=True), e),
        ("kl_div", lambda: fl.kl_div(x, p, reduction="x"), V),
        ("kl_div_with_logits", lambda: fl.kl_div_with_logits(x, y, return_grad=True), e),
        ("kl_div_with_logits", lambda: fl.kl_div_with_logits(x, y, temperature=0.0), V),
        ("gaussian_kl", lambda: fl.gaussian_kl(x, y, return_grad=True), e),
        ("gaussian_kl", lambda: fl.gaussian_kl(x, y[:, :3]), V),
        ("contrastive_loss", lambda: fl.contrastive_loss(x, y, lbl, return_grad=True), e),
        ("contrastive_loss", lambda: fl.contrastive_loss(x, y, lbl[:3]), V),
        ("triplet_margin_loss", lambda: fl.triplet_margin_loss(x, y, p, return_grad=True), e),
        ("triplet_margin_loss", lambda: fl.triplet_margin_loss(x, y, p[:, :3]), V),
        ("clip_loss", lambda: fl.clip_loss(x, y, return_grad=True), e),
        ("clip_loss", lambda: fl.clip_loss(x, y[:, :3]), V),
        ("ctc_loss", lambda: fl.ctc_loss(lp, ctc_t, il, tl, return_grad=True), e),
        ("ctc_loss", lambda: fl.ctc_loss(lp, ctc_t + C, il, tl), Ie),
        ("logsumexp", lambda: fl.logsumexp(x, axis=1, b=p, return_sign=True), e),
        ("logsumexp", lambda: fl.logsumexp(x, axis=5), Exception),
        ("softmax", lambda: fl.softmax(x, axis=1), e),
        ("softmax", lambda: fl.softmax(np.array(["a"]), axis=0), Exception),
        ("log_softmax", lambda: fl.log_softmax(nan_x, axis=1), e),
        ("log_softmax", lambda: fl.log_softmax(x, axis=-3), Exception),
        ("cross_entropy_stats", lambda: fl.cross_entropy_stats(x, t, softcap=5.0), e),
        ("cross_entropy_stats", lambda: fl.cross_entropy_stats(x, t[:2]), V),
        ("reduce_cross_entropy_stats", lambda: fl.reduce_cross_entropy_stats(s1, s2), e),
        ("reduce_cross_entropy_stats", lambda: fl.reduce_cross_entropy_stats(s1, stats), Exception),
        ("merge_cross_entropy_stats", lambda: fl.merge_cross_entropy_stats([s1, s2]), e),
        ("merge_cross_entropy_stats", lambda: fl.merge_cross_entropy_stats(stats, reduction="x"), V),
        ("cross_entropy_grad_from_stats",
         lambda: fl.cross_entropy_grad_from_stats(x, t, merged, grad_out=go), e),
        ("cross_entropy_grad_from_stats",
         lambda: fl.cross_entropy_grad_from_stats(x, bad_t, merged), V),
        ("linear_cross_entropy",
         lambda: fl.linear_cross_entropy(x, y, t, return_grad=True, chunk_size=3), e),
        ("linear_cross_entropy", lambda: fl.linear_cross_entropy(x, y, bad_t + 1), Ie),
        ("get_num_threads", lambda: fl.get_num_threads(), e),
        ("set_num_threads", lambda: fl.set_num_threads(fl.get_num_threads()), e),
        ("set_num_threads", lambda: fl.set_num_threads(0), V),
    ]
    # Issue 16: sparsemax, the multi-class hinge / perceptron, JSD, ranking softmax.
    wm = rng.random((8, 7)) < 0.7
    calls += [
        ("sparsemax", lambda: fl.sparsemax(x, axis=0), e),
        ("sparsemax", lambda: fl.sparsemax(x, axis=2), Exception),
        ("sparsemax_loss", lambda: fl.sparsemax_loss(x, t, return_grad=True), e),
        ("sparsemax_loss", lambda: fl.sparsemax_loss(x, p, return_grad=True, grad_out=go), e),
        ("sparsemax_loss", lambda: fl.sparsemax_loss(x, bad_t), Ie),
        ("multiclass_hinge_loss", lambda: fl.multiclass_hinge_loss(x, t, return_grad=True), e),
        ("multiclass_hinge_loss", lambda: fl.multiclass_hinge_loss(x, bad_t), Ie),
        ("multiclass_perceptron_loss",
         lambda: fl.multiclass_perceptron_loss(x32, t, return_grad=True), e),
        ("multiclass_perceptron_loss", lambda: fl.multiclass_perceptron_loss(x, t[:3]), V),
        ("jensen_shannon_with_logits",
         lambda: fl.jensen_shannon_with_logits(x, y, return_grad=True), e),
        ("jensen_shannon_with_logits", lambda: fl.jensen_shannon_with_logits(x, y, beta=2.0), V),
        ("ranking_softmax_loss",
         lambda: fl.ranking_softmax_loss(x, p, where=wm, return_grad=True), e),
        ("ranking_softmax_loss", lambda: fl.ranking_softmax_loss(x, p[:, :3]), V),
    ]
    # Issue 16: cosine similarity / distance, NT-Xent, the overlap losses.
    seg, seg_t = x[:, :6].reshape(2, 4, 6), np.arange(12).reshape(2, 6) % 4
    calls += [
        ("cosine_similarity", lambda: fl.cosine_similarity(x, y, return_grad=True), e),
        ("cosine_similarity", lambda: fl.cosine_similarity(x, y[:3]), V),
        ("cosine_distance", lambda: fl.cosine_distance(x, y[0], return_grad=True), e),
        ("cosine_distance", lambda: fl.cosine_distance(x, y, reduction="x"), V),
        ("ntxent_loss", lambda: fl.ntxent_loss(x, t % 3, return_grad=True), e),
        ("ntxent_loss", lambda: fl.ntxent_loss(x, t[:3]), V),
        ("dice_loss", lambda: fl.dice_loss(seg, seg_t, return_grad=True, grad_out=seg.copy()), e),
        ("dice_loss", lambda: fl.dice_loss(seg, seg_t + 4), Ie),
        ("tversky_loss", lambda: fl.tversky_loss(seg, seg_t, alpha=0.3, return_grad=True), e),
        ("tversky_loss", lambda: fl.tversky_loss(seg, seg_t, alpha=-1.0), V),
        ("generalized_dice_loss", lambda: fl.generalized_dice_loss(seg, seg_t, return_grad=True), e),
        ("generalized_dice_loss", lambda: fl.generalized_dice_loss(seg, seg_t, axis=0), V),
    ]
    # issue 16: PyTorch's missing losses, log-cosh, generalized KL (pairs.py, multilabel.py)
    ml_t = np.where(rng.random((8, 7)) < 0.3, -1, rng.integers(0, 7, (8, 7)))
    calls += [
        ("poisson_nll_loss", lambda: fl.poisson_nll_loss(x, p, full=True, return_grad=True), e),
        ("poisson_nll_loss", lambda: fl.poisson_nll_loss(x, p, log_input=False), V),
        ("gaussian_nll_loss", lambda: fl.gaussian_nll_loss(x, y, p, return_grad=True), e),
        ("gaussian_nll_loss", lambda: fl.gaussian_nll_loss(x, y, -p), V),
        ("margin_ranking_loss", lambda: fl.margin_ranking_loss(x, y, pm, return_grad=True), e),
        ("margin_ranking_loss", lambda: fl.margin_ranking_loss(x, y[:, :3], pm), V),
        ("hinge_embedding_loss",
         lambda: fl.hinge_embedding_loss(x, pm, return_grad=True, grad_out=go), e),
        ("hinge_embedding_loss", lambda: fl.hinge_embedding_loss(x, p, return_grad=True), V),
        ("soft_margin_loss", lambda: fl.soft_margin_loss(x32, pm, return_grad=True), e),
        ("soft_margin_loss", lambda: fl.soft_margin_loss(x, pm, reduction="x"), V),
        ("log_cosh_loss", lambda: fl.log_cosh_loss(nan_x, y, return_grad=True), e),
        ("log_cosh_loss", lambda: fl.log_cosh_loss(x, y[:, :3]), V),
        ("generalized_kl_div", lambda: fl.generalized_kl_div(x, p, return_grad=True), e),
        ("generalized_kl_div", lambda: fl.generalized_kl_div(x, -p, return_grad=True), V),
        ("multilabel_soft_margin_loss",
         lambda: fl.multilabel_soft_margin_loss(x, lbl[:7], return_grad=True), e),
        ("multilabel_soft_margin_loss", lambda: fl.multilabel_soft_margin_loss(x, p.T), V),
        ("multilabel_margin_loss",
         lambda: fl.multilabel_margin_loss(x, ml_t, return_grad=True), e),
        ("multilabel_margin_loss", lambda: fl.multilabel_margin_loss(x, ml_t + 7), Ie),
        ("cosine_embedding_loss",
         lambda: fl.cosine_embedding_loss(x, y, 2 * lbl - 1, return_grad=True), e),
        ("cosine_embedding_loss", lambda: fl.cosine_embedding_loss(x, y, lbl), V),
        ("triplet_margin_with_distance_loss",
         lambda: fl.triplet_margin_with_distance_loss(x, y, p, swap=True, return_grad=True), e),
        ("triplet_margin_with_distance_loss",
         lambda: fl.triplet_margin_with_distance_loss(
             x, y, p, distance_function=lambda u, v: np.abs(u - v).sum(-1)), e),
        ("triplet_margin_with_distance_loss",
         lambda: fl.triplet_margin_with_distance_loss(x, y, p, margin=0.0), V),
    ]
    return calls


def _run_calls(calls):
    for _, f, exc in calls:
        if exc is None:
            f()
        else:
            try:
                f()
            except exc:
                pass
            else:
                raise AssertionError(f"no {exc} from {_}")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_repeated_calls_do_not_grow_rss(restore_threads):
    calls = _memory_calls()
    covered = {n for n, _, _ in calls}
    functions = {n for n in fl.__all__ if not isinstance(getattr(fl, n), type)}  # (not classes)
    missing = functions - covered - {"eval_file", "show_config"}
    assert not missing, missing  # every public function is exercised
    for _ in range(100):  # warm-up: caches, pools, lazily imported modules
        _run_calls(calls)
    before = _rss_kb()
    for _ in range(60):  # 60 rounds * ~70 calls = about 4000 calls
        _run_calls(calls)
    growth_mb = (_rss_kb() - before) / 1024
    assert growth_mb < 4.0, f"RSS grew by {growth_mb:.1f} MB"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_repeated_larger_calls_do_not_grow_rss():
    # a leak of an output or a gradient buffer shows at once with 1 MB arrays
    rng = np.random.default_rng(9)
    x = rng.standard_normal((256, 512))
    t = rng.integers(0, 512, 256)
    bad = t.copy()
    bad[0] = 512
    y = rng.standard_normal((256, 512))

    def round_():
        fl.cross_entropy(x, t, return_grad=True)
        fl.softmax(x, axis=1)
        fl.mse_loss(x, y, return_grad=True)
        fl.kl_div_with_logits(x, y, return_grad=True)
        with pytest.raises(IndexError):
            fl.cross_entropy(x, bad, return_grad=True)
        with pytest.raises(ValueError):
            fl.mse_loss(x, y[:, :3], return_grad=True)

    for _ in range(20):
        round_()
    before = _rss_kb()
    for _ in range(300):
        round_()
    growth_mb = (_rss_kb() - before) / 1024
    assert growth_mb < 4.0, f"RSS grew by {growth_mb:.1f} MB"


# --------------------------------------------------------------------------- large index


@pytest.fixture(scope="module")
def broadcast_big():
    """A float32 (50000, 50000) view (2.5e9 elements > 2**31) of one row, without
    allocating it: each row is the same, so every result is known."""
    row = np.random.default_rng(21).standard_normal(50_000).astype(np.float32)
    v = np.broadcast_to(row, (50_000, 50_000))
    assert v.size > 2**31 and v.strides[0] == 0
    return row, v


def test_logsumexp_over_2_31_elements(broadcast_big):
    row, v = broadcast_big
    got = fl.logsumexp(v, axis=-1)
    want = sp.logsumexp(row.astype(np.float64))
    assert got.shape == (50_000,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6)
    assert np.all(got == got[0])  # the last rows (offsets past 2**31) like the first


def test_cross_entropy_over_2_31_elements(broadcast_big):
    row, v = broadcast_big
    n = v.shape[0]
    t = (np.arange(n) * 7919) % 50_000  # targets in every part of the row
    t[-1] = 49_999
    lse = sp.logsumexp(row.astype(np.float64))
    got = fl.cross_entropy(v, t, reduction="none")
    np.testing.assert_allclose(got, lse - row[t].astype(np.float64), rtol=1e-5, atol=1e-5)
    mean = fl.cross_entropy(v, t)
    np.testing.assert_allclose(mean, np.mean(lse - row[t].astype(np.float64)), rtol=1e-5)
    # the same with the class axis first (the view transposed: stride 0 on the class axis)
    got0 = fl.cross_entropy(v.T, t, axis=0, reduction="none")
    np.testing.assert_allclose(got0, lse - row[t], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not BIG, reason="set FASTLOSS_BIG_TESTS=1 (needs 4.3 GB of memory)")
def test_one_row_of_more_than_2_31_elements():
    # a real float16 row (a broadcast one is read once, see the next test)
    n = 2**31 + 1000
    v = np.full(n, 0.5, dtype=np.float16)
    v[-1] = 8.0  # the last element, past 2**31, must count
    want = np.logaddexp(np.log(n - 1) + 0.5, 8.0)
    np.testing.assert_allclose(np.float64(fl.logsumexp(v)), want, rtol=1e-3)


def test_broadcast_reduction_reads_one_value():
    # logsumexp along a zero-stride axis is x + log(n), without copying the view (that once
    # took 1 GB for this 2**28-element view)
    n = 2**28
    view = np.broadcast_to(np.float32(0.5), (n,))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (VmHWM)
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    before = _rss_kb()
    got = fl.logsumexp(view)
    assert _hwm_kb() - before < 64 * 1024
    np.testing.assert_allclose(got, 0.5 + np.log(n), rtol=1e-6)
    b = np.broadcast_to(np.arange(6.0).reshape(2, 1, 3), (2, 500, 3))
    for axis in (1, (0, 1), None, (1, 2)):
        np.testing.assert_allclose(fl.logsumexp(b, axis=axis), sp.logsumexp(b, axis=axis),
                                   rtol=1e-14)


@pytest.mark.skipif(not BIG, reason="set FASTLOSS_BIG_TESTS=1 (needs 10 GB of memory)")
def test_real_array_of_more_than_2_31_elements():
    rows, cols = 40_000, 60_000  # 2.4e9 float32 elements, 9.6 GB
    rng = np.random.default_rng(33)
    base = rng.standard_normal(cols).astype(np.float32)
    shift = rng.standard_normal(rows).astype(np.float32)
    x = np.empty((rows, cols), dtype=np.float32)
    x[...] = base
    x += shift[:, None]
    t = rng.integers(0, cols, rows)
    t[-1] = cols - 1
    check = np.r_[0:5, rows // 2, rows - 5:rows]  # rows whose offsets straddle 2**31
    xs = x[check].astype(np.float64)
    want_rows = sp.logsumexp(xs, axis=1) - xs[np.arange(len(check)), t[check]]
    want_grad = sp.softmax(xs, axis=1)
    want_grad[np.arange(len(check)), t[check]] -= 1.0
    want_grad /= rows

    lse = fl.logsumexp(x, axis=1)
    np.testing.assert_allclose(lse[check], sp.logsumexp(xs, axis=1), rtol=2e-6)
    per = fl.cross_entropy(x, t, reduction="none")
    np.testing.assert_allclose(per[check], want_rows, rtol=1e-5, atol=1e-5)
    loss, g = fl.cross_entropy(x, t, return_grad=True, grad_out=x)  # in place: no 2nd copy
    assert g is x
    np.testing.assert_allclose(loss, np.mean(per.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(g[check], want_grad, rtol=1e-3, atol=1e-12)


# --------------------------------------------------------------------------- grad_out


def _sentinel_check(call, x, exc):
    """``call(grad_out)`` raises ``exc`` and writes nothing: into a separate buffer filled
    with a sentinel, and (in place) into the input itself."""
    go = np.full_like(x, 7.25)
    with pytest.raises(exc):
        call(go)
    assert np.all(go == 7.25)
    inplace = np.array(x)
    before = inplace.copy()
    with pytest.raises(exc):
        call(inplace, inplace)
    np.testing.assert_array_equal(inplace, before)


SFL_BAD = [
    ("target out of range", IndexError, dict(target=[0, 4, 1])),
    ("negative target", IndexError, dict(target=[0, -3, 1])),
    ("target shape", ValueError, dict(target=[0, 1])),
    ("gamma", ValueError, dict(gamma=-1.0)),
    ("alpha shape", ValueError, dict(alpha=[1.0, 2.0])),
    ("reduction", ValueError, dict(reduction="avg")),
    ("axis", Exception, dict(axis=4)),
    ("float target", TypeError, dict(target=[0.0, 1.0, 2.0])),
]


@pytest.mark.parametrize("name,exc,kw", SFL_BAD, ids=[c[0] for c in SFL_BAD])
def test_softmax_focal_loss_grad_out_untouched(rng, name, exc, kw):
    x = rng.standard_normal((3, 4))
    kw = dict(kw)
    target = kw.pop("target", [0, 3, 1])

    def call(go, xin=None):
        return fl.softmax_focal_loss(x if xin is None else xin, target, return_grad=True,
                                     grad_out=go, **kw)

    _sentinel_check(call, x, exc)


KL_BAD = [
    ("target shape", ValueError, dict(target=np.ones(5))),
    ("reduction", ValueError, dict(reduction="avg")),
    ("string target", TypeError, dict(target=np.array(["a"] * 4))),
]


@pytest.mark.parametrize("name,exc,kw", KL_BAD, ids=[c[0] for c in KL_BAD])
def test_kl_div_grad_out_untouched(rng, name, exc, kw):
    p = rng.random((3, 4)) + 0.1
    x = np.log(p / p.sum(axis=1, keepdims=True))
    kw = dict(kw)
    target = kw.pop("target", np.exp(x[::-1]))

    def call(go, xin=None):
        return fl.kl_div(x if xin is None else xin, target, return_grad=True, grad_out=go, **kw)

    _sentinel_check(call, x, exc)


KLL_BAD = [
    ("teacher shape", ValueError, dict(teacher=np.zeros((3, 3)))),
    ("temperature zero", ValueError, dict(temperature=0.0)),
    ("temperature nan", ValueError, dict(temperature=float("nan"))),
    ("reduction", ValueError, dict(reduction="avg")),
    ("axis", Exception, dict(axis=3)),
    ("string teacher", TypeError, dict(teacher=np.array([["a"] * 4] * 3))),
]


@pytest.mark.parametrize("name,exc,kw", KLL_BAD, ids=[c[0] for c in KLL_BAD])
def test_kl_div_with_logits_grad_out_untouched(rng, name, exc, kw):
    x = rng.standard_normal((3, 4))
    kw = dict(kw)
    teacher = kw.pop("teacher", rng.standard_normal((3, 4)))

    def call(go, xin=None):
        return fl.kl_div_with_logits(x if xin is None else xin, teacher, return_grad=True,
                                     grad_out=go, **kw)

    _sentinel_check(call, x, exc)


GFS_BAD = [
    ("target differs", ValueError, dict(target=[0, 2, 1])),
    ("target shape", ValueError, dict(target=[0, 1])),
    ("reduction", ValueError, dict(reduction="avg")),
    ("label_smoothing", ValueError, dict(label_smoothing=2.0)),
    ("z_loss", ValueError, dict(z_loss=-1.0)),
    ("softcap", ValueError, dict(softcap=0.0)),
    ("axis", Exception, dict(axis=3)),
]


@pytest.mark.parametrize("name,exc,kw", GFS_BAD, ids=[c[0] for c in GFS_BAD])
def test_cross_entropy_grad_from_stats_grad_out_untouched(rng, name, exc, kw):
    x = rng.standard_normal((3, 4))
    t = np.array([0, 3, 1])
    merged = fl.merge_cross_entropy_stats(fl.cross_entropy_stats(x, t))
    kw = dict(kw)
    target = kw.pop("target", t)

    def call(go, xin=None):
        return fl.cross_entropy_grad_from_stats(x if xin is None else xin, target, merged,
                                                grad_out=go, **kw)

    _sentinel_check(call, x, exc)


CE_EXTRA_BAD = [
    ("z_loss", ValueError, dict(z_loss=-1.0)),
    ("softcap", ValueError, dict(softcap=0.0)),
    ("axis", Exception, dict(axis=5)),
    ("ignore_index type", Exception, dict(ignore_index="x")),
    ("weight negative shape", ValueError, dict(weight=np.ones((4, 1)))),
]


@pytest.mark.parametrize("name,exc,kw", CE_EXTRA_BAD, ids=[c[0] for c in CE_EXTRA_BAD])
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_cross_entropy_extra_errors_grad_out_untouched(rng, fn, name, exc, kw):
    if fn == "nll_loss" and name in ("z_loss", "softcap"):
        pytest.skip("not an argument of nll_loss")
    x = rng.standard_normal((3, 4))
    f = getattr(fl, fn)

    def call(go, xin=None):
        return f(x if xin is None else xin, [0, 3, 1], return_grad=True, grad_out=go, **kw)

    _sentinel_check(call, x, exc)


REG_BAD = [
    ("target shape", ValueError, {}, dict(target=np.zeros(5))),
    ("reduction", ValueError, {}, dict(reduction="avg")),
    ("weight shape", ValueError, {}, dict(weight=np.ones(5))),
    ("huber delta", ValueError, {"huber_loss"}, dict(delta=-1.0)),
    ("huber delta nan", ValueError, {"huber_loss"}, dict(delta=float("nan"))),
    ("smooth_l1 beta", ValueError, {"smooth_l1_loss"}, dict(beta=-1.0)),
]


@pytest.mark.parametrize("fn", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"])
@pytest.mark.parametrize("name,exc,only,kw", REG_BAD, ids=[c[0] for c in REG_BAD])
def test_regression_errors_grad_out_untouched_in_place_too(rng, fn, name, exc, only, kw):
    # test_regression covers a separate buffer for some errors; this adds the in-place case
    # and the delta/beta errors
    if only and fn not in only:
        pytest.skip("not an argument of this loss")
    x = rng.standard_normal((3, 4))
    y = rng.standard_normal((3, 4))
    kw = dict(kw)
    target = kw.pop("target", y)
    f = getattr(fl, fn)

    def call(go, xin=None):
        return f(x if xin is None else xin, target, return_grad=True, grad_out=go, **kw)

    _sentinel_check(call, x, exc)


@pytest.mark.parametrize("fn", ["softmax_focal_loss", "kl_div", "kl_div_with_logits",
                                "cross_entropy_grad_from_stats"])
def test_bad_grad_out_itself_leaves_input_and_buffer_alone(rng, fn):
    # a grad_out of the wrong shape or dtype is refused before anything is written
    x = rng.standard_normal((3, 4))
    t = np.array([0, 3, 1])
    f = getattr(fl, fn)
    if fn == "cross_entropy_grad_from_stats":
        merged = fl.merge_cross_entropy_stats(fl.cross_entropy_stats(x, t))

        def call(go):
            return f(x, t, merged, grad_out=go)
    else:
        second = {"softmax_focal_loss": t, "kl_div": np.exp(x[::-1]),
                  "kl_div_with_logits": x[::-1].copy()}[fn]

        def call(go):
            return f(x, second, return_grad=True, grad_out=go)

    x0 = x.copy()
    for go, exc in [(np.full((4, 3), 7.25), ValueError), (np.full(12, 7.25), ValueError),
                    (np.full((3, 4), 7.25, dtype=np.float32), TypeError)]:
        with pytest.raises(exc, match="grad_out"):
            call(go)
        assert np.all(go == 7.25)
        np.testing.assert_array_equal(x, x0)
    ro = read_only(np.full((3, 4), 7.25))
    with pytest.raises(ValueError, match="grad_out"):
        call(ro)
    assert np.all(ro == 7.25)
