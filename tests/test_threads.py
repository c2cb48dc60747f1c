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
