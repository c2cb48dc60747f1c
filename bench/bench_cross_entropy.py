"""Cross-entropy over (4096, 50257) logits: fastloss against the NumPy reference (and PyTorch
when it is installed). Run: pytest bench/ [--benchmark-json out.json]."""

import numpy as np
import pytest
from conftest import as_dtype

import fastloss as fl
from fastloss import reference
from fastloss.benchmark import _numpy_impls


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def bench_loss(benchmark, record, ce_case, dtype):
    x, t = ce_case
    x = as_dtype(x, dtype)
    benchmark(fl.cross_entropy, x, t)
    record(x.nbytes)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def bench_loss_grad(benchmark, record, ce_case, dtype):
    x, t = ce_case
    x = as_dtype(x, dtype)
    g = np.empty_like(x)
    benchmark(fl.cross_entropy, x, t, return_grad=True, grad_out=g)
    record(x.nbytes, g.nbytes)


def bench_loss_grad_inplace(benchmark, record, ce_case):
    x, t = ce_case
    x = x.copy()  # overwritten by its own gradient
    benchmark(fl.cross_entropy, x, t, return_grad=True, grad_out=x)
    record(x.nbytes, x.nbytes)


def bench_loss_smoothing_weights(benchmark, record, ce_case):
    x, t = ce_case
    w = np.random.default_rng(0).random(x.shape[1]).astype(np.float32)
    g = np.empty_like(x)
    benchmark(fl.cross_entropy, x, t, weight=w, label_smoothing=0.1, return_grad=True, grad_out=g)
    record(x.nbytes, g.nbytes)


def bench_logsumexp(benchmark, record, ce_case):
    x, _ = ce_case
    benchmark(fl.logsumexp, x, axis=1)
    record(x.nbytes)


def bench_small_call(benchmark):
    """(8, 1000): per-call overhead; must stay below the NumPy reference's time."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1000), dtype=np.float32)
    t = rng.integers(0, 1000, 8)
    benchmark(fl.cross_entropy, x, t)


def bench_small_call_numpy_reference(benchmark):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1000), dtype=np.float32)
    t = rng.integers(0, 1000, 8)
    benchmark(reference.cross_entropy, x, t)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_numpy(benchmark, record, ce_case, grad):
    """Plain NumPy in float32, as a user would write it (fastloss.benchmark._numpy_impls)."""
    x, t = ce_case
    impls, _ = _numpy_impls(x, t)
    benchmark.pedantic(impls["loss+grad" if grad else "loss"], rounds=3)
    record(x.nbytes, x.nbytes if grad else 0)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_torch(benchmark, record, ce_case, grad):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x, t = ce_case
    torch.set_num_threads(fl.get_num_threads())
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)

    def run():
        if not grad:
            with torch.no_grad():
                return F.cross_entropy(xt, tt)
        xg = xt.detach().requires_grad_(True)
        F.cross_entropy(xg, tt).backward()
        return xg.grad

    benchmark(run)
    record(x.nbytes, x.nbytes if grad else 0)


PROB_CLASSES = [2, 10, 100, 1000]


@pytest.fixture(scope="module")
def prob_cases():
    """Probability targets: 2^24 float32 logits of N(0, 3^2) a point, and rows of random class
    probabilities of the same shape."""
    rng = np.random.default_rng(0)
    out = {}
    for c in PROB_CLASSES:
        x = rng.normal(0.0, 3.0, ((1 << 24) // c, c)).astype(np.float32)
        y = rng.random(x.shape, dtype=np.float32)
        y /= y.sum(axis=1, keepdims=True)
        out[c] = x, y
    return out


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
@pytest.mark.parametrize("classes", PROB_CLASSES)
@pytest.mark.parametrize("library", ["fastloss", "torch"])
def bench_probability_targets(benchmark, record, prob_cases, library, classes, grad):
    """Cross-entropy with probability targets (soft labels, distillation): up to 100 classes
    the rows in SIMD lanes, over 100 a row at a time."""
    x, y = prob_cases[classes]
    benchmark.group = f"probability targets, {classes} classes, {'loss+grad' if grad else 'loss'}"
    if library == "fastloss":
        g = np.empty_like(x)
        if grad:
            benchmark(fl.cross_entropy, x, y, return_grad=True, grad_out=g)
        else:
            benchmark(fl.cross_entropy, x, y)
    else:
        torch = pytest.importorskip("torch")
        import torch.nn.functional as F

        torch.set_num_threads(fl.get_num_threads())
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def run():
            if not grad:
                with torch.no_grad():
                    return F.cross_entropy(xt, yt)
            xg = xt.detach().requires_grad_(True)
            F.cross_entropy(xg, yt).backward()
            return xg.grad

        benchmark.pedantic(run, rounds=3)
    record(x.nbytes + y.nbytes, x.nbytes if grad else 0)
