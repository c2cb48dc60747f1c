"""Embedding losses: clip_loss on a (4096, 512) float32 batch (CLIP's ViT-B batch shard and
embedding width) against the NumPy reference (and PyTorch when it is installed); the pair and
triplet losses on (16384, 512) rows. Run: pytest bench/bench_embeddings.py.

clip_loss is compute-bound: one (N, D) x (D, N) product for the loss, three with the
gradients (2 N^2 D flops each), so extra_info records GFLOP/s of those products."""

import fastloss as fl
import numpy as np
import pytest
from fastloss import reference

N, D = 4096, 512


@pytest.fixture(scope="module")
def clip_case():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((N, D), dtype=np.float32)
    txt = (img + rng.standard_normal((N, D), dtype=np.float32)).astype(np.float32)
    return img, txt


def _flops(grad: bool) -> float:
    return (3 if grad else 1) * 2.0 * N * N * D


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_clip_loss(benchmark, clip_case, grad):
    img, txt = clip_case
    benchmark(fl.clip_loss, img, txt, return_grad=grad)
    benchmark.extra_info["matmul_gflops"] = _flops(grad) / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_clip_loss_numpy_reference(benchmark, clip_case, grad):
    """fastloss.reference.clip_loss: the textbook formulas in NumPy float64."""
    img, txt = clip_case
    benchmark.pedantic(reference.clip_loss, (img, txt), {"return_grad": grad}, rounds=3)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_clip_loss_torch(benchmark, clip_case, grad):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.set_num_threads(fl.get_num_threads())
    img, txt = (torch.from_numpy(x) for x in clip_case)
    target = torch.arange(N)

    def loss_of(i, t):
        logits = F.normalize(i, dim=1) @ F.normalize(t, dim=1).T / 0.07
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def run():
        if not grad:
            with torch.no_grad():
                return loss_of(img, txt)
        i, t = img.detach().requires_grad_(True), txt.detach().requires_grad_(True)
        loss_of(i, t).backward()
        return i.grad, t.grad

    benchmark(run)


@pytest.fixture(scope="module")
def triplet_case():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16384, D), dtype=np.float32)
    noise = rng.standard_normal((2, 16384, D), dtype=np.float32)
    return a, (a + noise[0]).astype(np.float32), (a + 1.5 * noise[1]).astype(np.float32)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_contrastive_loss(benchmark, triplet_case, grad):
    a, p, _ = triplet_case
    y = np.arange(len(a)) % 2
    benchmark(fl.contrastive_loss, a, p, y, margin=40.0, return_grad=grad)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_triplet_margin_loss(benchmark, triplet_case, grad):
    benchmark(fl.triplet_margin_loss, *triplet_case, margin=10.0, return_grad=grad)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_triplet_margin_loss_numpy_reference(benchmark, triplet_case, grad):
    benchmark.pedantic(reference.triplet_margin_loss, triplet_case,
                       {"margin": 10.0, "return_grad": grad}, rounds=3)
