"""Thread settings, and results that do not depend on the number of threads or on
concurrent calls from several Python threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import read_only

import fastloss as fl
from fastloss import reference as ref


def test_default_is_positive():
    n = fl.get_num_threads()
    assert isinstance(n, int) and n >= 1


@pytest.mark.parametrize("n", [1, 2, 3, 7, np.int64(4)])
def test_set_get_round_trip(restore_threads, n):
    fl.set_num_threads(n)
    assert fl.get_num_threads() == int(n)
    assert type(fl.get_num_threads()) is int


@pytest.mark.parametrize("n", [0, -1, -100])
def test_non_positive_is_value_error(restore_threads, n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        fl.set_num_threads(n)
    assert fl.get_num_threads() == restore_threads  # unchanged


@pytest.mark.parametrize("n", [1.0, 2.5, "2", None, True, [2]])
def test_non_integer_is_type_error(restore_threads, n):
    with pytest.raises(TypeError, match="n must be a positive integer"):
        fl.set_num_threads(n)
    assert fl.get_num_threads() == restore_threads


def _run_all(x, t, y):
    """Every compiled path once: loss-only and fused cross-entropy with index and probability
    targets, nll_loss, logsumexp, softmax, log_softmax."""
    return [
        fl.cross_entropy(x, t, reduction="none"),
        *fl.cross_entropy(x, t, return_grad=True, label_smoothing=0.1),
        *fl.cross_entropy(x, y, return_grad=True, reduction="sum"),
        *fl.nll_loss(x, t, return_grad=True),
        fl.logsumexp(x, axis=1),
        fl.softmax(x, axis=1),
        fl.log_softmax(x, axis=0),
    ]


@pytest.fixture(scope="module")
def big_inputs():
    rng = np.random.default_rng(7)
    x = read_only((3.0 * rng.standard_normal((256, 4096))).astype(np.float32))
    t = rng.integers(0, 4096, size=256)
    t[::17] = -100
    t = read_only(t)
    y = rng.random((256, 4096)).astype(np.float32)
    y = read_only(y / y.sum(axis=1, keepdims=True))
    return x, t, y


def test_same_results_with_one_and_two_threads(restore_threads, big_inputs):
    x, t, y = big_inputs
    fl.set_num_threads(1)
    one = _run_all(x, t, y)
    fl.set_num_threads(2)
    two = _run_all(x, t, y)
    for a, b in zip(one, two):  # rows are independent: bitwise equal
        np.testing.assert_array_equal(a, b)
    # and right: against the float64 reference
    loss, grad = ref.cross_entropy(x, t, return_grad=True, label_smoothing=0.1)
    np.testing.assert_allclose(two[1], loss, rtol=2e-6)
    np.testing.assert_allclose(two[2], grad, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(two[0], ref.cross_entropy(x, t, reduction="none"), rtol=2e-6)


def test_concurrent_calls_from_python_threads(restore_threads, big_inputs):
    x, t, y = big_inputs
    fl.set_num_threads(2)
    serial = _run_all(x, t, y)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_run_all, x, t, y) for _ in range(8)]
        results = [f.result() for f in futures]
    for res in results:
        for a, b in zip(res, serial):
            np.testing.assert_array_equal(a, b)


def test_concurrent_in_place_gradients(big_inputs):
    # four threads each write the gradient into their own copy of the logits, in place
    x, t, _ = big_inputs
    want_loss, want_grad = fl.cross_entropy(x, t, return_grad=True)

    def work(_):
        buf = np.array(x)
        loss, g = fl.cross_entropy(buf, t, return_grad=True, grad_out=buf)
        assert g is buf
        return loss, buf

    with ThreadPoolExecutor(max_workers=4) as pool:
        for loss, g in pool.map(work, range(4)):
            np.testing.assert_array_equal(loss, want_loss)
            np.testing.assert_array_equal(g, want_grad)


def _run_other_paths(x, t, small, small_t, lp, targets, in_len, tgt_len):
    """The parallel paths besides the wide rows: chunked pointwise sums (float64 and float16
    storage), narrow rows in blocks, strided rows through tiles, and CTC's per-sample queue."""
    xs = np.asarray(x, dtype=np.float16)
    return [
        *fl.mse_loss(x, np.zeros_like(x), return_grad=True, reduction="sum"),
        *fl.binary_cross_entropy_with_logits(xs, np.full(x.shape, 0.25, np.float32),
                                             return_grad=True),
        *fl.cross_entropy(small, small_t, return_grad=True, reduction="none"),
        *fl.cross_entropy(np.asfortranarray(small), small_t, return_grad=True),
        *fl.ctc_loss(lp, targets, in_len, tgt_len, reduction="none", return_grad=True),
    ]


