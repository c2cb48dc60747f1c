"""CTC loss, T=500 steps, N=32 samples, C=80 classes, S=100 labels (a speech-recognition batch):
fastloss against the NumPy reference (timed once: it is slow) and PyTorch when installed.
Run: pytest bench/bench_ctc.py [--benchmark-json out.json]."""

import numpy as np
import pytest

import fastloss as fl
from fastloss import reference

T, N, C, S = 500, 32, 80, 100


@pytest.fixture(scope="module")
def ctc_case():
    """float32 log_softmax of N(0, 3^2) logits; targets without the blank; every sample
    uses all T steps and S labels."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, (T, N, C))
    lp = (x - x.max(-1, keepdims=True)) - np.log(
        np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    )
    targets = rng.integers(1, C, (N, S))
    lengths_in = np.full(N, T)
    lengths_target = np.full(N, S)
    return lp.astype(np.float32), targets, lengths_in, lengths_target


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def bench_loss(benchmark, ctc_case, dtype):
    lp, targets, il, tl = ctc_case
    lp = lp.astype(dtype)
    benchmark(fl.ctc_loss, lp, targets, il, tl)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def bench_loss_grad(benchmark, ctc_case, dtype):
    lp, targets, il, tl = ctc_case
    lp = lp.astype(dtype)
    benchmark(fl.ctc_loss, lp, targets, il, tl, return_grad=True)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_numpy_reference(benchmark, ctc_case, grad):
    lp, targets, il, tl = ctc_case
    benchmark.pedantic(
        reference.ctc_loss, (lp, targets, il, tl), {"return_grad": grad}, rounds=1, iterations=1
    )


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_torch(benchmark, ctc_case, grad):
    torch = pytest.importorskip("torch")
    lp, targets, il, tl = ctc_case
    torch.set_num_threads(fl.get_num_threads())
    x, tt = torch.from_numpy(lp), torch.from_numpy(targets)
    it, ttl = torch.from_numpy(il), torch.from_numpy(tl)

    def run():
        if not grad:
            with torch.no_grad():
                return torch.nn.functional.ctc_loss(x, tt, it, ttl)
        xg = x.detach().requires_grad_(True)
        torch.nn.functional.ctc_loss(xg, tt, it, ttl).backward()
        return xg.grad

    benchmark(run)