@pytest.fixture(scope="module")
def other_inputs(big_inputs):
    rng = np.random.default_rng(11)
    small = read_only(rng.standard_normal((40000, 10)).astype(np.float32))
    small_t = read_only(rng.integers(0, 10, size=40000))
    T, N, C = 120, 48, 30
    lp = rng.standard_normal((T, N, C))
    lp = read_only(lp - np.log(np.exp(lp).sum(axis=2, keepdims=True)))
    tgt_len = rng.integers(1, 40, size=N)
    targets = rng.integers(1, C, size=(N, 40))
    in_len = rng.integers(tgt_len * 2 + 1, T + 1)
    return big_inputs[0], big_inputs[1], small, small_t, lp, targets, in_len, tgt_len


@pytest.mark.parametrize("n", [3, 5, 8])
def test_same_results_with_any_thread_count(restore_threads, big_inputs, other_inputs, n):
    # more threads than this machine has cores too: the split is by thread, not by core
    x, t, y = big_inputs
    fl.set_num_threads(1)
    one = _run_all(x, t, y) + _run_other_paths(*other_inputs)
    fl.set_num_threads(n)
    many = _run_all(x, t, y) + _run_other_paths(*other_inputs)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
    # the CTC losses are right, not only equal: against the float64 reference
    _, _, _, _, lp, targets, in_len, tgt_len = other_inputs
    np.testing.assert_allclose(many[-2], ref.ctc_loss(lp, targets, in_len, tgt_len,
                                                      reduction="none"), rtol=1e-9)


def _run_exp_kernels(x, t, z, y):
    """Kernels with an exp or a log per element, at sizes that one thread takes alone by the
    element count but two share by the weighted work (threads_for's kExpWork)."""
    return [
        *fl.cross_entropy(x, t, return_grad=True, reduction="none"),
        fl.logsumexp(x, axis=-1),
        fl.softmax(x, axis=-1),
        *fl.kl_div_with_logits(x, x[::-1], return_grad=True, reduction="none"),
        *fl.binary_cross_entropy_with_logits(z, y, return_grad=True, reduction="none"),
        *fl.soft_margin_loss(z, 2 * y - 1, return_grad=True, reduction="none"),
        *fl.poisson_nll_loss(z, y, return_grad=True, reduction="none"),
    ]


def test_exp_kernels_split_by_weighted_work(restore_threads):
    rng = np.random.default_rng(5)
    x = read_only((3.0 * rng.standard_normal((4000, 10))).astype(np.float32))
    t = read_only(rng.integers(0, 10, size=4000))
    z = read_only((3.0 * rng.standard_normal(40000)).astype(np.float32))
    y = read_only((rng.random(40000) < 0.5).astype(np.float32))
    fl.set_num_threads(1)
    one = _run_exp_kernels(x, t, z, y)
    fl.set_num_threads(2)
    two = _run_exp_kernels(x, t, z, y)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(two[0], ref.cross_entropy(x, t, reduction="none"), rtol=2e-6)
    np.testing.assert_allclose(
        two[6], ref.binary_cross_entropy_with_logits(z, y, reduction="none"), rtol=2e-6,
        atol=1e-30)


def test_threading_is_reported():
    # FASTLOSS_EXPECT_THREADING (set by .ci/run's portability step) pins what the build must be
    import os

    assert _core_threading() in ("openmp", "threadpool")
    want = os.environ.get("FASTLOSS_EXPECT_THREADING")
    if want:
        assert _core_threading() == want
    assert fl.__config__["threading"] == _core_threading()


def _core_threading():
    from fastloss import _core

    return _core.threading


def _threads_in_subprocess(env_threads):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env_threads
    code = "import json, fastloss as fl; print(json.dumps(fl.get_num_threads()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_default_follows_omp_num_threads():
    # as OpenMP's default does, in both builds
    assert _threads_in_subprocess("3") == 3
    assert _threads_in_subprocess("5,2") == 5


def _ce_in_child(queue, x, t):
    queue.put(fl.cross_entropy(x, t, reduction="none"))


def test_threads_work_after_fork(restore_threads, big_inputs):
    # a fork()ed child inherits the pool's memory but not its threads (GNU OpenMP's own
    # team does not survive a fork either: the test is for the thread pool)
    import multiprocessing

    if _core_threading() != "threadpool":
        pytest.skip("libgomp's thread team is not fork-safe; the pool is")
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork() here")
    x, t, _ = big_inputs
    fl.set_num_threads(2)
    want = fl.cross_entropy(x, t, reduction="none")  # the pool has its threads now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_ce_in_child, args=(queue, x, t))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, want)
